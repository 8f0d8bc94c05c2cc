"""The diagnostic SQL probe is read-only, parameterised and time-limited: writes, stacked statements
and injected parameters fail or do nothing; a slow statement is stopped (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from diagnose_world import T0, World
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from diagnose.sql import ProbeError, ProbeTimeout, ReadOnlySql, run_probe

SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000000) "
    "SELECT count(*) FROM c"
)


@pytest.fixture
def filled(store):
    world = World()
    for i in range(20):
        world.order(i)
    world.write(store, T0 + timedelta(hours=1))
    return store


def order_count(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM orders")).scalar_one()


def test_returns_the_affected_orders_with_bound_parameters(filled):
    rows = run_probe(
        filled.engine,
        "SELECT global_id FROM orders WHERE channel = :channel AND paid_at >= :since ORDER BY global_id",
        {"channel": "tmall", "since": 0},
    )
    assert len(rows) == 20 and rows[0][0].startswith("TB_")


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM orders",
        "UPDATE orders SET state = 'paid'",
        "DROP TABLE orders",
        "SELECT 1; DELETE FROM orders",
        "SELECT global_id FROM orders; DROP TABLE orders",
    ],
)
def test_statements_that_write_are_refused(filled, statement):
    with pytest.raises(ProbeError):
        run_probe(filled.engine, statement)
    assert order_count(filled) == 20


def test_a_write_hidden_in_a_select_fails_in_the_database(filled):
    """Past the statement check, the database itself refuses: read-only transaction / query_only."""
    sneaky = "WITH gone AS (DELETE FROM orders RETURNING global_id) SELECT count(*) FROM gone"
    with pytest.raises(ProbeError):
        run_probe(filled.engine, sneaky)
    with ReadOnlySql(filled.engine) as ro, pytest.raises(DBAPIError, match="(?i)read.?only"):
        ro._conn.exec_driver_sql("DELETE FROM orders")  # even the raw connection cannot write
    assert order_count(filled) == 20


@pytest.mark.parametrize(
    "value", ["tmall' OR '1'='1", "x'; DELETE FROM orders; --", 'tmall"); DROP TABLE orders; --']
)
def test_injected_parameters_are_plain_values(filled, value):
    rows = run_probe(
        filled.engine, "SELECT global_id FROM orders WHERE channel = :channel", {"channel": value}
    )
    assert rows == []
    assert order_count(filled) == 20


def test_a_slow_statement_is_stopped_and_the_connection_is_writable_again(filled):
    with pytest.raises(ProbeTimeout):
        run_probe(filled.engine, SLOW, timeout_s=0.3)
    # The pooled connection went back without the read-only mode: the store still writes.
    world = World()
    world.order(500)
    world.write(filled, T0 + timedelta(hours=2))
    assert order_count(filled) == 21
