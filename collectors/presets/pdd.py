"""Pinduoduo: pdd.order.number.list.increment.get via /api/router (reference/channels.md §3)."""

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
    describe,
    dig,
    md5_sign,
    retry_after,
    unix,
)

METHOD = "pdd.order.number.list.increment.get"
WRAPPER = "order_sn_increment_get_response"
RATE_LIMITED = {52101, 70031}
TRANSIENT = {52102, 52103}
CLOCK = {10002}  # unverified code, used by the simulator for stale timestamps


def classify(source: str, err: dict) -> SourceError:
    text = "PDD " + describe({k: err.get(k) for k in ("error_code", "error_msg", "sub_code", "sub_msg")})
    try:
        code = int(err.get("error_code"))
    except (TypeError, ValueError):
        code = -1
    if code == 10019:
        return AuthExpired(source, text)
    if code in RATE_LIMITED:
        return RateLimited(source, text, retry_after(err.get("sub_msg"), err.get("error_msg")))
    if code in TRANSIENT:
        return SourceUnavailable(source, text)
    if code in CLOCK:
        return ClockSkew(source, text)
    return SourceConfigError(source, text)


class PddPreset(Preset):
    name = "pdd"
    page_base = 1
    slice = timedelta(minutes=30)  # hard platform limit

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        params = {
            "type": METHOD,
            "client_id": creds.get("client_id", "app_key"),
            "access_token": creds.get("access_token"),
            "timestamp": str(unix(now)),
            "data_type": "JSON",
            "version": "V1",
            "start_updated_at": str(unix(start)),
            "end_updated_at": str(unix(end)),
            "is_lucky_flag": "0",
            "order_status": "5",
            "refund_status": "5",
            "page": str(page),
            "page_size": str(size),
        }
        params["sign"] = md5_sign(creds.get("client_secret", "app_secret"), params)
        return Call("POST", data=params)

    def parse(self, source: str, doc: Any) -> Page:
        if isinstance(doc, dict) and "error_response" in doc:
            raise classify(source, doc["error_response"] or {})
        body = dig(source, doc, WRAPPER)
        total = as_count(source, body.get("total_count", 0), f"{WRAPPER}.total_count")
        return Page(as_list(source, body.get("order_sn_list"), f"{WRAPPER}.order_sn_list"), total)
