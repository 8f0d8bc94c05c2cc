"""Copyable source blocks (collectors/presets/sources) and the generic API's other paging and
authentication styles, each against a real local HTTP server on port 0."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import tomllib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from collectors.errors import AuthExpired, RetryPolicy, SourceConfigError
from collectors.presets import source_preset, source_presets
from collectors.registry import build_collector
from sentinel.config import DEFAULT_PATH, parse_config

NOW = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)


class JsonServer:
    """A real HTTP server answering with `answer(method, path, query, form, headers) -> (status, doc)`."""

    def __init__(self, answer) -> None:
        self.answer, self.seen = answer, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.seen.append((self.command, query, form, dict(self.headers)))
                status, doc = server.answer(self.command, url.path, query, form, self.headers)
                body = json.dumps(doc, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _reply  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/api"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def shipped_channels() -> str:
    """The [channels] tables of the shipped config.toml."""
    raw = DEFAULT_PATH.read_text(encoding="utf-8")
    return raw[raw.index("[channels.tmall]") : raw.index("# Dashboard logins")]


def config_with(block: str, env: dict[str, str] | None = None):
    return parse_config(tomllib.loads(shipped_channels() + "\n" + block), env=env or {})


@pytest.mark.parametrize("name", source_presets())
def test_every_source_preset_is_a_valid_block(name):
    text = source_preset(name)
    blocks = tomllib.loads(text)["sources"]
    assert len(blocks) == 1
    cfg = config_with(text)  # ${VAR:-default}s resolve; the source validates and cross-checks
    assert list(cfg.sources) == list(blocks)


def test_shipped_config_uses_the_presets_unchanged():
    """config.toml's payment, carrier and ERP sources are the preset files' blocks (no drift)."""
    shipped = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))["sources"]
    for name in ("alipay_notify", "wechatpay_notify", "kuaidi100_push", "jushuitan_orders"):
        ((source, block),) = tomllib.loads(source_preset(name))["sources"].items()
        assert shipped[source] == block, name


def _wdt_record(n: int, status: int, modified: str, consign: str | None = None) -> dict:
    record = {"stockout_id": n, "order_no": f"CK2026021200{n:02d}", "src_trade_no": f"39123456789012345{n:02d}",
              "shop_no": "TM001", "warehouse_no": "WH-HZ", "logistics_name": "中通快递", "status": status,
              "modified": modified, "trade_time": "1770861600000"}  # fmt: skip
    if consign:
        record["consign_time"] = consign
    return record


def test_wangdiantong_stockout_pages_from_zero_with_total_and_maps_statuses():
    records = [
        _wdt_record(1, 53, "2026-02-12 17:40:00"),
        _wdt_record(2, 79, "2026-02-12 17:41:00"),
        _wdt_record(3, 110, "2026-02-12 17:42:00", consign="2026-02-12 17:42:00"),
        _wdt_record(4, 51, "2026-02-12 17:43:00"),  # out of stock: a hold, ignored knowingly
        _wdt_record(5, 999, "2026-02-12 17:44:00"),  # a code nobody mapped
    ]

    def answer(method, path, query, form, headers):
        if form.get("status_type") != "3":
            return 200, {"status": 1, "message": "参数错误"}
        page, size = int(form["page_no"]), int(form["page_size"])
        return 200, {
            "status": 0,
            "data": {"total_count": len(records), "order": records[page * size : (page + 1) * size]},
        }

    server = JsonServer(answer)
    try:
        block = source_preset("wangdiantong_stockout").replace(
            'poll_interval = "1m"', 'poll_interval = "1m"\npage_size = 2'
        )
        cfg = config_with(block, {"WDT_GATEWAY_URL": server.url})
        collector = build_collector("wdt_stockout", cfg.sources["wdt_stockout"], retry=RetryPolicy(delays=()))
        batches = list(collector.poll((NOW - timedelta(minutes=30)).isoformat(), NOW))
    finally:
        server.close()
    pages = sorted(int(form["page_no"]) for _, _, form, _ in server.seen)
    assert pages == [0, 0, 1, 2]  # the first page tells the total; then last page first, down to 0
    windows = {(form["start_time"], form["end_time"]) for _, _, form, _ in server.seen}
    assert windows == {("2026-02-12 17:28:00", "2026-02-12 17:59:50")}  # Beijing time, cursor - overlap
    got = {(o.raw_order_id[-2:], o.state) for b in batches for o in b.observations}
    assert got == {("01", "wms_received"), ("02", "picked"), ("03", "shipped")}
    held = [q for b in batches for q in b.quarantined]
    assert [(q.field, q.reason) for q in held] == [("status", "field status: unmapped status value '999'")]
    assert batches[-1].cursor == "2026-02-12T09:59:50+00:00"


def test_wangdiantong_error_envelope_is_a_typed_error():
    server = JsonServer(lambda *a: (200, {"status": 7, "message": "时间戳错误"}))
    try:
        cfg = config_with(source_preset("wangdiantong_stockout"), {"WDT_GATEWAY_URL": server.url})
        collector = build_collector("wdt_stockout", cfg.sources["wdt_stockout"], retry=RetryPolicy(delays=()))
        with pytest.raises(SourceConfigError, match="status=7 时间戳错误"):
            list(collector.poll(None, NOW))
    finally:
        server.close()


API_BLOCK = """
[sources.shop]
kind = "http"
channel = "tmall"
url = "${SHOP_URL}"
credentials = { app_key = "12345678", app_secret = "${SHOP_SECRET}", session = "sess-0001", access_token = "tok-0001", key = "${SHOP_KEY}" }
page_size = 3
[sources.shop.api]
records = "items"
paging = "page"
page_param = "p"
size_param = "n"
since_param = "from"
time_format = "unix_ms"
window = "1d"
auth = "query"
auth_name = "api_key"
auth_value = "{key}"
[sources.shop.mapping]
order_id = "id"
status = "st"
status_time = "ts"
time_format = "unix_ms"
status_map = { P = "paid" }
"""


def _items(count: int) -> list[dict]:
    return [{"id": f"3912345678901234{n:03d}", "st": "P", "ts": 1770886800000 + n} for n in range(count)]


def test_page_numbers_without_a_total_stop_at_a_short_page_and_a_query_key_authenticates(caplog):
    caplog.set_level(logging.DEBUG)
    items = _items(7)

    def answer(method, path, query, form, headers):
        if query.get("api_key") != "k-9f8e7d6c":
            return 401, {"error": "bad key"}
        page, size = int(query["p"]), int(query["n"])
        return 200, {"items": items[(page - 1) * size : page * size]}

    server = JsonServer(answer)
    try:
        env = {"SHOP_URL": server.url, "SHOP_SECRET": "s3cr3t-value", "SHOP_KEY": "k-9f8e7d6c"}
        src = config_with(API_BLOCK, env).sources["shop"]
        batches = list(build_collector("shop", src, retry=RetryPolicy(delays=())).poll(None, NOW))
        assert [int(q["p"]) for _, q, _, _ in server.seen] == [1, 2, 3]
        assert len([o for b in batches for o in b.observations]) == 7
        assert [b.cursor is not None for b in batches] == [False, False, True]
        wrong = config_with(API_BLOCK, {**env, "SHOP_KEY": "k-wrong-key"}).sources["shop"]
        with pytest.raises(AuthExpired) as caught:
            list(build_collector("shop", wrong, retry=RetryPolicy(delays=())).poll(None, NOW))
        assert "k-wrong-key" not in str(caught.value)
        assert "api_key=***" in caplog.text and "k-9f8e7d6c" not in caplog.text  # urllib3 logs each URL
    finally:
        server.close()


@pytest.mark.parametrize("signer", ["taobao", "jd", "pdd"])
def test_signing_by_name_is_verified_by_the_server(signer):
    """auth = "sign": the server recomputes MD5(secret + sorted name+value pairs + secret) over the
    platform's own gateway fields (JD: business parameters inside 360buy_param_json)."""
    secret = "s3cr3t-value"

    def answer(method, path, query, form, headers):
        params = dict(form or query)
        sign = params.pop("sign", "")
        text = secret + "".join(f"{k}{params[k]}" for k in sorted(params)) + secret
        routed = params.get("type" if signer == "pdd" else "method")
        if sign != hashlib.md5(text.encode()).hexdigest().upper() or routed != "x.orders.get":
            return 200, {"error_response": {"code": 25, "msg": "Invalid signature"}}
        business = json.loads(params["360buy_param_json"]) if signer == "jd" else params
        if "from" not in business or "p" not in business:
            return 200, {"error_response": {"code": 40, "msg": "missing parameters"}}
        return 200, {"items": _items(2)}

    block = API_BLOCK.replace('auth = "query"\nauth_name = "api_key"\nauth_value = "{key}"',
                              f'auth = "sign"\nsign = "{signer}"\nsign_method = "x.orders.get"\nmethod = "POST"\nbody = "form"')  # fmt: skip
    server = JsonServer(answer)
    try:
        env = {"SHOP_URL": server.url, "SHOP_SECRET": secret, "SHOP_KEY": "unused"}
        src = config_with(block, env).sources["shop"]
        batches = list(build_collector("shop", src, retry=RetryPolicy(delays=())).poll(None, NOW))
    finally:
        server.close()
    assert len([o for b in batches for o in b.observations]) == 2
    ((method, _, form, _),) = server.seen
    assert method == "POST" and (form.get("app_key") or form.get("client_id")) == "12345678"
    assert secret not in json.dumps(server.seen)


YOUZAN_BLOCK = """
[sources.mini]
kind = "http"
preset = "youzan"
channel = "youzan"
url = "http://127.0.0.1:1/api"
credentials = { access_token = "yz-token-5566aa" }
[sources.mini.mapping]
order_id = "tid"
"""


def test_tokens_in_a_preset_url_are_masked_in_debug_lines(caplog):
    """Youzan takes its access token in the query string; urllib3's debug line shows the URL."""
    caplog.set_level(logging.DEBUG)
    collector = build_collector("mini", config_with(YOUZAN_BLOCK).sources["mini"])
    url = "/api?access_token=yz-token-5566aa"
    logging.getLogger("urllib3.connectionpool").debug('"%s %s HTTP/1.1" 200', "POST", url)
    assert "access_token=***" in caplog.text and "yz-token-5566aa" not in caplog.text
    assert "yz-token-5566aa" not in repr(collector)


@pytest.mark.parametrize("channel", ["tmall", "jd", "pdd", "douyin", "youzan"])
def test_check_source_reads_the_preset_channels_as_config_toml_ships_them(channel, tmp_path):
    """check-source on the shipped config.toml's channel sources, against the simulated platforms:
    the newest window's orders map cleanly (native IDs match the channels' id_pattern)."""
    from sentinel.check_source import check_source
    from sentinel.clock import ManualClock
    from sentinel.config import load_config
    from sim.channels import ChannelServer
    from tests.collectors.test_http_channel import T0, make_orders

    clock = ManualClock(T0)
    with ChannelServer(make_orders, clock) as server:
        env = {
            f"{channel.upper()}_API_URL": server.url_for(channel),
            "SENTINEL_STORE_URL": f"sqlite:///{tmp_path}/s.db",
        }
        result = check_source(load_config(env=env), channel, T0)
    assert result.error is None and result.ok, (result.error, result.quarantined, result.unmapped)
    assert result.records > 0 and result.observations and result.statuses
    assert not (tmp_path / "s.db").exists()
