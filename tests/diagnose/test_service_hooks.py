"""Where the service uses diagnosis and reconciliation: the one-line likely cause in a firing
alert's message, and the 02:00 reconciliation e-mailed once a day with its CSV (SQLite, PostgreSQL)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta

import pytest
from diagnose_world import T0, World

from alerts.message import render_alert
from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service
from sim.robots.smtp import SmtpReceiver


@pytest.fixture
def smtp():
    with SmtpReceiver(ManualClock(T0), sender_must_match_user=False) as receiver:
        yield receiver


def service_for(store_url, tmp_path, clock, smtp=None) -> Service:
    overrides = {"service.store_url": store_url, "reconcile.csv_dir": str(tmp_path / "reconcile")}
    if smtp is not None:
        overrides["alerts.routes.mail"] = {
            "kind": "email",
            "host": smtp.host,
            "port": smtp.port,
            "tls": "none",
            "sender": "sentinel@example.com",
            "to": ["ops@example.com"],
        }
        overrides["reconcile.route"] = "mail"
    return Service(load_config(DEFAULT_PATH, overrides=overrides), clock, collectors={})


def push_gap(service: Service) -> datetime:
    world = World()
    for i in range(200):
        world.order(i, "jd" if i % 4 == 0 else "tmall", wms=not (i % 4 and i >= 120))
    now = T0 + timedelta(hours=4)
    world.write(service.store, now)
    return now


def test_a_firing_alert_carries_the_one_line_diagnosis(store_url, tmp_path):
    clock = ManualClock(T0)
    service = service_for(store_url, tmp_path, clock)
    try:
        now = push_gap(service)
        rule = next(r for r in service.config.alerts.rules if r.name == "sync_ratio_low")
        line = service.diagnosis_line(rule, {}, now)
        assert line.startswith(
            "自动诊断：ERP→WMS 推送静默中断：自 02-12 20:01 起 60 单已付款超过 SLA 未到达仓库"
        )
        body = render_alert("firing", rule, {}, 0.7, None, service.config, now, since=now, diagnosis=line)
        assert f"> {line}" in body
        assert "自动诊断" not in render_alert("resolved", rule, {}, 1.0, None, service.config, now, since=now)
    finally:
        service.stop()


def test_reconciliation_runs_at_two_once_a_day_by_email_with_csv(store_url, tmp_path, smtp):
    at_two = datetime(2026, 2, 12, 18, 0, tzinfo=UTC)  # 02-13 02:00 in Shanghai
    clock = ManualClock(at_two - timedelta(minutes=1))
    service = service_for(store_url, tmp_path, clock, smtp)
    try:
        push_gap(service)
        assert "reconcile" in [j.name for j in service.jobs()]
        assert service.daily_reconciliation() is False  # 01:59: not yet
        clock.set(at_two)
        assert service.daily_reconciliation() is True
        clock.set(at_two + timedelta(hours=1))
        assert service.daily_reconciliation() is False  # once a day, even across a restart
        service.stop()
        service = service_for(store_url, tmp_path, clock, smtp)
        assert service.daily_reconciliation() is False
        [mail] = smtp.messages()
        assert "每日对账报告 2026-02-13" in mail["Subject"]
        text = mail.get_body(("plain",)).get_content()
        assert "差异 60 单" in text and "WMS缺失（渠道 天猫 · 支付方式 alipay）：60 单" in text
        path = tmp_path / "reconcile" / "reconcile-2026-02-13.csv"
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()))
        assert len(rows) == 60 and {r["reason"] for r in rows} == {"missing_wms"}
        clock.set(at_two + timedelta(days=1))
        assert service.daily_reconciliation() is True
    finally:
        service.stop()
