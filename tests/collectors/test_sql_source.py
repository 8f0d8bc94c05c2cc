"""The generic SQL collector over the simulated WMS on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text, update

from collectors.errors import SourceConfigError, SourceTimeout, SourceUnavailable
from collectors.sql_source import SqlCollector
from sentinel.config import SourceConfig
from sim.scenario import load_scenario
from sim.wms import WmsDatabase, stockout_status, wms_stockout
from sim.world import World

BJ = ZoneInfo("Asia/Shanghai")
QUERY = (
    "SELECT stockout_no, src_order_no, shop_no, warehouse_no, status, consign_status, spec_no, receivable,"
    " receiver_province, receiver_city, logistics_code, logistics_no, created, modified, pick_time, pack_time,"
    " consign_time FROM wms_stockout WHERE modified >= :since ORDER BY modified, stockout_no"
)
WMS_MAPPING = {
    "order_id": "src_order_no",
    "channel": "shop_no",
    "channel_map": {"TMALL01": "tmall", "JD01": "jd", "PDD01": "pdd", "DY01": "douyin", "YZ01": "youzan"},
    "status": "status",
    "status_map": {"53": "wms_received", "79": "picked", "70": "packed", "110": "shipped", "5": "cancelled"},
    "status_time": "modified",
    "times": {
        "wms_received": "created",
        "picked": "pick_time",
        "packed": "pack_time",
        "shipped": "consign_time",
    },
    "amount": "receivable",
    "dims": {
        "warehouse": "warehouse_no",
        "carrier": "logistics_code",
        "sku": "spec_no",
        "province": "receiver_province",
        "city": "receiver_city",
    },
}


def source(url: str, **extra) -> SourceConfig:
    cfg = {
        "kind": "sql",
        "url": url,
        "query": QUERY,
        "cursor_field": "modified",
        "overlap": "2m",
        "initial_lookback": "24h",
        "page_size": 5,
        "mapping": WMS_MAPPING,
    }
    cfg.update(extra)
    return SourceConfig.model_validate(cfg)


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(load_scenario("wms_push_gap", scale=0.05))


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def wms(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wms.db'}"
    else:
        url = request.getfixturevalue("mysql_url" if request.param == "mariadb" else "pg_url")
    db = WmsDatabase(url)
    db.create()
    yield db
    db.close()


def poll(col: SqlCollector, cursor: str | None, now: datetime):
    batches = list(col.poll(cursor, now))
    assert all(b.cursor is None for b in batches[:-1])  # only the last batch moves the cursor
    return batches, (batches[-1].cursor if batches and batches[-1].cursor else cursor)


def test_rows_map_onto_canonical_observations(wms, world):
    now = datetime(2026, 2, 12, 21, 0, tzinfo=BJ)
    written = wms.sync(world, now)
    col = SqlCollector("wms", source(wms.engine.url.render_as_string(hide_password=False)))
    batches, cursor = poll(col, None, now)
    assert len(batches) == -(-written // 50) and sum(b.records for b in batches) == written
    assert not [q for b in batches for q in b.quarantined]
    obs = {o.record_key: o for b in batches for o in b.observations}
    orders = {o.raw_id: o for o in world.orders}
    expected = set()
    for order in orders.values():
        status = stockout_status(order, now)
        if status is None:
            continue
        reached = {53: 1, 79: 2, 70: 3, 110: 4}[status]
        expected |= {f"{order.raw_id}|{s}" for s in ("wms_received", "picked", "packed", "shipped")[:reached]}
    assert set(obs) == expected
    for o in obs.values():
        truth = orders[o.raw_order_id]
        assert o.source == "wms" and o.channel == truth.channel
        assert o.at == truth.events[o.state].replace(microsecond=0)
        assert o.dims["warehouse"] == truth.warehouse and o.dims["carrier"] == truth.carrier
        assert o.dims["sku"] == truth.sku and o.dims["city"] == truth.city
        assert o.amount_fen == truth.amount_fen
    newest = max(b.max_event_at for b in batches)
    assert datetime.fromisoformat(cursor) == newest <= now


def test_repoll_rereads_the_overlap(wms, world):
    url = wms.engine.url.render_as_string(hide_password=False)
    col = SqlCollector("wms", source(url))
    t1 = datetime(2026, 2, 12, 20, 45, tzinfo=BJ)
    wms.sync(world, t1)
    first, cursor = poll(col, None, t1)
    t2 = t1 + timedelta(minutes=10)
    wms.sync(world, t2)
    second, cursor2 = poll(col, cursor, t2)
    first_keys = {o.record_key for b in first for o in b.observations}
    second_keys = [o.record_key for b in second for o in b.observations]
    since = (datetime.fromisoformat(cursor) - timedelta(minutes=2)).astimezone(BJ).replace(tzinfo=None)
    with wms.engine.connect() as conn:
        expected_rows = conn.execute(select(func.count()).where(wms_stockout.c.modified >= since)).scalar()
    assert sum(b.records for b in second) == expected_rows
    # Rows modified inside the overlap come again: the same record keys (the store dedups them).
    assert first_keys & set(second_keys)
    moved = {o.raw_id for o in world.orders if stockout_status(o, t2) != stockout_status(o, t1)}
    assert moved <= {k.split("|")[0] for k in second_keys}
    assert datetime.fromisoformat(cursor2) > datetime.fromisoformat(cursor)
    # Nothing new: the cursor stays, the overlap is read again.
    third, cursor3 = poll(col, cursor2, t2)
    assert cursor3 == cursor2 and third


def test_malformed_rows_are_quarantined_naming_the_field(wms, world):
    now = datetime(2026, 2, 12, 21, 0, tzinfo=BJ)
    wms.sync(world, now)
    with wms.engine.begin() as conn:
        first, second = conn.execute(
            wms_stockout.select().order_by(wms_stockout.c.stockout_no).limit(2)
        ).all()
        conn.execute(
            update(wms_stockout).where(wms_stockout.c.stockout_no == first.stockout_no).values(status=99)
        )
        if conn.dialect.name != "postgresql":  # MariaDB zero date / SQLite free text: an unreadable time
            conn.execute(
                text("UPDATE wms_stockout SET pick_time = :bad WHERE stockout_no = :no"),
                {"bad": "0000-00-00 00:00:00", "no": second.stockout_no},
            )
    col = SqlCollector("wms", source(wms.engine.url.render_as_string(hide_password=False)))
    batches, _ = poll(col, None, now)
    quarantined = {q.record_key: q for b in batches for q in b.quarantined}
    bad = quarantined.pop(first.src_order_no)
    assert bad.field == "status" and "unmapped status value '99'" in bad.reason
    assert json.loads(bad.raw)["stockout_no"] == first.stockout_no
    if wms.engine.dialect.name != "postgresql":
        zero = quarantined.pop(second.src_order_no)
        assert zero.field == "pick_time" and "'0000-00-00 00:00:00' is not a time" in zero.reason
    assert not quarantined
    assert first.src_order_no not in {o.raw_order_id for b in batches for o in b.observations}


def test_unreachable_database_raises_source_unavailable():
    url = "postgresql+psycopg://sentinel:s3cr3t-pw@127.0.0.1:1/wms"
    col = SqlCollector("wms", source(url, timeout="2s"))
    with pytest.raises(SourceUnavailable) as err:
        list(col.poll(None, datetime(2026, 2, 12, tzinfo=UTC)))
    assert "s3cr3t-pw" not in str(err.value) and "s3cr3t-pw" not in repr(col)
    mysql = SqlCollector("wms", source("mysql+pymysql://root:s3cr3t-pw@127.0.0.1:1/wms", timeout="2s"))
    with pytest.raises(SourceUnavailable):
        list(mysql.poll(None, datetime(2026, 2, 12, tzinfo=UTC)))


def test_configuration_mistakes_are_config_errors(tmp_path, world):
    db = WmsDatabase(f"sqlite:///{tmp_path / 'wms.db'}")
    db.create()
    db.sync(world, world.end)
    url = str(db.engine.url)
    with pytest.raises(SourceConfigError, match="cursor_field 'updated_at' is not a result column"):
        list(SqlCollector("wms", source(url, cursor_field="updated_at")).poll(None, world.end))
    with pytest.raises(SourceConfigError, match="no such table"):
        list(
            SqlCollector("wms", source(url, query="SELECT * FROM nope WHERE t >= :since")).poll(
                None, world.end
            )
        )
    db.close()


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_slow_queries_raise_source_timeout(request, server):
    url = request.getfixturevalue("mysql_url" if server == "mariadb" else "pg_url")
    query = {
        "mariadb": "SELECT SLEEP(2) AS modified FROM DUAL WHERE :since IS NOT NULL",
        "postgresql": "SELECT pg_sleep(2) AS modified WHERE CAST(:since AS timestamp) IS NOT NULL",
    }[server]
    col = SqlCollector("wms", source(url, query=query, timeout="200ms"))
    with pytest.raises(SourceTimeout):
        list(col.poll(None, datetime(2026, 2, 12, tzinfo=UTC)))
