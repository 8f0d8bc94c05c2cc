"""Feishu/Lark (飞书) custom bot: signed rich-text (post) messages, 20 KB bodies, 100/min and 5/s."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any, ClassVar

from pydantic import SecretStr

from alerts.notifiers.base import (
    CONFIG,
    PAYLOAD,
    RATE_LIMITED,
    RobotNotifier,
    SendResult,
    Verdict,
    classify_robot_answer,
    http_post,
    split_utf8,
    unix_ms,
)
from alerts.notifiers.markup import BOLD, HEADING, LINK, MENTION, QUOTE, strip_fonts, title_of, with_mentions
from sentinel.clock import Clock

BODY_LIMIT = 20 * 1024  # "request body <= 20 KB", measured on the UTF-8 JSON we send
RATE_LIMIT_BACKOFF = 60.0  # 11232 / HTTP 429: at most the minute window
# code -> verdict; anything else is a permanent rejection of this message.
CODES: dict[int, Verdict] = {
    11232: (RATE_LIMITED, True, RATE_LIMIT_BACKOFF),  # frequency limited
    9499: (PAYLOAD, False, None),  # Bad Request: malformed JSON, wrong structure, body > 20 KB
    19021: (CONFIG, False, None),  # sign match fail or timestamp not within one hour
    19022: (CONFIG, False, None),  # Ip Not Allowed
    19024: (CONFIG, False, None),  # Key Words Not Found
    19007: (CONFIG, False, None),  # Bot Not Enabled
    19001: (CONFIG, False, None),  # param invalid: incoming webhook access token invalid
}
_NODE = re.compile(f"{LINK.pattern}|{MENTION.pattern}")


def sign(secret: str, timestamp_s: str) -> str:
    """Base64(HMAC-SHA256(key="timestamp\\nsecret", msg="")): the string is the key, the message is empty."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def post_content(part: str) -> dict[str, Any]:
    """WeCom markdown -> a Feishu `post`: heading as title, one paragraph per line, links and @s as nodes."""
    lines = strip_fonts(part).split("\n")
    title = ""
    if lines and HEADING.match(lines[0]):
        title = title_of(lines.pop(0))
    paragraphs: list[list[dict[str, str]]] = []
    for line in lines:
        line = QUOTE.sub("", HEADING.sub("", line))
        if not line.strip():
            continue
        nodes: list[dict[str, str]] = []
        pos = 0
        for m in _NODE.finditer(line):
            if m.start() > pos:
                nodes.append({"tag": "text", "text": BOLD.sub(r"\1", line[pos : m.start()])})
            if m.group(1) is not None:
                nodes.append({"tag": "a", "text": m.group(1), "href": m.group(2)})
            else:
                nodes.append({"tag": "at", "user_id": m.group(3).lstrip("@")})
            pos = m.end()
        if pos < len(line):
            nodes.append({"tag": "text", "text": BOLD.sub(r"\1", line[pos:])})
        paragraphs.append(nodes)
    return {"post": {"zh_cn": {"title": title, "content": paragraphs}}}


class FeishuNotifier(RobotNotifier):
    """Posts rich text to one Feishu/Lark bot (`url` is the hook base, the token its last segment)."""

    kind: ClassVar[str] = "feishu"
    max_bytes: ClassVar[int] = 18_000  # markdown per part; the JSON body must also fit BODY_LIMIT
    per_minute: ClassVar[int] = 100
    per_second: ClassVar[int | None] = 5

    def __init__(self, url: str, token: SecretStr | str, clock: Clock, **options) -> None:
        super().__init__(url, token, clock, **options)
        self.url = self.url.rstrip("/")  # the token is appended as the last path segment

    def body(self, part: str, timestamp_s: str | None = None) -> bytes:
        """The exact UTF-8 JSON posted for one part (signed when the bot has a secret)."""
        payload: dict[str, Any] = {}
        if self._secret is not None:
            timestamp_s = timestamp_s or str(unix_ms(self.clock.now()) // 1000)
            payload.update(timestamp=timestamp_s, sign=sign(self._secret.get_secret_value(), timestamp_s))
        payload.update(msg_type="post", content=post_content(part))
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def split(self, body: str) -> list[str]:
        """Line-boundary parts whose JSON body fits 20 KB (shrinking the budget when markup grows it)."""
        body = with_mentions(body, self.mentions)
        budget = self.max_bytes
        while True:
            parts = split_utf8(body, budget)
            if budget <= 1024 or all(len(self.body(p, "0" * 10)) <= BODY_LIMIT for p in parts):
                return parts
            budget = budget * 4 // 5

    def _send_part(self, part: str) -> SendResult:
        data = self.body(part)
        if len(data) > BODY_LIMIT:
            return SendResult(False, False, PAYLOAD, f"body is {len(data)} bytes, over {BODY_LIMIT}")
        headers = {"Content-Type": "application/json; charset=utf-8"}
        url = f"{self.url}/{self._token.get_secret_value()}"
        response = http_post(self.session, url, self.timeout, data=data, headers=headers)
        if isinstance(response, SendResult):
            return response
        return self._classify(response.status_code, response.text)

    @staticmethod
    def _classify(status: int, text: str) -> SendResult:
        """Success only when `code` (or the legacy `StatusCode`) is 0; HTTP 429 counts as 11232."""
        return classify_robot_answer(
            "Feishu",
            status,
            text,
            CODES,
            ("code", "StatusCode"),
            ("msg", "StatusMessage"),
            RATE_LIMIT_BACKOFF,
        )
