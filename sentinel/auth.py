"""Dashboard access: scrypt password hashes, roles viewer < operator < admin, checks on the server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

ROLES = ("viewer", "operator", "admin")
USER_KEY = "sentinel_user"  # st.session_state key of the logged-in User (server side only)
_RANK = {role: i for i, role in enumerate(ROLES)}
# scrypt cost: ~50 ms per check on this kind of machine, 16 MiB memory.
_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt"


class AccessDenied(PermissionError):
    """A user tried an action their role does not allow."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def can(self, needed: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[needed]


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) of a password; what config.toml's password_hash holds."""
    if not password:
        raise ValueError("empty password")
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"{_PREFIX}${_N}${_R}${_P}${b64(salt)}${b64(digest)}"


def is_password_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == _PREFIX and all(p.isdigit() for p in parts[1:4])


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against a hash from hash_password (False if malformed)."""
    if not password or not is_password_hash(stored):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    try:
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def authenticate(users: dict, name: str, password: str) -> User | None:
    """The user when name and password match a configured, enabled user; else None."""
    entry = users.get(name.strip())
    if entry is None or entry.password_hash is None:
        verify_password(password, hash_password("timing-equaliser", salt=b"0" * 16))
        return None
    if not verify_password(password, entry.password_hash.get_secret_value()):
        return None
    return User(name.strip(), entry.role)


def require(user: User | None, needed: str) -> User:
    """The user if their role is at least `needed`; AccessDenied otherwise (never trust the page)."""
    if user is None or not user.can(needed):
        raise AccessDenied(f"{needed} role needed, {user.role if user else 'anonymous'} has not got it")
    return user
