"""One local HTTP server hosting the five fake channel order APIs, routed by path."""

from __future__ import annotations

import logging
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from sentinel.clock import Clock
from sim.channels.common import ApiRequest, Context, OrderIndex, Response, json_response
from sim.channels.douyin import DouyinApi
from sim.channels.faults import Decision, Faults
from sim.channels.jd import JdApi
from sim.channels.pdd import PddApi
from sim.channels.tmall import TmallApi
from sim.channels.youzan import VERSION, YouzanApi
from sim.model import SimOrder

log = logging.getLogger("sim.channels")

# Demo credentials of the fake platforms (never real ones); override per channel in the constructor.
DEFAULT_CREDENTIALS: dict[str, dict[str, str]] = {
    "tmall": {
        "app_key": "23456789",
        "app_secret": "tm-demo-secret-6f1c0a9b",
        "session": "6100e7sessiondemo0tmall",
    },
    "jd": {
        "app_key": "JD7C1F0A2B",
        "app_secret": "jd-demo-secret-3e8d5c71",
        "access_token": "jd-demo-token-9a4e21",
    },
    "pdd": {
        "app_key": "pdd5a0c3e1d",
        "app_secret": "pdd-demo-secret-b72f04",
        "access_token": "pdd-demo-token-1c9e77",
    },
    "douyin": {
        "app_key": "7012345678901234567",
        "app_secret": "dy-demo-secret-54ac1e",
        "access_token": "dy-demo-token-0f3b62",
    },
    "youzan": {"access_token": "yz-demo-token-8d2e4f"},
}
APIS = {api.name: api for api in (TmallApi(), JdApi(), PddApi(), DouyinApi(), YouzanApi())}
ENDPOINTS = {
    "tmall": "/router/rest",
    "jd": "/routerjson",
    "pdd": "/api/router",
    "douyin": "/order/searchList",
    "youzan": f"/api/youzan.trades.sold.get/{VERSION}",
}


def route(path: str) -> str | None:
    """Channel serving `path`, or None."""
    for name, api in APIS.items():
        if path == api.path or (api.path.endswith("/") and path.startswith(api.path)):
            return name
    return None


class ChannelServer:
    """Fake Tmall/JD/PDD/Douyin/Youzan order APIs over `world_orders(channel)` as of `clock.now()`."""

    def __init__(
        self,
        world_orders: Callable[[str], list[SimOrder]],
        clock: Clock,
        credentials: dict[str, dict[str, str]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.world_orders = world_orders
        self.clock = clock
        self.credentials = {ch: dict(c) for ch, c in DEFAULT_CREDENTIALS.items()}
        for channel, creds in (credentials or {}).items():
            self.credentials.setdefault(channel, {}).update(creds)
        self.faults = Faults()
        self.calls: list[dict] = []  # served list calls: channel, start, end, page, size, returned
        self.requests: Counter[str] = Counter()  # every request per channel, faults included
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[tuple, OrderIndex]] = {}
        self._stop = threading.Event()
        self._address = (host, port)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ChannelServer:
        self._httpd = ThreadingHTTPServer(self._address, _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="sim-channels", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("ChannelServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url_for(self, channel: str) -> str:
        """The endpoint a collector for `channel` should call."""
        return self.url + ENDPOINTS[channel]

    def close(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ChannelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- request handling (called from server threads) ------------------------------------------
    def serve(self, req: ApiRequest) -> Response:
        channel = route(req.path)
        if channel is None:
            return json_response({"error": "not found", "path": req.path}, 404)
        api = APIS[channel]
        now = self.clock.now()
        with self._lock:
            self.requests[channel] += 1
        decision = self.faults.decide(channel, now)
        ctx = Context(
            now,
            self._index(channel),
            self.credentials[channel],
            log=lambda entry: self._log(channel, entry),
        )
        if decision is not None:
            early = self._fault(api, decision, ctx)
            if early is not None:
                return early
            ctx.hide = decision.hide
        response = api.handle(req, ctx)
        if decision is not None and decision.kind == "garbage":
            return _garbage(response, decision.params["style"])
        return response

    def _index(self, channel: str) -> OrderIndex:
        """The channel's order index, rebuilt when the number of orders or events changes."""
        orders = list(self.world_orders(channel))
        key = OrderIndex.key(orders)
        with self._lock:
            cached = self._indexes.get(channel)
            if cached is not None and cached[0] == key:
                return cached[1]
        index = OrderIndex(orders)
        with self._lock:
            self._indexes[channel] = (key, index)
        return index

    def _fault(self, api, decision: Decision, ctx: Context) -> Response | None:
        kind, params = decision.kind, decision.params
        if kind == "timeout":
            self._stop.wait(float(params["delay"]))
            return None
        if kind == "server_error" and params["mode"] == "http":
            return Response(
                502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", {"Content-Type": "text/html"}
            )
        if kind in ("rate_limited", "auth_expired", "server_error"):
            return api.fault(kind, ctx, decision.seconds)
        return None

    def _log(self, channel: str, entry: dict) -> None:
        with self._lock:
            self.calls.append({"channel": channel, **entry})


class HttpHost:
    """A threading HTTP server on a local port answering with `target.serve(ApiRequest)`."""

    def __init__(self, target, thread_name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(target))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=thread_name, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_http(target, thread_name: str) -> HttpHost:
    """Serve `target` (anything with `serve(ApiRequest) -> Response`) on a local port."""
    return HttpHost(target, thread_name)


def _garbage(response: Response, style: str) -> Response:
    if style == "html":
        return Response(
            200, "<html><body>系统繁忙，请稍后再试</body></html>".encode(), {"Content-Type": "text/html"}
        )
    return Response(200, response.body[: max(1, len(response.body) // 2)], response.headers)


def _handler_for(server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._dispatch()

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch()

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                params.update(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
            req = ApiRequest(self.command, parts.path, params, body, dict(self.headers.items()))
            try:
                response = server.serve(req)
            except Exception:  # a bug in the fake must answer, not hang the client
                log.error("fake channel API failed on %s:\n%s", parts.path, traceback.format_exc())
                response = json_response({"error": "internal error in the fake"}, 500)
            try:
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout fault)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            # the request line carries tokens in its query string: log the path only
            log.debug("%s %s", self.command, urlsplit(self.path).path)

    return Handler
