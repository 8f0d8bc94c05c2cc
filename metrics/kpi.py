"""KPI computation pushed down into SQL over one row per order (portable SQLite/PostgreSQL)."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, bindparam, case, func, literal, not_, or_, select

from metrics.snapshot import KpiValue, Snapshot, labels_of
from store.lifecycle import FORWARD, RANK, TERMINAL, WMS_REACHED, milestone_column
from store.schema import orders, to_ms

# Dimensions the state counts and stuck ratios are broken down by (one at a time).
STATE_DIMENSIONS = ("channel", "warehouse", "carrier")
# Forward states with a dwell time (delivered is the end of the road).
DWELL_STATES = FORWARD[:-1]


def _reached_wms():
    return or_(*[orders.c[milestone_column(s)].isnot(None) for s in WMS_REACHED])


class KpiEngine:
    """Builds the KPI statements once (bound parameters only) and computes snapshots."""

    def __init__(
        self,
        engine: Engine,
        window: timedelta,
        sla: timedelta,
        timeouts: dict[str, timedelta],
        fast_cancel: timedelta = timedelta(seconds=60),
    ) -> None:
        self.engine = engine
        self.window = window
        self.sla = sla
        self.timeouts = dict(timeouts)
        self.fast_cancel = fast_cancel
        self._sync = self._sync_statement()
        self._states = self._state_statement()
        self._cancels = self._cancel_statement()
        self._dwell = {s: _dwell_statements(s) for s in DWELL_STATES}

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
        dims = [orders.c[d] for d in STATE_DIMENSIONS]
        return (
            select(orders.c.state, *dims, func.count().label("n"), func.sum(over).label("stuck"))
            .where(orders.c.state.in_(open_states))
            .group_by(orders.c.state, *dims)
        )

    @staticmethod
    def _cancel_statement():
        """Orders paid in the window per channel, and those cancelled within `fast_cancel` of paying."""
        fast = and_(
            orders.c.cancelled_at.isnot(None),
            orders.c.cancelled_at - orders.c.paid_at <= bindparam("fast_ms"),
        )
        return (
            select(
                orders.c.channel, func.count().label("paid"), func.sum(case((fast, 1), else_=0)).label("fast")
            )
            .where(orders.c.paid_at >= bindparam("window_start"), orders.c.paid_at <= bindparam("now"))
            .group_by(orders.c.channel)
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
        """Per open state: the total, and one series per value of each dimension (never crossed)."""
        params = {f"cut_{s}": to_ms(now - t) for s, t in self.timeouts.items()}
        sums: dict[tuple, list[int]] = {}
        for r in conn.execute(self._states, params):
            n, stuck = int(r.n), int(r.stuck or 0)
            keys = [()] + [((d, v),) for d in STATE_DIMENSIONS if (v := getattr(r, d))]
            for key in keys:
                agg = sums.setdefault((r.state, key), [0, 0])
                agg[0] += n
                agg[1] += stuck
        values: list[KpiValue] = []
        for (state, key), (n, stuck) in sums.items():
            values += self._state_series(labels_of(dict(key), state=state), state, n, stuck)
        return values

    def cancel_values(self, conn, now: datetime) -> list[KpiValue]:
        """Fast paid→cancelled: orders cancelled within `fast_cancel` of paying, over orders paid."""
        params = {
            "window_start": to_ms(now - self.window),
            "now": to_ms(now),
            "fast_ms": int(self.fast_cancel.total_seconds() * 1000),
        }
        values: list[KpiValue] = []
        total_paid = total_fast = 0
        for r in conn.execute(self._cancels, params):
            paid, fast = int(r.paid), int(r.fast or 0)
            total_paid, total_fast = total_paid + paid, total_fast + fast
            values += _ratio_series("fast_cancel", labels_of(channel=r.channel), fast, paid)
        return values + _ratio_series("fast_cancel", (), total_fast, total_paid)

    def dwell_values(self, conn, now: datetime) -> list[KpiValue]:
        """Exact p50/p95 (nearest rank) of the time spent in each state, for orders that left it in the window."""
        params = {"window_start": to_ms(now - self.window), "now": to_ms(now)}
        values: list[KpiValue] = []
        for state, (count_stmt, rank_stmt) in self._dwell.items():
            n = int(conn.execute(count_stmt, params).scalar() or 0)
            labels = labels_of(state=state)
            values.append(KpiValue("dwell_orders", labels, float(n)))
            for kpi, q in (("dwell_p50_seconds", 0.5), ("dwell_p95_seconds", 0.95)):
                if n:
                    ms = conn.execute(rank_stmt, {**params, "offset": nearest_rank(n, q) - 1}).scalar()
                    values.append(KpiValue(kpi, labels, ms / 1000))
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
            values = (
                self.sync_values(conn, now)
                + self.state_values(conn, now)
                + self.cancel_values(conn, now)
                + self.dwell_values(conn, now)
            )
        return Snapshot(now, tuple(values), time.perf_counter() - started)


def _ratio_series(name: str, labels, part: int, whole: int) -> list[KpiValue]:
    out = [KpiValue(f"{name}_orders", labels, float(part))]
    if whole:
        out.append(KpiValue(f"{name}_ratio", labels, part / whole))
    return out


def nearest_rank(n: int, q: float) -> int:
    """1-based nearest-rank position of quantile q among n sorted values."""
    return max(1, math.ceil(q * n))


def _left_at(state: str):
    """When an order left `state`: the milestone of the next forward state it reached, or its exit."""
    later = [orders.c[milestone_column(s)] for s in FORWARD[FORWARD.index(state) + 1 :]]
    return func.coalesce(*later, orders.c.cancelled_at, orders.c.closed_at)


def _dwell_statements(state: str):
    entered = orders.c[milestone_column(state)]
    left = _left_at(state)
    where = (
        entered.isnot(None),
        left >= bindparam("window_start"),
        left <= bindparam("now"),
        left >= entered,
    )
    count = select(func.count()).where(*where)
    rank = select(left - entered).where(*where).order_by(left - entered).limit(1).offset(bindparam("offset"))
    return count, rank


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
