"""Fake Taobao/Tmall TOP router: taobao.trades.sold.increment.get (reference/channels.md §1)."""

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
    hmac_md5_sign,
    json_response,
    md5_sign,
    numeric_child,
    page_of,
    parse_bj,
    request_id,
    same,
    sort_views,
    yuan,
)

METHOD = "taobao.trades.sold.increment.get"
WRAPPER = "trades_sold_increment_get_response"
MAX_WINDOW = timedelta(days=1)
MAX_SKEW = timedelta(minutes=10)
STATUS = {
    "created": "WAIT_BUYER_PAY",
    "paid": "WAIT_SELLER_SEND_GOODS",
    "shipped": "WAIT_BUYER_CONFIRM_GOODS",
    "delivered": "TRADE_FINISHED",
    "closed": "TRADE_CLOSED",
}


def _status(view: View) -> str:
    if view.phase == "cancelled":  # closed after payment means a full refund on TOP
        return "TRADE_CLOSED" if "paid" in view.times else "TRADE_CLOSED_BY_TAOBAO"
    return STATUS[view.phase]


def render(view: View) -> dict:
    """One trade as TOP returns it with simplify=false (numbers for tid, strings for money)."""
    o, t = view.order, view.times
    trade = {
        "tid": int(o.raw_id) if o.raw_id.isdigit() else o.raw_id,
        "tid_str": o.raw_id,
        "status": _status(view),
        "type": "fixed",
        "created": bj(t["created"]),
        "modified": bj(view.modified),
        "payment": yuan(o.amount_fen),
        "total_fee": yuan(o.amount_fen),
        "post_fee": "0.00",
        "receiver_state": o.province,
        "receiver_city": o.city,
        "receiver_name": cipher(o, "name"),
        "receiver_mobile": cipher(o, "mobile"),
        "receiver_address": cipher(o, "address"),
        "oaid": cipher(o, "oaid").strip("~"),
        "buyer_open_uid": cipher(o, "buyer").strip("~"),
        "orders": {
            "order": [
                {
                    "oid": numeric_child(o.raw_id),
                    "outer_sku_id": o.sku,
                    "num": 1,
                    "price": yuan(o.amount_fen),
                    "payment": yuan(o.amount_fen),
                    "status": _status(view),
                    "refund_status": "SUCCESS" if view.phase == "closed" else "NO_REFUND",
                }
            ]
        },
    }
    for key, state in (("pay_time", "paid"), ("consign_time", "shipped")):
        if state in t:
            trade[key] = bj(t[state])
    end = t.get("delivered") or t.get("cancelled") or t.get("closed")
    if end is not None:
        trade["end_time"] = bj(end)
    if "shipped" in t:
        trade["orders"]["order"][0].update(logistics_company=o.carrier, invoice_no=o.tracking_no)
    return trade


def error(ctx: Context, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> Response:
    doc = {"code": code, "msg": msg, "request_id": request_id(ctx)}
    if sub_code:
        doc.update(sub_code=sub_code, sub_msg=sub_msg)
    return json_response({"error_response": doc})


class TmallApi:
    name = "tmall"
    path = "/router/rest"

    def fault(self, kind: str, ctx: Context, seconds: int = 0) -> Response:
        if kind == "rate_limited":
            return error(
                ctx,
                7,
                "App Call Limited",
                "accesscontrol.limited-by-api-access-count",
                f"This ban will last for {seconds} more seconds",
            )
        if kind == "auth_expired":
            return error(ctx, 27, "Invalid session", "invalid-sessionkey", "SessionKey is invalid or expired")
        return error(ctx, 15, "Remote service error", "isp.top-remote-connection-timeout", "后端服务超时")

    def handle(self, req: ApiRequest, ctx: Context) -> Response:
        p, creds = req.params, ctx.creds
        if p.get("method") != METHOD:
            return error(ctx, 22, "Invalid method")
        if not p.get("app_key"):
            return error(ctx, 28, "Missing app key")
        if p["app_key"] != creds["app_key"]:
            return error(ctx, 29, "Invalid app Key")
        if not p.get("sign"):
            return error(ctx, 24, "Missing signature")
        signer = {"md5": md5_sign, "hmac": hmac_md5_sign}.get(p.get("sign_method", "md5"))
        if signer is None:
            return error(ctx, 41, "Invalid arguments", "isv.invalid-parameter:sign_method")
        if not same(p["sign"], signer(creds["app_secret"], p)):
            return error(ctx, 25, "Invalid signature")
        try:
            sent = parse_bj(p.get("timestamp", ""))
        except ValueError:
            return error(ctx, 31, "Invalid timestamp")
        if abs(sent - ctx.now) > MAX_SKEW:
            return error(ctx, 31, "Invalid timestamp", "isv.invalid-timestamp", "时间戳超出允许范围(±10分钟)")
        if not p.get("session"):
            return error(ctx, 26, "Missing session")
        if p["session"] != creds["session"]:
            return error(ctx, 27, "Invalid session", "invalid-sessionkey", "SessionKey is invalid or expired")
        try:
            start, end = parse_bj(p["start_modified"]), parse_bj(p["end_modified"])
            page, size = int(p.get("page_no", "1")), int(p.get("page_size", "40"))
        except (KeyError, ValueError) as exc:
            return error(ctx, 41, "Invalid arguments", "isv.invalid-parameter", f"参数错误: {exc}")
        if not (start <= end and end - start <= MAX_WINDOW):
            return error(
                ctx,
                41,
                "Invalid arguments",
                "isv.invalid-parameter",
                "end_modified与start_modified的间隔不能超过一天",
            )
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return error(ctx, 41, "Invalid arguments", "isv.invalid-parameter", "page_no/page_size 超出范围")
        views = ctx.hidden(sort_views(ctx.changed(start, end), descending=True))
        rows = page_of(views, page, size, base=1)
        ctx.log({"start": start, "end": end, "page": page, "size": size, "returned": len(rows)})
        body: dict = {"total_results": len(views), "request_id": request_id(ctx)}
        if p.get("use_has_next") == "true":
            body = {"has_next": page * size < len(views), "request_id": body["request_id"]}
        if rows:  # TOP omits the list wrapper entirely when nothing matched
            body["trades"] = {"trade": [render(v) for v in rows]}
        return json_response({WRAPPER: body})
