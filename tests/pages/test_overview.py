"""The overview page through Streamlit's AppTest: empty store, seeded store, English switch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from metrics.catalog import KPIS
from metrics.snapshot import KpiValue, Snapshot, labels_of, save_snapshot
from sentinel.auth import USER_KEY, User
from sentinel.config import load_config
from sentinel.i18n import SESSION_KEY, STRINGS, duration, kpi_title, t
from store.db import init_schema, make_engine
from store.schema import alerts, source_health

APP = Path(__file__).resolve().parents[2] / "app.py"
T0 = datetime(2026, 2, 12, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai

CONFIG = """
[service]
store_url = "sqlite:///{db}"
timezone = "Asia/Shanghai"

[channels.tmall]
code = "TB"
name = "天猫"

[alerts.routes.ops]
kind = "wecom"
url = "http://127.0.0.1:1/cgi-bin/webhook/send"
key = "robot-key-SECRET"

[[alerts.rules]]
name = "sync_ratio_low"
kpi = "sync_success_ratio"
op = "<"
threshold = 0.9995
severity = "P1"
route = "ops"
"""


@pytest.fixture
def store_url(tmp_path, monkeypatch):
    db = tmp_path / "store.db"
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=db.as_posix()), encoding="utf-8")
    monkeypatch.setenv("SENTINEL_CONFIG", str(path))
    monkeypatch.delenv("SENTINEL_STORE_URL", raising=False)
    st.cache_data.clear()
    url = load_config().service.store_url
    assert url == f"sqlite:///{db.as_posix()}"
    return url


@pytest.fixture
def seeded(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    values = [
        ("sync_success_ratio", {}, 0.975),
        ("sync_success_ratio", {"channel": "tmall"}, 0.975),
        ("sync_paid_orders", {"channel": "tmall"}, 40),
        ("stuck_orders", {"state": "paid"}, 3),
        ("state_orders", {"state": "paid"}, 10),
    ]
    save_snapshot(engine, Snapshot(T0, tuple(KpiValue(k, labels_of(lb), v) for k, lb, v in values), 0.2))
    health = dict.fromkeys(c.name for c in source_health.columns)
    health.update(
        source="wms_db", up=False, last_success_at=T0 - timedelta(minutes=3), last_error_class="auth_expired",
        last_error="wms_db: login failed for password=hunter2SECRET", consecutive_failures=2,
        records_total=5, observations_total=5, quarantined_total=0, errors_json='{"auth_expired": 2}',
    )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(source_health).values(health))
        conn.execute(
            insert(alerts).values(
                fingerprint="fp1",
                rule="sync_ratio_low",
                labels=json.dumps({}),
                state="firing",
                value=0.975,
                pending_since=T0 - timedelta(minutes=2),
                fired_at=T0 - timedelta(minutes=1),
                updated_at=T0,
            )
        )
    engine.dispose()
    return store_url


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state[USER_KEY] = User("viewer", "viewer")  # what a successful login leaves
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every visible text of the run, to search for labels, values and leaks."""
    parts = [m.label + " " + str(m.value) + " " + str(m.delta) for m in at.metric]
    for kind in ("title", "subheader", "caption", "info", "success", "error", "markdown"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [df.value.to_string() for df in at.dataframe]
    return "\n".join(parts)


def nav_titles(at: AppTest) -> list[str] | None:
    """Titles of the st.navigation pages (AppTest keeps them privately; None if that changes)."""
    pages = getattr(at, "_registered_pages", None)
    return None if not isinstance(pages, dict) else [p.get("page_name") for p in pages.values()]


def test_empty_store_shows_the_friendly_empty_state(store_url):
    at = run_app()
    assert at.title[0].value == "履约健康总览"
    assert "暂无数据，服务启动后约30秒内出现" in [i.value for i in at.info]
    assert not at.metric


def test_seeded_store_shows_kpis_health_and_alerts(seeded):
    at = run_app()
    tile = next(m for m in at.metric if m.label == "订单状态同步成功率")
    assert tile.value == "97.50%"
    assert "99.95%" in tile.delta
    body = texts(at)
    assert "快照时间：2026-02-12 10:00:00（Asia/Shanghai）" in body
    assert "天猫" in body  # channel display name from config
    assert "已付款" in body  # stuck orders by state, Chinese state name
    assert "凭证失效" in body and "故障" in body  # source health strip
    assert "sync_ratio_low" in body and "告警中" in body and "2026-02-12 09:59:00" in body
    assert "SECRET" not in body  # neither source error text nor robot key reach the page


def test_language_switch_defaults_to_chinese(store_url):
    at = run_app()
    radio = at.sidebar.radio(key=SESSION_KEY)
    assert radio.value == "zh" and radio.options == ["中文", "English"]
    assert nav_titles(at) in (["总览", "状态立方体", "生命周期", "数据源", "告警", "对账", "诊断"], None)


def test_english_switch_changes_labels(seeded):
    # The switch is a keyed widget: its session value is what a click sets. (AppTest re-runs of an
    # st.navigation app only re-run the page, not the entrypoint, so the switch is set up front.)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state[USER_KEY] = User("viewer", "viewer")
    at.session_state[SESSION_KEY] = "en"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.radio(key=SESSION_KEY).value == "en"
    assert at.title[0].value == "Fulfillment health overview"
    tile = next(m for m in at.metric if m.label == "Order sync success ratio")
    assert tile.value == "97.50%"
    body = texts(at)
    assert "Sync by channel" in body and "credential expired" in body and "firing" in body
    assert "订单状态同步成功率" not in body
    assert nav_titles(at) in (
        ["Overview", "Status cube", "Lifecycle", "Sources", "Alerts", "Reconciliation", "Diagnose"],
        None,
    )


def test_invalid_config_is_reported_not_raised(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[service]\nstore_url = "sqlite:///x.db"\nbogus = 1\n', encoding="utf-8")
    monkeypatch.setenv("SENTINEL_CONFIG", str(path))
    at = run_app()
    assert "service.bogus: unknown key" in at.error[0].value


def test_every_ui_string_has_both_languages():
    for key, (zh, en) in STRINGS.items():
        assert en, key
        assert zh or key.startswith("kpi."), key  # KPI titles in Chinese come from the catalog
    assert t("nav.overview", "zh") == "总览" and t("nav.overview", "en") == "Overview"
    assert {kpi_title(k.name, "en") for k in KPIS}.isdisjoint({k.title_zh for k in KPIS})
    assert duration(59, "zh") == "59秒" and duration(3 * 3600 + 5, "en") == "3 h"
