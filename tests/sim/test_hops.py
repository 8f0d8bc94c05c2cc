"""The ERP hop (Jushuitan order API) and carrier tracking (Kuaidi100 pushes) of the simulated world,
read back by the collectors configured in config.toml."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from collectors.errors import AuthExpired, RateLimited, SourceConfigError
from collectors.registry import build_collector
from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, load_config
from sim.erp import DEFAULT_CREDENTIALS, PATH, ErpServer, sign
from sim.scenario import load_scenario, parse_scenario
from sim.tracking import TrackingLog, push_line
from sim.world import World


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("clean_day", scale=0.1).with_hops()


@pytest.fixture(scope="module")
def world(scenario) -> World:
    return World.generate(scenario)


def test_hops_add_states_without_changing_the_rest_of_the_world(scenario, world):
    plain = World.generate(load_scenario("clean_day", scale=0.1))
    assert len(plain.orders) == len(world.orders)
    for with_hops, without in zip(world.orders, plain.orders, strict=True):
        rest = {s: t for s, t in with_hops.events.items() if s not in ("erp_accepted", "in_transit")}
        assert rest == without.events and with_hops.raw_id == without.raw_id
        ev = with_hops.events
        if "erp_accepted" in ev:
            assert ev["paid"] < ev["erp_accepted"] and with_hops.erp_pulled_at <= ev["erp_accepted"]
            if "wms_received" in ev:
                assert ev["erp_accepted"] < ev["wms_received"]
        if "in_transit" in ev:
            assert ev["shipped"] < ev["in_transit"] and with_hops.scans[0][0] == ev["in_transit"]
            assert "delivered" not in ev or ev["in_transit"] < ev["delivered"]
        for push in with_hops.track_pushes:
            assert any(at <= push for at, *_ in with_hops.scans)
        if with_hops.track_pushes:  # the first scan is pushed within 3 hours of shipping (SLA 4 h)
            assert with_hops.track_pushes[0] - ev["shipped"] <= timedelta(hours=3)
    paid = [o for o in world.orders if "paid" in o.events]
    manual = [o for o in paid if o.manual]
    assert 0.005 < len(manual) / len(paid) < 0.04  # ~2 % question orders in a clean world
    assert all(o.erp_pulled_at < o.events["erp_accepted"] for o in manual if "erp_accepted" in o.events)
    assert sum(1 for o in world.orders if "in_transit" in o.events) > 100


def test_erp_drop_keeps_orders_out_of_the_erp_and_the_wms(scenario):
    raw = {
        "name": "erp_gap",
        "start": scenario.start.isoformat(),
        "duration": "6h",
        "orders": 400,
        "paid": 300,
        "erp": True,
        "faults": [{"kind": "drop", "hop": "erp", "count": 20, "match": {"channel": ["tmall"]}}],
    }
    world = World.generate(parse_scenario(raw))
    dropped = [o for o in world.orders if "erp_pull_dropped" in o.tags]
    assert len(dropped) == 20 and world.fault_counts == {"erp_pull_dropped": 20}
    for o in dropped:
        assert o.in_channel and not o.in_erp and not o.in_wms and o.erp_pulled_at is None
        assert set(o.events) <= {"created", "paid"}


def _query(url: str, biz: dict, **override) -> dict:
    params = {
        "app_key": DEFAULT_CREDENTIALS["app_key"],
        "access_token": DEFAULT_CREDENTIALS["access_token"],
        "timestamp": override.pop("timestamp", "0"),
        "charset": "UTF-8",
        "version": "2",
        "biz": json.dumps(biz),
    }
    params.update(override)
    params["sign"] = override.get("sign") or sign(DEFAULT_CREDENTIALS["app_secret"], params)
    return requests.post(url, data=params, timeout=5).json()


def test_erp_server_enforces_jushuitan_signing_windows_and_paging(world):
    clock = ManualClock(world.end)
    now = str(int(world.end.timestamp()))
    day, last = (t.astimezone(ZoneInfo("Asia/Shanghai")) for t in (world.start, world.end))
    biz = {"modified_begin": f"{day:%Y-%m-%d} 00:00:00", "modified_end": f"{last:%Y-%m-%d} 23:59:59"}
    with ErpServer(world, clock) as erp:
        assert erp.url.endswith(PATH)
        doc = _query(erp.url, {**biz, "page_index": 1, "page_size": 50}, timestamp=now)
        assert doc["code"] == 0 and doc["data"]["page_index"] == 1
        total = doc["data"]["data_count"]
        assert total > 50 and doc["data"]["has_next"] and len(doc["data"]["orders"]) == 50
        first = doc["data"]["orders"][0]
        for name in (
            "o_id",
            "so_id",
            "shop_id",
            "status",
            "question_type",
            "pay_date",
            "modified",
            "ts",
            "items",
        ):
            assert name in first
        pages = [
            o
            for page in range(1, doc["data"]["page_count"] + 1)
            for o in _query(erp.url, {**biz, "page_index": page, "page_size": 50}, timestamp=now)["data"][
                "orders"
            ]
        ]
        assert len(pages) == len({o["so_id"] for o in pages}) == total
        assert {o["status"] for o in pages} <= {"Question", "Delivering", "Sent"}
        assert _query(erp.url, biz, timestamp=now, sign="0" * 32)["code"] == 100
        assert _query(erp.url, biz, timestamp=now, access_token="old")["code"] == 110
        assert _query(erp.url, {**biz, "modified_end": "2026-03-01 00:00:00"}, timestamp=now)["code"] == 120
        assert _query(erp.url, biz, timestamp="1")["code"] == 120  # a clock 56 years off
        erp.faults.set("jushuitan", "rate_limited", ban=30)
        limited = _query(erp.url, biz, timestamp=now)
        assert limited["code"] == 199 and "30秒" in limited["msg"]


def _config(**overrides):
    return load_config(DEFAULT_PATH, overrides=overrides)


def test_erp_collector_reads_acceptance_and_manual_actions(world):
    clock = ManualClock(world.end)
    with ErpServer(world, clock) as erp:
        cfg = _config(**{"sources.erp.url": erp.url, "sources.erp.initial_lookback": "30h"})
        collector = build_collector("erp", cfg.sources["erp"])
        batches = list(collector.poll(None, world.end))
        obs = [o for b in batches for o in b.observations]
        assert not [q for b in batches for q in b.quarantined]
        accepted = {o.raw_order_id: o.at for o in obs if o.state == "erp_accepted"}
        truth = {o.raw_id: o.events["erp_accepted"] for o in world.orders if "erp_accepted" in o.events}
        # an order shipped before the first poll shows Sent: its acceptance time is not in the record
        shipped_late = {o.raw_id for o in world.orders if "shipped" in o.events}
        assert {k: v for k, v in truth.items() if k not in shipped_late} == {
            k: v for k, v in accepted.items() if k not in shipped_late
        }
        manual = {o.raw_order_id for o in obs if o.manual_at is not None}
        assert manual == {o.raw_id for o in world.orders if o.manual} and manual
        erp.faults.set("jushuitan", "auth_expired")
        with pytest.raises(AuthExpired):
            list(collector.poll(None, world.end))
        erp.faults.set("jushuitan", "rate_limited", ban=30)
        with pytest.raises(RateLimited):
            list(build_collector("erp", cfg.sources["erp"], retry=_no_retry()).poll(None, world.end))
    with ErpServer(world, clock) as erp:
        wrong = _config(**{"sources.erp.url": erp.url, "sources.erp.credentials.app_secret": "wrong"})
        with pytest.raises(SourceConfigError, match="100"):
            list(build_collector("erp", wrong.sources["erp"]).poll(None, world.end))


def _no_retry():
    from collectors.errors import RetryPolicy

    return RetryPolicy(delays=(), sleep=lambda s: None)


def test_tracking_pushes_are_signed_and_read_with_verification(tmp_path, world):
    log = TrackingLog(tmp_path)
    written = log.sync(world, world.end)
    assert written == sum(len(o.track_pushes) for o in world.orders) > 0
    assert log.sync(world, world.end) == 0 and TrackingLog(tmp_path).sync(world, world.end) == 0
    lines = [json.loads(x) for x in log.path.read_text(encoding="utf-8").splitlines()]
    for line in lines[:50]:
        assert line["sign"] == hashlib.md5((line["param"] + log.salt).encode()).hexdigest().upper()
        param = json.loads(line["param"])
        assert param["lastResult"]["data"][-1]["status"] == "揽收"
    order = next(o for o in world.orders if o.track_pushes)
    forged = push_line(order, order.track_pushes[-1], salt="someone-else")
    unsigned = {**push_line(order, order.track_pushes[-1]), "sign": ""}
    log.write_raw(json.dumps(forged, ensure_ascii=False) + "\n" + json.dumps(unsigned) + "\n")
    cfg = _config(**{"sources.kuaidi100.path": str(log.path)})
    batches = list(build_collector("kuaidi100", cfg.sources["kuaidi100"]).poll(None, world.end))
    obs = [o for b in batches for o in b.observations]
    quarantined = [q for b in batches for q in b.quarantined]
    assert [(q.field, "signature mismatch" in q.reason or "unsigned" in q.reason) for q in quarantined] == [
        ("sign", True),
        ("sign", True),
    ]
    transit = {o.raw_order_id: o.at for o in obs if o.state == "in_transit"}
    assert transit == {o.raw_id: o.events["in_transit"] for o in world.orders if o.track_pushes}
    delivered = {o.raw_order_id for o in obs if o.state == "delivered"}
    assert delivered == {
        o.raw_id
        for o in world.orders
        if o.scans and o.scans[-1][1] == 3 and o.track_pushes[-1] >= o.scans[-1][0]
    }
    assert all(o.dims.get("carrier") for o in obs)
    # each push's newest scan is the progress of its status (carried by that status's observation)
    newest = {}
    for o in obs:
        if o.state == "in_transit" and o.progress_at is not None and o.raw_order_id not in delivered:
            newest[o.raw_order_id] = max(newest.get(o.raw_order_id, o.progress_at), o.progress_at)
    assert newest == {
        o.raw_id: max(at for at, _code, _text in o.scans if at <= o.track_pushes[-1])
        for o in world.orders
        if o.track_pushes and o.raw_id not in delivered
    }
    assert all(o.progress_at == o.at for o in obs if o.state == "delivered")


def test_config_requires_a_salt_for_signed_pushes():
    from sentinel.config import ConfigError

    with pytest.raises(ConfigError, match="credentials.salt"):
        _config(**{"sources.kuaidi100.credentials.salt": ""})


def test_stop_tracking_keeps_the_scans_and_pushes_before_the_stall(scenario):
    from sim.world import stop_tracking

    world = World.generate(scenario)
    order = next(o for o in world.orders if len(o.scans) >= 3)
    cut = order.scans[1][0]
    stop_tracking(order, cut)
    assert [s[0] for s in order.scans] == [
        s[0] for s in World.generate(scenario).orders[world.orders.index(order)].scans[:2]
    ]
    assert order.track_pushes and order.track_pushes[-1] >= cut
    assert "delivered" not in order.events and "in_transit" in order.events
    stop_tracking(order, order.events["shipped"])
    assert order.scans == () and order.track_pushes == () and "in_transit" not in order.events


def test_manual_review_fault_raises_the_question_orders(scenario):
    after = scenario.start + timedelta(hours=10)
    faulty = scenario.model_copy(
        update={
            "faults": parse_scenario(
                {
                    "name": "x",
                    "start": scenario.start.isoformat(),
                    "duration": "1h",
                    "orders": 1,
                    "paid": 0,
                    "faults": [{"kind": "manual_review", "after": after.isoformat(), "ratio": 0.3}],
                }
            ).faults
        }
    )
    world, clean = World.generate(faulty), World.generate(scenario)
    hit = [o for o in world.orders if "manual_review" in o.tags]
    assert world.fault_counts["manual_review"] == len(hit) > 10
    for o in hit:
        assert o.events["paid"] >= after and o.manual == "疑似风险订单"
        assert o.erp_pulled_at <= o.events["erp_accepted"]
    ratio = sum(1 for o in world.orders if o.manual) / sum(1 for o in world.orders if "paid" in o.events)
    base = sum(1 for o in clean.orders if o.manual) / sum(1 for o in clean.orders if "paid" in o.events)
    assert ratio > base + 0.05  # well past the 3.5 % threshold
