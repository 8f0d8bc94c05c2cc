"""Taobao/Tmall TOP: taobao.trades.sold.increment.get (reference/channels.md §1)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from collectors.errors import (
    AuthExpired,
    ClockSkew,
    RateLimited,
    SourceConfigError,
    SourceError,
    SourceUnavailable,
)
from collectors.presets.base import (
    Call,
    Credentials,
    Page,
    Preset,
    as_count,
    as_list,
    bj,
    describe,
    dig,
    md5_sign,
    retry_after,
)

METHOD = "taobao.trades.sold.increment.get"
WRAPPER = "trades_sold_increment_get_response"
FIELDS = (
    "tid,tid_str,status,type,created,pay_time,consign_time,end_time,modified,payment,total_fee,post_fee,"
    "receiver_state,receiver_city,receiver_district,oaid,orders"
)


def classify(source: str, err: dict) -> SourceError:
    """TOP gateway error -> typed error: classify on `code`, `sub_code` only for isp.* (§1.6)."""
    text = "TOP " + describe({k: err.get(k) for k in ("code", "msg", "sub_code", "sub_msg")})
    try:
        code = int(err.get("code"))
    except (TypeError, ValueError):
        code = -1
    sub_code = str(err.get("sub_code") or "")
    if code == 7:
        return RateLimited(source, text, retry_after(err.get("sub_msg"), err.get("msg")))
    if code in (26, 27):
        return AuthExpired(source, text)
    if code == 31:
        return ClockSkew(source, text)
    if code == 15 or sub_code.startswith("isp."):
        return SourceUnavailable(source, text)
    return SourceConfigError(source, text)  # 11/12/25/28/29/40/41/53 and unknown: a person must look


class TmallPreset(Preset):
    name = "tmall"
    page_base = 1
    slice = timedelta(minutes=30)  # the API allows 1 day; TOP recommends <= 30 min slices

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        params = {
            "method": METHOD,
            "app_key": creds.get("app_key"),
            "session": creds.get("session", "access_token"),
            "timestamp": bj(now),
            "format": "json",
            "v": "2.0",
            "sign_method": "md5",
            "fields": FIELDS,
            "start_modified": bj(start),
            "end_modified": bj(end),
            "page_no": str(page),
            "page_size": str(size),
        }
        params["sign"] = md5_sign(creds.get("app_secret"), params)
        return Call("POST", data=params)

    def parse(self, source: str, doc: Any) -> Page:
        if isinstance(doc, dict) and "error_response" in doc:
            raise classify(source, doc["error_response"] or {})
        body = dig(source, doc, WRAPPER)
        total = as_count(source, body.get("total_results", 0), f"{WRAPPER}.total_results")
        trades = body.get("trades") or {}  # omitted when nothing matched
        records = as_list(
            source, trades.get("trade") if isinstance(trades, dict) else trades, f"{WRAPPER}.trades.trade"
        )
        return Page(records, total)
