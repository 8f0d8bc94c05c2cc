"""The store: identity resolution, idempotent observations, per-order milestones, cursors,
quarantine and source health — each batch written in one transaction with its cursor."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from collectors.errors import SourceError
from collectors.types import DIMENSIONS, Batch, Observation, Quarantined
from store.lifecycle import RANK, STATES, milestone_column
from store.schema import (
    cursors,
    id_sequences,
    observations,
    order_ids,
    orders,
    quarantine,
    source_health,
    to_ms,
)


def _insert_sql(table, columns: list[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


_MILESTONES = [milestone_column(s) for s in STATES]
_MILESTONE_OF = {s: milestone_column(s) for s in STATES}
_DIMS = frozenset(DIMENSIONS)
_ORDER_COLS = [c.name for c in orders.c]
_UPDATE_COLS = ["state", "state_rank", "state_at", *_MILESTONES, "amount_fen", *DIMENSIONS, "updated_at"]
_ORDER_INSERT = _insert_sql(orders, _ORDER_COLS)
_ORDER_UPDATE = f"UPDATE orders SET {', '.join(f'{c} = ?' for c in _UPDATE_COLS)} WHERE global_id = ?"
_OBS_INSERT = _insert_sql(observations, ["source", "record_key", "global_id", "state", "at", "ingested_at"])


@dataclass(frozen=True)
class ChannelIdentity:
    """What identity resolution needs of a channel: its global-ID code and raw-ID pattern."""

    code: str
    id_pattern: str | None = None


@dataclass
class IngestResult:
    records: int = 0
    new_observations: int = 0
    duplicate_observations: int = 0
    quarantined: int = 0
    orders_touched: int = 0


def fingerprint(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class Store:
    """One writer per process: `ingest` calls are serialised by a lock."""

    def __init__(self, engine: Engine, channels: Mapping[str, ChannelIdentity], timezone: str) -> None:
        self.engine = engine
        self.channels = dict(channels)
        self.zone = ZoneInfo(timezone)
        self._patterns = {name: re.compile(c.id_pattern) for name, c in self.channels.items() if c.id_pattern}
        self._lock = threading.Lock()
        self._ids = _IdCache(ID_CACHE_SIZE)

    # -- reads -----------------------------------------------------------------------------
    def cursor(self, source: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(cursors.c.value).where(cursors.c.source == source)).scalar()

    def global_id(self, channel: str, raw_order_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(order_ids.c.global_id).where(
                    order_ids.c.channel == channel, order_ids.c.raw_order_id == raw_order_id
                )
            ).scalar()

    def raw_ids(self, global_id: str) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(order_ids.c.channel, order_ids.c.raw_order_id).where(
                    order_ids.c.global_id == global_id
                )
            )
            return [(r.channel, r.raw_order_id) for r in rows]

    # -- the write path -----------------------------------------------------------------------
    def ingest(self, batch: Batch, now: datetime) -> IngestResult:
        """Write one batch (observations, quarantine, cursor, health counters) atomically."""
        result = IngestResult(records=batch.records)
        with self._lock:
            with self.engine.begin() as conn:
                ids = self._write(conn, batch, result, now)
            self._ids.remember(ids)  # only once committed: a rolled-back ID must not be reused
        return result

    def _write(self, conn: Connection, batch: Batch, result: IngestResult, now: datetime) -> dict:
        """The whole batch in the caller's transaction; returns the global IDs it resolved."""
        valid, rejected = self._validate_identity(batch.observations)
        ids = self._resolve_ids(conn, valid)
        new = self._insert_observations(conn, valid, ids, now)
        result.new_observations = len(new)
        result.duplicate_observations = len(valid) - len(new)
        result.orders_touched = self._merge_orders(conn, new, ids, now)
        result.quarantined = self._insert_quarantine(conn, [*batch.quarantined, *rejected], now)
        if batch.cursor is not None:
            self._upsert(conn, cursors, {"source": batch.source}, {"value": batch.cursor, "updated_at": now})
        self._count_health(conn, batch, result, now)
        return ids

    def _validate_identity(self, obs: Iterable[Observation]) -> tuple[list[Observation], list[Quarantined]]:
        valid, rejected = [], []
        for o in obs:
            reason = None
            if o.channel not in self.channels:
                reason = ("channel", f"unknown channel {o.channel!r}")
            elif o.state not in RANK:
                reason = ("state", f"unknown canonical state {o.state!r}")
            elif (pattern := self._patterns.get(o.channel)) and not pattern.fullmatch(o.raw_order_id):
                reason = ("order_id", f"{o.raw_order_id!r} does not match the {o.channel} id pattern")
            if reason is None:
                valid.append(o)
            else:
                raw = json.dumps(
                    {
                        "channel": o.channel,
                        "order_id": o.raw_order_id,
                        "state": o.state,
                        "at": o.at.isoformat(),
                    },
                    ensure_ascii=False,
                )
                rejected.append(
                    Quarantined(o.source, o.record_key, reason[0], f"field {reason[0]}: {reason[1]}", raw)
                )
        return valid, rejected

    def _resolve_ids(self, conn: Connection, obs: list[Observation]) -> dict[tuple[str, str], str]:
        """Global ID for every (channel, raw id); new ones get {CODE}_{YYYYMMDD}_{SEQ}."""
        wanted: dict[tuple[str, str], Observation] = {}
        for o in obs:
            wanted.setdefault((o.channel, o.raw_order_id), o)
        if not wanted:
            return {}
        known = {k: self._ids[k] for k in wanted if k in self._ids}
        raw = sorted({k[1] for k in wanted if k not in known})
        for chunk in _chunks(raw, 500):
            sql = f"SELECT channel, raw_order_id, global_id FROM order_ids WHERE raw_order_id IN ({', '.join('?' * len(chunk))})"
            for channel, raw_id, gid in _driver_rows(conn, sql, chunk):
                if (channel, raw_id) in wanted:
                    known[(channel, raw_id)] = gid
        fresh = [k for k in wanted if k not in known]
        if not fresh:
            return known
        by_prefix: dict[str, list[tuple[str, str]]] = {}
        for key in fresh:
            o = wanted[key]
            day = (o.created_at or o.at).astimezone(self.zone).strftime("%Y%m%d")
            by_prefix.setdefault(f"{self.channels[key[0]].code}_{day}", []).append(key)
        rows = conn.execute(
            select(id_sequences.c.prefix, id_sequences.c.last_seq)
            .where(id_sequences.c.prefix.in_(list(by_prefix)))
            .with_for_update()
        )
        last = {r.prefix: r.last_seq for r in rows}
        mapping_rows, seq_new, seq_upd = [], [], []
        for prefix, keys in sorted(by_prefix.items()):
            start = last.get(prefix, 0)
            for i, key in enumerate(sorted(keys, key=lambda k: (wanted[k].created_at or wanted[k].at, k[1]))):
                gid = f"{prefix}_{start + i + 1:06d}"
                known[key] = gid
                mapping_rows.append({"channel": key[0], "raw_order_id": key[1], "global_id": gid})
            (seq_upd if prefix in last else seq_new).append({"p": prefix, "s": start + len(keys)})
        conn.execute(insert(order_ids), mapping_rows)
        if seq_new:
            conn.execute(insert(id_sequences), [{"prefix": r["p"], "last_seq": r["s"]} for r in seq_new])
        if seq_upd:
            conn.execute(
                update(id_sequences)
                .where(id_sequences.c.prefix == bindparam("p"))
                .values(last_seq=bindparam("s")),
                seq_upd,
            )
        return known

    def _insert_observations(
        self, conn: Connection, obs: list[Observation], ids: dict[tuple[str, str], str], now: datetime
    ) -> list[Observation]:
        by_key: dict[tuple[str, str], Observation] = {}
        for o in obs:
            by_key.setdefault((o.source, o.record_key), o)
        existing: set[tuple[str, str]] = set()
        for source in {k[0] for k in by_key}:
            keys = sorted(k[1] for k in by_key if k[0] == source)
            for chunk in _chunks(keys, 500):
                sql = f"SELECT record_key FROM observations WHERE source = ? AND record_key IN ({', '.join('?' * len(chunk))})"
                existing.update((source, r[0]) for r in _driver_rows(conn, sql, [source, *chunk]))
        new = [o for k, o in by_key.items() if k not in existing]
        now_ms = to_ms(now)
        _driver_many(
            conn,
            _OBS_INSERT,
            [
                (o.source, o.record_key, ids[(o.channel, o.raw_order_id)], o.state, to_ms(o.at), now_ms)
                for o in new
            ],
        )
        return new

    def _merge_orders(
        self, conn: Connection, obs: list[Observation], ids: dict[tuple[str, str], str], now: datetime
    ) -> int:
        """Fold observations into one row per order: earliest time per milestone, highest state."""
        if not obs:
            return 0
        touched: dict[str, list[Observation]] = {}
        for o in obs:
            touched.setdefault(ids[(o.channel, o.raw_order_id)], []).append(o)
        current: dict[str, dict] = {}
        for chunk in _chunks(sorted(touched), 500):
            sql = f"SELECT {', '.join(_ORDER_COLS)} FROM orders WHERE global_id IN ({', '.join('?' * len(chunk))})"
            for row in _driver_rows(conn, sql, chunk):
                current[row[0]] = dict(zip(_ORDER_COLS, row, strict=True))
        now_ms = to_ms(now)
        inserts, updates = [], []
        for gid, items in touched.items():
            row = current.get(gid)
            is_new = row is None
            if is_new:
                first = items[0]
                row = dict.fromkeys(_ORDER_COLS)
                row.update(
                    global_id=gid,
                    channel=first.channel,
                    raw_order_id=first.raw_order_id,
                    first_seen_at=now_ms,
                )
            before = dict(row)
            for o in sorted(items, key=lambda x: x.at):  # the latest dimension value wins
                at = to_ms(o.at)
                col = milestone_column(o.state)
                if row[col] is None or at < row[col]:
                    row[col] = at
                if o.state == "created" or o.created_at is not None:
                    created = to_ms(o.created_at) if o.created_at is not None else at
                    if row["created_at"] is None or created < row["created_at"]:
                        row["created_at"] = created
                for dim, value in o.dims.items():
                    if value and dim in _DIMS:
                        row[dim] = value
                if o.amount_fen is not None and row["amount_fen"] is None:
                    row["amount_fen"] = o.amount_fen
            best = max((s for s in STATES if row[_MILESTONE_OF[s]] is not None), key=RANK.__getitem__)
            row["state"], row["state_rank"], row["state_at"] = best, RANK[best], row[_MILESTONE_OF[best]]
            if is_new:
                row["updated_at"] = now_ms
                inserts.append(tuple(row[c] for c in _ORDER_COLS))
            elif row != before:
                row["updated_at"] = now_ms
                updates.append(tuple(row[c] for c in _UPDATE_COLS) + (gid,))
        _driver_many(conn, _ORDER_INSERT, inserts)
        _driver_many(conn, _ORDER_UPDATE, updates)
        return len(inserts) + len(updates)

    def _insert_quarantine(self, conn: Connection, items: list[Quarantined], now: datetime) -> int:
        if not items:
            return 0
        fresh: dict[tuple[str, str], dict] = {}
        for q in items:
            fp = fingerprint(f"{q.record_key}\n{q.reason}\n{q.raw}")
            fresh.setdefault(
                (q.source, fp),
                {
                    "source": q.source,
                    "record_key": q.record_key[:255],
                    "fingerprint": fp,
                    "field": q.field[:255],
                    "reason": q.reason,
                    "raw": q.raw,
                    "at": now,
                },
            )
        for source in {k[0] for k in fresh}:
            fps = [k[1] for k in fresh if k[0] == source]
            rows = conn.execute(
                select(quarantine.c.fingerprint).where(
                    quarantine.c.source == source, quarantine.c.fingerprint.in_(fps)
                )
            )
            for r in rows:
                fresh.pop((source, r.fingerprint), None)
        if fresh:
            conn.execute(insert(quarantine), list(fresh.values()))
        return len(fresh)

    # -- source health ------------------------------------------------------------------------
    def _health_row(self, conn: Connection, source: str) -> dict:
        row = conn.execute(select(source_health).where(source_health.c.source == source)).mappings().first()
        if row is not None:
            return dict(row)
        fresh = {
            "source": source,
            "up": False,
            "consecutive_failures": 0,
            "records_total": 0,
            "observations_total": 0,
            "quarantined_total": 0,
            "errors_json": "{}",
        }
        conn.execute(insert(source_health).values(**fresh))
        return fresh

    def _count_health(self, conn: Connection, batch: Batch, result: IngestResult, now: datetime) -> None:
        row = self._health_row(conn, batch.source)
        values = {
            "records_total": row["records_total"] + batch.records,
            "observations_total": row["observations_total"] + result.new_observations,
            "quarantined_total": row["quarantined_total"] + result.quarantined,
        }
        if batch.max_event_at is not None:
            values["lag_seconds"] = max(0.0, (now - batch.max_event_at).total_seconds())
        conn.execute(update(source_health).where(source_health.c.source == batch.source).values(**values))

    def record_poll_success(self, source: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            self._health_row(conn, source)
            conn.execute(
                update(source_health)
                .where(source_health.c.source == source)
                .values(up=True, last_attempt_at=now, last_success_at=now, consecutive_failures=0)
            )

    def record_poll_failure(self, source: str, error: SourceError, now: datetime) -> None:
        """One place turns a typed failure into health state (message is secret-free by contract)."""
        with self.engine.begin() as conn:
            row = self._health_row(conn, source)
            counts = json.loads(row["errors_json"] or "{}")
            counts[error.error_class] = counts.get(error.error_class, 0) + 1
            conn.execute(
                update(source_health)
                .where(source_health.c.source == source)
                .values(
                    up=False,
                    last_attempt_at=now,
                    last_error_at=now,
                    last_error_class=error.error_class,
                    last_error=str(error)[:2000],
                    consecutive_failures=row["consecutive_failures"] + 1,
                    errors_json=json.dumps(counts, sort_keys=True),
                )
            )

    def health(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(select(source_health).order_by(source_health.c.source)).mappings()
            ]

    @staticmethod
    def _upsert(conn: Connection, table, key: dict, values: dict) -> None:
        cond = [table.c[k] == v for k, v in key.items()]
        done = conn.execute(update(table).where(*cond).values(**values)).rowcount
        if not done:
            conn.execute(insert(table).values(**key, **values))


ID_CACHE_SIZE = 200_000  # (channel, raw id) -> global id of recently seen orders; ~50 MB at most


class _IdCache(OrderedDict):
    """A bounded LRU of committed identity mappings (they never change once written)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, ids: Mapping[tuple[str, str], str]) -> None:
        for key, gid in ids.items():
            self[key] = gid
            self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _driver_rows(conn: Connection, sql: str, params: tuple | list) -> list[tuple]:
    """A SELECT through the DB-API driver: raw values, none of SQLAlchemy's per-row processing."""
    return list(conn.exec_driver_sql(sql.replace("?", _placeholder(conn)), tuple(params)))


def _driver_many(conn: Connection, sql: str, rows: list[tuple]) -> None:
    """executemany through the DB-API driver (the hot write path: ints and strings only)."""
    if rows:
        conn.exec_driver_sql(sql.replace("?", _placeholder(conn)), rows)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
