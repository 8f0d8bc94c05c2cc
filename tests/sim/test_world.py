"""Scenario loading and the simulated world's ground truth."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sim.scenario import DropFault, ScenarioError, load_scenario, parse_scenario
from sim.world import World

BJ = ZoneInfo("Asia/Shanghai")
ID_FORMATS = {
    "tmall": re.compile(r"[1-9]\d{18}"),
    "jd": re.compile(r"[1-9]\d{11}"),
    "pdd": re.compile(r"\d{6}-\d{15}"),
    "douyin": re.compile(r"[1-9]\d{18}"),
    "youzan": re.compile(r"E\d{14}\d{9}"),
}


@pytest.fixture(scope="module")
def clean() -> World:
    return World.generate(load_scenario("clean_day"))


@pytest.fixture(scope="module")
def gap() -> World:
    return World.generate(load_scenario("wms_push_gap"))


def minimal(**extra) -> dict:
    raw = {
        "name": "t",
        "start": datetime(2026, 2, 12, 10, tzinfo=BJ),
        "duration": "1h",
        "orders": 50,
        "paid": 40,
    }
    raw.update(extra)
    return raw


# -- scenario loading ----------------------------------------------------------------------
def test_scenarios_load_with_their_settings():
    clean, gap = load_scenario("clean_day"), load_scenario("wms_push_gap")
    assert (clean.orders, clean.paid, clean.faults, clean.truth.cause) == (3000, 2850, (), "none")
    assert clean.duration == timedelta(hours=24) and clean.settle == timedelta(hours=2)
    assert gap.paid == 1842 and gap.truth.cause == "wms_push_gap"
    (fault,) = gap.faults
    assert isinstance(fault, DropFault)
    assert (fault.hop, fault.count, fault.match.channel, fault.match.payment_method) == (
        "wms",
        639,
        ("tmall",),
        ("alipay",),
    )
    assert fault.after == datetime(2026, 2, 12, 20, 30, tzinfo=BJ)


def test_scenario_by_path_and_scale(tmp_path):
    path = tmp_path / "mini.toml"
    path.write_text(
        'name = "mini"\nstart = 2026-02-12T10:00:00+08:00\nduration = "1h"\norders = 100\npaid = 90\n'
    )
    sc = load_scenario(str(path), scale=0.5, seed=7)
    assert (sc.name, sc.orders, sc.paid, sc.seed) == ("mini", 50, 45, 7)
    assert load_scenario("wms_push_gap", scale=0.1).faults[0].count == 64


def test_scenario_errors_name_every_location():
    raw = minimal(
        paid=60,
        colour="red",
        latency={"wms": [500, 30]},
        faults=[{"kind": "drop", "count": 0, "match": {"channel": ["ebay"]}}, {"kind": "explode"}],
    )
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw)
    text = str(err.value)
    assert "faults[0].count: Input should be greater than or equal to 1" in text
    assert "faults[0].match.channel: unknown channel(s) ['ebay']" in text
    assert "faults[1].kind: unknown fault kind 'explode'" in text
    assert "colour: unknown key" in text
    assert "latency.wms: need 0 <= min <= max, got [500, 30]" in text


def test_scenario_cross_checks():
    with pytest.raises(ScenarioError, match=r"paid \(60\) cannot exceed orders \(50\)"):
        parse_scenario(minimal(paid=60))
    with pytest.raises(ScenarioError, match="start: Input should have timezone info"):
        parse_scenario(minimal(start=datetime(2026, 2, 12, 10)))
    with pytest.raises(ScenarioError, match="no such scenario"):
        load_scenario("no_such_scenario")


def test_drop_needs_enough_matching_orders():
    after = datetime(2026, 2, 12, 10, 30, tzinfo=BJ)
    sc = parse_scenario(minimal(faults=[{"kind": "drop", "after": after, "count": 45}]))
    with pytest.raises(ScenarioError, match=r"faults\[0\].count: only \d+ matching paid orders"):
        World.generate(sc)


# -- generation --------------------------------------------------------------------------------
def test_generation_is_deterministic_from_the_seed():
    sc = load_scenario("wms_push_gap", scale=0.1)
    a, b, c = World.generate(sc), World.generate(sc), World.generate(sc, seed=99)
    assert [(o.raw_id, o.events) for o in a.orders] == [(o.raw_id, o.events) for o in b.orders]
    assert [o.raw_id for o in a.orders] != [o.raw_id for o in c.orders]


def test_native_ids_and_attributes(clean):
    ids = [o.raw_id for o in clean.orders]
    assert len(set(ids)) == len(ids)
    for order in clean.orders:
        assert ID_FORMATS[order.channel].fullmatch(order.raw_id), order.raw_id
        local = order.created_at.astimezone(BJ)
        if order.channel == "pdd":
            assert order.raw_id.startswith(f"{local:%y%m%d}-")
        if order.channel == "youzan":
            assert order.raw_id[1:15] == f"{local:%Y%m%d%H%M%S}"
        assert order.amount_fen > 0 and re.fullmatch(r"[A-Z]+-[A-Z0-9]+-[A-Z0-9]+", order.sku)
        assert order.province and order.city.endswith("市") and order.warehouse.startswith("WH-")
    assert any(int(o.raw_id) > 2**53 for o in clean.orders_by_channel("tmall"))
    assert {o.payment_method for o in clean.orders_by_channel("tmall")} == {"alipay"}
    assert {o.payment_method for o in clean.orders_by_channel("youzan")} == {"wechat"}
    assert {o.payment_method for o in clean.orders_by_channel("pdd")} == {"alipay", "wechat"}
    assert {o.carrier for o in clean.orders} <= {"zhongtong", "yuantong", "shunfeng", "yunda", "jd"}
    assert sum(len(clean.orders_by_channel(c)) for c in ("tmall", "jd", "pdd", "douyin", "youzan")) == 3000


def test_clean_day_stays_within_every_sla(clean):
    limits = {
        ("paid", "wms_received"): 15 * 60,
        ("picked", "packed"): 12 * 60,
        ("packed", "shipped"): 4 * 3600,
    }
    for order in clean.orders:
        ev = order.events
        assert clean.start <= order.created_at < clean.start + timedelta(hours=24)
        assert all(t <= clean.end for t in ev.values())
        assert not ("paid" in ev and "cancelled" in ev)
        assert order.in_wms and not order.tags
        for (a, b), limit in limits.items():
            if b in ev:
                assert 0 < (ev[b] - ev[a]).total_seconds() < limit
    truth = clean.truth(clean.end)
    assert (truth["created"], truth["paid"], truth["reached_wms"], truth["stuck_paid"]) == (
        3000,
        2850,
        2850,
        0,
    )
    assert truth["sync_success_ratio"] == 1.0 and truth["cause"] == "none" and truth["faults"] == {}
    assert 0 < truth["cancelled"] < 150


def test_clean_day_follows_an_intraday_curve(clean):
    by_hour = Counter(o.created_at.astimezone(BJ).hour for o in clean.orders)
    assert by_hour[21] > 3 * by_hour[4]
    assert sum(by_hour[h] for h in range(19, 23)) > sum(by_hour[h] for h in range(2, 8))


def test_wms_push_gap_ground_truth(gap):
    truth = gap.truth(gap.end)
    assert (truth["paid"], truth["reached_wms"], truth["stuck_paid"]) == (1842, 1203, 639)
    assert truth["cause"] == "wms_push_gap" and truth["faults"] == {"wms_push_dropped": 639}
    assert truth["by_channel"]["tmall"]["stuck_paid"] == 639
    assert all(t["stuck_paid"] == 0 for c, t in truth["by_channel"].items() if c != "tmall")
    dropped = [o for o in gap.orders if "wms_push_dropped" in o.tags]
    assert len(dropped) == 639 and gap.stuck_paid(gap.end) == dropped
    after = datetime(2026, 2, 12, 20, 30, tzinfo=BJ)
    for order in dropped:
        assert order.channel == "tmall" and order.payment_method == "alipay"
        assert order.events["paid"] >= after and not order.in_wms
        assert set(order.events) == {"created", "paid"}
    # The gap takes the first matching payments after 20:30, in payment order.
    first = min(o.events["paid"] for o in dropped)
    assert first < after + timedelta(minutes=2)
    by_hour = Counter(o.created_at.astimezone(BJ).hour for o in gap.orders)
    assert by_hour[20] + by_hour[21] > 2 * (by_hour[18] + by_hour[19])


def test_truth_applies_the_sla_and_window(gap):
    now = datetime(2026, 2, 12, 21, 0, tzinfo=BJ)
    sla = timedelta(minutes=15)
    truth = gap.truth(now)
    paid_before = [o for o in gap.orders if "paid" in o.events and o.events["paid"] <= now - sla]
    reached = [o for o in paid_before if o.events.get("wms_received", now + sla) <= now]
    assert truth["sync_paid_orders"] == len(paid_before)
    assert truth["sync_unreached_orders"] == len(paid_before) - len(reached)
    assert truth["sync_success_ratio"] == pytest.approx(len(reached) / len(paid_before))
    assert truth["stuck_paid"] == truth["sync_unreached_orders"] > 0
    assert truth["paid"] == sum(1 for o in gap.orders if o.events.get("paid", now + sla) <= now)
    later = gap.truth(now + timedelta(hours=30))  # everything paid has left the 24 h window
    assert later["sync_paid_orders"] == 0 and later["sync_success_ratio"] is None
    assert gap.truth(gap.start - timedelta(minutes=1))["created"] == 0
    assert datetime.fromisoformat(truth["at"]) == now.astimezone(UTC)
