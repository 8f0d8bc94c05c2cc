"""The local DingTalk, Feishu, webhook and SMTP servers enforce the real channels' rules over real sockets."""

from __future__ import annotations

import base64
import json
import smtplib
from datetime import timedelta
from urllib.parse import quote

import pytest
import requests

from sim.robots.base import RobotSpec, SlidingWindow
from sim.robots.dingtalk import DingTalkReceiver
from sim.robots.dingtalk import expected_sign as ding_sign
from sim.robots.feishu import FeishuReceiver
from sim.robots.feishu import expected_sign as feishu_sign
from sim.robots.smtp import SmtpReceiver
from sim.robots.webhook import WebhookReceiver

DING_TOKEN = "ding0123456789abcdef"
DING_SECRET = "SEC0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
FS_TOKEN = "fs-0123-4567-89ab"
FS_SECRET = "demoSecretForDocs"


def test_sliding_window_counts_every_hit_per_key(clock):
    window = SlidingWindow(2, timedelta(seconds=10))
    assert [window.hit("a", clock.now()) for _ in range(3)] == [True, True, False]
    assert window.hit("b", clock.now())
    assert window.free_in("a", clock.now()) == 10
    clock.advance(10)
    assert window.hit("a", clock.now()) and window.free_in("z", clock.now()) == 0


def test_robot_spec_ip_allow_list():
    spec = RobotSpec("t", allowed_ips=("10.0.0.0/8", "192.0.2.7"))
    assert spec.ip_allowed("10.1.2.3") and spec.ip_allowed("192.0.2.7")
    assert not spec.ip_allowed("127.0.0.1") and RobotSpec("t").ip_allowed("127.0.0.1")


# -- DingTalk -------------------------------------------------------------------------------------
@pytest.fixture
def ding(clock):
    with DingTalkReceiver(clock, [RobotSpec(DING_TOKEN, DING_SECRET)]) as robot:
        yield robot


def ding_post(robot, body, token=DING_TOKEN, timestamp=None, sign=None, raw_query=None):
    ms = int(robot.clock.now().timestamp() * 1000)
    timestamp = str(ms) if timestamp is None else timestamp
    sign = ding_sign(DING_SECRET, timestamp) if sign is None else sign
    if raw_query is not None:
        r = requests.post(f"{robot.url}?{raw_query}", json=body, timeout=5, allow_redirects=False)
    else:
        params = {"access_token": token, "timestamp": timestamp, "sign": sign}
        r = requests.post(robot.url, params=params, json=body, timeout=5, allow_redirects=False)
    return r.status_code, (r.json() if r.content else None)


def markdown(text, title="履约告警"):
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}


def test_dingtalk_sign_is_the_reference_vector():
    assert ding_sign(DING_SECRET, "1732154560002") == "XPGeH6cuilvpAywH7kd0n0P0K+Zn/xinfyQBR/eTobY="


def test_dingtalk_accepts_a_signed_message(ding):
    assert ding_post(ding, markdown("### 履约告警")) == (200, {"errcode": 0, "errmsg": "ok"})
    [record] = ding.received
    assert record["signed"] and record["token_tail"] == DING_TOKEN[-4:]
    assert DING_TOKEN not in json.dumps(ding.received) and DING_SECRET not in json.dumps(ding.received)


def test_dingtalk_needs_the_sign_url_encoded(ding, clock):
    timestamp = str(int(clock.now().timestamp() * 1000))
    sign = ding_sign(DING_SECRET, timestamp)
    if "+" not in sign:  # pick a moment whose signature has a '+', which a raw query turns into a space
        for ms in range(int(timestamp), int(timestamp) + 1000):
            if "+" in ding_sign(DING_SECRET, str(ms)):
                timestamp, sign = str(ms), ding_sign(DING_SECRET, str(ms))
                break
    raw = f"access_token={DING_TOKEN}&timestamp={timestamp}&sign={sign}"
    assert ding_post(ding, markdown("x"), raw_query=raw)[1]["errmsg"].startswith("sign not match")
    encoded = f"access_token={DING_TOKEN}&timestamp={timestamp}&sign={quote(sign, safe='')}"
    assert ding_post(ding, markdown("x"), raw_query=encoded)[1]["errcode"] == 0


@pytest.mark.parametrize(
    ("kwargs", "body", "errcode", "errmsg"),
    [
        ({"token": "nope"}, markdown("x"), 300001, "token is not exist"),
        ({"sign": "AAAA"}, markdown("x"), 310000, "sign not match"),
        ({"timestamp": ""}, markdown("x"), 310000, "invalid timestamp"),
        ({"timestamp": "1732154560002"}, markdown("x"), 310000, "invalid timestamp"),  # 2024: > 1 h off
        ({}, {"msgtype": "carrier_pigeon"}, 40035, "缺少参数"),
        ({}, {"msgtype": "markdown", "markdown": {"title": "t"}}, 40035, "缺少参数"),
        ({}, markdown("a" * 20001), 460101, "message too long, exceed 20000 bytes"),
        ({}, markdown("告" * 6667), 460101, "message too long"),  # 20,001 bytes with the title's 12
    ],
)
def test_dingtalk_rejections_answer_200_with_errcode(ding, kwargs, body, errcode, errmsg):
    status, answer = ding_post(ding, body, **kwargs)
    assert status == 200 and answer["errcode"] == errcode and answer["errmsg"].startswith(errmsg)
    assert ding.messages() == []


def test_dingtalk_size_limit_is_inclusive_in_bytes(ding):
    assert ding_post(ding, markdown("a" * (20000 - 12)))[1]["errcode"] == 0  # title 12 bytes + text


def test_dingtalk_keywords_and_ip_list(clock):
    specs = [RobotSpec("kw", keywords=("履约",)), RobotSpec("ip", allowed_ips=("10.0.0.0/8",))]
    with DingTalkReceiver(clock, specs) as robot:
        assert ding_post(robot, markdown("无关", title="x"), token="kw")[1]["errmsg"].startswith(
            "keywords not in"
        )
        assert ding_post(robot, markdown("履约告警"), token="kw")[1]["errcode"] == 0
        answer = ding_post(robot, markdown("履约告警"), token="ip")[1]
    assert answer["errcode"] == 310000 and "127.0.0.1 not in whitelist" in answer["errmsg"]


def test_dingtalk_over_twenty_a_minute_blocks_the_robot_for_ten_minutes(ding, clock):
    for _ in range(20):
        assert ding_post(ding, markdown("x"))[1]["errcode"] == 0
    assert ding_post(ding, markdown("x"))[1] == {
        "errcode": 130101,
        "errmsg": "send too fast, exceed 20 times per minute",
    }
    clock.advance(61)  # the minute is over, but the block is not
    assert ding_post(ding, markdown("x")) == (302, None)
    clock.advance(timedelta(minutes=9))
    assert ding_post(ding, markdown("x"))[1]["errcode"] == 0


# -- Feishu ---------------------------------------------------------------------------------------
@pytest.fixture
def feishu(clock):
    with FeishuReceiver(clock, [RobotSpec(FS_TOKEN, FS_SECRET)]) as bot:
        yield bot


def fs_post(bot, message, token=FS_TOKEN, timestamp=None, sign=None, raw=None):
    timestamp = str(int(bot.clock.now().timestamp())) if timestamp is None else timestamp
    body = {"timestamp": timestamp, "sign": sign or feishu_sign(FS_SECRET, timestamp), **message}
    data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    r = requests.post(
        f"{bot.url}/{token}", data=data, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert r.status_code == 200
    return r.json()


TEXT = {"msg_type": "text", "content": {"text": "履约告警"}}


def post(content, title="履约告警"):
    return {"msg_type": "post", "content": {"post": {"zh_cn": {"title": title, "content": content}}}}


def test_feishu_sign_is_the_reference_vector():
    assert feishu_sign("demoSecretForDocs", "1732154560") == "J0QVjj9R3vXTSIdZxDZnPtq/Y8QXiBRztR02mdFubaw="


def test_feishu_accepts_signed_text_post_and_card(feishu):
    success = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
    assert fs_post(feishu, TEXT) == success
    content = [
        [
            {"tag": "text", "text": "a"},
            {"tag": "a", "text": "b", "href": "http://x"},
            {"tag": "at", "user_id": "all"},
        ]
    ]
    assert fs_post(feishu, post(content)) == success
    card = {"msg_type": "interactive", "card": {"elements": [{"tag": "div", "text": {"content": "x"}}]}}
    assert fs_post(feishu, card) == success
    assert len(feishu.messages()) == 3 and len(feishu.posts()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message", "code", "msg"),
    [
        ({"token": "nope"}, TEXT, 19001, "param invalid: incoming webhook access token invalid"),
        ({"sign": "AAAA"}, TEXT, 19021, "sign match fail"),
        ({"timestamp": "1732154560"}, TEXT, 19021, "sign match fail"),  # a 2024 timestamp
        ({"raw": b"{not json"}, TEXT, 9499, "Bad Request"),
        ({}, {"msg_type": "telegram", "content": {}}, 9499, "Bad Request"),
        ({}, post([[{"tag": "blink", "text": "x"}]]), 9499, "Bad Request"),
        ({}, post([[{"tag": "a", "text": "no href"}]]), 9499, "Bad Request"),
        ({}, {"msg_type": "text", "content": {"text": "a" * (20 * 1024)}}, 9499, "Bad Request"),
    ],
)
def test_feishu_rejections(feishu, kwargs, message, code, msg):
    answer = fs_post(feishu, message, **kwargs)
    assert answer["code"] == code and answer["msg"].startswith(msg) and "StatusCode" not in answer
    assert feishu.messages() == []


def test_feishu_body_limit_is_inclusive(feishu):
    timestamp = str(int(feishu.clock.now().timestamp()))
    frame = {"timestamp": timestamp, "sign": feishu_sign(FS_SECRET, timestamp), "msg_type": "text"}
    size = len(json.dumps({**frame, "content": {"text": ""}}).encode())
    text = "a" * (20 * 1024 - size)
    raw = json.dumps({**frame, "content": {"text": text}}).encode()
    assert len(raw) == 20 * 1024
    assert fs_post(feishu, {}, raw=raw)["code"] == 0
    assert fs_post(feishu, {}, raw=raw[:-2] + b'a"}}')["code"] == 9499  # one byte more


def test_feishu_keywords_only_in_text_and_ip_list(clock):
    specs = [RobotSpec("kw", keywords=("example.com",)), RobotSpec("ip", allowed_ips=("192.0.2.0/24",))]
    with FeishuReceiver(clock, specs) as bot:
        linked = post([[{"tag": "a", "text": "详情", "href": "http://example.com"}]], title="告警")
        assert fs_post(bot, linked, token="kw")["code"] == 19024
        assert fs_post(bot, post([[{"tag": "text", "text": "见 example.com"}]]), token="kw")["code"] == 0
        assert fs_post(bot, TEXT, token="ip") == {"code": 19022, "data": {}, "msg": "Ip Not Allowed"}


def test_feishu_five_per_second_and_hundred_per_minute(feishu, clock):
    assert [fs_post(feishu, TEXT)["code"] for _ in range(6)] == [0] * 5 + [11232]  # the 6th counts too
    clock.advance(1)
    for _ in range(94):  # 94 more at t = 1 .. 47.5 s, spread so the per-second limit never bites
        assert fs_post(feishu, TEXT)["code"] == 0
        clock.advance(0.5)
    answer = fs_post(feishu, TEXT)  # t = 48 s: the 101st request of the minute
    assert answer["code"] == 11232 and answer["msg"].startswith("frequency limited")
    clock.advance(12)  # t = 60 s: the first burst (6 requests) leaves the minute
    assert fs_post(feishu, TEXT)["code"] == 0


# -- webhook --------------------------------------------------------------------------------------
def alertmanager(**changes):
    alert = {
        "status": "firing",
        "labels": {"alertname": "sync_success_ratio"},
        "annotations": {"summary": "x"},
        "startsAt": "2026-02-12T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://x/",
        "fingerprint": "0123456789abcdef",
    }
    doc = {
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "r",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://x/",
        "alerts": [alert],
    }
    for key, value in changes.items():
        if key.startswith("alert_"):
            alert[key[6:]] = value
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (alertmanager(version="3"), "version"),
        (alertmanager(status="pending"), "status"),
        (alertmanager(receiver=None), "receiver"),
        (alertmanager(alerts=[]), "alerts: empty"),
        (alertmanager(alert_status="bad"), "alerts[0].status"),
        (alertmanager(alert_labels={"a": 1}), "alerts[0]: label and annotation values"),
        (alertmanager(alert_startsAt="yesterday"), "alerts[0].startsAt"),
        (alertmanager(alert_fingerprint=None), "alerts[0].fingerprint"),
    ],
)
def test_webhook_rejects_what_is_not_alertmanager_v4(clock, doc, problem):
    with WebhookReceiver(clock) as hook:
        r = requests.post(hook.url, json=doc, timeout=5)
        assert (r.status_code, requests.post(hook.url, data=b"{", timeout=5).status_code) == (422, 400)
    assert r.json()["error"].startswith(problem)


def test_webhook_accepts_a_valid_message_and_queued_failures_come_first(clock):
    with WebhookReceiver(clock) as hook:
        hook.fail_next(503, "30", times=2)
        codes = [requests.post(hook.url, json=alertmanager(), timeout=5) for _ in range(3)]
        wrong_path = requests.post(hook.base_url + "/other", json=alertmanager(), timeout=5)
    assert [r.status_code for r in codes] == [503, 503, 200]
    assert codes[0].headers["Retry-After"] == "30" and wrong_path.status_code == 404
    assert hook.messages() == [alertmanager()]


def test_webhook_rate_limit_answers_429_with_retry_after(clock):
    with WebhookReceiver(clock, per_minute=2) as hook:
        first = [requests.post(hook.url, json=alertmanager(), timeout=5).status_code for _ in range(2)]
        clock.advance(20.5)
        limited = requests.post(hook.url, json=alertmanager(), timeout=5)
    assert first == [200, 200]
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "40"


# -- SMTP -----------------------------------------------------------------------------------------
def test_smtp_dialogue_ehlo_auth_size_and_dot_unstuffing(clock):
    with SmtpReceiver(clock, {"a@example.com": "pw"}, max_size=5000) as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            code, features = smtp.ehlo("client")
            assert code == 250 and smtp.has_extn("size") and smtp.has_extn("auth")
            assert not smtp.has_extn("starttls")  # no TLS context given
            assert smtp.mail("a@example.com")[0] == 530  # authentication required
            assert smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a@example.com\0bad").decode())[0] == 535
            smtp.login("a@example.com", "pw")
            assert smtp.mail("other@example.com")[0] == 553  # not the authenticated account
            smtp.rset()
            refused = smtp.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: t\r\n\r\n.leading dot\r\nend\r\n"
            )
            assert refused == {}
            assert smtp.mail("a@example.com", ["SIZE=9999"])[0] == 552
    [record] = server.received
    assert record["data"] == b"Subject: t\r\n\r\n.leading dot\r\nend\r\n"
    assert server.auth_attempts == [("a@example.com", False), ("a@example.com", True)]
    assert "pw" not in repr(server.received)


def test_smtp_faults_and_throttling(clock):
    with SmtpReceiver(clock, per_minute=1) as server:
        server.fail_next("connect", 421, "4.3.2 busy")
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP(server.host, server.port, timeout=5)
        assert info.value.smtp_code == 421
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            server.fail_next("data", 554, "5.7.1 spam")
            with pytest.raises(smtplib.SMTPDataError):
                smtp.sendmail("a@x.cn", ["b@x.cn"], b"Subject: t\r\n\r\nx\r\n")
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as info:
                smtp.sendmail("a@x.cn", ["b@x.cn"], b"Subject: t\r\n\r\nx\r\n")  # second message this minute
        assert info.value.smtp_code == 421
    assert server.received == []
    with pytest.raises(ValueError):
        server.fail_next("helo", 500, "x")


def test_smtp_close_frees_the_port(clock):
    server = SmtpReceiver(clock).start()
    port = server.port
    server.close()
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)
