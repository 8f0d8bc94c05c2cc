"""WeCom (企业微信) group robot: markdown messages, 4096-byte parts, 20/min, body errcode checked."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr

from alerts.notifiers.base import (
    CONFIG,
    PAYLOAD,
    RATE_LIMITED,
    TRANSIENT,
    RobotNotifier,
    SendResult,
    Verdict,
    classify_robot_answer,
    http_post,
)
from alerts.notifiers.markup import with_mentions
from sentinel.clock import Clock

RATE_LIMIT_BACKOFF = 60.0  # seconds: the receiver's window is one minute
# errcode -> verdict; anything else is a permanent rejection of this message.
ERRCODES: dict[int, Verdict] = {
    45009: (RATE_LIMITED, True, RATE_LIMIT_BACKOFF),  # api freq out of limit
    93000: (CONFIG, False, None),  # invalid webhook url: key wrong, robot deleted or removed
    40058: (PAYLOAD, False, None),  # content exceeds the size limit
    40008: (PAYLOAD, False, None),  # invalid message type
    44004: (PAYLOAD, False, None),  # empty content
    40035: (PAYLOAD, False, None),  # invalid parameter (e.g. a body that is not JSON)
    -1: (TRANSIENT, True, None),  # system busy
}


class WeComNotifier(RobotNotifier):
    """Posts markdown to one WeCom robot; the key is masked everywhere it could be shown."""

    kind: ClassVar[str] = "wecom"
    max_bytes: ClassVar[int] = 4096
    per_minute: ClassVar[int] = 20
    token_label: ClassVar[str] = "key"

    def __init__(self, url: str, key: SecretStr | str, clock: Clock, **options) -> None:
        super().__init__(url, key, clock, **options)

    def split(self, body: str) -> list[str]:
        """Parts of the body (with any missing route mentions appended), each <= 4096 bytes."""
        return super().split(with_mentions(body, self.mentions))

    def _send_part(self, part: str) -> SendResult:
        payload = {"msgtype": "markdown", "markdown": {"content": part}}
        params = {"key": self._token.get_secret_value()}
        response = http_post(self.session, self.url, self.timeout, params=params, json=payload)
        if isinstance(response, SendResult):
            return response
        return self._classify(response.status_code, response.text)

    @staticmethod
    def _classify(status: int, text: str) -> SendResult:
        """Success only when the body says errcode 0; HTTP 200 alone proves nothing."""
        return classify_robot_answer(
            "WeCom", status, text, ERRCODES, ("errcode",), ("errmsg",), RATE_LIMIT_BACKOFF
        )
