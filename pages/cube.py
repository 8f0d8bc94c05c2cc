"""Status cube page: time bucket × one dimension × state as a heatmap; a cell drills down to its orders."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from metrics.cube import CUBE_DIMENSIONS, GRANULARITIES, CellSpec
from sentinel import ui
from sentinel.i18n import current_lang, dimension_label, state_label, t
from store.lifecycle import OPEN_STATES, STATES

SPANS = {"5m": timedelta(hours=3), "1h": timedelta(hours=24), "1d": timedelta(days=7)}
# The chosen cell lives in the two pickers' keys, so it survives live refreshes.
VALUE_KEY, BUCKET_KEY, CLICK_KEY = "cube_pick_value", "cube_pick_bucket", "cube_last_click"
_ORDER_COLUMNS = [
    "global_id",
    "raw_order_id",
    "channel",
    "state",
    "state_at",
    "buyer_name",
    "phone",
    "address",
]
_FMT = {"5m": "%H:%M", "1h": "%m-%d %H:00", "1d": "%m-%d"}


def _filters() -> tuple[str, str, str, str]:
    left, mid, right, last = st.columns(4)
    state = left.selectbox(
        t("cube.state"), STATES, index=STATES.index("paid"), format_func=state_label, key="cube_state"
    )
    dimension = mid.selectbox(
        t("cube.dimension"), CUBE_DIMENSIONS, format_func=dimension_label, key="cube_dim"
    )
    granularity = (
        right.segmented_control(
            t("cube.granularity"),
            list(GRANULARITIES),
            default="1h",
            key="cube_gran",
            format_func=lambda g: t(f"gran.{g}"),
        )
        or "1h"
    )
    measure = last.segmented_control(
        t("cube.measure"), ["in_state", "entered"], default="in_state", key="cube_measure",
        format_func=lambda m: t(f"measure.{m}"),
    ) or "in_state"  # fmt: skip
    return state, dimension, granularity, measure


def _figure(cube, labels: list[str], columns: list[str]) -> go.Figure:
    # Square markers on numeric axes instead of go.Heatmap: Plotly heatmap traces send no click
    # selection to Streamlit, and numeric axes keep the empty buckets on the axis.
    xs, ys, zs = [], [], []
    for r in range(len(labels)):
        for c in range(len(columns)):
            n = cube.counts.get((cube.values[r], cube.buckets[c]), 0)
            if n:
                xs.append(c)
                ys.append(r)
                zs.append(n)
    size = max(8, min(28, int(1000 / max(1, len(columns)))))
    hover = [
        f"{labels[y]} · {columns[x]}<br>{t('cube.orders')}: {z:,}" for x, y, z in zip(xs, ys, zs, strict=True)
    ]
    fig = go.Figure(
        go.Scatter(
            x=xs, y=ys, mode="markers", text=hover, hovertemplate="%{text}<extra></extra>",
            marker={"symbol": "square", "size": size, "color": zs, "colorscale": "YlOrRd", "showscale": True,
                    "line": {"width": 0}},
            unselected={"marker": {"opacity": 0.45}},
        )
    )  # fmt: skip
    step = max(1, len(columns) // 12)
    fig.update_layout(
        height=max(240, 36 * len(labels) + 110),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"tickvals": list(range(0, len(columns), step)), "ticktext": columns[::step],
               "range": [-0.6, len(columns) - 0.4], "showgrid": False, "zeroline": False},
        yaxis={"tickvals": list(range(len(labels))), "ticktext": labels, "autorange": "reversed",
               "range": [-0.6, len(labels) - 0.4], "showgrid": False, "zeroline": False},
        clickmode="event+select",
    )  # fmt: skip
    return fig


def _live(ctx: ui.DashboardContext, state: str, dimension: str, granularity: str, measure: str) -> None:
    config, engine, tz = ctx.config, ctx.engine, ui.zone(ctx)
    url = config.service.store_url
    snapshot = ui.overview(url, engine, config).snapshot
    until = ui.now_of(snapshot).replace(second=0, microsecond=0) + timedelta(minutes=1)
    span = SPANS[granularity]
    cube = ui.cube(
        url, state, dimension, granularity, until, int(span.total_seconds()), measure, tz.key, engine
    )
    st.caption(t("cube.caption", since=ui.local(until - span, tz), until=ui.local(until, tz), zone=tz.key))
    if not cube.values:
        st.info(t("cube.empty"))
        return
    names = (
        {k: c.name for k, c in config.channels.items()}
        if dimension == "channel" and current_lang() == "zh"
        else {}
    )
    labels = [names.get(v, v) or t("cube.unknown") for v in cube.values]
    columns = [ui.local(b, tz, _FMT[granularity]) for b in cube.buckets]
    event = st.plotly_chart(
        _figure(cube, labels, columns), key="cube_chart", on_select="rerun", selection_mode="points"
    )
    points = event.selection.points if event and event.selection else []
    click = (int(points[0]["y"]), int(points[0]["x"])) if points else None
    if (
        click
        and click != st.session_state.get(CLICK_KEY)
        and click[0] < len(labels)
        and click[1] < len(columns)
    ):
        st.session_state[VALUE_KEY] = cube.values[click[0]]  # before the pickers exist
        st.session_state[BUCKET_KEY] = columns[click[1]]
    st.session_state[CLICK_KEY] = click
    if cube.earlier:
        st.caption(t("cube.earlier", n=sum(cube.earlier.values())))
    _drill(ctx, cube, columns, granularity, names)


def _drill(ctx: ui.DashboardContext, cube, columns: list[str], granularity: str, names: dict) -> None:
    """The orders behind the chosen cell (a chart click sets the two pickers)."""
    st.subheader(t("cube.drill"))
    if st.session_state.get(VALUE_KEY) not in cube.values:
        st.session_state[VALUE_KEY] = cube.values[0]
    value = st.session_state[VALUE_KEY]
    if st.session_state.get(BUCKET_KEY) not in columns:
        busiest = max(range(len(columns)), key=lambda c: cube.counts.get((value, cube.buckets[c]), 0))
        st.session_state[BUCKET_KEY] = columns[busiest]
    left, right = st.columns(2)
    value = left.selectbox(
        t("cube.value"), cube.values, format_func=lambda v: v or t("cube.unknown"), key=VALUE_KEY
    )
    column = right.selectbox(t("cube.bucket"), columns, key=BUCKET_KEY)
    start = cube.buckets[columns.index(column)]
    end = start + timedelta(milliseconds=GRANULARITIES[granularity])
    cell = CellSpec(cube.state, cube.dimension, value, start, end, cube.measure)
    user = ui.current_user()
    rows = ui.cell_orders(ctx.config.service.store_url, user.role, cell, ctx.engine, user)
    label = names.get(value, value) or t("cube.unknown")
    if not rows:
        st.caption(t("cube.no_orders"))
        return
    tz = ui.zone(ctx)
    frame = pd.DataFrame(rows)
    frame["state_at"] = [ui.local(x, tz) for x in frame["state_at"]]
    frame["state"] = frame["state"].map(state_label)
    frame["channel"] = frame["channel"].map(
        lambda c: ctx.config.channels[c].name if c in ctx.config.channels else c
    )
    extra = "warehouse" if cube.dimension == "channel" else cube.dimension
    frame = frame[[*_ORDER_COLUMNS, extra]]
    st.caption(t("cube.cell", n=len(rows), value=label, bucket=column, state=state_label(cube.state)))
    shown = frame.fillna("—").rename(
        columns=lambda c: t(f"order.{c}") if c in _ORDER_COLUMNS else dimension_label(c)
    )
    st.dataframe(shown, hide_index=True)
    ui.csv_download(ctx, frame, f"cube_{cube.state}_{cube.dimension}", "cube_export")


st.title(t("cube.title"))
ctx = ui.context()
ui.user_for("viewer")
filters = _filters()
if filters[0] not in OPEN_STATES and filters[3] == "in_state":
    st.caption(t("cube.terminal"))
st.fragment(_live, run_every=ui.refresh_seconds(ctx))(ctx, *filters)
