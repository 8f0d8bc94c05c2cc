"""DingTalk (钉钉) custom robot: signed markdown messages, 20/min, body errcode checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, ClassVar

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
    unix_ms,
)
from alerts.notifiers.markup import MENTION, strip_fonts, title_of, with_mentions

BLOCK_BACKOFF = 600.0  # seconds: over 20/min the robot is blocked for 10 minutes
QUOTA_BACKOFF = 3600.0  # 90030: the call quota of a period is used up (period unverified)
# errcode -> verdict; anything else is a permanent rejection of this message.
ERRCODES: dict[int, Verdict] = {
    130101: (RATE_LIMITED, True, BLOCK_BACKOFF),  # send too fast, exceed 20 times per minute
    90030: (RATE_LIMITED, True, QUOTA_BACKOFF),  # webhook over limit
    310000: (CONFIG, False, None),  # sign not match, invalid timestamp, keywords, IP not allowed
    300001: (CONFIG, False, None),  # token is not exist / param error
    300005: (CONFIG, False, None),  # token invalid (seen in client code)
    460101: (PAYLOAD, False, None),  # message too long
    -1: (TRANSIENT, True, None),  # system busy
}


def sign(secret: str, timestamp_ms: str) -> str:
    """Base64(HMAC-SHA256(key=secret, msg="timestamp\\nsecret")); the HTTP client URL-encodes it."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class DingTalkNotifier(RobotNotifier):
    """Posts markdown to one DingTalk robot; token and signing secret are masked everywhere."""

    kind: ClassVar[str] = "dingtalk"
    # The hard limit is not documented (third parties report 460101 over 20000 bytes); alerts stay short.
    max_bytes: ClassVar[int] = 4096
    per_minute: ClassVar[int] = 20
    token_label: ClassVar[str] = "access_token"

    def split(self, body: str) -> list[str]:
        """Parts of the body (with any missing route mentions appended), each <= max_bytes."""
        return super().split(with_mentions(body, self.mentions))

    def payload(self, part: str) -> dict[str, Any]:
        """The markdown message for one part: fonts stripped, `<@id>` turned into DingTalk @-mentions."""
        mobiles, users, everyone = [], [], False

        def at(match) -> str:
            nonlocal everyone
            who = match.group(1).lstrip("@")
            if who == "all":
                everyone = True
                return "@所有人"
            (mobiles if who.isdigit() else users).append(who)
            return f"@{who}"  # DingTalk only notifies people whose @mobile/@id is also in the text

        text = MENTION.sub(at, strip_fonts(part))
        return {
            "msgtype": "markdown",
            "markdown": {"title": title_of(part, 64) or "履约告警", "text": text},
            "at": {"atMobiles": mobiles, "atUserIds": users, "isAtAll": everyone},
        }

    def _params(self) -> dict[str, str]:
        params = {"access_token": self._token.get_secret_value()}
        if self._secret is not None:
            timestamp = str(unix_ms(self.clock.now()))
            params.update(timestamp=timestamp, sign=sign(self._secret.get_secret_value(), timestamp))
        return params

    def _send_part(self, part: str) -> SendResult:
        response = http_post(
            self.session, self.url, self.timeout, params=self._params(), json=self.payload(part)
        )
        if isinstance(response, SendResult):
            return response
        return self._classify(response.status_code, response.text)

    @staticmethod
    def _classify(status: int, text: str) -> SendResult:
        """Success only when the body says errcode 0; a blocked robot may answer with a redirect."""
        if status in (301, 302, 303, 307):
            return SendResult(False, True, RATE_LIMITED, f"HTTP {status}: robot blocked", "", BLOCK_BACKOFF)
        return classify_robot_answer(
            "DingTalk", status, text, ERRCODES, ("errcode",), ("errmsg",), BLOCK_BACKOFF
        )
