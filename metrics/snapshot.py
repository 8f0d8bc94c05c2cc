"""Immutable KPI snapshots: computed by the KPI job, persisted, read by /metrics, alerts and pages."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import Engine, delete, insert, select

from store.schema import kpi_snapshots, kpi_values
from store.store import _driver_many, _insert_sql

Labels = tuple[tuple[str, str], ...]


_LABELS: dict[tuple, Labels] = {}  # the label sets seen, by their items as given (refreshes repeat them)


def labels_of(mapping: dict[str, str] | None = None, **kw: str) -> Labels:
    key = (*mapping.items(), *kw.items()) if mapping else tuple(kw.items())
    labels = _LABELS.get(key)
    if labels is None:
        merged = dict(mapping or {}, **kw)
        labels = tuple(sorted((k, str(v)) for k, v in merged.items()))
        if len(_LABELS) < 200_000:  # bounded: label values come from the data
            _LABELS[key] = labels
    return labels


@dataclass(frozen=True, slots=True)
class KpiValue:
    kpi: str
    labels: Labels
    value: float

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Snapshot:
    computed_at: datetime
    values: tuple[KpiValue, ...]
    duration_seconds: float = 0.0
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    _by_kpi: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for v in self.values:
            self._index[(v.kpi, v.labels)] = v.value
            self._by_kpi.setdefault(v.kpi, []).append(v)

    def get(self, kpi: str, **labels: str) -> float | None:
        """The value of one series; no labels = the total series."""
        return self._index.get((kpi, labels_of(labels)))

    def series(self, kpi: str, by: Iterable[str] | None = None) -> list[KpiValue]:
        """All series of a KPI; with `by`, only those whose label keys are exactly `by`."""
        keys = None if by is None else tuple(sorted(by))
        return [v for v in self._by_kpi.get(kpi, ()) if keys is None or tuple(k for k, _ in v.labels) == keys]


_VALUES_INSERT = _insert_sql(kpi_values, ["snapshot_id", "kpi", "labels", "value"])
HOURLY_HISTORY = timedelta(hours=50)  # "same time yesterday" (the morning briefing) with slack


def save_snapshot(
    engine: Engine, snapshot: Snapshot, keep: int = 3, hourly: timedelta = HOURLY_HISTORY
) -> int:
    """Persist a snapshot in one transaction and drop old ones; returns its id.

    Kept: the newest `keep`, and the first snapshot of each UTC hour within `hourly` of this one.
    """
    with engine.begin() as conn:
        snap_id = conn.execute(
            insert(kpi_snapshots).values(
                computed_at=snapshot.computed_at, duration_seconds=snapshot.duration_seconds
            )
        ).inserted_primary_key[0]
        rows = [(snap_id, v.kpi, _labels_json(v.labels), float(v.value)) for v in snapshot.values]
        _driver_many(conn, _VALUES_INSERT, rows)  # hundreds of rows each refresh: no per-row processing
        heads = conn.execute(
            select(kpi_snapshots.c.id, kpi_snapshots.c.computed_at).order_by(kpi_snapshots.c.id.desc())
        ).all()
        horizon = snapshot.computed_at - hourly
        first_of_hour: dict[int, int] = {}
        for head in heads:
            if head.computed_at >= horizon:
                hour = int(head.computed_at.timestamp()) // 3600
                first_of_hour[hour] = min(head.id, first_of_hour.get(hour, head.id))
        kept = {h.id for h in heads[:keep]} | set(first_of_hour.values())
        old_ids = [h.id for h in heads if h.id not in kept]
        if old_ids:
            conn.execute(delete(kpi_values).where(kpi_values.c.snapshot_id.in_(old_ids)))
            conn.execute(delete(kpi_snapshots).where(kpi_snapshots.c.id.in_(old_ids)))
    return snap_id


@lru_cache(maxsize=50_000)  # the same few hundred series every refresh
def _labels_json(labels: Labels) -> str:
    return json.dumps(dict(labels), sort_keys=True, ensure_ascii=False)


def load_latest_snapshot(engine: Engine) -> Snapshot | None:
    with engine.connect() as conn:
        head = conn.execute(select(kpi_snapshots).order_by(kpi_snapshots.c.id.desc()).limit(1)).first()
        return _load(conn, head)


def load_snapshot_near(engine: Engine, moment: datetime, tolerance: timedelta) -> Snapshot | None:
    """The persisted snapshot computed closest to `moment`, if one is within `tolerance` of it."""
    col = kpi_snapshots.c.computed_at
    with engine.connect() as conn:
        before = conn.execute(
            select(kpi_snapshots)
            .where(col <= moment, col >= moment - tolerance)
            .order_by(col.desc())
            .limit(1)
        ).first()
        after = conn.execute(
            select(kpi_snapshots).where(col > moment, col <= moment + tolerance).order_by(col).limit(1)
        ).first()
        heads = [h for h in (before, after) if h is not None]
        head = min(heads, key=lambda h: abs(h.computed_at - moment)) if heads else None
        return _load(conn, head)


def _load(conn, head) -> Snapshot | None:
    if head is None:
        return None
    rows = conn.execute(
        select(kpi_values.c.kpi, kpi_values.c.labels, kpi_values.c.value).where(
            kpi_values.c.snapshot_id == head.id
        )
    ).all()
    values = tuple(KpiValue(r.kpi, labels_of(json.loads(r.labels)), r.value) for r in rows)
    return Snapshot(head.computed_at, values, head.duration_seconds)
