"""The morning briefing: the golden KPIs now vs the same time yesterday, once a day through the outbox."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from alerts.engine import _insert_once
from metrics.catalog import KPI_BY_NAME
from metrics.snapshot import Snapshot, load_latest_snapshot, load_snapshot_near
from sentinel.config import Config
from store.schema import outbox

log = logging.getLogger("alerts.briefing")

# The totals reported, in this order; a KPI absent from both snapshots is left out.
GOLDEN = (
    "sync_paid_orders",
    "sync_success_ratio",
    "sync_unreached_orders",
    "stuck_orders",
    "duplicate_free_ratio",
    "order_loss_ratio",
    "return_break_ratio",
    "fast_cancel_ratio",
)
VOLUME = frozenset({"sync_paid_orders"})  # business volume: neither better nor worse when it moves
CATCH_UP = timedelta(hours=3)  # a service down at briefing time still sends it this long after
NEAR = timedelta(hours=1)  # how far from "same time yesterday" a snapshot may be
WEEKDAYS = "一二三四五六日"


def total(snapshot: Snapshot | None, kpi: str) -> float | None:
    """The all-orders value of a KPI; per-state KPIs (stuck orders) summed over their states."""
    if snapshot is None:
        return None
    value = snapshot.get(kpi)
    if value is None and kpi == "stuck_orders":
        per_state = snapshot.series(kpi, by=("state",))
        value = sum(v.value for v in per_state) if per_state else None
    return value


def _fmt(kpi: str, value: float) -> str:
    return f"{value * 100:.2f}%" if KPI_BY_NAME[kpi].unit == "ratio" else f"{value:,.0f}"


def _delta(kpi: str, now: float, before: float | None) -> str:
    if before is None:
        return "昨日无数据"
    spec = KPI_BY_NAME[kpi]
    diff = now - before
    if spec.unit == "ratio":
        step = f"{abs(diff) * 100:.2f} 个百分点"
        flat = abs(diff) < 0.00005
    else:
        step = f"{abs(diff):,.0f}"
        flat = diff == 0
    if flat:
        return f"昨日 {_fmt(kpi, before)}，持平"
    worse = kpi not in VOLUME and (diff < 0) == (spec.good_when == "high")
    arrow = "↑" if diff > 0 else "↓"
    color = "warning" if worse else "comment" if kpi in VOLUME else "info"
    mark = "，变差" if worse else ""
    return f'昨日 {_fmt(kpi, before)}，<font color="{color}">{arrow}{step}{mark}</font>'


def render_briefing(today: Snapshot | None, yesterday: Snapshot | None, config: Config, now: datetime) -> str:
    """The briefing markdown (WeCom markdown; other robots convert it like alert messages)."""
    zone = ZoneInfo(config.service.timezone)
    local = now.astimezone(zone)
    lines = [f"## 履约晨报 {local:%Y-%m-%d}（周{WEEKDAYS[local.weekday()]}）"]
    if today is None:
        lines.append("> 暂无指标快照：服务尚未完成一次指标计算，请检查数据源与服务日志。")
        return "\n".join(lines)
    then = "无" if yesterday is None else f"{yesterday.computed_at.astimezone(zone):%m-%d %H:%M}"
    lines.append(
        f"> 指标时间 {today.computed_at.astimezone(zone):%m-%d %H:%M}（{zone.key}），"
        f"对比昨日同一时间（{then}），统计窗口 {_window(config)}"
    )
    for kpi in GOLDEN:
        value = total(today, kpi)
        if value is None:
            continue
        lines.append(
            f"- {KPI_BY_NAME[kpi].title_zh}：**{_fmt(kpi, value)}**（{_delta(kpi, value, total(yesterday, kpi))}）"
        )
    lines.append(f"[查看看板]({config.service.dashboard_url.rstrip('/')}/)")
    return "\n".join(lines)


def _window(config: Config) -> str:
    hours = config.kpi.window.total_seconds() / 3600
    return f"近 {hours:g} 小时"


def due_date(config: Config, now: datetime) -> str | None:
    """The local date whose briefing is due at `now` (briefing time up to CATCH_UP after), else None."""
    if config.alerts.briefing is None:
        return None
    at, _ = config.alerts.briefing
    zone = ZoneInfo(config.service.timezone)
    local = now.astimezone(zone)
    start = datetime.combine(local.date(), time.fromisoformat(at), zone)
    return local.date().isoformat() if start <= local < start + CATCH_UP else None


def queue_briefing(engine: Engine, config: Config, now: datetime) -> bool:
    """Put today's briefing in the outbox when due; True if this call queued it (once per day and route)."""
    day = due_date(config, now)
    if day is None:
        return False
    _, route = config.alerts.briefing
    dedup_key = f"briefing:{route}:{day}"
    with engine.connect() as conn:
        if conn.execute(select(outbox.c.id).where(outbox.c.dedup_key == dedup_key)).first() is not None:
            return False  # already queued (and perhaps sent) today
    today = load_latest_snapshot(engine)
    yesterday = (
        None if today is None else load_snapshot_near(engine, today.computed_at - timedelta(days=1), NEAR)
    )
    row = {
        "dedup_key": dedup_key,
        "fingerprint": hashlib.sha256(dedup_key.encode()).hexdigest(),
        "route": route,
        "kind": "briefing",
        "body": render_briefing(today, yesterday, config, now),
        "status": "pending",
        "attempts": 0,
        "parts_sent": 0,
        "created_at": now,
        "next_attempt_at": now,
    }
    with engine.begin() as conn:
        _insert_once(conn, outbox, row, "dedup_key")  # a concurrent second queue is a no-op
    log.info("morning briefing for %s queued to route %s", day, route)
    return True
