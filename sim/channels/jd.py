"""Fake JD JOS router: jingdong.pop.order.search via /routerjson (reference/channels.md §2)."""

from __future__ import annotations

import json
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
    masked_mobile,
    md5_sign,
    page_of,
    parse_bj,
    same,
    sort_views,
    yuan,
)

METHOD = "jingdong.pop.order.search"
WRAPPER = "jingdong_pop_order_search_responce"  # sic: JD really spells it "responce"
MAX_WINDOW = timedelta(days=31)
MAX_SKEW = timedelta(minutes=6)
PLACEHOLDER = "0001-01-01 00:00:00"  # JD's "not set" date
STATUS = {
    "paid": "WAIT_SELLER_STOCK_OUT",
    "shipped": "WAIT_GOODS_RECEIVE_CONFIRM",
    "delivered": "FINISHED_L",
    "cancelled": "TRADE_CANCELED",
    "closed": "TRADE_CANCELED",
}
REMARK = {
    "WAIT_SELLER_STOCK_OUT": "等待出库",
    "WAIT_GOODS_RECEIVE_CONFIRM": "等待确认收货",
    "FINISHED_L": "完成",
    "TRADE_CANCELED": "取消",
}


def render(view: View) -> dict:
    o, t = view.order, view.times
    state = STATUS[view.phase]
    shipped = "shipped" in t
    return {
        "orderId": o.raw_id,
        "venderId": "10012345",
        "orderState": state,
        "orderStateRemark": REMARK[state],
        "orderStartTime": bj(t["created"]),
        "paymentConfirmTime": bj(t.get("paid"), PLACEHOLDER),
        "orderEndTime": bj(t.get("delivered"), PLACEHOLDER),
        "modified": bj(view.modified),
        "orderTotalPrice": yuan(o.amount_fen),
        "orderSellerPrice": yuan(o.amount_fen),
        "orderPayment": yuan(o.amount_fen),
        "freightPrice": "0.00",
        "payType": "4-在线支付",
        "consigneeInfo": {
            "fullname": cipher(o, "name"),
            "mobile": masked_mobile(o),  # JD shows the masked number
            "fullAddress": cipher(o, "address"),
            "province": o.province,
            "city": o.city,
        },
        "itemInfoList": [
            {
                "skuId": "1000" + o.raw_id[-8:],
                "outerSkuId": o.sku,
                "itemTotal": "1",
                "jdPrice": yuan(o.amount_fen),
            }
        ],
        "waybill": o.tracking_no if shipped else "",
        "logisticsId": o.carrier if shipped else "",
    }


def error(code: str, zh: str, en: str) -> Response:
    return json_response({"error_response": {"code": code, "zh_desc": zh, "en_desc": en}})


def business_error(en: str, zh: str) -> Response:
    result = {
        "apiResult": {"success": False, "englishErrCode": en, "chineseErrCode": zh, "numberCode": 10100}
    }
    return json_response({WRAPPER: {"code": "0", "searchorderinfo_result": result}})


class JdApi:
    name = "jd"
    path = "/routerjson"

    def fault(self, kind: str, ctx: Context, seconds: int = 0) -> Response:
        if kind == "rate_limited":
            return error(
                "2",
                f"调用次数超限，{seconds}秒后解除",
                f"App Call Limited, ban will last {seconds} more seconds",
            )
        if kind == "auth_expired":
            return error("19", "无效access_token", "Invalid access_token")
        return error("66", "平台连接后端服务不可用", "Platform backend service unavailable")

    def handle(self, req: ApiRequest, ctx: Context) -> Response:
        p, creds = req.params, ctx.creds
        if p.get("method") != METHOD:
            return error("15", "不存在的方法名", "Invalid method")
        if p.get("app_key") != creds["app_key"]:
            return error("10", "无效的app_key", "Invalid app_key")
        if not p.get("sign"):
            return error("11", "缺少签名参数", "Missing signature")
        if not same(p["sign"], md5_sign(creds["app_secret"], p)):
            return error("12", "无效签名", "Invalid signature")
        if not p.get("timestamp"):
            return error("7", "缺少时间戳参数", "Missing timestamp")
        try:
            sent = parse_bj(p["timestamp"])
        except ValueError:
            return error("8", "非法的时间戳参数", "Invalid timestamp")
        if abs(sent - ctx.now) > MAX_SKEW:
            return error("8", "非法的时间戳参数", "Invalid timestamp")
        if p.get("access_token") != creds["access_token"]:
            return error("19", "无效access_token", "Invalid access_token")
        try:
            biz = json.loads(p["360buy_param_json"])
            start, end = parse_bj(biz["start_date"]), parse_bj(biz["end_date"])
            page, size = int(biz.get("page", 1)), int(biz.get("page_size", 20))
        except (KeyError, ValueError, TypeError) as exc:
            return business_error(f"invalid parameter: {exc}", "参数错误")
        if str(biz.get("dateType", "0")) != "0":
            return business_error("only dateType=0 (modified) is simulated", "参数错误")
        if not (start <= end and end - start <= MAX_WINDOW):
            return business_error("date range is invalid or exceeds one month", "查询时间范围不能超过一个月")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return business_error("page or page_size out of range", "分页参数错误")
        descending = str(biz.get("sortType", "0")) == "1"
        views = ctx.changed(start, end, paid_only=True)
        views = ctx.hidden(sort_views(views, descending))
        rows = page_of(views, page, size, base=1)
        ctx.log({"start": start, "end": end, "page": page, "size": size, "returned": len(rows)})
        result = {
            "apiResult": {"success": True, "englishErrCode": "", "chineseErrCode": "", "numberCode": 0},
            "orderTotal": len(views),
            "orderInfoList": [render(v) for v in rows],
        }
        return json_response({WRAPPER: {"code": "0", "searchorderinfo_result": result}})
