"""Dashboard read models over a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from metrics.queries import (
    active_alerts,
    channel_rows,
    dwell_rows,
    golden_tiles,
    judge,
    latest_snapshot,
    load_overview,
    source_health_rows,
    stuck_rows,
)
from metrics.snapshot import KpiValue, Snapshot, labels_of, save_snapshot
from sentinel.config import parse_config
from store.db import init_schema, make_engine
from store.schema import alerts, source_health

T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
ROUTE = {"ops": {"kind": "wecom", "url": "http://127.0.0.1:1/cgi-bin/webhook/send", "key": "k"}}


def config(*rules: dict):
    return parse_config(
        {
            "channels": {"tmall": {"code": "TB", "name": "天猫"}, "jd": {"code": "JD", "name": "京东"}},
            "alerts": {"routes": ROUTE, "rules": [{"route": "ops", **r} for r in rules]},
        },
        env={},
    )


SYNC_P1 = {"name": "sync_p1", "kpi": "sync_success_ratio", "op": "<", "threshold": 0.95, "severity": "P1"}
SYNC_P2 = {"name": "sync_p2", "kpi": "sync_success_ratio", "op": "<", "threshold": 0.9995, "severity": "P2"}
BY_CHANNEL = {**SYNC_P1, "name": "sync_by_channel", "by": ["channel"], "threshold": 0.99}


def snap(*values: tuple[str, dict[str, str], float], at: datetime = T0) -> Snapshot:
    return Snapshot(at, tuple(KpiValue(k, labels_of(lb), v) for k, lb, v in values), 0.1)


SNAP = snap(
    ("sync_success_ratio", {}, 0.975),
    ("sync_success_ratio", {"channel": "tmall"}, 0.95),
    ("sync_paid_orders", {"channel": "tmall"}, 40),
    ("sync_unreached_orders", {"channel": "tmall"}, 2),
    ("sync_success_ratio", {"channel": "jd"}, 1.0),
    ("sync_paid_orders", {"channel": "jd"}, 40),
    ("stuck_orders", {"state": "picked"}, 1),
    ("stuck_orders", {"state": "paid"}, 3),
    ("stuck_orders", {"state": "paid", "channel": "jd"}, 3),
    ("state_orders", {"state": "paid"}, 10),
    ("stuck_ratio", {"state": "paid"}, 0.3),
)


@pytest.fixture
def engine(store_url):
    eng = make_engine(store_url)
    init_schema(eng)
    yield eng
    eng.dispose()


@pytest.mark.parametrize(
    ("value", "rules", "status", "rule"),
    [
        (0.975, [SYNC_P1, SYNC_P2], "bad", "sync_p2"),
        (0.90, [SYNC_P1, SYNC_P2], "bad", "sync_p1"),  # the most severe breached rule wins
        (0.9999, [SYNC_P1, SYNC_P2], "ok", "sync_p1"),
        (0.9995, [SYNC_P2], "ok", "sync_p2"),  # "<" is strict
        (None, [SYNC_P1], "unknown", "sync_p1"),
        (0.5, [], "unknown", None),
    ],
)
def test_judge_uses_the_rule_condition(value, rules, status, rule):
    got_status, got_rule = judge(value, list(config(*rules).alerts.rules))
    assert got_status == status
    assert (got_rule.name if got_rule else None) == rule


def test_golden_tiles_judge_the_total_series_only():
    tiles = golden_tiles(SNAP, config(SYNC_P2, BY_CHANNEL))
    assert [t.kpi for t in tiles] == ["sync_success_ratio"]  # stuck_ratio has no total series nor rule
    tile = tiles[0]
    assert (tile.title_zh, tile.value, tile.status) == ("订单状态同步成功率", 0.975, "bad")
    assert (tile.op, tile.threshold, tile.severity) == ("<", 0.9995, "P2")


def test_golden_tile_without_value_but_with_a_rule_is_unknown():
    rule = {"name": "stuck", "kpi": "stuck_ratio", "op": ">", "threshold": 0.05}
    tiles = {t.kpi: t for t in golden_tiles(snap(), config(rule))}
    assert tiles["stuck_ratio"].status == "unknown" and tiles["stuck_ratio"].value is None
    assert "sync_success_ratio" not in tiles
    assert golden_tiles(None, config()) == []


def test_channel_rows_pivot_channel_only_series():
    columns, rows = channel_rows(SNAP)
    assert columns == ["sync_success_ratio", "sync_paid_orders", "sync_unreached_orders"]
    assert rows == [
        {"channel": "jd", "sync_success_ratio": 1.0, "sync_paid_orders": 40, "sync_unreached_orders": None},
        {"channel": "tmall", "sync_success_ratio": 0.95, "sync_paid_orders": 40, "sync_unreached_orders": 2},
    ]
    assert channel_rows(None) == ([], [])


def test_stuck_rows_follow_the_lifecycle_order():
    rows = stuck_rows(SNAP)
    assert [(r.state, r.stuck_orders, r.state_orders, r.stuck_ratio) for r in rows] == [
        ("paid", 3, 10, 0.3),
        ("picked", 1, None, None),
    ]


def test_dwell_rows_take_the_top_failure_reason_from_the_reason_counts():
    def v(kpi, value, **labels):
        return KpiValue(kpi, labels_of(labels), value)

    snap = Snapshot(
        T0,
        (
            v("dwell_judged_orders", 40, state="picked"),
            v("dwell_judged_orders", 50, state="paid"),
            v("dwell_p50_seconds", 120, state="paid"),
            v("dwell_p95_seconds", 900, state="paid"),
            v("dwell_failure_ratio", 0.1, state="paid"),
            v("dwell_failure_orders", 3, state="paid", reason="timeout"),
            v("dwell_failure_orders", 2, state="paid", reason="cancelled"),
            v("dwell_failure_orders", 0, state="paid", reason="returned"),
            v("dwell_failure_ratio", 0.0, state="picked"),
            v("dwell_failure_orders", 0, state="picked", reason="timeout"),
        ),
        0.0,
    )
    assert [
        (r.state, r.p50_seconds, r.failure_ratio, r.top_reason, r.top_reason_orders) for r in dwell_rows(snap)
    ] == [
        ("paid", 120, 0.1, "timeout", 3),
        ("picked", None, 0.0, None, 0),
    ]
    assert dwell_rows(None) == []


def health(source: str, **over) -> dict:
    row = dict.fromkeys(c.name for c in source_health.columns)
    row.update(source=source, up=True, consecutive_failures=0, errors_json="{}")
    row.update(records_total=0, observations_total=0, quarantined_total=0)
    return {**row, **over}


def test_source_health_rows_measure_age_from_now_and_hide_error_text(engine):
    wms = health(
        "wms_db",
        up=False,
        last_success_at=T0 - timedelta(minutes=5),
        last_error_class="auth_expired",
        last_error="wms_db: password=SECRET rejected",
        consecutive_failures=3,
        errors_json=json.dumps({"auth_expired": 3}),
        lag_seconds=2.5,
    )
    with engine.begin() as conn:
        conn.execute(insert(source_health), [wms, health("jd_api")])
    rows = source_health_rows(engine, T0)
    assert [r.source for r in rows] == ["jd_api", "wms_db"]
    jd, wms = rows
    assert jd.last_success_at is None and jd.seconds_since_success is None and jd.up
    assert wms.seconds_since_success == 300 and not wms.up
    assert (wms.last_error_class, wms.consecutive_failures) == ("auth_expired", 3)
    assert wms.errors == {"auth_expired": 3} and wms.lag_seconds == 2.5
    assert "SECRET" not in repr(rows)
    assert source_health_rows(engine, None)[1].seconds_since_success is None


def test_active_alerts_newest_first_without_resolved(engine):
    def row(fp, state, **times):
        base = {"fingerprint": fp, "rule": "sync_p1", "labels": json.dumps({"channel": "jd"}), "state": state}
        empty = dict.fromkeys(("fired_at", "pending_since", "resolved_at"))
        return {**base, "value": 0.9, "updated_at": T0, **empty, **times}

    with engine.begin() as conn:
        conn.execute(
            insert(alerts),
            [
                row("a", "firing", fired_at=T0 - timedelta(hours=2)),
                row("b", "pending", pending_since=T0 - timedelta(minutes=1)),
                row("c", "resolved", fired_at=T0 - timedelta(minutes=30), resolved_at=T0),
                row("d", "firing", fired_at=T0 - timedelta(minutes=10)),
            ],
        )
    got = active_alerts(engine, config(SYNC_P1))
    assert [a.fingerprint for a in got] == ["b", "d", "a"]
    assert got[1].since == T0 - timedelta(minutes=10)
    assert (got[1].labels, got[1].severity, got[1].value) == ({"channel": "jd"}, "P1", 0.9)
    assert active_alerts(engine)[0].severity is None


def test_load_overview_on_an_empty_store(engine):
    ov = load_overview(engine, config(SYNC_P1))
    assert ov.snapshot is None and ov.channels == [] and ov.stuck == [] and ov.alerts == []
    assert [t.status for t in ov.tiles] == ["unknown"]


def test_load_overview_reads_the_latest_snapshot_and_ages_from_it(engine):
    save_snapshot(engine, snap(("sync_success_ratio", {}, 0.5), at=T0 - timedelta(minutes=1)))
    save_snapshot(engine, SNAP)
    with engine.begin() as conn:
        conn.execute(
            insert(source_health).values(source="s", up=True, last_success_at=T0 - timedelta(seconds=30))
        )
    assert latest_snapshot(engine).get("sync_success_ratio") == 0.975
    ov = load_overview(engine, config(SYNC_P2))
    assert ov.snapshot.computed_at == T0
    assert ov.tiles[0].value == 0.975 and ov.tiles[0].status == "bad"
    assert ov.sources[0].seconds_since_success == 30
    assert (
        load_overview(engine, config(), now=T0 + timedelta(seconds=30)).sources[0].seconds_since_success == 60
    )
