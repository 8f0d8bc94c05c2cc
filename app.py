"""Streamlit entry: page config, language switch, shared config/engine, navigation. Lays out only."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from sqlalchemy import Engine

from sentinel.config import Config, ConfigError, load_config
from sentinel.i18n import LANG_NAMES, LANGS, SESSION_KEY, t
from store.db import init_schema, make_engine

CONTEXT_KEY = "sentinel_ctx"  # st.session_state key the pages read the context from


@dataclass(frozen=True)
class DashboardContext:
    config: Config
    engine: Engine


@st.cache_resource(show_spinner=False)
def _engine(store_url: str) -> Engine:
    """One engine per store URL per process, shared by every browser session."""
    engine = make_engine(store_url)
    init_schema(engine)  # idempotent; lets the page open before the service's first write
    return engine


st.set_page_config(page_title=t("app.title"), page_icon="🛡️", layout="wide")
st.sidebar.radio(
    t("app.language"), LANGS, format_func=LANG_NAMES.__getitem__, key=SESSION_KEY, horizontal=True
)

try:
    config = load_config()  # SENTINEL_CONFIG / SENTINEL_STORE_URL decide what is read
except ConfigError as exc:
    st.error(t("app.config_error") + "\n\n" + "\n".join(f"- `{p}`" for p in exc.problems))
    st.stop()
st.session_state[CONTEXT_KEY] = DashboardContext(config, _engine(config.service.store_url))

pages = [st.Page("pages/overview.py", title=t("nav.overview"), icon=":material/monitor_heart:", default=True)]
st.navigation(pages).run()
