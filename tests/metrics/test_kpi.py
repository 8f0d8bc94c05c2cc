"""KPI SQL against hand-computed values, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collectors.types import Batch, Observation
from metrics.kpi import KpiEngine, compute_snapshot
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


def test_stuck_counts_from_the_smaller_side_of_each_states_timeout(store, monkeypatch):
    """With the store's lock, a state whose orders are mostly past its timeout is counted as its
    open counts less the orders still within it; the values equal grouping the stuck ones."""
    feed(
        store,
        [("tmall", str(i), "paid", (20 + i) * M) for i in range(5)]  # paid: 5 of 6 stuck
        + [("jd", "9", "paid", 5 * M)]
        + [("jd", str(10 + i), "picked", (5 - i) * M) for i in range(3)]  # picked: 1 of 4 stuck
        + [("tmall", "20", "picked", 30 * M)],
    )
    ranges = []
    real = KpiEngine._stuck_between

    def spied(self, conn, asked):
        ranges.append(asked)
        return real(self, conn, asked)

    monkeypatch.setattr(KpiEngine, "_stuck_between", spied)
    timeouts = {"paid": 15 * M, "picked": 12 * M}
    locked = KpiEngine(store.engine, timedelta(hours=24), 15 * M, timeouts, store=store).compute(NOW)
    cut = int((NOW - 15 * M).timestamp() * 1000)
    picked = (None, int((NOW - 12 * M).timestamp() * 1000))
    assert len(ranges) == 2 and ranges[0]["picked"] == picked and "paid" not in ranges[0]
    assert ranges[1] == {"paid": (cut, 1 << 62)}  # the one order within 15 minutes
    assert locked.get("stuck_orders", state="paid") == 5 and locked.get("stuck_orders", state="picked") == 1
    assert locked.get("stuck_orders", state="paid", channel="tmall") == 5
    assert locked.get("stuck_orders", state="paid", channel="jd") == 0
    unlocked = snapshot(store)  # no store: both states grouped from their stuck side
    assert len(ranges) == 3 and ranges[2]["paid"] == (None, cut) and ranges[2]["picked"] == picked  # one ask
    assert {(v.kpi, v.labels): v.value for v in locked.values} == {
        (v.kpi, v.labels): v.value for v in unlocked.values
    }


def test_empty_store_has_counts_but_no_ratio(store):
    snap = snapshot(store)
    assert snap.get("sync_paid_orders") == 0
    assert snap.get("sync_success_ratio") is None


def test_a_long_windows_hour_cells_sort_on_the_small_cache(tmp_path, monkeypatch):
    """With a 7d window the full load groups most of the table by hour: those statements run with
    store.db.small_sorts' cache (SQLite sorts in memory up to the cache size), the others with the
    connection's own, which it has again afterwards."""
    from metrics import kpi as kpi_module
    from sentinel.config import load_config
    from store import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'week.db'}")
    db.init_schema(engine)
    cfg = load_config().kpi
    week = kpi_module.KpiEngine.from_config(engine, cfg.model_copy(update={"windows": [*cfg.windows, "7d"]}))
    seen, rows = [], kpi_module._rows

    def spy(conn, sql, **params):
        if not sql.startswith("PRAGMA"):
            size = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
            seen.append((sql == kpi_module._HOP_HOUR_SQL or "+paid_at" in sql, size))
        return rows(conn, sql, **params)

    monkeypatch.setattr(kpi_module, "_rows", spy)
    try:
        week.compute(datetime(2026, 2, 12, tzinfo=UTC))
        own = -db.SQLITE_HEAP_LIMIT_MB * 1024
        small = -db.SQLITE_SORT_CACHE_MB * 1024
        hourly = [size for by_hour, size in seen if by_hour]
        assert len(hourly) == 2 and set(hourly) == {small}, seen  # payments and hops by hour
        assert {size for by_hour, size in seen if not by_hour} == {own}, seen
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == own
    finally:
        engine.dispose()
