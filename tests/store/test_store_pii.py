"""Buyer data from the mapping to its own table, through the store's write path (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from collectors.mapping import MappingConfig, RecordMapper
from collectors.types import Batch
from store.db import init_schema, make_engine
from store.schema import order_pii, orders
from store.store import ChannelIdentity, Store

NOW = datetime(2026, 2, 12, 2, 0, tzinfo=UTC)
MAPPING = MappingConfig(
    order_id="tid",
    status="status",
    status_time="modified",
    status_map={"PAID": "paid", "SHIPPED": "shipped"},
    pii={"buyer_name": "receiver.name", "phone": "receiver.mobile", "address": "receiver.address"},
)


def record(status: str, minute: int, **receiver) -> dict:
    return {
        "tid": "1234567890",
        "status": status,
        "modified": f"2026-02-12 09:{minute:02d}:00",
        "receiver": receiver,
    }


@pytest.fixture
def store(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    yield Store(engine, {"tmall": ChannelIdentity("TB")}, "Asia/Shanghai")
    engine.dispose()


def test_mapping_reads_optional_pii_fields():
    mapper = RecordMapper("tmall", MAPPING, channel="tmall")
    (obs,) = mapper.map(record("PAID", 1, name="张三", mobile="13812345678"))
    assert obs.pii == {"buyer_name": "张三", "phone": "13812345678"}  # address missing: left out
    (bare,) = RecordMapper("tmall", MAPPING.model_copy(update={"pii": {}}), channel="tmall").map(
        record("PAID", 1)
    )
    assert bare.pii == {}
    with pytest.raises(ValueError, match="unknown personal data"):
        MappingConfig(order_id="tid", pii={"email": "x"})


def test_store_keeps_the_latest_non_empty_value_per_field_apart_from_orders(store):
    mapper = RecordMapper("tmall", MAPPING, channel="tmall")
    first = mapper.map(
        record("PAID", 1, name="张三", mobile="13812345678", address="浙江省杭州市西湖区文三路90号")
    )
    store.ingest(Batch("tmall", first, records=1), NOW)
    store.ingest(Batch("tmall", first, records=1), NOW + timedelta(minutes=1))  # a repeat: nothing changes
    later = mapper.map(record("SHIPPED", 9, mobile="13900001111"))  # address change not pushed, name absent
    store.ingest(Batch("tmall", later, records=1), NOW + timedelta(minutes=2))
    with store.engine.connect() as conn:
        rows = conn.execute(select(order_pii)).all()
        order_columns = set(conn.execute(select(orders)).mappings().one())
    assert len(rows) == 1
    row = rows[0]
    assert (row.buyer_name, row.phone, row.address) == ("张三", "13900001111", "浙江省杭州市西湖区文三路90号")
    assert row.global_id.startswith("TB_20260212_")
    assert not {"phone", "buyer_name", "address"} & order_columns
