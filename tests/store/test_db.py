"""The store's engines: SQLite's page caches share one budget for the whole process, pools hand
out the most recently used connection first, the WAL is checkpointed when the writes pause after
a group of orders, and big sorts stay within a small cache where asked."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from sqlalchemy import text

from collectors.types import Batch, Observation
from store import db
from store import store as store_module
from store.store import ChannelIdentity, Store

MB = 1 << 20


def test_connections_share_one_heap_budget(tmp_path, monkeypatch):
    """Four connections each scan a table three times the budget: together they hold about the
    budget, not four caches' worth (each connection alone may cache the whole budget)."""
    monkeypatch.setattr(db, "SQLITE_HEAP_LIMIT_MB", 8)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'big.db'}")
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar_one() == 8 * MB
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -8 * 1024
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
            conn.exec_driver_sql(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 24000) "
                "INSERT INTO t SELECT x, randomblob(1000) FROM c"
            )
        before = db.sqlite_heap_mb()
        assert before is not None
        held = [engine.connect() for _ in range(4)]  # four pooled connections at once
        for conn in held:
            assert conn.execute(text("SELECT sum(length(b)) FROM t")).scalar_one() == 24_000_000
        grown = db.sqlite_heap_mb() - before
        for conn in held:
            conn.close()
        assert grown < 8 + 4, f"the page caches grew by {grown:.1f} MB over an 8 MB budget"
        assert db.sqlite_heap_peak_mb() >= db.sqlite_heap_mb() > 0
    finally:
        engine.dispose()
        monkeypatch.undo()  # and the process-wide limit back to the default for the tests after this one
        restore = db.make_engine(f"sqlite:///{tmp_path / 'restore.db'}")
        with restore.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA soft_heap_limit").scalar_one() == db.SQLITE_HEAP_LIMIT_MB * MB
        restore.dispose()


def test_small_sorts_keep_a_big_sort_within_the_small_cache(tmp_path, monkeypatch):
    """A GROUP BY over ~40 MB of rows: with the connection's own 32 MB cache SQLite sorts in memory up
    to that size on top of the cached pages; inside small_sorts (4 MB) the sort spills to a temp file
    and the connection's cache size is given back after."""
    monkeypatch.setattr(db, "SQLITE_HEAP_LIMIT_MB", 32)
    monkeypatch.setattr(db, "SQLITE_SORT_CACHE_MB", 4)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'sorts.db'}")
    sort = "SELECT k, count(*) FROM t GROUP BY k ORDER BY count(*) DESC LIMIT 3"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT)")
            conn.exec_driver_sql(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
                "INSERT INTO t SELECT x, printf('%0120d', x % 250000) FROM c"
            )

        def sort_growth(conn) -> float:
            """How far the process's SQLite heap rose above where it was while the sort ran (MB)."""
            conn.exec_driver_sql("PRAGMA shrink_memory")
            before = db.sqlite_heap_mb()
            db._sqlite_library().sqlite3_memory_highwater(1)  # reset the high-water mark to now
            assert len(conn.exec_driver_sql(sort).all()) == 3
            return db.sqlite_heap_peak_mb() - before

        with engine.connect() as conn:
            assert db.sqlite_heap_mb() is not None
            own = sort_growth(conn)
            with db.small_sorts(conn):
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -4 * 1024
                small = sort_growth(conn)
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -32 * 1024
        assert own > 30, own  # the cache filled and the sort held tens of MB besides
        assert small < 12, small  # 4 MB of pages, 4 MB of sort, the merge's buffers
    finally:
        engine.dispose()


def test_small_sorts_leave_a_small_cache_alone(tmp_path):
    """A connection whose cache is already smaller keeps it (SQLite's default here: 2,000 KiB)."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA cache_size=-2000")
            with db.small_sorts(conn):
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -2000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar_one() == -2000
    finally:
        engine.dispose()


def test_the_pool_hands_out_the_most_recently_used_connection(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'lifo.db'}")
    try:
        first, second = engine.connect(), engine.connect()
        older, newer = first.connection.dbapi_connection, second.connection.dbapi_connection
        first.close()
        second.close()  # returned last
        with engine.connect() as again:
            assert again.connection.dbapi_connection is newer and newer is not older
    finally:
        engine.dispose()


def _orders_in_file_alone(tmp_path) -> int:
    """Orders the database file holds without its WAL (a copy of the file only)."""
    shutil.copy(tmp_path / "wal.db", tmp_path / "copy.db")
    copy = db.make_engine(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        with copy.connect() as conn:
            if not conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE name = 'orders'"
            ).scalar_one():
                return 0
            return conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one()
    finally:
        copy.dispose()
        (tmp_path / "copy.db").unlink()


def test_flush_checkpoints_once_a_group_of_orders_is_written(tmp_path, monkeypatch):
    """The WAL keeps several commits (no checkpoint per commit, nor per small flush: a checkpoint
    syncs the file); once CHECKPOINT_ORDERS orders rows were committed since the last checkpoint,
    Store.flush checkpoints, so the database file alone holds every order written."""
    monkeypatch.setattr(store_module, "CHECKPOINT_ORDERS", 1000)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == db.WAL_CHECKPOINT_PAGES
            assert conn.exec_driver_sql("PRAGMA journal_size_limit").scalar_one() == 64 * MB
        db.init_schema(engine)
        store = Store(engine, {"tmall": ChannelIdentity("TB")}, "Asia/Shanghai")
        at = datetime(2026, 2, 12, 12, tzinfo=UTC)
        for n in range(6):
            batch = [Observation("tmall", f"{n}-{i}", "tmall", f"{n}{i:05d}", "paid", at) for i in range(200)]
            store.submit([Batch("tmall", batch)], at)
            if n == 2:  # 600 orders: below the mark, the WAL keeps them
                store.flush()
                assert _orders_in_file_alone(tmp_path) == 0
        store.flush()  # 1,200
        assert _orders_in_file_alone(tmp_path) == 1200
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar_one() == 1200
    finally:
        engine.dispose()
