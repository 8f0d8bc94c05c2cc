"""The KPI engine: one full computation in SQL over one row per order, then incremental refreshes.

`compute(now)` reads the store (SQL pushed down; no table is loaded whole) into small aggregates:
per-minute payment cells over the KPI window and per-state dwell histograms over the dwell window.
`refresh(now)` patches those aggregates with the order rows the store changed since (the store
hands them over after each commit). Both read what the ingest keeps counted (open orders per state
and dimension value) and what time alone changes: the stuck orders and the partial minute at each
window edge. Both give the same values; tests hold them to that and to the simulator's ground
truth, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Engine

from metrics.snapshot import KpiValue, Snapshot, labels_of
from store.db import driver_rows as _rows
from store.db import small_sorts
from store.lifecycle import (
    EXITS,
    FORWARD,
    HOPS,
    OPEN_STATES,
    PROGRESS_STATES,
    RETURNS,
    ROLE_BITS,
    STATE_DIMENSIONS,
    STATES,
    WMS_REACHED,
    milestone_column,
)
from store.schema import to_ms
from store.store import ORDER_COLUMNS, OrderChange, Store

if TYPE_CHECKING:
    from sentinel.config import KpiConfig

# Forward states with a dwell time (delivered is the end of the road).
DWELL_STATES = FORWARD[:-1]
# Why an order's stay in a state failed (the seeds' 状态同步监控表: failure rate and main reason per
# state). An order leaves a state at its first later milestone in lifecycle order (later forward
# states, then cancelled, closed, the return states); it failed there when it left for cancelled,
# closed or a return (that exit is the reason), else when it stayed at least the state's timeout
# (`timeout`; still there: overstayed). Index 0 in the aggregates is "no failure".
FAILURE_REASONS = ("timeout", "cancelled", "closed", "returned")
_NO_FAILURE, _TIMEOUT = 0, 1
MINUTE_MS = 60_000
DWELL_BUCKET_MS = 300_000  # dwell windows are whole 5-minute buckets of the time orders left a state
# Return states an order can be held in (refunded ends the path) and how long before it is a break.
OPEN_RETURNS = tuple(s for s in RETURNS if s in OPEN_STATES)
RETURN_BREAK_AFTER = timedelta(hours=24)
# Windows besides the KPI window (config kpi.windows): payment-family, per-hop sync and manual
# intervention series labelled window="5m", "1h", "7d", ... Short ones (up to the KPI window less the
# SLA/grace) cover orders paid in the last 5 min / hour that can be judged (ending SLA ago for sync,
# grace ago for order loss, now for the rest). Longer ones are whole hours: orders paid from the
# start of the hour `width` before the hour the range ends in. Any range sums whole hours from
# per-hour cells and the whole minutes around them from per-minute cells (both patched by the change
# feed), its partial edge minutes from SQL; hops count whole minutes of their start.
SHORT_WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1)}  # the default
HOUR_MS = 3_600_000
_NEVER_MS = 1 << 62  # an open upper bound for the cell loads (and no dwell timeout)
PENDING_LIMIT = 500_000  # changes held between refreshes; beyond this the next refresh is a full one

_COL = {c: i for i, c in enumerate(ORDER_COLUMNS)}
_REACHED_SQL = "(" + " OR ".join(f"{milestone_column(s)} IS NOT NULL" for s in WMS_REACHED) + ")"
_COUNTED_SQL = f"NOT ((cancelled_at IS NOT NULL OR closed_at IS NOT NULL) AND NOT {_REACHED_SQL})"
_PAYMENT_BIT, _CHANNEL_BIT = ROLE_BITS["payment"], ROLE_BITS["channel"]
_CARRIER_BIT, _WMS_BIT = ROLE_BITS["carrier"], ROLE_BITS["wms"]
# Reached the ERP: accepted by it, or anything later on the forward path (channel -> ERP hop).
ERP_REACHED = FORWARD[FORWARD.index("erp_accepted") :]
# What each payment cell counts (per minute of paid_at and channel), in SQL and in _Aggregates.contributions.
PAY_FIELDS = (
    "paid",
    "counted",
    "reached",
    "fast",
    "duplicates",
    "by_payment",
    "lost",
    "mismatch",
    "late_callback",
    "erp_counted",
    "erp_reached",
    "manual",
)
# Each order's flags once (an inner select), then the payment cell's sums in PAY_FIELDS order.
_REACHED_ANY = "COALESCE(" + ", ".join(milestone_column(s) for s in WMS_REACHED) + ") IS NOT NULL"
_ERP_REACHED_ANY = "COALESCE(" + ", ".join(milestone_column(s) for s in ERP_REACHED) + ") IS NOT NULL"
_PAY_FLAGS = (
    f"{_REACHED_ANY} AS r, {_ERP_REACHED_ANY} AS er, COALESCE(cancelled_at, closed_at) IS NOT NULL AS e, "
    "cancelled_at - paid_at <= :fast_ms AS f, duplicate_records AS d, seen_roles AS sr, "
    "paid_amount_fen <> amount_fen AS mm, callback_delay_ms > :late_ms AS lc, manual_at IS NOT NULL AS m"
)
_PAY_SUMS = (
    "count(*), sum(CASE WHEN r OR NOT e THEN 1 ELSE 0 END), sum(CASE WHEN r THEN 1 ELSE 0 END), "
    "sum(CASE WHEN f THEN 1 ELSE 0 END), sum(d), "
    f"sum(CASE WHEN (sr & {_PAYMENT_BIT}) <> 0 THEN 1 ELSE 0 END), "
    f"sum(CASE WHEN (sr & {_PAYMENT_BIT}) <> 0 AND (sr & {_CHANNEL_BIT}) = 0 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN mm THEN 1 ELSE 0 END), sum(CASE WHEN lc THEN 1 ELSE 0 END), "
    "sum(CASE WHEN er OR NOT e THEN 1 ELSE 0 END), sum(CASE WHEN er THEN 1 ELSE 0 END), "
    "sum(CASE WHEN m THEN 1 ELSE 0 END)"
)


def _pay_sql(unit: int | None, where: str) -> str:
    """Payment cells of the orders `where` selects, per `unit` (minute or hour) of paid_at and
    channel, or per channel alone (unit None)."""
    keys = "channel" if unit is None else f"paid_at / {unit} AS k, channel"
    group = "channel" if unit is None else "k, channel"
    return f"SELECT {group}, {_PAY_SUMS} FROM (SELECT {keys}, {_PAY_FLAGS} FROM orders WHERE {where}) t GROUP BY {group}"


# Hop cells: per minute of the time a hop starts (the ERP's acceptance, shipping) and channel, what
# the hops after it count. erp: (counted, reached the WMS); ship: (shipped, with a carrier scan,
# shipped per the WMS, of those shown shipped by a channel). Minute cells, so these hops judge the
# orders whose hop started in whole minutes of the window (like the dwell window's whole buckets).
HOP_CELLS = {"erp": ("counted", "reached"), "ship": ("shipped", "tracked", "by_wms", "written_back")}


def _hop_load_sql(unit: int) -> str:
    """Hop cells per `unit` (minute or hour) of the hop's start and channel, from :since to :until."""
    return (
        f"SELECT 'erp', erp_accepted_at / {unit}, channel, "
        f"sum(CASE WHEN {_COUNTED_SQL} THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN {_COUNTED_SQL} AND {_REACHED_SQL} THEN 1 ELSE 0 END), 0, 0 FROM orders "
        f"WHERE erp_accepted_at >= :since AND erp_accepted_at < :until GROUP BY erp_accepted_at / {unit}, channel "
        f"UNION ALL SELECT 'ship', shipped_at / {unit}, channel, count(*), "
        f"sum(CASE WHEN (seen_roles & {_CARRIER_BIT}) <> 0 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN (seen_roles & {_WMS_BIT}) <> 0 THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN (seen_roles & {_WMS_BIT}) <> 0 AND channel_shipped_at IS NOT NULL THEN 1 ELSE 0 END) "
        f"FROM orders WHERE shipped_at >= :since AND shipped_at < :until GROUP BY shipped_at / {unit}, channel"
    )


_HOP_LOAD_SQL, _HOP_HOUR_SQL = _hop_load_sql(MINUTE_MS), _hop_load_sql(HOUR_MS)
# The hops judged from hop cells: (cell family, counted field, got-past field) per hop.
CELL_HOPS = {"erp_wms": ("erp", 0, 1), "shipped_tracking": ("ship", 0, 1), "status_writeback": ("ship", 2, 3)}


# -- dwell resolution ---------------------------------------------------------------------------
# Dwell times are kept to 1 s below 10 min, 10 s below 2 h, 1 min below a day and 10 min beyond
# (at most 1.7 % below the exact value); p50/p95 report the nearest-rank value at that resolution.
_DWELL_STEPS = ((600, 1), (7200, 10), (86400, 60), (30 * 86400, 600))


def dwell_floor(seconds: int) -> int:
    """The dwell value kept for `seconds` (whole seconds, >= 0)."""
    for limit, step in _DWELL_STEPS:
        if seconds < limit:
            return seconds // step * step
    return _DWELL_STEPS[-1][0]


_DWELL_LOWERS = (0, *(limit for limit, _ in _DWELL_STEPS[:-1]))  # where each step's range starts
_DWELL_COUNTS = [
    (limit - lower) // step for lower, (limit, step) in zip(_DWELL_LOWERS, _DWELL_STEPS, strict=True)
]
# (upper limit, lower limit, step, index of the lower limit) of each dwell step.
_DWELL_INDEX_STEPS = tuple(
    (limit, lower, step, base)
    for lower, (limit, step), base in zip(
        _DWELL_LOWERS, _DWELL_STEPS, itertools.accumulate([0, *_DWELL_COUNTS[:-1]]), strict=True
    )
)
_DWELL_LAST_INDEX = sum(_DWELL_COUNTS)


def _dwell_index(seconds: int) -> int:
    """The histogram index of a stay of `seconds` (whole seconds, >= 0; floored or not: each lower
    limit is a multiple of its step, so the index of a value is the index of its dwell_floor)."""
    for limit, lower, step, base in _DWELL_INDEX_STEPS:
        if seconds < limit:
            return base + (seconds - lower) // step
    return _DWELL_LAST_INDEX


_DWELL_VALUES = np.array(sorted({dwell_floor(s) for s in range(0, 600)} | {
    v for lower, (limit, step) in zip(_DWELL_LOWERS, _DWELL_STEPS, strict=True)
    for v in range(lower, limit, step)
} | {_DWELL_STEPS[-1][0]}), dtype=np.int64)  # fmt: skip
assert all(_dwell_index(int(v)) == i for i, v in enumerate(_DWELL_VALUES))


def dwell_buckets(window: timedelta) -> int:
    """How many whole 5-minute buckets the dwell window spans (the current one included)."""
    return max(1, math.ceil(window.total_seconds() * 1000 / DWELL_BUCKET_MS))


def _dwell_sql(d: str) -> str:
    """dwell_floor in SQL over the integer expression `d` (SQLite and PostgreSQL divide integers alike)."""
    cases = " ".join(f"WHEN {d} < {limit} THEN {d} / {step} * {step}" for limit, step in _DWELL_STEPS)
    return f"CASE {cases} ELSE {_DWELL_STEPS[-1][0]} END"


def _exits(state: str) -> list[tuple[str, int]]:
    """The milestones that end a stay in `state`, in the order they are looked at, with the
    failure reason each means (a later forward state: none, unless the stay timed out)."""
    later = [(milestone_column(s), _NO_FAILURE) for s in FORWARD[FORWARD.index(state) + 1 :]]
    exits = [(milestone_column(s), 1 + FAILURE_REASONS.index(s)) for s in EXITS]
    returns = [(milestone_column(s), 1 + FAILURE_REASONS.index("returned")) for s in RETURNS]
    return later + exits + returns


def _left_sql(state: str) -> str:
    return f"COALESCE({', '.join(c for c, _ in _exits(state))})"


def _reason_sql(state: str, timeout_ms: int | None) -> str:
    """The failure reason index of a stay that ended (left >= entered), in SQL."""
    entered, left = milestone_column(state), _left_sql(state)
    forward = [c for c, reason in _exits(state) if reason == _NO_FAILURE]
    timed_out = (
        f"CASE WHEN {left} - {entered} >= {timeout_ms} THEN {_TIMEOUT} ELSE 0 END" if timeout_ms else "0"
    )
    moved_on = " OR ".join(f"{c} IS NOT NULL" for c in forward)
    cases = [f"WHEN {moved_on} THEN {timed_out}"] if forward else []
    cases += [f"WHEN {c} IS NOT NULL THEN {reason}" for c, reason in _exits(state) if reason != _NO_FAILURE]
    return f"CASE {' '.join(cases)} ELSE 0 END"


def _left_positions(state: str) -> tuple[tuple[int, int], ...]:
    return tuple((_COL[c], reason) for c, reason in _exits(state))


_DWELL_POS = [(s, _COL[milestone_column(s)], _left_positions(s)) for s in DWELL_STATES]
_PAID, _CANCELLED, _CLOSED = _COL["paid_at"], _COL["cancelled_at"], _COL["closed_at"]
_REACHED_POS = tuple(_COL[milestone_column(s)] for s in WMS_REACHED)
_ERP_REACHED_POS = tuple(_COL[milestone_column(s)] for s in ERP_REACHED)
# A row's WMS / ERP milestones in one call (several each, so itemgetter gives tuples), and none of them.
_REACHED_OF, _ERP_REACHED_OF = itemgetter(*_REACHED_POS), itemgetter(*_ERP_REACHED_POS)
_NO_REACHED, _NO_ERP_REACHED = (None,) * len(_REACHED_POS), (None,) * len(_ERP_REACHED_POS)
_ERP_ACCEPTED, _SHIPPED = _COL["erp_accepted_at"], _COL["shipped_at"]
_MANUAL, _CHANNEL_SHIPPED = _COL["manual_at"], _COL["channel_shipped_at"]
_CHANNEL, _ROLES, _DUPS = _COL["channel"], _COL["seen_roles"], _COL["duplicate_records"]
_AMOUNT, _PAID_AMOUNT, _CALLBACK_DELAY = (
    _COL["amount_fen"],
    _COL["paid_amount_fen"],
    _COL["callback_delay_ms"],
)


class _DwellRing:
    """Per-state histograms of dwell values and counts of stays by failure reason, for the 5-minute
    buckets (of the time orders left a state) of one window (+1 ahead)."""

    def __init__(self, buckets: int, low: int) -> None:
        self.size = buckets + 1
        self.low = low  # the oldest bucket held
        self.ahead: Counter = Counter()  # (state, bucket, index, reason) -> orders, for buckets past the ring
        self.hist = {s: np.zeros((self.size, len(_DWELL_VALUES)), dtype=np.int32) for s in DWELL_STATES}
        self.reasons = {
            s: np.zeros((self.size, 1 + len(FAILURE_REASONS)), dtype=np.int64) for s in DWELL_STATES
        }

    def add(self, state: str, bucket: int, index: int, reason: int, n: int) -> None:
        if bucket >= self.low + self.size:  # ahead of the clock (a skewed source): held aside
            self.ahead[(state, bucket, index, reason)] += n
        elif bucket >= self.low:
            slot = bucket % self.size
            self.hist[state][slot, index] += n
            self.reasons[state][slot, reason] += n

    def advance(self, low: int) -> None:
        """Drop the buckets older than `low`; their rows take the newest buckets (and what was ahead)."""
        if low <= self.low:
            return
        for bucket in range(self.low, min(low, self.low + self.size)):
            for state in DWELL_STATES:
                self.hist[state][bucket % self.size] = 0
                self.reasons[state][bucket % self.size] = 0
        self.low = low
        for key in [k for k in self.ahead if k[1] < low + self.size]:
            n = self.ahead.pop(key)
            if key[1] >= low:
                self.add(*key, n)

    def window(self, state: str) -> np.ndarray:
        """The histogram of the window: every bucket held except the one ahead."""
        hist = self.hist[state]
        return hist.sum(axis=0) - hist[(self.low + self.size - 1) % self.size]

    def window_reasons(self, state: str) -> np.ndarray:
        """Stays that ended in the window by failure reason index (0: no failure)."""
        reasons = self.reasons[state]
        return reasons.sum(axis=0) - reasons[(self.low + self.size - 1) % self.size]


class _Aggregates:
    """What a refresh keeps between runs; patched by order-row changes."""

    def __init__(self, ring: _DwellRing, fast_ms: int, late_ms: int, timeouts_ms: dict[str, int]) -> None:
        self.pay: dict[tuple[int, str], list[int]] = {}  # (minute, channel) -> counts in PAY_FIELDS order
        self.hours: dict[tuple[int, str], list[int]] = {}  # (hour, channel) -> the same, summed
        self.pruned: tuple[int, int] | None = None  # the hours prune_pay last kept cells from
        self.hops: dict[tuple[str, int, str], list[int]] = {}  # (family, minute, channel) -> HOP_CELLS counts
        self.hop_hours: dict[tuple[str, int, str], list[int]] = {}  # (family, hour, channel) -> the same
        self.channels: set[str] = set()  # every channel a cell has been made for
        self.dwell = ring
        self.timeouts_ms = timeouts_ms  # dwell states with a timeout: a stay this long failed
        self.fast_ms = fast_ms
        self.late_ms = late_ms
        # Stuck orders by (state, dimension, value) as of `stuck_cuts` (state -> the stuck clock at
        # or before which an order in it is stuck); the change feed keeps them, a refresh adds the
        # orders that crossed their timeout since.
        self.stuck: Counter = Counter()
        self.stuck_cuts: dict[str, int] = {}

    def cells(self, row: tuple) -> tuple[tuple | None, list[tuple]]:
        """One order row's payment cell entry ((minute, channel), counts) and hop cell entries
        ((family, minute, channel), counts)."""
        pay = None
        paid = row[_PAID]
        reached = _REACHED_OF(row) != _NO_REACHED
        cancelled = row[_CANCELLED]
        counted = reached or (cancelled is None and row[_CLOSED] is None)
        roles = row[_ROLES]
        if paid is not None:
            erp_reached = _ERP_REACHED_OF(row) != _NO_ERP_REACHED
            erp_counted = erp_reached or (cancelled is None and row[_CLOSED] is None)
            by_payment = 1 if roles & _PAYMENT_BIT else 0
            amount, paid_amount = row[_AMOUNT], row[_PAID_AMOUNT]
            pay = (
                (paid // MINUTE_MS, row[_CHANNEL]),
                (
                    1,
                    1 if counted else 0,
                    1 if counted and reached else 0,
                    1 if cancelled is not None and cancelled - paid <= self.fast_ms else 0,
                    row[_DUPS],
                    by_payment,
                    1 if by_payment and not roles & _CHANNEL_BIT else 0,
                    1 if paid_amount is not None and amount is not None and paid_amount != amount else 0,
                    1 if row[_CALLBACK_DELAY] is not None and row[_CALLBACK_DELAY] > self.late_ms else 0,
                    1 if erp_counted else 0,
                    1 if erp_counted and erp_reached else 0,
                    1 if row[_MANUAL] is not None else 0,
                ),
            )
        hops = []
        accepted, shipped = row[_ERP_ACCEPTED], row[_SHIPPED]
        if accepted is not None:
            hops.append(
                (
                    ("erp", accepted // MINUTE_MS, row[_CHANNEL]),
                    (1 if counted else 0, 1 if counted and reached else 0),
                )
            )
        if shipped is not None:
            by_wms = 1 if roles & _WMS_BIT else 0
            hops.append(
                (
                    ("ship", shipped // MINUTE_MS, row[_CHANNEL]),
                    (
                        1,
                        1 if roles & _CARRIER_BIT else 0,
                        by_wms,
                        1 if by_wms and row[_CHANNEL_SHIPPED] is not None else 0,
                    ),
                )
            )
        return pay, hops

    def _stay(self, state: str, entered: int, left: int, reason: int) -> tuple[str, int, int, int]:
        """The dwell entry of a stay in `state` from `entered` to `left` (ms) through an exit of `reason`."""
        stay = left - entered
        seconds = stay // 1000
        if reason == _NO_FAILURE and stay >= self.timeouts_ms.get(state, _NEVER_MS):
            reason = _TIMEOUT
        return state, left // DWELL_BUCKET_MS, seconds if seconds < 600 else _dwell_index(seconds), reason

    def change(self, old: tuple | None, new: tuple) -> None:
        """Move one order from its old row's contributions to its new row's."""
        if self.stuck_cuts:
            for row, sign in ((old, -1), (new, 1)):
                if row is not None:
                    cut = self.stuck_cuts.get(row[_STATE_POS])
                    if cut is not None and _stuck_clock_of(row) <= cut:
                        for key in _stuck_keys(row):
                            self.stuck[key] += sign
        new_pay, new_hops = self.cells(new)
        old_pay, old_hops = (None, []) if old is None else self.cells(old)
        if old_hops != new_hops:
            for entries, sign in ((old_hops, -1), (new_hops, 1)):
                for key, counts in entries:
                    for cells, at in ((self.hops, key), (self.hop_hours, (key[0], key[1] // 60, key[2]))):
                        cell = cells.get(at)
                        if cell is None:
                            cell = cells[at] = [0] * len(HOP_CELLS[key[0]])
                            self.channels.add(key[2])
                        for i, n in enumerate(counts):
                            cell[i] += sign * n
        if old_pay != new_pay:
            for entry, sign in ((old_pay, -1), (new_pay, 1)):
                if entry is not None:
                    (minute, channel), counts = entry
                    for cells, key in ((self.pay, entry[0]), (self.hours, (minute // 60, channel))):
                        cell = cells.get(key)
                        if cell is None:
                            cell = cells[key] = [0] * len(PAY_FIELDS)
                            self.channels.add(channel)
                        for i, n in enumerate(counts):
                            cell[i] += sign * n
        # Per dwell state, the stay each row shows (entered, the exit it left through): only a stay
        # that differs moves between the histograms (a change usually ends one stay, or none).
        for state, entered_pos, left_pos in _DWELL_POS:
            entered, was = new[entered_pos], None if old is None else old[entered_pos]
            if entered is None and was is None:
                continue
            now_stay = None if entered is None else _exit_of(new, entered, left_pos)
            before_stay = None if was is None else _exit_of(old, was, left_pos)
            if entered == was and now_stay == before_stay:
                continue
            if before_stay is not None:
                self.dwell.add(*self._stay(state, was, *before_stay), -1)
            if now_stay is not None:
                self.dwell.add(*self._stay(state, entered, *now_stay), 1)

    def prune_pay(self, oldest_minute: int, oldest_hour: int) -> None:
        """Drop the cells older than any range needs, once an hour (cells a little older are harmless:
        no range reaches them; changes to old orders make such cells too)."""
        if self.pruned == (oldest_minute // 60, oldest_hour):
            return
        self.pruned = (oldest_minute // 60, oldest_hour)
        for key in [k for k in self.pay if k[0] < oldest_minute]:
            del self.pay[key]
        for key in [k for k in self.hours if k[0] < oldest_hour]:
            del self.hours[key]
        for key in [k for k in self.hops if k[1] < oldest_minute]:
            del self.hops[key]
        for key in [k for k in self.hop_hours if k[1] < oldest_hour]:
            del self.hop_hours[key]


class KpiEngine:
    """Builds the KPI statements once (bound parameters only) and computes snapshots.

    With `store`, the engine follows the store's change feed and `refresh` is incremental;
    without it every `refresh` is a full `compute`.
    """

    def __init__(
        self,
        engine: Engine,
        window: timedelta,
        sla: timedelta,
        timeouts: dict[str, timedelta],
        fast_cancel: timedelta = timedelta(seconds=60),
        store: Store | None = None,
        dwell_window: timedelta = timedelta(hours=1),
        order_grace: timedelta = timedelta(minutes=10),
        callback_limit: timedelta = timedelta(seconds=8),
        windows: dict[str, timedelta] | None = None,
        tracking_sla: timedelta = timedelta(hours=4),
        writeback_sla: timedelta = timedelta(minutes=15),
        hops: tuple[str, ...] | None = None,
    ) -> None:
        self.engine = engine
        self.tracking_sla = tracking_sla
        self.writeback_sla = writeback_sla
        self.hops = tuple(HOPS) if hops is None else tuple(h for h in HOPS if h in hops)
        self.window = window
        self.windows = dict(SHORT_WINDOWS if windows is None else windows)
        self._long_hours = {n: int(w / timedelta(hours=1)) for n, w in self.windows.items() if w > window}
        self._most_hours = max(self._long_hours.values(), default=0)
        self.sla = sla
        self.timeouts = {s: t for s, t in timeouts.items() if s in OPEN_STATES}
        # A return held in its state longer than the state's stuck timeout (24 h unless configured) is a break.
        self.return_timeouts = {s: self.timeouts.get(s, RETURN_BREAK_AFTER) for s in OPEN_RETURNS}
        self._stuck_timeouts = {**self.return_timeouts, **self.timeouts}
        self.fast_cancel = fast_cancel
        self._fast_ms = int(fast_cancel.total_seconds() * 1000)
        self.callback_limit = callback_limit
        self._late_ms = int(callback_limit.total_seconds() * 1000)
        self.dwell_window = dwell_window
        self.order_grace = order_grace
        self._window_buckets = dwell_buckets(dwell_window)
        self._dwell_timeouts_ms = dwell_timeouts_ms(self.timeouts)
        self._store = store
        self._agg: _Aggregates | None = None
        self._pending: list[OrderChange] = []
        self._pending_lock = threading.Lock()
        if store is not None:
            store.subscribe(self._on_change)

    @classmethod
    def from_config(cls, engine: Engine, kpi: KpiConfig, store: Store | None = None) -> KpiEngine:
        """The engine with every setting of config.toml's [kpi]."""
        return cls(
            engine,
            kpi.window,
            kpi.sync_sla,
            kpi.stuck_timeouts,
            kpi.fast_cancel,
            store=store,
            dwell_window=kpi.dwell_window,
            order_grace=kpi.order_grace,
            callback_limit=kpi.callback_delay_limit,
            windows=kpi.window_widths,
            tracking_sla=kpi.tracking_sla,
            writeback_sla=kpi.writeback_sla,
            hops=kpi.hops,
        )

    # -- the change feed -------------------------------------------------------------------------
    def _on_change(self, changes: list[OrderChange]) -> None:
        with self._pending_lock:
            if self._agg is None:
                return
            self._pending.extend(changes)
            if len(self._pending) > PENDING_LIMIT:
                self._agg, self._pending = None, []

    def _quiet_store(self):
        """Hold the store's ingest lock, so the aggregates and the SQL read the same orders."""
        return self._store.lock if self._store is not None else contextlib.nullcontext()

    # -- entry points ------------------------------------------------------------------------------
    def compute(self, now: datetime) -> Snapshot:
        """Every KPI from the store alone (and the aggregates incremental refreshes start from)."""
        started = time.perf_counter()
        with self._quiet_store(), self.engine.connect() as conn:
            agg = self._load(conn, now)
            values = self._values(conn, agg, now)
            with self._pending_lock:
                self._agg, self._pending = (agg, []) if self._store is not None else (None, [])
        return Snapshot(now, tuple(values), time.perf_counter() - started)

    def refresh(self, now: datetime) -> Snapshot:
        """The KPIs at `now` from the previous aggregates and the changes since (full when none)."""
        if self._agg is None:
            return self.compute(now)
        started = time.perf_counter()
        with self._quiet_store(), self.engine.connect() as conn:
            with self._pending_lock:
                agg, changes, self._pending = self._agg, self._pending, []
            if agg is None:
                agg = self._load(conn, now)
                with self._pending_lock:
                    self._agg = agg
            else:
                agg.dwell.advance(to_ms(now) // DWELL_BUCKET_MS - self._window_buckets + 1)
                for old, new in changes:
                    agg.change(old, new)
            values = self._values(conn, agg, now)
        return Snapshot(now, tuple(values), time.perf_counter() - started)

    # -- the full load --------------------------------------------------------------------------
    def _load(self, conn, now: datetime) -> _Aggregates:
        now_ms = to_ms(now)
        now_bucket = now_ms // DWELL_BUCKET_MS
        ring = _DwellRing(self._window_buckets, now_bucket - self._window_buckets + 1)
        agg = _Aggregates(ring, self._fast_ms, self._late_ms, self._dwell_timeouts_ms)
        oldest_minute, oldest_hour = self._oldest_cells(now_ms)
        sql = _pay_sql(MINUTE_MS, "paid_at >= :since")
        cut = -(-oldest_minute // 60) * HOUR_MS  # hours from here: summed minute cells; before: SQL by hour
        for minute, channel, *cell in _rows(
            conn, sql, since=oldest_minute * MINUTE_MS, fast_ms=self._fast_ms, late_ms=self._late_ms
        ):
            counts = agg.pay[(int(minute), channel)] = [int(x or 0) for x in cell]
            if minute * MINUTE_MS >= cut:
                hour = agg.hours.setdefault(
                    (int(minute) * MINUTE_MS // HOUR_MS, channel), [0] * len(PAY_FIELDS)
                )
                for i, n in enumerate(counts):
                    hour[i] += n
        for family, minute, channel, *cell in _rows(
            conn, _HOP_LOAD_SQL, since=oldest_minute * MINUTE_MS, until=_NEVER_MS
        ):
            counts = agg.hops[(family, int(minute), channel)] = [
                int(x or 0) for x in cell[: len(HOP_CELLS[family])]
            ]
            if minute * MINUTE_MS >= cut:
                hour = agg.hop_hours.setdefault((family, int(minute) // 60, channel), [0] * len(counts))
                for i, n in enumerate(counts):
                    hour[i] += n
        if oldest_hour * HOUR_MS < cut:  # the long windows' older hours: one pass by hour each
            # Most of the table, grouped by hour: with a small cache, so that SQLite's sort of it
            # spills to a temp file instead of growing to the cache budget (store.db.small_sorts).
            # Read in table order (`+paid_at` keeps SQLite off the index).
            sql = _pay_sql(HOUR_MS, "+paid_at >= :since AND +paid_at < :cut")
            with small_sorts(conn):
                for hour, channel, *cell in _rows(
                    conn,
                    sql,
                    since=oldest_hour * HOUR_MS,
                    cut=cut,
                    fast_ms=self._fast_ms,
                    late_ms=self._late_ms,
                ):
                    agg.hours[(int(hour), channel)] = [int(x or 0) for x in cell]
                for family, hour, channel, *cell in _rows(
                    conn, _HOP_HOUR_SQL, since=oldest_hour * HOUR_MS, until=cut
                ):
                    agg.hop_hours[(family, int(hour), channel)] = [
                        int(x or 0) for x in cell[: len(HOP_CELLS[family])]
                    ]
        agg.channels.update(k[1] for k in agg.pay)
        agg.channels.update(k[1] for k in agg.hours)
        agg.channels.update(k[2] for k in agg.hops)
        agg.channels.update(k[2] for k in agg.hop_hours)
        low_ms, high_ms = ring.low * DWELL_BUCKET_MS, (ring.low + ring.size) * DWELL_BUCKET_MS
        for state, bucket, value, reason, n in _rows(conn, self._dwell_load_sql, low=low_ms, high=high_ms):
            ring.add(state, int(bucket), _dwell_index(int(value)), int(reason), int(n))
        return agg

    @functools.cached_property
    def _dwell_load_sql(self) -> str:
        """The dwell entries of the stays that ended in [:low, :high), per state: the orders whose last
        event is that recent are read once (their milestones, materialized), each state's part groups
        them (instead of one index range and row lookups per state)."""
        parts = []
        for state in DWELL_STATES:
            entered, left = milestone_column(state), _left_sql(state)
            reason = _reason_sql(state, self._dwell_timeouts_ms.get(state))
            parts.append(
                f"SELECT '{state}' AS state, b, {_dwell_sql('d')} AS v, r, count(*) AS n FROM ("
                f"SELECT {left} / {DWELL_BUCKET_MS} AS b, ({left} - {entered}) / 1000 AS d, {reason} AS r "
                f"FROM recent WHERE {entered} IS NOT NULL AND {left} >= {entered} "
                f"AND {left} >= :low AND {left} < :high) t GROUP BY b, v, r"
            )
        milestones = ", ".join(milestone_column(s) for s in STATES)
        return (
            f"WITH recent AS MATERIALIZED (SELECT {milestones} FROM orders WHERE last_event_at >= :low) "
            + " UNION ALL ".join(parts)
        )

    @property
    def _window_ms(self) -> int:
        return int(self.window.total_seconds() * 1000)

    def _ends(self, now_ms: int) -> tuple[int, int, int]:
        """Where the sync, recent and settled ranges end: SLA ago, now, grace ago."""
        return (
            now_ms - int(self.sla.total_seconds() * 1000),
            now_ms,
            now_ms - int(self.order_grace.total_seconds() * 1000),
        )

    def _hop_ends(self, now_ms: int) -> dict[str, int]:
        """Where the hops judged from hop cells end: their SLA ago."""
        slas = {
            "erp_wms": self.sla,
            "shipped_tracking": self.tracking_sla,
            "status_writeback": self.writeback_sla,
        }
        return {hop: now_ms - int(slas[hop].total_seconds() * 1000) for hop in CELL_HOPS if hop in self.hops}

    def _hop_span(self, now_ms: int, end: int, window: str | None) -> tuple[int, int]:
        """The whole minutes [first, last] of hop starts a hop ending at `end` judges: in the KPI
        window, from its first whole minute; in a short window, its width in minutes; in a long one,
        from the start of the hour `width` before the end's hour."""
        last = (end + 1) // MINUTE_MS - 1  # the last minute ending at or before the end
        if window is None:
            return -(-(now_ms - self._window_ms) // MINUTE_MS), last
        if window in self._long_hours:
            return (end // HOUR_MS - self._long_hours[window]) * 60, last
        return last - int(self.windows[window] / timedelta(minutes=1)) + 1, last

    def _oldest_cells(self, now_ms: int) -> tuple[int, int]:
        """The oldest minute and hour cell any window needs: minutes from the KPI window's start (or
        the last partial hour of a long window, or a short hop window, if earlier), hours from the
        first whole one of those minutes (or the long windows' first)."""
        hop_ends = self._hop_ends(now_ms).values()
        first_end_hour = min(*self._ends(now_ms), *hop_ends) // HOUR_MS
        oldest_minute = min(now_ms - self._window_ms, first_end_hour * HOUR_MS) // MINUTE_MS
        for end in hop_ends:
            for name in self.windows:
                if name not in self._long_hours:
                    oldest_minute = min(oldest_minute, self._hop_span(now_ms, end, name)[0])
        return oldest_minute, min(first_end_hour - self._most_hours, -(-oldest_minute // 60))

    # -- values -----------------------------------------------------------------------------------
    def _values(self, conn, agg: _Aggregates, now: datetime) -> list[KpiValue]:
        now_ms = to_ms(now)
        start = now_ms - self._window_ms
        agg.prune_pay(*self._oldest_cells(now_ms))
        agg.dwell.advance(now_ms // DWELL_BUCKET_MS - self._window_buckets + 1)
        synced, recent, settled = self._pay_sums(
            conn,
            agg,
            (start, now_ms - int(self.sla.total_seconds() * 1000)),
            (start, now_ms),
            (start, now_ms - int(self.order_grace.total_seconds() * 1000)),
        )
        counts = _rows(conn, "SELECT state, dim, value, n FROM state_counts WHERE n > 0")
        stuck = self._stuck(conn, agg, now_ms, counts)
        values = (
            _payment_values(synced, recent, settled)
            + _manual_values(recent)
            + self._hop_values(agg, synced, now_ms)
            + self._state_values(counts, stuck)
            + self._return_values(conn, counts, stuck, now_ms - self._window_ms)
            + self._dwell_values(agg, self._overstayed(conn, agg.dwell.low * DWELL_BUCKET_MS, now_ms))
        )
        ends = self._ends(now_ms)
        for name, width in self.windows.items():
            if name in self._long_hours:  # from the start of the hour `width` before each end's hour
                hours = self._long_hours[name]
                sums = self._pay_sums(conn, agg, *[((end // HOUR_MS - hours) * HOUR_MS, end) for end in ends])
            else:
                span = int(width.total_seconds() * 1000)
                sums = self._pay_sums(conn, agg, *[(end - span, end) for end in ends])
            windowed = (
                _payment_values(*sums)
                + _manual_values(sums[1])
                + self._hop_values(agg, sums[0], now_ms, name)
            )
            values += [KpiValue(v.kpi, labels_of(dict(v.labels), window=name), v.value) for v in windowed]
        return values

    def _pay_sums(self, conn, agg: _Aggregates, *ranges: tuple[int, int]) -> list[dict[str, list[int]]]:
        """Payment cells summed per channel over paid_at in each [low, high] (ms, inclusive): whole
        hours from the hour cells, whole minutes around them from the minute cells, the partial
        edge minutes from SQL (one statement for all ranges)."""
        sums: list[dict[str, list[int]]] = [{} for _ in ranges]
        parts, owners, params = [], [], {"fast_ms": self._fast_ms, "late_ms": self._late_ms}
        for owner, (low, high) in enumerate(ranges):
            first = -(-low // MINUTE_MS)  # the first minute starting at or after low
            last = (high + 1) // MINUTE_MS - 1  # the last minute ending at or before high
            if high < low:
                continue
            if first > last:
                edges = [(low, high)]
            else:
                edges = [(low, first * MINUTE_MS - 1), ((last + 1) * MINUTE_MS, high)]
                _sum_span(sums[owner], agg.pay, agg.hours, (), first, last, agg.channels)
            for edge_low, edge_high in edges:
                if edge_low <= edge_high:
                    k = len(parts)
                    parts.append(
                        f"SELECT {k} AS part, * FROM ({_pay_sql(None, f'paid_at >= :low{k} AND paid_at <= :high{k}')}) e{k}"
                    )
                    owners.append(owner)
                    params.update({f"low{k}": edge_low, f"high{k}": edge_high})
        if parts:
            for part, channel, *cell in _rows(conn, " UNION ALL ".join(parts), **params):
                _add_cell(sums[owners[part]], channel, [int(x or 0) for x in cell])
        return sums

    def _hop_values(
        self, agg: _Aggregates, synced: dict[str, list[int]], now_ms: int, window: str | None = None
    ) -> list[KpiValue]:
        """Per-hop sync: of the orders whose hop started in the window at least the hop's SLA ago,
        how many got past it. channel_erp by payment time (exact, from the payment cells of the sync
        range); the others by the whole minutes of their start (the ERP's acceptance, shipping),
        see _hop_span."""
        per_hop: dict[str, dict[str, list[int]]] = {hop: {} for hop in self.hops}
        if "channel_erp" in self.hops:
            i, j = PAY_FIELDS.index("erp_counted"), PAY_FIELDS.index("erp_reached")
            per_hop["channel_erp"] = {ch: [cell[i], cell[j]] for ch, cell in synced.items()}
        for hop, end in self._hop_ends(now_ms).items():
            family, whole, part = CELL_HOPS[hop]
            counts: dict[str, list[int]] = {}
            _sum_span(
                counts, agg.hops, agg.hop_hours, (family,), *self._hop_span(now_ms, end, window), agg.channels
            )
            per_hop[hop] = {channel: [cell[whole], cell[part]] for channel, cell in counts.items()}
        values: list[KpiValue] = []
        for hop in self.hops:
            total = [0, 0]
            for channel, (counted, reached) in sorted(per_hop[hop].items()):
                if counted:
                    total[0], total[1] = total[0] + counted, total[1] + reached
                    values += _hop_series(labels_of(hop=hop, channel=channel), counted, reached)
            values += _hop_series(labels_of(hop=hop), *total)
        return values

    def _stuck(self, conn, agg: _Aggregates, now_ms: int, counts: list[tuple]) -> Counter:
        """Stuck orders by (state, dimension, value): the aggregates' counts moved on to `now_ms` by
        the orders whose stuck clock passed their timeout since (one index range per state), or
        counted afresh when there are none yet (or the clock went back)."""
        cuts = {s: now_ms - int(t.total_seconds() * 1000) for s, t in self._stuck_timeouts.items()}
        old = agg.stuck_cuts
        if old.keys() == cuts.keys() and all(old[s] <= cut for s, cut in cuts.items()) and old:
            ranges = {s: (old[s], cut) for s, cut in cuts.items() if cut > old[s]}
            agg.stuck.update(self._stuck_between(conn, ranges))  # update: keeps every key
        else:
            agg.stuck = self._stuck_afresh(conn, cuts, counts)
        agg.stuck_cuts = cuts
        return agg.stuck

    def _stuck_afresh(self, conn, cuts: dict[str, int], counts: list[tuple]) -> Counter:
        """Stuck orders counted afresh, each state from the smaller side of its cut: the orders past
        it grouped, or, when fewer are still within their timeout (in transit: 24,465 of 83,082 at
        1 M orders), the state's open counts less those grouped. Only under the store's lock, which
        makes state_counts and the orders one commit's, and where the counts hold the orders past."""
        direct = {s: (None, cut) for s, cut in cuts.items()}
        if self._store is None or not cuts:
            return self._stuck_between(conn, direct)
        sql, params = _per_state_sql(direct, "state, count(*)", "GROUP BY state")
        past = dict(_rows(conn, sql, **params))
        totals = {state: n for state, dim, _value, n in counts if not dim}
        within = {s for s, n in past.items() if n <= (t := totals.get(s, 0)) and t - n < n}
        stuck = self._stuck_between(conn, {s: r for s, r in direct.items() if s not in within})
        fresh = self._stuck_between(conn, {s: (cuts[s], _NEVER_MS) for s in within})
        for state, dim, value, n in counts:
            if state in within and (left := n - fresh.get((state, dim, value), 0)):
                stuck[(state, dim, value)] = left
        return stuck

    def _stuck_between(self, conn, ranges: dict[str, tuple[int | None, int]]) -> Counter:
        """Orders held in a state longer than its timeout, by (state, dimension, value): from
        entering it, or for PROGRESS_STATES from the latest progress in it (STUCK_CLOCK)."""
        stuck: Counter = Counter()
        if not ranges:
            return stuck
        dims = ", ".join(STATE_DIMENSIONS)
        sql, params = _per_state_sql(ranges, f"state, {dims}, count(*)", f"GROUP BY state, {dims}")
        for state, *values, n in _rows(conn, sql, **params):
            stuck[(state, "", "")] += n
            for dim, value in zip(STATE_DIMENSIONS, values, strict=True):
                if value:
                    stuck[(state, dim, value)] += n
        return stuck

    def _state_values(self, counts: list[tuple], stuck: Counter) -> list[KpiValue]:
        """Per open state: the total, and one series per value of each dimension (never crossed)."""
        values: list[KpiValue] = []
        for state, dim, value, n in sorted(counts):
            labels = labels_of({dim: value} if dim else {}, state=state)
            values.append(KpiValue("state_orders", labels, float(n)))
            if state in self.timeouts:
                count = stuck.get((state, dim, value), 0)
                values.append(KpiValue("stuck_orders", labels, float(count)))
                values.append(KpiValue("stuck_ratio", labels, count / n))
        return values

    def _return_values(self, conn, counts: list[tuple], stuck: Counter, since_ms: int) -> list[KpiValue]:
        """Return break ratio per channel and in total: returns held in an open return state longer
        than its timeout, over returns active in the KPI window (now in an open return state, or
        refunded at or after `since_ms`). Open returns come from the ingest's state counts, the
        refunded ones from one range of the (state, state_at) index."""
        active: Counter = Counter()
        for state, dim, value, n in counts:
            if state in self.return_timeouts and dim in ("", "channel"):
                active[value] += n
        sql = "SELECT channel, count(*) FROM orders WHERE state = 'refunded' AND state_at >= :since GROUP BY channel"
        for channel, n in _rows(conn, sql, since=since_ms):
            active[""] += n
            active[channel] += n
        values: list[KpiValue] = []
        for channel in sorted(active):
            broken = sum(
                stuck.get((s, "channel" if channel else "", channel), 0) for s in self.return_timeouts
            )
            labels = labels_of(channel=channel) if channel else ()
            if active[channel] or not channel:
                values += _return_series(labels, broken, active[channel])
        if "" not in active:
            values += _return_series((), 0, 0)
        return values

    def _overstayed(self, conn, low_ms: int, now_ms: int) -> Counter:
        """Orders still in a dwell state whose timeout ran out in the dwell window (at or after
        `low_ms`, by `now_ms`): one range of the (state, state_at) index per state."""
        parts, params = [], {}
        for i, (state, timeout) in enumerate(sorted(self._dwell_timeouts_ms.items())):
            parts.append(
                f"SELECT '{state}', count(*) FROM orders WHERE state = '{state}' "
                f"AND state_at >= :low{i} AND state_at <= :high{i}"
            )
            params.update({f"low{i}": low_ms - timeout, f"high{i}": now_ms - timeout})
        return (
            Counter({s: int(n) for s, n in _rows(conn, " UNION ALL ".join(parts), **params)})
            if parts
            else Counter()
        )

    def _dwell_values(self, agg: _Aggregates, overstayed: Counter) -> list[KpiValue]:
        """Per dwell state, over the dwell window (whole 5-minute buckets, the current one included):
        nearest-rank p50/p95 of the time spent in it by orders that left it; and the failure ratio
        with its reasons over the stays judged (ended in the window, or still going past the
        state's timeout, which ran out in the window)."""
        values: list[KpiValue] = []
        for state in DWELL_STATES:
            hist = agg.dwell.window(state)
            cumulative = np.cumsum(hist)
            n = int(cumulative[-1])
            labels = labels_of(state=state)
            values.append(KpiValue("dwell_orders", labels, float(n)))
            for kpi, q in (("dwell_p50_seconds", 0.5), ("dwell_p95_seconds", 0.95)):
                if n:
                    index = int(np.searchsorted(cumulative, nearest_rank(n, q)))
                    values.append(KpiValue(kpi, labels, float(_DWELL_VALUES[index])))
            by_reason = [int(x) for x in agg.dwell.window_reasons(state)]
            by_reason[_TIMEOUT] += overstayed.get(state, 0)
            judged = n + overstayed.get(state, 0)
            values.append(KpiValue("dwell_judged_orders", labels, float(judged)))
            for i, reason in enumerate(FAILURE_REASONS, start=1):
                if i != _TIMEOUT or state in self._dwell_timeouts_ms:
                    reason_labels = labels_of(state=state, reason=reason)
                    values.append(KpiValue("dwell_failure_orders", reason_labels, float(by_reason[i])))
            if judged:
                values.append(KpiValue("dwell_failure_ratio", labels, sum(by_reason[1:]) / judged))
        return values


_STATE_POS, _STATE_AT_POS, _PROGRESS_POS = _COL["state"], _COL["state_at"], _COL["progress_at"]
_STATE_DIM_POS = tuple(_COL[d] for d in STATE_DIMENSIONS)


def _exit_of(row: tuple, entered: int, exits: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
    """(left, failure reason) of the stay entered at `entered`: the first of its exits the row has,
    when not before entering; None while it lasts."""
    for position, reason in exits:
        left = row[position]
        if left is not None:
            return (left, reason) if left >= entered else None
    return None


def _per_state_sql(
    ranges: dict[str, tuple[int | None, int]], columns: str, group_by: str
) -> tuple[str, dict]:
    """One SELECT of `columns` per state over its orders whose stuck clock is in (low, high] (low
    None: up to high), UNION ALL: the SQL and its parameters."""
    parts, params = [], {}
    for i, (state, (low, high)) in enumerate(sorted(ranges.items())):
        clock = stuck_clock(state)
        after = "" if low is None else f"AND {clock} > :low{i} "
        parts.append(
            f"SELECT {columns} FROM orders WHERE state = '{state}' {after}AND {clock} <= :cut{i} {group_by}"
        )
        params[f"cut{i}"] = high
        if low is not None:
            params[f"low{i}"] = low
    return " UNION ALL ".join(parts), params


def _stuck_clock_of(row: tuple) -> int:
    """An orders row's stuck clock, as stuck_clock() says in SQL."""
    if row[_STATE_POS] in PROGRESS_STATES and row[_PROGRESS_POS] is not None:
        return row[_PROGRESS_POS]
    return row[_STATE_AT_POS]


def _stuck_keys(row: tuple) -> list[tuple[str, str, str]]:
    """The (state, dimension, value) counts a stuck order is in (as _stuck_between groups them)."""
    state = row[_STATE_POS]
    keys = [(state, "", "")]
    for dim, position in zip(STATE_DIMENSIONS, _STATE_DIM_POS, strict=True):
        if row[position]:
            keys.append((state, dim, row[position]))
    return keys


def stuck_clock(state: str) -> str:
    """The SQL time an order's stay in `state` is stuck from: the latest progress reported in a
    PROGRESS_STATE (the store keeps it only when later than entering), else entering the state.
    Each form has its index (ix_orders_state, ix_orders_<state>_progress)."""
    return "COALESCE(progress_at, state_at)" if state in PROGRESS_STATES else "state_at"


def dwell_timeouts_ms(timeouts: dict[str, timedelta]) -> dict[str, int]:
    """Dwell states whose stuck timeout also limits the stay (a stay this long failed): not the
    PROGRESS_STATES, whose timeout limits the silence in them (a parcel travels for days)."""
    return {
        s: int(timeouts[s].total_seconds() * 1000)
        for s in DWELL_STATES
        if s in timeouts and s not in PROGRESS_STATES
    }


def _sum_span(
    total: dict[str, list[int]], minutes: dict, hours: dict, prefix: tuple, first: int, last: int, channels
) -> None:
    """Add the cells of the whole minutes [first, last] per channel into `total`: whole hours from
    the hour cells, the minutes around them from the minute cells (keys: prefix + (time, channel))."""
    first_hour, last_hour = -(-first // 60), (last + 1) // 60 - 1
    if first_hour > last_hour:
        spans = ((minutes, first, last + 1),)
    else:
        spans = (
            (minutes, first, first_hour * 60),
            (hours, first_hour, last_hour + 1),
            (minutes, (last_hour + 1) * 60, last + 1),
        )
    for cells, low, high in spans:
        for at in range(low, high):
            for channel in channels:
                cell = cells.get((*prefix, at, channel))
                if cell is not None:
                    _add_cell(total, channel, cell)


def _add_cell(total: dict[str, list[int]], channel: str, cell: list[int]) -> None:
    into = total.get(channel)
    if into is None:
        total[channel] = list(cell)
    else:
        for k, n in enumerate(cell):
            into[k] += n


def _payment_values(synced: dict, recent: dict, settled: dict) -> list[KpiValue]:
    """The payment-family KPIs from cells summed over the sync, recent and settled ranges."""
    return (
        _sync_values(synced)
        + _cell_ratios(recent, "fast_cancel", "fast", "paid")
        + _duplicate_values(recent)
        + _cell_ratios(recent, "amount_mismatch", "mismatch", "paid")
        + _cell_ratios(recent, "late_callback", "late_callback", "by_payment")
        + _loss_values(settled)
    )


def _sync_values(sums: dict[str, list[int]]) -> list[KpiValue]:
    """Orders paid in [now - window, now - SLA] (not ended before reaching the WMS), and how
    many of them reached it."""
    counted_at, reached_at = PAY_FIELDS.index("counted"), PAY_FIELDS.index("reached")
    values: list[KpiValue] = []
    total_counted = total_reached = 0
    for channel, cell in sorted(sums.items()):
        counted, reached = cell[counted_at], cell[reached_at]
        if counted:
            total_counted, total_reached = total_counted + counted, total_reached + reached
            values += _sync_series(labels_of(channel=channel), counted, reached)
    return values + _sync_series((), total_counted, total_reached)


def _loss_values(sums: dict[str, list[int]]) -> list[KpiValue]:
    """Order loss: payments (paid in [now - window, now - grace]) that no channel source shows."""
    values = _cell_ratios(sums, "order_loss", "lost", "by_payment")
    by_payment = PAY_FIELDS.index("by_payment")
    total = 0
    for channel, cell in sorted(sums.items()):
        if cell[by_payment]:
            values.append(
                KpiValue("order_loss_paid_orders", labels_of(channel=channel), float(cell[by_payment]))
            )
            total += cell[by_payment]
    return values + [KpiValue("order_loss_paid_orders", (), float(total))]


def _cell_ratios(sums: dict[str, list[int]], name: str, part: str, whole: str) -> list[KpiValue]:
    """`{name}_orders` (the part) and `{name}_ratio` (part / whole) per channel with a whole, and in total."""
    i, j = PAY_FIELDS.index(part), PAY_FIELDS.index(whole)
    values: list[KpiValue] = []
    total_part = total_whole = 0
    for channel, cell in sorted(sums.items()):
        if cell[j]:
            total_part, total_whole = total_part + cell[i], total_whole + cell[j]
            values += _ratio_series(name, labels_of(channel=channel), cell[i], cell[j])
    return values + _ratio_series(name, (), total_part, total_whole)


def _manual_values(sums: dict[str, list[int]]) -> list[KpiValue]:
    """Orders paid in the KPI window, and of those the ones a person handled (manual intervention)."""
    paid = PAY_FIELDS.index("paid")
    values = _cell_ratios(sums, "manual_intervention", "manual", "paid")
    total = 0
    for channel, cell in sorted(sums.items()):
        if cell[paid]:
            values.append(KpiValue("paid_orders", labels_of(channel=channel), float(cell[paid])))
            total += cell[paid]
    return values + [KpiValue("paid_orders", (), float(total))]


def _hop_series(labels, counted: int, reached: int) -> list[KpiValue]:
    out = [
        KpiValue("hop_sync_orders", labels, float(counted)),
        KpiValue("hop_sync_unreached_orders", labels, float(counted - reached)),
    ]
    if counted:
        out.append(KpiValue("hop_sync_success_ratio", labels, reached / counted))
    return out


def _return_series(labels, broken: int, active: int) -> list[KpiValue]:
    out = [
        KpiValue("return_break_orders", labels, float(broken)),
        KpiValue("return_active_orders", labels, float(active)),
    ]
    if active:
        out.append(KpiValue("return_break_ratio", labels, broken / active))
    return out


def _duplicate_values(sums: dict[str, list[int]]) -> list[KpiValue]:
    """Duplicate-free ratio: orders paid in the window over their records (orders + repeats)."""
    paid, dups = PAY_FIELDS.index("paid"), PAY_FIELDS.index("duplicates")
    values: list[KpiValue] = []
    total_orders = total_repeats = 0
    for channel, cell in sorted(sums.items()):
        if cell[paid]:
            total_orders, total_repeats = total_orders + cell[paid], total_repeats + cell[dups]
            values += _duplicate_series(labels_of(channel=channel), cell[paid], cell[dups])
    return values + _duplicate_series((), total_orders, total_repeats)


def _duplicate_series(labels, orders: int, repeats: int) -> list[KpiValue]:
    out = [KpiValue("duplicate_records", labels, float(repeats))]
    if orders:
        out.append(KpiValue("duplicate_free_ratio", labels, orders / (orders + repeats)))
    return out


def _ratio_series(name: str, labels, part: int, whole: int) -> list[KpiValue]:
    out = [KpiValue(f"{name}_orders", labels, float(part))]
    if whole:
        out.append(KpiValue(f"{name}_ratio", labels, part / whole))
    return out


def nearest_rank(n: int, q: float) -> int:
    """1-based nearest-rank position of quantile q among n sorted values."""
    return max(1, math.ceil(q * n))


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
