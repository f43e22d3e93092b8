"""API keys: roles per route, hashed storage, 401 versus 403."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sllm_ray.api.auth import KeyStore, Role, required_role
from sllm_ray.errors import AuthenticationError, PermissionDeniedError


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/health", None),
        ("/v1/chat/completions", Role.USER),
        ("/v1/models", Role.USER),
        ("/v1/admin/models", Role.ADMIN),
        ("/v1/admin/models/org/m", Role.ADMIN),
        ("/register", Role.ADMIN),
        ("/status", Role.ADMIN),
    ],
)
def test_required_roles(path: str, role: Role | None) -> None:
    assert required_role(path) == role


def test_no_keys_means_open() -> None:
    keys = KeyStore.load(None, env_value="")
    assert not keys.enabled
    keys.check(None, Role.ADMIN)


def test_file_and_env_keys(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"hashed-admin").hexdigest()
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - key: plain-user\n  - sha256: {digest}\n    role: admin\n")
    keys = KeyStore.load(str(path), env_value="env-user, env-admin:admin")
    assert keys.role_of("plain-user") is Role.USER
    assert keys.role_of("hashed-admin") is Role.ADMIN
    assert keys.role_of("env-user") is Role.USER
    assert keys.role_of("env-admin") is Role.ADMIN
    assert keys.role_of("nope") is None
    assert "plain-user" not in repr(vars(keys))  # only digests are kept


def test_checks() -> None:
    keys = KeyStore.load(None, env_value="u,a:admin")
    keys.check("Bearer u", Role.USER)
    keys.check("bearer a", Role.ADMIN)
    keys.check(None, None)
    for header in (None, "", "Bearer ", "Basic u", "u"):
        with pytest.raises(AuthenticationError, match="missing"):
            keys.check(header, Role.USER)
    with pytest.raises(AuthenticationError, match="invalid"):
        keys.check("Bearer wrong", Role.USER)
    with pytest.raises(PermissionDeniedError):
        keys.check("Bearer u", Role.ADMIN)


def test_bad_key_files_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"role": "admin"}]}')
    with pytest.raises(ValueError, match="keys\\[0\\]"):
        KeyStore.load(str(path), env_value="")
    with pytest.raises(ValueError):
        KeyStore.load(None, env_value="k:superuser")
