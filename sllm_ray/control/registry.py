"""The model registry: every registered model and its config, in SQLite (WAL mode).

It outlives the Serve application and the Ray cluster: after a restart the model manager
reads it back and redeploys every model. Each call opens its own connection and writes in
an ``IMMEDIATE`` transaction, so concurrent callers (threads or processes) serialize on
SQLite's lock instead of losing updates.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllm_ray.config import ModelConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name       TEXT PRIMARY KEY,
    config     TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'active',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS placements (
    model      TEXT NOT NULL,
    node       TEXT NOT NULL,
    tier       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, node)
);
"""
ACTIVE = "active"
DELETING = "deleting"


class RegistryError(Exception):
    pass


class DuplicateModelError(RegistryError):
    pass


class UnknownModelError(RegistryError):
    pass


@dataclass(frozen=True)
class ModelRecord:
    config: ModelConfig
    state: str
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.config.model

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "config": self.config.model_dump(mode="json"),
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class Registry:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _record(row: tuple[str, str, float, float]) -> ModelRecord:
        config, state, created, updated = row
        return ModelRecord(ModelConfig.model_validate_json(config), state, created, updated)

    def add(self, config: ModelConfig) -> ModelRecord:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT state FROM models WHERE name = ?", (config.model,)).fetchone()
            if row is not None:
                detail = " (it is being deleted)" if row[0] == DELETING else ""
                raise DuplicateModelError(f"model `{config.model}` is already registered{detail}")
            conn.execute(
                "INSERT INTO models (name, config, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (config.model, config.model_dump_json(), ACTIVE, now, now),
            )
        return ModelRecord(config, ACTIVE, now, now)

    def get(self, name: str) -> ModelRecord:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT config, state, created_at, updated_at FROM models WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            raise UnknownModelError(f"model `{name}` is not registered")
        return self._record(row)

    def list(self) -> list[ModelRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT config, state, created_at, updated_at FROM models ORDER BY created_at, name"
            ).fetchall()
        return [self._record(row) for row in rows]

    def replace(self, config: ModelConfig) -> ModelRecord:
        """Store a new config for an active model."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, created_at FROM models WHERE name = ?", (config.model,)
            ).fetchone()
            if row is None or row[0] != ACTIVE:
                raise UnknownModelError(f"model `{config.model}` is not registered")
            conn.execute(
                "UPDATE models SET config = ?, updated_at = ? WHERE name = ?",
                (config.model_dump_json(), now, config.model),
            )
        return ModelRecord(config, ACTIVE, row[1], now)

    def mark_deleting(self, name: str) -> ModelRecord:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT config, state, created_at FROM models WHERE name = ?", (name,)
            ).fetchone()
            if row is None or row[1] != ACTIVE:
                raise UnknownModelError(f"model `{name}` is not registered")
            conn.execute("UPDATE models SET state = ?, updated_at = ? WHERE name = ?", (DELETING, now, name))
        return ModelRecord(ModelConfig.model_validate_json(row[0]), DELETING, row[2], now)

    def remove(self, name: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM models WHERE name = ?", (name,))
            conn.execute("DELETE FROM placements WHERE model = ?", (name,))

    def set_placements(self, tiers: dict[str, dict[str, str]]) -> None:
        """Replace the record of which tier holds each model on each node
        (``{model: {node: tier}}``), as the checkpoint stores last reported it."""
        now = time.time()
        rows = [(m, node, tier, now) for m, nodes in tiers.items() for node, tier in nodes.items()]
        with self._write() as conn:
            conn.execute("DELETE FROM placements")
            conn.executemany("INSERT INTO placements VALUES (?, ?, ?, ?)", rows)

    def placements(self, model: str) -> dict[str, str]:
        with self._connect() as conn:
            rows = conn.execute("SELECT node, tier FROM placements WHERE model = ?", (model,)).fetchall()
        return dict(rows)

    def seed(self, configs: list[ModelConfig]) -> list[str]:
        """Insert the configured models that are not registered yet; registered ones keep
        their (possibly updated) record. Returns the names inserted."""
        inserted = []
        for config in configs:
            try:
                self.add(config)
                inserted.append(config.model)
            except DuplicateModelError:
                pass
        return inserted
