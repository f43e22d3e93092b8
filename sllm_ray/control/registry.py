"""The model registry: every registered model and its config, in SQLite (WAL mode).

It outlives the Serve application and the Ray cluster: after a restart the model manager
reads it back and redeploys every model. A config is stored only once it reads back as
itself, so nothing the API accepted can poison a restart; a record that fails to load all
the same (written by an older version, edited by hand) is an ``InvalidRecord``: logged,
listed with its reason, skipped, and open to a fix (``replace``) or removal. Each call
opens its own connection and writes in an ``IMMEDIATE`` transaction, so concurrent
callers (threads or processes) serialize on SQLite's lock instead of losing updates.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sllm_ray.config import ModelConfig
from sllm_ray.errors import validation_error

logger = logging.getLogger(__name__)

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
# Not a stored state: what a record that fails to load is listed as.
INVALID = "invalid"


class RegistryError(Exception):
    pass


class DuplicateModelError(RegistryError):
    pass


class UnknownModelError(RegistryError):
    pass


class UnstorableConfigError(RegistryError):
    """A config that would not read back as itself."""


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


@dataclass(frozen=True)
class InvalidRecord:
    """A stored record that does not load as a ``ModelConfig``, and why."""

    name: str
    reason: str
    stored: dict[str, Any]  # its fields as stored ({} when not even a JSON object)
    state: str
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "config": self.stored,
            "state": INVALID,
            "invalid_reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class InvalidRecordError(RegistryError):
    def __init__(self, record: InvalidRecord) -> None:
        super().__init__(f"model `{record.name}`'s stored config is invalid: {record.reason}")
        self.record = record


def _stored(config: ModelConfig) -> str:
    """The config as stored, once it reads back as itself (pydantic writes a value JSON
    cannot hold, e.g. an infinity, as null: a record that would fail every restart)."""
    text = config.model_dump_json()
    try:
        same = ModelConfig.model_validate_json(text) == config
    except ValidationError:
        same = False
    if not same:
        raise UnstorableConfigError(f"model `{config.model}`'s config does not read back as stored")
    return text


def _load(row: tuple[str, str, str, float, float]) -> ModelRecord | InvalidRecord:
    name, text, state, created, updated = row
    try:
        return ModelRecord(ModelConfig.model_validate_json(text), state, created, updated)
    except ValidationError as exc:
        reason = validation_error(exc.errors(), every=True).message
    try:
        stored = json.loads(text)
    except ValueError:
        stored = None
    return InvalidRecord(name, reason, stored if isinstance(stored, dict) else {}, state, created, updated)


_COLUMNS = "name, config, state, created_at, updated_at"


class Registry:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
        # The invalid records already logged (name, updated_at): list() runs every second.
        self._reported: set[tuple[str, float]] = set()

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

    def add(self, config: ModelConfig) -> ModelRecord:
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT state FROM models WHERE name = ?", (config.model,)).fetchone()
            if row is not None:
                detail = " (it is being deleted)" if row[0] == DELETING else ""
                raise DuplicateModelError(f"model `{config.model}` is already registered{detail}")
            conn.execute(
                f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (config.model, _stored(config), ACTIVE, now, now),
            )
        return ModelRecord(config, ACTIVE, now, now)

    def lookup(self, name: str) -> ModelRecord | InvalidRecord:
        with self._connect() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownModelError(f"model `{name}` is not registered")
        return _load(row)

    def get(self, name: str) -> ModelRecord:
        record = self.lookup(name)
        if isinstance(record, InvalidRecord):
            raise InvalidRecordError(record)
        return record

    def list_all(self) -> list[ModelRecord | InvalidRecord]:
        """Every record, those that fail to load too."""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY created_at, name").fetchall()
        return [_load(row) for row in rows]

    def list(self) -> list[ModelRecord]:
        """The records that load; the others are logged (once each) and skipped."""
        records = []
        for record in self.list_all():
            if isinstance(record, ModelRecord):
                records.append(record)
            elif (record.name, record.updated_at) not in self._reported:
                self._reported.add((record.name, record.updated_at))
                logger.error("skipped model %s: %s", record.name, record.reason)
        return records

    def replace(self, config: ModelConfig) -> ModelRecord:
        """Store a new config for an active model (one whose record is invalid too)."""
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, created_at FROM models WHERE name = ?", (config.model,)
            ).fetchone()
            if row is None or row[0] != ACTIVE:
                raise UnknownModelError(f"model `{config.model}` is not registered")
            conn.execute(
                "UPDATE models SET config = ?, updated_at = ? WHERE name = ?",
                (_stored(config), now, config.model),
            )
        return ModelRecord(config, ACTIVE, row[1], now)

    def mark_deleting(self, name: str) -> ModelRecord | InvalidRecord:
        now = time.time()
        with self._write() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE name = ?", (name,)).fetchone()
            if row is None or row[2] != ACTIVE:
                raise UnknownModelError(f"model `{name}` is not registered")
            conn.execute("UPDATE models SET state = ?, updated_at = ? WHERE name = ?", (DELETING, now, name))
        return _load((name, row[1], DELETING, row[3], now))

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
