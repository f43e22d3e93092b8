"""Fixtures of the end-to-end suite: the app of ``app_under_test``, deployed once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from app_under_test import BASE_URL, deploy
from support import replica_states


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def serve_app(ray_session: None, tiny_model_dir: Path, data_dir: Path) -> Iterator[str]:
    deploy(tiny_model_dir, data_dir)
    yield BASE_URL


@pytest.fixture(scope="session")
def client(serve_app: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_app}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def admin(serve_app: str) -> Iterator[httpx.Client]:
    """Raw HTTP to the app, for the admin API and exact status codes."""
    with httpx.Client(base_url=serve_app, timeout=300) as http:
        yield http


@pytest.fixture(scope="session")
def replicas() -> Callable[[str], dict[str, int]]:
    return replica_states
