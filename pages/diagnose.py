"""Diagnose page: one click runs every probe over the store; ranked causes with evidence and orders."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from sentinel import ui
from sentinel.i18n import t

RESULT_KEY = "diagnosis"  # the last diagnosis of this session: survives live refreshes


def _focus(ov) -> tuple[str | None, dict, str]:
    """The series to focus on: an active alert's, or none (every probe, whole store)."""
    options = {"": t("diagnose.everything")}
    for a in ov.alerts:
        options[a.fingerprint] = f"{a.rule} " + (", ".join(f"{k}={v}" for k, v in a.labels.items()) or "")
    picked = st.selectbox(t("diagnose.focus"), list(options), format_func=options.get, key="diagnose_focus")
    alert = next((a for a in ov.alerts if a.fingerprint == picked), None)
    if alert is None:
        return None, {}, ""
    rule = next((r for r in ui.context().config.alerts.rules if r.name == alert.rule), None)
    return (rule.kpi if rule else None), alert.labels, alert.rule


def _orders(ctx: ui.DashboardContext, ids: list[str], key: str) -> None:
    user = ui.current_user()
    pii = ui.order_pii(ctx.config.service.store_url, user.role, tuple(ids), ctx.engine, user)
    frame = pd.DataFrame(
        {
            t("order.global_id"): ids,
            t("order.buyer_name"): [pii.get(i, {}).get("buyer_name") or "—" for i in ids],
            t("order.phone"): [pii.get(i, {}).get("phone") or "—" for i in ids],
            t("order.address"): [pii.get(i, {}).get("address") or "—" for i in ids],
        }
    )
    st.dataframe(frame, hide_index=True, height=min(400, 38 + 35 * len(ids)))
    ui.csv_download(ctx, frame, f"diagnose_{key}", f"diagnose_export_{key}")


def _show(ctx: ui.DashboardContext, result: dict) -> None:
    st.caption(t("diagnose.elapsed", s=f"{result['elapsed_s']:.2f}", at=result["at"]))
    causes = result["causes"]
    if not causes:
        st.info(t("diagnose.nothing"))
    for i, cause in enumerate(causes):
        with st.expander(f"{i + 1}. {cause['title']} — {cause['score']:.0%}", expanded=i == 0):
            st.markdown(cause["summary"])
            st.progress(min(1.0, max(0.0, cause["score"])))
            if cause["evidence"]:
                st.dataframe(
                    pd.DataFrame([{k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
                                   for k, v in e.items()} for e in cause["evidence"]]),
                    hide_index=True,
                )  # fmt: skip
            if cause["orders"]:
                st.caption(t("diagnose.orders", n=len(cause["orders"])))
                _orders(ctx, cause["orders"], cause["cause"])
    with st.expander(t("diagnose.findings", n=len(result["findings"]))):
        st.dataframe(
            pd.DataFrame(
                {
                    t("diagnose.probe"): [f["probe"] for f in result["findings"]],
                    t("diagnose.finding"): [f["title"] for f in result["findings"]],
                    t("diagnose.cause"): [f["cause"] or "—" for f in result["findings"]],
                    t("diagnose.score"): [f["score"] for f in result["findings"]],
                    t("diagnose.order_count"): [f["order_count"] for f in result["findings"]],
                }
            ),
            hide_index=True,
        )


st.title(t("diagnose.title"))
ctx = ui.context()
user = ui.user_for("viewer")
overview = ui.overview(ctx.config.service.store_url, ctx.engine, ctx.config)
kpi, labels, rule = _focus(overview)
live = st.checkbox(t("diagnose.live"), value=True, key="diagnose_live")
if st.button(t("diagnose.run"), type="primary", icon=":material/troubleshoot:", key="diagnose_run"):
    with st.spinner(t("diagnose.running")):
        st.session_state[RESULT_KEY] = ui.run_diagnosis(ctx, user, kpi, labels, rule, live)
if RESULT_KEY in st.session_state:
    _show(ctx, st.session_state[RESULT_KEY])
