"""Alert lifecycle over real stores (SQLite, PostgreSQL) delivering to the real local WeCom robot."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select

from alerts.engine import AlertEngine, fingerprint
from alerts.notifiers.wecom import WeComNotifier
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.config import parse_config
from sim.wecom import WeComReceiver
from store.db import init_schema, make_engine
from store.schema import alerts, outbox

KEY = "5d0c2e64-7f1a-4b8e-9c3d-2a6b8e1f4c70"


def make_config(robot_url: str = "http://127.0.0.1:1/send", **rule_overrides):
    rule = {
        "name": "sync_ratio_low",
        "kpi": "sync_success_ratio",
        "op": "<",
        "threshold": 0.9995,
        "for": "5m",
        "min_count": 10,
        "severity": "P1",
        "route": "ops",
    }
    rule.update(rule_overrides)
    return parse_config(
        {
            "channels": {"tmall": {"code": "TB", "name": "天猫"}, "jd": {"code": "JD", "name": "京东"}},
            "alerts": {
                "repeat_interval": "1h",
                "group_wait": "0s",  # one message per notice here; grouping is tested in test_grouping
                "group_interval": "0s",
                "routes": {"ops": {"kind": "wecom", "url": robot_url, "key": KEY}},
                "rules": [rule],
            },
        },
        env={},
    )


def sync_snapshot(clock, ratio: float | None, paid: int = 1842, channels: dict | None = None) -> Snapshot:
    """The total sync series (absent when ratio is None), plus per-channel (ratio, paid) series."""
    values = []
    if ratio is not None:
        values += [
            KpiValue("sync_success_ratio", (), ratio),
            KpiValue("sync_paid_orders", (), paid),
            KpiValue("sync_unreached_orders", (), round(paid * (1 - ratio))),
        ]
    for name, (r, n) in (channels or {}).items():
        labels = labels_of(channel=name)
        values += [
            KpiValue("sync_success_ratio", labels, r),
            KpiValue("sync_paid_orders", labels, n),
            KpiValue("sync_unreached_orders", labels, round(n * (1 - r))),
        ]
    return Snapshot(clock.now(), tuple(values))


@pytest.fixture
def db(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def robot(clock):
    with WeComReceiver(clock, [KEY]) as receiver:
        yield receiver


def build(db, clock, robot, config=None, key=KEY) -> AlertEngine:
    config = config or make_config(robot.url)
    notifiers = {"ops": WeComNotifier(robot.url, SecretStr(key), clock)}
    return AlertEngine(db, config, clock, notifiers)


def outbox_rows(db) -> list:
    with db.connect() as conn:
        return conn.execute(select(outbox).order_by(outbox.c.id)).all()


def test_pending_then_firing_after_for_then_one_resolved_message(db, clock, robot):
    engine = build(db, clock, robot)
    bad = 1203 / 1842
    [t] = engine.evaluate(sync_snapshot(clock, bad))
    assert (t.from_state, t.to_state, t.rule) == ("inactive", "pending", "sync_ratio_low")
    for _ in range(9):  # 4.5 minutes: nothing fires before `for`
        clock.advance(30)
        assert engine.evaluate(sync_snapshot(clock, bad)) == []
    assert outbox_rows(db) == []
    assert engine.active_alerts()[0]["state"] == "pending"
    clock.advance(30)
    [t] = engine.evaluate(sync_snapshot(clock, bad))
    assert (t.kind, t.value, t.at) == ("firing", bad, clock.now())
    assert engine.evaluate(sync_snapshot(clock, bad)) == []  # evaluating twice enqueues once
    clock.advance(30)
    [t] = engine.evaluate(sync_snapshot(clock, 0.9999))
    assert t.kind == "resolved"
    for _ in range(3):
        clock.advance(30)
        assert engine.evaluate(sync_snapshot(clock, 0.9999)) == []
    assert [(r.kind, r.status) for r in outbox_rows(db)] == [("firing", "pending"), ("resolved", "pending")]
    results = engine.deliver()
    assert [(r.kind, r.status) for r in results] == [("firing", "sent"), ("resolved", "sent")]
    firing, resolved = robot.contents()
    assert "订单状态同步成功率低于阈值" in firing and "**639** 单" in firing
    assert "已恢复" in resolved and "持续时长：30 秒" in resolved
    assert engine.deliver() == []
    assert engine.active_alerts() == []


def test_condition_clearing_while_pending_never_notifies(db, clock, robot):
    engine = build(db, clock, robot)
    engine.evaluate(sync_snapshot(clock, 0.5))
    clock.advance(60)
    [t] = engine.evaluate(sync_snapshot(clock, 1.0))
    assert (t.from_state, t.to_state) == ("pending", "inactive")
    clock.advance(600)
    assert engine.evaluate(sync_snapshot(clock, 1.0)) == []
    assert outbox_rows(db) == []


def test_restart_keeps_pending_since_and_never_re_enqueues(db, clock, robot):
    build(db, clock, robot).evaluate(sync_snapshot(clock, 0.5))
    started = clock.now()
    clock.advance(timedelta(minutes=4))
    assert build(db, clock, robot).evaluate(sync_snapshot(clock, 0.5)) == []  # restarted: still pending
    clock.advance(timedelta(minutes=1))
    [t] = build(db, clock, robot).evaluate(sync_snapshot(clock, 0.5))  # 5 min after the first pending
    assert t.kind == "firing"
    with db.connect() as conn:
        row = conn.execute(select(alerts)).one()
    assert row.pending_since == started and row.fired_at == clock.now()
    for _ in range(3):  # more restarts at the same moment and later: nothing new
        assert build(db, clock, robot).evaluate(sync_snapshot(clock, 0.5)) == []
        clock.advance(60)
    assert len(outbox_rows(db)) == 1


def test_repeat_interval_while_firing(db, clock, robot):
    engine = build(db, clock, robot, make_config(robot.url, **{"for": "0s"}))
    [t] = engine.evaluate(sync_snapshot(clock, 0.5))
    assert (t.from_state, t.to_state) == ("inactive", "firing")  # for = 0 fires at once
    for _ in range(130):  # 2 h 10 min in 1-minute steps
        clock.advance(60)
        engine.evaluate(sync_snapshot(clock, 0.5))
        build(db, clock, robot, make_config(robot.url, **{"for": "0s"})).evaluate(sync_snapshot(clock, 0.5))
    kinds = [r.kind for r in outbox_rows(db)]
    assert kinds == ["firing", "repeat", "repeat"]
    engine.deliver()
    assert "履约告警持续中" in robot.contents()[1] and "已持续 1 小时" in robot.contents()[1]


def test_min_count_ignores_small_denominators_and_by_channel_is_per_series(db, clock, robot):
    config = make_config(robot.url, by=["channel"], **{"for": "0s"})
    engine = build(db, clock, robot, config)
    snap = sync_snapshot(clock, 0.5, channels={"tmall": (0.5, 1000), "jd": (0.0, 9)})  # jd: 9 < min_count
    [t] = engine.evaluate(snap)
    assert dict(t.labels) == {"channel": "tmall"} and t.kind == "firing"
    assert t.fingerprint == fingerprint("sync_ratio_low", labels_of(channel="tmall"))
    [active] = engine.active_alerts()
    assert active["labels"] == {"channel": "tmall"} and active["severity"] == "P1"
    engine.deliver()
    assert "> 范围：渠道 天猫" in robot.contents()[0]


def test_series_disappearing_resolves_once(db, clock, robot):
    engine = build(db, clock, robot, make_config(robot.url, **{"for": "0s"}))
    engine.evaluate(sync_snapshot(clock, 0.5))
    clock.advance(30)
    [t] = engine.evaluate(sync_snapshot(clock, None))  # the ratio series is absent (no paid orders)
    assert (t.kind, t.value) == ("resolved", None)
    clock.advance(30)
    assert engine.evaluate(sync_snapshot(clock, None)) == []
    assert [r.kind for r in outbox_rows(db)] == ["firing", "resolved"]


def test_refiring_after_resolve_is_a_new_episode(db, clock, robot):
    engine = build(db, clock, robot, make_config(robot.url, **{"for": "0s"}))
    for ratio in (0.5, 1.0, 0.5, 1.0):
        engine.evaluate(sync_snapshot(clock, ratio))
        clock.advance(60)
    assert [r.kind for r in outbox_rows(db)] == ["firing", "resolved", "firing", "resolved"]
    assert len({r.dedup_key for r in outbox_rows(db)}) == 4


def test_sixty_alerts_never_exceed_twenty_per_minute_and_the_overflow_folds_into_a_digest(db, clock, robot):
    channels = {f"shop{i:02d}": (0.1, 100) for i in range(60)}
    config = make_config(robot.url, by=["channel"], group_by=["channel"], **{"for": "0s"})
    engine = build(db, clock, robot, config)
    assert len(engine.evaluate(sync_snapshot(clock, None, channels=channels))) == 60
    assert len(outbox_rows(db)) == 60  # one group per channel: 60 messages queued within the minute
    for _ in range(40):  # deliver every 10 s for a few minutes
        engine.deliver()
        clock.advance(10)
    rows = outbox_rows(db)
    assert [r.status for r in rows] == ["sent"] * 19 + ["folded"] * 41 + ["sent"]
    assert rows[-1].kind == "digest" and rows[-1].dedup_key == f"fold:{rows[19].id}"
    assert all(r["response"]["errcode"] == 0 for r in robot.received)  # never a 45009
    times = [datetime.fromisoformat(r["at"]) for r in robot.received]
    assert max(sum(1 for u in times if t <= u < t + timedelta(seconds=60)) for t in times) <= 19
    contents = robot.contents()
    assert all(len(c.encode("utf-8")) <= 4096 for c in contents)
    assert 19 < len(contents) < 60
    text = "\n".join(contents)
    for name in channels:  # none lost, none twice
        assert text.count(f"> 范围：渠道 {name}\n") == 1


def test_split_body_resumes_after_throttle_without_resending_parts(db, clock, robot):
    engine = build(db, clock, robot)
    notifier = engine.notifiers["ops"]
    for i in range(18):
        assert notifier.send(f"filler {i}")[0].ok
    body = "\n".join(f"> 第 {i:03d} 行：天猫 滞留订单明细" for i in range(300))  # ~3 parts
    with db.begin() as conn:
        conn.execute(
            insert(outbox).values(
                dedup_key="big",
                fingerprint="f",
                route="ops",
                kind="firing",
                body=body,
                status="pending",
                attempts=0,
                parts_sent=0,
                created_at=clock.now(),
            )
        )
    [first] = engine.deliver()
    assert first.status == "retry" and "throttled" in first.detail and first.attempts == 1
    clock.advance(61)
    [second] = engine.deliver()
    assert second.status == "sent"
    parts = robot.contents()[18:]
    assert len(parts) == len(notifier.split(body)) and "\n".join(parts) == body


def test_permanent_failure_is_visible_and_does_not_block_other_rows(db, clock, robot):
    engine = build(db, clock, robot, make_config(robot.url, **{"for": "0s"}), key="wrong-" + KEY)
    engine.evaluate(sync_snapshot(clock, 0.5))
    [result] = engine.deliver()
    assert result.status == "failed" and "93000" in result.detail
    [row] = engine.deliveries()
    assert row["status"] == "failed" and "93000" in row["response"] and "body" not in row
    assert KEY not in row["response"]
    assert engine.deliver() == []  # failed rows are not retried


def test_transient_failure_retries_with_backoff_and_survives_restart(db, clock, robot):
    config = make_config(robot.url, **{"for": "0s"})
    down = AlertEngine(
        db, config, clock, {"ops": WeComNotifier("http://127.0.0.1:9/x", SecretStr(KEY), clock, timeout=1)}
    )
    down.evaluate(sync_snapshot(clock, 0.5))
    [r1] = down.deliver()
    assert r1.status == "retry" and r1.next_attempt_at == clock.now() + timedelta(seconds=30)
    assert down.deliver() == []  # not due yet
    clock.advance(30)
    [r2] = down.deliver()
    assert r2.attempts == 2 and r2.next_attempt_at == clock.now() + timedelta(seconds=60)
    clock.advance(60)
    [r3] = build(db, clock, robot, config).deliver()  # restarted with the robot reachable
    assert r3.status == "sent" and r3.attempts == 3
    assert len(robot.messages()) == 1


def test_missing_notifier_fails_visibly(db, clock):
    engine = AlertEngine(db, make_config(**{"for": "0s"}), clock, {})
    engine.evaluate(sync_snapshot(clock, 0.5))
    [result] = engine.deliver()
    assert result.status == "failed" and "no notifier for route 'ops'" in result.detail


def test_removed_rule_closes_its_alerts_quietly(db, clock, robot):
    build(db, clock, robot, make_config(robot.url, **{"for": "0s"})).evaluate(sync_snapshot(clock, 0.5))
    other = make_config(robot.url, name="another_rule", threshold=0.1)
    [t] = build(db, clock, robot, other).evaluate(sync_snapshot(clock, 0.5))
    assert (t.rule, t.kind) == ("sync_ratio_low", "resolved")
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 1  # only the firing
