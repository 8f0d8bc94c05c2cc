"""Audit page (admin): logins, exports, silences and acknowledgements, newest first."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from sentinel import audit, ui
from sentinel.i18n import t

st.title(t("audit.title"))
ctx = ui.context()
ui.user_for("admin")
tz = ui.zone(ctx)
rows = audit.recent(ctx.engine, limit=500)
if not rows:
    st.caption(t("audit.empty"))
else:
    frame = pd.DataFrame(
        {
            t("audit.at"): [ui.local(r["at"], tz) for r in rows],
            t("audit.user"): [r["user"] for r in rows],
            t("audit.role"): [r["role"] for r in rows],
            t("audit.action"): [t(f"audit.{r['action']}") for r in rows],
            t("audit.detail"): [json.dumps(r["detail"], ensure_ascii=False) for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True)
    ui.csv_download(ctx, frame, "audit", "audit_export")
