"""The daily reconciliation: at `reconcile.at` (02:00, service zone) the last 72 h are reconciled,
the differences written as CSV and the report queued to `reconcile.route` through the outbox
(once per day: its dedup key carries the date, so a restart never sends it twice). `run_now` is
the on-demand run (dashboard, CLI)."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from alerts.engine import _insert_once
from diagnose.sql import ReadOnlySql
from reconcile.core import ROLE_NAMES_ZH, Reconciliation, reason_zh, reconcile, to_csv
from reconcile.signatures import ReasonSignatures, difference_signatures, signature_rows
from sentinel.config import Config
from store.schema import outbox

log = logging.getLogger("reconcile")
CATCH_UP = timedelta(hours=3)  # a service down at 02:00 still runs it this long after
LISTED = 30  # differences listed in the message (all of them are in the CSV)


def run_now(engine: Engine, config: Config, now: datetime) -> Reconciliation:
    """Reconcile as configured (roles, window, settle), now."""
    rc = config.reconcile
    return reconcile(engine, now, roles=rc.roles, window=rc.window, settle=rc.settle)


def due_day(config: Config, now: datetime) -> str | None:
    """The local date whose run is due at `now` (from `reconcile.at` for CATCH_UP), else None."""
    rc = config.reconcile
    if rc.at is None or rc.route is None:
        return None
    zone = ZoneInfo(config.service.timezone)
    local = now.astimezone(zone)
    start = datetime.combine(local.date(), time.fromisoformat(rc.at), zone)
    return local.date().isoformat() if start <= local < start + CATCH_UP else None


def run_signatures(engine: Engine, result: Reconciliation) -> list[ReasonSignatures]:
    """The differences only a missing system explains, grouped by the field values they share."""
    with ReadOnlySql(engine, timeout_s=60) as sql:
        return difference_signatures(sql, result)


def render_report(
    result: Reconciliation,
    config: Config,
    now: datetime,
    csv_path: Path | None,
    signatures: list[ReasonSignatures] | None = None,
) -> str:
    """The report (markdown, as the notifiers take it): totals, the reason groups (by field
    signature where one explains them), the first orders."""
    zone = ZoneInfo(config.service.timezone)
    rc = config.reconcile
    flagged = result.ratio > rc.threshold
    colour = "warning" if flagged else "info"
    systems = "、".join(ROLE_NAMES_ZH.get(r, r) for r in result.roles)
    lines = [
        f"## 每日对账报告 {now.astimezone(zone):%Y-%m-%d}",
        f"> 范围：{result.since.astimezone(zone):%m-%d %H:%M} 至 {result.until.astimezone(zone):%m-%d %H:%M} "
        f"付款的订单，对比 {systems}",
        f'> 订单 {result.orders} 单，差异 <font color="{colour}">**{len(result.differences)}** 单'
        f"（{result.ratio:.3%}）</font>，阈值 {rc.threshold:.1%}" + ("，**超出阈值**" if flagged else ""),
    ]
    names = {k: c.name for k, c in config.channels.items()}
    for reason, signature, n in signature_rows(result.groups, signatures or [], names):
        lines.append(f"- {reason_zh(reason)}" + (f"（{signature}）" if signature else "") + f"：{n} 单")
    for d in result.differences[:LISTED]:
        missing = "、".join(ROLE_NAMES_ZH.get(r, r) for r in d.missing) or "—"
        amounts = (
            f"，金额 {d.amount_fen} / 实付 {d.paid_amount_fen} 分"
            if d.amount_fen != d.paid_amount_fen
            else ""
        )
        lines.append(f"  - {d.global_id}（{d.raw_order_id}）缺：{missing}{amounts}")
    if len(result.differences) > LISTED:
        lines.append(f"  - …… 其余 {len(result.differences) - LISTED} 单见 CSV")
    if csv_path is not None:
        lines.append(f"> 差异明细 CSV：{csv_path}")
    lines.append(f"[查看对账]({config.service.dashboard_url.rstrip('/')}/?page=reconcile)")
    return "\n".join(lines)


def write_csv(result: Reconciliation, config: Config, day: str) -> Path:
    path = Path(config.reconcile.csv_dir) / f"reconcile-{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv(result, ZoneInfo(config.service.timezone)), encoding="utf-8")
    return path


def queue_daily(engine: Engine, config: Config, now: datetime) -> bool:
    """Run and queue today's reconciliation when due; True if this call queued it."""
    day = due_day(config, now)
    if day is None:
        return False
    route = config.reconcile.route
    dedup_key = f"reconcile:{route}:{day}"
    with engine.connect() as conn:
        if conn.execute(select(outbox.c.id).where(outbox.c.dedup_key == dedup_key)).first() is not None:
            return False
    result = run_now(engine, config, now)
    path = write_csv(result, config, day)
    row = {
        "dedup_key": dedup_key,
        "fingerprint": hashlib.sha256(dedup_key.encode()).hexdigest(),
        "route": route,
        "kind": "reconcile",
        "body": render_report(result, config, now, path, run_signatures(engine, result)),
        "status": "pending",
        "attempts": 0,
        "parts_sent": 0,
        "created_at": now,
        "next_attempt_at": now,
    }
    with engine.begin() as conn:
        _insert_once(conn, outbox, row, "dedup_key")
    log.info(
        "reconciliation for %s: %d orders, %d differences, queued to %s (CSV %s)",
        day,
        result.orders,
        len(result.differences),
        route,
        path,
    )
    return True
