"""The canonical order lifecycle (PRODUCT.md): states, ranks, milestone columns."""

from __future__ import annotations

FORWARD = (
    "created",
    "paid",
    "erp_accepted",
    "wms_received",
    "picked",
    "packed",
    "shipped",
    "in_transit",
    "delivered",
)
EXITS = ("cancelled", "closed")
RETURNS = (
    "return_requested",
    "return_approved",
    "return_awaiting_receipt",
    "return_received",
    "refunded",
)
STATES = FORWARD + EXITS + RETURNS

# Status never moves backwards: the current state is the highest-ranked one observed.
# Exits outrank the forward path; the return path outranks exits (a closed order can be refunded).
RANK: dict[str, int] = {s: i for i, s in enumerate(FORWARD)}
RANK.update({s: 100 + i for i, s in enumerate(EXITS)})
RANK.update({s: 200 + i for i, s in enumerate(RETURNS)})

# States whose orders are finished: no stuck ratio, no state count.
TERMINAL = ("delivered", "cancelled", "closed", "refunded")
OPEN_STATES = tuple(s for s in STATES if s not in TERMINAL)

# States whose stuck timeout runs from the latest progress reported in them (orders.progress_at, e.g.
# the newest carrier scan: "no tracking update for 4 h"), or from entering them when none was; the
# timeout limits the silence, not the stay (a parcel may travel for days), so it is no dwell timeout.
PROGRESS_STATES = ("in_transit",)

# Dimensions the state counts and stuck ratios are broken down by (one at a time).
STATE_DIMENSIONS = ("channel", "warehouse", "carrier", "province", "city", "cs_group")

# States at or past the warehouse: an order in any of these has "reached the WMS".
WMS_REACHED = ("wms_received", "picked", "packed")

STATE_LABELS_ZH = {
    "created": "已创建",
    "paid": "已付款",
    "erp_accepted": "ERP已接单",
    "wms_received": "仓库已接单",
    "picked": "已拣货",
    "packed": "已打包",
    "shipped": "已发货",
    "in_transit": "运输中",
    "delivered": "已签收",
    "cancelled": "已取消",
    "closed": "已关闭",
    "return_requested": "退货申请",
    "return_approved": "退货已审核",
    "return_awaiting_receipt": "待仓库收货",
    "return_received": "退货已收货",
    "refunded": "已退款",
}


# Per-hop sync (PRODUCT.md): each hop and the source roles it needs; a hop is judged only where
# sources of those roles are configured (config `kpi.hops`, by default from the enabled sources).
HOPS = {
    "channel_erp": ("erp",),  # paid -> the ERP accepted it (or anything later)
    "erp_wms": ("erp", "wms"),  # accepted by the ERP -> the WMS received it
    "shipped_tracking": ("carrier",),  # shipped -> a carrier scan
    "status_writeback": ("channel", "wms"),  # shipped in the WMS -> the channel shows it shipped
}

# Source roles (config `sources.*.role`) as bits of orders.seen_roles.
ROLE_BITS = {"channel": 1, "payment": 2, "erp": 4, "wms": 8, "carrier": 16, "cs": 32}
OTHER_ROLE_BIT = 64  # a source with no role the store was told of


def milestone_column(state: str) -> str:
    return f"{state}_at"


def is_state(value: str) -> bool:
    return value in RANK
