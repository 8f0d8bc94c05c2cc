"""Live connectivity per source: a healthy API, a refused port, a 503, a throttling API, a SQL
source and a missing notify log, each named with the step that failed; no credential in the output."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from diagnose_world import T0

from collectors.errors import AuthExpired
from diagnose import diagnose
from sentinel.config import DEFAULT_PATH, load_config

STATUS = {"/ok": 200, "/down": 503, "/busy": 429}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(STATUS.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_source_is_checked_live_and_named_by_the_failing_step(store_url, tmp_path, http_url):
    from store.db import init_schema, make_engine
    from store.store import Store

    overrides = {f"sources.{name}.enabled": False for name in ("pdd", "douyin", "wms_returns", "wechatpay")}
    overrides |= {
        "sources.tmall.url": f"{http_url}/ok",
        "sources.jd.url": f"http://127.0.0.1:{closed_port()}/routerjson",
        "sources.youzan.url": f"{http_url}/down",
        "sources.douyin.enabled": True,
        "sources.douyin.url": f"{http_url}/busy",
        "sources.wms.url": store_url,
        "sources.alipay.path": str(tmp_path / "missing" / "alipay_notify.log"),
    }
    config = load_config(DEFAULT_PATH, overrides=overrides)
    engine = make_engine(store_url)
    init_schema(engine)
    store = Store(engine, {}, "Asia/Shanghai")
    store.record_poll_failure("tmall", AuthExpired("tmall", "invalid session"), T0)
    try:
        result = diagnose(engine, config, T0 + timedelta(minutes=1), probes=("connectivity",), store=store)
    finally:
        engine.dispose()
    facts = {e["source"]: e for f in result.findings for e in f.evidence if e.get("fact") == "connectivity"}
    assert facts["tmall"]["http_status"] == 200 and facts["tmall"]["credential"] == "rejected"
    assert (facts["jd"]["step"], facts["jd"]["error"]) == ("tcp", "ConnectionRefusedError")
    assert (facts["youzan"]["step"], facts["youzan"]["error"]) == ("http", "HTTP 503")
    assert facts["douyin"]["error"] == "HTTP 429"
    assert (facts["alipay"]["step"], facts["alipay"]["error"]) == ("file", "file missing")
    ok = next(e for f in result.findings for e in f.evidence if e.get("fact") == "connectivity_ok")
    assert ok["sources"] == ["wms"]
    assert [c.cause for c in result.causes] == ["api_key_rotated", "api_rate_limited"]
    text = json.dumps(result.to_dict(), ensure_ascii=False)
    for secret in ("tm-demo-secret-6f1c0a9b", "6100e7sessiondemo0tmall", "jd-demo-token-9a4e21"):
        assert secret not in text
