"""Returns in the simulated world: the return path, the stall fault, the ERP's return orders, and the
return-break alert of the returns_stall incident replayed through the whole pipeline."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sim.runner import run_scenario
from sim.scenario import ScenarioError, load_scenario, parse_scenario
from sim.wms import WmsDatabase, local_naive, wms_refund
from sim.world import World
from store.lifecycle import RETURNS


def _world(**changes) -> World:
    return World.generate(load_scenario("returns_stall").model_copy(update=changes))


def test_returns_walk_the_path_in_order_and_leave_the_rest_of_the_world_alone():
    plain, returned = _world(return_ratio=0.0, faults=()), _world(faults=())
    assert [o.raw_id for o in plain.orders] == [o.raw_id for o in returned.orders]
    walked = 0
    for a, b in zip(plain.orders, returned.orders, strict=True):
        assert {s: t for s, t in b.events.items() if s not in RETURNS} == a.events
        path = [b.events[s] for s in RETURNS if s in b.events]
        if path:
            walked += 1
            assert b.events["delivered"] < path[0] and path == sorted(path)
            assert list(b.events).index("return_requested") > list(b.events).index("delivered")
    delivered = sum("delivered" in o.events for o in plain.orders)
    assert 0.08 * delivered < walked < 0.16 * delivered  # return_ratio 0.12


def test_stall_keeps_matching_returns_in_their_state():
    world = _world()
    stalled = [o for o in world.orders if "return_stalled" in o.tags]
    assert world.fault_counts["return_stalled"] == len(stalled) > 50
    cut = load_scenario("returns_stall").faults[0].after
    for order in stalled:
        assert order.channel == "tmall" and order.events["return_requested"] >= cut
        assert "return_approved" not in order.events
    moving = [o for o in world.orders if "return_requested" in o.events and "return_stalled" not in o.tags]
    assert all(
        "return_approved" in o.events
        for o in moving
        if o.events["return_requested"] < world.end - timedelta(hours=13)
    )


def test_stall_fault_is_validated():
    base = {"name": "x", "start": "2026-01-01T00:00:00+08:00", "duration": "1h", "orders": 1, "paid": 0}
    with pytest.raises(ScenarioError) as err:
        parse_scenario({**base, "faults": [{"kind": "stall", "state": "refunded", "ratio": 0.5}]})
    assert "faults[0].state" in str(err.value)
    with pytest.raises(ScenarioError) as err:
        parse_scenario({**base, "faults": [{"kind": "stall", "state": "return_approved"}]})
    assert "exactly one of ratio and count" in str(err.value)


def test_return_orders_in_the_erp_database_carry_each_step_with_its_local_time(tmp_path):
    world = _world(faults=())
    wms = WmsDatabase(f"sqlite:///{tmp_path / 'wms.db'}")
    wms.create()
    order = next(o for o in world.orders if "refunded" in o.events)
    wms.sync(world, order.events["return_approved"])
    with wms.engine.connect() as conn:
        row = conn.execute(wms_refund.select().where(wms_refund.c.src_order_no == order.raw_id)).one()
    assert row.process_status == 30 and row.send_time is None  # 已同意, the buyer has not sent it back
    assert (row.created, row.agree_time) == (
        local_naive(order.events["return_requested"]),
        local_naive(order.events["return_approved"]),
    )  # naive Beijing time, as the ERP writes it
    wms.sync(world, world.end)
    with wms.engine.connect() as conn:
        row = conn.execute(wms_refund.select().where(wms_refund.c.src_order_no == order.raw_id)).one()
    assert row.process_status == 90 and row.refund_time is not None and row.return_logistics_no
    wms.close()


def test_returns_stall_raises_the_return_break_alert_for_the_stalled_channel_only():
    report = run_scenario("returns_stall", step=timedelta(minutes=5))
    assert report["truth"]["cause"] == "api_key_rotated"
    breaks = [a for a in report["alerts"] if a["rule"] == "return_break_high"]
    assert {a["labels"]["channel"] for a in breaks} == {"tmall"}
    assert "sync_ratio_low" not in {a["rule"] for a in report["alerts"]}
    kpis = {(k["kpi"], tuple(sorted(k["labels"].items()))): k["value"] for k in report["kpis"]}
    assert kpis[("return_break_ratio", (("channel", "tmall"),))] > 0.5
    assert kpis[("return_break_ratio", (("channel", "jd"),))] == 0
    assert any("退换货状态断点率" in n["body"]["markdown"]["content"] for n in report["notifications"])
