"""Store contract, run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

import store.store as store_module
from collectors.errors import SourceTimeout
from collectors.types import Batch, Observation, Quarantined
from store import _planner
from store.db import init_schema, make_engine
from store.records import count_records, observation_rows
from store.records import digests as record_digests
from store.records import entry as entry_text
from store.records import key_of as record_key_of
from store.records import parse as parse_records
from store.records import texts as record_texts
from store.schema import (
    from_ms,
    observations,
    order_ids,
    order_records,
    orders,
    quarantine,
    record_log,
    state_counts,
)
from store.store import ORDER_COLUMNS, ChannelIdentity, Store

T0 = datetime(2026, 2, 12, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
CHANNELS = {
    "tmall": ChannelIdentity("TB", r"\d{18,19}"),
    "pdd": ChannelIdentity("PDD", r"\d{6}-\d{15}"),
}


@pytest.fixture
def store(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    yield Store(engine, CHANNELS, "Asia/Shanghai")
    engine.dispose()


def obs(
    raw: str, state: str, minutes: float, channel: str = "tmall", source: str = "tmall", **kw
) -> Observation:
    return Observation(source, f"{raw}|{state}", channel, raw, state, T0 + timedelta(minutes=minutes), **kw)


OBSERVATION_FIELDS = ("global_id", "source", "record_key", "state", "at", "ingested_at")


def records_stored(store: Store) -> int:
    with store.engine.connect() as conn:
        return sum(1 for _ in observation_rows(conn))


def count(store: Store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def order(store: Store, gid: str) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(select(orders).where(orders.c.global_id == gid)).mappings().one())


def test_same_batch_twice_is_one_set_of_rows(store):
    batch = Batch(
        "tmall", [obs("3912345678901234567", "created", 0), obs("3912345678901234567", "paid", 1)], records=1
    )
    first = store.ingest(batch, T0)
    second = store.ingest(batch, T0 + timedelta(minutes=1))
    assert (first.new_observations, second.new_observations, second.duplicate_observations) == (2, 0, 2)
    assert records_stored(store) == 2
    assert count(store, orders) == 1


def test_global_id_both_ways_and_daily_sequence(store):
    store.ingest(
        Batch("tmall", [obs("3912345678901234567", "created", 0), obs("3912345678901234568", "created", 5)]),
        T0,
    )
    store.ingest(Batch("pdd", [obs("260212-123456789012345", "paid", 3, channel="pdd", source="pdd")]), T0)
    assert store.global_id("tmall", "3912345678901234567") == "TB_20260212_000001"
    assert store.global_id("tmall", "3912345678901234568") == "TB_20260212_000002"
    assert store.global_id("pdd", "260212-123456789012345") == "PDD_20260212_000001"
    assert store.raw_ids("TB_20260212_000002") == [("tmall", "3912345678901234568")]
    # a later batch continues the sequence instead of restarting it
    store.ingest(Batch("tmall", [obs("3912345678901234569", "created", 9)]), T0)
    assert store.global_id("tmall", "3912345678901234569") == "TB_20260212_000003"


def test_state_never_moves_backwards_and_milestones_keep_earliest(store):
    raw = "3912345678901234567"
    store.ingest(Batch("wms", [obs(raw, "picked", 20, source="wms", dims={"warehouse": "WH-HZ01"})]), T0)
    store.ingest(Batch("tmall", [obs(raw, "paid", 1), obs(raw, "created", 0, amount_fen=12900)]), T0)
    row = order(store, store.global_id("tmall", raw))
    assert row["state"] == "picked"
    assert row["state_at"] == T0 + timedelta(minutes=20)
    assert row["paid_at"] == T0 + timedelta(minutes=1)
    assert row["warehouse"] == "WH-HZ01" and row["amount_fen"] == 12900


def test_bad_records_go_to_quarantine_once_with_the_field(store):
    bad_id = obs("not-a-tmall-id", "paid", 1)
    q = Quarantined("tmall", "rec-9", "pay_time", "field pay_time: 'yesterday' is not a time", '{"tid": 9}')
    batch = Batch("tmall", [bad_id, obs("3912345678901234567", "paid", 1)], [q], records=3)
    result = store.ingest(batch, T0)
    store.ingest(batch, T0)
    assert result.quarantined == 2
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(quarantine.c.field, quarantine.c.reason).order_by(quarantine.c.field)
        ).all()
    assert [r.field for r in rows] == ["order_id", "pay_time"]
    assert "does not match the tmall id pattern" in rows[0].reason
    assert count(store, orders) == 1


@pytest.mark.parametrize("failing", ["_plan_orders", "_count_health"])  # planning / the writer's statements
def test_cursor_commits_with_its_data_or_not_at_all(store, monkeypatch, failing):
    store.ingest(Batch("tmall", [obs("3912345678901234567", "paid", 1)], cursor="c1"), T0)
    assert store.cursor("tmall") == "c1"

    def boom(*args, **kwargs):
        raise RuntimeError("store lost mid-write")

    monkeypatch.setattr(store, failing, boom)
    again = Batch(
        "tmall",
        [obs("3912345678901234567", "shipped", 3), obs("3912345678901234568", "paid", 2)],
        cursor="c2",
    )
    with pytest.raises(RuntimeError):
        store.ingest(again, T0)
    assert store.cursor("tmall") == "c1"
    assert records_stored(store) == 1
    assert count(store, order_ids) == 1
    # Nothing of the rolled-back batch stays in the store's memory: the retry writes all of it.
    monkeypatch.undo()
    result = store.ingest(again, T0)
    assert (result.new_observations, result.duplicate_observations) == (2, 0)
    assert store.cursor("tmall") == "c2"
    assert order(store, store.global_id("tmall", "3912345678901234567"))["state"] == "shipped"
    assert order(store, store.global_id("tmall", "3912345678901234568"))["state"] == "paid"


def health_of(store: Store, source: str) -> dict:
    return next(row for row in store.health() if row["source"] == source)


def test_a_polls_success_commits_with_its_last_pages_or_not_at_all(store, monkeypatch):
    """`submit(..., succeeded=...)` records the poll's success in the pages' own transaction (the
    service's last group of a poll): after a failed poll it clears the failure count with them; a
    write that fails records neither."""
    store.record_poll_failure("tmall", SourceTimeout("tmall", "read timed out"), T0)
    batch = Batch("tmall", [obs("3912345678901234567", "paid", 1)], cursor="c1", records=1)

    def lost(*args):
        raise RuntimeError("lost")

    monkeypatch.setattr(store, "_count_health", lost)
    store.submit([batch], T0 + timedelta(minutes=1), succeeded={"tmall": T0 + timedelta(minutes=1)})
    with pytest.raises(RuntimeError, match="lost"):
        store.flush()
    failed = health_of(store, "tmall")
    assert (failed["up"], failed["consecutive_failures"], failed["last_success_at"]) == (False, 1, None)
    assert store.cursor("tmall") is None and records_stored(store) == 0
    monkeypatch.undo()
    store.submit([batch], T0 + timedelta(minutes=2), succeeded={"tmall": T0 + timedelta(minutes=2)})
    store.flush()
    row = health_of(store, "tmall")
    assert (row["up"], row["consecutive_failures"]) == (True, 0)
    assert row["last_success_at"] == row["last_attempt_at"] == T0 + timedelta(minutes=2)
    assert (row["records_total"], row["observations_total"]) == (1, 1)
    assert row["last_error_class"] == "timeout"  # the last error stays on record
    assert store.cursor("tmall") == "c1" and records_stored(store) == 1
    # A source with no pages in the transaction gets its success too.
    store.ingest_many([batch], T0 + timedelta(minutes=3))
    store.submit([], T0 + timedelta(minutes=4), succeeded={"jd_api": T0 + timedelta(minutes=4)})
    store.flush()
    assert health_of(store, "jd_api")["last_success_at"] == T0 + timedelta(minutes=4)
    assert health_of(store, "tmall")["last_success_at"] == T0 + timedelta(minutes=2)


def test_state_counts_follow_each_order_and_equal_a_recount(store):
    """The ingest keeps open-state counts per dimension value; a recount from the orders agrees."""
    store.ingest(
        Batch(
            "tmall",
            [
                obs("3912345678901234567", "paid", 0, dims={"city": "杭州市"}),
                obs("3912345678901234568", "paid", 1),
                obs("260212-123456789012345", "paid", 2, channel="pdd"),
            ],
        ),
        T0,
    )
    store.ingest(
        Batch(
            "wms",
            [
                obs("3912345678901234567", "wms_received", 5, source="wms", dims={"warehouse": "WH1"}),
                obs("3912345678901234568", "cancelled", 6, source="wms"),
            ],
        ),
        T0 + timedelta(minutes=6),
    )

    def counts() -> dict:
        with store.engine.connect() as conn:
            rows = conn.execute(select(state_counts).where(state_counts.c.n != 0))
            return {(r.state, r.dim, r.value): r.n for r in rows}

    expected = {
        ("paid", "", ""): 1, ("paid", "channel", "pdd"): 1,
        ("wms_received", "", ""): 1, ("wms_received", "channel", "tmall"): 1,
        ("wms_received", "city", "杭州市"): 1, ("wms_received", "warehouse", "WH1"): 1,
    }  # fmt: skip
    assert counts() == expected  # the cancelled order left the open states
    store.rebuild_state_counts()
    assert counts() == expected


def test_ingest_many_writes_pages_together_with_their_cursors(store):
    """The pages of one poll in one transaction: both cursors, every observation, one change feed call."""
    calls = []
    store.subscribe(calls.append)
    first = Batch("tmall", [obs("3912345678901234567", "paid", 0)], cursor="page-1", records=1)
    second = Batch(
        "tmall",
        [obs("3912345678901234567", "wms_received", 3), obs("3912345678901234568", "paid", 4)],
        cursor="page-2",
        records=2,
    )
    results = store.ingest_many([first, second], T0 + timedelta(minutes=5))
    assert [r.new_observations for r in results] == [1, 2]
    assert store.cursor("tmall") == "page-2"
    assert records_stored(store) == 3
    assert len(calls) == 1
    # the first order changed twice in the transaction: its row is written once, and the feed has
    # one change per order, from its row before the transaction to its row after
    states = [
        (old[ORDER_COLUMNS.index("state")] if old else None, new[ORDER_COLUMNS.index("state")])
        for old, new in calls[0]
    ]
    assert states == [(None, "wms_received"), (None, "paid")]
    with store.engine.connect() as conn:
        kept = {(r.state, r.dim, r.value): r.n for r in conn.execute(select(state_counts)) if r.n}
    store.rebuild_state_counts()  # each order moved once: a recount agrees
    with store.engine.connect() as conn:
        assert kept == {(r.state, r.dim, r.value): r.n for r in conn.execute(select(state_counts)) if r.n}
    assert kept[("paid", "", "")] == 1 and kept[("wms_received", "", "")] == 1


def test_manual_action_and_channel_shipped_keep_their_earliest_time(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    store = Store(engine, CHANNELS, "Asia/Shanghai", roles={"tmall": "channel", "wms": "wms", "erp": "erp"})
    try:
        raw = "3912345678901234568"
        at = T0 + timedelta(minutes=5)
        store.ingest(Batch("wms", [obs(raw, "shipped", 30, source="wms")]), T0)
        store.ingest(Batch("erp", [obs(raw, "paid", 1, source="erp", manual_at=at)]), T0)
        row = order(store, store.global_id("tmall", raw))
        assert row["manual_at"] == at and row["channel_shipped_at"] is None  # the WMS is not the channel
        later = Observation(
            "erp",
            f"{raw}|erp_accepted|manual",
            "tmall",
            raw,
            "erp_accepted",
            T0,
            manual_at=at + timedelta(minutes=9),
        )
        store.ingest(Batch("erp", [later, obs(raw, "delivered", 99, source="tmall")]), T0)
        store.ingest(Batch("tmall", [obs(raw, "shipped", 31)]), T0)  # shown shipped, before delivered
        row = order(store, store.global_id("tmall", raw))
        assert row["manual_at"] == at
        assert row["channel_shipped_at"] == T0 + timedelta(minutes=31)
        paid_only = "3912345678901234569"
        store.ingest(Batch("tmall", [obs(paid_only, "paid", 2), obs(paid_only, "cancelled", 3)]), T0)
        row = order(store, store.global_id("tmall", paid_only))
        assert row["manual_at"] is None and row["channel_shipped_at"] is None
    finally:
        engine.dispose()


def test_progress_of_repeated_pushes_reaches_the_order_and_resets_with_the_state(store):
    """A carrier push repeats its in-transit fact (one observation row) but brings the newest scan:
    the order keeps the newest progress of its current state, duplicates and replays change nothing,
    and a new state starts without one."""
    raw, changes = "3912345678901234567", []
    store.subscribe(changes.extend)

    def push(newest: float, state: str = "in_transit") -> Observation:
        at = 60 if state == "in_transit" else newest
        return obs(raw, state, at, source="kd", progress_at=T0 + timedelta(minutes=newest))

    store.ingest(Batch("tmall", [obs(raw, "paid", 0), obs(raw, "shipped", 30)]), T0)
    gid = store.global_id("tmall", raw)
    first = store.ingest(Batch("kd", [push(60)]), T0 + timedelta(hours=1))
    assert first.new_observations == 1
    assert order(store, gid)["progress_at"] is None  # the first scan is the state's own time
    # two later pushes in one batch, then the same pushes again (a replay), then an older one
    again = store.ingest(Batch("kd", [push(180), push(300)]), T0 + timedelta(hours=5))
    assert (again.new_observations, again.duplicate_observations) == (0, 2)
    row = order(store, gid)
    assert (row["state"], row["state_at"], row["progress_at"]) == (
        "in_transit",
        T0 + timedelta(minutes=60),
        T0 + timedelta(minutes=300),
    )
    assert records_stored(store) == 3
    fed = len(changes)
    store.ingest(Batch("kd", [push(180), push(300)]), T0 + timedelta(hours=6))
    store.ingest(Batch("kd", [push(120)]), T0 + timedelta(hours=6))
    assert order(store, gid) == row
    assert len(changes) == fed  # no news, no change for the KPIs
    # progress of another state than the current one is not the current state's
    store.ingest(
        Batch("kd", [obs(raw, "shipped", 30, source="kd2", progress_at=T0 + timedelta(hours=9))]), T0
    )
    assert order(store, gid)["progress_at"] == T0 + timedelta(minutes=300)
    # delivered: a new state, its progress starts again (the delivered scan is its own time)
    store.ingest(Batch("kd", [push(400, "delivered"), push(390)]), T0 + timedelta(hours=7))
    row = order(store, gid)
    assert (row["state"], row["progress_at"]) == ("delivered", None)


def test_progress_in_the_batch_that_enters_the_state(store):
    """The first push of a parcel already carrying later scans: entered and progressed at once; a
    late push from before the newest progress is no news."""
    raw = "3912345678901234568"
    newest = T0 + timedelta(hours=3)
    first = Observation("kd", f"{raw}|in_transit", "tmall", raw, "in_transit", T0, progress_at=newest)
    store.ingest(Batch("kd", [obs(raw, "paid", -60), first]), T0 + timedelta(hours=3))
    gid = store.global_id("tmall", raw)
    row = order(store, gid)
    assert (row["state"], row["state_at"], row["progress_at"]) == ("in_transit", T0, newest)
    older = Observation(
        "kd", f"{raw}|in_transit", "tmall", raw, "in_transit", T0, progress_at=T0 + timedelta(hours=1)
    )
    store.ingest(Batch("kd", [older]), T0 + timedelta(hours=4))
    assert order(store, gid)["progress_at"] == newest


def test_repeats_are_counted_alike_from_memory_from_the_store_and_from_an_older_store(store_url):
    """A second record of the same (source, state) is a repeat whether the order is in the store's
    memory, read back by a new process (orders.facts), or from a store that predates that column."""
    engine = make_engine(store_url)
    init_schema(engine)
    raw = "3912345678901234570"

    def repeat(source: str, state: str, minutes: float) -> Observation:
        return Observation(
            source, f"{raw}|{state}|again", "tmall", raw, state, T0 + timedelta(minutes=minutes)
        )

    try:
        first = Store(engine, CHANNELS, "Asia/Shanghai")
        first.ingest(Batch("tmall", [obs(raw, "paid", 1), obs(raw, "shipped", 20)]), T0)
        first.ingest(Batch("tmall", [repeat("tmall", "paid", 2)]), T0)  # the order is in memory
        gid = first.global_id("tmall", raw)
        assert order(first, gid)["duplicate_records"] == 1
        restarted = Store(engine, CHANNELS, "Asia/Shanghai")  # empty memory: the row is read back
        restarted.ingest(Batch("tmall", [repeat("tmall", "shipped", 21), obs(raw, "delivered", 90)]), T0)
        assert order(restarted, gid)["duplicate_records"] == 2
        with engine.begin() as conn:  # as an older version left it: records in their table, no facts
            rows = [(*r[:4], from_ms(r[4]), from_ms(r[5])) for r in observation_rows(conn)]
            conn.execute(insert(observations), [dict(zip(OBSERVATION_FIELDS, r, strict=True)) for r in rows])
            conn.execute(orders.update().values(facts=None, record_keys=None, records_tail=None))
            conn.execute(record_log.delete())
        assert records_stored(first) == len(rows) == 5  # read from the old table
        with engine.connect() as conn:
            assert count_records(conn) == 5
        older = Store(engine, CHANNELS, "Asia/Shanghai")
        assert older.ingest(Batch("tmall", [obs(raw, "paid", 1)]), T0).duplicate_observations == 1
        assert records_stored(older) == 5  # read and kept in memory: its records rewritten whole
        older.ingest(Batch("tmall", [repeat("tmall", "delivered", 91), obs(raw, "paid", 1)]), T0)
        row = order(older, gid)
        assert row["duplicate_records"] == 3 and row["state"] == "delivered"
        assert older.ingest(Batch("wms", [obs(raw, "paid", 1, source="wms")]), T0).new_observations == 1
        assert order(older, gid)["duplicate_records"] == 3  # another source's paid is no repeat
        assert records_stored(older) == 7
    finally:
        engine.dispose()


AWKWARD_KEYS = [
    "plain-1",
    'quote"d',
    "back\\slash",
    "tab\tand\nnewline",
    "中文键",
    '["tmall","x",',
    "",
    "x\x1f\x00y",
]


def test_awkward_record_keys_are_stored_once_and_read_back_as_they_were(store):
    """Record keys with JSON's special characters, a key shaped like the stored text, an empty
    key: each stored once, repeats recognised, read back unchanged."""
    raw = "3912345678901234567"
    batch = Batch("tmall", [Observation("tmall", key, "tmall", raw, "paid", T0) for key in AWKWARD_KEYS])
    assert store.ingest(batch, T0).new_observations == len(AWKWARD_KEYS)
    again = Store(store.engine, CHANNELS, "Asia/Shanghai")  # from the stored row, not from memory
    assert again.ingest(batch, T0).duplicate_observations == len(AWKWARD_KEYS)
    assert store.ingest(batch, T0).new_observations == 0
    with store.engine.connect() as conn:
        rows = list(observation_rows(conn))
        (text,) = record_texts(conn, [store.global_id("tmall", raw)]).values()
        assert count_records(conn) == len(AWKWARD_KEYS)
    assert sorted(r[2] for r in rows) == sorted(AWKWARD_KEYS)
    assert json.loads(text) == [list(parse_records(text)[i]) for i in range(len(AWKWARD_KEYS))]
    for key in AWKWARD_KEYS:
        assert record_key_of("tmall", key) in text
        assert entry_text("tmall", key, "paid", 1, 2).startswith(record_key_of("tmall", key))
    assert record_key_of("tmall", "x") not in text  # a key that only appears inside another


def test_submitted_groups_build_on_each_other_before_they_are_written(store):
    """Groups handed to the writer back to back: the later ones see the orders, IDs and records of
    the earlier ones before their commit; flush makes all visible; subscribers see each commit."""
    seen: list[int] = []
    store.subscribe(lambda changes: seen.append(len(changes)))
    raw = "3912345678901234567"
    results = []
    for minute, state in enumerate(["created", "paid", "wms_received", "picked", "packed"]):
        page = Batch(
            "tmall", [obs(raw, state, minute), obs(f"39123456789012345{minute + 70}", "paid", minute)]
        )
        results += store.submit([page], T0 + timedelta(minutes=minute))
        results += store.submit([page], T0 + timedelta(minutes=minute))  # the same page again: repeats
    store.flush()
    assert [r.new_observations for r in results] == [2, 0] * 5
    assert [r.duplicate_observations for r in results] == [0, 2] * 5
    gid = store.global_id("tmall", raw)
    assert order(store, gid)["state"] == "packed" and count(store, order_ids) == 6
    assert records_stored(store) == 10 and seen == [2] * 5  # repeats alone change no order


def hold_the_writer(store, monkeypatch, error: Exception | None = None) -> threading.Event:
    """The writer waits in each transaction (at its source-health statement) until the returned
    event is set, then raises `error` or writes on."""
    release, real_count_health = threading.Event(), store._count_health

    def held(*args):
        assert release.wait(10)
        if error is not None:
            raise error
        real_count_health(*args)

    monkeypatch.setattr(store, "_count_health", held)
    return release


def test_a_failed_write_drops_the_plan_queued_behind_it(store, monkeypatch):
    """Two plans handed to the writer, the second built on the first's rows and IDs: when the
    first write fails, the second is not written either, flush raises the first's error, and
    both, submitted again, are written in full (nothing of them outlived the failure in memory)."""
    monkeypatch.setattr(store_module, "MAX_JOBS", 2)
    store.ingest(Batch("tmall", [obs("3912345678901234567", "paid", 0)], cursor="c0"), T0)
    release = hold_the_writer(store, monkeypatch, RuntimeError("store lost mid-write"))
    first = Batch("tmall", [obs("3912345678901234567", "shipped", 5), obs("3912345678901234568", "paid", 5)],
                  cursor="c1")  # fmt: skip
    second = Batch("tmall", [obs("3912345678901234568", "shipped", 9), obs("3912345678901234569", "paid", 9)],
                   cursor="c2")  # fmt: skip
    store.submit([first], T0 + timedelta(minutes=1))
    store.submit([second], T0 + timedelta(minutes=2))  # planned while the first waits in the writer
    release.set()
    with pytest.raises(RuntimeError, match="mid-write"):
        store.flush()
    assert store.cursor("tmall") == "c0"
    assert records_stored(store) == 1 and count(store, order_ids) == 1

    monkeypatch.delattr(store, "_count_health")  # the writer's own method again
    results = store.ingest_many([first], T0 + timedelta(minutes=3)) + store.ingest_many(
        [second], T0 + timedelta(minutes=4)
    )
    assert [(r.new_observations, r.duplicate_observations) for r in results] == [(2, 0), (2, 0)]
    assert store.cursor("tmall") == "c2" and records_stored(store) == 5 and count(store, order_ids) == 3
    gid = store.global_id("tmall", "3912345678901234568")
    assert order(store, gid)["state"] == "shipped" and gid.endswith("_000002")  # numbered once


def test_records_sharing_a_digest_are_each_stored_once(store, monkeypatch, request):
    """Every record key given the same digest: a record is still new unless its text is stored,
    whether the earlier records are committed, in a plan the writer holds, earlier in the same plan,
    or read back by a new store; repeats are still repeats, and the digests match the list."""
    store_module._planner.set_digest(lambda key_text: b"\x00\x00\x00\x00")
    request.addfinalizer(lambda: store_module._planner.set_digest(None))
    monkeypatch.setattr(store_module, "MAX_JOBS", 2)
    raw, minute = "3912345678901234567", iter(range(1, 100))

    def ingested(*batches: list[Observation]) -> list[tuple[int, int]]:
        results = store.submit([Batch("tmall", b) for b in batches], T0 + timedelta(minutes=next(minute)))
        store.flush()
        return [(r.new_observations, r.duplicate_observations) for r in results]

    assert ingested([obs(raw, "paid", 1)]) == [(1, 0)]
    assert ingested([obs(raw, "paid", 1), obs(raw, "wms_received", 2)]) == [(1, 1)]  # committed
    release = hold_the_writer(store, monkeypatch)
    store.submit([Batch("tmall", [obs(raw, "picked", 3)])], T0 + timedelta(minutes=3))
    in_writer = store.submit(  # planned while the writer holds the one before: its records not committed
        [Batch("tmall", [obs(raw, "picked", 3), obs(raw, "packed", 4)]),
         Batch("tmall", [obs(raw, "packed", 4), obs(raw, "shipped", 5)])],  # the first batch's, same plan
        T0 + timedelta(minutes=4),
    )  # fmt: skip
    release.set()
    store.flush()
    assert [(r.new_observations, r.duplicate_observations) for r in in_writer] == [(1, 1), (1, 1)]
    again = Store(store.engine, CHANNELS, "Asia/Shanghai")  # read back: digests from the table
    results = again.ingest(
        Batch("tmall", [obs(raw, s, i) for i, s in enumerate(["paid", "shipped", "delivered"])]), T0
    )
    assert (results.new_observations, results.duplicate_observations) == (1, 2)
    with store.engine.connect() as conn:
        (text,) = record_texts(conn, [store.global_id("tmall", raw)]).values()
        keys = conn.execute(select(orders.c.record_keys)).scalar_one()
    assert [r[2] for r in parse_records(text)] == [
        "paid",
        "wms_received",
        "picked",
        "packed",
        "shipped",
        "delivered",
    ]
    assert keys == b"\x00" * 4 * 6


@pytest.mark.parametrize("with_digests", [True, False])
def test_an_order_the_previous_version_wrote_moves_to_the_record_log(store, with_digests):
    """An order as the previous version left it (its records list in order_records, with or without
    their digests; none in the orders row): a repeat is still recognised from the list's text, the
    list moves to record_log and the orders row gets every record's digest when the order is first
    read, and a new record later is added after them."""
    raw = "3912345678901234567"
    store.ingest(Batch("tmall", [obs(raw, "paid", 1), obs(raw, "shipped", 2)]), T0)
    gid = store.global_id("tmall", raw)
    with store.engine.begin() as conn:
        (text,) = record_texts(conn, [gid]).values()
        keys = record_digests(parse_records(text)) if with_digests else None
        conn.execute(insert(order_records).values(global_id=gid, records=text, record_keys=keys))
        conn.execute(record_log.delete())
        conn.execute(orders.update().values(record_keys=None, records_tail=None))
    with store.engine.connect() as conn:
        assert count_records(conn) == 2 and record_texts(conn, [gid]) == {gid: text}
    older = Store(store.engine, CHANNELS, "Asia/Shanghai")
    assert older.ingest(Batch("tmall", [obs(raw, "shipped", 2)]), T0).duplicate_observations == 1
    with store.engine.connect() as conn:  # read and kept in memory: the row gets its digests at once
        assert conn.execute(select(orders.c.record_keys)).scalar_one() == record_digests(parse_records(text))
        assert conn.execute(select(func.count()).select_from(order_records)).scalar_one() == 0
        assert count_records(conn) == 2
    result = older.ingest(Batch("tmall", [obs(raw, "shipped", 2), obs(raw, "delivered", 30)]), T0)
    assert (result.new_observations, result.duplicate_observations) == (1, 1)
    with store.engine.connect() as conn:
        (text,) = record_texts(conn, [gid]).values()
        keys = conn.execute(select(orders.c.record_keys)).scalar_one()
        assert count_records(conn) == 3
        assert conn.execute(select(func.count()).select_from(record_log)).scalar_one() == 2
    assert [r[2] for r in parse_records(text)] == ["paid", "shipped", "delivered"]
    assert keys == record_digests(parse_records(text)) and len(keys) == 12
    assert older.ingest(Batch("tmall", [obs(raw, "paid", 1)]), T0).duplicate_observations == 1


@pytest.mark.parametrize("cached", [4, 1000], ids=["read-back", "cached"])
def test_rows_read_back_equal_the_rows_the_store_planned(store_url, monkeypatch, cached):
    """Every column the ingest changes is written: after random batches from several sources
    (states, dimensions, amounts, progress, manual actions, repeats), each order's row in the store
    equals the last row the change feed handed out, whether orders are read back between batches
    (a cache of 4) or come from the order cache's packed entries, which equal the stored rows."""
    monkeypatch.setattr(store_module, "ORDER_CACHE_SIZE", cached)
    engine = make_engine(store_url)
    init_schema(engine)
    roles = {"tmall": "channel", "pay": "payment", "wms": "wms", "sf": "carrier"}
    store = Store(engine, CHANNELS, "Asia/Shanghai", roles=roles)
    latest: dict[str, tuple] = {}
    store.subscribe(lambda changes: latest.update((new[0], new) for _old, new in changes))
    rng = random.Random(7)
    states = ["paid", "erp_accepted", "wms_received", "picked", "packed", "shipped", "in_transit",
              "delivered", "cancelled", "return_requested"]  # fmt: skip
    raws = [f"39123456789012{i:05d}" for i in range(30)]
    for step in range(16):
        source = rng.choice(list(roles))
        batch = []
        for _ in range(25):
            minutes = step * 30 + rng.randrange(30)
            state = rng.choice(states)
            at = T0 + timedelta(minutes=minutes)
            extra = {
                "dims": {
                    "city": rng.choice(["杭州市", "上海市", ""]),
                    "warehouse": rng.choice(["WH1", "WH2"]),
                },
                "amount_fen": rng.choice([None, 1999, 2599]),
                "created_at": rng.choice([None, T0]),
                "manual_at": rng.choice([None, None, at]),
                "progress_at": rng.choice([None, at + timedelta(minutes=45)]),
                "notified_at": at + timedelta(seconds=5) if source == "pay" else None,
            }
            key = f"{rng.choice(raws)}|{state}|{rng.randrange(2)}"  # the same key again is a repeat
            raw = key.split("|")[0]
            batch.append(Observation(source, key, "tmall", raw, state, at, **extra))
        store.ingest(Batch(source, batch, cursor=str(step)), T0 + timedelta(minutes=step * 30 + 30))
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        cursor.execute(store_module._ORDER_SELECT)
        stored = {row[0]: tuple(row) for row in cursor.fetchall()}
    assert len(stored) == 30
    assert stored == latest
    packed = {**store._orders.old, **store._orders.young}
    assert len(packed) == (30 if cached > 30 else len(packed))
    for gid, entry in packed.items():
        assert isinstance(entry, bytes)
        assert _planner.unpack_entry(entry) == (stored[gid], int(stored[gid][store_module._FACTS], 16))
    engine.dispose()
