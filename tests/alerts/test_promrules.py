"""config.toml alert rules -> a Prometheus rules file: expressions, durations, promtool, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from alerts.promrules import prometheus_duration, render_rules, rule_expr
from sentinel.__main__ import main
from sentinel.config import DEFAULT_PATH, Config, load_config, parse_config

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)"
)


def config_with_rules(*rules: dict) -> Config:
    """The project's config.toml with its alert rules replaced."""
    raw = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["alerts"]["rules"] = [{"route": "ops", **rule} for rule in rules]
    return parse_config(raw, env={})


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_expressions_of_the_project_rules():
    rules = {rule.name: rule_expr(rule) for rule in load_config(DEFAULT_PATH, env={}).alerts.rules}
    assert rules == {
        "sync_ratio_low": 'fulfillment_sync_success_ratio{channel="",window=""} < 0.9995'
        ' and fulfillment_sync_paid_orders{channel="",window=""} >= 20',
        "stuck_by_state": 'fulfillment_stuck_ratio{state!="",channel="",warehouse="",carrier="",province="",city="",cs_group=""} > 0.05'
        ' and fulfillment_state_orders{state!="",channel="",warehouse="",carrier="",province="",city="",cs_group=""} >= 20',
        "return_break_high": 'fulfillment_return_break_ratio{channel!=""} > 0.008'
        ' and fulfillment_return_active_orders{channel!=""} >= 10',
        "hop_sync_low": 'fulfillment_hop_sync_success_ratio{hop!="",channel="",window=""} < 0.9995'
        ' and fulfillment_hop_sync_orders{hop!="",channel="",window=""} >= 20',
        "manual_intervention_high": 'fulfillment_manual_intervention_ratio{channel="",window=""} > 0.035'
        ' and fulfillment_paid_orders{channel="",window=""} >= 200',
        "stuck_by_warehouse": 'fulfillment_stuck_ratio{state=~"paid|erp_accepted|wms_received|picked|packed|shipped|in_transit",'
        'channel="",warehouse!="",carrier="",province="",city="",cs_group=""} > 0.1'
        ' and fulfillment_state_orders{state=~"paid|erp_accepted|wms_received|picked|packed|shipped|in_transit",'
        'channel="",warehouse!="",carrier="",province="",city="",cs_group=""} >= 20',
        "transit_stuck_by_city": 'fulfillment_stuck_ratio{state="in_transit",channel="",warehouse="",carrier="",'
        'province="",city!="",cs_group=""} > 0.1 and fulfillment_state_orders{state="in_transit",channel="",'
        'warehouse="",carrier="",province="",city!="",cs_group=""} >= 20',
        "transit_stuck_by_carrier": 'fulfillment_stuck_ratio{state="in_transit",channel="",warehouse="",carrier!="",'
        'province="",city="",cs_group=""} > 0.1 and fulfillment_state_orders{state="in_transit",channel="",'
        'warehouse="",carrier!="",province="",city="",cs_group=""} >= 20',
        "order_loss": 'fulfillment_order_loss_ratio{channel="",window=""} > 0.001'
        ' and fulfillment_order_loss_paid_orders{channel="",window=""} >= 20',
        "duplicate_callbacks": 'fulfillment_duplicate_free_ratio{channel!="",window=""} < 0.997',
        "fast_cancel_high": 'fulfillment_fast_cancel_ratio{channel!="",window="1h"} > 0.03',
        "amount_mismatch": 'fulfillment_amount_mismatch_ratio{channel!="",window=""} > 0.005',
        # source rules read the health metrics
        "source_auth_failed": "fulfillment_source_up == 0 and on(source) "
        'increase(fulfillment_source_errors_total{class=~"auth_expired"}[5m]) > 0',
        "source_lag": "(time() - fulfillment_source_last_success_timestamp_seconds) > 600",
        "source_clock_skew": "fulfillment_source_lead_seconds > 900",
        "queue_backlog": "fulfillment_queue_oldest_message_age_seconds > 1200",
    }


@pytest.mark.parametrize(
    ("rule", "expr"),
    [
        (  # no min_count: the threshold alone
            {"kpi": "sync_success_ratio", "by": ["channel"], "op": "<=", "threshold": 0.99},
            'fulfillment_sync_success_ratio{channel!="",window=""} <= 0.99',
        ),
        (  # match pins a label value; the other label must be absent
            {
                "kpi": "stuck_orders",
                "match": {"state": "picked"},
                "op": ">=",
                "threshold": 10,
                "min_count": 5,
            },
            'fulfillment_stuck_orders{state="picked",channel="",warehouse="",carrier="",province="",city="",cs_group=""} >= 10'
            ' and fulfillment_state_orders{state="picked",channel="",warehouse="",carrier="",province="",city="",cs_group=""} >= 5',
        ),
        (  # a count KPI with no denominator is its own count, as in the engine
            {"kpi": "sync_paid_orders", "op": "<", "threshold": 1.5e3, "min_count": 1},
            'fulfillment_sync_paid_orders{channel="",window=""} < 1500 and fulfillment_sync_paid_orders{channel="",window=""} >= 1',
        ),
        (  # both labels grouped, label values with quotes kept PromQL-escaped
            {
                "kpi": "stuck_ratio",
                "by": ["state", "channel"],
                "match": {"channel": 'a"b'},
                "op": ">",
                "threshold": 0,
            },
            'fulfillment_stuck_ratio{state!="",channel="a\\"b",warehouse="",carrier="",province="",city="",cs_group=""} > 0',
        ),
    ],
)
def test_rule_expressions(rule, expr):
    (parsed,) = config_with_rules({"name": "r", **rule}).alerts.rules
    assert rule_expr(parsed) == expr


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=1), "1s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=4), "4h"),
        (timedelta(days=1, minutes=1), "1d1m"),
        (timedelta(milliseconds=1500), "1s500ms"),
    ],
)
def test_prometheus_durations(delta, text):
    assert prometheus_duration(delta) == text


def test_rules_file_carries_for_labels_and_annotations():
    text = render_rules(load_config(DEFAULT_PATH, env={}))
    assert text.count('  - name: "fulfillment-sentinel"\n') == 1
    assert '      - alert: "sync_ratio_low"\n        expr: \'fulfillment_sync_success_ratio' in text
    assert "        for: 5m\n" in text and "        for: 10m\n" in text
    assert '          severity: "P1"\n          route: "ops"\n' in text
    assert '          summary: "订单付款后未推送到仓库，检查 ERP→WMS 推送任务与支付回调"\n' in text
    # A rule without a summary gets one from the KPI catalog.
    assert '          summary: "状态停滞率高于阈值（> 0.05）"\n' in text


@needs_promtool
def test_promtool_accepts_the_rules_of_the_project_config(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(load_config(DEFAULT_PATH, env={})), encoding="utf-8")
    proc = promtool("check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(load_config(DEFAULT_PATH, env={}).alerts.rules)} rules found" in proc.stdout


@needs_promtool
def test_awkward_text_survives_yaml_promql_and_templates(tmp_path):
    """Quotes, backslashes and template braces in config text reach Prometheus unchanged."""
    channel, summary = 'it\'s "x" \\ {{ y }}', "含 {{ $value }} 与 'quotes' 的\"摘要\""
    config = config_with_rules(
        {
            "name": "quoted",
            "kpi": "stuck_ratio",
            "match": {"state": "paid", "channel": channel},
            "op": ">",
            "threshold": 0.1,
            "summary": summary,
        }
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(config), encoding="utf-8")
    proc = promtool("check", "rules", rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = {"state": "paid", "channel": channel}
    series = "fulfillment_stuck_ratio{" + ",".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"
    test = {
        "rule_files": [str(rules)],
        "tests": [
            {
                "input_series": [{"series": series, "values": "0.5"}],
                "alert_rule_test": [
                    {
                        "eval_time": "0m",
                        "alertname": "quoted",
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "severity": "P2", "route": "ops"},
                                "exp_annotations": {"summary": summary},
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")
    proc = promtool("test", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_for_durations_hold_in_promtool_rule_tests(tmp_path):
    """promtool's rule unit tests replay series: nothing before `for` has passed, then exactly one alert."""
    config = load_config(DEFAULT_PATH, env={})
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(config), encoding="utf-8")
    target = 'instance="sentinel:9464",job="sentinel"'
    base = {"instance": "sentinel:9464", "job": "sentinel"}
    summary = config.alerts.rules[0].summary
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"fulfillment_sync_success_ratio{{{target}}}", "values": "0.9x20"},
                    {"series": f"fulfillment_sync_paid_orders{{{target}}}", "values": "100x20"},
                    # A breakdown series and a below-min_count state must not alert.
                    {"series": f'fulfillment_sync_success_ratio{{channel="jd",{target}}}', "values": "0x20"},
                    {"series": f'fulfillment_sync_paid_orders{{channel="jd",{target}}}', "values": "100x20"},
                    {"series": f'fulfillment_stuck_ratio{{state="picked",{target}}}', "values": "0.5x20"},
                    {"series": f'fulfillment_state_orders{{state="picked",{target}}}', "values": "40x20"},
                    {"series": f'fulfillment_stuck_ratio{{state="paid",{target}}}', "values": "0.5x20"},
                    {"series": f'fulfillment_state_orders{{state="paid",{target}}}', "values": "19x20"},
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "sync_ratio_low", "exp_alerts": []},
                    {
                        "eval_time": "5m",
                        "alertname": "sync_ratio_low",
                        "exp_alerts": [
                            {
                                "exp_labels": {**base, "severity": "P1", "route": "ops"},
                                "exp_annotations": {"summary": summary},
                            }
                        ],
                    },
                    {"eval_time": "9m", "alertname": "stuck_by_state", "exp_alerts": []},
                    {
                        "eval_time": "10m",
                        "alertname": "stuck_by_state",
                        "exp_alerts": [
                            {
                                "exp_labels": {**base, "state": "picked", "severity": "P2", "route": "ops"},
                                "exp_annotations": {"summary": "状态停滞率高于阈值（> 0.05）"},
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yml"
    path.write_text(json.dumps(test, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    proc = promtool("test", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_writes_the_rules_file(tmp_path, capsys):
    out = tmp_path / "rules.yml"
    assert main(["export-rules", "--config", str(DEFAULT_PATH), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_rules(load_config(DEFAULT_PATH))
    assert main(["export-rules", "--config", str(DEFAULT_PATH)]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")


def test_cli_rejects_an_invalid_config(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    raw = DEFAULT_PATH.read_text(encoding="utf-8").replace('kpi = "stuck_ratio"', 'kpi = "no_such_kpi"')
    bad.write_text(raw, encoding="utf-8")
    out = tmp_path / "rules.yml"
    assert main(["export-rules", "--config", str(bad), "--out", str(out)]) == 1
    assert "alerts.rules[1].kpi: unknown KPI 'no_such_kpi'" in capsys.readouterr().err
    assert not out.exists()
