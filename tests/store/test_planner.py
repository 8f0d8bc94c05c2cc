"""The compiled planner (store/_planner.c) against the Python rules it stands for."""

from __future__ import annotations

import gc
import json
import random
import sys
import zlib
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from collectors.types import Batch, Observation
from store import _planner
from store.db import init_schema, make_engine
from store.records import digest, key_of
from store.schema import to_ms
from store.store import ChannelIdentity, Store

ZONES = [UTC, ZoneInfo("Asia/Shanghai"), timezone(timedelta(hours=-3, minutes=-30))]


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
    st.sampled_from(ZONES),
)
def test_epoch_ms_as_schema_to_ms(moment, zone):
    aware = moment.replace(tzinfo=zone)
    assert _planner.to_ms(aware) == to_ms(aware)


def test_epoch_ms_at_millisecond_edges():
    rng = random.Random(7)
    base = datetime(2026, 12, 7, tzinfo=UTC)
    for _ in range(20_000):  # the float steps of timestamp() * 1000, truncated, at every sub-ms offset
        moment = base + timedelta(
            seconds=rng.randrange(10**8), microseconds=rng.choice([0, 1, 999, 500, 999_999])
        )
        assert _planner.to_ms(moment) == to_ms(moment)


def spelled(source: str, record_key: str) -> str:
    """A record's key text as the records' JSON spells it."""
    return f"[{json.dumps(source, ensure_ascii=False)},{json.dumps(record_key, ensure_ascii=False)},"


def crc(text: str) -> bytes:
    return zlib.crc32(text.encode()).to_bytes(4, "little")


@given(st.text(max_size=30), st.text(max_size=40))
def test_key_text_and_digest_are_the_json_spelling_and_its_crc32(source, record_key):
    head = key_of(source, record_key)
    assert head == spelled(source, record_key)
    assert digest(head) == crc(head)


def test_escaped_and_wide_keys():
    for record_key in ['a"b', "back\\slash", "tab\there", "订单|已发货", "emoji 📦", "\x00\x1f", ""]:
        head = key_of("京东", record_key)
        assert head == spelled("京东", record_key) and digest(head) == crc(head)


def test_the_fold_keeps_no_reference_it_does_not_hand_out(tmp_path):
    """Objects an observation carries are referenced by the store's rows only: once the store and
    the observations are gone, their reference counts are back where they started — but for the
    one shared copy of a dimension value that the packed order cache's string pool keeps (its
    list and its index: two references, whatever the number of orders)."""
    warehouse, amount = "仓-" + str(random.random()), 10**12 + random.randrange(1000)
    start = (sys.getrefcount(warehouse), sys.getrefcount(amount))

    def ingest() -> None:
        engine = make_engine(f"sqlite:///{tmp_path}/s.db")
        init_schema(engine)
        store = Store(engine, {"tmall": ChannelIdentity("TB")}, "Asia/Shanghai")
        t0 = datetime(2026, 12, 7, tzinfo=UTC)
        for step in range(3):
            batch = [
                Observation("tmall", f"{i}|{state}", "tmall", str(i), state, t0 + timedelta(minutes=step),
                            dims={"warehouse": warehouse}, amount_fen=amount, created_at=t0)
                for i in range(50)
                for state in ("paid", "shipped")[: step + 1]
            ]  # fmt: skip
            store.ingest(Batch("tmall", batch), t0 + timedelta(minutes=step))
        engine.dispose()

    ingest()
    gc.collect()
    assert (sys.getrefcount(warehouse), sys.getrefcount(amount)) == (start[0] + 2, start[1])
    ingest()  # a second store shares the pooled copy: nothing more is kept
    gc.collect()
    assert (sys.getrefcount(warehouse), sys.getrefcount(amount)) == (start[0] + 2, start[1])


def test_the_latest_dimension_value_wins_however_many_records_an_order_gets_at_once(tmp_path):
    """An order's records in one batch are folded in time order (insertion for a few, a sort for
    many): the warehouse of the latest record is the row's, ties kept in arrival order."""
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    init_schema(engine)
    store = Store(engine, {"tmall": ChannelIdentity("TB")}, "Asia/Shanghai")
    t0 = datetime(2026, 12, 7, tzinfo=UTC)
    rng = random.Random(3)
    for n in (5, 40):
        minutes = [rng.randrange(1, 30) for _ in range(n)]
        batch = [
            Observation("tmall", f"{n}-{i}", "tmall", str(n), "paid", t0 + timedelta(minutes=m),
                        dims={"warehouse": f"WH{i}"})
            for i, m in enumerate(minutes)
        ]  # fmt: skip
        store.ingest(Batch("tmall", batch), t0 + timedelta(hours=1))
        latest = max(range(n), key=lambda i: (minutes[i], i))  # the last of the latest time
        with engine.connect() as conn:
            warehouse, paid_at = conn.exec_driver_sql(
                "SELECT warehouse, paid_at FROM orders WHERE raw_order_id = ?", (str(n),)
            ).one()
        assert warehouse == f"WH{latest}" and paid_at == to_ms(t0 + timedelta(minutes=min(minutes)))
    engine.dispose()


def test_look_up_takes_the_first_map_then_the_recent_cache_as_its_get_does():
    """look_up is `first.get(k) or recent.get(k)` per key: a hit in the old generation moves to the
    young one, and the young one turns old when full — the same contents as _Recent.get leaves."""
    from store.store import _Recent

    def packed(k, text: str) -> bytes:  # the cache holds packed entries, handed out unpacked
        return _planner.pack_entry(((text, k), k))

    rng = random.Random(11)
    by_python, by_c = _Recent(8), _Recent(8)
    for recent in (by_python, by_c):
        recent.update({k: packed(k, f"v{k}") for k in range(6)})
        recent.update({k: packed(k, f"v{k}") for k in range(6, 12)})
    first = {20: "first", 3: "shadow"}
    for _ in range(200):
        keys = [rng.randrange(25) for _ in range(rng.randrange(1, 6))]
        expected = {k: first.get(k) or by_python.get(k) for k in keys}
        expected = {k: _planner.unpack_entry(v) if isinstance(v, bytes) else v for k, v in expected.items()}
        found, missing = _planner.look_up(keys, (first,), by_c)
        assert found == {k: v for k, v in expected.items() if v is not None}
        assert missing == [k for k in keys if expected[k] is None]
        assert (by_c.young, by_c.old) == (by_python.young, by_python.old)
        if rng.random() < 0.2:  # new committed entries now and then
            fresh = {k: packed(k, "new") for k in (rng.randrange(25) for _ in range(3))}
            by_python.update(fresh), by_c.update(fresh)


@given(
    st.lists(st.tuples(st.integers(), st.text(max_size=3), st.none(), st.binary(max_size=3)), max_size=40),
    st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=1, max_size=6).map(tuple)),
    st.integers(1, 20),
)
def test_parameter_chunks_hold_whole_rows_in_order(rows, columns, max_params):
    chunks = _planner.param_chunks(rows, columns, max_params)
    take = columns if columns is not None else range(4)
    flat = [row[p] for row in rows for p in take]
    assert [value for chunk in chunks for value in chunk] == flat  # every value, once, in order
    per_row = len(take)
    assert all(len(chunk) % per_row == 0 for chunk in chunks)  # whole rows only
    assert all(len(chunk) <= max(max_params, per_row) for chunk in chunks)
    assert len(chunks) == -(-len(rows) // max(1, max_params // per_row))  # as few as the bound allows


def test_parameter_chunks_name_the_bad_row():
    held = object()
    rows = [(1, held), (2,)]
    for columns, error, text in [
        (None, ValueError, "row 1 has 1 values"),
        ((0, 1), IndexError, "row 1 has no position 1"),
    ]:
        try:
            _planner.param_chunks(rows, columns, 10)
        except error as caught:
            assert text in str(caught)
        else:
            raise AssertionError("no error")
    before = sys.getrefcount(held)
    for _ in range(1000):
        try:
            _planner.param_chunks(rows, (0, 1), 10)
        except IndexError:
            pass
    assert sys.getrefcount(held) == before  # a half-built chunk releases its values


VALUES = st.one_of(
    st.none(),
    st.integers(),  # beyond 64 bits too
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=12),  # lone surrogates included: such rows are left unpacked
    st.binary(max_size=12),
)


@given(
    st.one_of(st.none(), st.lists(VALUES, max_size=50).map(tuple)),
    st.one_of(st.integers(0, 2**64 - 1), st.integers(min_value=0)),
)
def test_packed_entries_unpack_to_equal_rows(row, bits):
    packed = _planner.pack_entry((row, bits))
    if row is not None and any(isinstance(v, str) and not _utf8_ok(v) for v in row):
        assert packed is None
        return
    assert isinstance(packed, bytes)
    unpacked = _planner.unpack_entry(packed)
    assert unpacked == (row, bits)
    assert unpacked[0] is None or [type(v) for v in unpacked[0]] == [type(v) for v in row]


def _utf8_ok(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def test_packed_entries_share_low_cardinality_strings_and_leave_other_types_out():
    """The store's order cache: a channel or dimension value is one object however many entries
    hold it; a row with a float (no such column) is not packed, so it is read back when needed."""
    import store.store as store_module

    width = store_module._WIDTH
    rows = []
    for i in range(3):
        row = [None] * width
        row[store_module._GLOBAL_ID] = f"TB_20260209_{i:06d}"
        row[store_module._CHANNEL] = "".join(["tm", "all"])  # a new object each time
        rows.append(tuple(row))
    packed = _planner.pack_entries({row[0]: (row, 1) for row in rows})
    channels = [_planner.unpack_entry(p)[0][store_module._CHANNEL] for p in packed.values()]
    assert channels == ["tmall"] * 3 and channels[0] is channels[1] is channels[2]
    ids = [_planner.unpack_entry(p)[0][store_module._GLOBAL_ID] for p in packed.values()]
    assert ids == [row[0] for row in rows]
    odd = (*rows[0][:-1], 1.5)
    assert _planner.pack_entries({"a": (odd, 0), "b": (rows[1], 0)}).keys() == {"b"}


def test_a_cut_or_damaged_packed_entry_is_an_error_not_a_crash():
    row = ("TB_1", "tmall", None, -7, 2**70, b"\x00\xff", "杭州市")
    packed = _planner.pack_entry((row, 2**65))
    for end in range(len(packed)):
        try:
            _planner.unpack_entry(packed[:end])
        except ValueError:
            pass
        else:
            raise AssertionError(f"a packed entry cut at {end} unpacked")
    try:
        _planner.unpack_entry(packed + b"\x00")
    except ValueError as error:
        assert "left over" in str(error)
    else:
        raise AssertionError("extra bytes unpacked")


def test_look_up_unpacks_what_the_recent_cache_holds_and_nothing_else():
    from store.store import _Recent

    recent = _Recent(8)
    entry = (("TB_1", "tmall", 5), 3)
    recent.update({"TB_1": _planner.pack_entry(entry)})
    planned = {"TB_2": (("TB_2", "pdd", 6), 1)}  # plans hold rows as they are
    found, missing = _planner.look_up(["TB_1", "TB_2", "TB_3"], (planned,), recent)
    assert found == {"TB_1": entry, "TB_2": planned["TB_2"]} and missing == ["TB_3"]


def test_the_id_cache_answers_as_the_recent_cache_it_replaced():
    """IdCache (C, packed) against store._Recent over random lookups and commits: the same IDs found
    and missed at every step, the same turnover of generations; keys it cannot hold are misses."""
    from store.store import _Recent

    rng = random.Random(5)
    model, cache = _Recent(10), _planner.IdCache(10)
    keys = [("tmall", f"{i:018d}") for i in range(20)] + [("京东", f"订单{i}") for i in range(10)]
    gid = {key: f"{key[0]}_{n:06d}" for n, key in enumerate(keys)}
    planned = {}
    for step in range(500):
        asked = [rng.choice(keys) for _ in range(rng.randrange(1, 8))]
        expected = {k: planned.get(k) or model.get(k) for k in asked}
        found, missing = _planner.look_up_ids(asked, (planned,), cache)
        assert found == {k: v for k, v in expected.items() if v is not None}, step
        assert missing == [k for k in asked if expected[k] is None], step
        young, old = cache.generations()
        assert young == model.young and set(model.old) <= set(old) and len(young) < 5
        if rng.random() < 0.3:  # a plan commits the IDs it resolved
            fresh = {k: gid[k] for k in rng.sample(keys, 4)}
            model.update(fresh), cache.update(fresh)
        planned = {k: gid[k] for k in rng.sample(keys, 2)} if rng.random() < 0.3 else {}
    assert _planner.look_up_ids([("a", "\ud800"), "odd"], (), cache) == ({}, [("a", "\ud800"), "odd"])
    cache.update({("a", "\ud800"): "X", ("b", "1"): None})  # left out, no error
    assert ("b", "1") not in {**cache.generations()[0], **cache.generations()[1]}
