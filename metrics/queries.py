"""Read models for the dashboard: pure functions over the store, the latest snapshot and the config."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import Engine, func, select

from metrics.catalog import KPIS
from metrics.kpi import FAILURE_REASONS
from metrics.snapshot import Snapshot, load_latest_snapshot
from sentinel.config import Config, RuleConfig
from store.lifecycle import RANK
from store.schema import alerts, source_health

Status = Literal["ok", "bad", "unknown"]
ACTIVE_STATES = ("pending", "firing")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SEVERITY_ORDER = {"P1": 0, "P2": 1, "P3": 2}
# Only named columns are read: other tables' owners may add columns without breaking the pages.
_HEALTH_COLUMNS = (
    "source", "up", "last_success_at", "last_error_class", "consecutive_failures",
    "lag_seconds", "records_total", "quarantined_total", "errors_json",
)  # fmt: skip
_ALERT_COLUMNS = (
    "fingerprint",
    "rule",
    "labels",
    "state",
    "value",
    "fired_at",
    "pending_since",
    "updated_at",
)


@dataclass(frozen=True)
class KpiTile:
    """A golden KPI's total series judged against the rule(s) watching it."""

    kpi: str
    title_zh: str
    unit: str
    value: float | None
    status: Status
    op: str | None = None  # the rule's alert condition, e.g. "<" for "fires below threshold"
    threshold: float | None = None
    severity: str | None = None


@dataclass(frozen=True)
class StuckRow:
    state: str
    stuck_orders: float
    state_orders: float | None
    stuck_ratio: float | None


@dataclass(frozen=True)
class DwellRow:
    """One row of the seeds' 状态同步监控表: time in the state, failure ratio, top failure reason."""

    state: str
    p50_seconds: float | None
    p95_seconds: float | None
    judged_orders: float
    failure_ratio: float | None
    top_reason: str | None  # the reason with the most failed stays (ties: FAILURE_REASONS order)
    top_reason_orders: float


@dataclass(frozen=True)
class SourceHealthRow:
    """Health of one source; only classes and counts, never the raw error text (may hold secrets)."""

    source: str
    up: bool
    last_success_at: datetime | None
    seconds_since_success: float | None
    last_error_class: str | None
    consecutive_failures: int
    lag_seconds: float | None
    records_total: int
    quarantined_total: int
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertRow:
    fingerprint: str
    rule: str
    labels: dict[str, str]
    state: str
    value: float | None
    since: datetime | None  # fired_at when firing, pending_since when pending
    severity: str | None = None
    summary: str = ""


@dataclass(frozen=True)
class Overview:
    """Everything the overview page shows, read in one go."""

    snapshot: Snapshot | None
    tiles: list[KpiTile]
    channel_columns: list[str]
    channels: list[dict[str, object]]
    stuck: list[StuckRow]
    sources: list[SourceHealthRow]
    alerts: list[AlertRow]


def latest_snapshot(engine: Engine) -> Snapshot | None:
    """The newest persisted snapshot, or None before the first KPI refresh."""
    return load_latest_snapshot(engine)


def total_rules(config: Config, kpi: str) -> list[RuleConfig]:
    """Rules watching the total series of a KPI, most severe first."""
    rules = [r for r in config.alerts.rules if r.kpi == kpi and not r.by and not r.match]
    return sorted(rules, key=lambda r: _SEVERITY_ORDER.get(r.severity, 9))


def judge(value: float | None, rules: list[RuleConfig]) -> tuple[Status, RuleConfig | None]:
    """ok/bad/unknown of a value against rules whose op/threshold is the alert condition."""
    if not rules:
        return "unknown", None
    if value is None:
        return "unknown", rules[0]
    for rule in rules:
        if _OPS[rule.op](value, rule.threshold):
            return "bad", rule
    return "ok", rules[0]


def golden_tiles(snapshot: Snapshot | None, config: Config) -> list[KpiTile]:
    """One tile per ratio KPI that has a total series or a rule watching its total, catalog order."""
    tiles = []
    for spec in KPIS:
        if spec.unit != "ratio":
            continue
        value = None if snapshot is None else snapshot.get(spec.name)
        rules = total_rules(config, spec.name)
        if value is None and not rules:
            continue
        status, rule = judge(value, rules)
        tiles.append(
            KpiTile(
                kpi=spec.name,
                title_zh=spec.title_zh,
                unit=spec.unit,
                value=value,
                status=status,
                op=rule.op if rule else None,
                threshold=rule.threshold if rule else None,
                severity=rule.severity if rule else None,
            )
        )
    return tiles


def channel_rows(snapshot: Snapshot | None) -> tuple[list[str], list[dict[str, object]]]:
    """Per-channel pivot of every catalog KPI with channel-only series: (kpi columns, rows)."""
    if snapshot is None:
        return [], []
    columns: list[str] = []
    rows: dict[str, dict[str, object]] = {}
    for spec in KPIS:
        series = snapshot.series(spec.name, by=("channel",))
        if not series:
            continue
        columns.append(spec.name)
        for v in series:
            channel = v.label_dict["channel"]
            rows.setdefault(channel, {"channel": channel})[spec.name] = v.value
    return columns, [{k: rows[c].get(k) for k in ("channel", *columns)} for c in sorted(rows)]


def stuck_rows(snapshot: Snapshot | None) -> list[StuckRow]:
    """Stuck orders per canonical state (state totals), in lifecycle order."""
    if snapshot is None:
        return []
    out = []
    for v in snapshot.series("stuck_orders", by=("state",)):
        state = v.label_dict["state"]
        out.append(
            StuckRow(
                state,
                v.value,
                snapshot.get("state_orders", state=state),
                snapshot.get("stuck_ratio", state=state),
            )
        )
    return sorted(out, key=lambda r: RANK.get(r.state, 999))


def dwell_rows(snapshot: Snapshot | None) -> list[DwellRow]:
    """Per dwell state in lifecycle order: p50/p95, failure ratio and the top failure reason (none
    when no stay failed), derived from the per-reason failure counts."""
    if snapshot is None:
        return []
    failed: dict[str, dict[str, float]] = {}
    for v in snapshot.series("dwell_failure_orders", by=("reason", "state")):
        failed.setdefault(v.label_dict["state"], {})[v.label_dict["reason"]] = v.value
    out = []
    for v in snapshot.series("dwell_judged_orders", by=("state",)):
        state = v.label_dict["state"]
        reasons = sorted(failed.get(state, {}).items(), key=lambda r: (-r[1], FAILURE_REASONS.index(r[0])))
        top, top_n = reasons[0] if reasons and reasons[0][1] > 0 else (None, 0.0)
        out.append(
            DwellRow(
                state,
                snapshot.get("dwell_p50_seconds", state=state),
                snapshot.get("dwell_p95_seconds", state=state),
                v.value,
                snapshot.get("dwell_failure_ratio", state=state),
                top,
                top_n,
            )
        )
    return sorted(out, key=lambda r: RANK.get(r.state, 999))


def _counts(raw: str | None) -> dict[str, int]:
    try:
        data = json.loads(raw or "{}")
        return {str(k): int(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def source_health_rows(engine: Engine, now: datetime | None) -> list[SourceHealthRow]:
    """Source health ordered by name; seconds since last success measured from `now`."""
    cols = source_health.c
    stmt = select(*(cols[name] for name in _HEALTH_COLUMNS)).order_by(cols.source)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    out = []
    for r in rows:
        since = None
        if now is not None and r.last_success_at is not None:
            since = max(0.0, (now - r.last_success_at).total_seconds())
        out.append(
            SourceHealthRow(
                source=r.source,
                up=bool(r.up),
                last_success_at=r.last_success_at,
                seconds_since_success=since,
                last_error_class=r.last_error_class,
                consecutive_failures=int(r.consecutive_failures or 0),
                lag_seconds=r.lag_seconds,
                records_total=int(r.records_total or 0),
                quarantined_total=int(r.quarantined_total or 0),
                errors=_counts(r.errors_json),
            )
        )
    return out


def active_alerts(engine: Engine, config: Config | None = None, limit: int = 100) -> list[AlertRow]:
    """Pending and firing alerts, newest first, with severity/summary from the rule in config."""
    since = func.coalesce(alerts.c.fired_at, alerts.c.pending_since, alerts.c.updated_at)
    stmt = (
        select(*(alerts.c[name] for name in _ALERT_COLUMNS))
        .where(alerts.c.state.in_(ACTIVE_STATES))
        .order_by(since.desc(), alerts.c.fingerprint)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    rules = {r.name: r for r in config.alerts.rules} if config else {}
    out = []
    for r in rows:
        rule = rules.get(r.rule)
        try:
            labels = {str(k): str(v) for k, v in json.loads(r.labels or "{}").items()}
        except (ValueError, AttributeError):
            labels = {}
        out.append(
            AlertRow(
                fingerprint=r.fingerprint,
                rule=r.rule,
                labels=labels,
                state=r.state,
                value=r.value,
                since=r.fired_at or r.pending_since or r.updated_at,
                severity=rule.severity if rule else None,
                summary=rule.summary if rule else "",
            )
        )
    return out


def load_overview(engine: Engine, config: Config, now: datetime | None = None) -> Overview:
    """The overview read model; health ages are measured from `now`, else from the snapshot time.

    The dashboard runs beside a service whose clock may be virtual (the demo); the snapshot's
    computed_at is the one time both processes agree on.
    """
    snapshot = latest_snapshot(engine)
    ref = now or (snapshot.computed_at if snapshot else None)
    return Overview(
        snapshot,
        golden_tiles(snapshot, config),
        *channel_rows(snapshot),
        stuck_rows(snapshot),
        source_health_rows(engine, ref),
        active_alerts(engine, config),
    )
