"""Reconciliation page: on demand, the paid orders some system lacks, grouped by reason signature."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from sentinel import ui
from sentinel.i18n import t

RESULT_KEY = "reconciliation"


def _show(ctx: ui.DashboardContext, result: dict) -> None:
    st.caption(t("reconcile.caption", since=result["since"], until=result["until"], roles=" / ".join(result["roles"]),
                 s=f"{result['elapsed_s']:.2f}"))  # fmt: skip
    left, mid, right = st.columns(3)
    left.metric(t("reconcile.orders"), f"{result['orders']:,}", border=True)
    mid.metric(t("reconcile.differences"), f"{len(result['rows']):,}", border=True)
    right.metric(t("reconcile.ratio"), f"{result['ratio'] * 100:.3f}%", border=True)
    if not result["rows"]:
        st.success(t("reconcile.clean"))
        return
    st.subheader(t("reconcile.groups"))
    st.dataframe(
        pd.DataFrame(result["groups"], columns=[t("reconcile.reason"), t("reconcile.count")]), hide_index=True
    )
    st.subheader(t("reconcile.list"))
    frame = pd.DataFrame(result["rows"])
    st.dataframe(frame, hide_index=True)
    ui.csv_download(ctx, frame, "reconciliation", "reconcile_export")


st.title(t("reconcile.title"))
ctx = ui.context()
user = ui.user_for("viewer")
if st.button(t("reconcile.run"), type="primary", icon=":material/rule:", key="reconcile_run"):
    with st.spinner(t("reconcile.running")):
        st.session_state[RESULT_KEY] = ui.run_reconciliation(ctx, user)
if RESULT_KEY in st.session_state:
    _show(ctx, st.session_state[RESULT_KEY])
