"""The SQLite registry: records survive reopening, and concurrent writers lose nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sllm_ray.config import ModelConfig
from sllm_ray.control.registry import (
    DELETING,
    DuplicateModelError,
    InvalidRecord,
    InvalidRecordError,
    Registry,
    UnknownModelError,
    UnstorableConfigError,
)


def model(name: str, **extra: object) -> ModelConfig:
    return ModelConfig.model_validate({"model": name, "model_source": "org/m", **extra})


def test_records_persist_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "registry.sqlite"
    Registry(path).add(model("a", autoscaling={"keep_alive_s": 7}))
    again = Registry(path)
    (record,) = again.list()
    assert record.name == "a" and record.config.autoscaling.keep_alive_s == 7
    assert again.get("a").to_json()["config"]["autoscaling"]["keep_alive_s"] == 7


def test_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    Registry(tmp_path / "r.sqlite")
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_duplicates_unknowns_and_deleting(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    registry.add(model("a"))
    with pytest.raises(DuplicateModelError):
        registry.add(model("a"))
    with pytest.raises(UnknownModelError):
        registry.get("b")
    with pytest.raises(UnknownModelError):
        registry.replace(model("b"))
    registry.mark_deleting("a")
    assert registry.get("a").state == DELETING
    with pytest.raises(UnknownModelError):
        registry.replace(model("a"))  # no updates to a model on its way out
    with pytest.raises(DuplicateModelError, match="being deleted"):
        registry.add(model("a"))
    registry.remove("a")
    assert registry.list() == []


def test_seed_keeps_updated_records(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    assert registry.seed([model("a"), model("b")]) == ["a", "b"]
    registry.replace(model("a", max_tokens_limit=9))
    assert registry.seed([model("a"), model("b"), model("c")]) == ["c"]
    assert registry.get("a").config.max_tokens_limit == 9


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Registry(path)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        registry = Registry(path)  # its own connections, as separate processes would have
        for name in (f"own-{i}", "shared"):
            try:
                registry.add(model(name))
                result = f"added {name}"
            except DuplicateModelError:
                result = f"duplicate {name}"
            with lock:
                outcomes.append(result)
        for n in range(5):
            registry.replace(model(f"own-{i}", max_tokens_limit=n + 1))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(r.name for r in Registry(path).list())
    assert names == sorted([f"own-{i}" for i in range(8)] + ["shared"])
    assert outcomes.count("added shared") == 1 and outcomes.count("duplicate shared") == 7
    assert all(Registry(path).get(f"own-{i}").config.max_tokens_limit == 5 for i in range(8))


def _poison(path: Path, name: str, text: str) -> None:
    """Write a record as a hand edit (or an older version) would."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE models SET config = ? WHERE name = ?", (text, name))


@pytest.mark.parametrize(
    "text",
    [
        '{"model": "bad", "model_source": "org/m", "autoscaling": {"keep_alive_s": null}}',
        '{"model": "bad", "model_source": "org/m", "from_a_later_version": 1}',
        "not json",
        "[1, 2]",
    ],
)
def test_a_record_that_fails_to_load_is_skipped_listed_and_fixable(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.sqlite"
    registry = Registry(path)
    registry.add(model("good"))
    registry.add(model("bad"))
    _poison(path, "bad", text)
    again = Registry(path)  # a restart reads every record: it must not fail
    assert [r.name for r in again.list()] == ["good"]
    (invalid,) = [r for r in again.list_all() if isinstance(r, InvalidRecord)]
    assert invalid.name == "bad" and invalid.reason
    assert invalid.to_json()["state"] == "invalid" and invalid.to_json()["invalid_reason"] == invalid.reason
    with pytest.raises(InvalidRecordError, match="stored config is invalid"):
        again.get("bad")
    again.replace(model("bad", max_tokens_limit=3))  # fixed
    assert again.get("bad").config.max_tokens_limit == 3
    _poison(path, "bad", text)
    assert isinstance(again.mark_deleting("bad"), InvalidRecord)  # and deletable
    again.remove("bad")
    assert [r.name for r in again.list_all()] == ["good"]


def test_a_config_that_would_not_read_back_is_not_stored(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite")
    # Past validation (model_construct): an infinity pydantic would write as null.
    poisoned = model("m").model_copy(update={"request_wait_timeout_s": float("inf")})
    with pytest.raises(UnstorableConfigError):
        registry.add(poisoned)
    assert registry.list_all() == []
    registry.add(model("m"))
    with pytest.raises(UnstorableConfigError):
        registry.replace(poisoned)
    assert registry.get("m").config == model("m")
