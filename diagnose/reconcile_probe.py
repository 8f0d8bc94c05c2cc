"""The reconciliation as a probe: orders missing between systems, grouped by reason signature.
Field-filter loss is several signatures at once (coupon detail, millisecond duplicates, an update
not pushed), each a small share, scattered in time; a push gap is one hop failing wholesale."""

from __future__ import annotations

from datetime import timedelta

from diagnose.model import Finding
from diagnose.probes import MIN_ORDERS, ORDER_CAP, Context
from reconcile.core import reason_zh, reconcile

FILTER_REASONS = ("coupon_detail_missing", "ms_duplicate", "push_missing")


def probe_field_filter(ctx: Context) -> list[Finding]:
    rc = ctx.config.reconcile
    # The KPI window, not 72 h: a diagnosis looks at what is wrong now (the daily run covers 72 h).
    window = min(rc.window, max(ctx.config.kpi.window, timedelta(hours=1)))
    result = reconcile(ctx.sql.engine, ctx.now, roles=rc.roles, window=window, settle=rc.settle, sql=ctx.sql)
    if not result.differences:
        return []
    groups = result.groups
    filtered = [d for d in result.differences if d.reason in FILTER_REASONS]
    counts = {r: n for r, n in groups if r in FILTER_REASONS}
    # Several filters at once, each with a real share: one signature alone is one hop failing.
    kinds = [r for r, n in counts.items() if n >= max(3, 0.05 * len(filtered))]
    evidence = [
        {
            "fact": "reconciliation",
            "orders": result.orders,
            "differences": len(result.differences),
            "ratio": round(result.ratio, 5),
            "roles": list(result.roles),
        },
        *(
            {"fact": "difference_group", "reason": r, "reason_zh": reason_zh(r), "orders": n}
            for r, n in groups
        ),
    ]
    score = 0.0
    if len(filtered) >= MIN_ORDERS and len(kinds) >= 2:
        score = 0.6 + 0.15 * (len(kinds) - 1) + 0.1 * (len(filtered) / len(result.differences))
    parts = "，".join(f"{reason_zh(r)} {n} 单" for r, n in groups[:3])
    title = f"对账差异 {len(result.differences)} 单（{parts}）"
    ids = [d.global_id for d in (filtered or result.differences)[:ORDER_CAP]]
    return [
        Finding(
            "reconcile",
            title,
            evidence,
            ids,
            "field_filter_loss",
            min(score, 0.95),
            len(filtered) or len(result.differences),
        )
    ]
