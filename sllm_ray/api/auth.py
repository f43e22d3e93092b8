"""API keys: who may call which route.

Keys come from a YAML/JSON file (``api_keys_file``) and/or the ``SLLM_RAY_API_KEYS``
environment variable (``key[:role],key[:role]``). Only their SHA-256 digests are kept in
memory, presented keys are compared in constant time, and no key is ever logged. With
no key configured every route is open, and the ingress says so loudly when it starts.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from sllm_ray.errors import AuthenticationError, PermissionDeniedError

ENV_VAR = "SLLM_RAY_API_KEYS"
# ServerlessLLM's admin routes, kept for compatibility.
_ADMIN_PATHS = {"/register", "/update", "/delete", "/status"}
_OPEN_PATHS = {"/health", "/ready"}  # probes carry no key


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


def required_role(path: str) -> Role | None:
    """The role a route needs; ``None`` for open routes."""
    if path in _OPEN_PATHS:
        return None
    if path.startswith("/v1/admin") or path in _ADMIN_PATHS:
        return Role.ADMIN
    return Role.USER


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    role: Role


class KeyStore:
    def __init__(self, entries: list[_Entry]) -> None:
        self._entries = entries

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    @classmethod
    def load(cls, path: str | None = None, env_value: str | None = None) -> KeyStore:
        entries: list[_Entry] = []
        if path:
            doc = yaml.safe_load(Path(path).read_text()) or {}
            for i, item in enumerate(doc.get("keys", [])):
                role = Role(item.get("role", Role.USER))
                if "sha256" in item:
                    entries.append(_Entry(bytes.fromhex(item["sha256"]), role))
                elif "key" in item:
                    entries.append(_Entry(_digest(str(item["key"])), role))
                else:
                    raise ValueError(f"{path}: keys[{i}] needs `key` or `sha256`")
        value = os.environ.get(ENV_VAR, "") if env_value is None else env_value
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, _, role = part.partition(":")
            entries.append(_Entry(_digest(key), Role(role or Role.USER)))
        return cls(entries)

    def role_of(self, key: str) -> Role | None:
        presented = _digest(key)
        found: Role | None = None
        for entry in self._entries:  # no early exit: time does not depend on the match
            if hmac.compare_digest(presented, entry.digest):
                found = entry.role
        return found

    def check(self, authorization: str | None, needed: Role | None) -> None:
        """Raise 401 for a missing or wrong key, 403 for a key without the role."""
        if needed is None or not self.enabled:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError("missing API key: send `Authorization: Bearer <key>`")
        role = self.role_of(key.strip())
        if role is None:
            raise AuthenticationError("invalid API key")
        if needed is Role.ADMIN and role is not Role.ADMIN:
            raise PermissionDeniedError("this route needs an API key with the admin role")
