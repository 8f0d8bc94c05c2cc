"""KPI SQL against hand-computed values, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collectors.types import Batch, Observation
from metrics.kpi import compute_snapshot
from store.store import Store

NOW = datetime(2026, 2, 12, 14, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def feed(store: Store, rows: list[tuple[str, str, str, timedelta]]) -> None:
    obs = [Observation("t", f"{raw}|{state}", ch, raw, state, NOW - ago) for ch, raw, state, ago in rows]
    store.ingest(Batch("t", obs), NOW)


def snapshot(store: Store):
    return compute_snapshot(
        store.engine, NOW, timedelta(hours=24), 15 * M, {"paid": 15 * M, "picked": 12 * M}
    )


def test_sync_ratio_counts_only_orders_past_the_sla(store):
    feed(
        store,
        [
            ("tmall", "1", "paid", 60 * M),
            ("tmall", "1", "wms_received", 50 * M),  # reached
            ("tmall", "2", "paid", 40 * M),  # stuck: paid 40 min ago, never reached
            ("tmall", "3", "paid", 5 * M),  # inside the SLA: not counted yet
            ("jd", "4", "paid", 30 * M),
            ("jd", "4", "picked", 20 * M),  # reached (picked implies WMS)
            ("jd", "5", "paid", 30 * M),
            ("jd", "5", "cancelled", 29 * M),  # cancelled before WMS: excluded
            ("jd", "6", "paid", 25 * 60 * M),  # outside the 24 h window
        ],
    )
    snap = snapshot(store)
    assert snap.get("sync_paid_orders") == 3
    assert snap.get("sync_unreached_orders") == 1
    assert snap.get("sync_success_ratio") == pytest.approx(2 / 3)
    assert snap.get("sync_success_ratio", channel="tmall") == pytest.approx(0.5)
    assert snap.get("sync_unreached_orders", channel="tmall") == 1
    assert snap.get("sync_success_ratio", channel="jd") == 1.0


def test_stuck_ratio_per_state_uses_each_states_timeout(store):
    feed(
        store,
        [
            ("tmall", "1", "paid", 20 * M),  # stuck in paid (> 15 min)
            ("tmall", "2", "paid", 10 * M),  # not yet
            ("jd", "3", "picked", 13 * M),  # stuck in picked (> 12 min)
            ("jd", "4", "picked", 11 * M),
            ("jd", "5", "delivered", 600 * M),  # terminal: not counted
        ],
    )
    snap = snapshot(store)
    assert snap.get("stuck_orders", state="paid") == 1
    assert snap.get("stuck_ratio", state="paid") == 0.5
    assert snap.get("stuck_ratio", state="picked", channel="jd") == 0.5
    assert snap.get("state_orders", state="delivered") is None
    assert snap.get("state_orders", state="picked") == 2


def test_empty_store_has_counts_but_no_ratio(store):
    snap = snapshot(store)
    assert snap.get("sync_paid_orders") == 0
    assert snap.get("sync_success_ratio") is None
