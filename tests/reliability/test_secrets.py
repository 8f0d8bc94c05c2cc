"""Planted secrets never leave: API keys, tokens, the robot key and the dashboard password hash are set
through the environment, a busy hour with failing sources runs, and every output is searched. The WMS
database source then reads with its own password-protected login on MariaDB and on PostgreSQL,
through refused connections and a refused login, and the same outputs are searched for its password."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from faultkit import TcpProxy, health_of, make_replay, sim_states, stored
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest

from diagnose import diagnose
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


def _page_texts(page: str, click: str | None = None) -> str:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.session_state[USER_KEY] = User("admin", "admin")
    at.run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py")
        at.run()
    if click is not None:
        at.button(key=click).click().run()
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
        outputs.update(_service_outputs(replay, report, caplog))
        assert "[auth_expired]" in outputs["logs"] or "auth_expired" in outputs["table source_health"]
        monkeypatch.setenv("SENTINEL_STORE_URL", replay.config.service.store_url)
        monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
        for page in PAGES:
            outputs[f"page {page}"] = _page_texts(page)
    finally:
        replay.close()
    assert "tmall" in outputs["page sources"]
    _assert_absent(secrets, outputs)


def _service_outputs(replay, report: dict, caplog) -> dict[str, str]:
    """What the service let out: logs (tracebacks included), /metrics, the report, the robot's
    messages and every table of the store."""
    outputs = {
        "logs": "\n".join(
            r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
            for r in caplog.records
        ),
        "metrics": replay.service.exporter.render().decode(),
        "report": json.dumps(report, ensure_ascii=False, default=str),
        "messages": json.dumps(replay.sim.wecom.received, ensure_ascii=False, default=str),
    }
    with replay.service.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            outputs[f"table {table.name}"] = "\n".join(map(str, rows))
    return outputs


def _assert_absent(secrets: list[str], outputs: dict[str, str]) -> None:
    for where, text in outputs.items():
        for secret in secrets:
            for form in {secret, quote(secret, safe=""), secret[4:-4]}:
                assert form not in text, f"a planted secret ({secret[:10]}…) appears in {where}"


WMS_PASSWORD = "plant-wms-pass-T4k9#q"  # '#' must be quoted in a URL: its quoted form is searched too
WMS_ROTATED = "plant-wms-rotated-P3m8"


class DatabaseLogin:
    """A throwaway login of the WMS source's own on the test's database (MariaDB or PostgreSQL),
    made, refused and dropped through the driver directly, so that no statement naming its password
    passes through SQLAlchemy's logging."""

    def __init__(self, admin_url: str, server: str) -> None:
        self.server = server
        self.database = make_url(admin_url).database
        self.user = f"sentinel_wms_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    def _run(self, *statements: str) -> list[tuple]:
        raw = self.admin.raw_connection()
        try:
            cursor = raw.cursor()
            rows: list[tuple] = []
            for statement in statements:
                cursor.execute(statement)
                if cursor.description is not None:
                    rows += list(cursor.fetchall())
            raw.commit()
            return rows
        finally:
            raw.close()

    def _end_sessions(self) -> None:
        if self.server == "postgresql":
            self._run(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{self.user}'")
        else:
            ids = self._run(f"SELECT id FROM information_schema.processlist WHERE user = '{self.user}'")
            for (session,) in ids:
                try:
                    self._run(f"KILL CONNECTION {int(session)}")
                except Exception:  # noqa: BLE001 - it ended on its own meanwhile
                    pass

    def create(self) -> None:
        """The login, allowed to read the WMS tables (call once they exist)."""
        if self.server == "postgresql":
            self._run(
                f"CREATE ROLE \"{self.user}\" LOGIN PASSWORD '{WMS_PASSWORD}'",
                f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{self.user}"',
            )
        else:
            self._run(
                f"CREATE USER '{self.user}'@'%' IDENTIFIED BY '{WMS_PASSWORD}'",
                f"GRANT SELECT ON `{self.database}`.* TO '{self.user}'@'%'",
            )

    def refuse(self) -> None:
        """The DBA rotates the password (MariaDB) or disables the login (PostgreSQL: this machine's
        server trusts local logins, so a wrong password would not be refused) and ends its sessions."""
        if self.server == "postgresql":
            self._run(f'ALTER ROLE "{self.user}" NOLOGIN')
        else:
            self._run(f"ALTER USER '{self.user}'@'%' IDENTIFIED BY '{WMS_ROTATED}'")
        self._end_sessions()

    def allow(self) -> None:
        if self.server == "postgresql":
            self._run(f'ALTER ROLE "{self.user}" LOGIN')
        else:
            self._run(f"ALTER USER '{self.user}'@'%' IDENTIFIED BY '{WMS_PASSWORD}'")

    def drop(self) -> None:
        try:
            self._end_sessions()
            if self.server == "postgresql":
                self._run(f'DROP OWNED BY "{self.user}"', f'DROP ROLE IF EXISTS "{self.user}"')
            else:
                self._run(f"DROP USER IF EXISTS '{self.user}'@'%'")
        finally:
            self.admin.dispose()


def _live_diagnosis(replay) -> tuple[dict, str]:
    """A one-click diagnosis with the live checks on: the WMS source's entry, and the whole output."""
    result = diagnose(replay.service.engine, replay.config, replay.clock.now(), live=True).to_dict()
    entries = [
        e
        for f in result["findings"]
        for e in f["evidence"]
        if e.get("fact") == "connectivity" and e.get("source") == "wms"
    ]
    return (entries[0] if entries else {}), json.dumps(result, ensure_ascii=False, default=str)


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_a_database_sources_password_never_leaves_through_refused_connections_and_login(
    request, tmp_path, monkeypatch, caplog, server
):
    real = request.getfixturevalue("mysql_url" if server == "mariadb" else "pg_url")
    url = make_url(real)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or (3306 if server == "mariadb" else 5432))
    login = DatabaseLogin(real, server)
    own = url.set(username=login.user, password=WMS_PASSWORD, host="127.0.0.1", port=proxy.port)
    own_url = own.render_as_string(hide_password=False)
    assert quote(WMS_PASSWORD, safe="") in own_url
    monkeypatch.setenv("WMS_DB_URL", own_url)  # as a deployment passes it: the dashboard's config reads it
    wms = {"sources.wms.url": own_url, "sources.wms_returns.url": own_url}
    replay = make_replay(tmp_path, wms, wms_url=real)  # the simulated WMS writes as the admin
    outputs: dict[str, str] = {}
    created = False
    try:
        login.create()
        created = True
        start = replay.world.start
        with caplog.at_level(logging.DEBUG):
            replay.run_until(start + timedelta(minutes=15))
            assert health_of(replay, "wms")["up"]
            proxy.down()  # the database drops every connection and refuses new ones
            replay.run_until(start + timedelta(minutes=21))
            unreachable = health_of(replay, "wms")
            entry, outputs["live diagnosis, connections refused"] = _live_diagnosis(replay)
            assert entry.get("ok") is False and entry.get("step") == "connect", entry
            proxy.up()
            replay.run_until(start + timedelta(minutes=24))
            assert health_of(replay, "wms")["up"]
            attempts: list[int] = []
            event.listen(replay.service.collectors["wms"].engine, "do_connect", lambda *a: attempts.append(1))
            login.refuse()
            replay.run_until(start + timedelta(minutes=30))
            refused, tried = health_of(replay, "wms"), len(attempts)
            entry, outputs["live diagnosis, login refused"] = _live_diagnosis(replay)
            assert (entry.get("step"), entry.get("error"), entry.get("credential")) == (
                "login",
                "auth_expired",
                "rejected",
            ), entry
            login.allow()
            replay.run_until(replay.world.end)
            report = replay.finish(0)
        assert not unreachable["up"] and unreachable["last_error_class"] in ("unavailable", "timeout")
        assert not refused["up"] and refused["last_error_class"] == "auth_expired"
        assert refused["last_error"].startswith("wms: login refused: ")
        # No retry storm: one connection attempt per poll while the login is refused.
        assert refused["consecutive_failures"] >= 5 and tried == refused["consecutive_failures"]
        assert health_of(replay, "wms")["up"]
        rows, _ = stored(replay.service.engine)  # caught up: nothing lost while it could not read
        states = {(r["channel"], r["raw_order_id"]): r["state"] for r in rows}
        assert states == sim_states(replay.world, replay.clock.now())
        sent = [n["body"]["markdown"]["content"] for n in replay.sim.wecom.received]
        assert any("wms" in body for body in sent), "the no-data alert must have been sent to search it"
        outputs.update(_service_outputs(replay, report, caplog))
        assert "auth_expired" in outputs["table source_health"]
        # The dashboard, while the login is refused again (its one-click diagnosis checks it live).
        login.refuse()
        monkeypatch.setenv("SENTINEL_STORE_URL", replay.config.service.store_url)
        monkeypatch.delenv("SENTINEL_CONFIG", raising=False)
        for page in PAGES:
            outputs[f"page {page}"] = _page_texts(page, click="diagnose_run" if page == "diagnose" else None)
        with replay.service.engine.connect() as conn:  # the dashboard's diagnosis is audited
            for table in ("audit_log",):
                outputs[f"table {table} after the pages"] = "\n".join(
                    map(str, conn.execute(select(metadata.tables[table])).all())
                )
    finally:
        replay.close()
        proxy.close()
        if created:
            login.drop()
        else:
            login.admin.dispose()
    assert "wms" in outputs["page sources"] and "wms" in outputs["page diagnose"]
    _assert_absent([WMS_PASSWORD, WMS_ROTATED], outputs)


@pytest.mark.parametrize("password", ["", "short"])
def test_a_plaintext_password_is_never_accepted_as_a_hash(password):
    from sentinel.auth import verify_password

    assert not verify_password(password, password)
