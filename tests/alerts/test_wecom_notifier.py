"""WeComNotifier against the real local robot: splitting, throttling, errcode classes, masked key."""

from __future__ import annotations

import logging
import socket

import pytest
import requests
from pydantic import SecretStr

from alerts.notifiers.base import split_utf8
from alerts.notifiers.wecom import WeComNotifier
from sim.wecom import WeComReceiver

KEY = "5d0c2e64-7f1a-4b8e-9c3d-2a6b8e1f4c70"


@pytest.fixture
def robot(clock):
    with WeComReceiver(clock, [KEY]) as receiver:
        yield receiver


def notifier(robot, clock, key: str = KEY, **kw) -> WeComNotifier:
    return WeComNotifier(robot.url, SecretStr(key), clock, **kw)


def test_one_message_sent_and_answer_kept(robot, clock):
    [result] = notifier(robot, clock).send("### 履约告警\n> 滞留订单 **639** 单")
    assert result.ok and result.code == "ok"
    assert '"errcode":0' in result.response_text.replace(" ", "")
    assert robot.contents() == ["### 履约告警\n> 滞留订单 **639** 单"]


def test_ten_kilobyte_body_arrives_as_several_accepted_parts(robot, clock):
    lines = [
        f"> 渠道 {i:03d}：天猫旗舰店 滞留 **{i}** 单，最早付款于 2026-02-12 10:{i % 60:02d}"
        for i in range(160)
    ]
    body = "\n".join(lines)
    assert len(body.encode("utf-8")) > 10_000
    results = notifier(robot, clock).send(body)
    assert len(results) >= 3 and all(r.ok for r in results)
    contents = robot.contents()
    assert len(contents) == len(results)
    assert all(len(c.encode("utf-8")) <= 4096 for c in contents)
    assert "\n".join(contents) == body  # split only at line boundaries, nothing lost


def test_lone_huge_line_is_hard_split_on_character_boundaries():
    line = "告警" * 3000  # 18,000 bytes, no newline
    parts = split_utf8(line, 4096)
    assert "".join(parts) == line
    assert all(len(p.encode("utf-8")) <= 4096 for p in parts)
    assert split_utf8("a\n\n\nb", 4096) == ["a\n\n\nb"]
    assert split_utf8("  \n ", 4096) == []


def test_mentions_are_appended_once(robot, clock):
    n = notifier(robot, clock, mentions=("zhangsan", "lisi"))
    n.send("告警\n<@zhangsan>")
    assert robot.contents() == ["告警\n<@zhangsan>\n<@lisi>"]


def test_throttles_before_io_at_19_per_sliding_minute(robot, clock):
    n = notifier(robot, clock)
    outcomes = []
    for i in range(25):
        outcomes.append(n.send(f"消息 {i}")[0])
        clock.advance(1)
    assert [o.ok for o in outcomes] == [True] * 19 + [False] * 6
    throttled = outcomes[19]
    assert (throttled.code, throttled.retryable) == ("throttled", True)
    assert throttled.retry_after == pytest.approx(41)  # the first send leaves the window at t=60
    assert len(robot.received) == 19  # nothing was sent while throttled
    clock.advance(60)
    assert n.send("again")[0].ok


def test_sixty_sends_over_time_never_exceed_twenty_per_minute_and_none_is_lost(robot, clock):
    n = notifier(robot, clock)
    pending = [f"消息 {i}" for i in range(60)]
    while pending:
        [result] = n.send(pending[0])
        if result.ok:
            pending.pop(0)
        else:
            assert result.code == "throttled"
            clock.advance(result.retry_after)
    assert [c for c in robot.contents()] == [f"消息 {i}" for i in range(60)]
    assert all(r["response"]["errcode"] == 0 for r in robot.received)


def test_wrong_key_is_permanent_config_error(robot, clock):
    [result] = notifier(robot, clock, key="ffffffff-0000-0000-0000-00000000dead").send("x")
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "93000" in result.detail


def test_receiver_rate_limit_is_retryable_with_a_minute_backoff(clock):
    with WeComReceiver(clock, [KEY], per_minute=1) as robot:
        n = notifier(robot, clock)
        assert n.send("one")[0].ok
        [result] = n.send("two")
    assert (result.ok, result.retryable, result.code) == (False, True, "rate_limited")
    assert result.retry_after == 60 and "45009" in result.detail


def test_oversized_part_is_permanent_payload_error(robot, clock):
    class Unsplit(WeComNotifier):
        max_bytes = 100_000  # a broken subclass that does not respect WeCom's 4096 bytes

    [result] = Unsplit(robot.url, SecretStr(KEY), clock).send("a" * 5000)
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "40058" in result.detail


@pytest.mark.parametrize(
    ("status", "text", "ok", "retryable", "code"),
    [
        (200, '{"errcode":0,"errmsg":"ok"}', True, False, "ok"),
        (200, '{"errcode":45009,"errmsg":"api freq out of limit"}', False, True, "rate_limited"),
        (200, '{"errcode":93000,"errmsg":"invalid webhook url"}', False, False, "config"),
        (
            200,
            '{"errcode":40058,"errmsg":"markdown.content exceed max length 4096"}',
            False,
            False,
            "payload",
        ),
        (200, '{"errcode":-1,"errmsg":"system busy"}', False, True, "transient"),
        (200, '{"errcode":40008,"errmsg":"invalid message type"}', False, False, "payload"),
        (200, "<html>gateway</html>", False, True, "transient"),
        (502, "bad gateway", False, True, "transient"),
        (429, "", False, True, "rate_limited"),
        (404, "not found", False, False, "config"),
    ],
)
def test_answer_classification(status, text, ok, retryable, code):
    result = WeComNotifier._classify(status, text)
    assert (result.ok, result.retryable, result.code) == (ok, retryable, code)


def test_network_errors_are_transient_and_key_never_leaks(clock, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    caplog.set_level(logging.DEBUG)
    n = WeComNotifier(f"http://127.0.0.1:{port}/cgi-bin/webhook/send", SecretStr(KEY), clock, timeout=2)
    [result] = n.send("x")
    assert (result.ok, result.retryable, result.code) == (False, True, "network")
    assert KEY not in repr(result) and KEY not in repr(n) and KEY not in caplog.text
    assert "5d0c…4c70" in repr(n)


def test_key_never_in_results_or_logs_even_with_http_debug(robot, clock, caplog):
    caplog.set_level(logging.DEBUG)
    session = requests.Session()
    n = WeComNotifier(robot.url + f"?key={KEY}", SecretStr(KEY), clock, session=session)
    results = n.send("ok") + WeComNotifier(robot.url, SecretStr("bad-" + KEY), clock).send("x")
    assert results[0].ok and not results[1].ok
    assert "key=5d0c…4c70" in caplog.text  # urllib3's DEBUG access line, masked
    for r in results:
        assert KEY not in repr(r)
    assert KEY not in caplog.text
    assert robot.received[0]["key_tail"] == KEY[-4:]


def test_send_never_raises_on_a_transport_bug(clock):
    class Broken(requests.Session):
        def post(self, *a, **kw):
            raise RuntimeError(f"bug while posting to ...?key={KEY}")

    [result] = WeComNotifier("http://127.0.0.1:9/x", SecretStr(KEY), clock, session=Broken()).send("x")
    assert (result.ok, result.retryable, result.code) == (False, True, "error")
    assert KEY not in result.detail and "5d0c…4c70" in result.detail
