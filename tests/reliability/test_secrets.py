"""Planted secrets never leave: API keys, tokens, the robot key and the dashboard password hash are set
through the environment, a busy hour with failing sources runs, and every output is searched."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from faultkit import make_replay
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from sentinel.auth import User, hash_password
from sentinel.ui import USER_KEY
from store.schema import metadata

APP = Path(__file__).resolve().parents[2] / "app.py"
PAGES = ("overview", "cube", "lifecycle", "sources", "alerts", "reconcile", "diagnose", "audit")
PLANTED = {  # environment variable -> (channel, credential field) or None
    "TMALL_APP_SECRET": ("tmall", "app_secret", "plant-tm-secret-Q7x9Zr41"),
    "TMALL_SESSION": ("tmall", "session", "plant-tm-session-K2v8Lp77"),
    "JD_APP_SECRET": ("jd", "app_secret", "plant-jd-secret-M3n5Bq20"),
    "JD_ACCESS_TOKEN": ("jd", "access_token", "plant-jd-token-W6c1Tz93"),
    "DOUYIN_APP_SECRET": ("douyin", "app_secret", "plant-dy-secret-H8s4Fk56"),
    "DOUYIN_ACCESS_TOKEN": ("douyin", "access_token", "plant-dy-token-R1d7Gu08"),
    "YOUZAN_ACCESS_TOKEN": ("youzan", "access_token", "plant-yz-token-E5p2Ny64"),
}
ROBOT_KEY = "plant-robot-key-5f3a9e0c"
ADMIN_PASSWORD = "plant-admin-pass-Xy7"


def _page_texts(page: str) -> str:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.session_state[USER_KEY] = User("admin", "admin")
    at.run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    parts = [f"{m.label} {m.value} {m.delta}" for m in at.metric]
    for kind in ("title", "subheader", "caption", "info", "success", "error", "warning", "markdown", "code"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [df.value.to_string() for df in at.dataframe]
    parts += [str(e.value) for e in at.text_input] + [str(e.value) for e in at.text_area]
    return "\n".join(parts)


def test_planted_secrets_appear_in_no_log_metric_message_report_table_or_page(tmp_path, monkeypatch, caplog):
    admin_hash = hash_password(ADMIN_PASSWORD)
    for env, (_, _, value) in PLANTED.items():
        monkeypatch.setenv(env, value)
    monkeypatch.setenv("SENTINEL_ADMIN_PASSWORD_HASH", admin_hash)
    secrets = [v for _, _, v in PLANTED.values()] + [ROBOT_KEY, ADMIN_PASSWORD, admin_hash]

    replay = make_replay(tmp_path, {"alerts.routes.ops.key": ROBOT_KEY})
    for channel, field, value in PLANTED.values():  # the platforms know the planted credentials
        replay.sim.channels.credentials[channel][field] = value
    replay.sim.wecom.keys.add(ROBOT_KEY)
    faults = replay.sim.channels.faults
    outputs: dict[str, str] = {}
    try:
        with caplog.at_level(logging.DEBUG):
            start = replay.world.start
            replay.run_until(start + replay.step * 15)
            faults.set("tmall", "auth_expired")  # error paths are where secrets like to leak
            faults.set("jd", "garbage", style="html")
            faults.set("douyin", "server_error", mode="platform")
            replay.run_until(start + replay.step * 22)
            faults.clear()
            replay.run_until(replay.world.end)
            report = replay.finish(0)
        assert report["notifications"], "the scenario must send messages to search"
        assert any(h["errors_json"] != "{}" for h in report["sources"])
        outputs["logs"] = "\n".join(
            r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
            for r in caplog.records
        )
        outputs["metrics"] = replay.service.exporter.render().decode()
        outputs["report"] = json.dumps(report, ensure_ascii=False, default=str)
        outputs["messages"] = json.dumps(replay.sim.wecom.received, ensure_ascii=False, default=str)
        with replay.service.engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = conn.execute(select(table)).all()
                outputs[f"table {table.name}"] = "\n".join(map(str, rows))
        assert "[auth_expired]" in outputs["logs"] or "auth_expired" in outputs["table source_health"]
        monkeypatch.setenv("SENTINEL_STORE_URL", replay.config.service.store_url)
        monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
        for page in PAGES:
            outputs[f"page {page}"] = _page_texts(page)
    finally:
        replay.close()
    assert "tmall" in outputs["page sources"]
    for where, text in outputs.items():
        for secret in secrets:
            for form in {secret, quote(secret, safe=""), secret[4:-4]}:
                assert form not in text, f"a planted secret ({secret[:10]}…) appears in {where}"


@pytest.mark.parametrize("password", ["", "short"])
def test_a_plaintext_password_is_never_accepted_as_a_hash(password):
    from sentinel.auth import verify_password

    assert not verify_password(password, password)
