"""Alert messages say what broke, how many orders, where, since when, and link to the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.message import render_alert
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.config import parse_config

NOW = datetime(2026, 2, 12, 10, 30, tzinfo=UTC)  # 18:30 in Asia/Shanghai


def make_config(**rule_overrides):
    rule = {
        "name": "sync_ratio_low",
        "kpi": "sync_success_ratio",
        "op": "<",
        "threshold": 0.9995,
        "for": "5m",
        "severity": "P1",
        "route": "ops",
        "summary": "仓库推送接口可能中断，请检查 ERP→WMS 推送任务",
    }
    rule.update(rule_overrides)
    return parse_config(
        {
            "service": {"dashboard_url": "http://sentinel.example:8501/"},
            "channels": {
                "tmall": {"code": "TB", "name": "天猫"},
                "jd": {"code": "JD", "name": "京东"},
                "pdd": {"code": "PDD", "name": "拼多多"},
            },
            "kpi": {
                "sync_sla": "15m",
                "stuck_timeouts": {"paid": "15m", "picked": "12m", "in_transit": "4h"},
            },
            "alerts": {
                "routes": {
                    "ops": {"kind": "wecom", "url": "http://x/send", "key": "k", "mentions": ["zhangsan"]}
                },
                "rules": [rule],
            },
        },
        env={},
    )


def sync_snapshot(extra_channels: int = 0) -> Snapshot:
    values = [
        KpiValue("sync_success_ratio", (), 1203 / 1842),
        KpiValue("sync_paid_orders", (), 1842),
        KpiValue("sync_unreached_orders", (), 639),
    ]
    for channel, paid, stuck in (("tmall", 1000, 600), ("jd", 700, 39), ("pdd", 142, 0)):
        labels = labels_of(channel=channel)
        values += [
            KpiValue("sync_paid_orders", labels, paid),
            KpiValue("sync_unreached_orders", labels, stuck),
            KpiValue("sync_success_ratio", labels, (paid - stuck) / paid),
        ]
    for i in range(extra_channels):
        values.append(KpiValue("sync_unreached_orders", labels_of(channel=f"shop_{i:04d}_渠道"), 1))
    return Snapshot(NOW, tuple(values))


def render(kind, config, labels=(), value=1203 / 1842, snapshot=None, since=NOW - timedelta(minutes=20)):
    rule = config.alerts.rules[0]
    return render_alert(kind, rule, labels, value, snapshot or sync_snapshot(), config, NOW, since=since)


def test_firing_sync_message_has_what_how_many_where_when_and_link():
    body = render("firing", make_config())
    lines = body.split("\n")
    assert lines[0] == '### 履约告警 <font color="warning">P1</font> 订单状态同步成功率低于阈值'
    assert "> 范围：全部渠道" in lines
    assert "> 当前值：**65.31%**（阈值 < 99.95%）" in lines
    assert "> 滞留订单：**639** 单已付款超过 15 分钟未到达仓库（共 1842 单）" in lines
    assert "> 影响渠道：天猫 600 单、京东 39 单" in lines  # channels without stuck orders are left out
    assert "> 开始时间：2026-02-12 18:10" in lines  # fired time in Asia/Shanghai
    assert "> 可能原因：仓库推送接口可能中断，请检查 ERP→WMS 推送任务" in lines
    assert "[查看详情](http://sentinel.example:8501/?kpi=sync_success_ratio)" in lines
    assert lines[-1] == "<@zhangsan>"


def test_per_channel_alert_names_the_channel_and_links_to_it():
    body = render("firing", make_config(by=["channel"]), labels=labels_of(channel="tmall"), value=0.4)
    assert "> 范围：渠道 天猫" in body
    assert "> 滞留订单：**600** 单已付款超过 15 分钟未到达仓库（共 1000 单）" in body
    assert "影响渠道" not in body
    assert "?kpi=sync_success_ratio&channel=tmall)" in body


def test_stuck_ratio_message_counts_orders_in_the_state_and_top_channels():
    config = make_config(kpi="stuck_ratio", by=["state"], op=">", threshold=0.05, summary="")
    snap = Snapshot(
        NOW,
        (
            KpiValue("stuck_ratio", labels_of(state="picked"), 0.25),
            KpiValue("stuck_orders", labels_of(state="picked"), 50),
            KpiValue("state_orders", labels_of(state="picked"), 200),
            KpiValue("stuck_orders", labels_of(state="picked", channel="jd"), 45),
            KpiValue("stuck_orders", labels_of(state="picked", channel="tmall"), 5),
            KpiValue("stuck_orders", labels_of(state="paid", channel="pdd"), 99),
        ),
    )
    body = render("firing", config, labels=labels_of(state="picked"), value=0.25, snapshot=snap)
    assert "状态停滞率高于阈值" in body.split("\n")[0]
    assert "> 当前值：**25.00%**（阈值 > 5.00%）" in body
    assert "> 停滞订单：**50** 单在「已拣货」状态超过 12 分钟（该状态共 200 单）" in body
    assert "> 影响渠道：京东 45 单、天猫 5 单" in body
    assert "可能原因" not in body
    assert "kpi=stuck_ratio&state=picked" in body


def test_in_transit_stuck_message_says_no_tracking_update():
    config = make_config(kpi="stuck_ratio", by=["state", "city"], op=">", threshold=0.1, summary="")
    labels = labels_of(state="in_transit", city="广州市")
    snap = Snapshot(
        NOW,
        (
            KpiValue("stuck_ratio", labels, 0.3),
            KpiValue("stuck_orders", labels, 18),
            KpiValue("state_orders", labels, 60),
        ),
    )
    body = render("firing", config, labels=labels, value=0.3, snapshot=snap)
    assert "> 停滞订单：**18** 单在「运输中」状态超过 4 小时无物流更新（该状态共 60 单）" in body


def test_repeat_says_ongoing_with_current_values_and_duration():
    body = render("repeat", make_config(), value=0.5, since=NOW - timedelta(hours=1, minutes=5))
    assert body.startswith('### 履约告警持续中 <font color="warning">P1</font>')
    assert "**50.00%**" in body
    assert "> 开始时间：2026-02-12 17:25（已持续 1 小时 5 分钟）" in body


def test_resolved_is_short_green_with_duration():
    body = render("resolved", make_config(), value=0.9999, since=NOW - timedelta(minutes=45))
    assert body.startswith('### <font color="info">已恢复</font> 订单状态同步成功率')
    assert "> 持续时长：45 分钟（2026-02-12 17:45 至 2026-02-12 18:30）" in body
    assert "99.99%" in body and "滞留订单" not in body and "可能原因" not in body
    assert len(body.split("\n")) <= 7


def test_resolved_when_series_vanished_says_no_data():
    body = render("resolved", make_config(), value=None)
    assert "> 当前值：无数据" in body


@pytest.mark.parametrize("kind", ["firing", "repeat", "resolved"])
def test_messages_stay_well_under_4096_bytes(kind):
    config = make_config(summary="原因" * 2000)
    body = render(kind, config, snapshot=sync_snapshot(extra_channels=500))
    assert len(body.encode("utf-8")) <= 3800
    if kind != "resolved":
        assert "等 502 个渠道" in body
        assert body.split("\n")[-1] == "<@zhangsan>"


def test_count_kpis_are_shown_as_integers():
    config = make_config(kpi="sync_unreached_orders", op=">", threshold=100)
    body = render("firing", config, value=639)
    assert "> 当前值：**639**（阈值 > 100）" in body
    assert "付款后未到仓订单高于阈值" in body


def test_hop_sync_message_names_the_hop_its_unsynced_orders_and_channels():
    config = make_config(kpi="hop_sync_success_ratio", by=["hop"], summary="")
    hop = labels_of(hop="erp_wms")
    snap = Snapshot(
        NOW,
        (
            KpiValue("hop_sync_success_ratio", hop, 0.9),
            KpiValue("hop_sync_orders", hop, 600),
            KpiValue("hop_sync_unreached_orders", hop, 60),
            KpiValue("hop_sync_unreached_orders", labels_of(hop="erp_wms", channel="jd"), 60),
            KpiValue("hop_sync_unreached_orders", labels_of(hop="channel_erp", channel="tmall"), 7),
        ),
    )
    body = render("firing", config, labels=hop, value=0.9, snapshot=snap)
    assert "> 范围：环节 ERP→仓库" in body
    assert "> 未同步订单：**60** 单卡在「ERP→仓库」（共 600 单）" in body
    assert "> 影响渠道：京东 60 单" in body  # the other hop's channels are not counted
