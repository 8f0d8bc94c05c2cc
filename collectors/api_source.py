"""A JSON HTTP API read through `[sources.NAME.api]` alone: no preset code for the platform.

Windows, retries, error classes and secret masking are ChannelApiCollector's; this module builds
each request from the config and walks the pages the configured way (page numbers, cursor tokens,
or one request per window).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from collectors.api_config import _TEMPLATE_NAME, ApiConfig
from collectors.errors import AuthExpired, HTTPStatusError, SchemaError, SourceConfigError
from collectors.http_channel import ChannelApiCollector
from collectors.mapping import _MISSING, get_path
from collectors.presets.base import BEIJING, Call, Credentials, Page, Preset, as_count, as_list, md5_sign
from collectors.types import Batch

_FALSE = (None, False, 0, "", "0", "false", "False")


class ApiPage(Page):
    """A page and, for cursor paging, the token of the next one (None on the last page)."""

    def __init__(self, records: list[Any], total: int, next_token: str | None) -> None:
        super().__init__(records, total)
        object.__setattr__(self, "next_token", next_token)


class ConfiguredApi(Preset):
    """A Preset built from ApiConfig: the request and the envelope as config.toml describes them."""

    name = "api"
    error_envelope = False  # an HTTP 4xx is the error: its body need not hold the records

    def __init__(self, api: ApiConfig, default_zone: str) -> None:
        self.api = api
        self.page_base = api.page_base
        self.slice = api.window
        self.settle = api.settle
        self.zone = ZoneInfo(api.timezone or default_zone)

    def when(self, moment: datetime) -> str:
        """A window edge as the API expects it."""
        fmt = self.api.time_format
        if fmt == "unix":
            return str(int(moment.timestamp()))
        if fmt == "unix_ms":
            return str(int(moment.timestamp() * 1000))
        local = moment.astimezone(self.zone)
        return local.isoformat() if fmt == "iso" else local.strftime(fmt)

    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: Any, size: int, now: datetime
    ) -> Call:
        api = self.api
        params = dict(api.params)
        if api.since_param:
            params[api.since_param] = self.when(start)
        if api.until_param:
            params[api.until_param] = self.when(end)
        if api.paging == "page":
            params[api.page_param] = str(page)
        elif api.paging == "cursor" and page is not None and page != api.page_base:
            params[api.cursor_param] = str(page)
        if api.size_param and api.paging != "none":
            params[api.size_param] = str(size)
        headers = {k: fill(v, creds) for k, v in api.headers.items()}
        if api.auth == "header":
            headers[api.auth_name] = fill(api.auth_value, creds)
        elif api.auth == "query":
            params[api.auth_name] = fill(api.auth_value, creds)
        elif api.auth == "sign":
            params = self._signed(creds, params, now)
        if api.method == "GET" or api.body == "query":
            return Call(api.method, params=params, headers=headers)
        if api.body == "form":
            return Call(api.method, data=params, headers=headers)
        headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        return Call(api.method, body=json.dumps(params, ensure_ascii=False).encode(), headers=headers)

    def _signed(self, creds: Credentials, business: dict[str, str], now: datetime) -> dict[str, str]:
        """The gateway fields of the named platform and its MD5 signature over all parameters."""
        method = {"method": self.api.sign_method} if self.api.sign_method else {}
        bj = now.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        if self.api.sign == "taobao":
            params = {
                **business,
                **method,
                "app_key": creds.get("app_key"),
                "session": creds.get("session", "access_token"),
                "timestamp": bj,
                "format": "json",
                "v": "2.0",
                "sign_method": "md5",
            }
            secret = creds.get("app_secret")
        elif self.api.sign == "jd":
            params = {
                **method,
                "app_key": creds.get("app_key"),
                "access_token": creds.get("access_token"),
                "timestamp": bj,
                "v": "2.0",
                "360buy_param_json": json.dumps(business, ensure_ascii=False, separators=(",", ":")),
            }
            secret = creds.get("app_secret")
        else:  # pdd
            params = {
                **business,
                **({"type": self.api.sign_method} if self.api.sign_method else {}),
                "client_id": creds.get("client_id", "app_key"),
                "access_token": creds.get("access_token"),
                "timestamp": str(int(now.timestamp())),
                "data_type": "JSON",
            }
            secret = creds.get("client_secret", "app_secret")
        params["sign"] = md5_sign(secret, params)
        return params

    def parse(self, source: str, doc: Any) -> ApiPage:
        api = self.api
        if api.ok_path is not None:
            code = get_path(doc, api.ok_path)
            if code is _MISSING or str(code) not in api.ok_values:
                message = get_path(doc, api.message_path) if api.message_path else _MISSING
                text = f"{api.ok_path}={'(missing)' if code is _MISSING else code}"
                raise SourceConfigError(source, text + ("" if message is _MISSING else f" {message}"))
        records = doc if not api.records else get_path(doc, api.records)
        if records is _MISSING:
            raise SchemaError(source, "response", api.records, "records path missing in the response")
        records = as_list(source, records, api.records or "$")
        total = len(records)
        if api.total is not None:
            value = get_path(doc, api.total)
            if value is _MISSING:
                raise SchemaError(source, "response", api.total, "total path missing in the response")
            total = as_count(source, value, api.total)
        token = None
        if api.paging == "cursor":
            value = get_path(doc, api.next_cursor)
            token = None if value is _MISSING or value in ("", None) else str(value)
            if api.has_more is not None and get_path(doc, api.has_more) in (*_FALSE, _MISSING):
                token = None
        return ApiPage(records, total, token)


def fill(template: str, creds: Credentials) -> str:
    """`"Bearer {token}"` from the credentials (SourceConfigError naming a missing one)."""
    return _TEMPLATE_NAME.sub(lambda m: creds.get(m.group(1)), template)


class JsonApiCollector(ChannelApiCollector):
    """Polls a JSON API described by `cfg.api`, window by window (modified since the cursor)."""

    def __init__(self, name: str, cfg, **kwargs: Any) -> None:
        preset = ConfiguredApi(cfg.api, cfg.mapping.timezone)
        super().__init__(name, cfg, preset=preset, **kwargs)

    def windows(self, cursor: str | None, now: datetime) -> list[tuple[datetime, datetime]]:
        if not self.preset.api.since_param:  # no modified-since: read it all, once per poll
            end = (now - self.preset.settle).astimezone(UTC).replace(microsecond=0)
            return [(end - self.cfg.initial_lookback, end)]
        return super().windows(cursor, now)

    def _read_window(self, start: datetime, end: datetime, now: datetime) -> Iterator[Batch]:
        api, size, cursor = self.preset.api, self.cfg.page_size, end.isoformat()
        if api.paging == "page" and api.total is not None:
            yield from super()._read_window(start, end, now)  # last page first: shifts repeat, never skip
            return
        page: Any = api.page_base
        for count in range(api.max_pages):
            got = self.fetch(start, end, page, now)
            if api.paging == "cursor":
                last = got.next_token is None
                page = got.next_token
            else:
                last = api.paging == "none" or len(got.records) < size
                page += 1
            if not last and count == api.max_pages - 1:
                raise SchemaError(self.name, "response", api.next_cursor or api.page_param,
                                  f"more than max_pages={api.max_pages} pages in one window")  # fmt: skip
            yield self._batch(got, cursor if last else None)
            if last:
                return

    def _request(self, start: datetime, end: datetime, page: Any, sent_at: datetime) -> Page:
        try:
            return super()._request(start, end, page, sent_at)
        except HTTPStatusError as exc:
            if exc.status in (401, 403):  # a key or token the API no longer takes
                raise AuthExpired(self.name, exc.message) from None
            raise
