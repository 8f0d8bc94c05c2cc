"""Dashboard logins: scrypt hashes, role order, config validation, the hash-password command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sentinel.auth import (
    AccessDenied,
    User,
    authenticate,
    hash_password,
    is_password_hash,
    require,
    verify_password,
)
from sentinel.config import ConfigError, load_config


def test_hash_and_verify():
    stored = hash_password("correct horse")
    assert is_password_hash(stored) and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert hash_password("correct horse") != stored  # salted
    assert not verify_password("x", "plaintext") and not verify_password("", stored)


def test_roles_are_ordered_and_checked():
    viewer, operator, admin = User("v", "viewer"), User("o", "operator"), User("a", "admin")
    assert admin.can("operator") and operator.can("viewer") and not operator.can("admin")
    assert require(operator, "operator") is operator
    with pytest.raises(AccessDenied):
        require(viewer, "operator")
    with pytest.raises(AccessDenied):
        require(None, "viewer")


def _config(tmp_path, users: str):
    path = tmp_path / "config.toml"
    path.write_text(users, encoding="utf-8")
    return path


def test_config_users_from_env_and_authenticate(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_HASH", hash_password("s3cret-pass"))
    path = _config(
        tmp_path,
        '[dashboard.users.ops]\nrole = "operator"\npassword_hash = "${OPS_HASH}"\n'
        '[dashboard.users.nobody]\nrole = "admin"\npassword_hash = "${NOBODY_HASH:-}"\n',
    )
    users = load_config(str(path)).dashboard.users
    assert authenticate(users, "ops", "s3cret-pass") == User("ops", "operator")
    assert authenticate(users, "ops", "wrong") is None
    assert authenticate(users, "nobody", "") is None  # no hash: cannot log in
    assert authenticate(users, "stranger", "s3cret-pass") is None
    assert "s3cret" not in repr(load_config(str(path)))


def test_config_rejects_a_plaintext_password_and_a_slow_refresh(tmp_path):
    path = _config(
        tmp_path, '[dashboard]\nrefresh_interval = "30s"\n[dashboard.users.a]\npassword_hash = "hunter2"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    text = "\n".join(err.value.problems)
    assert "dashboard.users.a.password_hash" in text and "hash-password" in text
    assert "dashboard.refresh_interval" in text
    assert "hunter2" not in text


def test_hash_password_command_reads_stdin():
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "hash-password", "--stdin"],
        input="a-long-password\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    stored = done.stdout.strip()
    assert verify_password("a-long-password", stored) and "a-long-password" not in done.stdout + done.stderr
    short = subprocess.run(
        [sys.executable, "-m", "sentinel", "hash-password", "--stdin"],
        input="short\n",
        capture_output=True,
        text=True,
    )
    assert short.returncode == 1 and "8 characters" in short.stderr
