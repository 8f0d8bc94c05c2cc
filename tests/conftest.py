"""Shared fixtures: real databases (throwaway databases per test), clocks."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sentinel.clock import ManualClock

PG_ENV = "SENTINEL_TEST_PG_URL"  # e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres
MYSQL_ENV = "SENTINEL_TEST_MYSQL_URL"  # e.g. mysql+pymysql://root@127.0.0.1:3306/test


def _throwaway_database(env: str, quote: str):
    url = os.environ.get(env)
    if not url:
        pytest.skip(f"{env} is not set: no server to run this test on")
    name = f"sentinel_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
        if quote == '"':  # tests judge transactions, not a server crash: commits need not wait for fsync
            conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if quote == '"':
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture
def pg_url():
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    yield from _throwaway_database(PG_ENV, '"')


@pytest.fixture
def mysql_url():
    """URL of a fresh, empty MariaDB database, dropped after the test."""
    yield from _throwaway_database(MYSQL_ENV, "`")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The store URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def clock():
    return ManualClock(datetime(2026, 2, 12, 10, 0, tzinfo=UTC))
