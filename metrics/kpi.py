"""KPI computation pushed down into SQL over one row per order (portable SQLite/PostgreSQL)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, bindparam, case, func, literal, not_, or_, select

from metrics.snapshot import KpiValue, Snapshot, labels_of
from store.lifecycle import RANK, WMS_REACHED, milestone_column
from store.schema import orders, to_ms

# States whose orders are finished: no stuck ratio, no state count.
TERMINAL = ("delivered", "cancelled", "closed", "refunded")


def _reached_wms():
    return or_(*[orders.c[milestone_column(s)].isnot(None) for s in WMS_REACHED])


class KpiEngine:
    """Builds the KPI statements once (bound parameters only) and computes snapshots."""

    def __init__(
        self, engine: Engine, window: timedelta, sla: timedelta, timeouts: dict[str, timedelta]
    ) -> None:
        self.engine = engine
        self.window = window
        self.sla = sla
        self.timeouts = dict(timeouts)
        self._sync = self._sync_statement()
        self._states = self._state_statement()

    @staticmethod
    def _sync_statement():
        """Orders paid >= SLA ago inside the window, and how many of them reached the WMS."""
        reached = _reached_wms()
        ended_early = and_(
            or_(orders.c.cancelled_at.isnot(None), orders.c.closed_at.isnot(None)), not_(reached)
        )
        return (
            select(
                orders.c.channel,
                func.count().label("paid"),
                func.sum(case((reached, 1), else_=0)).label("reached"),
            )
            .where(
                orders.c.paid_at >= bindparam("window_start"),
                orders.c.paid_at <= bindparam("sla_cutoff"),
                not_(ended_early),
            )
            .group_by(orders.c.channel)
        )

    def _state_statement(self):
        """Orders per open state and channel, and those held longer than the state's timeout."""
        open_states = [s for s in RANK if s not in TERMINAL]
        if self.timeouts:
            over = case(
                *[
                    (and_(orders.c.state == s, orders.c.state_at <= bindparam(f"cut_{s}")), 1)
                    for s in self.timeouts
                ],
                else_=0,
            )
        else:
            over = literal(0)
        return (
            select(orders.c.state, orders.c.channel, func.count().label("n"), func.sum(over).label("stuck"))
            .where(orders.c.state.in_(open_states))
            .group_by(orders.c.state, orders.c.channel)
        )

    def sync_values(self, conn, now: datetime) -> list[KpiValue]:
        rows = conn.execute(
            self._sync, {"window_start": to_ms(now - self.window), "sla_cutoff": to_ms(now - self.sla)}
        ).all()
        values: list[KpiValue] = []
        total_paid = total_reached = 0
        for r in rows:
            paid, reached = int(r.paid), int(r.reached or 0)
            total_paid += paid
            total_reached += reached
            values += _sync_series(labels_of(channel=r.channel), paid, reached)
        return values + _sync_series((), total_paid, total_reached)

    def state_values(self, conn, now: datetime) -> list[KpiValue]:
        params = {f"cut_{s}": to_ms(now - t) for s, t in self.timeouts.items()}
        rows = conn.execute(self._states, params).all()
        totals: dict[str, list[int]] = {}
        values: list[KpiValue] = []
        for r in rows:
            n, stuck = int(r.n), int(r.stuck or 0)
            agg = totals.setdefault(r.state, [0, 0])
            agg[0] += n
            agg[1] += stuck
            values += self._state_series(labels_of(state=r.state, channel=r.channel), r.state, n, stuck)
        for state, (n, stuck) in totals.items():
            values += self._state_series(labels_of(state=state), state, n, stuck)
        return values

    def _state_series(self, labels, state: str, n: int, stuck: int) -> list[KpiValue]:
        out = [KpiValue("state_orders", labels, float(n))]
        if state in self.timeouts:
            out.append(KpiValue("stuck_orders", labels, float(stuck)))
            if n:
                out.append(KpiValue("stuck_ratio", labels, stuck / n))
        return out

    def compute(self, now: datetime) -> Snapshot:
        started = time.perf_counter()
        with self.engine.connect() as conn:
            values = self.sync_values(conn, now) + self.state_values(conn, now)
        return Snapshot(now, tuple(values), time.perf_counter() - started)


def _sync_series(labels, paid: int, reached: int) -> list[KpiValue]:
    out = [
        KpiValue("sync_paid_orders", labels, float(paid)),
        KpiValue("sync_unreached_orders", labels, float(paid - reached)),
    ]
    if paid:
        out.append(KpiValue("sync_success_ratio", labels, reached / paid))
    return out


def compute_snapshot(
    engine: Engine, now: datetime, window: timedelta, sla: timedelta, timeouts: dict[str, timedelta]
) -> Snapshot:
    """One-off computation (tests, CLI); the service keeps a KpiEngine."""
    return KpiEngine(engine, window, sla, timeouts).compute(now)
