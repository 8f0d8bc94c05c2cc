"""The simulated WMS database on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from sim.scenario import load_scenario
from sim.wms import WmsDatabase, stockout_status, wms_stockout
from sim.world import World

BJ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(load_scenario("wms_push_gap", scale=0.05))


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def wms_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wms.db'}"
    return request.getfixturevalue("mysql_url" if request.param == "mariadb" else "pg_url")


def rows(db: WmsDatabase) -> dict[str, dict]:
    with db.engine.connect() as conn:
        return {r.src_order_no: r._asdict() for r in conn.execute(select(wms_stockout))}


def test_sync_writes_the_warehouse_view_of_the_world(wms_url, world):
    db = WmsDatabase(wms_url)
    db.create()
    try:
        now = datetime(2026, 2, 12, 21, 0, tzinfo=BJ)
        written = db.sync(world, now)
        table = rows(db)
        expected = {o.raw_id: o for o in world.orders if stockout_status(o, now) is not None}
        assert written == len(table) == len(expected) > 0
        assert not any("wms_push_dropped" in o.tags for o in expected.values())
        shops = {"tmall": "TMALL01", "jd": "JD01", "pdd": "PDD01", "douyin": "DY01", "youzan": "YZ01"}
        for raw_id, row in table.items():
            order = expected[raw_id]
            assert row["status"] == stockout_status(order, now) in (53, 79, 70, 110)
            assert row["shop_no"] == shops[order.channel] and row["warehouse_no"] == order.warehouse
            assert row["stockout_no"].startswith("CK") and row["spec_no"] == order.sku
            assert row["created"] == order.events["wms_received"].astimezone(BJ).replace(tzinfo=None)
            assert row["created"].tzinfo is None and row["modified"] >= row["created"]
            assert (row["pick_time"] is None) == (row["status"] == 53)
            assert (row["consign_time"] is not None) == (row["status"] == 110)
            assert (row["logistics_no"] is not None) == (row["status"] in (70, 110))
            assert row["consign_status"] == {53: 0, 79: 16, 70: 19, 110: 115}[row["status"]]
            assert int(row["receivable"] * 100) == order.amount_fen
        # Idempotent: nothing changed, nothing written.
        assert db.sync(world, now) == 0
        # Later, only the stock-outs that moved are written.
        later = now + timedelta(minutes=10)
        moved = {o.raw_id for o in world.orders if stockout_status(o, later) != stockout_status(o, now)}
        assert db.sync(world, later) == len(moved) > 0
        after = rows(db)
        assert {k for k in after if after[k]["status"] != table.get(k, {}).get("status")} == moved
    finally:
        db.close()


def test_a_restarted_writer_does_not_rewrite_rows(tmp_path, world):
    url = f"sqlite:///{tmp_path / 'wms.db'}"
    first = WmsDatabase(url)
    first.create()
    end = world.end
    assert first.sync(world, end) == sum(1 for o in world.orders if o.in_wms and "wms_received" in o.events)
    first.close()
    second = WmsDatabase(url)
    assert second.sync(world, end) == 0
    assert "wms_push_dropped" not in {t for o in world.orders if o.raw_id in rows(second) for t in o.tags}
    assert "sqlite" in repr(second)
    second.close()


def test_times_are_naive_beijing_seconds_on_sqlite(tmp_path, world):
    db = WmsDatabase(f"sqlite:///{tmp_path / 'wms.db'}")
    db.create()
    db.sync(world, world.end)
    with db.engine.connect() as conn:
        text_value = conn.exec_driver_sql("SELECT created FROM wms_stockout LIMIT 1").scalar()
    assert len(text_value) == 19 and text_value[10] == " "  # 'YYYY-MM-DD HH:MM:SS', like a MySQL DATETIME
    db.close()
