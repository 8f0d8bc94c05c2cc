"""Jushuitan (聚水潭) ERP: order query `POST /open/orders/single/query` (reference §9.1).

Signing: MD5(app_secret + every public parameter but `sign`, sorted by name, as name+value),
lower-case hex. Jushuitan's error codes were not verified; the ones used (shared with sim/erp.py):
110 access_token expired -> AuthExpired; 199 rate limited -> RateLimited; 500 busy -> transient;
100 (signature / app_key), 120 (parameters) and anything else -> SourceConfigError.
"""

from __future__ import annotations

import hashlib
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


def jushuitan_sign(secret: str, params: dict[str, str]) -> str:
    text = secret + "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def classify(source: str, doc: dict) -> SourceError:
    text = "Jushuitan " + describe({k: doc.get(k) for k in ("code", "msg")})
    try:
        code = int(doc.get("code"))
    except (TypeError, ValueError):
        code = -1
    if code == 110:
        return AuthExpired(source, text)
    if code == 199:
        return RateLimited(source, text, retry_after(doc.get("msg")))
    if code == 500:
        return SourceUnavailable(source, text)
    return SourceConfigError(source, text)


class JushuitanPreset(Preset):
    name = "jushuitan"
    page_base = 1
    slice = timedelta(hours=6)  # the API allows 7 days per query

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        biz = {
            "modified_begin": bj(start),
            "modified_end": bj(end),
            "date_type": 0,
            "page_index": page,
            "page_size": size,
        }
        params = {
            "app_key": creds.get("app_key"),
            "access_token": creds.get("access_token"),
            "timestamp": str(int(now.timestamp())),
            "charset": "UTF-8",
            "version": "2",
            "biz": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        params["sign"] = jushuitan_sign(creds.get("app_secret"), params)
        return Call("POST", data=params)

    def parse(self, source: str, doc: Any) -> Page:
        if dig(source, doc, "code") != 0:
            raise classify(source, doc)
        data = dig(source, doc, "data")
        if not isinstance(data, dict):
            data = {}
        total = as_count(source, data.get("data_count", 0), "data.data_count")
        return Page(as_list(source, data.get("orders"), "data.orders"), total)
