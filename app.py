"""Streamlit entry: page config, language switch, login, role-gated navigation. Lays out only."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.util import find_spec

import streamlit as st
from sqlalchemy import Engine

from sentinel import audit
from sentinel.auth import USER_KEY, authenticate
from sentinel.config import ConfigError, load_config
from sentinel.i18n import LANG_NAMES, LANGS, SESSION_KEY, t
from sentinel.ui import CONTEXT_KEY, DashboardContext
from store.db import init_schema, make_engine

MAX_FAILED_LOGINS = 5  # per browser session; then the form is locked until the session ends

# (file, title key, icon, least role)
PAGES = (
    ("pages/overview.py", "nav.overview", ":material/monitor_heart:", "viewer"),
    ("pages/cube.py", "nav.cube", ":material/grid_on:", "viewer"),
    ("pages/lifecycle.py", "nav.lifecycle", ":material/conversion_path:", "viewer"),
    ("pages/sources.py", "nav.sources", ":material/database:", "viewer"),
    ("pages/alerts.py", "nav.alerts", ":material/notifications_active:", "viewer"),
    ("pages/reconcile.py", "nav.reconcile", ":material/rule:", "viewer"),
    ("pages/diagnose.py", "nav.diagnose", ":material/troubleshoot:", "viewer"),
    ("pages/audit.py", "nav.audit", ":material/policy:", "admin"),
)
# Pages whose engine lives in another package (diagnose/, reconcile/): offered once it is installed.
NEEDS = {"pages/diagnose.py": "diagnose", "pages/reconcile.py": "reconcile"}


@st.cache_resource(show_spinner=False)
def _engine(store_url: str) -> Engine:
    """One engine per store URL per process, shared by every browser session."""
    engine = make_engine(store_url)
    init_schema(engine)  # idempotent; lets the page open before the service's first write
    return engine


def _login(ctx: DashboardContext) -> None:
    """The login form; on success the user goes in the (server-side) session state."""
    st.title(t("app.title"))
    users = ctx.config.dashboard.users
    if not any(u.password_hash for u in users.values()):
        st.warning(t("auth.no_users"))
        st.stop()
    failed = st.session_state.get("sentinel_failed_logins", 0)
    if failed >= MAX_FAILED_LOGINS:
        st.error(t("auth.locked"))
        st.stop()
    with st.form("login"):
        name = st.text_input(t("auth.user"), key="login_user")
        password = st.text_input(t("auth.password"), type="password", key="login_password")
        submitted = st.form_submit_button(t("auth.login"), type="primary")
    if submitted:
        user = authenticate(users, name, password)
        now = datetime.now(UTC)
        if user is None:
            st.session_state["sentinel_failed_logins"] = failed + 1
            audit.record(ctx.engine, now, name.strip() or "?", "-", "login_failed")
            st.error(t("auth.failed"))
        else:
            audit.record(ctx.engine, now, user.name, user.role, "login")
            st.session_state[USER_KEY] = user
            st.rerun()
    st.stop()


st.set_page_config(page_title=t("app.title"), page_icon="🛡️", layout="wide")
st.sidebar.radio(
    t("app.language"), LANGS, format_func=LANG_NAMES.__getitem__, key=SESSION_KEY, horizontal=True
)

try:
    config = load_config()  # SENTINEL_CONFIG / SENTINEL_STORE_URL decide what is read
except ConfigError as exc:
    st.error(t("app.config_error") + "\n\n" + "\n".join(f"- `{p}`" for p in exc.problems))
    st.stop()
ctx = DashboardContext(config, _engine(config.service.store_url))
st.session_state[CONTEXT_KEY] = ctx

user = st.session_state.get(USER_KEY)
if user is None:
    _login(ctx)
st.sidebar.caption(t("auth.signed_in", user=user.name, role=t(f"role.{user.role}")))
if st.sidebar.button(t("auth.logout"), key="logout"):
    audit.record(ctx.engine, datetime.now(UTC), user.name, user.role, "logout")
    del st.session_state[USER_KEY]
    st.rerun()

pages = [
    st.Page(path, title=t(title), icon=icon, default=i == 0)
    for i, (path, title, icon, role) in enumerate(PAGES)
    if user.can(role) and (path not in NEEDS or find_spec(NEEDS[path]) is not None)
]
st.navigation(pages).run()
