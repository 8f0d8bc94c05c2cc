"""Fake Youzan cloud API (the WeChat mini-program shop): youzan.trades.sold.get 4.0.0.

POST /api/youzan.trades.sold.get/4.0.0?access_token=... with JSON {start_update, end_update,
page_no, page_size}. Youzan's exact gateway error codes are unverified; the simulator uses:
  4001 invalid parameter (config/bug)        4201 access_token expired (auth expired)
  4202 access_token invalid/unknown (auth)   4203 no permission for this API (config)
  4290 rate limited, sent with HTTP 429 and a Retry-After header
  5001 service busy (transient)
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
    json_response,
    page_of,
    parse_bj,
    same,
    sort_views,
    yuan,
)

API = "youzan.trades.sold.get"
VERSION = "4.0.0"
MAX_WINDOW = timedelta(days=90)
STATUS = {
    "created": "WAIT_BUYER_PAY",
    "paid": "WAIT_SELLER_SEND_GOODS",
    "shipped": "WAIT_BUYER_CONFIRM_GOODS",
    "delivered": "TRADE_SUCCESS",
    "cancelled": "TRADE_CLOSED",
    "closed": "TRADE_CLOSED",
}
CLOSE_TYPE = {"cancelled": 2, "closed": 5}  # 2 buyer/seller cancel, 5 full refund (unverified codes)


def render(view: View) -> dict:
    o, t = view.order, view.times
    info = {
        "tid": o.raw_id,
        "status": STATUS[view.phase],
        "created": bj(t["created"]),
        "update_time": bj(view.modified),
        "pay_time": bj(t.get("paid")),
        "consign_time": bj(t.get("shipped")),
        "success_time": bj(t.get("delivered")),
        "close_type": CLOSE_TYPE.get(view.phase, 0),
        "type": 0,
        "order_tags": {"is_payed": "paid" in t},
    }
    return {
        "full_order_info": {
            "order_info": info,
            "pay_info": {"payment": yuan(o.amount_fen), "total_fee": yuan(o.amount_fen), "post_fee": "0.00"},
            "buyer_info": {"fans_nickname": cipher(o, "nick"), "buyer_phone": cipher(o, "phone")},
            "address_info": {
                "delivery_province": o.province,
                "delivery_city": o.city,
                "delivery_address": cipher(o, "address"),
                "receiver_name": cipher(o, "name"),
            },
            "orders": [
                {"oid": f"{o.raw_id}01", "outer_sku_id": o.sku, "num": 1, "payment": yuan(o.amount_fen)}
            ],
        }
    }


def error(code: int, message: str, status: int = 200, headers: dict | None = None) -> Response:
    return json_response({"success": False, "code": code, "message": message}, status, headers)


class YouzanApi:
    name = "youzan"
    path = f"/api/{API}/"

    def fault(self, kind: str, ctx: Context, seconds: int = 0) -> Response:
        if kind == "rate_limited":
            return error(4290, "调用频率超限，请稍后重试", 429, {"Retry-After": str(seconds)})
        if kind == "auth_expired":
            return error(4201, "access_token 已过期")
        return error(5001, "服务繁忙，请稍后重试")

    def handle(self, req: ApiRequest, ctx: Context) -> Response:
        if req.method != "POST" or req.path.rstrip("/") != f"/api/{API}/{VERSION}":
            return error(4203, "无权限调用该接口或版本不存在")
        token = req.params.get("access_token", "")
        if not token or not same(token, ctx.creds["access_token"]):
            return error(4202, "access_token 无效")
        try:
            biz = req.json()
            start, end = parse_bj(biz["start_update"]), parse_bj(biz["end_update"])
            page, size = int(biz.get("page_no", 1)), int(biz.get("page_size", 20))
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            return error(4001, f"参数错误: {exc}")
        if not start <= end or end - start > MAX_WINDOW:
            return error(4001, "参数错误: 更新时间范围不合法")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return error(4001, "参数错误: page_no/page_size 超出范围")
        views = ctx.hidden(sort_views(ctx.changed(start, end), descending=True))
        rows = page_of(views, page, size, base=1)
        ctx.log({"start": start, "end": end, "page": page, "size": size, "returned": len(rows)})
        data = {"total_results": len(views), "full_order_info_list": [render(v) for v in rows]}
        return json_response({"success": True, "code": 200, "message": "successful", "data": data})
