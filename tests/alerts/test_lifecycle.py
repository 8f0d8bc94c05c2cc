"""Grouping, digests, structured webhook alerts, silences, inhibition, no-data, ack/escalation, quiet hours.

Real stores (SQLite, PostgreSQL) and real local receivers; time moves only on the ManualClock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from test_engine import KEY, db, outbox_rows, robot, sync_snapshot  # noqa: F401 (fixtures)

from alerts.engine import AlertEngine
from alerts.model import parse_matcher
from alerts.notifiers.webhook import WebhookNotifier
from alerts.notifiers.wecom import WeComNotifier
from alerts.silences import add_silence, expire_silence, list_silences
from collectors.errors import SourceTimeout
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.config import parse_config
from sim.robots.webhook import WebhookReceiver, schema_problem
from sim.wecom import WeComReceiver
from store.schema import alert_notices
from store.store import Store

ESCALATION_KEY = "0b7e4c2a-1d3f-4e5a-8b9c-6d7e8f9a0b1c"
CHANNELS = {"tmall": {"code": "TB", "name": "天猫"}, "jd": {"code": "JD", "name": "京东"}}
HTTP_SOURCE = {
    "kind": "http",
    "preset": "tmall",
    "url": "http://127.0.0.1:1/router",
    "mapping": {"order_id": "tid", "status": "status", "status_time": "modified"},
}


def rule(**overrides) -> dict:
    base = {
        "name": "sync_ratio_low",
        "kpi": "sync_success_ratio",
        "by": ["channel"],
        "op": "<",
        "threshold": 0.9995,
        "severity": "P1",
        "route": "ops",
    }
    return {**base, **overrides}


def config(robot_url: str, rules: list[dict], routes: dict | None = None, **alerts):
    raw = {
        "channels": CHANNELS,
        "sources": {
            "tmall_api": {**HTTP_SOURCE, "channel": "tmall"},
            "jd_api": {**HTTP_SOURCE, "channel": "jd"},
        },
        "alerts": {
            "repeat_interval": "1h",
            "routes": routes or {"ops": {"kind": "wecom", "url": robot_url, "key": KEY}},
            "rules": rules,
            **alerts,
        },
    }
    return parse_config(raw, env={})


def engine_for(db, clock, cfg, notifiers, store=None) -> AlertEngine:  # noqa: F811
    return AlertEngine(db, cfg, clock, notifiers, health=store.health if store else None)


def wecom(robot, clock, key=KEY):  # noqa: F811
    return WeComNotifier(robot.url, SecretStr(key), clock)


def snap(clock, **channels: float) -> Snapshot:
    return sync_snapshot(clock, None, channels={name: (ratio, 1000) for name, ratio in channels.items()})


def run(engine, clock, snapshot_of, minutes: float, step: float = 30) -> None:
    """Evaluate and deliver every `step` seconds for `minutes`, like the service's alert job."""
    for _ in range(int(minutes * 60 / step)):
        engine.evaluate(snapshot_of())
        engine.deliver()
        clock.advance(step)


# -- grouping --------------------------------------------------------------------------------------
def test_alerts_firing_within_group_wait_go_out_as_one_digest_and_resolved_once(db, clock, robot):  # noqa: F811
    cfg = config(robot.url, [rule()])  # group_by defaults to the rule; group_wait 30s, interval 5m
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)})
    engine.evaluate(snap(clock, tmall=0.5))
    clock.advance(10)
    engine.evaluate(snap(clock, tmall=0.5, jd=0.6))  # a second alert of the group, within group_wait
    assert engine.deliver() == []  # the group waits
    clock.advance(20)
    [sent] = engine.deliver()
    assert sent.kind == "digest" and sent.status == "sent"
    [digest] = robot.contents()
    assert digest.startswith("## 履约告警汇总（告警 2 条）")
    assert "> 范围：渠道 天猫" in digest and "> 范围：渠道 京东" in digest
    clock.advance(60)
    engine.evaluate(snap(clock, tmall=1.0, jd=0.6))  # tmall resolves 1.5 min after the digest
    run(engine, clock, lambda: snap(clock, tmall=1.0, jd=0.6), minutes=3)
    assert len(robot.contents()) == 1  # group_interval (5 min) not over yet
    run(engine, clock, lambda: snap(clock, tmall=1.0, jd=0.6), minutes=1.5)  # due at 5.5 min
    assert len(robot.contents()) == 2
    resolved = robot.contents()[1]
    assert "已恢复" in resolved and "天猫" in resolved and "京东" not in resolved
    run(engine, clock, lambda: snap(clock, tmall=1.0, jd=0.6), minutes=30)
    assert len(robot.contents()) == 2  # one "resolved" per alert, never repeated


def test_ten_kilobyte_digest_arrives_as_several_valid_wecom_messages(db, clock, robot):  # noqa: F811
    shops = {f"shop{i:02d}": 0.2 for i in range(24)}
    cfg = config(
        robot.url, [rule(summary="订单付款后未推送到仓库，检查 ERP→WMS 推送任务" * 3)], group_wait="0s"
    )
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)})
    engine.evaluate(snap(clock, **shops))
    [row] = outbox_rows(db)
    assert row.kind == "digest" and len(row.body.encode("utf-8")) > 10_000
    [result] = engine.deliver()
    assert result.status == "sent"
    contents = robot.contents()
    assert len(contents) >= 3 and all(len(c.encode("utf-8")) <= 4096 for c in contents)
    assert all(r["response"]["errcode"] == 0 for r in robot.received)
    assert "\n".join(contents) == row.body
    assert all(f"渠道 {name}\n" in row.body for name in shops)


# -- structured alerts to the webhook ----------------------------------------------------------------
def test_webhook_gets_alertmanager_json_from_structured_alerts(db, clock):  # noqa: F811
    with WebhookReceiver(clock) as hook:
        routes = {"hook": {"kind": "webhook", "url": hook.url}}
        cfg = config(
            hook.url, [rule(route="hook", runbook="先查 ERP 推送队列")], routes=routes, group_wait="0s"
        )
        notifier = WebhookNotifier(hook.url, clock, receiver="hook", external_url="http://dash:8501")
        engine = engine_for(db, clock, cfg, {"hook": notifier})
        started = clock.now()
        engine.evaluate(snap(clock, tmall=0.4, jd=0.5))
        engine.deliver()
        clock.advance(timedelta(minutes=6))
        engine.evaluate(snap(clock, tmall=1.0, jd=0.5))
        engine.deliver()
        firing, resolved = hook.messages()
    assert schema_problem(firing) is None and schema_problem(resolved) is None
    assert firing["groupLabels"] == {"alertname": "sync_ratio_low"} and len(firing["alerts"]) == 2
    assert firing["commonLabels"] == {
        "alertname": "sync_ratio_low",
        "kpi": "sync_success_ratio",
        "severity": "P1",
    }
    jd, tmall = sorted(firing["alerts"], key=lambda a: a["labels"]["channel"])
    assert tmall["labels"] == {
        "alertname": "sync_ratio_low",
        "channel": "tmall",
        "kpi": "sync_success_ratio",
        "severity": "P1",
    }
    assert tmall["annotations"]["value"] == "0.4" and tmall["annotations"]["threshold"] == "< 0.9995"
    assert tmall["annotations"]["runbook"] == "先查 ERP 推送队列"
    assert tmall["startsAt"] == started.strftime("%Y-%m-%dT%H:%M:%SZ") and tmall["status"] == "firing"
    [gone] = resolved["alerts"]
    assert resolved["status"] == "resolved" and gone["labels"] == tmall["labels"]  # severity kept
    assert gone["fingerprint"] == tmall["fingerprint"] and gone["endsAt"] == clock.now().strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# -- silences ------------------------------------------------------------------------------------------
def test_silence_mutes_matching_alerts_until_it_expires(db, clock, robot):  # noqa: F811
    cfg = config(robot.url, [rule(group_by=["channel"])], group_wait="0s", group_interval="0s")
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)})
    silence = add_silence(
        db, [parse_matcher("channel=~tm.*"), parse_matcher("alertname=sync_ratio_low")],
        clock.now(), clock.now() + timedelta(hours=2), "zhangsan", "大促压测，已知", clock.now(),
    )  # fmt: skip
    [t1, t2] = engine.evaluate(snap(clock, tmall=0.5, jd=0.5))
    assert {t1.kind, t2.kind} == {"firing"}  # a silenced alert still changes state
    engine.deliver()
    [sent] = robot.contents()
    assert "京东" in sent and "天猫" not in sent
    with db.connect() as conn:
        reasons = [r.reason for r in conn.execute(select(alert_notices)) if r.status == "suppressed"]
    assert reasons == [f"silenced by #{silence.id} (zhangsan)"]
    assert [s.id for s in list_silences(db, clock.now())] == [silence.id]
    clock.advance(timedelta(minutes=30))
    expired = expire_silence(db, silence.id, "lisi", clock.now())
    assert expired.expired_by == "lisi" and expired.state(clock.now()) == "expired"
    assert list_silences(db, clock.now()) == [] and len(list_silences(db, clock.now(), True)) == 1
    clock.advance(timedelta(hours=1))
    engine.evaluate(snap(clock, tmall=1.0, jd=0.5))  # tmall resolves after the silence ended: sent
    engine.deliver()
    assert [c for c in robot.contents() if "天猫" in c and "已恢复" in c]


def test_silence_cli_add_list_expire(db, clock, tmp_path, capsys, store_url):  # noqa: F811
    from sentinel.__main__ import main

    path = tmp_path / "config.toml"
    path.write_text(f'[service]\nstore_url = "{store_url}"\n', encoding="utf-8")
    args = ["--config", str(path)]
    assert main(["silence", "add", *args, "--match", "channel=~tm.*", "--duration", "2h",
                 "--by", "zhangsan", "--comment", "大促压测"]) == 0  # fmt: skip
    added = capsys.readouterr().out
    assert "#1" in added and "channel=~tm.*" in added
    assert main(["silence", "list", *args]) == 0
    assert "zhangsan" in capsys.readouterr().out
    assert main(["silence", "expire", *args, "1", "--by", "lisi"]) == 0
    capsys.readouterr()
    assert main(["silence", "list", *args]) == 0
    assert "zhangsan" not in capsys.readouterr().out
    assert main(["silence", "add", *args, "--match", "channel=~(", "--duration", "1h",
                 "--by", "x", "--comment", "y"]) == 2  # fmt: skip
    assert "invalid regex" in capsys.readouterr().err


# -- inhibition and no-data rules --------------------------------------------------------------------
def test_a_silent_source_inhibits_the_kpi_alerts_of_its_channel(db, clock, robot):  # noqa: F811
    rules = [
        rule(group_by=["channel"]),
        {
            "name": "source_down",
            "no_data": "10m",
            "severity": "P1",
            "route": "ops",
            "runbook": "检查接口凭证",
        },
    ]
    inhibit = [{"source_match": {"alertname": "source_down"}, "target_match_re": {"kpi": "sync_.*"},
                "equal": ["channel"]}]  # fmt: skip
    cfg = config(robot.url, rules, group_wait="0s", group_interval="0s", inhibit_rules=inhibit)
    store = Store(db, {}, "Asia/Shanghai")
    store.record_poll_success("tmall_api", clock.now())
    store.record_poll_success("jd_api", clock.now())
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)}, store)
    assert engine.evaluate(snap(clock)) == []
    clock.advance(timedelta(minutes=5))
    store.record_poll_success("jd_api", clock.now())
    store.record_poll_failure("tmall_api", SourceTimeout("tmall_api", "timeout after 10s"), clock.now())
    [down] = engine.evaluate(snap(clock))
    assert (down.rule, dict(down.labels), down.kind) == (
        "source_down",
        {"channel": "tmall", "source": "tmall_api"},
        "firing",
    )
    engine.deliver()
    assert "数据源停止上报" in robot.contents()[0] and "检查接口凭证" in robot.contents()[0]
    clock.advance(60)
    transitions = engine.evaluate(snap(clock, tmall=0.3, jd=0.3))  # the KPIs suffer from the outage
    assert len(transitions) == 2
    engine.deliver()
    assert len(robot.contents()) == 2 and "京东" in robot.contents()[1]  # tmall's KPI alert inhibited
    with db.connect() as conn:
        [muted] = [r for r in conn.execute(select(alert_notices)) if r.status == "suppressed"]
    assert muted.reason.startswith("inhibited by source_down")
    clock.advance(timedelta(minutes=20))  # jd stops reporting too: silent for 20 min > 10 min
    [jd_down] = engine.evaluate(snap(clock, tmall=0.3, jd=0.3))
    assert dict(jd_down.labels)["source"] == "jd_api"


# -- acknowledgement and escalation --------------------------------------------------------------------
def test_unacknowledged_alert_escalates_once_and_an_acknowledged_one_does_not(db, clock, robot):  # noqa: F811
    with WeComReceiver(clock, [ESCALATION_KEY]) as boss:
        routes = {
            "ops": {"kind": "wecom", "url": robot.url, "key": KEY},
            "oncall": {"kind": "wecom", "url": boss.url, "key": ESCALATION_KEY},
        }
        rules = [rule(group_by=["channel"], escalate_after="15m", escalate_route="oncall")]
        cfg = config(robot.url, rules, routes=routes, group_wait="0s", group_interval="0s")
        notifiers = {"ops": wecom(robot, clock), "oncall": wecom(boss, clock, ESCALATION_KEY)}
        engine = engine_for(db, clock, cfg, notifiers)
        engine.evaluate(snap(clock, tmall=0.5, jd=0.5))
        engine.deliver()
        tmall_fp = next(
            a["fingerprint"] for a in engine.active_alerts() if a["labels"] == {"channel": "tmall"}
        )
        clock.advance(timedelta(minutes=5))
        acked = engine.ack(tmall_fp[:12], "wangwu")
        assert acked["fingerprint"] == tmall_fp and acked["acked_by"] == "wangwu"
        run(engine, clock, lambda: snap(clock, tmall=0.5, jd=0.5), minutes=40)
        [escalated] = boss.contents()
        assert escalated.startswith("### 履约告警升级") and "京东" in escalated and "无人确认" in escalated
        assert len(robot.contents()) == 2  # the ops group got the two firing messages only
        with pytest.raises(LookupError):
            engine.ack("ffff", "x")


# -- rule fields: regex matchers, runbook, quiet hours -------------------------------------------------
def test_match_re_selects_series_and_runbook_is_shown(db, clock, robot):  # noqa: F811
    cfg = config(robot.url, [rule(match_re={"channel": "tm.*"}, runbook="联系仓库值班")], group_wait="0s")
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)})
    [t] = engine.evaluate(snap(clock, tmall=0.5, jd=0.5))
    assert dict(t.labels) == {"channel": "tmall"}
    engine.deliver()
    assert "> 处置手册：联系仓库值班" in robot.contents()[0]


def test_quiet_hours_hold_non_p1_messages_until_they_end_and_p1_bypasses(db, clock, robot):  # noqa: F811
    clock.set(datetime(2026, 2, 12, 23, 0, tzinfo=UTC) - timedelta(hours=8 + 1))  # 22:00 Shanghai
    rules = [
        rule(name="p2_rule", severity="P2", quiet_hours="23:00-08:00", match={"channel": "jd"}, by=[]),
        rule(name="p1_rule", severity="P1", quiet_hours="23:00-08:00", match={"channel": "tmall"}, by=[]),
    ]
    cfg = config(robot.url, rules, group_wait="0s", group_interval="0s")
    engine = engine_for(db, clock, cfg, {"ops": wecom(robot, clock)})
    clock.advance(timedelta(hours=2))  # 00:00 local
    engine.evaluate(snap(clock, tmall=0.5, jd=0.5))
    engine.deliver()
    [p1] = robot.contents()
    assert "P1" in p1 and "天猫" in p1
    run(engine, clock, lambda: snap(clock, tmall=0.5, jd=0.5), minutes=7 * 60 + 59, step=300)
    assert len(robot.contents()) == 1 + 7  # only the P1 rule's hourly repeats
    clock.set(datetime(2026, 2, 13, 0, 0, tzinfo=UTC))  # 08:00 local: quiet hours over
    engine.deliver()
    held = robot.contents()[8:]
    assert held and "P2" in held[0] and "京东" in held[0]


def test_config_rejects_bad_new_rule_options():
    with pytest.raises(Exception) as bad:
        config("http://x", [rule(quiet_hours="25:00-08:00", escalate_after="10m", match_re={"channel": "("})])
    text = str(bad.value)
    assert "quiet_hours" in text and "invalid regex" in text
    with pytest.raises(Exception) as bad:
        config("http://x", [rule(escalate_after="10m", escalate_route="nowhere")])
    assert "alerts.rules[0].escalate_route: unknown route 'nowhere'" in str(bad.value)
    with pytest.raises(Exception) as bad:
        config("http://x", [{"name": "nd", "no_data": "5m", "sources": ["nope"], "route": "ops"}])
    assert "alerts.rules[0].sources: unknown source 'nope'" in str(bad.value)


def test_series_labels_of_a_kpi_alert(clock):
    assert labels_of(channel="tmall") == (("channel", "tmall"),)
    assert KpiValue("x", (), 1.0).value == 1.0


def test_source_rules_fire_on_an_error_class_and_on_a_health_figure(db, clock, robot):  # noqa: F811
    from collectors.errors import AuthExpired, RateLimited

    rules = [
        {"name": "auth", "source_errors": ["auth_expired"], "severity": "P1", "route": "ops"},
        {"name": "behind", "source_metric": "lag_seconds", "op": ">", "threshold": 600, "for": "5m",
         "route": "ops"},
        {"name": "backlog", "source_metric": "queue_oldest_age_seconds", "op": ">", "threshold": 1200,
         "sources": ["returns_queue"], "route": "ops"},
    ]  # fmt: skip
    queue = {"url": "amqp://guest:guest@127.0.0.1:5672/%2F", "queue": "returns.approved"}
    cfg = parse_config(
        {
            "channels": CHANNELS,
            "sources": {
                "tmall_api": {**HTTP_SOURCE, "channel": "tmall"},
                "jd_api": {**HTTP_SOURCE, "channel": "jd"},
            },
            "queues": {"returns_queue": queue},
            "alerts": {
                "routes": {"ops": {"kind": "wecom", "url": robot.url, "key": KEY}},
                "rules": rules,
                "group_wait": "0s",
                "group_interval": "0s",
            },
        },
        env={},
    )
    store = Store(db, {}, "Asia/Shanghai")
    extra: dict[str, dict] = {
        "jd_api": {"lag_seconds": 30.0},
        "returns_queue": {"queue_oldest_age_seconds": 60.0},
    }

    def health() -> list[dict]:
        return [{**row, **extra.get(row["source"], {})} for row in store.health()]

    for name in ("tmall_api", "jd_api", "returns_queue"):
        store.record_poll_success(name, clock.now())
    engine = AlertEngine(db, cfg, clock, {"ops": wecom(robot, clock)}, health=health)
    assert engine.evaluate(snap(clock)) == []
    clock.advance(60)
    store.record_poll_failure("jd_api", RateLimited("jd_api", "throttled", 60), clock.now())
    store.record_poll_failure("tmall_api", AuthExpired("tmall_api", "session expired"), clock.now())
    extra["jd_api"]["lag_seconds"] = 900.0
    extra["returns_queue"]["queue_oldest_age_seconds"] = 1500.0
    fired = {(t.rule, t.labels, t.kind) for t in engine.evaluate(snap(clock))}
    assert fired == {
        ("auth", labels_of({"source": "tmall_api", "channel": "tmall"}), "firing"),  # not jd: another class
        ("behind", labels_of({"source": "jd_api", "channel": "jd"}), "pending"),
        ("backlog", labels_of({"source": "returns_queue"}), "firing"),
    }
    clock.advance(timedelta(minutes=5))
    [lagging] = engine.evaluate(snap(clock))
    assert (lagging.rule, lagging.kind, lagging.value) == ("behind", "firing", 900.0)
    engine.deliver()
    bodies = robot.contents()
    assert any("数据源拉取失败（auth_expired）" in b and "天猫" in b for b in bodies)
    assert any("消息队列最老消息等待过久" in b and "25 分钟" in b for b in bodies)
    assert any("数据源数据滞后" in b and "15 分钟" in b for b in bodies)
    store.record_poll_success("tmall_api", clock.now())
    extra["returns_queue"]["queue_oldest_age_seconds"] = 0.0
    resolved = {t.rule for t in engine.evaluate(snap(clock)) if t.kind == "resolved"}
    assert resolved == {"auth", "backlog"}


def test_a_source_rule_is_one_kind_and_names_known_error_classes():
    with pytest.raises(Exception, match="give one of no_data, source_metric and source_errors"):
        config("http://x", [{"name": "x", "no_data": "5m", "source_errors": ["timeout"], "route": "ops"}])
    with pytest.raises(Exception, match="unknown error class"):
        config("http://x", [{"name": "x", "source_errors": ["tea_time"], "route": "ops"}])
    with pytest.raises(Exception, match="needs op and threshold"):
        config("http://x", [{"name": "x", "source_metric": "lag_seconds", "route": "ops"}])
