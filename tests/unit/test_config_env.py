"""AppConfig from the environment: ``SLLM_RAY_<FIELD>`` over Serve's args over the defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from sllm_ray.config import ENV_PREFIX, AppConfig, app_config

MODEL = {"model": "a", "model_source": "models/a"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_environment_over_args_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLLM_RAY_DATA_DIR", "/var/lib/sllm")
    monkeypatch.setenv("SLLM_RAY_RETRY_AFTER_S", "7")
    config = app_config({"data_dir": "data2", "retry_after_s": 3, "ingress_replicas": 2, "models": [MODEL]})
    assert type(config) is AppConfig  # what crosses to the replicas: the plain model
    assert config.data_dir == "/var/lib/sllm"  # env over args
    assert config.retry_after_s == 7
    assert config.ingress_replicas == 2  # args over defaults
    assert config.request_wait_timeout_s == AppConfig().request_wait_timeout_s  # defaults
    assert [m.model for m in config.models] == ["a"]


def test_an_app_config_object_takes_the_environment_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLLM_RAY_ENGINE_SLEEPERS_PER_NODE", "0")
    config = app_config(AppConfig(engine_sleepers_per_node=3, store_dram_bytes=5))
    assert (config.engine_sleepers_per_node, config.store_dram_bytes) == (0, 5)


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        ("models,/mnt/models", ["models", "/mnt/models"]),
        (" models , /mnt/models ,", ["models", "/mnt/models"]),
        ('["models", "/mnt/a,b"]', ["models", "/mnt/a,b"]),  # JSON: for paths with commas
        ("/only", ["/only"]),
    ],
)
def test_lists_of_strings_are_comma_separated_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, roots: list[str]
) -> None:
    monkeypatch.setenv("SLLM_RAY_MODEL_ROOTS", value)
    assert app_config({}).model_roots == roots


def test_models_come_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLLM_RAY_MODELS", '[{"model": "b", "model_source": "models/b"}]')
    assert [m.model for m in app_config({"models": [MODEL]}).models] == ["b"]
    monkeypatch.setenv("SLLM_RAY_MODELS", '[{"model": "b"')
    with pytest.raises(SettingsError, match="models"):
        app_config({})


def test_every_field_has_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each field is read from SLLM_RAY_<FIELD> (the names the README's table lists)."""
    values = {
        "models": '[{"model": "b", "model_source": "models/b"}]',
        "request_wait_timeout_s": "11",
        "retry_after_s": "2",
        "request_deadline_s": "900",
        "request_body_timeout_s": "3",
        "ingress_replicas": "3",
        "data_dir": "/d",
        "registry_path": "/d/r.sqlite",
        "model_roots": "/m",
        "allow_hub_models": "false",
        "api_keys_file": "/run/secrets/keys.yaml",
        "allow_trust_remote_code": "true",
        "max_request_body_bytes": "4096",
        "engine_hosts_per_node": "2",
        "engine_builds_per_node": "1",
        "store_prefetch_nodes": "1",
        "engine_sleepers_per_node": "0",
        "engine_host_memory_bytes": "1024",
        "replica_workers_per_node": "1",
        "engine_cls": "sllm_ray.testing.fake_engine:FakeEngine",
        "store_dram_bytes": "1024",
        "store_dram_dir": "/dev/shm/x",
        "failed_start_backoff_s": "1",
        "failed_start_backoff_max_s": "2",
        "failed_starts_before_failed": "4",
        "drain_timeout_s": "9",
    }
    assert set(values) == set(AppConfig.model_fields)
    for field, value in values.items():
        monkeypatch.setenv(ENV_PREFIX + field.upper(), value)
    config = app_config({}).model_dump()
    defaults = AppConfig().model_dump()
    assert [f for f in values if config[f] == defaults[f]] == []


def test_the_environment_is_validated_by_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLLM_RAY_RETRY_AFTER_S", "0")
    with pytest.raises(ValidationError, match="retry_after_s"):
        app_config({})
    monkeypatch.setenv("SLLM_RAY_RETRY_AFTER_S", "2")
    monkeypatch.setenv("SLLM_RAY_REQUEST_DEADLINE_S", "60")  # below the wait bound (args: 120)
    with pytest.raises(ValidationError, match="must exceed request_wait_timeout_s"):
        app_config({})
    monkeypatch.setenv("SLLM_RAY_REQUEST_DEADLINE_S", "nan")
    with pytest.raises(ValidationError, match="request_deadline_s"):
        app_config({})


def test_an_unknown_variable_is_an_error_not_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLLM_RAY_DATADIR", "/d")
    with pytest.raises(ValueError, match=r"unknown setting.*SLLM_RAY_DATADIR"):
        app_config({})


def test_variables_read_elsewhere_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "API_KEY", "API_KEYS", "HTTP_HOST", "HTTP_PORT"):
        monkeypatch.setenv(ENV_PREFIX + name, "x")
    assert app_config({}) == AppConfig()


def test_unknown_args_are_still_refused() -> None:
    with pytest.raises(ValidationError, match="bogus"):
        app_config({"bogus": 1})
