"""Push intake: Kuaidi100 tracking pushes read by the service as config.toml configures them, with
forged, tampered, unsigned, param-less and signed-garbage pushes placed between the genuine ones.

Each bad push ends in quarantine naming the source, its line (or its record) and the field that
failed; it changes no order. Every genuine push is stored exactly once, through a restart and a
re-read of the whole log, and no poll fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service
from sim.scenario import load_scenario
from sim.tracking import DEFAULT_SALT, TrackingLog, push_line
from sim.world import World
from store.records import observation_rows
from store.schema import cursors, from_ms, orders, quarantine

SOURCE = "kuaidi100"


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(load_scenario("clean_day", scale=0.05).with_hops())


def _service(tmp_path, clock: ManualClock, log_path) -> Service:
    """The service with only the Kuaidi100 source on, over a SQLite store in tmp_path."""
    names = load_config(DEFAULT_PATH).sources
    overrides = {f"sources.{name}.enabled": False for name in names if name != SOURCE}
    overrides.update(
        {
            f"sources.{SOURCE}.enabled": True,
            f"sources.{SOURCE}.path": str(log_path),
            "service.store_url": f"sqlite:///{tmp_path / 'store.db'}",
            "alerts.rules": [],
        }
    )
    return Service(load_config(DEFAULT_PATH, overrides=overrides), clock, notifiers={})


def _signed(param: str, salt: str = DEFAULT_SALT) -> str:
    return hashlib.md5((param + salt).encode("utf-8")).hexdigest().upper()


def _delivered(order, at) -> dict:
    """`order`'s push at `at` rewritten to claim the parcel was signed for (签收)."""
    doc = json.loads(push_line(order, at)["param"])
    doc["status"] = "shutdown"
    doc["lastResult"].update(state="3", ischeck="1")
    doc["lastResult"]["data"].insert(
        0, {**doc["lastResult"]["data"][0], "context": "已签收", "status": "签收"}
    )
    return doc


def _bad_pushes(victim, stranger_id: str) -> list[tuple[str, str, str, str]]:
    """(name, line text, failing field, phrase of the reason); "record" keys are named by the test."""
    at = victim.track_pushes[0]
    genuine = push_line(victim, at)
    claim = json.dumps(_delivered(victim, at), ensure_ascii=False, separators=(",", ":"))
    wrong_shape = json.dumps({"status": "polling", "lastResult": {"state": "3", "data": []}})
    bad = {
        # signed with another salt, claiming the victim's parcel was delivered
        "forged": ({**genuine, "param": claim, "sign": _signed(claim, "someone-else")}, "sign", "mismatch"),
        # a genuine push whose param was changed after it was signed
        "tampered": ({**genuine, "param": claim}, "sign", "signature mismatch"),
        # a forged push for an order that does not exist, signed with a guessed salt
        "stranger": (
            {**genuine, "query": {**genuine["query"], "orderId": stranger_id}, "sign": _signed(claim, "")},
            "sign",
            "signature mismatch",
        ),
        "unsigned": ({k: v for k, v in genuine.items() if k != "sign"}, "sign", "unsigned push"),
        "empty_sign": ({**genuine, "sign": ""}, "sign", "unsigned push"),
        "param_less": ({k: v for k, v in genuine.items() if k != "param"}, "param", "without its param"),
        "param_not_text": ({**genuine, "param": {"lastResult": {}}}, "param", "without its param"),
        # correctly signed, but what was signed is not a tracking document
        "signed_html": (
            {**genuine, "param": "<html>502</html>", "sign": _signed("<html>502</html>")},
            "param",
            "not valid JSON",
        ),
        "signed_list": (
            {**genuine, "param": '["3"]', "sign": _signed('["3"]')},
            "param.lastResult.state",
            "required field is missing",
        ),
        "signed_no_scans": (
            {**genuine, "param": wrong_shape, "sign": _signed(wrong_shape)},
            "param.lastResult.data[0].ftime",
            "time of the current status is missing",
        ),
        "not_an_object": (["param", "sign"], "$", "expected an object"),
    }
    lines = [
        (name, json.dumps(doc, ensure_ascii=False), field, phrase)
        for name, (doc, field, phrase) in bad.items()
    ]
    lines.append(("not_json", "param=%7B%22status%22&sign=ABC", "$", "is not valid JSON"))
    return lines


def test_bad_pushes_between_genuine_ones_are_quarantined_and_genuine_ones_stored_once(tmp_path, world):
    log = TrackingLog(tmp_path / "tracking")
    clock = ManualClock(world.start)
    service = _service(tmp_path, clock, log.path)
    delivered_truth = {
        o.raw_id
        for o in world.orders
        if o.scans and o.scans[-1][1] == 3 and o.track_pushes[-1] >= o.scans[-1][0]
    }
    pushed = [o for o in world.orders if o.track_pushes]
    victim = next(o for o in pushed if o.raw_id not in delivered_truth)
    stranger = str(int(victim.raw_id) + 7) if victim.raw_id.isdigit() else victim.raw_id + "7"
    assert stranger not in {o.raw_id for o in world.orders}
    bad = _bad_pushes(victim, stranger)
    times = sorted(t for o in pushed for t in o.track_pushes)
    moments = [times[len(times) * k // 6] for k in range(1, 6)] + [world.end]
    expected: dict[int, tuple[str, str, str]] = {}  # line -> (record key or "", field, phrase)
    replayed = None
    try:
        for i, moment in enumerate(moments):
            clock.set(moment)
            log.sync(world, moment)
            for name, text, field, phrase in bad[i * 2 : i * 2 + 2] if i < 5 else bad[10:]:
                line = len(log.path.read_bytes().splitlines()) + 1
                log.write_raw(text + "\n")
                # a push whose id can be read is keyed by it, any other by its line
                keyed = name in ("signed_list", "signed_no_scans")
                expected[line] = (victim.raw_id if keyed else "", field, phrase)
            if i == 2:  # a genuine push received twice (Kuaidi100 retries when the answer is lost)
                replayed = log.path.read_text(encoding="utf-8").splitlines()[0]
                log.write_raw(replayed + "\n")
            outcome = service.poll_source(SOURCE)
            assert outcome.ok, outcome.error
        assert replayed is not None and len(expected) == len(bad)
        inode = os.stat(log.path).st_ino
        lines_total = len(log.path.read_bytes().splitlines())

        def held() -> list[dict]:
            with service.engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(quarantine)).mappings()]

        rows = held()
        assert {r["source"] for r in rows} == {SOURCE}
        by_line = {}
        for r in rows:
            line = int(re.match(r"line (\d+)\b", r["reason"]).group(1))
            assert line not in by_line, f"line {line} quarantined twice"
            by_line[line] = r
        assert set(by_line) == set(expected)
        for line, (record, field, phrase) in expected.items():
            r = by_line[line]
            assert r["record_key"] == (record or f"{inode}:{line}"), r
            assert r["field"] == field and phrase in r["reason"], r
            assert r["reason"].startswith(f"line {line}"), r
            assert r["raw"]
        health = next(h for h in service.store.health() if h["source"] == SOURCE)
        assert health["up"] and health["quarantined_total"] == len(bad)
        assert health["records_total"] == lines_total

        def stored() -> tuple[Counter, dict, set]:
            with service.engine.connect() as conn:
                ids = {r.global_id: r.raw_order_id for r in conn.execute(select(orders))}
                obs = [
                    (ids[gid], key, state, from_ms(at))
                    for gid, source, key, state, at, _ in observation_rows(conn)
                    if source == SOURCE
                ]
            keys = Counter(key for _, key, _, _ in obs)
            transit = {raw: at for raw, _, state, at in obs if state == "in_transit"}
            return keys, transit, {raw for raw, _, state, _ in obs if state == "delivered"}

        keys, transit, delivered = stored()
        assert max(keys.values()) == 1  # every genuine push once, the replayed one included
        assert transit == {o.raw_id: o.events["in_transit"] for o in pushed}
        assert delivered == delivered_truth and victim.raw_id not in delivered
        assert sum(keys.values()) == len(transit) + len(delivered)
        assert not [k for k in keys if k.startswith(stranger)]

        # A restart reads nothing again; a lost cursor re-reads the whole log and stores nothing twice.
        service.stop()
        service = _service(tmp_path, clock, log.path)
        assert service.poll_source(SOURCE).totals.records == 0
        with service.engine.begin() as conn:
            conn.execute(delete(cursors).where(cursors.c.source == SOURCE))
        again = service.poll_source(SOURCE)
        assert again.ok and again.totals.records == lines_total
        assert again.totals.new_observations == 0 and again.totals.quarantined == 0
        assert stored()[0] == keys and len(held()) == len(bad)
    finally:
        service.stop()


def test_a_source_without_its_salt_reads_nothing_unverified(tmp_path, world):
    """A signed source whose salt is rotated on Kuaidi100's side only: every push is quarantined
    as a signature mismatch (the operator sees it at once), none is stored."""
    log = TrackingLog(tmp_path / "tracking", salt="rotated-salt-on-kuaidi100")
    log.sync(world, world.start + timedelta(hours=20))
    clock = ManualClock(world.start + timedelta(hours=20))
    service = _service(tmp_path, clock, log.path)
    try:
        outcome = service.poll_source(SOURCE)
        lines = len(log.path.read_bytes().splitlines())
        assert outcome.ok and lines > 0
        assert outcome.totals.new_observations == 0 and outcome.totals.quarantined == lines
        with service.engine.connect() as conn:
            fields = Counter(r.field for r in conn.execute(select(quarantine)))
        assert fields == Counter({"sign": lines})
    finally:
        service.stop()


def test_a_polls_success_is_written_with_the_pages_it_read(tmp_path, world, monkeypatch):
    """A poll that read pages records its success in their transaction (Store.submit's
    `succeeded`), not in a commit of its own; the health row says when either way."""
    log = TrackingLog(tmp_path / "tracking")
    clock = ManualClock(world.start)
    service = _service(tmp_path, clock, log.path)
    alone = []
    real = service.store.record_poll_success

    def record_alone(name, now):
        alone.append(now)
        real(name, now)

    monkeypatch.setattr(service.store, "record_poll_success", record_alone)

    def last_success():
        return next(r for r in service.store.health() if r["source"] == SOURCE)["last_success_at"]

    try:
        middle = world.start + (world.end - world.start) / 2
        clock.set(middle)
        log.sync(world, middle)
        assert service.poll_source(SOURCE).totals.new_observations > 0
        assert alone == [] and last_success() == middle
        clock.set(middle + timedelta(minutes=1))
        assert service.poll_source(SOURCE).totals.records == 0  # nothing new in the log
        assert last_success() == middle + timedelta(minutes=1)
    finally:
        service.stop()
