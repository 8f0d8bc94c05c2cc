"""Douyin shop (抖店): order.searchList, HMAC-SHA256 signed (reference/channels.md §4)."""

from __future__ import annotations

import hashlib
import hmac
import json
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
    retry_after,
    unix,
)

METHOD = "order.searchList"


def sign(app_key: str, secret: str, timestamp: str, param_json: str) -> str:
    text = f"{secret}app_key{app_key}method{METHOD}param_json{param_json}timestamp{timestamp}v2{secret}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def classify(source: str, code: int, doc: dict) -> SourceError:
    """Douyin code/sub_code -> typed error (§4.5); 40003 is split on sub_code."""
    sub_code = str(doc.get("sub_code") or "")
    text = "Douyin " + describe(
        {"code": code, **{k: doc.get(k) for k in ("msg", "message", "sub_code", "sub_msg")}}
    )
    if code == 60000:
        return RateLimited(source, text, retry_after(doc.get("sub_msg"), doc.get("msg")))
    if code in (20000, 20001):
        return SourceUnavailable(source, text)
    if code == 50001 or (code == 30001 and sub_code.startswith("dop.authorization")):
        return AuthExpired(source, text)
    if code == 40003 and "access-token" in sub_code:
        return AuthExpired(source, text)
    if code == 40003 and "timestamp" in sub_code:
        return ClockSkew(source, text)
    return SourceConfigError(source, text)  # signature, permissions, parameters, API offline


class DouyinPreset(Preset):
    name = "douyin"
    page_base = 0
    slice = timedelta(hours=6)

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        business = {
            "update_time_start": unix(start),
            "update_time_end": unix(end),
            "page": page,
            "size": size,
            "order_by": "update_time",
            "order_asc": False,
        }
        param_json = json.dumps(business, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        app_key, timestamp = creds.get("app_key"), str(unix(now))
        params = {
            "app_key": app_key,
            "method": METHOD,
            "access_token": creds.get("access_token"),
            "timestamp": timestamp,
            "v": "2",
            "sign_method": "hmac-sha256",
            "sign": sign(app_key, creds.get("app_secret"), timestamp, param_json),
        }
        headers = {"Content-Type": "application/json;charset=UTF-8", "x-open-no-old-err-code": "1"}
        return Call("POST", params=params, body=param_json.encode("utf-8"), headers=headers)

    def parse(self, source: str, doc: Any) -> Page:
        if isinstance(doc, dict) and "code" not in doc and "err_no" in doc:  # legacy envelope
            code = doc.get("err_no")
            if code not in (0, "0"):
                raise classify(source, _int(code), doc)
        else:
            code = dig(source, doc, "code")
            if _int(code) != 10000:
                raise classify(source, _int(code), doc)
        data = dig(source, doc, "data")
        total = as_count(source, data.get("total", 0) if isinstance(data, dict) else None, "data.total")
        return Page(as_list(source, data.get("shop_order_list"), "data.shop_order_list"), total)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
