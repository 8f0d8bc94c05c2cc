"""WeCom (企业微信) group robot: markdown messages, 4096-byte parts, 20/min, body errcode checked."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import ClassVar

import requests
from pydantic import SecretStr

from alerts.notifiers.base import (
    CONFIG,
    NETWORK,
    OK,
    PAYLOAD,
    RATE_LIMITED,
    TRANSIENT,
    Notifier,
    SendResult,
    mask,
    protect,
)
from sentinel.clock import Clock

# errcode -> (result code, retryable); anything else is a permanent rejection of this message.
ERRCODES: dict[int, tuple[str, bool]] = {
    45009: (RATE_LIMITED, True),  # api freq out of limit
    93000: (CONFIG, False),  # invalid webhook url: key wrong, robot deleted or removed
    40058: (PAYLOAD, False),  # content exceeds the size limit
    40008: (PAYLOAD, False),  # invalid message type
    44004: (PAYLOAD, False),  # empty content
    40035: (PAYLOAD, False),  # invalid parameter (e.g. a body that is not JSON)
    -1: (TRANSIENT, True),  # system busy
}
RATE_LIMIT_BACKOFF = 60.0  # seconds: the receiver's window is one minute


class WeComNotifier(Notifier):
    """Posts markdown to one WeCom robot; the key is masked everywhere it could be shown."""

    kind: ClassVar[str] = "wecom"
    max_bytes: ClassVar[int] = 4096
    per_minute: ClassVar[int] = 20

    def __init__(
        self,
        url: str,
        key: SecretStr | str,
        clock: Clock,
        session: requests.Session | None = None,
        timeout: float = 10,
        mentions: Iterable[str] = (),
    ) -> None:
        super().__init__(clock)
        self.url = url.split("?", 1)[0]
        self._key = key if isinstance(key, SecretStr) else SecretStr(key)
        protect(self._key.get_secret_value())
        self.session = session or requests.Session()
        self.timeout = timeout
        self.mentions = tuple(mentions)

    def __repr__(self) -> str:
        return f"WeComNotifier(url={self.url!r}, key={mask(self._key.get_secret_value())!r})"

    @property
    def target(self) -> str:
        return f"wecom[{mask(self._key.get_secret_value())}]"

    def _secrets(self) -> tuple[str, ...]:
        return (self._key.get_secret_value(),)

    def split(self, body: str) -> list[str]:
        """Parts of the body (with any missing route mentions appended), each <= 4096 bytes."""
        missing = [m for m in self.mentions if f"<@{m}>" not in body]
        if missing and body.strip():
            body = body.rstrip("\n") + "\n" + " ".join(f"<@{m}>" for m in missing)
        return super().split(body)

    def _send_part(self, part: str) -> SendResult:
        payload = {"msgtype": "markdown", "markdown": {"content": part}}
        try:
            response = self.session.post(
                self.url,
                params={"key": self._key.get_secret_value()},
                json=payload,
                timeout=self.timeout,
            )
        except requests.Timeout:
            return SendResult(False, True, NETWORK, f"timeout after {self.timeout}s")
        except requests.RequestException as exc:
            # The exception text can carry the full URL with the key; base.redact masks it.
            return SendResult(False, True, NETWORK, f"{type(exc).__name__}: {exc}")
        return self._classify(response.status_code, response.text)

    @staticmethod
    def _classify(status: int, text: str) -> SendResult:
        """Success only when the body says errcode 0; HTTP 200 alone proves nothing."""
        if status == 429:
            return SendResult(False, True, RATE_LIMITED, "HTTP 429", text, RATE_LIMIT_BACKOFF)
        if status >= 500:
            return SendResult(False, True, TRANSIENT, f"HTTP {status}", text)
        if status != 200:
            return SendResult(False, False, CONFIG, f"HTTP {status}", text)
        try:
            answer = json.loads(text)
            errcode = int(answer["errcode"])
        except (ValueError, KeyError, TypeError):
            return SendResult(False, True, TRANSIENT, "answer is not WeCom JSON", text[:500])
        errmsg = str(answer.get("errmsg", ""))
        if errcode == 0:
            return SendResult(True, False, OK, errmsg or "ok", text)
        code, retryable = ERRCODES.get(errcode, (PAYLOAD, False))
        retry_after = RATE_LIMIT_BACKOFF if code == RATE_LIMITED else None
        return SendResult(False, retryable, code, f"errcode {errcode}: {errmsg}", text, retry_after)
