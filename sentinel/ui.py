"""What every dashboard page shares: the context, the logged-in user, time formatting, cached reads.

The cached functions wrap `metrics/` read models with st.cache_data; arguments starting with `_`
(engine, config, user) are not hashed, so the key arguments name what they stand for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from metrics import views
from metrics.cube import Cube, status_cube
from metrics.queries import Overview, load_overview
from metrics.snapshot import Snapshot
from sentinel import audit
from sentinel.auth import USER_KEY, User, require
from sentinel.config import Config
from sentinel.i18n import t

CONTEXT_KEY = "sentinel_ctx"  # st.session_state key of the DashboardContext (set by app.py)
TTL = 5  # seconds a cached read is reused: below the live refresh interval


@dataclass(frozen=True)
class DashboardContext:
    config: Config
    engine: Engine


def context() -> DashboardContext:
    """The context app.py put in the session; stops the page when it is missing."""
    ctx = st.session_state.get(CONTEXT_KEY)
    if ctx is None:
        st.error(t("app.config_error"))
        st.stop()
    return ctx


def current_user() -> User | None:
    return st.session_state.get(USER_KEY)


def user_for(needed: str) -> User:
    """The logged-in user if their role allows `needed`; stops the page with a message otherwise."""
    user = current_user()
    if user is None or not user.can(needed):
        st.error(t("auth.denied", role=t(f"role.{needed}")))
        st.stop()
    return require(user, needed)


def refresh_seconds(ctx: DashboardContext) -> float:
    return ctx.config.dashboard.refresh_interval.total_seconds()


def zone(ctx: DashboardContext) -> ZoneInfo:
    return ZoneInfo(ctx.config.service.timezone)


def local(moment: datetime | None, tz: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "—" if moment is None else moment.astimezone(tz).strftime(fmt)


def now_of(snapshot: Snapshot | None) -> datetime:
    """The dashboard's 'now': the latest snapshot's time (the service may run on a virtual clock)."""
    return snapshot.computed_at if snapshot else datetime.now(UTC)


def audit_record(ctx: DashboardContext, user: User, action: str, **detail: object) -> None:
    audit.record(ctx.engine, datetime.now(UTC), user.name, user.role, action, **detail)


def csv_download(ctx: DashboardContext, frame: pd.DataFrame, name: str, key: str) -> None:
    """A CSV export button for operators and admins; each download is audited (who, what, rows)."""
    user = current_user()
    if user is None or not user.can("operator"):
        return
    st.download_button(
        t("export.csv"),
        frame.to_csv(index=False).encode("utf-8-sig"),  # BOM: Excel opens Chinese CSV correctly
        file_name=f"{name}.csv",
        mime="text/csv",
        key=key,
        on_click=lambda: audit_record(
            ctx, require(current_user(), "operator"), "export", what=name, rows=len(frame)
        ),
        icon=":material/download:",
    )


# -- cached reads ------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def overview(store_url: str, _engine: Engine, _config: Config) -> Overview:
    return load_overview(_engine, _config)


@st.cache_data(ttl=TTL, show_spinner=False)
def yesterday(store_url: str, snapshot_at: datetime | None, _engine: Engine, _snapshot: Snapshot | None):
    return views.yesterday(_engine, _snapshot)


@st.cache_data(ttl=TTL, show_spinner=False)
def history(store_url: str, kpis: tuple[str, ...], until: datetime, _engine: Engine) -> dict:
    return views.kpi_history(_engine, list(kpis), until)


@st.cache_data(ttl=TTL, show_spinner=False)
def cube(
    store_url: str, state: str, dimension: str, granularity: str, until: datetime, span_s: int, measure: str,
    timezone: str, _engine: Engine,
) -> Cube:  # fmt: skip
    since = until - timedelta(seconds=span_s)
    return status_cube(
        _engine, state=state, dimension=dimension, granularity=granularity, since=since, until=until,
        measure=measure, timezone=timezone,
    )  # fmt: skip


@st.cache_data(ttl=TTL, show_spinner=False)
def lifecycle(store_url: str, snapshot_at: datetime | None, since: datetime, _engine, _snapshot):
    return views.lifecycle(_engine, _snapshot, since)


@st.cache_data(ttl=TTL, show_spinner=False)
def quarantine(store_url: str, role: str, source: str | None, _engine: Engine, _user: User) -> list[dict]:
    return views.quarantine_rows(_engine, _user, source)


@st.cache_data(ttl=TTL, show_spinner=False)
def quarantine_counts(store_url: str, _engine: Engine) -> dict:
    return views.quarantine_counts(_engine)


@st.cache_data(ttl=TTL, show_spinner=False)
def alert_history(store_url: str, _engine: Engine) -> list[dict]:
    return views.alert_history(_engine)


@st.cache_data(ttl=TTL, show_spinner=False)
def troubled_sends(store_url: str, _engine: Engine) -> list[dict]:
    return views.troubled_sends(_engine)


@st.cache_data(ttl=TTL, show_spinner=False)
def cell_orders(store_url: str, role: str, cell, _engine: Engine, _user: User) -> list[dict]:
    """Keyed by role: a masked answer is never served to an admin nor a clear one to a viewer."""
    return views.cell_order_rows(_engine, cell, _user)


@st.cache_data(ttl=TTL, show_spinner=False)
def order_pii(store_url: str, role: str, global_ids: tuple[str, ...], _engine: Engine, _user: User) -> dict:
    """Buyer data of some orders as the role may see it (keyed by role like cell_orders)."""
    from metrics.pii import order_pii_for

    return order_pii_for(_engine, list(global_ids), _user)


def run_diagnosis(
    ctx: DashboardContext, user: User, kpi: str | None, labels: dict, rule: str, live: bool
) -> dict:
    """One diagnosis (audited), as plain data the page keeps in the session."""
    from sentinel import actions

    now = now_of(overview(ctx.config.service.store_url, ctx.engine, ctx.config).snapshot)
    result = actions.diagnose(ctx.engine, ctx.config, user, now, kpi=kpi, labels=labels, live=live)
    return {**result.to_dict(), "at": local(now, zone(ctx)), "rule": rule}


def run_reconciliation(ctx: DashboardContext, user: User) -> dict:
    """One reconciliation (audited), as plain data the page keeps in the session."""
    from reconcile.daily import run_signatures
    from reconcile.signatures import signature_rows
    from sentinel import actions
    from sentinel.i18n import current_lang

    tz = zone(ctx)
    now = now_of(overview(ctx.config.service.store_url, ctx.engine, ctx.config).snapshot)
    result = actions.reconcile(ctx.engine, ctx.config, user, now)
    zh = {d.reason: d.reason_zh for d in result.differences}
    label = (lambda r: zh.get(r, r)) if current_lang() == "zh" else (lambda r: r)
    rows = [
        {
            t("reconcile.reason"): label(d.reason),
            t("order.global_id"): d.global_id,
            t("order.channel"): d.channel,
            t("order.raw_order_id"): d.raw_order_id,
            t("reconcile.present"): " / ".join(d.present),
            t("reconcile.missing"): " / ".join(d.missing),
            t("reconcile.amount"): None if d.amount_fen is None else d.amount_fen / 100,
            t("reconcile.paid_amount"): None if d.paid_amount_fen is None else d.paid_amount_fen / 100,
            t("reconcile.paid_at"): local(datetime.fromtimestamp(d.paid_at_ms / 1000, UTC), tz),
        }
        for d in result.differences[:5000]
    ]
    return {
        "since": local(result.since, tz), "until": local(result.until, tz), "roles": list(result.roles),
        "orders": result.orders, "ratio": result.ratio, "elapsed_s": result.elapsed_s, "rows": rows,
        "groups": [(label(r) + (f" · {sig}" if sig else ""), n) for r, sig, n in signature_rows(
            result.groups, run_signatures(ctx.engine, result), {k: c.name for k, c in ctx.config.channels.items()})],
    }  # fmt: skip
