"""Overview page: golden KPIs, per-channel sync, stuck orders, source health, active alerts."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st

from metrics.catalog import KPI_BY_NAME
from metrics.queries import Overview
from metrics.snapshot import Snapshot
from sentinel import ui
from sentinel.config import Config
from sentinel.i18n import current_lang, duration, error_label, kpi_title, state_label, t

_OPS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
_COLORS = {"ok": "green", "bad": "red", "unknown": "gray"}
_ICONS = {"ok": ":material/check_circle:", "bad": ":material/error:", "unknown": ":material/help:"}
_PERCENT = st.column_config.NumberColumn(format="percent")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


_local = ui.local


def _vs_yesterday(value: float | None, before: float | None) -> str:
    if value is None or before is None:
        return t("tile.no_yesterday")
    return t("tile.vs_yesterday", change=f"{(value - before) * 100:+.2f}pp")


def _tiles(ov: Overview, before: Snapshot | None, history: dict) -> None:
    st.subheader(t("overview.golden"))
    per_row = 4
    for start in range(0, len(ov.tiles), per_row):
        chunk = ov.tiles[start : start + per_row]
        for col, tile in zip(st.columns(per_row), chunk, strict=False):
            value = _pct(tile.value) if tile.unit == "ratio" else f"{tile.value or 0:,.0f}"
            if tile.value is None:
                delta = t("tile.no_value")
            elif tile.threshold is None:
                delta = t("tile.no_rule")
            else:
                delta = t(
                    "tile.threshold", op=_OPS.get(tile.op or "", tile.op), threshold=_pct(tile.threshold)
                )
            spark = [v for _, v in history.get(tile.kpi, [])]
            col.metric(
                kpi_title(tile.kpi),
                value,
                delta=delta,
                delta_color=_COLORS[tile.status],
                delta_arrow="off",
                icon=_ICONS[tile.status],
                help=t(f"status.{tile.status}"),
                border=True,
                chart_data=spark if len(spark) > 1 else None,
                chart_type="area",
                delta_description=_vs_yesterday(tile.value, before.get(tile.kpi) if before else None),
            )


def _channels(ov: Overview, config: Config) -> None:
    st.subheader(t("section.channels"))
    if not ov.channels:
        st.caption(t("channels.none"))
        return
    en = current_lang() == "en"
    frame = pd.DataFrame(ov.channels)
    channel_names = {k: (k if en else c.name) for k, c in config.channels.items()}
    frame["channel"] = frame["channel"].map(lambda c: channel_names.get(c, c))
    ratios = [c for c in ov.channel_columns if KPI_BY_NAME[c].unit == "ratio"]
    frame = frame.rename(
        columns={"channel": t("col.channel"), **{c: kpi_title(c) for c in ov.channel_columns}}
    )
    config_cols = {kpi_title(c): _PERCENT for c in ratios}
    st.dataframe(frame, hide_index=True, column_config=config_cols)


def _stuck(ov: Overview) -> None:
    st.subheader(t("section.stuck"))
    if not ov.stuck:
        st.caption(t("stuck.none"))
        return
    frame = pd.DataFrame(
        {
            t("col.state"): [state_label(r.state) for r in ov.stuck],
            t("col.stuck_orders"): [r.stuck_orders for r in ov.stuck],
            t("col.state_orders"): [r.state_orders for r in ov.stuck],
            t("col.stuck_ratio"): [r.stuck_ratio for r in ov.stuck],
        }
    )
    st.dataframe(frame, hide_index=True, column_config={t("col.stuck_ratio"): _PERCENT})


def _sources(ov: Overview) -> None:
    st.subheader(t("section.sources"))
    if not ov.sources:
        st.caption(t("sources.none"))
        return
    per_row = 4
    for start in range(0, len(ov.sources), per_row):
        chunk = ov.sources[start : start + per_row]
        for col, src in zip(st.columns(per_row), chunk, strict=False):
            if src.last_success_at is None:
                ago = t("source.never")
            else:
                ago = t("source.last_success", ago=duration(src.seconds_since_success))
            detail = t(
                "source.detail",
                error=error_label(src.last_error_class),
                failures=src.consecutive_failures,
                lag=duration(src.lag_seconds),
            )
            col.metric(
                src.source,
                t("source.up") if src.up else t("source.down"),
                delta=ago,
                delta_color="green" if src.up else "red",
                delta_arrow="off",
                help=detail,
                border=True,
            )
            if not src.up:
                col.caption(detail)


def _alerts(ov: Overview, zone: ZoneInfo) -> None:
    st.subheader(t("section.alerts"))
    if not ov.alerts:
        st.success(t("alerts.none"))
        return
    frame = pd.DataFrame(
        {
            t("col.alert_state"): [t(f"alert.{a.state}") for a in ov.alerts],
            t("col.severity"): [a.severity or "—" for a in ov.alerts],
            t("col.rule"): [a.rule for a in ov.alerts],
            t("col.labels"): [", ".join(f"{k}={v}" for k, v in a.labels.items()) or "—" for a in ov.alerts],
            t("col.value"): [a.value for a in ov.alerts],
            t("col.since"): [_local(a.since, zone) for a in ov.alerts],
            t("col.summary"): [a.summary for a in ov.alerts],
        }
    )
    st.dataframe(frame, hide_index=True)


def _live(ctx: ui.DashboardContext) -> None:
    """Re-reads the store every refresh interval (≤ 15 s) without reloading the page."""
    config, engine = ctx.config, ctx.engine
    url = config.service.store_url
    ov = ui.overview(url, engine, config)
    zone = ZoneInfo(config.service.timezone)
    if ov.snapshot is None:
        st.info(t("overview.empty"))
        _sources(ov)
        return
    at = ov.snapshot.computed_at
    st.caption(t("overview.snapshot_time", time=_local(at, zone), zone=zone.key))
    before = ui.yesterday(url, at, engine, ov.snapshot)
    history = ui.history(url, tuple(tile.kpi for tile in ov.tiles), at, engine)
    _tiles(ov, before, history)
    _alerts(ov, zone)
    left, right = st.columns(2)
    with left:
        _channels(ov, config)
    with right:
        _stuck(ov)
    _sources(ov)


st.title(t("overview.title"))
ctx = ui.context()
ui.user_for("viewer")
st.fragment(_live, run_every=ui.refresh_seconds(ctx))(ctx)
