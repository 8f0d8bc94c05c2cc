"""What a user may do from the dashboard: silence, expire a silence, acknowledge, diagnose, reconcile.

Every action checks the role here, on the server, and leaves an audit entry; pages only call these.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from alerts.engine import AlertEngine
from alerts.model import Matcher
from alerts.silences import Silence, add_silence, expire_silence
from sentinel import audit
from sentinel.auth import User, require
from sentinel.clock import ManualClock
from sentinel.config import Config


def silence(
    engine: Engine, user: User | None, matchers: dict[str, str], hours: float, comment: str, now: datetime
) -> Silence:
    """Mute alerts whose labels equal `matchers` for `hours` from `now` (service time)."""
    user = require(user, "operator")
    made = add_silence(
        engine,
        [Matcher(k, v) for k, v in matchers.items() if v],
        now,
        now + timedelta(hours=hours),
        user.name,
        comment,
        now,
    )
    audit.record(
        engine, datetime.now(UTC), user.name, user.role, "silence", id=made.id, matchers=matchers, hours=hours
    )
    return made


def expire(engine: Engine, user: User | None, silence_id: int, now: datetime) -> Silence:
    user = require(user, "operator")
    ended = expire_silence(engine, silence_id, user.name, now)
    audit.record(engine, datetime.now(UTC), user.name, user.role, "expire", id=silence_id)
    return ended


def acknowledge(
    engine: Engine, config: Config, user: User | None, fingerprint: str, comment: str, now: datetime
) -> dict:
    """Acknowledge the current firing episode of an alert: no more repeats or escalation."""
    user = require(user, "operator")
    done = AlertEngine(engine, config, ManualClock(now), {}).ack(fingerprint, user.name, comment)
    audit.record(
        engine, datetime.now(UTC), user.name, user.role, "ack", fingerprint=fingerprint, rule=done["rule"]
    )
    return done


def diagnose(engine: Engine, config: Config, user: User | None, now: datetime, *, kpi: str | None = None,
             labels: dict | None = None, live: bool = True):  # fmt: skip
    """Run the diagnosis engine (read-only) for any logged-in user; audited."""
    from diagnose import diagnose as run

    user = require(user, "viewer")
    result = run(engine, config, now, kpi=kpi, labels=labels, live=live)
    top = result.top.cause if result.top else None
    audit.record(engine, datetime.now(UTC), user.name, user.role, "diagnose", kpi=kpi, labels=labels, top=top)
    return result


def reconcile(engine: Engine, config: Config, user: User | None, now: datetime):
    """Reconcile as configured, on demand (read-only) for any logged-in user; audited."""
    from reconcile import reconcile as run

    user = require(user, "viewer")
    rc = config.reconcile
    result = run(engine, now, roles=rc.roles, window=rc.window, settle=rc.settle)
    audit.record(
        engine, datetime.now(UTC), user.name, user.role, "reconcile", differences=len(result.differences)
    )
    return result
