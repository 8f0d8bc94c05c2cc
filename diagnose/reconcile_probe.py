"""The reconciliation as a probe: orders missing between systems, grouped by reason signature.
Field-filter loss is several signatures at once (coupon detail, millisecond duplicates, an update
not pushed, or orders missing in a system that share a shop / payment method / SKU prefix the
others lack), each a small share, scattered in time; a push gap is one hop failing wholesale."""

from __future__ import annotations

from datetime import timedelta

from diagnose.model import Finding
from diagnose.probes import MIN_ORDERS, ORDER_CAP, Context
from reconcile.core import reason_zh, reconcile
from reconcile.signatures import difference_signatures

FILTER_REASONS = ("coupon_detail_missing", "ms_duplicate", "push_missing")


def probe_field_filter(ctx: Context) -> list[Finding]:
    rc = ctx.config.reconcile
    # The KPI window, not 72 h: a diagnosis looks at what is wrong now (the daily run covers 72 h).
    window = min(rc.window, max(ctx.config.kpi.window, timedelta(hours=1)))
    result = reconcile(ctx.sql.engine, ctx.now, roles=rc.roles, window=window, settle=rc.settle, sql=ctx.sql)
    if not result.differences:
        return []
    groups = result.groups
    signatures = difference_signatures(ctx.sql, result)
    filtered = [d.global_id for d in result.differences if d.reason in FILTER_REASONS]
    for s in signatures:
        filtered += [g for group in s.groups for g in group.orders]
    # Several filters at once, each with a real share: one signature alone is one hop failing.
    shares = [n for r, n in groups if r in FILTER_REASONS]
    shares += [len(g.orders) for s in signatures for g in s.groups]
    kinds = [n for n in shares if n >= max(3, 0.05 * len(filtered))]
    names = {k: c.name for k, c in ctx.config.channels.items()}
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
        *(
            {
                "fact": "difference_signature",
                "reason": s.reason,
                "reason_zh": reason_zh(s.reason),
                "signature": g.text(names),
                **g.to_dict(),
            }
            for s in signatures
            for g in s.groups
        ),
        *(
            {
                "fact": "difference_signature",
                "reason": s.reason,
                "reason_zh": reason_zh(s.reason),
                "signature": None,
                "fields": {},
                "orders": len(s.ungrouped),
                "order_ids": s.ungrouped[:50],
            }
            for s in signatures
            if s.groups and s.ungrouped
        ),
    ]
    score = 0.0
    if len(filtered) >= MIN_ORDERS and len(kinds) >= 2:
        score = 0.6 + 0.15 * (len(kinds) - 1) + 0.1 * (len(filtered) / len(result.differences))
    parts = [f"{g.text(names)} {len(g.orders)} 单" for s in signatures for g in s.groups]
    parts += [
        f"{reason_zh(r)} {n} 单" for r, n in groups if not any(s.reason == r and s.groups for s in signatures)
    ]
    title = f"对账差异 {len(result.differences)} 单（{'，'.join(parts[:4])}）"
    ids = filtered[:ORDER_CAP] or [d.global_id for d in result.differences[:ORDER_CAP]]
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
