"""The Serve-level suite: the real ingress, manager, Serve, replicas, launcher, hosts and
channel, with the fake engine (``sllm_ray.testing.fake_engine``): no vLLM anywhere, so it
runs in about a minute. Its app lives under ``/fake`` beside the end-to-end suite's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_app import APP, BASE_URL, FAKE, PREFIX, fake_model
from support import app_folders, wait_for


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's data_dir: its registry is data/registry.sqlite."""
    return tmp_path_factory.mktemp("fake-data")


@pytest.fixture(scope="session")
def fake_app(ray_session: None, tiny_model_dir: Path, fake_data_dir: Path) -> Iterator[str]:
    from ray import serve

    from sllm_ray.builder import build_app
    from sllm_ray.names import model_app_prefix

    data = fake_data_dir
    config = {
        "engine_cls": FAKE,
        **app_folders(data, tiny_model_dir),
        "request_wait_timeout_s": 60,
        "request_body_timeout_s": 3,  # the slow-body test waits this long
        # Two, as on a node with 4 CPUs: the ingress fault test kills one; every other test
        # sees routing across both (a model registered through one is served by the other).
        "ingress_replicas": 2,
        "models": [fake_model("warm", tiny_model_dir, autoscaling={"min_replicas": 1})],
    }
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app(config), name=APP, route_prefix=PREFIX)
    yield BASE_URL
    names = [n for n in serve.status().applications if n == APP or n.startswith(model_app_prefix(APP))]
    for name in names:  # all at once: each waits seconds for its replicas to stop
        serve.delete(name, _blocking=False)
    wait_for(lambda: not set(names) & set(serve.status().applications), 60, "the apps to be deleted")


@pytest.fixture(scope="session")
def fake_admin(fake_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_app, timeout=120) as http:
        yield http


@pytest.fixture(scope="session")
def fake_client(fake_app: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{fake_app}/v1", api_key="unused", max_retries=0, timeout=120)
