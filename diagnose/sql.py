"""The SQL probe: parameterised SELECTs in one read-only transaction, each under a time limit.

PostgreSQL: `SET TRANSACTION READ ONLY` and `SET LOCAL statement_timeout`. SQLite: `PRAGMA
query_only` for the connection's use and a progress handler that interrupts a statement past its
deadline. Statements are single SELECT/WITH statements with bound parameters only; anything that
would write fails in the database itself, not just in the check here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

DEFAULT_TIMEOUT_S = 5.0
_READS = re.compile(r"^\s*(SELECT|WITH)\b", re.IGNORECASE)
SQLITE_MMAP = 1 << 30  # bytes of the database file a probe connection may map while it reads
_PROGRESS_STEPS = 20_000  # SQLite VM instructions between deadline checks


class ProbeError(Exception):
    """A probe statement was refused or failed (not read-only, timed out, invalid)."""


class ProbeTimeout(ProbeError):
    pass


def check_statement(sql: str) -> str:
    """One SELECT (or WITH … SELECT) statement, else ProbeError; a trailing semicolon is dropped."""
    body = sql.strip().rstrip(";").strip()
    if not _READS.match(body):
        raise ProbeError("diagnostic SQL must be a single SELECT statement")
    if ";" in body:
        raise ProbeError("diagnostic SQL must be a single statement (no ';')")
    return body


class ReadOnlySql:
    """`with ReadOnlySql(engine) as sql: sql.rows("SELECT … WHERE x = :x", x=1)`."""

    def __init__(self, engine: Engine, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.sqlite = engine.dialect.name == "sqlite"
        self.statements = 0
        self._conn = None
        self._deadline = 0.0

    def __enter__(self) -> ReadOnlySql:
        self._conn = self.engine.connect()
        try:
            if self.sqlite:
                raw = self._conn.connection.driver_connection
                raw.execute("PRAGMA query_only = ON")
                raw.execute(f"PRAGMA mmap_size = {SQLITE_MMAP}")  # scans read pages in place
                raw.set_progress_handler(self._interrupt, _PROGRESS_STEPS)
                self._conn.begin()
            else:
                self._conn.begin()
                self._conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                ms = max(1, int(self.timeout_s * 1000))
                self._conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        except Exception:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.sqlite:
                conn.connection.driver_connection.set_progress_handler(None, 0)
            conn.rollback()
            if self.sqlite:
                conn.connection.driver_connection.execute("PRAGMA query_only = OFF")
                conn.connection.driver_connection.execute("PRAGMA mmap_size = 0")
        finally:
            conn.close()

    def _interrupt(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def rows(self, sql: str, params: Mapping[str, Any] | None = None, /, **kw: Any) -> list[tuple]:
        """Run one parameterised SELECT; its rows as tuples."""
        if self._conn is None:
            raise ProbeError("ReadOnlySql used outside its `with` block")
        body = check_statement(sql)
        self._deadline = time.monotonic() + self.timeout_s
        self.statements += 1
        try:
            result = self._conn.execute(text(body), {**(params or {}), **kw})
            return [tuple(r) for r in result]
        except DBAPIError as exc:
            message = str(exc.orig)
            if "interrupted" in message or "statement timeout" in message or "canceling statement" in message:
                raise ProbeTimeout(f"diagnostic SQL exceeded {self.timeout_s:g} s") from exc
            raise ProbeError(f"diagnostic SQL failed: {message.splitlines()[0]}") from exc

    def scalars_many(self, sql: str, params: list[tuple]) -> list:
        """One parameterised SELECT run once per tuple of positional `?` parameters on the driver's
        cursor (many point lookups, none of the per-call overhead); the first column of each."""
        if self._conn is None:
            raise ProbeError("ReadOnlySql used outside its `with` block")
        body = check_statement(sql)
        if not self.sqlite:
            body = body.replace("?", "%s")
        cursor = self._conn.connection.driver_connection.cursor()
        self._deadline = time.monotonic() + self.timeout_s
        try:
            out = []
            for args in params:
                cursor.execute(body, args)
                out.append(cursor.fetchone()[0])
            return out
        except Exception as exc:
            raise ProbeError(f"diagnostic SQL failed: {str(exc).splitlines()[0]}") from exc
        finally:
            cursor.close()


def run_probe(
    engine: Engine, sql: str, params: Mapping[str, Any] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[tuple]:
    """One ad-hoc read-only, parameterised, time-limited statement (its own transaction)."""
    with ReadOnlySql(engine, timeout_s) as ro:
        return ro.rows(sql, params or {})
