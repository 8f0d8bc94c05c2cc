"""The notifier base: class-level limits, splitting, throttling before I/O, results instead of raises."""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import ClassVar

import requests
from pydantic import SecretStr

from alerts.model import Alert
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


# A receiver's body code -> (result code, retryable, retry_after seconds or None).
Verdict = tuple[str, bool, float | None]


def unix_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (float timestamps can be off by one)."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def mask(secret: str) -> str:
    """Show at most the first and last 4 characters of a secret."""
    if len(secret) <= 8:
        return "****"
    return f"{secret[:4]}…{secret[-4:]}"


def as_secret(value: SecretStr | str | None) -> SecretStr | None:
    """A SecretStr, or None for a missing or empty value (e.g. an unset `${VAR:-}`)."""
    if value is None:
        return None
    value = value if isinstance(value, SecretStr) else SecretStr(value)
    return value if value.get_secret_value() else None


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
    per_second: ClassVar[int | None] = None  # a second, shorter limit where the receiver has one
    window: ClassVar[timedelta] = timedelta(seconds=60)

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._sent: deque[datetime] = deque()

    # -- to implement -------------------------------------------------------------------------
    def _send_part(self, part: str) -> SendResult:
        raise NotImplementedError

    def _send_structured(self, part: str, alerts: tuple[Alert, ...]) -> SendResult:
        """Send one part knowing the structured alerts behind it; text receivers ignore them."""
        return self._send_part(part)

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

    def limits(self) -> list[tuple[int, timedelta]]:
        """Documented receiver limits as (count, span); we stay one below each."""
        limits = [(self.per_minute, self.window)]
        if self.per_second:
            limits.append((self.per_second, timedelta(seconds=1)))
        return limits

    def throttle_wait(self) -> float:
        """Seconds until every sliding window admits one more send (0 = now)."""
        now = self.clock.now()
        longest = max(span for _, span in self.limits())
        while self._sent and now - self._sent[0] >= longest:
            self._sent.popleft()
        wait = 0.0
        for limit, span in self.limits():
            allowed = max(1, limit - 1)
            recent = [t for t in self._sent if now - t < span]
            if len(recent) >= allowed:
                wait = max(wait, (recent[-allowed] + span - now).total_seconds(), 0.001)
        return wait

    def _throttled(self, wait: float) -> SendResult:
        spans = ", ".join(f"{max(1, n - 1)}/{int(s.total_seconds())}s" for n, s in self.limits())
        detail = f"local limit {spans} reached; retry in {wait:.0f}s"
        return SendResult(False, True, THROTTLED, detail, retry_after=wait)

    def send(self, body: str, skip: int = 0, alerts: Sequence[Alert] = ()) -> list[SendResult]:
        """Send the parts of `body` after the first `skip`; stop at the first failure. Never raises."""
        parts = self.split(body)
        if not parts:
            return [SendResult(False, False, PAYLOAD, "empty message body")]
        results: list[SendResult] = []
        for number in range(skip, len(parts)):
            result = self.send_part(parts, number, alerts)
            results.append(result)
            if not result.ok:
                break
        return results

    def send_part(self, parts: Sequence[str], number: int, alerts: Sequence[Alert] = ()) -> SendResult:
        """Send `parts[number]` (0-based) unless the local window is full; `alerts` are the structured
        alerts behind the whole message (receivers that take data, like the webhook, use them)."""
        wait = self.throttle_wait()
        if wait:
            return self._throttled(wait)
        part = parts[number]
        self._sent.append(self.clock.now())
        result = self._guarded_send(part, tuple(alerts))
        log.info(
            "%s part %d/%d (%d bytes): %s %s",
            self.target,
            number + 1,
            len(parts),
            len(part.encode("utf-8")),
            result.code,
            result.detail,
        )
        return result

    def _guarded_send(self, part: str, alerts: tuple[Alert, ...] = ()) -> SendResult:
        try:
            result = self._send_structured(part, alerts) if alerts else self._send_part(part)
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


# -- shared by the HTTP notifiers ---------------------------------------------------------------
def http_post(
    session: requests.Session, url: str, timeout: float, **kwargs
) -> requests.Response | SendResult:
    """POST without following redirects; transport failures become NETWORK results (redacted later)."""
    try:
        return session.post(url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.Timeout:
        return SendResult(False, True, NETWORK, f"timeout after {timeout}s")
    except requests.RequestException as exc:
        # The exception text can carry the full URL with its secret; _guarded_send masks it.
        return SendResult(False, True, NETWORK, f"{type(exc).__name__}: {exc}")


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """An HTTP Retry-After header (delta seconds or an HTTP date) as seconds from `now`."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


def classify_robot_answer(
    service: str,
    status: int,
    text: str,
    codes: Mapping[int, Verdict],
    code_keys: tuple[str, ...],
    msg_keys: tuple[str, ...],
    http_rate_backoff: float,
) -> SendResult:
    """Chat robots answer HTTP 200 with a body code; success only when that code is 0."""
    if status == 429:
        return SendResult(False, True, RATE_LIMITED, "HTTP 429", text[:500], http_rate_backoff)
    if status >= 500:
        return SendResult(False, True, TRANSIENT, f"HTTP {status}", text[:500])
    if status != 200:
        return SendResult(False, False, CONFIG, f"HTTP {status}", text[:500])
    try:
        answer = json.loads(text)
        code = int(next(answer[k] for k in code_keys if k in answer))
    except (ValueError, TypeError, StopIteration):
        return SendResult(False, True, TRANSIENT, f"answer is not {service} JSON", text[:500])
    message = str(next((answer[k] for k in msg_keys if k in answer), ""))
    if code == 0:
        return SendResult(True, False, OK, message or "ok", text)
    result_code, retryable, retry_after = codes.get(code, (PAYLOAD, False, None))
    return SendResult(False, retryable, result_code, f"{code_keys[0]} {code}: {message}", text, retry_after)


class RobotNotifier(Notifier):
    """A chat robot reached by URL + token (+ an optional signing secret): wiring and masking in one place."""

    token_label: ClassVar[str] = "token"  # what the platform calls the token (repr only)

    def __init__(
        self,
        url: str,
        token: SecretStr | str,
        clock: Clock,
        secret: SecretStr | str | None = None,
        session: requests.Session | None = None,
        timeout: float = 10,
        mentions: Iterable[str] = (),
    ) -> None:
        super().__init__(clock)
        self.url = url.split("?", 1)[0]  # credentials in a pasted URL are dropped, never re-sent as is
        self._token = as_secret(token) or SecretStr("")
        self._secret = as_secret(secret)
        for value in self._secrets():
            protect(value)
        self.session = session or requests.Session()
        self.timeout = timeout
        self.mentions = tuple(mentions)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, {self.token_label}={mask(self._token.get_secret_value())!r})"

    @property
    def target(self) -> str:
        return f"{self.kind}[{mask(self._token.get_secret_value())}]"

    def _secrets(self) -> tuple[str, ...]:
        values = [self._token.get_secret_value()]
        if self._secret is not None:
            values.append(self._secret.get_secret_value())
        return tuple(v for v in values if v)
