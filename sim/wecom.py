"""A local WeCom-compatible group robot: real HTTP, real keys, size limits, 20/min and errcodes.

Answers are always HTTP 200; the outcome is the body's errcode (reference/notify_channels.md §10.1):
  93000 unknown or missing key        40035 body is not a JSON object / payload field missing
  40008 unknown msgtype               40058 text > 2048 bytes, markdown(_v2) > 4096 bytes
  44004 empty content                 45009 more than 20 requests in a sliding minute per key
40035 ("invalid parameter") is our choice for malformed bodies; every request for a known key counts
towards its minute, rejected ones included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sentinel.clock import Clock
from sim.robots.base import Reply, Request, RobotServer, SlidingWindow

SEND_PATH = "/cgi-bin/webhook/send"
PER_MINUTE = 20
LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
OTHER_TYPES = ("image", "news", "file", "voice", "template_card")
MORE_INFO = "more info at https://open.work.weixin.qq.com/devtool/query?e={code}"


class WeComReceiver(RobotServer):
    """WeCom robot webhook on 127.0.0.1:<free port>; records every request for assertions."""

    name = "wecom-sim"
    path = SEND_PATH

    def __init__(self, clock: Clock, keys: Iterable[str], per_minute: int = PER_MINUTE) -> None:
        super().__init__(clock)
        self.keys = set(keys)
        self.per_minute = per_minute
        self._window = SlidingWindow(per_minute)
        self._hints = 0

    def respond(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != SEND_PATH:
            return self.not_found()
        return Reply(200, self.handle(request.query.get("key"), request.raw, request.client))

    def not_found(self) -> Reply:
        return Reply(404, {"errcode": 404, "errmsg": "not found"})

    # -- inspection ---------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """Only the accepted requests (errcode 0), in arrival order."""
        with self._lock:
            return [r for r in self.received if r["response"]["errcode"] == 0]

    def contents(self) -> list[str]:
        """The content text of every accepted message."""
        out = []
        for record in self.messages():
            body = record["body"]
            out.append(body[body["msgtype"]].get("content", ""))
        return out

    # -- the robot ----------------------------------------------------------------------------
    def handle(self, key: str | None, raw: bytes, client: str) -> dict[str, Any]:
        """Decide the answer to one POST and record it."""
        now = self.clock.now()
        with self._lock:
            body: Any
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = raw.decode("utf-8", errors="replace")
            response = self._answer(key, body, now, client)
            self.received.append(
                {
                    "at": now.isoformat(),
                    "key_tail": (key or "")[-4:],
                    "body": body,
                    "response": response,
                }
            )
            return response

    def _answer(self, key: str | None, body: Any, now: datetime, client: str) -> dict[str, Any]:
        if not key or key not in self.keys:
            return self._error(93000, "invalid webhook url", client)
        if not self._window.hit(key, now):
            return self._error(45009, "api freq out of limit", client)
        if not isinstance(body, dict):
            return self._error(40035, "invalid parameter, request body is not a JSON object", client)
        msgtype = body.get("msgtype")
        if msgtype not in LIMITS and msgtype not in OTHER_TYPES:
            return self._error(40008, "invalid message type", client)
        section = body.get(msgtype)
        if not isinstance(section, dict):
            return self._error(40035, f"invalid parameter, missing {msgtype} object", client)
        if msgtype in LIMITS:
            content = section.get("content")
            if not isinstance(content, str) or not content.strip():
                return self._error(44004, "empty content", client)
            limit = LIMITS[msgtype]
            if len(content.encode("utf-8")) > limit:
                return self._error(40058, f"{msgtype}.content exceed max length {limit}", client)
        return {"errcode": 0, "errmsg": "ok"}

    def _error(self, code: int, message: str, client: str) -> dict[str, Any]:
        self._hints += 1
        hint = f"[{int(self.clock.now().timestamp()) * 10**9 + self._hints}]"
        return {
            "errcode": code,
            "errmsg": f"{message}, hint: {hint}, from ip: {client}, {MORE_INFO.format(code=code)}",
        }
