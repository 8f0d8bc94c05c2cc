"""What every local robot shares: a threaded HTTP server on port 0, sliding windows on the injected clock."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from sentinel.clock import Clock

RECEIVED_PATH = "/_received"


@dataclass(frozen=True)
class RobotSpec:
    """One robot's security settings, as configured in the chat group."""

    token: str
    secret: str | None = None  # signing secret; None = signature not enabled
    keywords: tuple[str, ...] = ()  # at least one must appear in the message text
    allowed_ips: tuple[str, ...] = ()  # addresses or networks; empty = any

    def ip_allowed(self, client: str) -> bool:
        if not self.allowed_ips:
            return True
        address = ipaddress.ip_address(client)
        return any(address in ipaddress.ip_network(net, strict=False) for net in self.allowed_ips)


class SlidingWindow:
    """Requests per key in the last `span` of the injected clock; every request counts."""

    def __init__(self, limit: int, span: timedelta = timedelta(seconds=60)) -> None:
        self.limit = limit
        self.span = span
        self._hits: dict[str, deque[datetime]] = {}

    def hit(self, key: str, now: datetime) -> bool:
        """Count one request; True while the key is within its limit."""
        window = self._hits.setdefault(key, deque())
        while window and now - window[0] >= self.span:
            window.popleft()
        window.append(now)
        return len(window) <= self.limit

    def free_in(self, key: str, now: datetime) -> float:
        """Seconds until the oldest request of the key leaves the window."""
        window = self._hits.get(key)
        if not window:
            return 0.0
        return max(0.0, (window[0] + self.span - now).total_seconds())


@dataclass
class Request:
    """One HTTP request as a robot sees it."""

    method: str
    path: str
    query: dict[str, str]  # first value of each parameter, decoded
    headers: dict[str, str]
    raw: bytes
    client: str


@dataclass
class Reply:
    """A robot's answer: JSON payload (or raw bytes) with a status and extra headers."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class RobotServer:
    """A real HTTP server on 127.0.0.1:<free port> that hands each request to `respond`."""

    name = "robot-sim"
    path = "/"  # the part of `url` after host:port

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- to implement -------------------------------------------------------------------------
    def respond(self, request: Request) -> Reply:
        raise NotImplementedError

    def not_found(self) -> Reply:
        return Reply(404, {"error": "not found"})

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        owner = self

        class Handler(_Handler):
            robot = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection ---------------------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(entry)


def first_values(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}


def keyword_found(keywords: Iterable[str], texts: Iterable[str]) -> bool:
    joined = "\n".join(texts)
    return any(k in joined for k in keywords)


class _Handler(BaseHTTPRequestHandler):
    robot: RobotServer
    server_version = "robot-sim"

    def _request(self, method: str) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        return Request(method, parts.path, first_values(parts.query), headers, raw, self.client_address[0])

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        self._send(self.robot.respond(self._request("POST")))

    def do_GET(self) -> None:  # noqa: N802
        request = self._request("GET")
        if request.path == RECEIVED_PATH:
            self._send(Reply(200, self.robot.snapshot()))
        else:
            self._send(self.robot.respond(request))

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.payload, bytes):
            data, kind = reply.payload, "text/plain; charset=utf-8"
        elif reply.payload is None:
            data, kind = b"", "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(reply.payload, ensure_ascii=False).encode("utf-8"), "application/json"
            kind += "; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silenced: the default access log would print robot tokens from the URL."""
