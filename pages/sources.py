"""Sources page: health, lag and error classes per source, and the quarantine browser."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from sentinel import ui
from sentinel.i18n import duration, error_label, t


def _health(ov, tz) -> None:
    st.subheader(t("section.sources"))
    if not ov.sources:
        st.caption(t("sources.none"))
        return
    frame = pd.DataFrame(
        {
            t("sources.source"): [s.source for s in ov.sources],
            t("sources.status"): [t("source.up") if s.up else t("source.down") for s in ov.sources],
            t("sources.last_success"): [ui.local(s.last_success_at, tz) for s in ov.sources],
            t("sources.since"): [duration(s.seconds_since_success) for s in ov.sources],
            t("sources.lag"): [duration(s.lag_seconds) for s in ov.sources],
            t("sources.last_error"): [error_label(s.last_error_class) for s in ov.sources],
            t("sources.failures"): [s.consecutive_failures for s in ov.sources],
            t("sources.records"): [s.records_total for s in ov.sources],
            t("sources.quarantined"): [s.quarantined_total for s in ov.sources],
        }
    )
    st.dataframe(frame, hide_index=True)


def _errors(ov) -> None:
    st.subheader(t("sources.errors"))
    classes = sorted({c for s in ov.sources for c in s.errors})
    if not classes:
        st.caption(t("sources.no_errors"))
        return
    fig = go.Figure(
        [
            go.Bar(
                name=error_label(c),
                x=[s.source for s in ov.sources],
                y=[s.errors.get(c, 0) for s in ov.sources],
            )
            for c in classes
        ]
    )
    fig.update_layout(barmode="stack", height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    st.plotly_chart(fig, key="errors_chart")


def _quarantine(ctx: ui.DashboardContext, sources: list[str]) -> None:
    st.subheader(t("sources.quarantine"))
    url, engine = ctx.config.service.store_url, ctx.engine
    counts = ui.quarantine_counts(url, engine)
    if not counts:
        st.caption(t("sources.no_quarantine"))
        return
    st.dataframe(
        pd.DataFrame(
            [
                {t("sources.source"): s, t("sources.field"): f, t("sources.count"): n}
                for (s, f), n in sorted(counts.items())
            ]
        ),
        hide_index=True,
    )
    picked = st.selectbox(t("sources.pick"), [None, *sorted({s for s, _ in counts})], key="quarantine_source",
                          format_func=lambda s: t("sources.all") if s is None else s)  # fmt: skip
    user = ui.current_user()
    rows = ui.quarantine(url, user.role, picked, engine, user)
    tz = ui.zone(ctx)
    frame = pd.DataFrame(rows)
    frame["at"] = [ui.local(x, tz) for x in frame["at"]]
    if not user.can("admin"):
        frame = frame.drop(columns=["raw"])
        st.caption(t("sources.raw_admin_only"))
    st.dataframe(frame, hide_index=True)
    ui.csv_download(ctx, frame, "quarantine", "quarantine_export")


def _live(ctx: ui.DashboardContext) -> None:
    ov = ui.overview(ctx.config.service.store_url, ctx.engine, ctx.config)
    tz = ui.zone(ctx)
    _health(ov, tz)
    _errors(ov)
    _quarantine(ctx, [s.source for s in ov.sources])


st.title(t("sources.title"))
ctx = ui.context()
ui.user_for("viewer")
st.fragment(_live, run_every=ui.refresh_seconds(ctx))(ctx)
