"""The store's engines: SQLite's page caches share one budget for the whole process, and pools hand
out the most recently used connection first."""

from __future__ import annotations

from sqlalchemy import text

from store import db

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
