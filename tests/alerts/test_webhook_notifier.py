"""WebhookNotifier against the real local receiver: Alertmanager v4 JSON, auth, signature, status codes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import SecretStr

from alerts.message import render_alert
from alerts.notifiers.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, ZERO_TIME, WebhookNotifier, signature
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.clock import ManualClock
from sentinel.config import parse_config
from sim.robots.webhook import WebhookReceiver, schema_problem

TOKEN = "whk_live_3b9f2c7e5a1d4f8e9c0b6a7d"
SECRET = "hmac-secret-8c1e4f7a2b5d9e0c3f6a"
NOW = datetime(2026, 2, 12, 10, 30, tzinfo=UTC)  # 18:30 in Asia/Shanghai


def config():
    return parse_config(
        {
            "service": {"dashboard_url": "http://sentinel.example:8501/"},
            "channels": {"tmall": {"code": "TB", "name": "天猫"}},
            "alerts": {
                "routes": {"hook": {"kind": "webhook", "url": "http://127.0.0.1:1/alerts"}},
                "rules": [
                    {
                        "name": "sync_ratio_low",
                        "kpi": "sync_success_ratio",
                        "by": ["channel"],
                        "op": "<",
                        "threshold": 0.9995,
                        "severity": "P1",
                        "route": "hook",
                    }
                ],
            },
        },
        env={},
    )


def body(kind: str) -> str:
    cfg = config()
    labels = labels_of(channel="tmall")
    snap = Snapshot(NOW, (KpiValue("sync_success_ratio", labels, 0.4),))
    since = NOW - timedelta(minutes=20)
    return render_alert(kind, cfg.alerts.rules[0], labels, 0.4, snap, cfg, NOW, since=since)


@pytest.fixture
def clock():
    return ManualClock(NOW)


@pytest.fixture
def hook(clock):
    with WebhookReceiver(clock) as receiver:
        yield receiver


def notifier(hook, clock, **kw) -> WebhookNotifier:
    return WebhookNotifier(
        hook.url, clock, receiver="hook", external_url="http://sentinel.example:8501/", **kw
    )


def test_firing_alert_arrives_as_an_alertmanager_message(hook, clock):
    [result] = notifier(hook, clock).send(body("firing"))
    assert (result.ok, result.code) == (True, "ok")
    [doc] = hook.messages()
    assert schema_problem(doc) is None
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "hook"
    assert doc["externalURL"] == "http://sentinel.example:8501/"
    [alert] = doc["alerts"]
    assert alert["labels"] == {"alertname": "sync_success_ratio", "channel": "tmall", "severity": "P1"}
    assert doc["commonLabels"] == alert["labels"] and doc["groupLabels"] == {
        "alertname": "sync_success_ratio"
    }
    assert doc["groupKey"] == '{}:{alertname="sync_success_ratio"}'
    assert alert["startsAt"] == "2026-02-12T10:10:00Z" and alert["endsAt"] == ZERO_TIME
    assert alert["generatorURL"] == "http://sentinel.example:8501/?kpi=sync_success_ratio&channel=tmall"
    assert alert["annotations"]["summary"] == "履约告警 P1 订单状态同步成功率低于阈值"
    assert "当前值：40.00%" in alert["annotations"]["description"]
    assert len(alert["fingerprint"]) == 16


def test_resolved_alert_keeps_the_fingerprint_and_gets_an_end(hook, clock):
    n = notifier(hook, clock)
    assert n.send(body("firing"))[0].ok and n.send(body("resolved"))[0].ok
    firing, resolved = (doc["alerts"][0] for doc in hook.messages())
    assert resolved["status"] == "resolved" and hook.messages()[1]["status"] == "resolved"
    assert resolved["fingerprint"] == firing["fingerprint"]
    assert (resolved["startsAt"], resolved["endsAt"]) == ("2026-02-12T10:10:00Z", "2026-02-12T10:30:00Z")


def test_bearer_token_and_signature_are_checked(clock):
    with WebhookReceiver(clock, bearer_token=TOKEN, hmac_secret=SECRET) as hook:
        [ok] = notifier(hook, clock, bearer_token=SecretStr(TOKEN), hmac_secret=SecretStr(SECRET)).send(
            body("firing")
        )
        [record] = hook.received
    assert ok.ok
    assert "authorization" not in record["headers"]  # never recorded
    timestamp = record["headers"][TIMESTAMP_HEADER.lower()]
    assert timestamp == str(int(NOW.timestamp()))
    assert record["headers"][SIGNATURE_HEADER.lower()].startswith("sha256=")
    assert signature(SECRET, timestamp, b"{}") != signature("other", timestamp, b"{}")


@pytest.mark.parametrize(
    ("token", "secret", "skew", "reason"),
    [
        (None, SECRET, 0, "invalid bearer token"),
        ("whk_wrong", SECRET, 0, "invalid bearer token"),
        (TOKEN, None, 0, "missing signature timestamp"),
        (TOKEN, "wrong-secret", 0, "invalid signature"),
        (TOKEN, SECRET, -301, "stale signature timestamp"),
    ],
    ids=["no-token", "wrong-token", "unsigned", "wrong-secret", "stale"],
)
def test_auth_failures_are_permanent_config_errors(clock, token, secret, skew, reason):
    with WebhookReceiver(clock, bearer_token=TOKEN, hmac_secret=SECRET) as hook:
        skewed = ManualClock(NOW + timedelta(seconds=skew))
        [result] = notifier(hook, skewed, bearer_token=token, hmac_secret=secret).send(body("firing"))
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "HTTP 401" in result.detail and reason in result.response_text


def test_oversized_document_is_refused_before_io(hook, clock):
    [result] = notifier(hook, clock).send(body("firing") + "\n> " + "长" * 30_000)
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "over 65536" in result.detail and hook.received == []


def test_receivers_413_is_a_payload_error(clock):
    with WebhookReceiver(clock, max_bytes=500) as hook:
        [result] = notifier(hook, clock).send(body("firing"))
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "HTTP 413" in result.detail


def test_429_is_retryable_after_retry_after(clock):
    with WebhookReceiver(clock, per_minute=1) as hook:
        n = notifier(hook, clock)
        assert n.send(body("firing"))[0].ok
        clock.advance(15)
        [result] = n.send(body("firing"))
    assert (result.ok, result.retryable, result.code) == (False, True, "rate_limited")
    assert result.retry_after == 45  # the receiver's Retry-After, not our default


@pytest.mark.parametrize(
    ("status", "retry_after", "code", "expected_wait"),
    [
        (503, "120", "transient", 120),
        (503, format_datetime(NOW + timedelta(minutes=3), usegmt=True), "transient", 180),
        (502, None, "transient", None),
        (429, None, "rate_limited", 60),
        (408, None, "transient", None),
    ],
)
def test_retryable_statuses_honour_retry_after(hook, clock, status, retry_after, code, expected_wait):
    hook.fail_next(status, retry_after)
    [result] = notifier(hook, clock).send(body("firing"))
    assert (result.ok, result.retryable, result.code) == (False, True, code)
    assert result.retry_after == expected_wait


@pytest.mark.parametrize(
    ("status", "ok", "retryable", "code"),
    [
        (200, True, False, "ok"),
        (202, True, False, "ok"),
        (204, True, False, "ok"),
        (301, False, False, "config"),
        (400, False, False, "payload"),
        (401, False, False, "config"),
        (403, False, False, "config"),
        (404, False, False, "config"),
        (413, False, False, "payload"),
        (422, False, False, "payload"),
        (429, False, True, "rate_limited"),
        (500, False, True, "transient"),
        (503, False, True, "transient"),
    ],
)
def test_status_classification(status, ok, retryable, code):
    result = WebhookNotifier._classify(status, "")
    assert (result.ok, result.retryable, result.code) == (ok, retryable, code)


def test_throttles_before_io_at_59_per_sliding_minute(hook, clock):
    n = notifier(hook, clock)
    outcomes = [n.send(body("firing"))[0] for _ in range(60)]
    assert [o.ok for o in outcomes] == [True] * 59 + [False]
    assert outcomes[-1].code == "throttled" and len(hook.received) == 59


def test_secrets_never_in_results_or_logs(clock, caplog):
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver(clock, bearer_token=TOKEN, hmac_secret=SECRET) as hook:
        good = notifier(hook, clock, bearer_token=TOKEN, hmac_secret=SECRET)
        bad = notifier(hook, clock, bearer_token=TOKEN + "x", hmac_secret=SECRET)
        results = good.send(body("firing")) + bad.send(body("firing"))
    assert results[0].ok and not results[1].ok
    for text in (caplog.text, repr(results), repr(good), repr(hook.received)):
        assert TOKEN not in text and SECRET not in text
