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
        ("channel",),
        "fulfillment_sync_success_ratio",
        "ratio",
        "Orders paid at least the SLA ago that reached the WMS, over orders paid at least the SLA ago.",
        "订单状态同步成功率",
        "high",
    ),
    KpiSpec(
        "sync_paid_orders",
        ("channel",),
        "fulfillment_sync_paid_orders",
        "orders",
        "Orders paid at least the SLA ago within the KPI window (the sync ratio's denominator).",
        "超过SLA的已付款订单",
        "high",
    ),
    KpiSpec(
        "sync_unreached_orders",
        ("channel",),
        "fulfillment_sync_unreached_orders",
        "orders",
        "Orders paid at least the SLA ago that have not reached the WMS.",
        "付款后未到仓订单",
        "low",
    ),
    KpiSpec(
        "stuck_ratio",
        ("state", "channel"),
        "fulfillment_stuck_ratio",
        "ratio",
        "Orders in a state longer than its timeout, over orders in that state.",
        "状态停滞率",
        "low",
    ),
    KpiSpec(
        "stuck_orders",
        ("state", "channel"),
        "fulfillment_stuck_orders",
        "orders",
        "Orders in a state longer than its timeout.",
        "停滞订单数",
        "low",
    ),
    KpiSpec(
        "state_orders",
        ("state", "channel"),
        "fulfillment_state_orders",
        "orders",
        "Orders currently in each canonical state.",
        "各状态订单数",
        "high",
    ),
)

KPI_BY_NAME = {spec.name: spec for spec in KPIS}
