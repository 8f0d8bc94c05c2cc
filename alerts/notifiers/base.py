"""The notifier base: class-level limits, splitting, throttling before I/O, results instead of raises."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from sentinel.clock import Clock

log = logging.getLogger("alerts.notifiers")

# Result codes shared by every notifier (and stored in the outbox as the failure reason).
OK = "ok"
THROTTLED = "throttled"  # our own window is full: nothing was sent
RATE_LIMITED = "rate_limited"  # the receiver said "too many"
CONFIG = "config"  # key/URL wrong or robot deleted: a person must fix the route
PAYLOAD = "payload"  # this message can never be accepted as is
TRANSIENT = "transient"  # receiver busy or 5xx: retry with backoff
NETWORK = "network"  # timeout, refused, reset: retry with backoff
ERROR = "error"  # an unexpected bug in the notifier itself


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of sending one part of a message."""

    ok: bool
    retryable: bool
    code: str
    detail: str
    response_text: str = ""
    retry_after: float | None = None  # seconds until a retry may succeed (rate limits)


def mask(secret: str) -> str:
    """Show at most the first and last 4 characters of a secret."""
    if len(secret) <= 8:
        return "****"
    return f"{secret[:4]}…{secret[-4:]}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in `text` by its masked form."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, mask(secret))
    return text


def split_utf8(body: str, max_bytes: int) -> list[str]:
    """Split at line boundaries into parts of at most `max_bytes` UTF-8 bytes; hard-split huge lines."""
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for line in body.split("\n"):
        for piece in _hard_split(line, max_bytes):
            cost = len(piece.encode("utf-8")) + (1 if current else 0)
            if current and size + cost > max_bytes:
                parts.append("\n".join(current))
                current, size = [], 0
                cost -= 1
            current.append(piece)
            size += cost
    if current:
        parts.append("\n".join(current))
    return [p for p in parts if p.strip()]


def _hard_split(line: str, max_bytes: int) -> list[str]:
    if len(line.encode("utf-8")) <= max_bytes:
        return [line]
    pieces, current, size = [], [], 0
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > max_bytes:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        pieces.append("".join(current))
    return pieces


class _RedactFilter(logging.Filter):
    """Masks registered secrets in records of HTTP client loggers (urllib3 logs full URLs at DEBUG)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, tuple(self.secrets))
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactFilter()
HTTP_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "requests")


def protect(secret: str) -> None:
    """Register a secret so HTTP client libraries never log it in clear."""
    if not secret:
        return
    _FILTER.secrets.add(secret)
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


class Notifier:
    """One chat robot / endpoint; subclasses implement `_send_part` and set the class limits."""

    kind: ClassVar[str] = "notifier"
    max_bytes: ClassVar[int] = 4096  # per message part, UTF-8 bytes
    per_minute: ClassVar[int] = 20  # documented receiver limit; we throttle one below it
    window: ClassVar[timedelta] = timedelta(seconds=60)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._sent: deque[datetime] = deque()

    # -- to implement -------------------------------------------------------------------------
    def _send_part(self, part: str) -> SendResult:
        raise NotImplementedError

    def _secrets(self) -> tuple[str, ...]:
        """Strings that must never leave the notifier unmasked."""
        return ()

    @property
    def target(self) -> str:
        """A loggable, masked name of the receiver."""
        return self.kind

    # -- shared behaviour ---------------------------------------------------------------------
    def split(self, body: str) -> list[str]:
        """The parts `send` would post for this body, in order."""
        return split_utf8(body, self.max_bytes)

    def throttle_wait(self) -> float:
        """Seconds until the sliding window admits one more send (0 = now)."""
        now = self.clock.now()
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        if len(self._sent) < max(1, self.per_minute - 1):
            return 0.0
        return max(0.001, (self._sent[0] + self.window - now).total_seconds())

    def send(self, body: str, skip: int = 0) -> list[SendResult]:
        """Send the parts of `body` after the first `skip`; stop at the first failure. Never raises."""
        parts = self.split(body)
        if not parts:
            return [SendResult(False, False, PAYLOAD, "empty message body")]
        results: list[SendResult] = []
        for number, part in enumerate(parts[skip:], start=skip + 1):
            wait = self.throttle_wait()
            if wait:
                detail = f"local limit {self.per_minute - 1}/min reached; retry in {wait:.0f}s"
                results.append(SendResult(False, True, THROTTLED, detail, retry_after=wait))
                break
            self._sent.append(self.clock.now())
            result = self._guarded_send(part)
            log.info(
                "%s part %d/%d (%d bytes): %s %s",
                self.target,
                number,
                len(parts),
                len(part.encode("utf-8")),
                result.code,
                result.detail,
            )
            results.append(result)
            if not result.ok:
                break
        return results

    def _guarded_send(self, part: str) -> SendResult:
        try:
            result = self._send_part(part)
        except Exception as exc:  # a notifier bug must become a result, never an exception
            detail = redact(f"{type(exc).__name__}: {exc}", self._secrets())
            log.error("%s: unexpected notifier failure: %s", self.target, detail)
            return SendResult(False, True, ERROR, detail)
        secrets = self._secrets()
        return SendResult(
            result.ok,
            result.retryable,
            result.code,
            redact(result.detail, secrets),
            redact(result.response_text, secrets),
            result.retry_after,
        )
