"""Buyer personal data for the pages, masked on the server for every role below admin.

Masked: phone to its last 4 digits (`*******1234`), address to its district (`浙江省杭州市西湖区****`),
name to its first character (`张**`). Ciphertext the platforms send (`~…~`) is never partly shown.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, select

from collectors.types import PII_FIELDS
from sentinel.auth import User
from store.schema import order_pii

HIDDEN = "****"
_PHONE_CHARS = re.compile(r"[\d\s+\-*()]+")
_DISTRICT = re.compile(r"^(.{2,24}?(?:区|县|旗))")


def mask_phone(value: str | None) -> str | None:
    """Only the last 4 digits of a phone number (nothing of a ciphertext)."""
    if not value:
        return value
    digits = re.sub(r"\D", "", value)
    if _PHONE_CHARS.fullmatch(value) and len(digits) >= 4:
        return "*" * 7 + digits[-4:]
    return HIDDEN


def mask_address(value: str | None, district: str | None = None) -> str | None:
    """The address up to its district; the district alone when the address cannot be read."""
    if not value and not district:
        return value
    match = _DISTRICT.match(value or "")
    if match and "~" not in match.group(1):
        return match.group(1) + HIDDEN
    return (district + HIDDEN) if district else HIDDEN


def mask_name(value: str | None) -> str | None:
    """The first character of a name (nothing of a ciphertext)."""
    if not value:
        return value
    if value.startswith("~") or len(value) > 32:
        return HIDDEN
    return value[0] + "*" * max(1, len(value) - 1)


def masked(pii: dict[str, str | None], user: User | None) -> dict[str, str | None]:
    """The personal data a user may see: all of it for admin, masked for everyone else."""
    if user is not None and user.can("admin"):
        return dict(pii)
    return {
        "buyer_name": mask_name(pii.get("buyer_name")),
        "phone": mask_phone(pii.get("phone")),
        "address": mask_address(pii.get("address"), pii.get("district")),
        "district": pii.get("district"),
    }


def order_pii_for(
    engine: Engine, global_ids: list[str], user: User | None
) -> dict[str, dict[str, str | None]]:
    """Personal data of the given orders as `user` may see it, by global ID."""
    out: dict[str, dict[str, str | None]] = {}
    with engine.connect() as conn:
        for start in range(0, len(global_ids), 500):
            chunk = global_ids[start : start + 500]
            query = select(order_pii.c.global_id, *(order_pii.c[f] for f in PII_FIELDS)).where(
                order_pii.c.global_id.in_(chunk)
            )
            for row in conn.execute(query):
                out[row.global_id] = masked({f: getattr(row, f) for f in PII_FIELDS}, user)
    return out
