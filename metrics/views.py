"""Read models of the dashboard's pages beyond the overview: history, lifecycle, sources, alerts.

Pure functions over the store, the snapshots and the config; pages cache and lay them out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, case, func, select

from metrics.cube import CellSpec, cell_orders
from metrics.pii import order_pii_for
from metrics.queries import dwell_rows
from metrics.snapshot import Snapshot, load_snapshot_near
from sentinel.auth import User
from store.lifecycle import FORWARD, OPEN_STATES, RANK, milestone_column
from store.schema import alert_acks, alerts, kpi_snapshots, kpi_values, orders, outbox, quarantine

FUNNEL = FORWARD[FORWARD.index("paid") :]  # paid -> delivered
YESTERDAY_TOLERANCE = timedelta(hours=1)


# -- overview extras --------------------------------------------------------------------------
def yesterday(engine: Engine, snapshot: Snapshot | None) -> Snapshot | None:
    """The kept snapshot nearest 24 h before this one (snapshots keep one per hour for 50 h)."""
    if snapshot is None:
        return None
    return load_snapshot_near(engine, snapshot.computed_at - timedelta(days=1), YESTERDAY_TOLERANCE)


def kpi_history(
    engine: Engine, kpis: list[str], until: datetime, span: timedelta = timedelta(days=1)
) -> dict:
    """Total series of `kpis` in the kept snapshots of (until - span, until]: {kpi: [(time, value)]}."""
    query = (
        select(kpi_values.c.kpi, kpi_snapshots.c.computed_at, kpi_values.c.value)
        .join(kpi_snapshots, kpi_snapshots.c.id == kpi_values.c.snapshot_id)
        .where(
            kpi_values.c.kpi.in_(kpis),
            kpi_values.c.labels == "{}",
            kpi_snapshots.c.computed_at > until - span,
            kpi_snapshots.c.computed_at <= until,
        )
        .order_by(kpi_snapshots.c.computed_at)
    )
    out: dict[str, list[tuple[datetime, float]]] = {k: [] for k in kpis}
    with engine.connect() as conn:
        for kpi, at, value in conn.execute(query):
            out[kpi].append((at, value))
    return out


# -- status cube drill-down ---------------------------------------------------------------------
def cell_order_rows(engine: Engine, cell: CellSpec, user: User | None, limit: int = 500) -> list[dict]:
    """The orders behind a cube cell with their buyer data as `user` may see it (masked below admin)."""
    rows = cell_orders(engine, cell, limit=limit)
    pii = order_pii_for(engine, [r["global_id"] for r in rows], user)
    empty = {"buyer_name": None, "phone": None, "address": None}
    for row in rows:
        person = pii.get(row["global_id"], empty)
        row.update({k: person.get(k) for k in empty})
    return rows


# -- lifecycle ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateRow:
    state: str
    reached: int  # orders paid in the window that reached this state
    current: float | None  # orders in the state now
    stuck: float | None
    stuck_ratio: float | None
    dwell_p50: float | None
    dwell_p95: float | None
    failure_ratio: float | None  # stays in the state that failed in the dwell window (KpiEngine)
    top_reason: str | None  # the failure reason with the most stays (None when none failed)


def lifecycle(engine: Engine, snapshot: Snapshot | None, since: datetime) -> list[StateRow]:
    """Paid -> delivered funnel of the orders paid since `since`, with each state's snapshot KPIs."""
    reached = []
    for state in FUNNEL:
        col = orders.c[milestone_column(state)]
        rank = RANK[state]
        passed = (col.is_not(None)) | and_(orders.c.state_rank >= rank, orders.c.state_rank < 100)
        reached.append(func.sum(case((passed, 1), else_=0)))
    query = select(*reached).where(orders.c.paid_at >= since)
    with engine.connect() as conn:
        counts = [int(v or 0) for v in conn.execute(query).one()]
    dwell = {r.state: r for r in dwell_rows(snapshot)}
    rows = []
    for state, n in zip(FUNNEL, counts, strict=True):
        get = lambda k, s=state: None if snapshot is None else snapshot.get(k, state=s)  # noqa: E731
        failures = dwell.get(state)
        rows.append(
            StateRow(
                state,
                n,
                get("state_orders") if state in OPEN_STATES else None,
                get("stuck_orders"),
                get("stuck_ratio"),
                get("dwell_p50_seconds"),
                get("dwell_p95_seconds"),
                failures.failure_ratio if failures else None,
                failures.top_reason if failures else None,
            )
        )
    return rows


# -- sources ------------------------------------------------------------------------------------
def quarantine_rows(
    engine: Engine, user: User | None, source: str | None = None, limit: int = 200
) -> list[dict]:
    """Newest quarantined records; the raw record (may hold buyer data) only for admin."""
    cols = [quarantine.c[c] for c in ("id", "source", "record_key", "field", "reason", "at")]
    query = select(*cols, quarantine.c.raw).order_by(quarantine.c.id.desc()).limit(limit)
    if source:
        query = query.where(quarantine.c.source == source)
    show_raw = user is not None and user.can("admin")
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        if not show_raw:
            row["raw"] = None
    return rows


def quarantine_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """Quarantined records per (source, field)."""
    query = select(quarantine.c.source, quarantine.c.field, func.count()).group_by(
        quarantine.c.source, quarantine.c.field
    )
    with engine.connect() as conn:
        return {(s, f): int(n) for s, f, n in conn.execute(query)}


# -- alerts -------------------------------------------------------------------------------------
def alert_history(engine: Engine, limit: int = 200) -> list[dict]:
    """Alerts in any state, most recently changed first, with who acknowledged the current episode."""
    ack = and_(alert_acks.c.fingerprint == alerts.c.fingerprint, alert_acks.c.fired_at == alerts.c.fired_at)
    query = (
        select(
            alerts.c.fingerprint,
            alerts.c.rule,
            alerts.c.labels,
            alerts.c.state,
            alerts.c.severity,
            alerts.c.value,
            alerts.c.pending_since,
            alerts.c.fired_at,
            alerts.c.resolved_at,
            alerts.c.updated_at,
            alert_acks.c.acked_by,
        )
        .select_from(alerts.outerjoin(alert_acks, ack))
        .order_by(alerts.c.updated_at.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        try:
            row["labels"] = json.loads(row["labels"] or "{}")
        except ValueError:
            row["labels"] = {}
    return rows


def troubled_sends(engine: Engine, limit: int = 100) -> list[dict]:
    """Outbox messages that failed, still wait, or were sent without confirmation (no bodies)."""
    unconfirmed = (outbox.c.status == "sent") & outbox.c.response.startswith("unconfirmed")
    cols = (
        "id",
        "route",
        "kind",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "sent_at",
        "response",
    )
    query = (
        select(*(outbox.c[c] for c in cols))
        .where(outbox.c.status.in_(("pending", "sending", "failed")) | unconfirmed)
        .order_by(outbox.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
