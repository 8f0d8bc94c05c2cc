"""Fake Douyin shop (抖店) open API: /order/searchList (reference/channels.md §4).

Query: app_key, method, access_token, timestamp (Unix s), v=2, sign_method=hmac-sha256, sign;
body: param_json (business parameters, keys sorted). Envelope {code: 10000, data: {...}}.
Pages start at 0; times are Unix seconds with 0 for "not set"; amounts are integer fen.
"""

from __future__ import annotations

import json
from datetime import timedelta

from sim.channels.common import (
    MAX_PAGE_SIZE,
    ApiRequest,
    Context,
    Response,
    View,
    cipher,
    from_unix,
    hmac_sha256_hex,
    json_response,
    numeric_child,
    page_of,
    request_id,
    same,
    sort_views,
    unix,
)

METHOD = "order.searchList"
MAX_SKEW = timedelta(minutes=10)  # unverified on the real platform
MAX_WINDOW = timedelta(days=90)  # unverified; the fake only rejects absurd ranges
STATUS = {"created": 1, "paid": 2, "shipped": 3, "delivered": 5, "cancelled": 4, "closed": 4}
STATUS_DESC = {1: "待支付", 2: "备货中", 3: "已发货", 4: "已取消", 5: "已完成"}


def sign(app_key: str, secret: str, timestamp: str, param_json: str, method: str = METHOD) -> str:
    """HMAC-SHA256 over secret + app_key.. method.. param_json.. timestamp.. v2 + secret."""
    text = f"{secret}app_key{app_key}method{method}param_json{param_json}timestamp{timestamp}v2{secret}"
    return hmac_sha256_hex(secret, text)


def render(view: View) -> dict:
    o, t = view.order, view.times
    status = STATUS[view.phase]
    main = 21 if view.phase == "closed" else status
    return {
        "order_id": o.raw_id,
        "order_level": 2,
        "order_status": status,
        "order_status_desc": STATUS_DESC[status],
        "main_status": main,
        "create_time": unix(t["created"]),
        "pay_time": unix(t.get("paid")),
        "ship_time": unix(t.get("shipped")),
        "finish_time": unix(t.get("delivered")),
        "update_time": unix(view.modified),
        "order_amount": o.amount_fen,
        "pay_amount": o.amount_fen,
        "post_amount": 0,
        "pay_type": 2 if o.payment_method == "alipay" else 1,
        "cancel_reason": "" if view.phase not in ("cancelled", "closed") else "买家取消",
        "encrypt_post_receiver": cipher(o, "name"),
        "encrypt_post_tel": cipher(o, "tel"),
        "post_addr": {
            "province": {"name": o.province, "id": ""},
            "city": {"name": o.city, "id": ""},
            "encrypt_detail": cipher(o, "address"),
        },
        "logistics_info": (
            [{"tracking_no": o.tracking_no, "company": o.carrier, "ship_time": unix(t["shipped"])}]
            if "shipped" in t
            else []
        ),
        "sku_order_list": [
            {
                "order_id": numeric_child(o.raw_id),
                "parent_order_id": o.raw_id,
                "code": o.sku,
                "out_sku_id": o.sku,
                "item_num": 1,
                "order_status": status,
                "after_sale_info": {"after_sale_status": 0, "refund_status": 3 if main == 21 else 0},
            }
        ],
    }


def error(ctx: Context, code: int, msg: str, sub_code: str, sub_msg: str) -> Response:
    doc = {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg, "log_id": request_id(ctx)}
    return json_response(doc)


class DouyinApi:
    name = "douyin"
    path = "/order/searchList"

    def fault(self, kind: str, ctx: Context, seconds: int = 0) -> Response:
        if kind == "rate_limited":
            return error(ctx, 60000, "触发限流", "isp.frequency-limit", f"调用频率超限，请{seconds}秒后重试")
        if kind == "auth_expired":
            return error(ctx, 40003, "参数错误", "isv.access-token-expired", "access_token已过期")
        return error(ctx, 20000, "服务异常", "dop.service-error", "服务繁忙，请稍后重试")

    def handle(self, req: ApiRequest, ctx: Context) -> Response:
        p, creds = req.params, ctx.creds
        if p.get("method") != METHOD or p.get("v") != "2":
            return error(ctx, 40001, "缺少参数", "isv.parameter-invalid", "method/v 不正确")
        if p.get("app_key") != creds["app_key"]:
            return error(ctx, 30001, "权限不足", "isv.app-permissions-insufficient", "app_key 无效")
        param_json = req.body.decode("utf-8", errors="replace") or p.get("param_json", "")
        timestamp = p.get("timestamp", "")
        if p.get("sign_method") != "hmac-sha256" or not same(
            p.get("sign", ""), sign(p["app_key"], creds["app_secret"], timestamp, param_json)
        ):
            return error(ctx, 40003, "参数错误", "isv.signature-invalid", "签名无效")
        try:
            sent = from_unix(timestamp)
        except (ValueError, OverflowError):
            sent = None
        if sent is None or abs(sent - ctx.now) > MAX_SKEW:
            return error(ctx, 40003, "参数错误", "isv.timestamp-invalid", "timestamp 已过期")
        if p.get("access_token") != creds["access_token"]:
            return error(ctx, 40003, "参数错误", "isv.access-token-no-existed", "access_token不存在")
        try:
            biz = json.loads(param_json)
            start, end = from_unix(biz["update_time_start"]), from_unix(biz["update_time_end"])
            page, size = int(biz.get("page", 0)), int(biz.get("size", 10))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            return error(ctx, 40004, "参数不合法", "isv.business-parameter-invalid", str(exc))
        if not start <= end or end - start > MAX_WINDOW:
            return error(ctx, 40004, "参数不合法", "isv.business-parameter-invalid", "更新时间范围不合法")
        if page < 0 or not 1 <= size <= MAX_PAGE_SIZE:
            return error(ctx, 40004, "参数不合法", "isv.business-parameter-invalid", "page/size 超出范围")
        descending = not biz.get("order_asc", False)
        views = ctx.hidden(sort_views(ctx.changed(start, end), descending))
        rows = page_of(views, page, size, base=0)
        ctx.log({"start": start, "end": end, "page": page, "size": size, "returned": len(rows)})
        data = {"total": len(views), "page": page, "size": size, "shop_order_list": [render(v) for v in rows]}
        return json_response(
            {
                "code": 10000,
                "msg": "success",
                "sub_code": "",
                "sub_msg": "",
                "log_id": request_id(ctx),
                "data": data,
            }
        )
