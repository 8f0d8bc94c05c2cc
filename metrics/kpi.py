"""KPI computation pushed down into SQL over one row per order (portable SQLite/PostgreSQL)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, case, func, literal, not_, or_, select

from metrics.snapshot import KpiValue, Snapshot, labels_of
from store.lifecycle import RANK, WMS_REACHED, milestone_column
from store.schema import orders, to_ms

# States whose orders are finished: no stuck ratio, no state count.
TERMINAL = ("delivered", "cancelled", "closed", "refunded")


def _reached_wms():
    return or_(*[orders.c[milestone_column(s)].isnot(None) for s in WMS_REACHED])


def sync_values(engine: Engine, now: datetime, window: timedelta, sla: timedelta) -> list[KpiValue]:
    """Sync success ratio: orders paid >= SLA ago (inside the window) that reached the WMS."""
    reached = _reached_wms()
    ended_early = and_(or_(orders.c.cancelled_at.isnot(None), orders.c.closed_at.isnot(None)), not_(reached))
    stmt = (
        select(
            orders.c.channel,
            func.count().label("paid"),
            func.sum(case((reached, 1), else_=0)).label("reached"),
        )
        .where(
            orders.c.paid_at >= to_ms(now - window),
            orders.c.paid_at <= to_ms(now - sla),
            not_(ended_early),
        )
        .group_by(orders.c.channel)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    values: list[KpiValue] = []
    total_paid = total_reached = 0
    for r in rows:
        paid, reached_n = int(r.paid), int(r.reached or 0)
        total_paid += paid
        total_reached += reached_n
        values += _sync_series(labels_of(channel=r.channel), paid, reached_n)
    values += _sync_series((), total_paid, total_reached)
    return values


def _sync_series(labels, paid: int, reached: int) -> list[KpiValue]:
    out = [
        KpiValue("sync_paid_orders", labels, float(paid)),
        KpiValue("sync_unreached_orders", labels, float(paid - reached)),
    ]
    if paid:
        out.append(KpiValue("sync_success_ratio", labels, reached / paid))
    return out


def state_values(engine: Engine, now: datetime, timeouts: dict[str, timedelta]) -> list[KpiValue]:
    """Orders per open state, and those over the state's timeout (stuck)."""
    open_states = [s for s in RANK if s not in TERMINAL]
    over = (
        case(
            *[
                (and_(orders.c.state == s, orders.c.state_at <= to_ms(now - t)), 1)
                for s, t in timeouts.items()
            ],
            else_=0,
        )
        if timeouts
        else literal(0)
    )
    stmt = (
        select(orders.c.state, orders.c.channel, func.count().label("n"), func.sum(over).label("stuck"))
        .where(orders.c.state.in_(open_states))
        .group_by(orders.c.state, orders.c.channel)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    totals: dict[str, list[int]] = {}
    values: list[KpiValue] = []
    for r in rows:
        n, stuck = int(r.n), int(r.stuck or 0)
        agg = totals.setdefault(r.state, [0, 0])
        agg[0] += n
        agg[1] += stuck
        values += _state_series(labels_of(state=r.state, channel=r.channel), r.state, n, stuck, timeouts)
    for state, (n, stuck) in totals.items():
        values += _state_series(labels_of(state=state), state, n, stuck, timeouts)
    return values


def _state_series(labels, state: str, n: int, stuck: int, timeouts) -> list[KpiValue]:
    out = [KpiValue("state_orders", labels, float(n))]
    if state in timeouts:
        out.append(KpiValue("stuck_orders", labels, float(stuck)))
        if n:
            out.append(KpiValue("stuck_ratio", labels, stuck / n))
    return out


def compute_snapshot(
    engine: Engine, now: datetime, window: timedelta, sla: timedelta, timeouts: dict[str, timedelta]
) -> Snapshot:
    started = time.perf_counter()
    values = sync_values(engine, now, window, sla) + state_values(engine, now, timeouts)
    return Snapshot(now, tuple(values), time.perf_counter() - started)
