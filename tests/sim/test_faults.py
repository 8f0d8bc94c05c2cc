"""The composable fault primitives: each one parsed strictly and applied to the ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sim.scenario import FAULT_KINDS, ScenarioError, available_scenarios, load_scenario, parse_scenario
from sim.wms import stockout_row
from sim.world import World

BJ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 2, 18, tzinfo=BJ)
CATALOG = (
    "wms_push_gap",
    "intake_outage",
    "api_rate_limited",
    "duplicate_callbacks",
    "api_key_rotated",
    "mq_consumers_gone",
    "cancel_misfire",
    "timezone_skew",
    "pick_pack_stall",
    "price_mismatch",
    "field_filter_loss",
    "tracking_stall",
)


def world(*faults: dict, **extra) -> tuple[World, World]:
    """The same small world with and without `faults`."""
    raw = {
        "name": "t",
        "start": START,
        "duration": "4h",
        "settle": "2h",
        "orders": 800,
        "paid": 760,
        "return_ratio": 0.5,
        "latency": {
            "deliver": ["2h", "3h"],
            "return_request": ["10m", "30m"],
            "return_approve": ["5m", "20m"],
        },
        "faults": list(faults),
        "truth": {"cause": "x", "expect": ["r"]} if faults else {},
        **extra,
    }
    plain = dict(raw, faults=[], truth={})
    return World.generate(parse_scenario(raw)), World.generate(parse_scenario(plain))


def test_every_primitive_is_registered_with_an_applier():
    from sim.world import FAULT_APPLIERS

    expected = {"drop", "delay", "duplicate", "clock_skew", "auth_failure", "rate_limit", "consumers_gone"}
    expected |= {"cancel_rule", "price_change", "slow_callback", "stall"}
    assert expected <= set(FAULT_KINDS)
    assert set(FAULT_KINDS) <= set(FAULT_APPLIERS)


def test_each_catalog_incident_is_a_scenario_with_its_cause_and_detecting_rules():
    names = set(available_scenarios())
    for cause in CATALOG:
        assert cause in names
        sc = load_scenario(cause)
        assert sc.truth.cause == cause and sc.truth.expect, cause
        assert sc.fault_start > sc.start, cause  # the fault begins after a healthy stretch
    assert load_scenario("clean_day").truth.cause == "none"


def test_delay_shifts_the_hop_and_everything_after_it_for_the_matching_warehouse_only():
    after = START + timedelta(hours=1)
    faulty, plain = world(
        {
            "kind": "delay",
            "hop": "pack",
            "match": {"warehouse": ["WH-GZ01"]},
            "after": after,
            "delay": ["20m", "30m"],
        }
    )
    hit = 0
    for o, p in zip(faulty.orders, plain.orders, strict=True):
        if "delayed" not in " ".join(o.tags):
            assert o.events == p.events
            continue
        hit += 1
        assert o.warehouse == "WH-GZ01" and p.events["picked"] >= after
        extra = o.events["packed"] - p.events["packed"]
        assert timedelta(minutes=20) <= extra <= timedelta(minutes=30)
        assert o.events["picked"] == p.events["picked"]
        assert all(o.events[s] - p.events[s] == extra for s in ("shipped", "delivered") if s in p.events)
    assert hit == faulty.fault_counts["pack_delayed"] > 20


def test_cancel_rule_cancels_the_ratio_within_seconds_of_paying():
    faulty, _ = world(
        {
            "kind": "cancel_rule",
            "match": {"channel": ["douyin"]},
            "after": START + timedelta(hours=1),
            "until": START + timedelta(hours=2),
            "ratio": 0.5,
        }
    )
    cancelled = [o for o in faulty.orders if "cancelled_by_rule" in o.tags]
    window = [
        o
        for o in faulty.orders
        if o.channel == "douyin"
        and "paid" in o.events
        and timedelta(hours=1) <= o.events["paid"] - START < timedelta(hours=2)
    ]
    assert 0.3 * len(window) < len(cancelled) < 0.7 * len(window)
    for o in cancelled:
        assert set(o.events) == {"created", "paid", "cancelled"} and not o.in_wms
        assert timedelta(seconds=3) <= o.events["cancelled"] - o.events["paid"] <= timedelta(seconds=30)


def test_clock_skew_shifts_what_the_wms_writes_from_its_start_only():
    after = START + timedelta(hours=2)
    faulty, _ = world({"kind": "clock_skew", "system": "wms", "after": after, "offset": "7h"})
    end = faulty.end
    skew = lambda t: faulty.recorded_time("wms", t)  # noqa: E731
    seen = 0
    for i, o in enumerate(faulty.orders):
        if "packed" not in o.events:
            continue
        row = stockout_row(i, o, end, skew)
        true = stockout_row(i, o, end)
        shifted = o.events["packed"] >= after
        assert (row["pack_time"] - true["pack_time"]) == (timedelta(hours=7) if shifted else timedelta(0))
        seen += shifted
    assert seen > 50


def test_consumers_gone_loses_approvals_that_wait_past_the_ttl_and_delays_the_rest():
    after, until = START + timedelta(hours=3), START + timedelta(hours=4, minutes=30)
    faulty, plain = world(
        {"kind": "consumers_gone", "after": after, "until": until, "ttl": "1h"},
    )
    lost = [o for o in faulty.orders if "return_approval_expired" in o.tags]
    late = [o for o in faulty.orders if "return_approval_late" in o.tags]
    assert lost and late
    for o in lost:
        assert (
            after <= o.events["return_approved"] and o.events["return_approved"] + timedelta(hours=1) <= until
        )
        assert "return_awaiting_receipt" not in o.events
    for o in late:
        assert o.events["return_approved"] + timedelta(hours=1) > until
        assert o.events.get("return_awaiting_receipt", until) >= until


def test_a_stall_in_transit_stops_the_matching_parcels_scans_from_its_start():
    after = START + timedelta(hours=3)
    fault = {"kind": "stall", "state": "in_transit", "after": after, "ratio": 1.0,
             "match": {"carrier": ["zhongtong"], "city": ["广州市", "深圳市"]}}  # fmt: skip
    faulty, plain = world(fault, tracking=True, latency={"deliver": ["20h", "30h"]})
    hit = 0
    for o, p in zip(faulty.orders, plain.orders, strict=True):
        if "tracking_stalled" not in o.tags:
            assert (o.events, o.scans, o.track_pushes) == (p.events, p.scans, p.track_pushes)
            continue
        hit += 1
        assert o.carrier == "zhongtong" and o.city in ("广州市", "深圳市")
        assert "delivered" not in o.events and o.events["in_transit"] == p.events["in_transit"]
        stop = max(after, o.events["in_transit"])
        assert o.scans == tuple(s for s in p.scans if s[0] <= stop) and o.scans[-1][0] <= stop
        assert o.track_pushes == p.track_pushes[: len(o.track_pushes)]
        pushed = o.newest_scan(faulty.end)  # the last scan is pushed (in the world), then silence
        assert pushed == o.scans[-1][0] or (pushed is None and not p.track_pushes)
    missed = [
        p for p in plain.orders
        if p.carrier == "zhongtong" and p.city in ("广州市", "深圳市") and p.scans
        and p.events.get("delivered", faulty.end) > after
    ]  # fmt: skip
    assert hit == faulty.fault_counts["tracking_stalled"] == len(missed) > 5
    # healthy tracks never go 4 h without news (Kuaidi100 checks every 2 h; scans < 2 h apart)
    for p in plain.orders:
        for now in p.track_pushes[1:]:
            assert now - p.newest_scan(now - timedelta(seconds=1)) < timedelta(hours=4)
    with pytest.raises(ScenarioError, match="tracking = true"):
        world(fault)


def test_source_faults_leave_the_orders_alone_and_are_validated():
    faulty, plain = world(
        {"kind": "auth_failure", "channel": "tmall", "after": START + timedelta(hours=1)},
        {"kind": "rate_limit", "channel": "jd", "after": START, "quota": 2, "ban": 120},
    )
    assert [o.events for o in faulty.orders] == [o.events for o in plain.orders]
    with pytest.raises(ScenarioError) as err:
        world({"kind": "rate_limit", "channel": "ebay", "ban": 0})
    assert "faults[0].channel: unknown channel 'ebay'" in str(err.value)
    assert "faults[0].ban" in str(err.value)


def test_a_cause_needs_the_rules_that_detect_it():
    with pytest.raises(ScenarioError, match=r"truth: .*expect"):
        parse_scenario(
            {"name": "t", "start": START, "duration": "1h", "orders": 5, "paid": 4, "truth": {"cause": "x"}}
        )


def test_seed_and_scale_change_the_world_but_keep_its_shape():
    sc = load_scenario("intake_outage")
    base, reseeded = World.generate(sc), World.generate(sc, seed=7)
    scaled = World.generate(sc, scale=2)
    assert [o.raw_id for o in base.orders] != [o.raw_id for o in reseeded.orders]
    assert base.fault_counts == reseeded.fault_counts == {"order_intake_dropped": 317}
    assert scaled.fault_counts == {"order_intake_dropped": 634} and len(scaled.orders) == 2 * len(base.orders)
