"""The one table of KPIs: name, labels, unit, help. Config, metrics and pages all read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KpiSpec:
    name: str
    labels: tuple[str, ...]  # the label keys a series of this KPI may carry (subset, any order)
    metric: str  # Prometheus metric name
    unit: str  # "ratio", "orders", "seconds"
    help: str
    title_zh: str
    good_when: str  # "high" or "low": which direction is healthy (for colouring)


KPIS: tuple[KpiSpec, ...] = (
    KpiSpec(
        "sync_success_ratio",
        ("channel", "window"),
        "fulfillment_sync_success_ratio",
        "ratio",
        "Orders paid at least the SLA ago that reached the WMS, over orders paid at least the SLA ago.",
        "订单状态同步成功率",
        "high",
    ),
    KpiSpec(
        "sync_paid_orders",
        ("channel", "window"),
        "fulfillment_sync_paid_orders",
        "orders",
        "Orders paid at least the SLA ago within the KPI window (the sync ratio's denominator).",
        "超过SLA的已付款订单",
        "high",
    ),
    KpiSpec(
        "sync_unreached_orders",
        ("channel", "window"),
        "fulfillment_sync_unreached_orders",
        "orders",
        "Orders paid at least the SLA ago that have not reached the WMS.",
        "付款后未到仓订单",
        "low",
    ),
    KpiSpec(
        "stuck_ratio",
        ("state", "channel", "warehouse", "carrier", "province", "city", "cs_group"),
        "fulfillment_stuck_ratio",
        "ratio",
        "Orders in a state longer than its timeout (in transit: without a carrier scan), over orders in that state.",
        "状态停滞率",
        "low",
    ),
    KpiSpec(
        "stuck_orders",
        ("state", "channel", "warehouse", "carrier", "province", "city", "cs_group"),
        "fulfillment_stuck_orders",
        "orders",
        "Orders in a state longer than its timeout (in transit: without a carrier scan).",
        "停滞订单数",
        "low",
    ),
    KpiSpec(
        "state_orders",
        ("state", "channel", "warehouse", "carrier", "province", "city", "cs_group"),
        "fulfillment_state_orders",
        "orders",
        "Orders currently in each canonical state.",
        "各状态订单数",
        "high",
    ),
)

KPIS += (
    KpiSpec(
        "fast_cancel_ratio",
        ("channel", "window"),
        "fulfillment_fast_cancel_ratio",
        "ratio",
        "Orders paid in the KPI window and cancelled within the fast-cancel limit of paying, over orders paid.",
        "付款后秒取消比例",
        "low",
    ),
    KpiSpec(
        "fast_cancel_orders",
        ("channel", "window"),
        "fulfillment_fast_cancel_orders",
        "orders",
        "Orders paid in the KPI window and cancelled within the fast-cancel limit of paying.",
        "付款后秒取消订单",
        "low",
    ),
    KpiSpec(
        "dwell_p50_seconds",
        ("state",),
        "fulfillment_dwell_p50_seconds",
        "seconds",
        "Median time spent in a state, over orders that left it within the dwell window (nearest rank).",
        "状态停留时长P50",
        "low",
    ),
    KpiSpec(
        "dwell_p95_seconds",
        ("state",),
        "fulfillment_dwell_p95_seconds",
        "seconds",
        "95th percentile of the time spent in a state, over orders that left it within the dwell window.",
        "状态停留时长P95",
        "low",
    ),
    KpiSpec(
        "dwell_orders",
        ("state",),
        "fulfillment_dwell_orders",
        "orders",
        "Orders that left a state within the dwell window (the dwell percentiles' population).",
        "离开该状态的订单数",
        "high",
    ),
)

_JUDGED = (
    "stays judged: orders that left the state within the dwell window, or are still in it and ran past "
    "its timeout within the window"
)
KPIS += (
    KpiSpec(
        "dwell_failure_ratio",
        ("state",),
        "fulfillment_dwell_failure_ratio",
        "ratio",
        "Stays in a state that failed (left for cancelled, closed or a return; else lasted at least the "
        f"state's timeout), over {_JUDGED}.",
        "状态节点失败率",
        "low",
    ),
    KpiSpec(
        "dwell_failure_orders",
        ("state", "reason"),
        "fulfillment_dwell_failure_orders",
        "orders",
        "Failed stays in a state by reason (timeout, cancelled, closed, returned); the top failure "
        "reason is the one with the most.",
        "状态节点失败订单",
        "low",
    ),
    KpiSpec(
        "dwell_judged_orders",
        ("state",),
        "fulfillment_dwell_judged_orders",
        "orders",
        f"The dwell failure ratio's denominator: {_JUDGED}.",
        "状态节点判定订单",
        "high",
    ),
)

KPIS += (
    KpiSpec(
        "duplicate_free_ratio",
        ("channel", "window"),
        "fulfillment_duplicate_free_ratio",
        "ratio",
        "Orders paid in the KPI window over their records received (the orders plus repeated deliveries).",
        "订单ID去重率",
        "high",
    ),
    KpiSpec(
        "duplicate_records",
        ("channel", "window"),
        "fulfillment_duplicate_records",
        "records",
        "Repeated deliveries (e.g. payment callbacks sent again) of orders paid in the KPI window.",
        "重复推送记录数",
        "low",
    ),
    KpiSpec(
        "order_loss_ratio",
        ("channel", "window"),
        "fulfillment_order_loss_ratio",
        "ratio",
        "Payments in the KPI window, at least the grace period old, that no channel source shows, over those payments.",
        "订单丢失率",
        "low",
    ),
    KpiSpec(
        "order_loss_orders",
        ("channel", "window"),
        "fulfillment_order_loss_orders",
        "orders",
        "Payments in the KPI window, at least the grace period old, that no channel source shows.",
        "有支付无订单",
        "low",
    ),
    KpiSpec(
        "order_loss_paid_orders",
        ("channel", "window"),
        "fulfillment_order_loss_paid_orders",
        "orders",
        "Payments in the KPI window at least the grace period old (the order loss ratio's denominator).",
        "已过宽限期的支付",
        "high",
    ),
)

_RETURN_ACTIVE = (
    "returns active in the KPI window (orders now in an open return state, or refunded within the window)"
)
KPIS += (
    KpiSpec(
        "return_break_ratio",
        ("channel",),
        "fulfillment_return_break_ratio",
        "ratio",
        f"Returns held in one return state longer than its timeout (24 h), over {_RETURN_ACTIVE}.",
        "退换货状态断点率",
        "low",
    ),
    KpiSpec(
        "return_break_orders",
        ("channel",),
        "fulfillment_return_break_orders",
        "orders",
        "Returns held in one return state longer than its timeout (24 h).",
        "退换货断点单数",
        "low",
    ),
    KpiSpec(
        "return_active_orders",
        ("channel",),
        "fulfillment_return_active_orders",
        "orders",
        "Returns active in the KPI window: orders now in an open return state, or refunded within the window.",
        "活跃退换货单数",
        "high",
    ),
)

KPIS += (
    KpiSpec(
        "amount_mismatch_ratio",
        ("channel", "window"),
        "fulfillment_amount_mismatch_ratio",
        "ratio",
        "Orders paid in the KPI window whose paid amount differs from the order amount, over orders paid.",
        "支付金额不一致比例",
        "low",
    ),
    KpiSpec(
        "amount_mismatch_orders",
        ("channel", "window"),
        "fulfillment_amount_mismatch_orders",
        "orders",
        "Orders paid in the KPI window whose paid amount (payment notify) differs from the order amount.",
        "支付金额不一致订单",
        "low",
    ),
)

KPIS += (
    KpiSpec(
        "late_callback_ratio",
        ("channel", "window"),
        "fulfillment_late_callback_ratio",
        "ratio",
        "Payments in the KPI window whose notify came later than the callback delay limit, over payments notified.",
        "支付回调延迟比例",
        "low",
    ),
    KpiSpec(
        "late_callback_orders",
        ("channel", "window"),
        "fulfillment_late_callback_orders",
        "orders",
        "Payments in the KPI window whose notify came later than the callback delay limit after paying.",
        "支付回调延迟订单",
        "low",
    ),
)

# Per-hop sync: one family with a `hop` label (channel_erp, erp_wms, shipped_tracking,
# status_writeback), the same quantity along the chain, so `by (hop)` compares the hops.
KPIS += (
    KpiSpec(
        "hop_sync_success_ratio",
        ("hop", "channel", "window"),
        "fulfillment_hop_sync_success_ratio",
        "ratio",
        "Per hop, orders that entered it in the KPI window at least the hop's SLA ago and got past it, over those orders.",
        "分环节同步成功率",
        "high",
    ),
    KpiSpec(
        "hop_sync_orders",
        ("hop", "channel", "window"),
        "fulfillment_hop_sync_orders",
        "orders",
        "Per hop, orders that entered it in the KPI window at least the hop's SLA ago (the hop sync ratio's denominator).",
        "分环节应同步订单",
        "high",
    ),
    KpiSpec(
        "hop_sync_unreached_orders",
        ("hop", "channel", "window"),
        "fulfillment_hop_sync_unreached_orders",
        "orders",
        "Per hop, orders that entered it in the KPI window at least the hop's SLA ago and have not got past it.",
        "分环节未同步订单",
        "low",
    ),
    KpiSpec(
        "manual_intervention_ratio",
        ("channel", "window"),
        "fulfillment_manual_intervention_ratio",
        "ratio",
        "Orders paid in the KPI window that a person handled (an ERP/WMS record shows a manual action), over orders paid.",
        "人工干预订单占比",
        "low",
    ),
    KpiSpec(
        "manual_intervention_orders",
        ("channel", "window"),
        "fulfillment_manual_intervention_orders",
        "orders",
        "Orders paid in the KPI window that a person handled (an ERP/WMS record shows a manual action).",
        "人工干预订单",
        "low",
    ),
    KpiSpec(
        "paid_orders",
        ("channel", "window"),
        "fulfillment_paid_orders",
        "orders",
        "Orders paid in the KPI window.",
        "已付款订单",
        "high",
    ),
)

KPI_BY_NAME = {spec.name: spec for spec in KPIS}
