"""Lifecycle page: paid → delivered funnel with stuck orders, dwell p50/p95 and failures per state."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from sentinel import ui
from sentinel.i18n import duration, failure_reason_label, kpi_title, state_label, t


def _funnel(rows) -> go.Figure:
    labels = [state_label(r.state) for r in rows]
    stuck = [int(r.stuck or 0) for r in rows]
    text = [
        f"{r.reached:,}" + (f" · {t('lifecycle.stuck_short', n=s)}" if s else "")
        for r, s in zip(rows, stuck, strict=True)
    ]
    fig = go.Figure(
        go.Funnel(
            y=labels, x=[r.reached for r in rows], text=text, textinfo="text",
            marker={"color": ["#d62728" if s else "#1f77b4" for s in stuck]},
            hovertemplate="%{y}: %{x:,}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def _table(rows) -> pd.DataFrame:
    return pd.DataFrame({
        t("col.state"): [state_label(r.state) for r in rows],
        t("lifecycle.reached"): [r.reached for r in rows],
        t("col.state_orders"): [r.current for r in rows],
        t("col.stuck_orders"): [r.stuck for r in rows],
        t("col.stuck_ratio"): [r.stuck_ratio for r in rows],
        t("lifecycle.p50"): [duration(r.dwell_p50) for r in rows],
        t("lifecycle.p95"): [duration(r.dwell_p95) for r in rows],
        kpi_title("dwell_failure_ratio"): [r.failure_ratio for r in rows],
        t("lifecycle.top_reason"): [failure_reason_label(r.top_reason) if r.failure_ratio is not None else None for r in rows],
    })  # fmt: skip


def _live(ctx: ui.DashboardContext) -> None:
    config, engine, tz = ctx.config, ctx.engine, ui.zone(ctx)
    url = config.service.store_url
    snapshot = ui.overview(url, engine, config).snapshot
    now = ui.now_of(snapshot)
    since = now - config.kpi.window
    rows = ui.lifecycle(url, snapshot.computed_at if snapshot else None, since, engine, snapshot)
    st.caption(t("lifecycle.caption", since=ui.local(since, tz), until=ui.local(now, tz), zone=tz.key))
    if not any(r.reached for r in rows):
        st.info(t("lifecycle.empty"))
        return
    left, right = st.columns([2, 3])
    left.plotly_chart(_funnel(rows), key="funnel")
    frame = _table(rows)
    right.dataframe(
        frame,
        hide_index=True,
        column_config={
            t("col.stuck_ratio"): st.column_config.NumberColumn(format="percent"),
            kpi_title("dwell_failure_ratio"): st.column_config.NumberColumn(format="percent"),
        },
    )
    right.caption(t("lifecycle.dwell_note", window=duration(config.kpi.dwell_window.total_seconds())))
    with right:
        ui.csv_download(ctx, frame, "lifecycle", "lifecycle_export")


st.title(t("lifecycle.title"))
ctx = ui.context()
ui.user_for("viewer")
st.fragment(_live, run_every=ui.refresh_seconds(ctx))(ctx)
