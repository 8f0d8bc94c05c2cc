"""Typed source failures and the one place that turns them into retry decisions and labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class SourceError(Exception):
    """A failure reading a source; `error_class` is the label used in health and metrics."""

    error_class = "error"
    retryable = False

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class SourceTimeout(SourceError):
    error_class = "timeout"
    retryable = True


class SourceUnavailable(SourceError):
    """Connection refused/reset, DNS failure, database down."""

    error_class = "unavailable"
    retryable = True


class HTTPStatusError(SourceError):
    error_class = "http_5xx"
    retryable = True

    def __init__(self, source: str, status: int, message: str = "") -> None:
        super().__init__(source, f"HTTP {status} {message}".strip())
        self.status = status
        if status < 500:
            self.error_class = "http_4xx"
            self.retryable = False


class RateLimited(SourceError):
    error_class = "rate_limited"
    retryable = True

    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source, message)
        self.retry_after = retry_after


class AuthExpired(SourceError):
    error_class = "auth_expired"


class SourceConfigError(SourceError):
    """Signature rejected, permission missing, unknown method: a person must fix config."""

    error_class = "config"


class ClockSkew(SourceError):
    error_class = "clock_skew"


class SchemaError(SourceError):
    """A record (or a whole response) does not have the shape the mapping expects."""

    error_class = "schema"

    def __init__(self, source: str, record: str, field: str, message: str) -> None:
        super().__init__(source, f"record {record}: field {field}: {message}")
        self.record = record
        self.field = field
        self.reason = f"field {field}: {message}"


ERROR_CLASSES = (
    "timeout",
    "unavailable",
    "http_5xx",
    "http_4xx",
    "rate_limited",
    "auth_expired",
    "config",
    "clock_skew",
    "schema",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff 1/2/4/8/16 s on retryable failures; `sleep` is injected."""

    delays: tuple[float, ...] = (1, 2, 4, 8, 16)
    sleep: Callable[[float], None] = time.sleep
    max_retry_after: float = 60.0

    def call(self, fn: Callable[[], T], on_retry: Callable[[SourceError, float], None] | None = None) -> T:
        attempt = 0
        while True:
            try:
                return fn()
            except SourceError as exc:
                if not exc.retryable or attempt >= len(self.delays):
                    raise
                delay = self.delays[attempt]
                if isinstance(exc, RateLimited) and exc.retry_after:
                    delay = max(delay, min(exc.retry_after, self.max_retry_after))
                if on_retry is not None:
                    on_retry(exc, delay)
                self.sleep(delay)
                attempt += 1
