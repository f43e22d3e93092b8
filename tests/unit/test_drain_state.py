"""The drain's book (control/drain.py), readiness while draining, and what `sllm-ray serve`
reads from its config file and the environment (tools/serve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sllm_ray.control.drain import INGRESS_SILENT_S, DrainBook
from sllm_ray.control.readiness import DRAINING, readiness
from sllm_ray.tools.serve import serve_config, sllm_apps


def test_drained_once_every_ingress_counted_none_while_refusing() -> None:
    book = DrainBook()
    book.report("a", 2, refusing=False, now=0.0)
    assert not book.status(0.0).draining and not book.status(0.0).drained
    book.start(1.0)
    # "b" counted none but was not refusing yet: a request may have come in since.
    book.report("b", 0, refusing=False, now=1.1)
    book.report("a", 2, refusing=True, now=1.2)
    status = book.status(1.3)
    assert (status.draining, status.drained, status.in_flight, status.ingresses) == (True, False, 2, 2)
    book.report("b", 0, refusing=True, now=2.1)
    book.report("a", 1, refusing=True, now=2.2)
    assert not book.status(2.3).drained
    book.report("a", 0, refusing=True, now=3.2)
    assert book.status(3.3).drained
    book.start(9.0)  # a second SIGTERM does not restart the clock
    assert book.started_at == 1.0


def test_a_silent_ingress_holds_up_no_drain() -> None:
    book = DrainBook()
    book.start(0.0)
    book.report("gone", 3, refusing=False, now=0.0)
    book.report("a", 0, refusing=True, now=INGRESS_SILENT_S + 0.5)
    assert not book.status(INGRESS_SILENT_S - 0.1).drained
    assert book.status(INGRESS_SILENT_S + 1).drained


def test_a_draining_app_is_not_ready() -> None:
    nodes = [{"node_id": "n1", "engine_hosts": {"ready": True}}]
    assert readiness(True, nodes)["ready"] is True
    body = readiness(True, nodes, draining=True)
    assert body["ready"] is False and body["waiting_for"] == [DRAINING]


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_http_host_and_port_come_from_the_environment(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    path = repo / "configs" / "serve.yaml"
    assert serve_config(path, {})["http_options"]["host"] == "127.0.0.1"
    config = serve_config(path, {"SLLM_RAY_HTTP_HOST": "0.0.0.0", "SLLM_RAY_HTTP_PORT": "9000"})
    assert (config["http_options"]["host"], config["http_options"]["port"]) == ("0.0.0.0", 9000)
    assert config["http_options"]["request_timeout_s"] == 3600  # the rest as in the file
    with pytest.raises(ValueError, match="SLLM_RAY_HTTP_PORT must be a port number"):
        serve_config(path, {"SLLM_RAY_HTTP_PORT": "80x"})
    with pytest.raises(ValueError, match="not a Serve config file"):
        serve_config(_write(tmp_path, {"models": []}), {})


def test_the_drain_bound_of_each_sllm_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apps = [
        {"name": "a", "import_path": "sllm_ray.builder:build_app", "args": {"drain_timeout_s": 5}},
        {"name": "b", "import_path": "sllm_ray.builder:build_app"},
        {"name": "other", "import_path": "somewhere:app"},
    ]
    config = serve_config(_write(tmp_path, {"applications": apps}), {})
    assert sllm_apps(config) == {"a": 5.0, "b": 30.0}
    monkeypatch.setenv("SLLM_RAY_DRAIN_TIMEOUT_S", "12")  # the environment over the args
    assert sllm_apps(config) == {"a": 12.0, "b": 12.0}


def test_streams_are_cut_once_the_drains_bound_passed() -> None:
    book = DrainBook()
    assert not book.cutting(100.0, 8.0)  # no drain
    book.start(10.0)
    assert not book.cutting(17.9, 8.0)
    assert book.cutting(18.0, 8.0)
