"""Alerts page: active alerts, history, silences, acknowledgement, failed or unconfirmed sends."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alerts.silences import list_silences
from sentinel import actions, ui
from sentinel.auth import AccessDenied
from sentinel.i18n import t


def _labels(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "—"


def _active(ov, tz) -> None:
    st.subheader(t("section.alerts"))
    if not ov.alerts:
        st.success(t("alerts.none"))
        return
    frame = pd.DataFrame(
        {
            t("col.alert_state"): [t(f"alert.{a.state}") for a in ov.alerts],
            t("col.severity"): [a.severity or "—" for a in ov.alerts],
            t("col.rule"): [a.rule for a in ov.alerts],
            t("col.labels"): [_labels(a.labels) for a in ov.alerts],
            t("col.value"): [a.value for a in ov.alerts],
            t("col.since"): [ui.local(a.since, tz) for a in ov.alerts],
            t("col.summary"): [a.summary for a in ov.alerts],
        }
    )
    st.dataframe(frame, hide_index=True)


def _history(ctx, tz) -> None:
    st.subheader(t("alerts.history"))
    rows = ui.alert_history(ctx.config.service.store_url, ctx.engine)
    if not rows:
        st.caption(t("alerts.no_history"))
        return
    frame = pd.DataFrame(
        {
            t("col.alert_state"): [t(f"alert.{r['state']}") for r in rows],
            t("col.severity"): [r["severity"] or "—" for r in rows],
            t("col.rule"): [r["rule"] for r in rows],
            t("col.labels"): [_labels(r["labels"]) for r in rows],
            t("col.value"): [r["value"] for r in rows],
            t("alerts.fired_at"): [ui.local(r["fired_at"], tz) for r in rows],
            t("alerts.resolved_at"): [ui.local(r["resolved_at"], tz) for r in rows],
            t("alerts.acked_by"): [r["acked_by"] or "—" for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True)
    ui.csv_download(ctx, frame, "alert_history", "alerts_export")


def _sends(ctx, tz) -> None:
    st.subheader(t("alerts.sends"))
    rows = ui.troubled_sends(ctx.config.service.store_url, ctx.engine)
    if not rows:
        st.caption(t("alerts.sends_ok"))
        return
    frame = pd.DataFrame(
        {
            t("alerts.route"): [r["route"] for r in rows],
            t("alerts.kind"): [r["kind"] for r in rows],
            t("alerts.status"): [
                t(f"send.{r['status']}") if r["status"] != "sent" else t("send.unconfirmed") for r in rows
            ],
            t("alerts.attempts"): [r["attempts"] for r in rows],
            t("alerts.created"): [ui.local(r["created_at"], tz) for r in rows],
            t("alerts.response"): [(r["response"] or "")[:200] for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True)


def _live(ctx: ui.DashboardContext) -> None:
    ov = ui.overview(ctx.config.service.store_url, ctx.engine, ctx.config)
    tz = ui.zone(ctx)
    _active(ov, tz)
    _sends(ctx, tz)
    _history(ctx, tz)


def _silences(ctx: ui.DashboardContext, now) -> None:
    st.subheader(t("alerts.silences"))
    tz = ui.zone(ctx)
    current = list_silences(ctx.engine, now)
    if current:
        st.dataframe(
            pd.DataFrame(
                {
                    "#": [s.id for s in current],
                    t("alerts.matchers"): [
                        ", ".join(f"{m.name}={m.value}" for m in s.matchers) for s in current
                    ],
                    t("alerts.starts"): [ui.local(s.starts_at, tz) for s in current],
                    t("alerts.ends"): [ui.local(s.ends_at, tz) for s in current],
                    t("alerts.by"): [s.created_by for s in current],
                    t("alerts.comment"): [s.comment for s in current],
                }
            ),
            hide_index=True,
        )
    else:
        st.caption(t("alerts.no_silences"))
    user = ui.current_user()
    if not user.can("operator"):
        st.caption(t("alerts.operator_only"))
        return
    rules = [r.name for r in ctx.config.alerts.rules]
    with st.form("silence_form", clear_on_submit=True):
        left, mid, right = st.columns(3)
        rule = left.selectbox(t("col.rule"), rules, key="silence_rule")
        channels = {"": t("alerts.any_channel"), **{k: c.name for k, c in ctx.config.channels.items()}}
        channel = mid.selectbox(
            t("col.channel"), list(channels), format_func=channels.get, key="silence_channel"
        )
        hours = right.number_input(
            t("alerts.hours"), min_value=0.25, max_value=72.0, value=2.0, step=0.25, key="silence_hours"
        )
        comment = st.text_input(t("alerts.comment"), key="silence_comment")
        if st.form_submit_button(t("alerts.silence"), icon=":material/notifications_off:"):
            try:
                made = actions.silence(
                    ctx.engine,
                    ui.current_user(),
                    {"alertname": rule, "channel": channel},
                    hours,
                    comment,
                    now,
                )
                st.success(t("alerts.silenced", id=made.id))
            except (ValueError, AccessDenied) as exc:
                st.error(str(exc))
    if current:
        left, right = st.columns([3, 1])
        chosen = left.selectbox(t("alerts.expire_pick"), [s.id for s in current], key="expire_id")
        if right.button(t("alerts.expire"), key="expire_button"):
            actions.expire(ctx.engine, ui.current_user(), chosen, now)
            st.rerun()


def _ack(ctx: ui.DashboardContext, ov, now) -> None:
    firing = [a for a in ov.alerts if a.state == "firing"]
    user = ui.current_user()
    if not firing or not user.can("operator"):
        return
    st.subheader(t("alerts.ack"))
    with st.form("ack_form", clear_on_submit=True):
        fp = st.selectbox(
            t("col.rule"), [a.fingerprint for a in firing], key="ack_fp",
            format_func=lambda f: next(f"{a.rule} {_labels(a.labels)}" for a in firing if a.fingerprint == f),
        )  # fmt: skip
        comment = st.text_input(t("alerts.comment"), key="ack_comment")
        if st.form_submit_button(t("alerts.ack_button"), icon=":material/done_all:"):
            try:
                actions.acknowledge(ctx.engine, ctx.config, ui.current_user(), fp, comment, now)
                st.success(t("alerts.acked"))
            except (LookupError, AccessDenied) as exc:
                st.error(str(exc))


st.title(t("alerts.title"))
ctx = ui.context()
ui.user_for("viewer")
st.fragment(_live, run_every=ui.refresh_seconds(ctx))(ctx)
overview = ui.overview(ctx.config.service.store_url, ctx.engine, ctx.config)
now = ui.now_of(overview.snapshot)
_ack(ctx, overview, now)
_silences(ctx, now)
