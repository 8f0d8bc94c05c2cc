"""The status cube and its drill-down, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collectors.types import Batch, Observation
from metrics.cube import CellSpec, CubeError, cell_orders, status_cube

T0 = datetime(2026, 2, 12, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai


def ob(raw: str, state: str, minutes: float, channel: str = "tmall", **dims) -> Observation:
    return Observation("wms", f"{raw}|{state}", channel, raw, state, T0 + timedelta(minutes=minutes), dims)


@pytest.fixture
def world(store):
    """Picked orders in two warehouses at 09:xx and 10:xx, one picked yesterday, one packed."""
    store.ingest(
        Batch(
            "wms",
            [
                ob("1", "picked", 5, warehouse="WH-HZ"),
                ob("2", "picked", 20, warehouse="WH-HZ"),
                ob("3", "picked", 70, "jd", warehouse="WH-GZ"),
                ob("4", "picked", 75, warehouse="WH-HZ"),
                ob("5", "picked", -24 * 60, warehouse="WH-GZ"),
                ob("6", "picked", 10, warehouse="WH-GZ"),
                ob("6", "packed", 30, warehouse="WH-GZ"),
                ob("7", "picked", 15),  # no warehouse known
            ],
        ),
        T0 + timedelta(hours=2),
    )
    return store


def test_in_state_cube_counts_where_orders_pile_up(world):
    cube = status_cube(
        world.engine,
        state="picked",
        dimension="warehouse",
        granularity="1h",
        since=T0,
        until=T0 + timedelta(hours=2),
    )
    assert cube.buckets == (T0, T0 + timedelta(hours=1))
    assert cube.values == ("WH-HZ", "WH-GZ", "")  # most orders first; "" = unknown
    assert cube.matrix() == [[2, 1], [0, 1], [1, 0]]
    assert cube.earlier == {"WH-GZ": 1}  # order 5, picked yesterday and still there


def test_entered_cube_counts_the_flow_and_days_align_to_shanghai(world):
    cube = status_cube(
        world.engine,
        state="picked",
        dimension="channel",
        granularity="1d",
        since=T0 - timedelta(days=1),
        until=T0 + timedelta(hours=2),
        measure="entered",
    )
    day = datetime(2026, 2, 11, 16, tzinfo=UTC)  # 2026-02-12 00:00 in Shanghai
    assert cube.buckets == (day - timedelta(days=1), day)
    # today: 1, 2, 4, 6 (packed since: the flow still counts it), 7 on Tmall and 3 on JD; yesterday: 5
    assert cube.counts == {("tmall", day): 5, ("jd", day): 1, ("tmall", day - timedelta(days=1)): 1}


def test_a_cell_drills_down_to_its_orders(world):
    cell = CellSpec("picked", "warehouse", "WH-HZ", T0, T0 + timedelta(hours=1))
    orders = cell_orders(world.engine, cell)
    assert [o["raw_order_id"] for o in orders] == ["1", "2"]
    assert orders[0]["state_at"] == T0 + timedelta(minutes=5)
    unknown = cell_orders(world.engine, CellSpec("picked", "warehouse", "", T0, T0 + timedelta(hours=1)))
    assert [o["raw_order_id"] for o in unknown] == ["7"]


def test_bad_requests_name_the_field(world):
    with pytest.raises(CubeError, match="dimension: 'phone'.*granularity: '2h'"):
        status_cube(world.engine, state="picked", dimension="phone", granularity="2h", since=T0, until=T0)
