"""DingTalkNotifier against the real local robot: signatures, mentions, limits, errcodes, masked secrets."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from alerts.notifiers.dingtalk import DingTalkNotifier, sign
from sentinel.clock import ManualClock
from sim.robots.base import RobotSpec
from sim.robots.dingtalk import DingTalkReceiver

TOKEN = "0123abcd4567ef890123abcd4567ef890123abcd4567ef890123abcd4567ef89"
SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
BODY = (
    '### 履约告警 <font color="warning">P1</font> 同步成功率低于阈值\n'
    "> 范围：全部渠道\n"
    "> 当前值：**99.10%**（阈值 < 99.95%）\n"
    "[查看详情](http://127.0.0.1:8501/?kpi=sync_success_ratio)"
)


@pytest.fixture
def robot(clock):
    with DingTalkReceiver(clock, [RobotSpec(TOKEN, SECRET)]) as receiver:
        yield receiver


def notifier(robot, clock, token=TOKEN, secret=SECRET, **kw) -> DingTalkNotifier:
    return DingTalkNotifier(robot.url, SecretStr(token), clock, secret=secret and SecretStr(secret), **kw)


def test_sign_matches_the_reference_vector():
    value = sign(SECRET, "1732154560002")
    assert value == "XPGeH6cuilvpAywH7kd0n0P0K+Zn/xinfyQBR/eTobY="
    assert quote(value, safe="") == "XPGeH6cuilvpAywH7kd0n0P0K%2BZn%2FxinfyQBR%2FeTobY%3D"


def test_signed_markdown_is_delivered_at_the_vector_timestamp(robot):
    # This sign contains + / =: the robot only verifies it if the client URL-encoded it.
    clock = ManualClock(datetime(2024, 11, 21, 2, 2, 40, 2000, tzinfo=UTC))
    robot.clock = clock
    [result] = notifier(robot, clock).send(BODY)
    assert (result.ok, result.code) == (True, "ok")
    [record] = robot.received
    assert record["signed"] and record["token_tail"] == TOKEN[-4:]
    markdown = record["body"]["markdown"]
    assert markdown["title"] == "履约告警 P1 同步成功率低于阈值"
    assert "<font" not in markdown["text"] and "**99.10%**" in markdown["text"]
    assert robot.texts() == [markdown["text"]]


def test_mentions_become_at_fields_and_at_text(robot, clock):
    n = notifier(robot, clock, mentions=("13800000000", "manager01", "all"))
    assert n.send(BODY + "\n<@13800000000>")[0].ok
    body = robot.messages()[0]["body"]
    assert body["at"] == {"atMobiles": ["13800000000"], "atUserIds": ["manager01"], "isAtAll": True}
    text = body["markdown"]["text"]
    assert text.endswith("@13800000000\n@manager01 @所有人")  # the route's missing ones appended once
    assert text.count("@13800000000") == 1


def test_unsigned_robot_with_a_keyword(clock):
    with DingTalkReceiver(clock, [RobotSpec(TOKEN, keywords=("履约告警",))]) as robot:
        assert notifier(robot, clock, secret=None).send(BODY)[0].ok
        [result] = notifier(robot, clock, secret=None).send("### 库存提醒\n> 无关键词")
    assert (result.code, result.retryable) == ("config", False)
    assert "310000" in result.detail and "keywords not in content" in result.detail
    assert [r["signed"] for r in robot.received] == [False, False]


@pytest.mark.parametrize(
    ("spec", "token", "secret", "skew", "errcode", "message"),
    [
        (RobotSpec(TOKEN, SECRET), TOKEN, "SEC" + "f" * 64, 0, 310000, "sign not match"),
        (RobotSpec(TOKEN, SECRET), TOKEN, None, 0, 310000, "invalid timestamp"),
        (RobotSpec(TOKEN, SECRET), TOKEN, SECRET, 3601, 310000, "invalid timestamp"),
        (RobotSpec(TOKEN, SECRET), TOKEN, SECRET, -3601, 310000, "invalid timestamp"),
        (RobotSpec(TOKEN, SECRET), "f" * 64, SECRET, 0, 300001, "token is not exist"),
        (RobotSpec(TOKEN, SECRET, allowed_ips=("10.0.0.0/8",)), TOKEN, SECRET, 0, 310000, "not in whitelist"),
    ],
    ids=["wrong-secret", "unsigned", "clock-ahead", "clock-behind", "wrong-token", "ip-not-allowed"],
)
def test_security_rejections_are_permanent_config_errors(clock, spec, token, secret, skew, errcode, message):
    with DingTalkReceiver(clock, [spec]) as robot:
        skewed = ManualClock(clock.now() + timedelta(seconds=skew))
        [result] = notifier(robot, skewed, token=token, secret=secret).send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert str(errcode) in result.detail and message in result.detail
    assert robot.messages() == []


def test_timestamp_just_inside_one_hour_is_accepted(robot, clock):
    skewed = ManualClock(clock.now() - timedelta(minutes=59))
    assert notifier(robot, skewed).send(BODY)[0].ok


def test_long_body_is_split_into_accepted_parts(robot, clock):
    lines = [f"> 渠道 {i:03d}：京东店 待出库超 24h **{i}** 单" for i in range(300)]
    body = "\n".join(lines)
    results = notifier(robot, clock).send(body)
    assert len(results) >= 3 and all(r.ok for r in results)
    texts = robot.texts()
    assert all(len(t.encode("utf-8")) <= 4096 for t in texts)
    assert "\n".join(texts) == body


def test_oversized_part_is_a_permanent_payload_error(robot, clock):
    class Unsplit(DingTalkNotifier):
        max_bytes = 100_000  # a broken subclass ignoring the robot's 20000-byte limit

    n = Unsplit(robot.url, SecretStr(TOKEN), clock, secret=SecretStr(SECRET))
    [result] = n.send("告" * 7000)  # 21,000 bytes
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "460101" in result.detail


def test_throttles_before_io_at_19_per_sliding_minute(robot, clock):
    n = notifier(robot, clock)
    outcomes = [n.send(f"履约告警 {i}")[0] for i in range(21)]
    assert [o.ok for o in outcomes] == [True] * 19 + [False] * 2
    assert (outcomes[19].code, outcomes[19].retryable) == ("throttled", True)
    assert outcomes[19].retry_after == pytest.approx(60)
    assert len(robot.received) == 19  # nothing went out while throttled


def test_robot_rate_limit_then_block_are_retryable_for_ten_minutes(clock):
    with DingTalkReceiver(clock, [RobotSpec(TOKEN, SECRET)], per_minute=1) as robot:
        n = notifier(robot, clock)
        assert n.send("one")[0].ok
        [limited] = n.send("two")
        [blocked] = n.send("three")  # the robot now answers with a redirect
        clock.advance(timedelta(minutes=10))
        [later] = n.send("four")
    assert (limited.code, limited.retryable, limited.retry_after) == ("rate_limited", True, 600)
    assert "130101" in limited.detail
    assert (blocked.code, blocked.retryable, blocked.retry_after) == ("rate_limited", True, 600)
    assert "HTTP 302" in blocked.detail
    assert later.ok


@pytest.mark.parametrize(
    ("status", "text", "ok", "retryable", "code"),
    [
        (200, '{"errcode":0,"errmsg":"ok"}', True, False, "ok"),
        (
            200,
            '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}',
            False,
            True,
            "rate_limited",
        ),
        (200, '{"errcode":90030,"errmsg":"webhook over limit"}', False, True, "rate_limited"),
        (200, '{"errcode":310000,"errmsg":"sign not match"}', False, False, "config"),
        (200, '{"errcode":300001,"errmsg":"token is not exist"}', False, False, "config"),
        (200, '{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}', False, False, "payload"),
        (200, '{"errcode":40035,"errmsg":"缺少参数 json"}', False, False, "payload"),
        (200, '{"errcode":-1,"errmsg":"系统繁忙"}', False, True, "transient"),
        (200, "<html>gateway</html>", False, True, "transient"),
        (302, "", False, True, "rate_limited"),
        (429, "", False, True, "rate_limited"),
        (503, "busy", False, True, "transient"),
        (404, "not found", False, False, "config"),
    ],
)
def test_answer_classification(status, text, ok, retryable, code):
    result = DingTalkNotifier._classify(status, text)
    assert (result.ok, result.retryable, result.code) == (ok, retryable, code)


def test_token_and_secret_never_in_results_or_logs(robot, clock, caplog):
    caplog.set_level(logging.DEBUG)
    good = notifier(robot, clock)
    bad = notifier(robot, clock, secret="SEC" + "0" * 64)
    results = good.send(BODY) + bad.send(BODY)
    assert results[0].ok and not results[1].ok
    assert "access_token=0123…ef89" in caplog.text  # urllib3's DEBUG access line, masked
    for text in (caplog.text, repr(results), repr(good), repr(bad)):
        assert TOKEN not in text and SECRET not in text


def test_network_error_is_retryable_and_masked(clock, caplog):
    caplog.set_level(logging.DEBUG)
    n = DingTalkNotifier("http://127.0.0.1:9/robot/send", TOKEN, clock, secret=SECRET, timeout=2)
    [result] = n.send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, True, "network")
    assert TOKEN not in repr(result) + caplog.text and SECRET not in repr(result) + caplog.text
