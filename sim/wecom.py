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
import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sentinel.clock import Clock

SEND_PATH = "/cgi-bin/webhook/send"
PER_MINUTE = 20
LIMITS = {"text": 2048, "markdown": 4096, "markdown_v2": 4096}
OTHER_TYPES = ("image", "news", "file", "voice", "template_card")
MORE_INFO = "more info at https://open.work.weixin.qq.com/devtool/query?e={code}"


class WeComReceiver:
    """WeCom robot webhook on 127.0.0.1:<free port>; records every request for assertions."""

    def __init__(self, clock: Clock, keys: Iterable[str], per_minute: int = PER_MINUTE) -> None:
        self.clock = clock
        self.keys = set(keys)
        self.per_minute = per_minute
        self.received: list[dict[str, Any]] = []
        self._windows: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()
        self._hints = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> WeComReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="wecom-sim", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("WeComReceiver is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{SEND_PATH}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> WeComReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

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
        window = self._windows.setdefault(key, deque())
        while window and now - window[0] >= timedelta(seconds=60):
            window.popleft()
        window.append(now)
        if len(window) > self.per_minute:
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


class _Handler(BaseHTTPRequestHandler):
    owner: WeComReceiver
    server_version = "wecom-sim"

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlsplit(self.path)
        if parts.path != SEND_PATH:
            self._reply(404, {"errcode": 404, "errmsg": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        key = (parse_qs(parts.query).get("key") or [None])[0]
        self._reply(200, self.owner.handle(key, raw, self.client_address[0]))

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/_received":
            self._reply(200, self.owner.snapshot())
        else:
            self._reply(404, {"errcode": 404, "errmsg": "not found"})

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silenced: the default access log would print the robot key from the query string."""
