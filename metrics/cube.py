"""The status cube: orders by time bucket × one dimension × state, and the orders behind any cell.

Two measures over the one-row-per-order store:
- `in_state`: orders currently in the state, by when they entered it (where orders pile up; an
  index-only range scan of (state, state_at, dimensions)). Orders that entered before `since`
  are counted per dimension value in `Cube.earlier`.
- `entered`: orders that entered the state in each bucket, whatever they are in now (the flow).

Buckets are aligned to the service time zone's offset at `until` (exact for zones without DST,
such as Asia/Shanghai). Dimension names come from a fixed list, never from the caller's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

from store.lifecycle import RANK, STATE_DIMENSIONS, milestone_column
from store.schema import from_ms, to_ms

GRANULARITIES = {"5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
CUBE_DIMENSIONS = STATE_DIMENSIONS
Measure = Literal["in_state", "entered"]
UNKNOWN = ""  # the dimension value of orders that do not have one (yet)
_ORDER_FIELDS = ("global_id", "channel", "raw_order_id", "state", "state_at", "amount_fen", *CUBE_DIMENSIONS)


class CubeError(ValueError):
    """A cube request naming an unknown state, dimension, granularity or measure."""


@dataclass(frozen=True)
class Cube:
    state: str
    dimension: str
    granularity: str
    measure: Measure
    buckets: tuple[datetime, ...]  # UTC start of each column
    values: tuple[str, ...]  # dimension values (rows), most orders first
    counts: dict[tuple[str, datetime], int]  # (value, bucket start) -> orders
    earlier: dict[str, int] = field(default_factory=dict)  # in_state: entered before the first bucket

    def matrix(self) -> list[list[int]]:
        """Rows (values) × columns (buckets), zeros where no order is."""
        return [[self.counts.get((v, b), 0) for b in self.buckets] for v in self.values]


@dataclass(frozen=True)
class CellSpec:
    """One cube cell: which orders a click on it stands for."""

    state: str
    dimension: str
    value: str
    start: datetime
    end: datetime
    measure: Measure = "in_state"


def _check(state: str, dimension: str, granularity: str, measure: str) -> None:
    problems = []
    if state not in RANK:
        problems.append(f"state: unknown state {state!r}")
    if dimension not in CUBE_DIMENSIONS:
        problems.append(f"dimension: {dimension!r} is not one of {list(CUBE_DIMENSIONS)}")
    if granularity not in GRANULARITIES:
        problems.append(f"granularity: {granularity!r} is not one of {list(GRANULARITIES)}")
    if measure not in ("in_state", "entered"):
        problems.append(f"measure: {measure!r} is not in_state or entered")
    if problems:
        raise CubeError("; ".join(problems))


def _offset_ms(zone: str, at: datetime) -> int:
    offset = at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    return int(offset.total_seconds() * 1000)


def status_cube(
    engine: Engine,
    *,
    state: str,
    dimension: str,
    granularity: str,
    since: datetime,
    until: datetime,
    measure: Measure = "in_state",
    timezone: str = "Asia/Shanghai",
) -> Cube:
    """Orders of `state` by bucket of [since, until) and value of `dimension`."""
    _check(state, dimension, granularity, measure)
    width, offset = GRANULARITIES[granularity], _offset_ms(timezone, until)
    first = (to_ms(since) + offset) // width
    last = (to_ms(until) - 1 + offset) // width
    low, high = first * width - offset, (last + 1) * width - offset  # whole buckets
    at = "state_at" if measure == "in_state" else milestone_column(state)
    where = "state = :state AND " if measure == "in_state" else ""
    params = {"state": state, "low": low, "high": high, "width": width, "offset": offset}
    grouped = (
        f"SELECT ({at} + :offset) / :width AS bucket, {dimension} AS value, count(*) AS n FROM orders "
        f"WHERE {where}{at} >= :low AND {at} < :high GROUP BY ({at} + :offset) / :width, {dimension}"
    )
    counts: dict[tuple[str, datetime], int] = {}
    totals: dict[str, int] = {}
    earlier: dict[str, int] = {}
    with engine.connect() as conn:
        for bucket, value, n in conn.execute(text(grouped), params):
            key = value or UNKNOWN
            start = from_ms(int(bucket) * width - offset)
            counts[(key, start)] = counts.get((key, start), 0) + int(n)
            totals[key] = totals.get(key, 0) + int(n)
        if measure == "in_state":
            before = (
                f"SELECT {dimension} AS value, count(*) AS n FROM orders WHERE state = :state "
                f"AND state_at < :low GROUP BY {dimension}"
            )
            for value, n in conn.execute(text(before), params):
                key = value or UNKNOWN
                earlier[key] = earlier.get(key, 0) + int(n)
                totals.setdefault(key, 0)
    buckets = tuple(from_ms(b * width - offset) for b in range(first, last + 1))
    values = tuple(sorted(totals, key=lambda v: (-(totals[v] + earlier.get(v, 0)), v)))
    return Cube(state, dimension, granularity, measure, buckets, values, counts, earlier)


def cell_orders(engine: Engine, cell: CellSpec, limit: int = 500) -> list[dict]:
    """The orders behind one cell (oldest in the state first), at most `limit`."""
    _check(cell.state, cell.dimension, "1h", cell.measure)
    at = "state_at" if cell.measure == "in_state" else milestone_column(cell.state)
    conditions = [f"{at} >= :low", f"{at} < :high"]
    if cell.measure == "in_state":
        conditions.insert(0, "state = :state")
    conditions.append(
        f"({cell.dimension} IS NULL OR {cell.dimension} = '')"
        if cell.value == UNKNOWN
        else f"{cell.dimension} = :value"
    )
    sql = (
        f"SELECT {', '.join(_ORDER_FIELDS)} FROM orders WHERE {' AND '.join(conditions)} "
        f"ORDER BY {at}, global_id LIMIT :limit"
    )
    params = {
        "state": cell.state,
        "value": cell.value,
        "low": to_ms(cell.start),
        "high": to_ms(cell.end),
        "limit": limit,
    }
    with engine.connect() as conn:
        rows = [dict(zip(_ORDER_FIELDS, r, strict=True)) for r in conn.execute(text(sql), params)]
    for row in rows:
        row["state_at"] = from_ms(row["state_at"]).astimezone(UTC)
    return rows
