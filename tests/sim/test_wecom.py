"""The local WeCom robot enforces keys, sizes, types and 20/min like the real one, always HTTP 200."""

from __future__ import annotations

import json

import pytest
import requests

from sim.wecom import WeComReceiver

KEY = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


@pytest.fixture
def robot(clock):
    with WeComReceiver(clock, [KEY]) as receiver:
        yield receiver


def post(robot, body, key=KEY, raw: bytes | None = None) -> tuple[int, dict]:
    params = {} if key is None else {"key": key}
    if raw is not None:
        r = requests.post(robot.url, params=params, data=raw, timeout=5)
    else:
        r = requests.post(robot.url, params=params, json=body, timeout=5)
    return r.status_code, r.json()


def markdown(content: str) -> dict:
    return {"msgtype": "markdown", "markdown": {"content": content}}


def test_accepts_markdown_and_records_it(robot):
    status, answer = post(robot, markdown("### 履约告警\n> 测试"))
    assert (status, answer) == (200, {"errcode": 0, "errmsg": "ok"})
    [record] = robot.received
    assert record["key_tail"] == KEY[-4:]
    assert record["body"]["markdown"]["content"] == "### 履约告警\n> 测试"
    assert robot.contents() == ["### 履约告警\n> 测试"]
    assert KEY not in json.dumps(robot.received)


@pytest.mark.parametrize(
    ("body", "key", "raw", "errcode", "errmsg"),
    [
        (markdown("x"), "00000000-0000-0000-0000-000000000000", None, 93000, "invalid webhook url"),
        (markdown("x"), None, None, 93000, "invalid webhook url"),
        (None, KEY, b"{not json", 40035, "invalid parameter"),
        (None, KEY, json.dumps([1, 2]).encode(), 40035, "invalid parameter"),
        ({"msgtype": "carrier_pigeon", "carrier_pigeon": {}}, KEY, None, 40008, "invalid message type"),
        ({"msgtype": "markdown"}, KEY, None, 40035, "invalid parameter, missing markdown"),
        (markdown("   "), KEY, None, 44004, "empty content"),
        (markdown("a" * 4097), KEY, None, 40058, "markdown.content exceed max length 4096"),
        (markdown("告" * 1366), KEY, None, 40058, "markdown.content exceed max length 4096"),  # 4098 bytes
        (
            {"msgtype": "text", "text": {"content": "a" * 2049}},
            KEY,
            None,
            40058,
            "text.content exceed max length 2048",
        ),
    ],
)
def test_rejections_answer_http_200_with_errcode(robot, body, key, raw, errcode, errmsg):
    status, answer = post(robot, body, key=key, raw=raw)
    assert status == 200
    assert answer["errcode"] == errcode
    assert answer["errmsg"].startswith(errmsg)
    assert f"e={errcode}" in answer["errmsg"]
    assert robot.messages() == []
    assert len(robot.received) == 1


def test_limits_are_in_utf8_bytes_inclusive(robot):
    assert post(robot, markdown("a" * 4096))[1]["errcode"] == 0
    assert post(robot, markdown("告" * 1365))[1]["errcode"] == 0  # 4095 bytes
    assert post(robot, {"msgtype": "text", "text": {"content": "a" * 2048}})[1]["errcode"] == 0


def test_twenty_per_sliding_minute_per_key_counting_rejections(robot, clock):
    robot.keys.add("other-robot-key-0000")
    for i in range(19):
        assert post(robot, markdown(f"m{i}"))[1]["errcode"] == 0
        clock.advance(1)
    assert post(robot, markdown(""))[1]["errcode"] == 44004  # the 20th request, rejected, still counts
    answer = post(robot, markdown("21st"))[1]
    assert answer["errcode"] == 45009
    assert answer["errmsg"].startswith("api freq out of limit, hint: [")
    assert post(robot, markdown("other robot"), key="other-robot-key-0000")[1]["errcode"] == 0
    clock.advance(42)  # the first two requests leave the window (the 45009 one counted too)
    assert post(robot, markdown("later"))[1]["errcode"] == 0
    assert len(robot.messages()) == 21


def test_get_received_and_unknown_paths(robot):
    post(robot, markdown("hello"))
    answer = requests.get(robot.url.replace("/cgi-bin/webhook/send", "/_received"), timeout=5)
    assert answer.status_code == 200
    [record] = answer.json()
    assert record["response"] == {"errcode": 0, "errmsg": "ok"}
    assert record["at"] == "2026-02-12T10:00:00+00:00"
    missing = requests.post(robot.url.replace("/send", "/nowhere"), params={"key": KEY}, json={}, timeout=5)
    assert missing.status_code == 404


def test_close_frees_the_port(clock):
    robot = WeComReceiver(clock, [KEY]).start()
    url = robot.url
    robot.close()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, params={"key": KEY}, json=markdown("x"), timeout=2)
