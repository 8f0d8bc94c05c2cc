"""Generic collector for the channel order APIs: time windows, paging, retries, fault classes."""

from __future__ import annotations

import json
import logging
import math
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from alerts.notifiers.base import protect
from collectors.errors import (
    HTTPStatusError,
    RateLimited,
    RetryPolicy,
    SchemaError,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from collectors.mapping import RecordMapper
from collectors.presets import Credentials, Page, Preset, get_preset
from collectors.types import Batch, Quarantined
from sentinel.config import SourceConfig

log = logging.getLogger("collectors.http_channel")
MASK = "***"


class _Redact(logging.Filter):
    """Masks credentials in the HTTP library's debug lines: it logs each request's URL, and some
    APIs take a token or key in the query string."""

    def __init__(self) -> None:
        super().__init__()
        self.collectors: weakref.WeakSet[ChannelApiCollector] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        text = clean = record.getMessage()
        for collector in list(self.collectors):
            clean = collector._clean(clean)
        if clean != text:
            record.msg, record.args = clean, ()
        return True


_REDACT = _Redact()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACT)


class ChannelApiCollector:
    """Polls one channel's incremental order list (by modified time) through its preset."""

    def __init__(
        self,
        name: str,
        cfg: SourceConfig,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        mapper: RecordMapper | None = None,
        preset: Preset | None = None,
    ) -> None:
        if not cfg.url:
            raise ValueError(f"sources.{name}.url: field required for kind 'http'")
        self.name = name
        self.cfg = cfg
        self.preset = preset or get_preset(cfg.preset)
        self.session = session or requests.Session()
        self.retry = retry or RetryPolicy()
        self.mapper = mapper or RecordMapper(name, cfg.mapping, channel=cfg.channel)
        self._creds = Credentials(name, cfg.credentials)
        for secret in self._creds.secrets():  # urllib3 logs request URLs (query tokens) at DEBUG
            protect(secret)
        self._slept = 0.0  # seconds of backoff so far in this poll: keeps request timestamps honest
        _REDACT.collectors.add(self)

    def __repr__(self) -> str:
        return f"ChannelApiCollector({self.name!r}, preset={self.preset.name!r}, url={self._clean(self.cfg.url)!r})"

    # -- windows -----------------------------------------------------------------------------
    def windows(self, cursor: str | None, now: datetime) -> list[tuple[datetime, datetime]]:
        """[start, end] slices to read: from cursor - overlap (or now - lookback) to now - settle."""
        end = _whole_second(now - self.preset.settle)
        start = self._start(cursor, now)
        slices = []
        while start < end:
            stop = min(start + self.preset.slice, end)
            slices.append((start, stop))
            start = stop
        return slices

    def _start(self, cursor: str | None, now: datetime) -> datetime:
        if cursor:
            try:
                at = datetime.fromisoformat(cursor)
            except ValueError:
                log.warning("%s: unreadable cursor %r, reading the initial lookback again", self.name, cursor)
            else:
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                return _whole_second(at - self.cfg.overlap)
        return _whole_second(now - self.cfg.initial_lookback)

    # -- polling -----------------------------------------------------------------------------
    def poll(self, cursor: str | None, now: datetime) -> Iterator[Batch]:
        """One Batch per page; the last page of each window carries cursor = the window's end."""
        self._slept = 0.0
        for start, end in self.windows(cursor, now):
            yield from self._read_window(start, end, now)

    def _read_window(self, start: datetime, end: datetime, now: datetime) -> Iterator[Batch]:
        cursor, base, size = end.isoformat(), self.preset.page_base, self.cfg.page_size
        first = self.fetch(start, end, base, now)
        pages = max(1, math.ceil(first.total / size))
        if pages == 1:
            yield self._batch(first, cursor)
            return
        # Records modified during the walk leave the (closed) window and shift the pages after
        # them. Walking from the last page back to the first, such a shift can only repeat a
        # record (harmless: record keys are idempotent), never skip one.
        for index in range(pages - 1, -1, -1):
            page = self.fetch(start, end, base + index, now)
            yield self._batch(page, cursor if index == 0 else None)

    def fetch(self, start: datetime, end: datetime, page: int, now: datetime) -> Page:
        """One page through the retry policy (timeouts, 5xx and rate limits back off)."""
        return self.retry.call(lambda: self._fetch_once(start, end, page, now), on_retry=self._on_retry)

    def _on_retry(self, exc: SourceError, delay: float) -> None:
        self._slept += delay
        log.warning("%s [%s]: %s; retrying in %g s", self.name, exc.error_class, exc, delay)

    def _fetch_once(self, start: datetime, end: datetime, page: int, now: datetime) -> Page:
        try:
            return self._request(start, end, page, now + timedelta(seconds=self._slept))
        except SourceError as exc:
            self._scrub(exc)  # the one place errors leave: no secret may ride along
            raise

    def _request(self, start: datetime, end: datetime, page: int, sent_at: datetime) -> Page:
        call = self.preset.request(self._creds, start, end, page, self.cfg.page_size, sent_at)
        timeout = self.cfg.timeout.total_seconds()
        failure: SourceError | None = None
        try:
            resp = self.session.request(
                call.method,
                self.cfg.url,
                params=call.params or None,
                data=call.data if call.data is not None else call.body,
                headers=call.headers or None,
                timeout=timeout,
            )
        except requests.Timeout:
            failure = SourceTimeout(self.name, f"no answer within {timeout:g} s")
        except requests.RequestException as exc:
            failure = SourceUnavailable(self.name, f"{type(exc).__name__}: {self._clean(str(exc))[:200]}")
        if failure is not None:  # raised outside the handler: the requests error (its URL) is not chained
            raise failure
        if resp.status_code == 429:
            raise RateLimited(self.name, "HTTP 429 Too Many Requests", _retry_after_header(resp))
        if resp.status_code >= 500 or (resp.status_code >= 400 and not self.preset.error_envelope):
            raise HTTPStatusError(self.name, resp.status_code, resp.reason or "")
        try:
            doc = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            doc, failure = None, self._not_json(resp, exc)
        if failure is not None:
            raise failure
        page_data = self.preset.parse(self.name, doc)
        if resp.status_code >= 400:
            raise HTTPStatusError(self.name, resp.status_code, resp.reason or "")
        log.debug(
            "%s: page %s of %s..%s: %d of %d records",
            self.name,
            page,
            start,
            end,
            len(page_data.records),
            page_data.total,
        )
        return page_data

    def _not_json(self, resp: requests.Response, exc: Exception) -> SourceError:
        if resp.status_code >= 400:
            return HTTPStatusError(self.name, resp.status_code, resp.reason or "")
        snippet = self._clean(resp.content[:60].decode("utf-8", errors="replace"))
        return SchemaError(self.name, "response", "$", f"not valid JSON ({exc}); body starts {snippet!r}")

    # -- mapping -----------------------------------------------------------------------------
    def _batch(self, page: Page, cursor: str | None) -> Batch:
        batch = Batch(source=self.name, cursor=cursor, records=len(page.records))
        for record in page.records:
            try:
                batch.observations.extend(self.mapper.map(record))
            except SchemaError as exc:
                batch.quarantined.append(
                    Quarantined(self.name, exc.record, exc.field, exc.reason, _raw(record))
                )
        batch.max_event_at = max((o.at for o in batch.observations), default=None)
        return batch

    # -- secrets -----------------------------------------------------------------------------
    def _clean(self, text: str | None) -> str:
        text = text or ""
        for secret in self._creds.secrets():
            if len(secret) >= 4:  # masking a 1-3 character value would shred the message, not hide it
                text = text.replace(secret, MASK)
        return text

    def _scrub(self, exc: SourceError) -> None:
        exc.args = tuple(self._clean(a) if isinstance(a, str) else a for a in exc.args)
        exc.message = self._clean(exc.message)
        if isinstance(exc, SchemaError):
            exc.reason = self._clean(exc.reason)


def _whole_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def _retry_after_header(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: fall back to the policy's own backoff


def _raw(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)
