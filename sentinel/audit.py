"""The dashboard's audit trail: logins, CSV exports, silences and acknowledgements, who and when."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Engine, insert, select

from store.schema import audit_log

ACTIONS = ("login", "login_failed", "logout", "export", "silence", "expire", "ack", "diagnose", "reconcile")


def record(engine: Engine, at: datetime, user: str, role: str, action: str, **detail: object) -> None:
    """Append one audit entry (detail is JSON: never a password or personal data)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    row = {
        "at": at,
        "user": user[:128],
        "role": role,
        "action": action,
        "detail": json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str),
    }
    with engine.begin() as conn:
        conn.execute(insert(audit_log).values(row))


def recent(engine: Engine, limit: int = 100) -> list[dict]:
    """The newest audit entries first."""
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(r._mapping, detail=json.loads(r.detail or "{}")) for r in conn.execute(query)]
