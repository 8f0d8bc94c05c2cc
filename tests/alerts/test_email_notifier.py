"""EmailNotifier against the real local SMTP server: MIME, UTF-8 subject, STARTTLS, AUTH, reply codes."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
from email.utils import parsedate_to_datetime

import pytest
from pydantic import SecretStr

from alerts.notifiers.email import EmailNotifier, subject_of
from sim.robots.smtp import SmtpReceiver

USER = "alerts@example.com"
PASSWORD = "abcdefghijklmnop"  # a QQ-style 16-letter authorisation code
TO = ("ops@example.com", "oncall@example.com")
BODY = (
    '### 履约告警持续中 <font color="warning">P1</font> 同步成功率低于阈值\n'
    "> 范围：渠道 天猫\n"
    "> 当前值：**99.10%**（阈值 < 99.95%）\n"
    "> 开始时间：2026-02-12 18:00（已持续 1 小时）\n"
    "[查看详情](http://127.0.0.1:8501/?kpi=sync_success_ratio&channel=tmall)\n"
    "<@zhangsan>"
)


@pytest.fixture
def server(clock):
    with SmtpReceiver(clock, {USER: PASSWORD}) as receiver:
        yield receiver


def notifier(server, clock, password=PASSWORD, **kw) -> EmailNotifier:
    options = {"tls": "none", "username": USER, "password": SecretStr(password), **kw}
    return EmailNotifier(server.host, server.port, USER, TO, clock, **options)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway self-signed certificate for 127.0.0.1 (made with the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_multipart_alternative_with_chinese_subject_text_and_html(server, clock):
    [result] = notifier(server, clock).send(BODY)
    assert (result.ok, result.code) == (True, "ok")
    [record] = server.received
    assert (record["user"], record["mail_from"], record["rcpt_to"]) == (USER, USER, list(TO))
    raw = record["data"].decode("ascii")  # the subject travels as RFC 2047 encoded-words
    assert "=?utf-8?" in raw and "履约" not in raw.split("\r\n\r\n", 1)[0]
    [msg] = server.messages()
    assert msg["Subject"] == "[履约告警][P1] 持续中 同步成功率低于阈值"
    assert msg.get_content_type() == "multipart/alternative"
    assert parsedate_to_datetime(msg["Date"]) == clock.now()
    assert msg["Message-ID"].endswith("@example.com>") and msg["Message-ID"] in result.response_text
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "当前值：99.10%（阈值 < 99.95%）" in text and "查看详情：http://127.0.0.1:8501/" in text
    assert '<span style="color:#e65100">P1</span>' in html
    assert "<strong>99.10%</strong>（阈值 &lt; 99.95%）" in html
    assert '<a href="http://127.0.0.1:8501/?kpi=sync_success_ratio&amp;channel=tmall">查看详情</a>' in html
    assert "zhangsan" not in text + html  # chat mentions mean nothing in e-mail


@pytest.mark.parametrize(
    ("first_line", "subject"),
    [
        ('### <font color="info">已恢复</font> 同步成功率', "[履约告警][已恢复] 同步成功率"),
        ('### 履约告警 <font color="comment">P3</font> 停滞订单', "[履约告警][P3] 停滞订单"),
        ("普通一行", "[履约告警] 普通一行"),
    ],
)
def test_subject_from_the_heading(first_line, subject):
    assert subject_of(first_line + "\n> x", "[履约告警]") == subject


def test_auth_login_method(clock):
    with SmtpReceiver(clock, {USER: PASSWORD}, auth_methods=("LOGIN",)) as server:
        assert notifier(server, clock).send(BODY)[0].ok
    assert server.auth_attempts == [(USER, True)]


def test_starttls_then_login(clock, tls_files):
    server_context, client_context = tls_files
    with SmtpReceiver(clock, {USER: PASSWORD}, tls_context=server_context) as server:
        n = notifier(server, clock, tls="starttls", ssl_context=client_context)
        [result] = n.send(BODY)
    assert result.ok, result.detail
    assert server.received[0]["tls"] is True and server.received[0]["user"] == USER


def test_implicit_tls_then_login(clock, tls_files):
    server_context, client_context = tls_files
    with SmtpReceiver(clock, {USER: PASSWORD}, tls_context=server_context, implicit_tls=True) as server:
        [result] = notifier(server, clock, tls="ssl", ssl_context=client_context).send(BODY)
    assert result.ok, result.detail
    assert server.received[0]["tls"] is True and server.received[0]["user"] == USER


def test_untrusted_certificate_is_a_config_error(clock, tls_files):
    server_context, _ = tls_files
    with SmtpReceiver(clock, {USER: PASSWORD}, tls_context=server_context) as server:
        [result] = notifier(server, clock, tls="starttls").send(BODY)  # system CAs do not know it
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "certificate" in result.detail and server.received == []


def test_no_login_before_tls(clock, tls_files):
    server_context, _ = tls_files
    with SmtpReceiver(clock, {USER: PASSWORD}, tls_context=server_context) as server:
        [result] = notifier(server, clock, tls="none").send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "AUTH" in result.detail and server.auth_attempts == []


def test_starttls_not_offered_is_a_config_error(server, clock):
    [result] = notifier(server, clock, tls="starttls").send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "STARTTLS" in result.detail


def test_wrong_password_is_config_and_never_shown(server, clock, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "wrongwrongwrong1"
    n = notifier(server, clock, password=bad)
    [result] = n.send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, False, "config")
    assert "535" in result.detail
    assert server.auth_attempts == [(USER, False), (USER, False)]  # smtplib tried PLAIN, then LOGIN
    ok = notifier(server, clock).send(BODY)
    for text in (caplog.text, repr(result), repr(ok), repr(n), repr(server.received)):
        assert bad not in text and PASSWORD not in text


@pytest.mark.parametrize(
    ("stage", "code", "text", "result_code", "retryable"),
    [
        ("connect", 421, "4.3.2 Service not available", "rate_limited", True),
        ("connect", 554, "5.7.1 No SMTP service here", "config", False),
        ("auth", 454, "4.7.0 Temporary authentication failure", "transient", True),
        ("mail", 451, "4.3.0 Local error in processing", "transient", True),
        ("mail", 553, "5.7.1 Sender address rejected", "config", False),
        ("rcpt", 450, "4.2.1 Mailbox busy", "transient", True),
        ("rcpt", 550, "5.1.1 User unknown", "config", False),
        ("rcpt", 452, "4.3.1 Insufficient system storage", "transient", True),
        ("data", 552, "5.3.4 Message too big", "payload", False),
        ("data", 554, "5.7.1 Message rejected as spam", "payload", False),
        ("data", 550, "5.7.1 Content rejected", "payload", False),
    ],
)
def test_reply_codes_are_classified(server, clock, stage, code, text, result_code, retryable):
    server.fail_next(stage, code, text, times=2)  # smtplib tries a second AUTH method / recipient
    [result] = notifier(server, clock).send(BODY)
    assert (result.ok, result.code, result.retryable) == (False, result_code, retryable)
    assert f"SMTP {code}" in result.detail and text in result.detail
    assert server.received == []


def test_sender_must_be_the_authenticated_account(server, clock):
    n = EmailNotifier(server.host, server.port, "other@example.com", TO, clock, tls="none", username=USER,
                      password=PASSWORD)  # fmt: skip
    [result] = n.send(BODY)
    assert (result.code, result.retryable) == ("config", False) and "553" in result.detail


def test_some_recipients_refused_still_delivers(clock):
    with SmtpReceiver(clock, {USER: PASSWORD}, reject_recipients=("oncall@example.com",)) as server:
        [result] = notifier(server, clock).send(BODY)
    assert result.ok and "refused: oncall@example.com" in result.detail
    assert server.received[0]["rcpt_to"] == ["ops@example.com"]


def test_message_over_the_servers_size_is_a_payload_error(clock):
    with SmtpReceiver(clock, {USER: PASSWORD}, max_size=2000) as server:
        [result] = notifier(server, clock).send(BODY + "\n> " + "长" * 2000)
    assert (result.ok, result.retryable, result.code) == (False, False, "payload")
    assert "552" in result.detail and server.received == []


def test_an_alert_is_never_split(server, clock):
    n = notifier(server, clock)
    assert n.split("a\n" * 10_000) == ["a\n" * 10_000] and n.split(" \n") == []


def test_server_throttling_is_retryable_after_a_minute(clock):
    with SmtpReceiver(clock, {USER: PASSWORD}, per_minute=1) as server:
        n = notifier(server, clock)
        assert n.send(BODY)[0].ok
        [result] = n.send(BODY)
        clock.advance(60)
        [later] = n.send(BODY)
    assert (result.code, result.retryable, result.retry_after) == ("rate_limited", True, 60)
    assert "421" in result.detail and later.ok


def test_throttles_before_io_at_19_per_sliding_minute(server, clock):
    n = notifier(server, clock)
    outcomes = [n.send(BODY)[0] for _ in range(20)]
    assert [o.ok for o in outcomes] == [True] * 19 + [False]
    assert outcomes[-1].code == "throttled" and outcomes[-1].retry_after == pytest.approx(60)
    assert len(server.received) == 19


def test_unreachable_server_is_a_network_error(clock):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    n = EmailNotifier("127.0.0.1", port, USER, TO, clock, tls="none", timeout=2)
    [result] = n.send(BODY)
    assert (result.ok, result.retryable, result.code) == (False, True, "network")
