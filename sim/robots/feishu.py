"""A local Feishu/Lark custom bot: hook tokens, body signatures, keywords, IP lists, 100/min + 5/s, codes.

Answers are HTTP 200 with a `code` (reference/notify_channels.md §10.3):
  19001 param invalid: incoming webhook access token invalid (unknown token; seen in client reports)
  11232 frequency limited: over 100 requests in a sliding minute or 5 in a sliding second per bot
  9499  Bad Request: body over 20 KB, not a JSON object, unknown msg_type or wrong message structure
  19022 Ip Not Allowed            19021 sign match fail or timestamp is not within one hour ...
  19024 Key Words Not Found (keywords are looked for in text and title values, never in link targets)
Success carries both the new and the legacy keys. Every request for a known bot counts towards its limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sentinel.clock import Clock
from sim.robots.base import Reply, Request, RobotServer, RobotSpec, SlidingWindow, keyword_found

HOOK_PATH = "/open-apis/bot/v2/hook"
PER_MINUTE = 100
PER_SECOND = 5
MAX_BYTES = 20 * 1024
SKEW_S = 3600
SUCCESS = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
SIGN_FAIL = "sign match fail or timestamp is not within one hour from current time"
FREQUENCY = "frequency limited psm[lark.oapi.app_platform_runtime]appID[-1]"
NODE_FIELDS = {"text": ("text",), "a": ("text", "href"), "at": ("user_id",), "img": ("image_key",)}


def expected_sign(secret: str, timestamp: str) -> str:
    """Base64 of HMAC-SHA256 keyed with "timestamp\\nsecret" over an empty message."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def message_texts(body: dict[str, Any]) -> list[str] | None:
    """The text and title values of a message (for keywords), or None when its structure is wrong."""
    msg_type, content = body.get("msg_type"), body.get("content")
    if msg_type == "interactive":
        card = body.get("card")
        return _strings(card) if isinstance(card, dict) else None
    if not isinstance(content, dict):
        return None
    if msg_type == "text":
        text = content.get("text")
        return [text] if isinstance(text, str) and text.strip() else None
    if msg_type == "image":
        return [] if isinstance(content.get("image_key"), str) else None
    if msg_type == "share_chat":
        return [] if isinstance(content.get("share_chat_id"), str) else None
    if msg_type == "post":
        return _post_texts(content.get("post"))
    return None


def _post_texts(post: Any) -> list[str] | None:
    if not isinstance(post, dict) or not post:
        return None
    texts = []
    for locale in post.values():
        if not isinstance(locale, dict) or not isinstance(locale.get("content"), list):
            return None
        texts.append(str(locale.get("title", "")))
        for paragraph in locale["content"]:
            if not isinstance(paragraph, list):
                return None
            for node in paragraph:
                fields = NODE_FIELDS.get(node.get("tag")) if isinstance(node, dict) else None
                if fields is None or any(not isinstance(node.get(f), str) for f in fields):
                    return None
                if node["tag"] in ("text", "a"):
                    texts.append(node["text"])
    return texts


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, v in node.items() if key not in ("url", "href") for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


class FeishuReceiver(RobotServer):
    """Feishu custom-bot webhook on 127.0.0.1:<free port>; `url` is the hook base, POST to url/<token>."""

    name = "feishu-sim"
    path = HOOK_PATH

    def __init__(
        self,
        clock: Clock,
        robots: Iterable[RobotSpec],
        per_minute: int = PER_MINUTE,
        per_second: int = PER_SECOND,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        super().__init__(clock)
        self.robots = {robot.token: robot for robot in robots}
        self.max_bytes = max_bytes
        self._minute = SlidingWindow(per_minute)
        self._second = SlidingWindow(per_second, timedelta(seconds=1))

    def not_found(self) -> Reply:
        return Reply(404, {"code": 404, "data": {}, "msg": "404 page not found"})

    # -- inspection ---------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """Only the accepted requests (code 0), in arrival order."""
        with self._lock:
            return [r for r in self.received if r["response"].get("code") == 0]

    def posts(self) -> list[dict[str, Any]]:
        """The zh_cn post (title, content) of every accepted post message."""
        return [
            m["body"]["content"]["post"]["zh_cn"] for m in self.messages() if m["body"]["msg_type"] == "post"
        ]

    # -- the bot ------------------------------------------------------------------------------
    def respond(self, request: Request) -> Reply:
        prefix = HOOK_PATH + "/"
        if request.method != "POST" or not request.path.startswith(prefix):
            return self.not_found()
        token = request.path[len(prefix) :]
        now = self.clock.now()
        try:
            body: Any = json.loads(request.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = request.raw.decode("utf-8", errors="replace")
        with self._lock:
            answer = self._answer(token, request, body, now)
            self.received.append(
                {
                    "at": now.isoformat(),
                    "token_tail": token[-4:],
                    "bytes": len(request.raw),
                    "body": body,
                    "response": answer,
                }
            )
        return Reply(200, answer)

    def _answer(self, token: str, request: Request, body: Any, now: datetime) -> dict[str, Any]:
        robot = self.robots.get(token)
        if robot is None:
            return _error(19001, "param invalid: incoming webhook access token invalid")
        within_minute, within_second = self._minute.hit(token, now), self._second.hit(token, now)
        if not (within_minute and within_second):
            return _error(11232, FREQUENCY)
        if len(request.raw) > self.max_bytes or not isinstance(body, dict):
            return _error(9499, "Bad Request")
        if not robot.ip_allowed(request.client):
            return _error(19022, "Ip Not Allowed")
        if robot.secret is not None and not _signed(robot.secret, body, now):
            return _error(19021, SIGN_FAIL)
        texts = message_texts(body)
        if texts is None:
            return _error(9499, "Bad Request")
        if robot.keywords and not keyword_found(robot.keywords, texts):
            return _error(19024, "Key Words Not Found")
        return dict(SUCCESS)


def _signed(secret: str, body: dict[str, Any], now: datetime) -> bool:
    timestamp, sign = str(body.get("timestamp", "")), body.get("sign")
    if not timestamp.isdigit() or abs(int(now.timestamp()) - int(timestamp)) > SKEW_S:
        return False
    return isinstance(sign, str) and hmac.compare_digest(
        sign.encode(), expected_sign(secret, timestamp).encode()
    )


def _error(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "data": {}, "msg": message}
