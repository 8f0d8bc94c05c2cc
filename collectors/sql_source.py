"""Generic SQL source: a configured SELECT with a `:since` parameter, read incrementally.

The cursor is the newest value of `cfg.cursor_field` seen (ISO 8601, UTC). Each poll re-reads
from `cursor - cfg.overlap` so rows committed late are not missed; the store drops repeats.
Naive DB times are taken in the mapping's timezone, and the session time zone is set to it so
`:since` compares right against both naive and zone-aware columns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from collectors.errors import (
    AuthExpired,
    SchemaError,
    SourceConfigError,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from collectors.mapping import RecordMapper
from collectors.types import Batch, Quarantined, json_default
from sentinel.config import SourceConfig

log = logging.getLogger("collectors.sql_source")
# Driver error codes meaning "the statement ran out of time" (MySQL/MariaDB, PostgreSQL SQLSTATE).
_MYSQL_TIMEOUTS = {
    1317,
    1969,
    2013,
    3024,
}  # interrupted, max_statement_time, lost during query, max_execution_time
_PG_TIMEOUTS = {"57014"}  # query_canceled (statement_timeout)
# A refused login: the source's password was changed, expired or its account locked. A person must
# renew the credential; retrying would only lock the account or fill the server's log.
_MYSQL_LOGIN_REFUSED = {
    1045,  # access denied for user (wrong password)
    1698,  # access denied (no password given)
    1820,  # the password must be changed before anything else
    1862,  # the password has expired
    3118,  # MySQL: the account is locked
    4151,  # MariaDB: the account is locked
}
# PostgreSQL class 28 (invalid_authorization_specification, invalid_password); libpq reports a
# failed connection's refusal as text only, so these phrases name it too.
_PG_LOGIN_REFUSED = ("28000", "28P01")
_LOGIN_REFUSED_TEXT = (
    "password authentication failed",
    "is not permitted to log in",
    "no pg_hba.conf entry",
)
_SQLITE_QUERY_ERRORS = ("no such table", "no such column", "near ")  # SQLite reports these as operational


def parse_cursor(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        moment = datetime.fromisoformat(cursor)
    except ValueError:
        log.warning("ignoring unreadable SQL cursor %r; using the initial lookback", cursor[:100])
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class SqlCollector:
    """Polls any SQLAlchemy database with `cfg.query`; rows map through `RecordMapper`."""

    def __init__(
        self, name: str, cfg: SourceConfig, mapper: RecordMapper | None = None, engine: Engine | None = None
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.mapper = mapper or RecordMapper(name, cfg.mapping, channel=cfg.channel)
        self.zone = ZoneInfo(cfg.mapping.timezone)
        self._engine = engine
        self._secret = self._password(cfg.url)

    def __repr__(self) -> str:
        return f"SqlCollector({self.name!r}, {self.safe_url})"

    @property
    def safe_url(self) -> str:
        try:
            return make_url(self.cfg.url or "").render_as_string(hide_password=True)
        except sa_exc.ArgumentError:
            return "<invalid url>"

    @staticmethod
    def _password(url: str | None) -> str | None:
        try:
            return make_url(url).password if url else None
        except sa_exc.ArgumentError:
            return None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if not self.cfg.url:
                raise SourceConfigError(self.name, "url is not set")
            try:
                url = make_url(self.cfg.url)
            except sa_exc.ArgumentError:
                raise SourceConfigError(self.name, f"url is not an SQLAlchemy URL: {self.safe_url}") from None
            seconds = max(1, int(self.cfg.timeout.total_seconds()))
            connect_args = {}
            if url.get_backend_name() in ("mysql", "mariadb"):
                connect_args = {"connect_timeout": seconds, "read_timeout": seconds * 3}
            elif url.get_backend_name() == "postgresql":
                connect_args = {"connect_timeout": seconds}
            self._engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        return self._engine

    # -- polling -------------------------------------------------------------------------
    def since(self, cursor: str | None, now: datetime) -> datetime:
        """Aware UTC lower bound of this poll: cursor minus overlap, or now minus the lookback."""
        last = parse_cursor(cursor)
        moment = now - self.cfg.initial_lookback if last is None else last - self.cfg.overlap
        return moment.astimezone(UTC).replace(microsecond=0)

    def poll(self, cursor: str | None, now: datetime) -> Iterator[Batch]:
        """Yield batches of mapped rows; only the last batch carries the new cursor."""
        if not self.cfg.query or not self.cfg.cursor_field:
            raise SourceConfigError(
                self.name, "query (with :since) and cursor_field are required for kind 'sql'"
            )
        last = parse_cursor(cursor)
        newest = last
        size = self.cfg.page_size * 10
        try:
            with self.engine.connect() as conn:
                self._prepare(conn, now)
                bound = self._bind_since(conn, self.since(cursor, now))
                result = conn.execution_options(stream_results=True, max_row_buffer=size).execute(
                    text(self.cfg.query), {"since": bound}
                )
                columns = list(result.keys())
                if self.cfg.cursor_field not in columns:
                    raise SourceConfigError(
                        self.name,
                        f"cursor_field {self.cfg.cursor_field!r} is not a result column; columns: {columns}",
                    )
                pending: Batch | None = None
                while rows := result.fetchmany(size):
                    batch = self._map([dict(zip(columns, row, strict=True)) for row in rows])
                    if batch.max_event_at is not None and (newest is None or batch.max_event_at > newest):
                        newest = batch.max_event_at
                    if pending is not None:
                        yield pending
                    pending = batch
                if pending is not None:
                    if newest is not None and newest > now:
                        newest = (
                            max(now.astimezone(UTC), last) if last else now.astimezone(UTC)
                        )  # skewed source
                    if newest is not None and newest != last:
                        pending.cursor = newest.isoformat()
                    yield pending
        except SourceError:
            raise
        except sa_exc.DBAPIError as exc:
            raise self._classify(exc) from None
        except sa_exc.TimeoutError:
            raise SourceTimeout(self.name, "timed out waiting for a database connection") from None

    def _prepare(self, conn: Connection, now: datetime) -> None:
        """Session time zone = the mapping's zone; a statement timeout of cfg.timeout."""
        backend = conn.dialect.name
        ms = int(self.cfg.timeout.total_seconds() * 1000)
        if backend == "postgresql":
            conn.exec_driver_sql(f"SET statement_timeout = {ms}")
            conn.execute(text("SELECT set_config('TimeZone', :tz, false)"), {"tz": self.cfg.mapping.timezone})
        elif backend in ("mysql", "mariadb"):
            offset = now.astimezone(self.zone).utcoffset() or timedelta(0)
            minutes = int(offset.total_seconds() // 60)
            sign = "+" if minutes >= 0 else "-"
            conn.execute(
                text("SET time_zone = :tz"), {"tz": f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"}
            )
            variable = "max_statement_time" if conn.dialect.is_mariadb else "max_execution_time"
            value = f"{ms / 1000:.3f}" if conn.dialect.is_mariadb else str(ms)
            conn.exec_driver_sql(f"SET SESSION {variable} = {value}")

    def _bind_since(self, conn: Connection, since: datetime) -> datetime | str:
        """The `:since` value as the source stores times: naive local (text on SQLite)."""
        local = since.astimezone(self.zone).replace(tzinfo=None)
        if conn.dialect.name == "sqlite":
            return local.strftime("%Y-%m-%d %H:%M:%S")
        return local

    def _map(self, rows: list[dict]) -> Batch:
        batch = Batch(self.name, records=len(rows))
        field = self.cfg.cursor_field or ""
        for row in rows:
            key = self.mapper.record_key(row)
            try:
                batch.observations.extend(self.mapper.map(row))
            except SchemaError as exc:
                raw = json.dumps(row, default=json_default, ensure_ascii=False)
                batch.quarantined.append(Quarantined(self.name, exc.record, exc.field, exc.reason, raw))
            try:
                moment = self.mapper.parse_time(row.get(field), key, field)
            except SchemaError:
                moment = None  # an unreadable cursor value cannot move the cursor
            if moment is not None and (batch.max_event_at is None or moment > batch.max_event_at):
                batch.max_event_at = moment
        return batch

    def _classify(self, exc: sa_exc.DBAPIError) -> SourceError:
        return classify_db_error(self.name, exc, self._secret)


def classify_db_error(source: str, exc: sa_exc.DBAPIError, secret: str | None = None) -> SourceError:
    """One place turning driver errors into typed source errors (`secret` masked in the message)."""
    orig = exc.orig
    message = (
        str(orig).strip().splitlines()[0] if orig is not None and str(orig).strip() else type(exc).__name__
    )
    if secret:
        message = message.replace(secret, "***")
    code = getattr(orig, "args", (None,))[0] if orig is not None else None
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    lowered = message.lower()
    if (
        code in _MYSQL_LOGIN_REFUSED
        or sqlstate in _PG_LOGIN_REFUSED
        or any(phrase in lowered for phrase in _LOGIN_REFUSED_TEXT)
    ):
        return AuthExpired(source, f"login refused: {message}")
    if sqlstate in _PG_TIMEOUTS or code in _MYSQL_TIMEOUTS or "timeout" in lowered or "timed out" in lowered:
        return SourceTimeout(source, message)
    if isinstance(exc, sa_exc.OperationalError) or exc.connection_invalidated:
        if code in (1054, 1146) or lowered.startswith(_SQLITE_QUERY_ERRORS):  # unknown table/column
            return SourceConfigError(source, message)
        return SourceUnavailable(source, message)
    if isinstance(exc, sa_exc.ProgrammingError):
        return SourceConfigError(source, message)
    return SourceUnavailable(source, message)
