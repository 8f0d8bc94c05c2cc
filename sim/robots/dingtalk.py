"""A local DingTalk custom robot: access tokens, 加签 signatures, keywords, IP lists, 20/min and errcodes.

Answers are HTTP 200 with an errcode (reference/notify_channels.md §10.2), except while blocked:
  300001 token is not exist
  310000 ip not in whitelist / invalid timestamp (missing or > 1 h off) / sign not match /
         keywords not in content
  130101 send too fast: the 21st request in a sliding minute; the robot is then blocked for 10 minutes
         and every further request gets an HTTP 302 redirect until the block ends (third-party reports)
  460101 message too long, exceed 20000 bytes (third-party reports; the official limit is undocumented)
  40035  缺少参数 json: our choice for a body that is not a JSON object or lacks its message fields
Every request for a known token counts towards its minute, rejected ones included.
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

SEND_PATH = "/robot/send"
PER_MINUTE = 20
BLOCK = timedelta(minutes=10)
MAX_BYTES = 20000
SKEW_MS = 3600 * 1000
MORE = ", more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
TYPES = {"text": ("content",), "markdown": ("title", "text"), "link": ("title", "text", "messageUrl")}
OTHER_TYPES = ("actionCard", "feedCard")


def expected_sign(secret: str, timestamp: str) -> str:
    """Base64 of HMAC-SHA256(key=secret, msg="timestamp\\nsecret"), before URL-encoding."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class DingTalkReceiver(RobotServer):
    """DingTalk robot webhook on 127.0.0.1:<free port>; records every request for assertions."""

    name = "dingtalk-sim"
    path = SEND_PATH

    def __init__(
        self,
        clock: Clock,
        robots: Iterable[RobotSpec],
        per_minute: int = PER_MINUTE,
        block: timedelta = BLOCK,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        super().__init__(clock)
        self.robots = {robot.token: robot for robot in robots}
        self.block = block
        self.max_bytes = max_bytes
        self._window = SlidingWindow(per_minute)
        self._blocked_until: dict[str, datetime] = {}

    def not_found(self) -> Reply:
        return Reply(404, {"errcode": 404, "errmsg": "not found"})

    # -- inspection ---------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """Only the accepted requests (errcode 0), in arrival order."""
        with self._lock:
            return [r for r in self.received if r["response"].get("errcode") == 0]

    def texts(self) -> list[str]:
        """The markdown text (or text content) of every accepted message."""
        out = []
        for record in self.messages():
            body = record["body"]
            section = body[body["msgtype"]]
            out.append(section.get("text") or section.get("content") or "")
        return out

    # -- the robot ----------------------------------------------------------------------------
    def respond(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != SEND_PATH:
            return self.not_found()
        token = request.query.get("access_token") or ""
        now = self.clock.now()
        try:
            body: Any = json.loads(request.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = request.raw.decode("utf-8", errors="replace")
        with self._lock:
            reply = self._answer(token, request, body, now)
            self.received.append(
                {
                    "at": now.isoformat(),
                    "token_tail": token[-4:],
                    "signed": "sign" in request.query,
                    "body": body,
                    "response": reply.payload if reply.payload is not None else {"http": reply.status},
                }
            )
        return reply

    def _answer(self, token: str, request: Request, body: Any, now: datetime) -> Reply:
        robot = self.robots.get(token)
        if robot is None:
            return _error(300001, "token is not exist")
        until = self._blocked_until.get(token)
        if until is not None and now < until:
            return Reply(302, None, {"Location": "/robot/limited"})
        if not self._window.hit(token, now):
            self._blocked_until[token] = now + self.block
            return _error(130101, "send too fast, exceed 20 times per minute")
        if not robot.ip_allowed(request.client):
            return _error(310000, f"ip {request.client} not in whitelist{MORE}")
        if robot.secret is not None:
            problem = self._signature_problem(robot.secret, request.query, now)
            if problem:
                return _error(310000, problem + MORE)
        if not isinstance(body, dict):
            return _error(40035, "缺少参数 json")
        msgtype = body.get("msgtype")
        section = body.get(msgtype) if isinstance(msgtype, str) else None
        if msgtype not in TYPES and msgtype not in OTHER_TYPES or not isinstance(section, dict):
            return _error(40035, f"缺少参数 {msgtype or 'msgtype'}")
        texts = [section.get(f) for f in TYPES.get(msgtype, ())]
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            return _error(40035, f"缺少参数 {msgtype}")
        size = sum(len(t.encode("utf-8")) for t in texts)
        if size > self.max_bytes:
            return _error(460101, f"message too long, exceed {self.max_bytes} bytes")
        if robot.keywords and not keyword_found(robot.keywords, texts):
            return _error(310000, f"keywords not in content{MORE}")
        return Reply(200, {"errcode": 0, "errmsg": "ok"})

    @staticmethod
    def _signature_problem(secret: str, query: dict[str, str], now: datetime) -> str | None:
        timestamp, sign = query.get("timestamp", ""), query.get("sign", "")
        if not timestamp.isdigit() or abs(int(now.timestamp() * 1000) - int(timestamp)) > SKEW_MS:
            return "invalid timestamp"
        if not hmac.compare_digest(sign.encode(), expected_sign(secret, timestamp).encode()):
            return "sign not match"
        return None


def _error(code: int, message: str) -> Reply:
    return Reply(200, {"errcode": code, "errmsg": message})
