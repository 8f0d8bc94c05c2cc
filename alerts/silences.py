"""Silences: label matchers that mute notifications between starts and ends; audited (who, why)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from alerts.model import Matcher, all_match
from store.schema import silences


@dataclass(frozen=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime
    expired_by: str | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        return all_match(self.matchers, labels)

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def state(self, now: datetime) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"


def _silence(row: Any) -> Silence:
    matchers = tuple(Matcher(m["name"], m["value"], bool(m.get("regex"))) for m in json.loads(row.matchers))
    return Silence(
        row.id,
        matchers,
        row.starts_at,
        row.ends_at,
        row.created_by,
        row.comment,
        row.created_at,
        row.expired_by,
    )


def add_silence(
    engine: Engine,
    matchers: list[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
    now: datetime,
) -> Silence:
    """Store a silence; it needs at least one matcher, an author, a reason and an end after its start."""
    if not matchers:
        raise ValueError("a silence needs at least one matcher")
    if not created_by.strip() or not comment.strip():
        raise ValueError("a silence needs its author (--by) and a comment")
    if ends_at <= starts_at:
        raise ValueError("a silence must end after it starts")
    values = {
        "matchers": json.dumps([m.to_dict() for m in matchers], ensure_ascii=False),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "created_by": created_by,
        "comment": comment,
        "created_at": now,
    }
    with engine.begin() as conn:
        new_id = conn.execute(insert(silences).values(**values)).inserted_primary_key[0]
        return _silence(conn.execute(select(silences).where(silences.c.id == new_id)).one())


def list_silences(engine: Engine, now: datetime, include_expired: bool = False) -> list[Silence]:
    with engine.connect() as conn:
        query = select(silences).order_by(silences.c.id)
        if not include_expired:
            query = query.where(silences.c.ends_at > now)
        return [_silence(r) for r in conn.execute(query)]


def expire_silence(engine: Engine, silence_id: int, by: str, now: datetime) -> Silence:
    """End a silence now (kept for the audit trail, with who ended it)."""
    with engine.begin() as conn:
        row = conn.execute(select(silences).where(silences.c.id == silence_id)).first()
        if row is None:
            raise LookupError(f"no silence #{silence_id}")
        if row.ends_at > now:
            conn.execute(
                update(silences)
                .where(silences.c.id == silence_id)
                .values(ends_at=max(now, row.starts_at), expired_by=by)
            )
        return _silence(conn.execute(select(silences).where(silences.c.id == silence_id)).one())


def active_silences(conn: Connection, now: datetime) -> list[Silence]:
    rows = conn.execute(select(silences).where(silences.c.starts_at <= now, silences.c.ends_at > now))
    return [_silence(r) for r in rows]
