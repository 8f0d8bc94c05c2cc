"""Buyer personal data beside the orders: written by the store's write path, read masked (metrics/pii.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from collectors.types import PII_FIELDS, Observation
from store.schema import order_pii


def write_pii(
    conn: Connection, obs: Iterable[Observation], ids: dict[tuple[str, str], str], now: datetime
) -> int:
    """Upsert the personal data the observations carry (latest non-empty value per field); returns orders changed."""
    wanted: dict[str, dict[str, str]] = {}
    for o in obs:
        if o.pii:
            wanted.setdefault(ids[(o.channel, o.raw_order_id)], {}).update(o.pii)
    if not wanted:
        return 0
    keys = sorted(wanted)
    existing: dict[str, dict[str, str | None]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        query = select(order_pii.c.global_id, *(order_pii.c[f] for f in PII_FIELDS)).where(
            order_pii.c.global_id.in_(chunk)
        )
        for row in conn.execute(query):
            existing[row.global_id] = {f: getattr(row, f) for f in PII_FIELDS}
    fresh, changed = [], []
    for gid in keys:
        old = existing.get(gid)
        merged = {f: (old or {}).get(f) for f in PII_FIELDS} | wanted[gid]
        if old is None:
            fresh.append({"global_id": gid, **merged, "updated_at": now})
        elif merged != old:
            changed.append({"gid": gid, **merged, "updated_at": now})
    if fresh:
        conn.execute(insert(order_pii), fresh)
    if changed:
        conn.execute(
            update(order_pii).where(order_pii.c.global_id == bindparam("gid")),
            changed,
        )
    return len(fresh) + len(changed)
