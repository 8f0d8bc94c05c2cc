"""Overview page: golden KPIs, per-channel sync, stuck orders, source health, active alerts."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from metrics.catalog import KPI_BY_NAME
from metrics.queries import Overview, load_overview
from sentinel.config import Config
from sentinel.i18n import current_lang, duration, error_label, kpi_title, state_label, t

_OPS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}
_COLORS = {"ok": "green", "bad": "red", "unknown": "gray"}
_ICONS = {"ok": ":material/check_circle:", "bad": ":material/error:", "unknown": ":material/help:"}
_PERCENT = st.column_config.NumberColumn(format="percent")


@st.cache_data(ttl=5, show_spinner=False)
def _overview(store_url: str, _engine: Engine, _config: Config) -> Overview:
    return load_overview(_engine, _config)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    return "—" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _tiles(ov: Overview) -> None:
    st.subheader(t("overview.golden"))
    for col, tile in zip(st.columns(max(1, len(ov.tiles))), ov.tiles, strict=False):
        value = _pct(tile.value) if tile.unit == "ratio" else f"{tile.value or 0:,.0f}"
        if tile.value is None:
            delta = t("tile.no_value")
        elif tile.threshold is None:
            delta = t("tile.no_rule")
        else:
            delta = t("tile.threshold", op=_OPS.get(tile.op or "", tile.op), threshold=_pct(tile.threshold))
        col.metric(
            kpi_title(tile.kpi),
            value,
            delta=delta,
            delta_color=_COLORS[tile.status],
            delta_arrow="off",
            icon=_ICONS[tile.status],
            help=t(f"status.{tile.status}"),
            border=True,
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


@st.fragment(run_every=10)
def _live(config: Config, engine: Engine) -> None:
    """Re-reads the store every 10 s without reloading the page."""
    ov = _overview(config.service.store_url, engine, config)
    zone = ZoneInfo(config.service.timezone)
    if ov.snapshot is None:
        st.info(t("overview.empty"))
        _sources(ov)
        return
    st.caption(t("overview.snapshot_time", time=_local(ov.snapshot.computed_at, zone), zone=zone.key))
    _tiles(ov)
    _alerts(ov, zone)
    left, right = st.columns(2)
    with left:
        _channels(ov, config)
    with right:
        _stuck(ov)
    _sources(ov)


st.title(t("overview.title"))
ctx = st.session_state.get("sentinel_ctx")  # set by app.py on every full run
if ctx is None:
    st.error(t("app.config_error"))
    st.stop()
_live(ctx.config, ctx.engine)
