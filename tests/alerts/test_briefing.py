"""The morning briefing: once a day at briefing_at (service zone), golden KPIs vs the same time yesterday.

Real stores (SQLite, PostgreSQL), the real Service job and the local WeCom robot; ManualClock only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from test_engine import KEY, db, robot  # noqa: F401 (fixtures)

from metrics.snapshot import KpiValue, Snapshot, labels_of, load_snapshot_near, save_snapshot
from sentinel.config import ConfigError, parse_config
from sentinel.service import Service
from store.schema import kpi_snapshots, outbox

# 2026-02-12 08:00 Asia/Shanghai
DAY1_0800 = datetime(2026, 2, 12, 0, 0, tzinfo=UTC)


def config(robot_url: str, **alerts):
    raw = {
        "service": {"timezone": "Asia/Shanghai", "dashboard_url": "http://dash.example"},
        "alerts": {
            "briefing_route": "ops",
            "routes": {"ops": {"kind": "wecom", "url": robot_url, "key": KEY}},
            **alerts,
        },
    }
    return parse_config(raw, env={})


def kpis(at: datetime, sync: float, unreached: int, stuck_paid: int) -> Snapshot:
    values = (
        KpiValue("sync_paid_orders", (), 1842.0),
        KpiValue("sync_success_ratio", (), sync),
        KpiValue("sync_unreached_orders", (), float(unreached)),
        KpiValue("stuck_orders", labels_of(state="paid"), float(stuck_paid)),
        KpiValue("stuck_orders", labels_of(state="picked"), 2.0),
        KpiValue("duplicate_free_ratio", (), 0.998),
        KpiValue("sync_success_ratio", labels_of(channel="tmall"), 0.5),  # not a total: not reported
    )
    return Snapshot(at, values, 0.1)


def briefing_job(service: Service):
    [job] = [j for j in service.jobs() if j.name == "briefing"]
    return [job]


def test_briefing_at_nine_once_a_day_vs_the_same_time_yesterday(db, clock, robot):  # noqa: F811
    cfg = config(robot.url)
    clock.set(DAY1_0800)
    # Day 1: a KPI snapshot every 10 minutes for 25 hours, as the KPI job persists them.
    for i in range(25 * 6):
        at = DAY1_0800 + timedelta(minutes=10 * i)
        bad = at >= DAY1_0800 + timedelta(hours=24, minutes=30)  # the gap starts at 08:30 on day 2
        save_snapshot(db, kpis(at, 0.6531 if bad else 0.9999, 639 if bad else 0, 40 if bad else 3))
    with db.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(kpi_snapshots)).scalar()
    assert kept <= 3 + 26  # the newest few and one per hour, not all 150
    service = Service(cfg, clock, engine=db, collectors={})
    jobs = briefing_job(service)
    clock.set(DAY1_0800 + timedelta(hours=24, minutes=59))  # day 2, 08:59 local
    assert service.run_due(jobs) == {"briefing": False} and robot.messages() == []
    for _ in range(10):  # 09:00 ... 09:09, one run a minute
        clock.advance(60)
        service.run_due(jobs)
    [message] = robot.contents()
    assert message.startswith("## 履约晨报 2026-02-13（周五）")
    assert "对比昨日同一时间（02-12 09:00）" in message
    assert "- 订单状态同步成功率：**65.31%**（昨日 99.99%，" in message
    assert '<font color="warning">↓34.68 个百分点，变差</font>' in message
    assert "- 付款后未到仓订单：**639**（昨日 0，" in message and "↑639，变差" in message
    assert "- 停滞订单数：**42**（昨日 5，" in message  # summed over the states
    assert "- 订单ID去重率：**99.80%**（昨日 99.80%，持平）" in message
    assert "50.00%" not in message  # per-channel series are not part of the briefing
    assert "[查看看板](http://dash.example/)" in message
    # A restart the same morning sends nothing again.
    again = Service(cfg, clock, engine=db, collectors={})
    again.run_due(briefing_job(again))
    assert len(robot.messages()) == 1
    # The next day at 09:00: the next briefing, compared with this morning's figures.
    save_snapshot(db, kpis(clock.now() + timedelta(hours=24) - timedelta(minutes=10), 0.9999, 0, 3))
    clock.set(DAY1_0800 + timedelta(hours=49))  # day 3, 09:00 local
    again.run_due(briefing_job(again))
    assert len(robot.messages()) == 2
    assert robot.contents()[1].startswith("## 履约晨报 2026-02-14（周六）")
    with db.connect() as conn:
        keys = [r.dedup_key for r in conn.execute(select(outbox).order_by(outbox.c.id))]
    assert keys == ["briefing:ops:2026-02-13", "briefing:ops:2026-02-14"]


def test_a_service_down_at_nine_catches_up_later_but_not_in_the_evening(db, clock, robot):  # noqa: F811
    cfg = config(robot.url, briefing_at="08:30")
    save_snapshot(db, kpis(DAY1_0800, 0.9999, 0, 0))
    service = Service(cfg, clock, engine=db, collectors={})
    clock.set(DAY1_0800 + timedelta(hours=2))  # 10:00 local: within the catch-up window
    service.run_due(briefing_job(service))
    [message] = robot.contents()
    assert "昨日无数据" in message  # no snapshot from yesterday morning
    clock.set(DAY1_0800 + timedelta(hours=24 + 12))  # the next day 20:00: too late, nothing
    service.run_due(briefing_job(Service(cfg, clock, engine=db, collectors={})))
    assert len(robot.messages()) == 1


def test_no_briefing_without_a_route_and_unknown_routes_are_rejected(db, clock, robot):  # noqa: F811
    cfg = parse_config(
        {"alerts": {"routes": {"ops": {"kind": "wecom", "url": robot.url, "key": KEY}}}}, env={}
    )
    assert cfg.alerts.briefing is None
    assert [j.name for j in Service(cfg, clock, engine=db, collectors={}).jobs()] == ["kpi", "alerts"]
    with pytest.raises(ConfigError) as err:
        config(robot.url, briefing_route="oncall", briefing_at="9:00")
    assert "alerts.briefing_at: Value error, '9:00' is not a time of day like 09:00" in err.value.problems[0]


def test_snapshot_near_picks_the_closest_within_tolerance(db):  # noqa: F811
    for minutes in (0, 50, 70):
        save_snapshot(db, kpis(DAY1_0800 + timedelta(minutes=minutes), 0.9, 1, 1))
    near = load_snapshot_near(db, DAY1_0800 + timedelta(minutes=62), timedelta(minutes=30))
    assert near.computed_at == DAY1_0800 + timedelta(minutes=70)
    assert near.get("sync_success_ratio") == 0.9
    assert load_snapshot_near(db, DAY1_0800 + timedelta(hours=3), timedelta(minutes=30)) is None
