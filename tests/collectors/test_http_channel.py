"""ChannelApiCollector end to end against the real fake channel server, for all five presets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collectors.errors import (
    AuthExpired,
    ClockSkew,
    HTTPStatusError,
    RateLimited,
    RetryPolicy,
    SchemaError,
    SourceConfigError,
    SourceTimeout,
    SourceUnavailable,
)
from collectors.http_channel import ChannelApiCollector
from collectors.mapping import MappingConfig
from collectors.presets import PRESETS, get_preset, load_preset_mapping
from sentinel.clock import ManualClock
from sentinel.config import SourceConfig
from sim.channels import DEFAULT_CREDENTIALS, ChannelServer
from sim.model import CHANNELS, SimOrder

T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
IDS = {  # one id per channel in its native format; tmall and douyin exceed 2^53
    "tmall": "391234567890123456{}",
    "jd": "30123456789{}",
    "pdd": "260212-12345678901234{}",
    "douyin": "691234567890123456{}",
    "youzan": "E2026021210021100060001{}",
}
# order number -> true timeline in minutes from T0 (warehouse steps must stay invisible)
TIMELINES = {
    1: {"created": -50, "paid": -49, "wms_received": -45, "picked": -30, "shipped": -20, "delivered": -5},
    2: {"created": -40, "paid": -39, "wms_received": -30, "picked": -25},
    3: {"created": -30, "cancelled": -10},
    4: {"created": -15, "paid": -14, "cancelled": -12},
    5: {"created": -8},
    6: {"created": 10, "paid": 11},  # in the future: invisible
    7: {"created": -1.5, "paid": -1},
}
CANCEL_AFTER_PAY = {"tmall": "closed"}  # TOP shows a paid-then-cancelled trade as TRADE_CLOSED
NO_SHIP_TIME = {"jd"}  # JD's list has no consign time: a delivered order shows created/paid/delivered
PAID_ONLY = {"jd", "pdd"}  # these list APIs only show orders once paid


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def raw_id(channel: str, n: int) -> str:
    return IDS[channel].format(n)


def make_orders(channel: str) -> list[SimOrder]:
    return [
        SimOrder(
            channel,
            raw_id(channel, n),
            at(tl["created"]),
            12999 + n,
            f"SKU-{n}",
            "浙江省",
            "杭州市",
            "alipay",
            "WH-HZ",
            "zto",
            f"ZT{n:08d}",
            events={s: at(m) for s, m in tl.items()},
        )
        for n, tl in TIMELINES.items()
    ]


def expected(channel: str, now: datetime = T0) -> set[tuple[str, str, datetime]]:
    """(raw id, canonical state, UTC time) the channel must yield for every visible order."""
    out = set()
    for n, tl in TIMELINES.items():
        events = {
            s: at(m)
            for s, m in tl.items()
            if at(m) <= now and s in ("created", "paid", "shipped", "delivered", "cancelled")
        }
        if "created" not in events or (channel in PAID_ONLY and "paid" not in events):
            continue
        if "cancelled" in events and "paid" in events and channel in CANCEL_AFTER_PAY:
            events[CANCEL_AFTER_PAY[channel]] = events.pop("cancelled")
        if channel in NO_SHIP_TIME and "delivered" in events:
            events.pop("shipped", None)
        out |= {(raw_id(channel, n), s, t) for s, t in events.items()}
    return out


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def server(clock):
    with ChannelServer(lambda ch: make_orders(ch), clock) as srv:
        yield srv


class Sleeper:
    """The injected sleep: records each delay and moves the virtual clock like the simulator does."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.recorded: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.recorded.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
def sleeps(clock):
    return Sleeper(clock)


def modified_in(channel: str, lo: datetime, hi: datetime) -> set[str]:
    """Ids of the visible orders whose channel-side modified time lies in [lo, hi]."""
    latest: dict[str, datetime] = {}
    for rid, _, t in expected(channel):
        latest[rid] = max(t, latest.get(rid, t))
    return {rid for rid, t in latest.items() if lo <= t <= hi}


def make_collector(server, channel, sleep, *, creds=None, mapping=None, **overrides) -> ChannelApiCollector:
    fields = {
        "kind": "http",
        "preset": channel,
        "channel": channel,
        "url": server.url_for(channel),
        "credentials": creds or DEFAULT_CREDENTIALS[channel],
        "page_size": 2,
        "overlap": "2m",
        "initial_lookback": "1h",
        "timeout": "2s",
        "mapping": mapping or load_preset_mapping(channel),
    }
    return ChannelApiCollector(
        channel, SourceConfig(**{**fields, **overrides}), retry=RetryPolicy(sleep=sleep)
    )


def run(collector, cursor=None, now=T0):
    return list(collector.poll(cursor, now))


def facts(batches) -> set[tuple[str, str, datetime]]:
    return {(o.raw_order_id, o.state, o.at) for b in batches for o in b.observations}


def assert_no_secret(exc: BaseException, channel: str, extra: tuple[str, ...] = ()) -> None:
    secrets = [*DEFAULT_CREDENTIALS[channel].values(), *extra]
    chain, node = [], exc
    while node is not None:
        chain.append(node)
        node = node.__cause__ or node.__context__
    for item in chain:
        text = f"{item} {item!r} {getattr(item, 'message', '')} {getattr(item, 'reason', '')}"
        for secret in secrets:
            assert secret not in text, f"secret leaked in {type(item).__name__}"


@pytest.mark.parametrize("channel", CHANNELS)
def test_pages_map_to_canonical_observations(server, channel, sleeps):
    batches = run(make_collector(server, channel, sleeps))
    assert facts(batches) == expected(channel)
    assert all(not b.quarantined for b in batches)
    obs = [o for b in batches for o in b.observations]
    assert {o.channel for o in obs} == {channel} and {o.source for o in obs} == {channel}
    first = next(o for o in obs if o.raw_order_id == raw_id(channel, 1))
    assert first.amount_fen == 13000  # 130.00 yuan (or 13000 fen on Douyin)
    assert first.dims == {"province": "浙江省", "city": "杭州市", "sku": "SKU-1"}
    assert first.created_at == at(-50)
    assert batches[-1].cursor == (T0 - get_preset(channel).settle).isoformat()
    assert sleeps.recorded == []


def test_large_ids_stay_exact_strings(server, sleeps):
    for channel in ("tmall", "douyin"):
        ids = {o.raw_order_id for b in run(make_collector(server, channel, sleeps)) for o in b.observations}
        big = raw_id(channel, 1)
        assert int(big) > 2**53 and big in ids


@pytest.mark.parametrize("channel", CHANNELS)
def test_same_page_twice_yields_identical_record_keys(server, channel, sleeps):
    collector = make_collector(server, channel, sleeps)
    keys = [[o.record_key for o in b.observations] for b in run(collector)]
    assert keys == [[o.record_key for o in b.observations] for b in run(collector)]


@pytest.mark.parametrize("channel", CHANNELS)
def test_multi_page_window_walks_from_the_last_page_back(server, channel, sleeps):
    run(make_collector(server, channel, sleeps), cursor=at(-28).isoformat())  # one window
    pages = [c["page"] for c in server.calls]
    base = get_preset(channel).page_base
    last = base + (len(modified_in(channel, at(-30), T0)) - 1) // 2
    assert last > base
    assert pages == [base, *range(last, base - 1, -1)]


@pytest.mark.parametrize("channel", CHANNELS)
def test_overlap_window_rereads(server, clock, channel, sleeps):
    collector = make_collector(server, channel, sleeps)
    cursor = run(collector)[-1].cursor
    clock.advance(60)
    server.calls.clear()
    batches = run(collector, cursor=cursor, now=clock.now())
    assert server.calls[0]["start"] == datetime.fromisoformat(cursor) - timedelta(minutes=2)
    reread = {o.record_key for b in batches for o in b.observations}
    assert f"{raw_id(channel, 7)}|paid" in reread  # modified at T0-1m, inside the overlap
    assert batches[-1].cursor == (clock.now() - get_preset(channel).settle).isoformat()


@pytest.mark.parametrize("channel", CHANNELS)
def test_records_vanishing_mid_walk_skip_nothing(server, channel, sleeps):
    # After the first page the newest record "moves away" (modified again, out of the window).
    # A forward walk would then skip a record that never changed; the backward walk must not.
    server.faults.set(channel, "vanish_mid_page", count=1)
    batches = run(make_collector(server, channel, sleeps), cursor=at(-28).isoformat())
    seen = {o.raw_order_id for b in batches for o in b.observations}
    assert seen == modified_in(channel, at(-30), T0) - {raw_id(channel, 7)}


@pytest.mark.parametrize("channel", [c for c in CHANNELS if c != "youzan"])
def test_wrong_signature_is_config_error_without_retry(server, channel, sleeps):
    creds = {**DEFAULT_CREDENTIALS[channel], "app_secret": "wrong-secret-value-123"}
    with pytest.raises(SourceConfigError) as info:
        run(make_collector(server, channel, sleeps, creds=creds))
    assert sleeps.recorded == [] and server.requests[channel] == 1
    assert_no_secret(info.value, channel, extra=("wrong-secret-value-123",))


def test_youzan_unknown_token_is_auth_expired(server, sleeps):
    creds = {"access_token": "yz-rotated-token-0000"}
    with pytest.raises(AuthExpired) as info:
        run(make_collector(server, "youzan", sleeps, creds=creds))
    assert_no_secret(info.value, "youzan", extra=("yz-rotated-token-0000",))


@pytest.mark.parametrize("channel", CHANNELS)
def test_auth_expired_is_not_retried(server, channel, sleeps):
    server.faults.set(channel, "auth_expired")
    with pytest.raises(AuthExpired) as info:
        run(make_collector(server, channel, sleeps))
    assert sleeps.recorded == [] and server.requests[channel] == 1
    assert info.value.error_class == "auth_expired"
    assert_no_secret(info.value, channel)


@pytest.mark.parametrize("channel", CHANNELS)
def test_rate_limited_waits_the_ban_then_succeeds(server, channel, sleeps):
    server.faults.set(channel, "rate_limited", ban=7, times=1)
    batches = run(make_collector(server, channel, sleeps))
    assert sleeps.recorded == [7]
    assert facts(batches) == expected(channel)


def test_rate_limit_ban_on_the_platform_clock_outlasts_backoff(server, sleeps):
    server.faults.set("tmall", "rate_limited", ban=20, quota=0)
    with pytest.raises(RateLimited) as info:
        run(make_collector(server, "tmall", sleeps))
    assert sleeps.recorded == [20, 20, 20, 20, 20]  # each attempt starts a new 20 s ban
    assert info.value.retry_after == 20
    assert_no_secret(info.value, "tmall")


def test_request_timestamps_include_backoff_time(server, sleeps):
    # A 12-minute ban moves the platform clock past TOP's 10-minute skew: the retry must still pass.
    server.faults.set("tmall", "rate_limited", ban=720, times=1)
    collector = make_collector(server, "tmall", sleeps)
    collector.retry = RetryPolicy(sleep=sleeps, max_retry_after=900)
    assert facts(run(collector)) == expected("tmall")
    assert sleeps.recorded == [720]


@pytest.mark.parametrize("channel", CHANNELS)
def test_http_5xx_backs_off_exponentially(server, channel, sleeps):
    server.faults.set(channel, "server_error", times=3)
    assert facts(run(make_collector(server, channel, sleeps))) == expected(channel)
    assert sleeps.recorded == [1, 2, 4]


@pytest.mark.parametrize("channel", CHANNELS)
def test_platform_transient_error_is_retried(server, channel, sleeps):
    server.faults.set(channel, "server_error", mode="platform", times=2)
    assert facts(run(make_collector(server, channel, sleeps))) == expected(channel)
    assert sleeps.recorded == [1, 2]


def test_5xx_gives_up_after_the_last_backoff(server, sleeps):
    server.faults.set("jd", "server_error")
    with pytest.raises(HTTPStatusError) as info:
        run(make_collector(server, "jd", sleeps))
    assert info.value.status == 502 and sleeps.recorded == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("style", ["truncated", "html"])
def test_garbage_body_is_a_schema_error_naming_the_response(server, channel, style, sleeps):
    server.faults.set(channel, "garbage", style=style)
    with pytest.raises(SchemaError) as info:
        run(make_collector(server, channel, sleeps))
    assert info.value.record == "response" and "record response" in str(info.value)
    assert sleeps.recorded == []
    assert_no_secret(info.value, channel)


def test_response_without_envelope_names_the_missing_path(server, sleeps):
    collector = make_collector(server, "tmall", sleeps)
    with pytest.raises(SchemaError) as info:
        collector.preset.parse("tmall", {"unexpected": {}})
    assert info.value.field == "trades_sold_increment_get_response"


@pytest.mark.parametrize("channel", CHANNELS)
def test_timeout_is_retried(server, channel, sleeps):
    server.faults.set(channel, "timeout", delay=0.4, times=1)
    assert facts(run(make_collector(server, channel, sleeps, timeout="0.1s"))) == expected(channel)
    assert sleeps.recorded == [1]


def test_timeout_exhausted_raises_source_timeout(server, sleeps):
    server.faults.set("douyin", "timeout", delay=0.3)
    collector = make_collector(server, "douyin", sleeps, timeout="0.05s")
    collector.retry = RetryPolicy(delays=(1,), sleep=sleeps)
    with pytest.raises(SourceTimeout) as info:
        run(collector)
    assert_no_secret(info.value, "douyin")


def test_connection_refused_is_unavailable(server, sleeps):
    collector = make_collector(server, "douyin", sleeps)
    url = server.url_for("douyin")
    server.close()
    collector.retry = RetryPolicy(delays=(1, 2), sleep=sleeps)
    with pytest.raises(SourceUnavailable) as info:
        run(collector)
    assert sleeps.recorded == [1, 2] and url.startswith("http://127.0.0.1")
    assert_no_secret(info.value, "douyin")  # the URL's query carries the access token


@pytest.mark.parametrize("channel", [c for c in CHANNELS if c != "youzan"])
def test_skewed_client_clock_is_clock_skew(server, channel, sleeps):
    with pytest.raises(ClockSkew) as info:
        run(make_collector(server, channel, sleeps), now=T0 - timedelta(minutes=20))
    assert sleeps.recorded == []
    assert_no_secret(info.value, channel)


@pytest.mark.parametrize("channel", CHANNELS)
def test_unknown_status_is_quarantined_with_path_and_value(server, channel, sleeps):
    mapping = load_preset_mapping(channel)
    native_paid = {
        "tmall": "WAIT_SELLER_SEND_GOODS",
        "jd": "WAIT_SELLER_STOCK_OUT",
        "pdd": "1/1/1",
        "douyin": "2",
        "youzan": "WAIT_SELLER_SEND_GOODS",
    }[channel]
    status_map = {k: v for k, v in mapping.status_map.items() if k != native_paid}
    mapping = MappingConfig.model_validate({**mapping.model_dump(), "status_map": status_map})
    batches = run(make_collector(server, channel, sleeps, mapping=mapping))
    quarantined = [q for b in batches for q in b.quarantined]
    ids = {q.record_key for q in quarantined}
    assert ids == {raw_id(channel, 2), raw_id(channel, 7)}  # the two orders still waiting to ship
    q = quarantined[0]
    assert q.field == mapping.status and repr(native_paid) in q.reason
    assert q.record_key in q.raw
    assert facts(batches) == {f for f in expected(channel) if f[0] not in ids}


def test_windows_respect_each_platform_slice(server, sleeps):
    now = T0
    for channel, count in (("pdd", 8), ("tmall", 8), ("jd", 1), ("douyin", 1), ("youzan", 1)):
        collector = make_collector(server, channel, sleeps, initial_lookback="4h")
        windows = collector.windows(None, now)
        assert len(windows) == count
        assert all(e - s <= PRESETS[channel].slice for s, e in windows)
        assert windows[0][0] == now - timedelta(hours=4) and windows[-1][1] == now - PRESETS[channel].settle


def test_cursor_ahead_of_now_reads_nothing(server, sleeps):
    collector = make_collector(server, "tmall", sleeps)
    assert run(collector, cursor=(T0 + timedelta(hours=1)).isoformat()) == []
    assert server.requests["tmall"] == 0


def test_quiet_window_still_advances_the_cursor(server, clock, sleeps):
    collector = make_collector(server, "jd", sleeps)
    clock.set(T0 + timedelta(minutes=40))
    batches = run(collector, cursor=(T0 + timedelta(minutes=30)).isoformat(), now=clock.now())
    assert [b.records for b in batches] == [0] and batches[0].cursor is not None


def test_missing_credentials_are_config_errors(server, sleeps):
    with pytest.raises(SourceConfigError, match="credentials.session or access_token"):
        run(
            make_collector(
                server, "tmall", sleeps, creds={"app_key": "23456789", "app_secret": "tm-secret-0001"}
            )
        )


def test_repr_and_errors_never_show_secrets(server, sleeps):
    for channel in CHANNELS:
        collector = make_collector(server, channel, sleeps)
        text = repr(collector) + repr(collector._creds)
        assert all(s not in text for s in DEFAULT_CREDENTIALS[channel].values())


def test_unknown_preset_is_rejected():
    cfg = SourceConfig(
        kind="http",
        preset="taobao",
        channel="tmall",
        url="http://127.0.0.1:9",
        mapping=load_preset_mapping("tmall"),
    )
    with pytest.raises(ValueError, match="unknown http preset"):
        ChannelApiCollector("x", cfg)


def test_every_preset_has_a_valid_default_mapping():
    for channel in CHANNELS:
        assert isinstance(load_preset_mapping(channel), MappingConfig)
    with pytest.raises(ValueError):
        load_preset_mapping("wechat")
