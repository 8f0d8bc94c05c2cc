"""Engine creation (SQLite WAL by default, PostgreSQL by URL) and schema setup.

SQLite memory: one page-cache budget for the whole process instead of one per connection. Every
connection may cache up to SQLITE_HEAP_LIMIT_MB of pages, and SQLite's soft heap limit (process-wide:
every pooled connection of every engine, and any other SQLite database the process opens) makes a
connection recycle its own least recently used pages rather than allocate more once the process's
SQLite heap reaches that budget. The pool hands out the most recently used connection first (LIFO),
so the busy writer keeps its warm cache and the rarely needed extra connections stay cold.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import re
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from store.schema import metadata

SQLITE_HEAP_LIMIT_MB = 64  # the process's SQLite heap budget, page caches included
# SQLite keeps up to a connection's cache_size of a sort (GROUP BY, ORDER BY) in memory before it spills
# to a temp file, on top of the cached pages and past the soft heap limit: a statement that sorts a
# week of orders ran the process up by the whole budget again. Such statements run with this cache.
SQLITE_SORT_CACHE_MB = 16
WAL_CHECKPOINT_PAGES = 400_000  # SQLite: checkpoint once the WAL holds this many pages (1.6 GB)


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for the store; SQLite gets WAL, a busy timeout, the shared heap budget and its
    folder created; pools hand out the most recently used connection first."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = not parsed.database or parsed.database == ":memory:"
        if not memory:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            if "poolclass" not in kwargs:  # a file database is pooled (QueuePool)
                kwargs.setdefault("pool_use_lifo", True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        budget_kib = SQLITE_HEAP_LIMIT_MB * 1024

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # The ingest rewrites pages of recent orders batch after batch: one connection may cache
            # the whole budget, but the soft heap limit caps what all of them hold together.
            cursor.execute(f"PRAGMA cache_size=-{budget_kib}")
            cursor.execute(f"PRAGMA soft_heap_limit={budget_kib * 1024}")
            # A bulk ingest commits ~50,000 pages of the same hot orders each time: checkpointing after
            # every commit copies them all back each time; letting the WAL hold several commits
            # copies each hot page once for all of them (Store.flush checkpoints when the writes pause
            # after a group's worth of orders, and the WAL file is cut back to 64 MB after).
            cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit={64 << 20}")
            cursor.close()

        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_use_lifo", True)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def driver_rows(conn: Connection, sql: str, **params) -> list[tuple]:
    """Run `sql` (named :params) on the DB-API cursor: plain tuples, no per-row processing."""
    if conn.dialect.paramstyle == "qmark":
        names = _PARAM.findall(sql)
        sql, args = _PARAM.sub("?", sql), tuple(params[n] for n in names)
    else:
        sql, args = _PARAM.sub(r"%(\1)s", sql), params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, args)
        return cursor.fetchall()
    finally:
        cursor.close()


_PARAM = re.compile(r"(?<![:\w]):(\w+)")  # a :name parameter, not a ::cast


@contextlib.contextmanager
def small_sorts(conn: Connection) -> Iterator[None]:
    """Run the statements inside with at most SQLITE_SORT_CACHE_MB of page cache on this SQLite
    connection (and so of in-memory sort), then give it back its own size; a no-op elsewhere. The
    pages over it are dropped: for statements that scan and sort most of a table once (the KPI
    full load's hour cells of a long window), not the ingest."""
    if conn.dialect.name != "sqlite":
        yield
        return
    size = driver_rows(conn, "PRAGMA cache_size")[0][0]
    small = -SQLITE_SORT_CACHE_MB * 1024
    if small <= size < 0:  # already that small (negative: KiB)
        yield
        return
    conn.exec_driver_sql(f"PRAGMA cache_size={small}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={size}")


def checkpoint(engine: Engine) -> None:
    """Copy a SQLite WAL's pages into the database now, without waiting for readers (PASSIVE); a
    no-op elsewhere."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def init_schema(engine: Engine) -> None:
    """Create missing tables, and add the nullable columns a store written by an older version lacks."""
    metadata.create_all(engine)
    inspector = inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present and column.nullable:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")


@functools.cache
def _sqlite_library() -> ctypes.CDLL | None:
    """The SQLite library Python's sqlite3 module runs on (for its process-wide memory figures)."""
    try:
        import _sqlite3

        library = ctypes.CDLL(_sqlite3.__file__)  # its symbols resolve into the linked libsqlite3
        library.sqlite3_memory_used.restype = ctypes.c_int64
        library.sqlite3_memory_highwater.restype = ctypes.c_int64
        library.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
        return library
    except (ImportError, OSError, AttributeError):  # a static build without exported symbols
        return None


def sqlite_heap_mb() -> float | None:
    """Bytes of heap SQLite holds in this process now (every connection, page caches included), in
    MB; None where the library's figures cannot be read."""
    library = _sqlite_library()
    return None if library is None else library.sqlite3_memory_used() / (1 << 20)


def sqlite_heap_peak_mb() -> float | None:
    """The highest SQLite heap of this process so far, in MB (None: not readable)."""
    library = _sqlite_library()
    return None if library is None else library.sqlite3_memory_highwater(0) / (1 << 20)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        library = ctypes.CDLL("libc.so.6")
        library.malloc_trim.argtypes = [ctypes.c_size_t]
        return library
    except (OSError, AttributeError):  # not glibc
        return None


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc malloc_trim): the writer thread and
    the planning thread allocate from separate malloc arenas, whose freed pages otherwise stay
    resident. A no-op where the C library has no malloc_trim."""
    library = _libc()
    if library is not None:
        library.malloc_trim(0)
