"""Every incident of the catalog, replayed through the whole pipeline: detected by the default rules
of config.toml, with no false alert and its cause ranked first; again in another world (seed 2, 10x
the orders), where clean_day raises no alert.

Replays step 5 virtual minutes (polls, KPI refresh and evaluation run once a step), those of the
other world 15 minutes, to keep the suite fast; `python -m sim run --all` replays at the default
1-minute step.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta

import pytest

from sim.runner import run_scenario

STEP = timedelta(minutes=5)
OTHER_WORLD_STEP = timedelta(minutes=15)
HAS_DIAGNOSE = importlib.util.find_spec("diagnose") is not None
AMQP_URL = os.environ.get("SENTINEL_TEST_AMQP_URL")
CATALOG = [
    "wms_push_gap",
    "intake_outage",
    "api_rate_limited",
    "duplicate_callbacks",
    "api_key_rotated",
    pytest.param(
        "mq_consumers_gone",
        marks=pytest.mark.skipif(AMQP_URL is None, reason="SENTINEL_TEST_AMQP_URL is not set (RabbitMQ)"),
    ),
    "cancel_misfire",
    "timezone_skew",
    "field_filter_loss",
    "pick_pack_stall",
    "tracking_stall",
    "price_mismatch",
]


@pytest.mark.parametrize("name", CATALOG)
def test_each_catalog_incident_is_detected_without_false_alerts(name):
    report = run_scenario(name, step=STEP, amqp_url=AMQP_URL, diagnosis=HAS_DIAGNOSE)
    _assert_detected_and_diagnosed(name, report)
    if name == "field_filter_loss":
        _assert_the_47_by_reason_signature(report, 47)


@pytest.mark.parametrize("name", [*CATALOG, "clean_day"])
def test_another_world_of_each_incident_seed_2_at_ten_times_the_orders(name):
    """Seed 2 and scale 10 in one world (other orders, other fault victims, 10x the counts)."""
    report = run_scenario(
        name, seed=2, scale=10.0, step=OTHER_WORLD_STEP, amqp_url=AMQP_URL, diagnosis=HAS_DIAGNOSE
    )
    assert (report["seed"], report["scale"]) == (2, 10.0)
    if name == "clean_day":
        assert report["truth"]["created"] == 30000
        assert report["alerts"] == [] and report["notifications"] == []
        assert report["truth"]["sync_success_ratio"] == 1.0
    else:
        _assert_detected_and_diagnosed(name, report)
    if name == "field_filter_loss":
        _assert_the_47_by_reason_signature(report, 470)


def _assert_detected_and_diagnosed(name: str, report: dict) -> None:
    verdict = report["verdict"]
    assert verdict["detected"], (name, report["alerts"])
    assert verdict["false_alerts"] == 0, (name, verdict["false_alert_rules"])
    assert verdict["time_to_alert_s"] is not None and verdict["time_to_alert_s"] >= 0
    if HAS_DIAGNOSE:  # the cause named at the first alert, or at the end when that named none
        causes = (report["diagnosis"] or {}).get("causes") or report["diagnosis_end"]["causes"]
        assert verdict["top_cause"] == name, (name, [(c["cause"], c["score"]) for c in causes[:3]])


def _assert_the_47_by_reason_signature(report: dict, missing: int) -> None:
    """1,284 paid on the channels, the ERP pulled 1,237: the hop alert fires on channel_erp, and the
    diagnosis (ERP never pulled them) and the reconciliation both list the missing orders by field
    signature: Youzan/WeChat Pay, SKU prefix CAP-, Douyin."""
    truth = report["truth"]
    assert truth["faults"] == {"erp_pull_dropped": missing}
    assert truth["paid"] - truth["reached_wms"] == missing
    fired = {(a["rule"], tuple(a["labels"].items())) for a in report["alerts"]}
    assert ("hop_sync_low", (("hop", "channel_erp"),)) in fired
    if not HAS_DIAGNOSE:
        return
    findings = report["diagnosis_end"]["findings"]
    expected = {
        (("channel", "youzan"), ("payment_method", "wechatpay")),
        (("sku_prefix", "CAP-"),),
        (("channel", "douyin"),),
    }
    pulled = next(f for f in findings if f["probe"] == "erp_pull")
    assert pulled["order_count"] == missing and pulled["cause"] == "field_filter_loss"
    groups = [e for e in pulled["evidence"] if e["fact"] == "field_signature"]
    assert {tuple(g["fields"].items()) for g in groups} == expected, groups
    assert sum(g["orders"] for g in groups) == missing
    rec = next(f for f in findings if f["probe"] == "reconcile")
    listed = [e for e in rec["evidence"] if e["fact"] == "difference_signature"]
    assert {tuple(g["fields"].items()) for g in listed if g["signature"]} == expected, listed
    assert sum(g["orders"] for g in listed) == missing
    assert all(g["reason"] == "missing_erp" for g in listed)
