"""Scenario replays through the whole pipeline: HTTP/SQL/file sources → store → KPIs → alerts → WeCom."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from sim.model import PAID_ONLY_CHANNELS
from sim.runner import Replay, run_scenario
from sim.scenario import ScenarioError
from store.records import observation_rows
from store.schema import orders

# Columns that say when Sentinel read something, not what the order is: they depend on poll timing.
_INGEST_TIMES = {"first_seen_at", "updated_at"}


def _bodies(report: dict) -> list[str]:
    return [n["body"]["markdown"]["content"] for n in report["notifications"]]


def test_clean_day_raises_no_alert():
    report = run_scenario("clean_day")
    assert report["truth"]["created"] == 3000
    assert report["alerts"] == []
    assert report["notifications"] == []
    kpis = {(k["kpi"], tuple(sorted(k["labels"].items()))): k["value"] for k in report["kpis"]}
    assert kpis[("sync_success_ratio", ())] == 1.0
    assert kpis[("sync_paid_orders", ())] == report["truth"]["sync_paid_orders"]


def test_wms_push_gap_alerts_with_the_true_stuck_count_and_channel():
    report = run_scenario("wms_push_gap")
    truth = report["truth"]
    assert (truth["paid"], truth["reached_wms"], truth["stuck_paid"]) == (1842, 1203, 639)
    fired = {a["rule"] for a in report["alerts"]}
    assert "sync_ratio_low" in fired
    sync_messages = [b for b in _bodies(report) if "订单状态同步成功率" in b]
    assert sync_messages, "no WeCom message about the sync ratio"
    assert all(n["response"]["errcode"] == 0 for n in report["notifications"])
    # Once every stuck order is past the SLA the message states the true count and the channel.
    final = sync_messages[-1]
    assert f"**{truth['stuck_paid']}** 单已付款超过 15 分钟未到达仓库" in final
    assert "天猫 639 单" in final
    kpis = {(k["kpi"], tuple(sorted(k["labels"].items()))): k["value"] for k in report["kpis"]}
    assert kpis[("sync_unreached_orders", ())] == truth["sync_unreached_orders"] == 639
    assert kpis[("sync_unreached_orders", (("channel", "tmall"),))] == 639


def _replay(restart_at: timedelta | None, tmp_path, name: str) -> tuple[list[dict], set, dict]:
    replay = Replay("wms_push_gap", scale=0.3, workdir=tmp_path / name)
    try:
        if restart_at is not None:
            replay.run_until(replay.world.start + restart_at)
            replay.restart_service()
        replay.run_until(replay.world.end)
        report = replay.finish(time.perf_counter())
        with replay.service.engine.connect() as conn:
            rows = [
                {k: v for k, v in r.items() if k not in _INGEST_TIMES}
                for r in conn.execute(select(orders).order_by(orders.c.global_id)).mappings()
            ]
            obs = {row[:5] for row in observation_rows(conn)}  # without the ingest time
        now = replay.clock.now()
        sim_states = {
            (o.channel, o.raw_id): o.state_at(now)
            for o in replay.world.orders
            if o.channel not in PAID_ONLY_CHANNELS or "paid" in o.events_until(now)
        }
        report["sim_states"] = sim_states
        return rows, obs, report
    finally:
        replay.close()


def test_a_restart_mid_run_leaves_the_store_exactly_as_an_uninterrupted_run(tmp_path):
    steady_rows, steady_obs, steady = _replay(None, tmp_path, "steady")
    rows, obs, report = _replay(timedelta(hours=2, minutes=37), tmp_path, "restarted")
    assert rows == steady_rows  # no gap, no duplicate, same global ids and milestones
    assert obs == steady_obs
    # ... and both equal the simulator's ground truth, order by order.
    stored = {(r["channel"], r["raw_order_id"]): r["state"] for r in rows}
    assert stored == {k: v for k, v in report["sim_states"].items() if v is not None}
    # The alert state survived the restart: each alert fired once, as in the steady run.
    fired = sorted((a["rule"], tuple(a["labels"].items())) for a in report["alerts"])
    assert fired == sorted((a["rule"], tuple(a["labels"].items())) for a in steady["alerts"])
    assert len(fired) == len(set(fired))


def test_unknown_scenario_names_the_file_and_the_known_ones():
    with pytest.raises(ScenarioError, match=r"nope\.toml: no such scenario; available: .*wms_push_gap"):
        run_scenario("nope")
