"""The store: identity resolution, idempotent observations, per-order milestones, cursors,
quarantine and source health — each batch written in one transaction with its cursor."""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, delete, func, insert, literal, select, update

from collectors.errors import SourceError
from collectors.types import DIMENSIONS, Batch, Observation, Quarantined
from store import _planner
from store.db import checkpoint, driver_rows, trim_heap
from store.lifecycle import (
    EXITS,
    OPEN_STATES,
    OTHER_ROLE_BIT,
    RANK,
    ROLE_BITS,
    STATE_DIMENSIONS,
    STATES,
    milestone_column,
)
from store.pii import write_pii
from store.records import append as append_records
from store.records import digests as record_digests
from store.records import parse as parse_records
from store.records import stored as stored_records
from store.records import texts as record_texts
from store.schema import (
    order_ids,
    orders,
    quarantine,
    source_health,
    state_counts,
    to_ms,
)

_MILESTONES = [milestone_column(s) for s in STATES]
_TABLE_COLS = [c.name for c in orders.c]
_WIDTH = len(_TABLE_COLS)
# An order's row in memory: its orders columns, its records' key digests among them (the records'
# text stays in the database: appended to record_log, read only to confirm a digest found).
_ORDER_COLS = _TABLE_COLS
ORDER_COLUMNS = tuple(_ORDER_COLS)  # the order of the row tuples handed to change subscribers
# Positions in an orders row (the merge works on plain lists, in _ORDER_COLS order).
_POS = {s: _ORDER_COLS.index(milestone_column(s)) for s in STATES}
_DIM_POS = {d: _ORDER_COLS.index(d) for d in DIMENSIONS}
_ALL_POS = range(len(_ORDER_COLS))
_GLOBAL_ID, _CHANNEL, _RAW_ID, _STATE, _RANK, _STATE_AT, _AMOUNT, _CREATED, _FIRST_SEEN, _LAST, _UPDATED = (
    _ORDER_COLS.index(c)
    for c in ("global_id", "channel", "raw_order_id", "state", "state_rank", "state_at", "amount_fen",
              "created_at", "first_seen_at", "last_event_at", "updated_at")
)  # fmt: skip
_ROLES, _DUPS = _ORDER_COLS.index("seen_roles"), _ORDER_COLS.index("duplicate_records")
_FACTS, _KEYS = _ORDER_COLS.index("facts"), _ORDER_COLS.index("record_keys")
_TAIL = _ORDER_COLS.index("records_tail")
_PAID_AMOUNT = _ORDER_COLS.index("paid_amount_fen")
_CALLBACK_DELAY = _ORDER_COLS.index("callback_delay_ms")
_PAYMENT_ROLE = ROLE_BITS["payment"]
_MANUAL, _CHANNEL_SHIPPED = _ORDER_COLS.index("manual_at"), _ORDER_COLS.index("channel_shipped_at")
_PROGRESS = _ORDER_COLS.index("progress_at")
_CHANNEL_ROLE = ROLE_BITS["channel"]
_BIT = [1 << p for p in _ALL_POS]  # a column's bit in the fold's mask of changed columns
_SHIPPED_OR_LATER = frozenset(s for s in STATES if RANK[s] >= RANK["shipped"] and s not in EXITS)
_OPEN = frozenset(OPEN_STATES)
# The columns whose change may move an order between the open-state counts (state_counts).
_STATE_COUNT_BITS = sum(_BIT[_ORDER_COLS.index(c)] for c in ("state", *STATE_DIMENSIONS))
_STATE_DIM_POSITIONS = tuple(_ORDER_COLS.index(d) for d in STATE_DIMENSIONS)
_planner.configure(  # the compiled fold and idempotency split (store/_planner.c) work on these rows
    _WIDTH,
    (_GLOBAL_ID, _CHANNEL, _RAW_ID, _STATE, _RANK, _STATE_AT, _CREATED, _FIRST_SEEN, _ROLES, _DUPS, _LAST, _UPDATED,
     _FACTS, _KEYS, _TAIL, _PAID_AMOUNT, _AMOUNT, _CALLBACK_DELAY, _MANUAL, _CHANNEL_SHIPPED, _PROGRESS),
    _POS, _DIM_POS, RANK, _SHIPPED_OR_LATER, (OTHER_ROLE_BIT, _CHANNEL_ROLE, _PAYMENT_ROLE),
)  # fmt: skip
# The order cache keeps committed entries packed (bytes, _planner.pack_entries); the strings of these
# low-cardinality columns are one shared object per value there, up to this many values.
POOLED_STRINGS = 100_000
_planner.pack_setup((_CHANNEL, _STATE, *_DIM_POS.values(), _FACTS), POOLED_STRINGS)
_ORDER_INSERT_HEAD = f"INSERT INTO orders ({', '.join(_TABLE_COLS)})"
_ORDER_SELECT = f"SELECT {', '.join(f'o.{c}' for c in _TABLE_COLS)} FROM orders o"
_LOG_INSERT = "INSERT INTO record_log (seq, global_id, prev_seq, records)"
_STATE_COUNT_TAIL = " ON CONFLICT (state, dim, value) DO UPDATE SET n = state_counts.n + excluded.n"
_SEQ_UPSERT = " ON CONFLICT (prefix) DO UPDATE SET last_seq = excluded.last_seq"
_CURSOR_UPSERT = (
    " ON CONFLICT (source) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
# Orders rows written by committed plans before Store.flush checkpoints the WAL: about a group (GROUP_OBSERVATIONS
# in sentinel/service.py), so a bulk ingest checkpoints at each pause and small polls share one.
CHECKPOINT_ORDERS = 20_000
MAX_JOBS = 2  # plans handed to the writer and not yet committed, at most (one more is planned meanwhile)


def _update_orders(conn: Connection, positions: tuple[int, ...], rows: list[tuple]) -> None:
    """Write the given positions of whole orders rows: on SQLite an UPDATE from a VALUES list (the
    other columns' values need no binding), on PostgreSQL an upsert (VALUES typed by the table)."""
    if conn.dialect.name != "sqlite":
        _insert_rows(conn, _ORDER_INSERT_HEAD, rows, _order_upsert_tail(positions))
        return
    head, tail = _order_update_from(positions)
    _insert_rows(conn, head, rows, tail, (_GLOBAL_ID, *positions))


@functools.cache
def _positions(mask: int) -> tuple[int, ...]:
    """The row positions whose bits are set in `mask`."""
    return tuple(p for p in _ALL_POS if mask & _BIT[p])


@functools.cache
def _order_update_from(positions: tuple[int, ...]) -> tuple[str, str]:
    """UPDATE orders ... FROM (VALUES (global id, the positions' values), ...): head and tail."""
    columns = ", ".join(f"{_ORDER_COLS[p]} = v.column{i + 2}" for i, p in enumerate(positions))
    return f"UPDATE orders SET {columns} FROM (", ") AS v WHERE orders.global_id = v.column1"


@functools.cache
def _order_upsert_tail(positions: tuple[int, ...]) -> str:
    """The conflict clause that makes an orders INSERT of whole rows an update of the given
    positions only (SQLite and PostgreSQL then leave the indexes over the other columns alone)."""
    columns = ", ".join(f"{_ORDER_COLS[i]} = excluded.{_ORDER_COLS[i]}" for i in positions)
    return f" ON CONFLICT (global_id) DO UPDATE SET {columns}"


OrderChange = tuple[tuple | None, tuple]  # (the row before the batch or None when new, the row after)


_BY_FIRST = itemgetter(0)


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


class StoreWriteSkipped(RuntimeError):
    """A plan was not written because one handed to the writer before it failed."""


@dataclass
class _Job:
    """A planned transaction: its statements, and what it makes true once committed."""

    ops: list[Callable[[Connection], None]]
    pending: dict[str, tuple[tuple | None, int]]  # orders rows and delivered bits it writes
    ids: dict[tuple[str, str], str]  # the global IDs it resolved
    changes: list[OrderChange]
    texts: dict[str, str]  # per order, the records text it writes (to confirm a digest found)
    future: concurrent.futures.Future | None = None


def fingerprint(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class Store:
    """The one writer of a store. `submit` plans a group of batches in the caller's thread (identity
    resolution, idempotency and the fold, from memory and committed rows) and hands its statements
    to the store's writer thread, which writes and commits them while the caller plans the next group;
    `flush` waits for the writes. Rows planned but not yet committed are looked up first, so each
    group builds on the one before; a failed write drops what was planned after it. A second process
    writing the same store is not supported."""

    def __init__(
        self,
        engine: Engine,
        channels: Mapping[str, ChannelIdentity],
        timezone: str,
        roles: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self._role_bits = {source: ROLE_BITS[role] for source, role in (roles or {}).items()}
        self.channels = dict(channels)
        self.zone = ZoneInfo(timezone)
        self._patterns = {name: re.compile(c.id_pattern) for name, c in self.channels.items() if c.id_pattern}
        self._lock = threading.RLock()  # held by the writer while it writes, commits and hands out changes
        self._plan_lock = threading.Lock()  # one planner at a time
        self._ids = _planner.IdCache(ID_CACHE_SIZE)  # (channel, raw id) -> global id, committed
        # global id -> (orders row, bits of the (source, state) pairs delivered), as committed and
        # packed (bytes): the store is the orders' only writer, so recent orders need no read back.
        self._orders = _Recent(ORDER_CACHE_SIZE)
        # Planned and handed to the writer, not committed yet (the newest plan's): looked up first.
        self._inflight: dict[str, tuple[tuple | None, int]] = {}
        self._inflight_ids: dict[tuple[str, str], str] = {}
        self._seqs: dict[str, int] = {}  # ID prefix -> its last sequence number, planned
        self._next_seq: int | None = None  # the next record_log seq to plan (read at the first plan)
        self._jobs: deque[_Job] = deque()  # handed to the writer, in order
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._broken = False  # a write failed: the writer skips the jobs planned on top of it
        self._unchecked = 0  # orders rows committed since the last checkpoint (SQLite's WAL)
        # The plan being made: its rows, the rows as they were, its statements and changes.
        self._pending: dict[str, tuple[tuple | None, int]] = {}
        self._before: dict[str, tuple | None] = {}
        self._dirty: dict[str, int] = {}  # the mask of the columns the plan changed, per order
        self._new_ids: list[tuple[str, str, str]] = []  # order_ids rows the plan numbered
        self._new_seqs: dict[str, int] = {}  # ID prefix -> its last sequence number, as the plan leaves it
        self._ops: list[Callable[[Connection], None]] = []
        self._plan_texts: dict[str, list[str]] = {}  # per order, its new records' text, batch by batch
        self._plan_seqs: dict[str, int] = {}  # per order, the seq of the record_log row the plan appends
        self._base_texts: dict[str, str] = {}  # rows of an older version read: their whole records text
        self._written: dict[str, str] = {}  # per order, the records text the plan writes
        # (source, state) -> its bit in orders.facts, as fact_codes holds them (read at the first
        # plan); codes numbered by the plan being made are in _new_facts until it is handed over.
        self._fact_bits: dict[tuple[str, str], int] | None = None
        self._new_facts: list[tuple[str, str, int]] = []
        self._subscribers: list[Callable[[list[OrderChange]], None]] = []
        self._changes: list[OrderChange] = []

    @property
    def lock(self) -> threading.RLock:
        """Held while a batch is written and its changes handed out: hold it to read a stable store."""
        return self._lock

    def subscribe(self, callback: Callable[[list[OrderChange]], None]) -> None:
        """Call `callback(changes)` after each commit, under the ingest lock, with the orders rows
        the batch changed (tuples in ORDER_COLUMNS order): what incremental KPIs need."""
        self._subscribers.append(callback)

    # -- reads -----------------------------------------------------------------------------
    def cursor(self, source: str) -> str | None:
        """The source's committed cursor, read at each poll's start (on the driver: a poll's fixed cost)."""
        with self.engine.connect() as conn:
            rows = _driver_rows(conn, "SELECT value FROM cursors WHERE source = ?", (source,))
            return rows[0][0] if rows else None

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
        return self.ingest_many([batch], now)[0]

    def ingest_many(self, batches: list[Batch], now: datetime) -> list[IngestResult]:
        """Write several batches (e.g. the pages of one poll) in one transaction, each with its
        cursor, and wait for the commit. All or nothing."""
        results = self.submit(batches, now)
        self.flush()
        return results

    def submit(
        self, batches: list[Batch], now: datetime, succeeded: Mapping[str, datetime] | None = None
    ) -> list[IngestResult]:
        """Plan several batches as one transaction and hand it to the writer once the previous
        one is written (planning overlaps that write); returns then. The results' `quarantined`
        counts, the commit and the subscribers' calls come with the write: `flush` before reading
        them. Raises the error of an earlier write that failed (its plan and those after it are
        dropped: submit them again). `succeeded`: sources whose poll ended well at the given time,
        recorded in the same transaction (as record_poll_success would, without one of its own)."""
        results = [IngestResult(records=b.records) for b in batches]
        with self._plan_lock:
            self._collect(block=False)
            self._reset_plan()
            ids: dict[tuple[str, str], str] = {}
            try:
                with self.engine.connect() as reader:
                    if self._fact_bits is None:
                        rows = _driver_rows(reader, "SELECT source, state, code FROM fact_codes", ())
                        self._fact_bits = {(source, state): 1 << code for source, state, code in rows}
                    if self._next_seq is None:
                        sql = "SELECT COALESCE(MAX(seq), 0) + 1 FROM record_log"
                        self._next_seq = _driver_rows(reader, sql, ())[0][0]
                    for batch, result in zip(batches, results, strict=True):
                        ids.update(self._plan(reader, batch, result, now))
                    self._plan_sources(batches, results, now, dict(succeeded or {}))
                    self._plan_orders()
                    reader.rollback()
            except BaseException:  # what this plan numbered must not outlive it
                self._reset_plan()
                try:
                    self._collect(block=True)  # the plans before it, which later plans build on
                finally:
                    self._drop_plans()
                raise
            job = _Job(self._ops, self._pending, ids, self._changes, self._written)
            self._reset_plan()
            while len(self._jobs) >= MAX_JOBS:  # planned while the writer wrote: now wait for it
                self._collect(block=True, first_only=True)
            self._inflight.update(job.pending)  # (its new IDs went in while it was planned)
            self._jobs.append(job)
            job.future = self._writer.submit(self._apply, job)
        return results

    def flush(self) -> None:
        """Wait until every submitted plan is written and committed; raises a failed write's error.
        Once CHECKPOINT_ORDERS orders rows were committed since the last checkpoint, checkpoint
        the WAL while the writes pause (a checkpoint syncs the database file: not after every small poll)."""
        with self._plan_lock:
            self._collect(block=True)
            if self._unchecked >= CHECKPOINT_ORDERS:
                checkpoint(self.engine)
                self._unchecked = 0

    def _collect(self, block: bool, first_only: bool = False) -> None:
        """Move committed plans' rows and IDs into the caches (the writer's jobs in order); on a
        failed one wait for the rest, drop everything planned, and raise its error."""
        while self._jobs:
            job = self._jobs[0]
            if not block and not job.future.done():
                return
            error = job.future.exception()
            self._jobs.popleft()
            if error is not None:
                concurrent.futures.wait([j.future for j in self._jobs])
                self._jobs.clear()
                self._drop_plans()
                self._broken = False
                raise error
            self._ids.update(job.ids)
            self._orders.update(_planner.pack_entries(job.pending))
            self._unchecked += len(job.changes)  # one per orders row written
            _planner.forget(self._inflight, job.pending)  # what a later plan wrote since stays
            _planner.forget(self._inflight_ids, job.ids)
            del job
            trim_heap()  # the written plan's memory, freed across two threads' arenas
            if first_only:
                return

    def _reset_plan(self) -> None:
        """Forget the plan being made: its rows, statements, changes, and the IDs and fact codes it numbered."""
        self._pending, self._before, self._dirty = {}, {}, {}
        self._ops, self._changes, self._new_facts = [], [], []
        self._new_ids, self._new_seqs = [], {}
        self._plan_texts, self._base_texts, self._written, self._plan_seqs = {}, {}, {}, {}

    def _drop_plans(self) -> None:
        self._inflight, self._inflight_ids, self._seqs = {}, {}, {}
        self._reset_plan()
        self._fact_bits = None  # codes numbered in a dropped plan: read again
        self._next_seq = None

    def _apply(self, job: _Job) -> None:
        """The writer: run a plan's statements in one transaction, commit, hand out its changes."""
        if self._broken:
            raise StoreWriteSkipped("not written: an earlier write of this store failed")
        try:
            with self._lock:
                with self.engine.begin() as conn:
                    for op in job.ops:
                        op(conn)
                if job.changes:
                    for callback in self._subscribers:
                        callback(job.changes)
        except BaseException:
            self._broken = True
            raise

    def _plan(self, reader: Connection, batch: Batch, result: IngestResult, now: datetime) -> dict:
        """Plan one batch of the transaction; returns the global IDs it resolved."""
        valid, wanted, rejected = self._validate_identity(batch.observations)
        ids, fresh = self._resolve_ids(reader, wanted)
        touched, repeats, entries, texts = self._insert_observations(reader, valid, ids, fresh, now)
        result.new_observations = sum(map(len, touched.values()))
        result.duplicate_observations = len(valid) - result.new_observations
        result.orders_touched = self._fold(touched, entries, repeats, texts, _progress(valid, ids), now)
        quarantined = [*batch.quarantined, *rejected]
        with_pii = [o for o in valid if o.pii]  # what the writer needs, not the whole batch
        if with_pii or quarantined:
            pii_ids = {key: ids[key] for key in {(o.channel, o.raw_order_id) for o in with_pii}}

            def write(conn: Connection) -> None:  # what reads the written tables: in the writer, in order
                write_pii(conn, with_pii, pii_ids, now)
                result.quarantined = self._insert_quarantine(conn, quarantined, now)

            self._ops.append(write)
        return ids

    def _plan_sources(
        self, batches: list[Batch], results: list[IngestResult], now: datetime, succeeded: dict[str, datetime]
    ) -> None:
        """Plan each source's cursor (its last batch's) and health counters (summed over its
        batches, with a successful poll's end when `succeeded` names it), written once per
        transaction after the batches' quarantine."""
        heads = [(b.source, b.cursor, b.records, b.max_event_at) for b in batches]

        def write(conn: Connection) -> None:
            last_cursor: dict[str, str] = {}
            totals: dict[str, list] = {}  # source -> [records, new observations, quarantined, lag]
            for (source, cursor, records, max_event_at), result in zip(heads, results, strict=True):
                if cursor is not None:
                    last_cursor[source] = cursor
                counts = totals.setdefault(source, [0, 0, 0, None])
                counts[0] += records
                counts[1] += result.new_observations
                counts[2] += result.quarantined
                if max_event_at is not None:
                    counts[3] = max(0.0, (now - max_event_at).total_seconds())
            rows = [(source, cursor, to_ms(now)) for source, cursor in sorted(last_cursor.items())]
            _insert_rows(conn, "INSERT INTO cursors (source, value, updated_at)", rows, _CURSOR_UPSERT)
            for source, counts in totals.items():
                self._count_health(conn, source, *counts, succeeded.get(source))
            for source, at in succeeded.items():
                if source not in totals:
                    self._write_health(conn, source, _poll_success(at), {})

        self._ops.append(write)

    def _validate_identity(
        self, obs: list[Observation]
    ) -> tuple[list[Observation], dict[tuple[str, str], Observation], list[Quarantined]]:
        """The observations of a known channel and state with a raw ID its channel's pattern takes,
        the first of them per (channel, raw id), and the others as quarantine entries."""
        valid, wanted, rejected_at = _planner.identify(obs, self.channels, RANK, self._patterns)
        rejected = []
        for o in (obs[i] for i in rejected_at):
            if o.channel not in self.channels:
                reason = ("channel", f"unknown channel {o.channel!r}")
            elif o.state not in RANK:
                reason = ("state", f"unknown canonical state {o.state!r}")
            else:
                reason = ("order_id", f"{o.raw_order_id!r} does not match the {o.channel} id pattern")
            raw = json.dumps(
                {"channel": o.channel, "order_id": o.raw_order_id, "state": o.state, "at": o.at.isoformat()},
                ensure_ascii=False,
            )
            rejected.append(
                Quarantined(o.source, o.record_key, reason[0], f"field {reason[0]}: {reason[1]}", raw)
            )
        return valid, wanted, rejected

    def _resolve_ids(
        self, conn: Connection, wanted: dict[tuple[str, str], Observation]
    ) -> tuple[dict[tuple[str, str], str], set[str]]:
        """Global ID for every (channel, raw id) (each with its first observation), and the IDs
        created now (orders with no rows yet); new ones get {CODE}_{YYYYMMDD}_{SEQ}."""
        if not wanted:
            return {}, set()
        known, missing = _planner.look_up_ids(wanted, (self._inflight_ids,), self._ids)
        unknown: dict[str, list[str]] = {}
        for channel, raw_id in missing:
            unknown.setdefault(channel, []).append(raw_id)
        for channel, raw in unknown.items():  # (channel, raw id) is the key: one index range each
            for chunk in _chunks(sorted(raw), 500):
                sql = f"SELECT raw_order_id, global_id FROM order_ids WHERE channel = ? AND raw_order_id IN ({', '.join('?' * len(chunk))})"
                for raw_id, gid in _driver_rows(conn, sql, [channel, *chunk]):
                    known[(channel, raw_id)] = gid
        fresh = [k for k in wanted if k not in known]
        if not fresh:
            return known, set()
        by_prefix: dict[str, list[tuple[str, str]]] = {}
        for key in fresh:
            o = wanted[key]
            day = (o.created_at or o.at).astimezone(self.zone).strftime("%Y%m%d")
            by_prefix.setdefault(f"{self.channels[key[0]].code}_{day}", []).append(key)
        seqs = self._seqs
        if unread := [prefix for prefix in by_prefix if prefix not in seqs]:
            sql = (
                f"SELECT prefix, last_seq FROM id_sequences WHERE prefix IN ({', '.join('?' * len(unread))})"
            )
            seqs.update(dict.fromkeys(unread, 0))
            seqs.update(_driver_rows(conn, sql, unread))
        mapping_rows, seq_rows = [], []
        for prefix, keys in sorted(by_prefix.items()):
            start = seqs[prefix]
            for i, key in enumerate(sorted(keys, key=lambda k: (wanted[k].created_at or wanted[k].at, k[1]))):
                gid = f"{prefix}_{start + i + 1:06d}"
                known[key] = gid
                mapping_rows.append((key[0], key[1], gid))
            seqs[prefix] = start + len(keys)
            seq_rows.append((prefix, seqs[prefix]))
        # the next batches of this plan see them
        self._inflight_ids.update((key, known[key]) for key in fresh)
        self._new_ids.extend(mapping_rows)  # written with the plan's orders
        self._new_seqs.update(seq_rows)
        return known, {known[key] for key in fresh}

    def _entries(self, conn: Connection, gids: Iterable[str]) -> dict[str, tuple[tuple | None, int]]:
        """(orders row, delivered bits) of existing orders: this transaction's, the cache's, or read
        (one orders row per order not seen lately, with its records' key digests). A row an older
        version wrote (no digests: its records in order_records or observations) gets its digests
        and bits from its records, whose text the plan moves to record_log."""
        found, missing = _planner.look_up(gids, (self._pending, self._inflight), self._orders)
        if not missing:
            return found
        older = []
        for chunk in _chunks(sorted(missing), 500):
            marks = ", ".join("?" * len(chunk))
            for row in _driver_rows(conn, f"{_ORDER_SELECT} WHERE o.global_id IN ({marks})", chunk):
                if row[_KEYS] is None:
                    older.append(row)
                else:
                    found[row[0]] = (row, int(row[_FACTS], 16))
        texts = self._read_records(conn, [row[0] for row in older])
        for row in older:
            gid, bits = row[0], 0
            self._base_texts[gid] = texts[gid]
            records = parse_records(texts[gid])
            for source, _key, state, *_ in records:
                bits |= self._fact_bit(source, state)
            found[gid] = ((*row[:_KEYS], record_digests(records), *row[_KEYS + 1 :]), bits)
        for gid in missing:
            found.setdefault(gid, (None, 0))
        return found

    @staticmethod
    def _read_records(conn: Connection, gids: list[str]) -> dict[str, str]:
        """The committed records text of each order (store/records.py: its record_log chain, or
        what an older version wrote)."""
        return record_texts(_named_query(conn), gids)

    def _stored(self, conn: Connection, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (global id, key_of text) pairs name a record the order has so far: planned, handed
        to the writer, read whole this plan (an older version's order), else committed (searched in
        SQL, store/records.py)."""
        jobs, planned, base = self._jobs, self._plan_texts, self._base_texts
        found, ask = set(), []
        for gid, head in pairs:
            if (
                any(head in text for text in planned.get(gid, ()))
                or any(head in job.texts.get(gid, "") for job in jobs)
                or head in base.get(gid, "")
            ):
                found.add((gid, head))
            else:
                ask.append((gid, head))
        if ask:
            query = _named_query(conn)
            found |= stored_records(query, ask, conn.dialect.name)
        return found

    def _fact_bit(self, source: str, state: str) -> int:
        bit = self._fact_bits.get((source, state))
        if bit is None:
            code = len(self._fact_bits)
            bit = self._fact_bits[(source, state)] = 1 << code
            self._new_facts.append((source, state, code))
        return bit

    def _insert_observations(
        self,
        conn: Connection,
        obs: list[Observation],
        ids: dict[tuple[str, str], str],
        fresh: set[str],
        now: datetime,
    ) -> tuple[
        dict[str, list[tuple[int, Observation]]], dict[str, int], dict[str, tuple[tuple | None, int]], dict
    ]:
        """Keep the observations not stored yet: a record is stored when its order's records hold
        its (source, record key); a digest not among the order's is a new record, one among them is
        confirmed against the records' text. Returns them (the batch's new facts, per order as (epoch
        ms, observation)), per order how many of them repeat a state the same source had already
        delivered, the orders' entries before the batch, and per order the new records' (text,
        digests)."""
        by_key = _planner.by_key(obs, ids)
        entries = self._entries(conn, {key[0] for key in by_key if key[0] not in fresh})
        new, suspects = _planner.split(by_key, entries)  # (gid, source, o, key_of text, digest, entry)
        if suspects:  # most are repeats; a digest shared with another key is not
            stored = self._stored(conn, [(item[0], item[3]) for item in suspects])
            new += [item for item in suspects if (item[0], item[3]) not in stored]
        touched, repeats, texts = _planner.gather(new, entries, to_ms(now), self._fact_bits, self._fact_bit)
        return touched, repeats, entries, texts

    def _fold(
        self,
        touched: dict[str, list[tuple[int, Observation]]],
        entries: dict[str, tuple[tuple | None, int]],
        repeats: dict[str, int],
        texts: dict[str, tuple[str, bytes]],
        progress: dict[str, dict[str, int]],
        now: datetime,
    ) -> int:
        """Fold a batch's new observations into its orders' rows in memory (earliest time per
        milestone, highest state) and the progress of all its observations, repeats included
        (newest per state, kept for the current state): they become the transaction's pending
        rows, written once at its end however many batches touched them, with the mask of the
        columns they changed. Returns the number of orders touched (by new observations)."""
        pending, before_txn, dirty = self._pending, self._before, self._dirty
        pending.update(entries)
        now_ms = to_ms(now)
        role_bits = self._role_bits
        for gid in progress.keys() - touched.keys():  # only repeats: no new milestone, maybe news
            before, bits = entries[gid]
            row = before if before is None else _planner.with_progress(before, progress[gid])
            if row is not before:
                row = (*row[:_UPDATED], now_ms, *row[_UPDATED + 1 :])
                if gid not in before_txn:
                    before_txn[gid] = before
                pending[gid] = (row, bits)
                dirty[gid] = dirty.get(gid, 0) | _BIT[_PROGRESS] | _BIT[_UPDATED]
        self._next_seq = _planner.fold(
            touched, entries, repeats, texts, progress, now_ms, role_bits, pending, before_txn, dirty,
            self._plan_texts, self._plan_seqs, self._next_seq,
        )  # fmt: skip
        return len(touched)

    def _log_seq(self, gid: str) -> int:
        """The seq of the record_log row this plan appends for the order (numbered on first use)."""
        seq = self._plan_seqs.get(gid)
        if seq is None:
            seq = self._plan_seqs[gid] = self._next_seq
            self._next_seq += 1
        return seq

    def _plan_orders(self) -> None:
        """Plan the writes of the transaction's changed orders rows (only their changed columns),
        their record_log rows and their moves between the open-state counts; their (before, after)
        rows are its changes."""
        pending, changes, dirty = self._pending, self._changes, self._dirty
        plan_texts, base_texts, written = self._plan_texts, self._base_texts, self._written
        inserts, updates, logged, changed, moved = _planner.plan_rows(
            self._before, pending, dirty, plan_texts, base_texts, written, append_records, _positions,
            _STATE_COUNT_BITS,
        )  # fmt: skip
        changes.extend(changed)  # (before, after) of each: its write's change, handed to subscribers
        moved_keys = _positions(_BIT[_KEYS] | _BIT[_TAIL])
        for gid, base in base_texts.items():  # an older version's row read but given no record:
            if gid not in written:  # its list moves to record_log now, its row gets the digests
                row, bits = pending[gid]
                row = (*row[:_TAIL], self._log_seq(gid), *row[_TAIL + 1 :])
                pending[gid] = (row, bits)
                written[gid] = base
                logged.append((row[_TAIL], gid, None, base))
                updates.setdefault(moved_keys, []).append(row)
        older = sorted(base_texts)  # their order_records rows (if any): moved to record_log
        new_facts, counts = self._new_facts, self._count_states(moved)
        new_ids, new_seqs = self._new_ids, list(self._new_seqs.items())
        # In key order, each statement walks its B-trees from one end to the other (neighbouring
        # rows share pages) instead of seeking each row afresh; record_log rows go to its end.
        for rows in (inserts, logged, *updates.values()):
            rows.sort(key=_BY_FIRST)  # by global ID (record_log: by seq)
        new_ids.sort()  # by (channel, raw ID)

        def write(conn: Connection) -> None:
            _insert_rows(conn, "INSERT INTO order_ids (channel, raw_order_id, global_id)", new_ids)
            _insert_rows(conn, "INSERT INTO id_sequences (prefix, last_seq)", new_seqs, _SEQ_UPSERT)
            _insert_rows(conn, "INSERT INTO fact_codes (source, state, code)", new_facts)
            _insert_rows(conn, _ORDER_INSERT_HEAD, inserts)
            for changed, rows in updates.items():  # only the changed columns: other indexes untouched
                _update_orders(conn, changed, rows)
            _insert_rows(conn, _LOG_INSERT, logged)
            for chunk in _chunks(older, 500):
                conn.exec_driver_sql(
                    f"DELETE FROM order_records WHERE global_id IN ({', '.join([_placeholder(conn)] * len(chunk))})",
                    tuple(chunk),
                )
            _insert_rows(conn, "INSERT INTO state_counts (state, dim, value, n)", counts, _STATE_COUNT_TAIL)

        self._ops.append(write)

    @staticmethod
    def _count_states(changes: list[OrderChange]) -> list[tuple]:
        """Each changed order's move between the open-state counts (per dimension value), as
        (state, dimension, value, net orders in) rows."""
        moves = _planner.state_moves(
            changes, _STATE_DIM_POSITIONS, _OPEN
        )  # (state, dimension values) -> net in
        delta: dict = {}
        add = delta.get
        for (state, values), n in moves.items():
            if n:
                key = (state, "", "")
                delta[key] = add(key, 0) + n
                for dim, value in zip(STATE_DIMENSIONS, values, strict=True):
                    if value:
                        key = (state, dim, value)
                        delta[key] = add(key, 0) + n
        return [(*key, n) for key, n in sorted(delta.items()) if n]

    def rebuild_state_counts(self) -> None:
        """Recount state_counts from the orders (a store written before the table existed)."""
        with self._lock, self.engine.begin() as conn:
            conn.execute(delete(state_counts))
            opened = orders.c.state.in_(_OPEN)
            for dim in ("", *STATE_DIMENSIONS):
                column = orders.c[dim] if dim else literal("")
                grouped = (
                    select(orders.c.state, literal(dim), column, func.count())
                    .where(opened, *([column.isnot(None), column != ""] if dim else []))
                    .group_by(orders.c.state, *([column] if dim else []))
                )
                conn.execute(insert(state_counts).from_select(["state", "dim", "value", "n"], grouped))

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

    def _count_health(
        self,
        conn: Connection,
        source: str,
        records: int,
        observations: int,
        quarantined: int,
        lag: float | None,
        succeeded_at: datetime | None = None,
    ) -> None:
        assign = {} if lag is None else {"lag_seconds": lag}
        if succeeded_at is not None:
            assign.update(_poll_success(succeeded_at))
        added = {
            "records_total": records,
            "observations_total": observations,
            "quarantined_total": quarantined,
        }
        self._write_health(conn, source, assign, added)

    def _write_health(self, conn: Connection, source: str, assign: dict, added: dict) -> None:
        """One UPDATE of the source's health row, on the driver (a poll's fixed cost): `assign`
        sets columns, `added` adds to counters; the row is created first when it has none yet."""
        sql = _health_update_sql(tuple(assign), tuple(added), _placeholder(conn))
        params = (*map(_db_value, assign.values()), *added.values(), source)
        if not conn.exec_driver_sql(sql, params).rowcount:
            self._health_row(conn, source)
            conn.exec_driver_sql(sql, params)

    def record_poll_success(self, source: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            self._write_health(conn, source, _poll_success(now), {})

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


def _progress(obs: list[Observation], ids: dict[tuple[str, str], str]) -> dict[str, dict[str, int]]:
    """The newest progress (epoch ms) per order and state of a batch's observations, repeats and
    records already stored included: a repeated push is no new fact but may be news."""
    out: dict[str, dict[str, int]] = {}
    for o in obs:
        if o.progress_at is not None:
            states = out.setdefault(ids[(o.channel, o.raw_order_id)], {})
            at = to_ms(o.progress_at)
            if at > states.get(o.state, at - 1):
                states[o.state] = at
    return out


# (channel, raw id) -> global id of recently seen orders, kept in C (_planner.IdCache: ~80 bytes an
# entry against ~250 as Python objects): as many as the order cache holds, so an order it serves does
# not read its ID back.
ID_CACHE_SIZE = 250_000
# Recently written orders rows and their delivered facts, packed (~210 bytes each, the record-key
# digests included, against ~1-1.5 KB as Python objects): at 1 M orders over 7 days the plans read
# back orders 6.4 M times, and a cache this size serves at least 84 % of them (README, Benchmarks).
ORDER_CACHE_SIZE = 250_000


class _Recent:
    """A bounded map that keeps what was used lately: two generations; a hit in the old one moves
    to the young one, and when the young one is full the old one is dropped (cheaper than an LRU)."""

    def __init__(self, size: int) -> None:
        self.half = max(1, size // 2)
        self.young: dict = {}
        self.old: dict = {}

    def get(self, key):
        value = self.young.get(key)
        if value is None:
            value = self.old.pop(key, None)
            if value is not None:
                self._put(key, value)
        return value

    def update(self, items: Mapping) -> None:
        young = self.young
        young.update(items)  # one C-level merge; the generation turns over after it
        if len(young) >= self.half:
            self.old, self.young = young, {}

    def _put(self, key, value) -> None:
        young = self.young
        young[key] = value
        if len(young) >= self.half:
            self.old, self.young = young, {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


def _named_query(conn: Connection) -> Callable[[str, dict], list[tuple]]:
    """`query(sql, params)` over the DB-API cursor, as store/records.py takes it."""
    return lambda sql, params: driver_rows(conn, sql, **params)


def _poll_success(at: datetime) -> dict:
    """The source-health columns a successful poll sets."""
    return {"up": True, "last_attempt_at": at, "last_success_at": at, "consecutive_failures": 0}


def _db_value(value):
    """A value as the driver takes it for the store's columns (times in epoch ms)."""
    return to_ms(value) if isinstance(value, datetime) else value


@functools.cache
def _health_update_sql(assigned: tuple[str, ...], added: tuple[str, ...], mark: str) -> str:
    sets = [f"{c} = {mark}" for c in assigned] + [f"{c} = {c} + {mark}" for c in added]
    return f"UPDATE source_health SET {', '.join(sets)} WHERE source = {mark}"


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _driver_rows(conn: Connection, sql: str, params: tuple | list) -> list[tuple]:
    """A SELECT on the DB-API cursor itself: raw values, none of SQLAlchemy's per-row processing."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql.replace("?", _placeholder(conn)), tuple(params))
        return cursor.fetchall()
    finally:
        cursor.close()


def _insert_sql(table, columns: list[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _driver_many(conn: Connection, sql: str, rows: list[tuple]) -> None:
    """executemany on the DB-API cursor (ints and strings only: no SQLAlchemy processing)."""
    if rows:
        cursor = conn.connection.cursor()
        try:
            cursor.executemany(sql.replace("?", _placeholder(conn)), rows)
        finally:
            cursor.close()


MAX_PARAMETERS = 4_000  # bound parameters per statement: a few hundred rows; bigger ones cost SQLite memory (its prepared statements are cached) and gain nothing


def _insert_rows(
    conn: Connection, head: str, rows: list[tuple], tail: str = "", columns: tuple[int, ...] | None = None
) -> None:
    """`head VALUES (..), (..) tail` over the rows (their values at `columns`, or all), as few
    statements as the parameter bound allows: each runs in one call into the database (one release
    of the GIL, not one per row); the parameter lists are laid out in C (_planner.param_chunks)."""
    if not rows:
        return
    width = len(rows[0]) if columns is None else len(columns)
    mark = _placeholder(conn)
    cursor = conn.connection.cursor()
    try:
        for params in _planner.param_chunks(rows, columns, MAX_PARAMETERS):
            cursor.execute(_values_sql(head, tail, mark, width, len(params) // width), params)
    finally:
        cursor.close()


@functools.lru_cache(maxsize=256)
def _values_sql(head: str, tail: str, mark: str, width: int, count: int) -> str:
    """`head VALUES (mark, ...) x count tail`: the same text for every full chunk (one statement in
    the driver's cache, its text built once)."""
    one = f"({', '.join([mark] * width)})"
    return f"{head} VALUES {', '.join([one] * count)}{tail}"


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
