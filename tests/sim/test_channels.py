"""The fake channel APIs: native formats as of the clock, signatures, limits, faults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from collectors.presets import PRESETS, Call, Credentials
from sentinel.clock import ManualClock
from sim.channels import DEFAULT_CREDENTIALS, ChannelServer
from sim.channels.common import view_of
from sim.channels.faults import Faults
from sim.model import CHANNELS, SimOrder

T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)  # 18:00 in Beijing
IDS = {
    "tmall": "3912345678901234567",
    "jd": "301234567890",
    "pdd": "260212-123456789012345",
    "douyin": "6912345678901234567",
    "youzan": "E20260212175000000600011",
}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def order(channel: str, **events: float) -> SimOrder:
    """One order of `channel`: created 10 minutes before T0, then `events` (minutes from T0)."""
    times = {"created": at(-10), **{s: at(m) for s, m in events.items()}}
    return SimOrder(
        channel,
        IDS[channel],
        times["created"],
        12990,
        "TS-RED-M",
        "浙江省",
        "杭州市",
        "wechat",
        "WH-HZ",
        "zto",
        "ZT0000000001",
        events=times,
    )


class World:
    def __init__(self) -> None:
        self.orders: dict[str, list[SimOrder]] = {c: [] for c in CHANNELS}

    def __call__(self, channel: str) -> list[SimOrder]:
        return self.orders[channel]


@pytest.fixture
def clock():
    return ManualClock(T0)


@pytest.fixture
def world():
    return World()


@pytest.fixture
def server(world, clock):
    with ChannelServer(world, clock) as srv:
        yield srv


def call(server, channel, *, now=None, start=None, end=None, page=None, size=10, creds=None, tamper=None):
    """Send one signed list request built by the channel's preset; returns the requests Response."""
    preset = PRESETS[channel]
    now = now or server.clock.now()
    c = preset.request(
        Credentials(channel, creds or DEFAULT_CREDENTIALS[channel]),
        start or at(-20),
        end or at(0),
        preset.page_base if page is None else page,
        size,
        now,
    )
    if tamper:
        c = tamper(c)
    return requests.request(
        c.method,
        server.url_for(channel),
        params=c.params or None,
        data=c.data if c.data is not None else c.body,
        headers=c.headers or None,
        timeout=5,
    )


def records(channel: str, doc: dict) -> list[dict]:
    return PRESETS[channel].parse(channel, doc).records


def test_channel_shows_the_commercial_view_as_of_the_clock(world, clock, server):
    world.orders["tmall"] = [order("tmall", paid=-9, wms_received=-5, picked=-3, packed=-2, shipped=5)]
    trade = records("tmall", call(server, "tmall").json())[0]
    assert trade["status"] == "WAIT_SELLER_SEND_GOODS"  # warehouse steps are invisible on channels
    assert trade["modified"] == "2026-02-12 17:51:00"  # Beijing time of payment, not of picking
    assert "consign_time" not in trade
    clock.advance(timedelta(minutes=6))
    trade = records("tmall", call(server, "tmall", end=clock.now()).json())[0]
    assert trade["status"] == "WAIT_BUYER_CONFIRM_GOODS" and trade["consign_time"] == "2026-02-12 18:05:00"


def test_orders_created_in_the_future_are_invisible(world, server):
    world.orders["douyin"] = [
        order("douyin"),
        SimOrder(
            "douyin",
            "6912345678901234999",
            at(5),
            100,
            "S",
            "p",
            "c",
            "alipay",
            "WH",
            "zto",
            "T",
            events={"created": at(5)},
        ),
    ]
    assert [r["order_id"] for r in records("douyin", call(server, "douyin", end=at(30)).json())] == [
        IDS["douyin"]
    ]


def test_tmall_native_trade(world, server):
    world.orders["tmall"] = [order("tmall", paid=-9, shipped=-5, delivered=-1)]
    doc = call(server, "tmall").json()["trades_sold_increment_get_response"]
    assert doc["total_results"] == 1
    trade = doc["trades"]["trade"][0]
    assert trade["tid"] == int(IDS["tmall"]) and trade["tid_str"] == IDS["tmall"]
    assert trade["status"] == "TRADE_FINISHED" and trade["payment"] == "129.90"
    assert trade["created"] == "2026-02-12 17:50:00" and trade["pay_time"] == "2026-02-12 17:51:00"
    assert trade["receiver_name"].startswith("~") and "浙江" not in trade["receiver_address"]
    assert trade["orders"]["order"][0]["outer_sku_id"] == "TS-RED-M"


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ({}, "WAIT_BUYER_PAY"),
        ({"cancelled": -5}, "TRADE_CLOSED_BY_TAOBAO"),
        ({"paid": -9, "cancelled": -5}, "TRADE_CLOSED"),
        ({"paid": -9, "closed": -5}, "TRADE_CLOSED"),
    ],
)
def test_tmall_status_enum(world, server, events, status):
    world.orders["tmall"] = [order("tmall", **events)]
    assert records("tmall", call(server, "tmall").json())[0]["status"] == status


def test_tmall_omits_the_list_when_empty(server):
    doc = call(server, "tmall").json()["trades_sold_increment_get_response"]
    assert doc["total_results"] == 0 and "trades" not in doc


def test_jd_responce_wrapper_placeholders_and_paid_only(world, server):
    world.orders["jd"] = [
        order("jd", paid=-9),
        SimOrder(
            "jd",
            "301234567899",
            at(-8),
            100,
            "S",
            "p",
            "c",
            "wechat",
            "WH",
            "zto",
            "T",
            events={"created": at(-8)},
        ),
    ]
    doc = call(server, "jd").json()
    result = doc["jingdong_pop_order_search_responce"]["searchorderinfo_result"]
    assert result["apiResult"]["success"] is True and result["orderTotal"] == 1
    info = result["orderInfoList"][0]
    assert info["orderId"] == IDS["jd"] and info["orderState"] == "WAIT_SELLER_STOCK_OUT"
    assert info["orderEndTime"] == "0001-01-01 00:00:00" and info["orderPayment"] == "129.90"


@pytest.mark.parametrize(
    ("events", "combo"),
    [
        ({"paid": -9}, (1, 1, 1)),
        ({"paid": -9, "shipped": -5}, (1, 2, 1)),
        ({"paid": -9, "shipped": -5, "delivered": -1}, (1, 3, 1)),
        ({"paid": -9, "cancelled": -5}, (2, 1, 4)),
    ],
)
def test_pdd_status_combinations(world, server, events, combo):
    world.orders["pdd"] = [order("pdd", **events)]
    row = records("pdd", call(server, "pdd").json())[0]
    assert (row["confirm_status"], row["order_status"], row["refund_status"]) == combo
    assert row["pay_amount"] == 129.9
    assert bool(row["receiver_name"]) == (combo == (1, 1, 1))  # ciphertext only while to be shipped


def test_pdd_enforces_the_30_minute_window_and_no_future_end(server):
    too_wide = call(server, "pdd", start=at(-31), end=at(0)).json()["error_response"]
    assert too_wide["error_code"] == 10000 and "30" in too_wide["sub_msg"]
    future = call(server, "pdd", start=at(-10), end=at(5)).json()["error_response"]
    assert future["error_code"] == 10000


def test_douyin_unix_seconds_fen_and_page_zero(world, server):
    world.orders["douyin"] = [order("douyin", paid=-9)]
    doc = call(server, "douyin").json()
    assert doc["code"] == 10000 and doc["data"]["page"] == 0
    row = doc["data"]["shop_order_list"][0]
    assert row["order_id"] == IDS["douyin"] and row["order_status"] == 2
    assert row["create_time"] == int(at(-10).timestamp()) and row["ship_time"] == 0
    assert row["pay_amount"] == 12990 and row["post_addr"]["province"]["name"] == "浙江省"


def test_youzan_envelope(world, server):
    world.orders["youzan"] = [order("youzan", paid=-9, shipped=-2)]
    doc = call(server, "youzan").json()
    assert doc["success"] is True and doc["code"] == 200 and doc["data"]["total_results"] == 1
    full = doc["data"]["full_order_info_list"][0]["full_order_info"]
    assert (
        full["order_info"]["tid"] == IDS["youzan"]
        and full["order_info"]["status"] == "WAIT_BUYER_CONFIRM_GOODS"
    )
    assert full["pay_info"]["payment"] == "129.90" and full["address_info"]["delivery_city"] == "杭州市"


def _bad_sign(c: Call) -> Call:
    if c.data is not None:
        return Call(c.method, c.params, {**c.data, "sign": "0" * 32}, c.body, c.headers)
    return Call(c.method, {**c.params, "sign": "0" * 64}, c.data, c.body, c.headers)


SIGN_ERRORS = {
    "tmall": lambda d: d["error_response"]["code"] == 25,
    "jd": lambda d: d["error_response"]["code"] == "12",
    "pdd": lambda d: d["error_response"]["error_code"] == 10001,
    "douyin": lambda d: d["code"] == 40003 and d["sub_code"] == "isv.signature-invalid",
}
SKEW_ERRORS = {
    "tmall": lambda d: d["error_response"]["code"] == 31,
    "jd": lambda d: d["error_response"]["code"] == "8",
    "pdd": lambda d: d["error_response"]["error_code"] == 10002,
    "douyin": lambda d: d["sub_code"] == "isv.timestamp-invalid",
}
PARAM_ERRORS = {
    "tmall": lambda d: d["error_response"]["code"] == 41,
    "jd": lambda d: (
        d["jingdong_pop_order_search_responce"]["searchorderinfo_result"]["apiResult"]["success"] is False
    ),
    "pdd": lambda d: d["error_response"]["error_code"] == 10000,
    "douyin": lambda d: d["code"] == 40004,
    "youzan": lambda d: d["code"] == 4001,
}


@pytest.mark.parametrize("channel", sorted(SIGN_ERRORS))
def test_invalid_signature_is_rejected(server, channel):
    assert SIGN_ERRORS[channel](call(server, channel, tamper=_bad_sign).json())


@pytest.mark.parametrize("channel", sorted(SKEW_ERRORS))
def test_stale_timestamp_is_rejected(server, channel):
    assert SKEW_ERRORS[channel](call(server, channel, now=at(-11), start=at(-30), end=at(-20)).json())


@pytest.mark.parametrize("channel", sorted(PARAM_ERRORS))
def test_page_size_above_100_is_rejected(server, channel):
    assert PARAM_ERRORS[channel](call(server, channel, size=101).json())


def test_tmall_window_over_one_day_is_rejected(server):
    assert PARAM_ERRORS["tmall"](call(server, "tmall", start=at(-24 * 60 - 1)).json())


def test_credentials_can_be_overridden(world, clock):
    creds = {"youzan": {"access_token": "yz-custom-token-1234"}}
    with ChannelServer(world, clock, credentials=creds) as srv:
        assert call(srv, "youzan").json()["code"] == 4202
        assert call(srv, "youzan", creds=creds["youzan"]).json()["success"] is True
        assert srv.credentials["tmall"] == DEFAULT_CREDENTIALS["tmall"]


def test_paging_is_sorted_by_modified_descending_and_stable(world, server):
    world.orders["tmall"] = [
        SimOrder(
            "tmall",
            f"39123456789012345{i:02d}",
            at(-10 + i),
            100,
            "S",
            "p",
            "c",
            "alipay",
            "WH",
            "zto",
            "T",
            events={"created": at(-10 + i)},
        )
        for i in range(5)
    ]
    ids = []
    for page in (1, 2, 3):
        ids += [t["tid_str"] for t in records("tmall", call(server, "tmall", page=page, size=2).json())]
    assert ids == [f"39123456789012345{i:02d}" for i in (4, 3, 2, 1, 0)]
    assert [c["page"] for c in server.calls] == [1, 2, 3]


def test_unknown_path_is_404(server):
    assert requests.get(server.url + "/nope", timeout=5).status_code == 404


# -- faults ------------------------------------------------------------------------------------
FAULT_ERRORS = {
    ("tmall", "auth_expired"): lambda r: r.json()["error_response"]["code"] == 27,
    ("jd", "auth_expired"): lambda r: r.json()["error_response"]["code"] == "19",
    ("pdd", "auth_expired"): lambda r: r.json()["error_response"]["error_code"] == 10019,
    ("douyin", "auth_expired"): lambda r: r.json()["sub_code"] == "isv.access-token-expired",
    ("youzan", "auth_expired"): lambda r: r.json()["code"] == 4201,
    ("tmall", "rate_limited"): lambda r: (
        "ban will last for 9 more seconds" in r.json()["error_response"]["sub_msg"]
    ),
    ("jd", "rate_limited"): lambda r: r.json()["error_response"]["code"] == "2",
    ("pdd", "rate_limited"): lambda r: r.json()["error_response"]["error_code"] == 52101,
    ("douyin", "rate_limited"): lambda r: r.json()["code"] == 60000,
    ("youzan", "rate_limited"): lambda r: r.status_code == 429 and r.headers["Retry-After"] == "9",
}


@pytest.mark.parametrize(("channel", "kind"), sorted(FAULT_ERRORS))
def test_fault_responses_use_the_platform_codes(server, channel, kind):
    server.faults.set(channel, kind, **({"ban": 9} if kind == "rate_limited" else {}))
    assert FAULT_ERRORS[(channel, kind)](call(server, channel))


def test_fault_for_the_next_n_requests_only(world, server):
    server.faults.set("jd", "server_error", times=2)
    assert [call(server, "jd").status_code for _ in range(3)] == [502, 502, 200]
    assert server.faults.active("jd") is None and server.requests["jd"] == 3


def test_platform_mode_server_error(server):
    server.faults.set("tmall", "server_error", mode="platform")
    err = call(server, "tmall").json()["error_response"]
    assert err["code"] == 15 and err["sub_code"].startswith("isp.")


def test_rate_limit_ban_runs_on_the_platform_clock(server, clock):
    server.faults.set("tmall", "rate_limited", ban=30, quota=1)
    assert "trades_sold_increment_get_response" in call(server, "tmall").json()  # within quota
    assert "30 more seconds" in call(server, "tmall").json()["error_response"]["sub_msg"]
    clock.advance(20)
    assert "10 more seconds" in call(server, "tmall").json()["error_response"]["sub_msg"]
    clock.advance(10)
    assert "trades_sold_increment_get_response" in call(server, "tmall").json()  # ban over, quota renewed


def test_garbage_bodies(world, server):
    world.orders["douyin"] = [order("douyin", paid=-9)]
    server.faults.set("douyin", "garbage", times=1)
    body = call(server, "douyin").content
    with pytest.raises(ValueError):
        json.loads(body)
    assert body.startswith(b'{"code": 10000')
    server.faults.set("douyin", "garbage", style="html", times=1)
    assert call(server, "douyin").text.startswith("<html>")


def test_timeout_fault_stalls_past_the_client_timeout(server):
    server.faults.set("pdd", "timeout", delay=0.3, times=1)
    with pytest.raises(requests.Timeout):
        preset = PRESETS["pdd"]
        c = preset.request(Credentials("pdd", DEFAULT_CREDENTIALS["pdd"]), at(-20), at(0), 1, 10, T0)
        requests.post(server.url_for("pdd"), data=c.data, timeout=0.05)


def test_vanish_mid_page_hides_the_head_after_the_first_request(world, server):
    world.orders["youzan"] = [
        SimOrder(
            "youzan",
            f"E2026021217500000060001{i}",
            at(-10 + i),
            100,
            "S",
            "p",
            "c",
            "wechat",
            "WH",
            "zto",
            "T",
            events={"created": at(-10 + i)},
        )
        for i in range(3)
    ]
    server.faults.set("youzan", "vanish_mid_page", count=1)
    first = call(server, "youzan").json()["data"]
    second = call(server, "youzan").json()["data"]
    assert (first["total_results"], second["total_results"]) == (3, 2)
    tid = first["full_order_info_list"][0]["full_order_info"]["order_info"]["tid"]
    assert tid not in json.dumps(second)
    server.faults.clear("youzan")
    assert call(server, "youzan").json()["data"]["total_results"] == 3


def test_fault_controls_validate_their_input():
    faults = Faults()
    with pytest.raises(ValueError, match="unknown fault"):
        faults.set("tmall", "meteor")
    with pytest.raises(ValueError, match="no parameter"):
        faults.set("tmall", "timeout", seconds=3)
    with pytest.raises(ValueError, match="times"):
        faults.set("tmall", "garbage", times=0)
    faults.set("tmall", "garbage")
    faults.set("jd", "garbage")
    faults.clear()
    assert faults.active("tmall") is None and faults.active("jd") is None


def test_view_treats_created_at_as_creation_even_without_event():
    o = SimOrder("tmall", "1", at(-5), 100, "S", "p", "c", "alipay", "WH", "zto", "T", events={})
    view = view_of(o, T0)
    assert view is not None and view.phase == "created" and view.modified == at(-5)
    assert view_of(o, at(-6)) is None


def test_secrets_never_leave_in_server_responses(world, server):
    world.orders["douyin"] = [order("douyin", paid=-9)]
    for channel in CHANNELS:
        server.faults.set(channel, "auth_expired")
        text = call(server, channel).text
        assert all(v not in text for v in DEFAULT_CREDENTIALS[channel].values())


def test_orders_added_to_the_world_are_picked_up(world, server):
    world.orders["jd"] = [order("jd", paid=-9)]
    assert len(records("jd", call(server, "jd").json())) == 1
    world.orders["jd"].append(
        SimOrder(
            "jd",
            "301234567891",
            at(-5),
            100,
            "S",
            "p",
            "c",
            "wechat",
            "WH",
            "zto",
            "T",
            events={"created": at(-5), "paid": at(-4)},
        )
    )
    assert len(records("jd", call(server, "jd").json())) == 2
