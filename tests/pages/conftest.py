"""Fixtures of the page tests: a config with three logins, a small real store, AppTest helpers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import insert
from streamlit.testing.v1 import AppTest

from collectors.types import Batch, Observation, Quarantined
from metrics.kpi import KpiEngine
from metrics.snapshot import save_snapshot
from sentinel.auth import USER_KEY, User, hash_password
from sentinel.config import load_config
from store.db import init_schema, make_engine
from store.schema import alerts, outbox
from store.store import ChannelIdentity, Store

APP = Path(__file__).resolve().parents[2] / "app.py"
NOW = datetime(2026, 2, 12, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
PASSWORDS = {"viewer": "viewer-pass-1", "operator": "operator-pass-1", "admin": "admin-pass-1"}
PHONE = "13812345678"  # a plaintext number as a merchant's own decrypting ERP would hold it
ADDRESS = "浙江省杭州市西湖区文三路90号3幢"
PAGES = ("overview", "cube", "lifecycle", "sources", "alerts", "reconcile", "diagnose", "audit")

CONFIG = """
[service]
store_url = "sqlite:///{db}"
timezone = "Asia/Shanghai"

[channels.tmall]
code = "TB"
name = "天猫"

[channels.jd]
code = "JD"
name = "京东"

[kpi.stuck_timeouts]
paid = "15m"

[dashboard]
refresh_interval = "10s"
{users}

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


def _users() -> str:
    return "\n".join(
        f'[dashboard.users.{role}]\nrole = "{role}"\npassword_hash = "{hash_password(pw, salt=role.encode() * 4)}"\n'
        for role, pw in PASSWORDS.items()
    )


@pytest.fixture
def dash_url(tmp_path, monkeypatch):
    """A config (SENTINEL_CONFIG) with three users over an empty SQLite store; returns the store URL."""
    db = tmp_path / "store.db"
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=db.as_posix(), users=_users()), encoding="utf-8")
    monkeypatch.setenv("SENTINEL_CONFIG", str(path))
    monkeypatch.delenv("SENTINEL_STORE_URL", raising=False)
    st.cache_data.clear()
    return load_config().service.store_url


def _obs(channel: str, raw: str, state: str, at: datetime, pii: dict | None = None, **dims) -> Observation:
    return Observation(
        source=channel, record_key=f"{raw}|{state}", channel=channel, raw_order_id=raw, state=state, at=at,
        dims={"warehouse": "WH_SH", "province": "浙江省", "city": "杭州市", **dims}, amount_fen=9900,
        pii=pii or {},
    )  # fmt: skip


@pytest.fixture
def world(dash_url):
    """Tmall: 6 orders paid 40 min ago still in paid (stuck), 4 delivered; JD: 3 delivered. A firing
    alert, a quarantined record, a failed notification, a KPI snapshot computed by the engine."""
    config = load_config()
    engine = make_engine(dash_url)
    init_schema(engine)
    store = Store(engine, {n: ChannelIdentity(c.code) for n, c in config.channels.items()}, "Asia/Shanghai")
    paid_at = NOW - timedelta(minutes=40)
    obs = []
    for i in range(6):
        pii = (
            {"buyer_name": "张三丰", "phone": PHONE, "address": ADDRESS}
            if i == 0
            else {"phone": "~cipher1234~"}
        )
        obs += [
            _obs("tmall", f"10000000000000000{i}", s, paid_at - timedelta(minutes=1 - k), pii)
            for k, s in enumerate(("created", "paid"))
        ]
    for i in range(4):
        raw = f"20000000000000000{i}"
        obs += [
            _obs("tmall", raw, s, NOW - timedelta(hours=5 - k))
            for k, s in enumerate(("created", "paid", "wms_received", "shipped", "delivered"))
        ]
    for i in range(3):
        raw = f"30000000{i}"
        obs += [
            _obs("jd", raw, s, NOW - timedelta(hours=5 - k))
            for k, s in enumerate(("created", "paid", "wms_received", "shipped", "delivered"))
        ]
    bad = Quarantined(
        "tmall",
        "999",
        "status",
        "field status: unmapped status value 'WAT'",
        '{"tid": 999, "receiver_mobile": "13900001111"}',
    )
    store.ingest(Batch("tmall", obs, [bad], records=len(obs) + 1), NOW - timedelta(minutes=1))
    snapshot = KpiEngine.from_config(engine, config.kpi).compute(NOW)
    save_snapshot(engine, snapshot)
    with engine.begin() as conn:
        conn.execute(
            insert(alerts).values(
                fingerprint="fp1" + "0" * 13, rule="sync_ratio_low", labels=json.dumps({}), state="firing",
                severity="P1", value=snapshot.get("sync_success_ratio"), pending_since=NOW - timedelta(minutes=2),
                fired_at=NOW - timedelta(minutes=1), updated_at=NOW,
            )
        )  # fmt: skip
        conn.execute(
            insert(outbox).values(
                dedup_key="k1", fingerprint="fp1", route="ops", kind="firing", body="x", status="failed",
                attempts=5, created_at=NOW, response="errcode 93000: invalid webhook url",
            )
        )  # fmt: skip
    engine.dispose()
    return dash_url


def app(role: str | None = "admin", page: str | None = None, lang: str | None = None) -> AppTest:
    """The app run once, logged in as `role` (the session state a successful login leaves), on `page`."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    if role:
        at.session_state[USER_KEY] = User(role, role)
    if lang:
        at.session_state["sentinel_lang"] = lang
    at.run()
    if page and page != "overview":
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every visible text of the run, to search for labels, values and leaks."""
    parts = [m.label + " " + str(m.value) + " " + str(m.delta) for m in at.metric]
    for kind in ("title", "subheader", "caption", "info", "success", "error", "warning", "markdown"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [df.value.to_string() for df in at.dataframe]
    return "\n".join(parts)
