"""FeishuNotifier against the real local bot: signed post messages, 20 KB bodies, 5/s + 100/min, codes."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from pydantic import SecretStr

from alerts.notifiers.feishu import BODY_LIMIT, FeishuNotifier, post_content, sign
from sentinel.clock import ManualClock
from sim.robots.base import RobotSpec
from sim.robots.feishu import FeishuReceiver

TOKEN = "7f3c9a2e-1b4d-4e8f-a6c5-0d9e8f7a6b5c"
SECRET = "qXk3vN8pR2sT6wY9zA1cE4gH7jL0mP5u"
BODY = (
    '### 履约告警 <font color="warning">P1</font> 同步成功率低于阈值\n'
    "> 范围：渠道 天猫\n"
    "> 当前值：**99.10%**（阈值 < 99.95%）\n"
    "[查看详情](http://127.0.0.1:8501/?kpi=sync_success_ratio&channel=tmall)\n"
    "<@ou_7d8a6e6df7621556ce0d21922b676706>"
)


@pytest.fixture
def bot(clock):
    with FeishuReceiver(clock, [RobotSpec(TOKEN, SECRET)]) as receiver:
        yield receiver


def notifier(bot, clock, token=TOKEN, secret=SECRET, **kw) -> FeishuNotifier:
    return FeishuNotifier(bot.url, SecretStr(token), clock, secret=secret and SecretStr(secret), **kw)


def test_sign_matches_the_reference_vector():
    assert sign("demoSecretForDocs", "1732154560") == "J0QVjj9R3vXTSIdZxDZnPtq/Y8QXiBRztR02mdFubaw="


def test_markdown_becomes_a_post_with_title_links_and_mentions():
    post = post_content(BODY)["post"]["zh_cn"]
    assert post["title"] == "履约告警 P1 同步成功率低于阈值"
    assert post["content"] == [
        [{"tag": "text", "text": "范围：渠道 天猫"}],
        [{"tag": "text", "text": "当前值：99.10%（阈值 < 99.95%）"}],
        [
            {
                "tag": "a",
                "text": "查看详情",
                "href": "http://127.0.0.1:8501/?kpi=sync_success_ratio&channel=tmall",
            }
        ],
        [{"tag": "at", "user_id": "ou_7d8a6e6df7621556ce0d21922b676706"}],
    ]


def test_signed_post_is_delivered(bot, clock):
    [result] = notifier(bot, clock, mentions=("all",)).send(BODY)
    assert (result.ok, result.code) == (True, "ok")
    assert json.loads(result.response_text)["StatusCode"] == 0
    [record] = bot.received
    body = record["body"]
    assert body["timestamp"] == str(int(clock.now().timestamp()))
    assert body["sign"] == sign(SECRET, body["timestamp"])
    assert body["msg_type"] == "post"
    [post] = bot.posts()
    assert post["content"][-1] == [{"tag": "at", "user_id": "all"}]  # the route's mention appended
    assert "<font" not in json.dumps(body, ensure_ascii=False)


def test_unsigned_bot_with_keywords_checks_text_not_links(clock):
    spec = RobotSpec(TOKEN, keywords=("sync_success_ratio",))  # only inside the link target
    with FeishuReceiver(clock, [spec]) as bot:
        [result] = notifier(bot, clock, secret=None).send(BODY)
    assert (result.code, result.retryable) == ("config", False)
    assert "19024" in result.detail
    assert "timestamp" not in bot.received[0]["body"]


@pytest.mark.parametrize(
    ("spec", "token", "secret", "skew", "code"),
    [
        (RobotSpec(TOKEN, SECRET), TOKEN, "wrong-secret-wrong-secret", 0, 19021),
        (RobotSpec(TOKEN, SECRET), TOKEN, None, 0, 19021),
        (RobotSpec(TOKEN, SECRET), TOKEN, SECRET, 3601, 19021),
        (RobotSpec(TOKEN, SECRET), TOKEN, SECRET, -3601, 19021),
        (RobotSpec(TOKEN, SECRET), "00000000-dead-beef-0000-000000000000", SECRET, 0, 19001),
        (RobotSpec(TOKEN, SECRET, allowed_ips=("192.0.2.0/24",)), TOKEN, SECRET, 0, 19022),
        (RobotSpec(TOKEN, SECRET, keywords=("库存",)), TOKEN, SECRET, 0, 19024),
    ],
    ids=["wrong-secret", "unsigned", "clock-ahead", "clock-behind", "wrong-token", "ip", "keyword"],
)
def test_security_rejections_are_permanent_config_errors(clock, spec, token, secret, skew, code):
    with FeishuReceiver(clock, [spec]) as bot:
        skewed = ManualClock(clock.now() + timedelta(seconds=skew))
        [result] = notifier(bot, skewed, token=token, secret=secret).send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert f"code {code}:" in result.detail
    assert bot.messages() == []


def test_sixty_kilobytes_arrive_as_parts_under_twenty_kilobytes(bot, clock):
    lines = [
        f"> 渠道 {i:04d}：抖音小店 停滞 **{i}** 单，最早付款于 2026-02-12 10:{i % 60:02d}" for i in range(800)
    ]
    body = "### 履约告警 大量停滞\n" + "\n".join(lines)
    assert len(body.encode("utf-8")) > 60_000
    n = notifier(bot, clock)
    results = n.send(body)
    assert [r.code for r in results] == ["ok"] * 4 + ["throttled"]  # 5 parts at once: 4/s
    clock.advance(results[-1].retry_after)
    results = results[:-1] + n.send(body, skip=4)  # resumed like the engine does
    assert len(results) == len(n.split(body)) >= 5 and all(r.ok for r in results)
    assert all(r["bytes"] <= BODY_LIMIT for r in bot.received)
    texts = [node["text"] for post in bot.posts() for para in post["content"] for node in para]
    assert len(texts) == len(lines)  # every line arrived exactly once, in order
    assert texts[0].startswith("渠道 0000") and texts[-1].startswith("渠道 0799")


def test_bodies_over_the_bots_limit_are_payload_errors(clock):
    with FeishuReceiver(clock, [RobotSpec(TOKEN, SECRET)], max_bytes=2000) as bot:
        [result] = notifier(bot, clock).send("告警 " * 1000)  # fits our 20 KB, not this bot's 2 KB
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "9499" in result.detail


def test_oversized_part_is_refused_before_io(bot, clock):
    class Unsplit(FeishuNotifier):
        def split(self, body):  # a broken subclass that does not split
            return [body]

    [result] = Unsplit(bot.url, TOKEN, clock, secret=SECRET).send("告" * 8000)
    assert (result.ok, result.code) == (False, "payload") and "over 20480" in result.detail
    assert bot.received == []


def test_throttles_before_io_at_four_per_second_and_99_per_minute(bot, clock):
    n = notifier(bot, clock)
    burst = [n.send(f"告警 {i}")[0] for i in range(5)]
    assert [r.ok for r in burst] == [True] * 4 + [False]
    assert burst[4].code == "throttled" and burst[4].retry_after == pytest.approx(1)
    assert len(bot.received) == 4
    sent = 4
    for _ in range(200):
        [result] = n.send("告警")
        if not result.ok:
            assert result.code == "throttled"
            if sent == 99:
                break
            clock.advance(result.retry_after)
            continue
        sent += 1
    assert sent == 99 and result.retry_after > 1  # now the minute window is the one that is full
    assert all(r["response"]["code"] == 0 for r in bot.received)


def test_bot_frequency_limit_is_retryable(clock):
    with FeishuReceiver(clock, [RobotSpec(TOKEN, SECRET)], per_second=1) as bot:
        n = notifier(bot, clock)
        assert n.send("one")[0].ok
        [result] = n.send("two")
    assert (result.ok, result.retryable, result.code) == (False, True, "rate_limited")
    assert result.retry_after == 60 and "11232" in result.detail


@pytest.mark.parametrize(
    ("status", "text", "ok", "retryable", "code"),
    [
        (
            200,
            '{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}',
            True,
            False,
            "ok",
        ),
        (200, '{"StatusCode":0,"StatusMessage":"success"}', True, False, "ok"),  # legacy answer
        (200, '{"code":11232,"data":{},"msg":"frequency limited"}', False, True, "rate_limited"),
        (429, "", False, True, "rate_limited"),
        (200, '{"code":9499,"data":{},"msg":"Bad Request"}', False, False, "payload"),
        (200, '{"code":19021,"data":{},"msg":"sign match fail"}', False, False, "config"),
        (200, '{"code":19022,"data":{},"msg":"Ip Not Allowed"}', False, False, "config"),
        (200, '{"code":19024,"data":{},"msg":"Key Words Not Found"}', False, False, "config"),
        (200, '{"code":19007,"data":{},"msg":"Bot Not Enabled"}', False, False, "config"),
        (200, "not json", False, True, "transient"),
        (500, "", False, True, "transient"),
    ],
)
def test_answer_classification(status, text, ok, retryable, code):
    result = FeishuNotifier._classify(status, text)
    assert (result.ok, result.retryable, result.code) == (ok, retryable, code)


def test_token_and_secret_never_in_results_or_logs(bot, clock, caplog):
    caplog.set_level(logging.DEBUG)
    good, bad = notifier(bot, clock), notifier(bot, clock, secret="another-secret-value")
    results = good.send(BODY) + bad.send(BODY)
    assert results[0].ok and not results[1].ok
    assert "/open-apis/bot/v2/hook/7f3c…6b5c" in caplog.text  # urllib3's DEBUG access line, masked
    for text in (caplog.text, repr(results), repr(good), repr(bad)):
        assert TOKEN not in text and SECRET not in text
