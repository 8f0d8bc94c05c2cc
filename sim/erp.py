"""A fake Jushuitan (聚水潭) ERP: the order query API `POST /open/orders/single/query` over the
orders the ERP has pulled from the channels (reference/payments_logistics_wms.md §9.1).

Public parameters (form): app_key, access_token, timestamp (Unix seconds), charset, version (2),
biz (JSON: modified_begin / modified_end `yyyy-MM-dd HH:mm:ss` at most 7 days apart, page_index
from 1, page_size <= 100), sign = lower-case hex MD5(app_secret + every other public parameter
sorted by name as name+value). Answer `{"code": 0, "msg": ..., "data": {page_size, page_index,
data_count, page_count, has_next, orders}}`; a non-zero code is an error.

Jushuitan's error codes were not verified; the simulator uses: 100 invalid signature or app_key
(configuration), 110 access_token expired (auth), 199 rate limited (请求频率过高, with 请N秒后重试),
500 system busy (transient), 120 parameter error.

An order appears when the ERP pulls it: a question order (人工处理的问题单: `status` Question with
`question_type` / `question_desc`) first, released to the warehouse (`Delivering`) once a person
has handled it; other orders pass the automatic review and appear as `Delivering`. `Sent` once the
WMS has shipped it, with the waybill (`l_id`, `lc_id`). The question fields stay on the order after
it is released, as Jushuitan keeps them, so they tell that a person handled it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
from collections import Counter
from datetime import datetime, timedelta

from sentinel.clock import Clock
from sim.channels.common import ApiRequest, Response, bj, json_response, parse_bj, same, yuan
from sim.channels.faults import Faults
from sim.model import SimOrder
from sim.world import World

NAME = "jushuitan"
PATH = "/open/orders/single/query"
MAX_WINDOW = timedelta(days=7)
MAX_PAGE_SIZE = 100
CO_ID = 10174236
SHOP_IDS = {"tmall": 10010001, "jd": 10010002, "pdd": 10010003, "douyin": 10010004, "youzan": 10010005}
WAREHOUSE_IDS = {"WH-HZ01": 10880001, "WH-GZ01": 10880002, "WH-CD01": 10880003, "WH-BJ01": 10880004}
CARRIER_NAMES = {
    "zhongtong": "中通快递",
    "yuantong": "圆通速递",
    "yunda": "韵达快递",
    "shunfeng": "顺丰速运",
    "jd": "京东物流",
}
SHOP_STATUS = {"Question": "WAIT_SELLER_SEND_GOODS", "Delivering": "WAIT_SELLER_SEND_GOODS"}
DEFAULT_CREDENTIALS = {
    "app_key": "b0b7d1db226d4216a3d58df9ffa2dde5",
    "app_secret": "jst-demo-secret-99ad3f0c",
    "access_token": "jst-demo-token-5e1b7a20",
}


def sign(secret: str, params: dict[str, str]) -> str:
    """MD5(app_secret + name+value of every parameter but sign, sorted by name), lower-case hex."""
    text = secret + "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def erp_status(order: SimOrder, now: datetime) -> str | None:
    """The ERP order status of `order` at `now` (None: the ERP has not pulled it)."""
    if not order.in_erp or order.erp_pulled_at is None or order.erp_pulled_at > now:
        return None
    ev = order.events
    if "shipped" in ev and ev["shipped"] <= now:
        return "Sent"
    if "erp_accepted" in ev and ev["erp_accepted"] <= now:
        return "Delivering"
    return "Question" if order.manual else "WaitConfirm"


def erp_times(order: SimOrder) -> list[datetime]:
    """Every moment the ERP order changes (pulled, accepted, shipped)."""
    out = [order.erp_pulled_at] if order.erp_pulled_at is not None else []
    out += [order.events[s] for s in ("erp_accepted", "shipped") if s in order.events]
    return out


def render(index: int, order: SimOrder, now: datetime) -> dict:
    """The Jushuitan order record of `order` as of `now` (it must have been pulled)."""
    status = erp_status(order, now)
    ev = order.events_until(now)
    modified = max(t for t in erp_times(order) if t <= now)
    shipped = ev.get("shipped")
    o_id = 30_000_000 + index
    return {
        "o_id": o_id,
        "so_id": order.raw_id,
        "shop_id": SHOP_IDS[order.channel],
        "co_id": CO_ID,
        "status": status,
        "shop_status": SHOP_STATUS.get(status, "WAIT_BUYER_CONFIRM_GOODS"),
        "question_type": order.manual or "",
        "question_desc": f"{order.manual}，已人工处理"
        if order.manual and status != "Question"
        else order.manual or "",
        "order_date": bj(order.created_at),
        "pay_date": bj(ev.get("paid")),
        "send_date": bj(shipped),
        "created": bj(order.erp_pulled_at),
        "modified": bj(modified),
        "l_id": order.tracking_no if shipped else "",
        "lc_id": order.carrier.upper() if shipped else "",
        "logistics_company": CARRIER_NAMES.get(order.carrier, order.carrier) if shipped else "",
        "wms_co_id": WAREHOUSE_IDS.get(order.warehouse, 0),
        "pay_amount": yuan(order.amount_fen),
        "paid_amount": yuan(order.amount_fen),
        "freight": "0.00",
        "is_split": False,
        "is_merge": False,
        "ts": int(modified.timestamp() * 1000),
        "items": [
            {
                "oi_id": o_id * 10 + 1,
                "outer_oi_id": f"{order.raw_id}01",
                "sku_id": order.sku,
                "qty": 1,
                "refund_status": "none",
                "item_status": status,
            }
        ],
    }


def error(code: int, msg: str) -> Response:
    return json_response({"code": code, "msg": msg, "data": None})


class ErpServer:
    """The fake Jushuitan order API over `world` as of `clock.now()`, on a local port."""

    name = NAME

    def __init__(
        self,
        world: World,
        clock: Clock,
        credentials: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world = world
        self.clock = clock
        self.credentials = {**DEFAULT_CREDENTIALS, **(credentials or {})}
        self.faults = Faults()  # keyed by NAME, same kinds as the channel APIs
        self.calls: list[dict] = []
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        pairs = sorted((t, i) for i, o in enumerate(world.orders) if o.in_erp for t in erp_times(o))
        self._times = [t for t, _ in pairs]
        self._owners = [i for _, i in pairs]
        self._http = None

    def start(self) -> ErpServer:
        from sim.channels.server import serve_http

        self._http = serve_http(self, "sim-erp")
        return self

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("ErpServer is not started")
        return self._http.url + PATH

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> ErpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request handling ---------------------------------------------------------------------
    def serve(self, req: ApiRequest) -> Response:
        if req.path != PATH:
            return json_response({"code": 404, "msg": f"not found: {req.path}"}, 404)
        now = self.clock.now()
        with self._lock:
            self.requests[NAME] += 1
        decision = self.faults.decide(NAME, now)
        if decision is not None:
            if decision.kind == "rate_limited":
                return error(199, f"请求频率过高，请{decision.seconds}秒后重试")
            if decision.kind == "auth_expired":
                return error(110, "access_token已过期")
            if decision.kind == "server_error":
                if decision.params["mode"] == "http":
                    return Response(
                        502, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"}
                    )
                return error(500, "系统繁忙，请稍后重试")
            if decision.kind == "timeout":
                threading.Event().wait(float(decision.params["delay"]))
        response = self._query(req, now)
        if decision is not None and decision.kind == "garbage":
            return Response(200, response.body[: max(1, len(response.body) // 2)], response.headers)
        return response

    def _query(self, req: ApiRequest, now: datetime) -> Response:
        if req.method != "POST":
            return error(120, "请使用POST请求")
        p = req.params
        creds = self.credentials
        if not same(p.get("app_key", ""), creds["app_key"]):
            return error(100, "app_key无效")
        if not same(
            p.get("sign", ""), sign(creds["app_secret"], {k: v for k, v in p.items() if k != "sign"})
        ):
            return error(100, "签名错误")
        if not same(p.get("access_token", ""), creds["access_token"]):
            return error(110, "access_token无效或已过期")
        try:
            sent = datetime.fromtimestamp(int(p["timestamp"]), now.tzinfo)
            biz = json.loads(p["biz"])
            start, end = parse_bj(biz["modified_begin"]), parse_bj(biz["modified_end"])
            page, size = int(biz.get("page_index", 1)), int(biz.get("page_size", 30))
        except (KeyError, ValueError, TypeError) as exc:
            return error(120, f"参数错误: {exc}")
        if abs((sent - now).total_seconds()) > 600:
            return error(120, "timestamp 与服务器时间相差超过10分钟")
        if not start <= end or end - start > MAX_WINDOW:
            return error(120, "参数错误: 修改时间范围不能超过7天")
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            return error(120, "参数错误: page_index/page_size 超出范围")
        rows = self._changed(start, end, now)
        total = len(rows)
        chosen = rows[(page - 1) * size : page * size]
        with self._lock:
            self.calls.append(
                {"start": start, "end": end, "page": page, "size": size, "returned": len(chosen)}
            )
        pages = -(-total // size) if total else 0
        data = {
            "page_size": size,
            "page_index": page,
            "data_count": total,
            "page_count": pages,
            "has_next": page < pages,
            "orders": chosen,
        }
        return json_response({"code": 0, "msg": "执行成功", "data": data})

    def _changed(self, start: datetime, end: datetime, now: datetime) -> list[dict]:
        """Orders whose modified time (whole seconds) is in [start, end] as of now, by modified, o_id."""
        lo = bisect.bisect_left(self._times, start)
        hi = bisect.bisect_left(self._times, end + timedelta(seconds=1))
        out = []
        for i in sorted(set(self._owners[lo:hi])):
            order = self.world.orders[i]
            if erp_status(order, now) is None:
                continue
            row = render(i, order, now)
            if start <= parse_bj(row["modified"]) <= end:
                out.append(row)
        out.sort(key=lambda r: (r["modified"], r["o_id"]))
        return out
