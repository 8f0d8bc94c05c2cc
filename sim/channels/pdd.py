"""Fake Pinduoduo router: pdd.order.number.list.increment.get (reference/channels.md §3).

Error codes 10019, 52101, 52102 and 70031 are documented; 10000 (invalid parameter), 10001
(invalid signature), 10002 (invalid timestamp) and 10014 (unknown client_id) are invented for the
simulator (the real numbers are unverified). The real gateway wants end <= now - 3 min; the fake
relaxes that to end <= now so virtual-time polling stays fresh, but enforces the 30-minute window.
"""

from __future__ import annotations

from datetime import timedelta

from sim.channels.common import (
    MAX_PAGE_SIZE,
    ApiRequest,
    Context,
    Response,
    View,
    bj,
    cipher,
    from_unix,
    json_response,
    md5_sign,
    page_of,
    request_id,
    same,
    sort_views,
)

METHOD = "pdd.order.number.list.increment.get"
WRAPPER = "order_sn_increment_get_response"
MAX_WINDOW = timedelta(minutes=30)
MAX_SKEW = timedelta(minutes=10)
# phase -> (confirm_status, order_status, refund_status)
STATUS = {
    "paid": (1, 1, 1),
    "shipped": (1, 2, 1),
    "delivered": (1, 3, 1),
    "cancelled": (2, 1, 4),
    "closed": (1, 1, 4),
}


def render(view: View) -> dict:
    o, t = view.order, view.times
    confirm, status, refund = STATUS[view.phase]
    to_ship = view.phase == "paid"
    amount = round(o.amount_fen / 100, 2)
    return {
        "order_sn": o.raw_id,
        "confirm_status": confirm,
        "order_status": status,
        "refund_status": refund,
        "after_sales_status": 10 if refund == 4 else 0,
        "group_status": 1,
        "risk_control_status": 0,
        "trade_type": 0,
        "created_time": bj(t["created"]),
        "confirm_time": bj(t.get("paid")),
        "pay_time": bj(t.get("paid")),
        "shipping_time": bj(t.get("shipped")),
        "receive_time": bj(t.get("delivered")),
        "updated_at": bj(view.modified),
        "pay_amount": amount,
        "goods_amount": amount,
        "postage": 0.0,
        "province": o.province,
        "city": o.city,
        # ciphertext only while the order is to be shipped; empty afterwards
        "receiver_name": cipher(o, "name") if to_ship else "",
        "receiver_phone": cipher(o, "phone") if to_ship else "",
        "receiver_address": cipher(o, "address") if to_ship else "",
        "tracking_number": o.tracking_no if "shipped" in t else "",
        "item_list": [
            {
                "goods_id": 3000000000 + len(o.raw_id),
                "outer_id": o.sku,
                "goods_count": 1,
                "goods_price": amount,
            }
        ],
    }


def error(ctx: Context, code: int, msg: str, sub_msg: str = "") -> Response:
    doc = {
        "error_code": code,
        "error_msg": msg,
        "sub_code": str(code),
        "sub_msg": sub_msg,
        "request_id": request_id(ctx),
    }
    return json_response({"error_response": doc})


class PddApi:
    name = "pdd"
    path = "/api/router"

    def fault(self, kind: str, ctx: Context, seconds: int = 0) -> Response:
        if kind == "rate_limited":
            return error(ctx, 52101, "接口限流", f"当前接口被限流，请{seconds}秒后重试")
        if kind == "auth_expired":
            return error(ctx, 10019, "access_token已过期", "access_token expired")
        return error(ctx, 52102, "服务暂时不可用", "isp.service-unavailable")

    def handle(self, req: ApiRequest, ctx: Context) -> Response:
        p, creds = req.params, ctx.creds
        if p.get("type") != METHOD:
            return error(ctx, 10000, "参数错误", f"unknown type {p.get('type')!r}")
        if p.get("client_id") != creds["app_key"]:
            return error(ctx, 10014, "client_id不存在")
        if not same(p.get("sign", ""), md5_sign(creds["app_secret"], p)):
            return error(ctx, 10001, "签名验证失败", "invalid sign")
        try:
            sent = from_unix(p["timestamp"])
        except (KeyError, ValueError, OverflowError):
            return error(ctx, 10002, "时间戳失效", "invalid timestamp")
        if abs(sent - ctx.now) > MAX_SKEW:
            return error(ctx, 10002, "时间戳失效", "timestamp out of range")
        if p.get("access_token") != creds["access_token"]:
            return error(ctx, 10019, "access_token已过期", "access_token invalid or expired")
        try:
            start, end = from_unix(p["start_updated_at"]), from_unix(p["end_updated_at"])
            page, size = int(p.get("page", "1")), int(p.get("page_size", "100"))
        except (KeyError, ValueError, OverflowError) as exc:
            return error(ctx, 10000, "参数错误", str(exc))
        if not start <= end or end - start > MAX_WINDOW:
            return error(ctx, 10000, "参数错误", "开始时间与结束时间间隔不能超过30分钟")
        if end > ctx.now:
            return error(ctx, 10000, "参数错误", "end_updated_at 不能晚于当前时间")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return error(ctx, 10000, "参数错误", "page/page_size 超出范围")
        views = ctx.hidden(sort_views(ctx.changed(start, end, paid_only=True), True))
        rows = page_of(views, page, size, base=1)
        ctx.log({"start": start, "end": end, "page": page, "size": size, "returned": len(rows)})
        body = {
            "total_count": len(views),
            "has_next": page * size < len(views),
            "order_sn_list": [render(v) for v in rows],
        }
        return json_response({WRAPPER: body})
