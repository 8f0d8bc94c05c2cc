"""Run the probes, rank the causes: `diagnose(engine, config, now, kpi=…, labels=…)`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from diagnose.model import CAUSE_TITLES_ZH, Cause, Diagnosis, Finding
from diagnose.probes import PROBES, Context
from diagnose.sql import DEFAULT_TIMEOUT_S, ProbeError, ReadOnlySql
from sentinel.config import Config
from store.schema import source_health

log = logging.getLogger("diagnose")

MIN_CAUSE_SCORE = 0.4  # causes scoring below this are not reported
SUPPORT_BONUS = 0.03  # per further finding backing the same cause (at most two count)
FOCUS_BONUS = 0.1  # a cause that can move the KPI asked about

# Which causes can move which KPI (the focus of a diagnosis started from an alert or a red number).
KPI_CAUSES: dict[str, tuple[str, ...]] = {
    "sync_success_ratio": ("wms_push_gap", "field_filter_loss", "timezone_skew"),
    "sync_unreached_orders": ("wms_push_gap", "field_filter_loss", "timezone_skew"),
    "order_loss_ratio": ("intake_outage", "api_rate_limited", "api_key_rotated"),
    "order_loss_orders": ("intake_outage", "api_rate_limited", "api_key_rotated"),
    "duplicate_free_ratio": ("duplicate_callbacks",),
    "fast_cancel_ratio": ("cancel_misfire",),
    "fast_cancel_orders": ("cancel_misfire",),
    "amount_mismatch_ratio": ("price_mismatch",),
    "amount_mismatch_orders": ("price_mismatch",),
    "stuck_ratio": ("pick_pack_stall", "tracking_stall", "wms_push_gap", "timezone_skew"),
    "stuck_orders": ("pick_pack_stall", "tracking_stall", "wms_push_gap", "timezone_skew"),
    "return_break_ratio": ("api_key_rotated", "mq_consumers_gone"),
    "return_break_orders": ("api_key_rotated", "mq_consumers_gone"),
    "source_up": ("api_key_rotated", "api_rate_limited"),
    "source_lag_seconds": ("api_rate_limited", "api_key_rotated"),
    "reconcile_difference_ratio": ("field_filter_loss", "intake_outage"),
}
STATE_CAUSES = {
    "picked": ("pick_pack_stall",),
    "shipped": ("tracking_stall",),
    "in_transit": ("tracking_stall",),
    "paid": ("wms_push_gap", "field_filter_loss", "timezone_skew"),
}
# A per-hop series (hop_sync_*) names the hop: the ERP not pulling, the push past it, the carrier.
HOP_CAUSES = {
    "channel_erp": ("field_filter_loss",),
    "erp_wms": ("wms_push_gap",),
    "shipped_tracking": ("tracking_stall",),
}


class HealthView:
    """A `store` argument for diagnose() that only supplies source health rows."""

    def __init__(self, health: Callable[[], list[dict]]) -> None:
        self.health = health


def diagnose(
    engine: Engine,
    config: Config,
    now: datetime,
    *,
    kpi: str | None = None,
    labels: dict | None = None,
    store=None,
    live: bool = True,
    probes: tuple[str, ...] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Diagnosis:
    """Run every probe (or `probes`) over the store and rank the likely causes, best first.

    `kpi`/`labels` focus it on one series (an alert's); `live` also checks each source's
    connectivity over the network; `store` (a store.Store) is optional."""
    started = time.perf_counter()
    labels = {k: str(v) for k, v in (labels or {}).items()}
    findings: list[Finding] = []
    seconds: dict[str, float] = {}
    with ReadOnlySql(engine, timeout_s) as sql:
        health = _health(sql, store)
        ctx = Context(sql, config, now, kpi=kpi, labels=labels, health=health, live=live)
        for name, probe in _chosen(probes):
            probe_started = time.perf_counter()
            try:
                findings += probe(ctx)
            except ProbeError as exc:
                findings.append(
                    Finding(name, f"探针 {name} 未完成：{exc}", [{"fact": "probe_error", "error": str(exc)}])
                )
            except Exception as exc:  # one broken probe must not take the diagnosis down
                log.exception("probe %s failed", name)
                findings.append(
                    Finding(
                        name,
                        f"探针 {name} 出错：{type(exc).__name__}",
                        [{"fact": "probe_error", "error": type(exc).__name__}],
                    )
                )
            seconds[name] = time.perf_counter() - probe_started
    causes = rank(findings, kpi, labels)
    return Diagnosis(causes, findings, time.perf_counter() - started, seconds)


def _chosen(names: tuple[str, ...] | None):
    from diagnose.connectivity import probe_connectivity
    from diagnose.reconcile_probe import probe_field_filter

    every = {**PROBES, "field_filter": probe_field_filter, "connectivity": probe_connectivity}
    if names is None:
        return list(every.items())
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise ValueError(f"unknown probe(s) {unknown} (known: {sorted(every)})")
    return [(n, every[n]) for n in names]


def _health(sql: ReadOnlySql, store) -> list[dict]:
    if store is not None:
        return store.health()
    cols = [c.name for c in source_health.c]
    rows = sql.rows(f"SELECT {', '.join(cols)} FROM source_health ORDER BY source")
    return [dict(zip(cols, r, strict=True)) for r in rows]


def rank(findings: list[Finding], kpi: str | None = None, labels: dict | None = None) -> list[Cause]:
    """Per cause: its best finding's score, a little more for each further supporting finding,
    more for a cause that can move the KPI asked about; those above MIN_CAUSE_SCORE, best first."""
    focus = set(KPI_CAUSES.get(kpi or "", ()))
    state = (labels or {}).get("state")
    if state in STATE_CAUSES:
        focus = set(STATE_CAUSES[state])
    hop = (labels or {}).get("hop")
    if hop in HOP_CAUSES:
        focus = set(HOP_CAUSES[hop])
    by_cause: dict[str, list[Finding]] = {}
    for f in findings:
        if f.cause and f.score > 0:
            by_cause.setdefault(f.cause, []).append(f)
    causes = []
    for cause, items in by_cause.items():
        items.sort(key=lambda f: -f.score)
        best = items[0]
        score = best.score + SUPPORT_BONUS * min(2, len(items) - 1)
        if cause in focus and best.score >= MIN_CAUSE_SCORE:
            score += FOCUS_BONUS
        score = min(score, 0.99)
        if score < MIN_CAUSE_SCORE:
            continue
        orders: list[str] = []
        for f in items:
            orders += [o for o in f.orders if o not in orders]
        evidence = [{"probe": f.probe, "title": f.title, **e} for f in items for e in f.evidence]
        title = CAUSE_TITLES_ZH[cause]
        causes.append(Cause(cause, round(score, 3), title, f"{title}：{best.title}", evidence, orders[:500]))
    causes.sort(key=lambda c: (-c.score, c.cause))
    return causes
