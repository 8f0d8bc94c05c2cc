"""Youzan cloud (WeChat mini-program shop): youzan.trades.sold.get 4.0.0 (reference/channels.md §5).

Youzan's gateway codes are unverified; the ones used (shared with sim/channels/youzan.py):
4201/4202 access_token expired/invalid -> AuthExpired; 4290 (+ HTTP 429) -> RateLimited;
5001 -> transient; 4001 parameters, 4203 permission and anything else -> SourceConfigError.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from collectors.errors import AuthExpired, RateLimited, SourceConfigError, SourceError, SourceUnavailable
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
    retry_after,
)

AUTH = {4201, 4202}
TRANSIENT = {5001}


def classify(source: str, doc: dict) -> SourceError:
    text = "Youzan " + describe({k: doc.get(k) for k in ("code", "message")})
    try:
        code = int(doc.get("code"))
    except (TypeError, ValueError):
        code = -1
    if code in AUTH:
        return AuthExpired(source, text)
    if code == 4290:
        return RateLimited(source, text, retry_after(doc.get("message")))
    if code in TRANSIENT:
        return SourceUnavailable(source, text)
    return SourceConfigError(source, text)


class YouzanPreset(Preset):
    name = "youzan"
    page_base = 1
    slice = timedelta(hours=6)

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        business = {"start_update": bj(start), "end_update": bj(end), "page_no": page, "page_size": size}
        return Call(
            "POST",
            params={"access_token": creds.get("access_token")},
            body=json.dumps(business, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json;charset=UTF-8"},
        )

    def parse(self, source: str, doc: Any) -> Page:
        if dig(source, doc, "success") is not True:
            raise classify(source, doc)
        data = dig(source, doc, "data")
        total = as_count(
            source, data.get("total_results", 0) if isinstance(data, dict) else None, "data.total_results"
        )
        return Page(as_list(source, data.get("full_order_info_list"), "data.full_order_info_list"), total)
