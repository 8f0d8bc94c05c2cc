"""Source faults injected into the real local servers while the whole service runs a busy hour.

Each test: the service keeps running, the faulty source (and only it) is marked down with a typed,
readable error, a "no data" alert fires and resolves, and once the fault ends the source catches up:
the store ends exactly as in an undisturbed run and as the simulator's truth — no gap, no duplicate.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import timedelta

import pytest
from faultkit import (
    TcpProxy,
    cursor_map,
    health_of,
    make_replay,
    observation_keys,
    sim_states,
    stored,
)
from sqlalchemy import select
from sqlalchemy.engine import make_url

from sim.channels.common import Response
from sim.channels.server import route
from store.schema import quarantine

FAULT_AT = timedelta(minutes=20)  # into the hour: orders are flowing
FAULT_FOR = timedelta(minutes=5)


@pytest.fixture(scope="module")
def steady(tmp_path_factory):
    """The same hour without any fault: what every faulty run must end with."""
    replay = make_replay(tmp_path_factory.mktemp("steady"))
    try:
        replay.run_until(replay.world.end)
        replay.finish(0)
        rows, obs = stored(replay.service.engine)
        return {
            "rows": rows,
            "obs": obs,
            "truth": sim_states(replay.world, replay.clock.now()),
            "cursors": set(cursor_map(replay)),
        }
    finally:
        replay.close()


def _transitions(replay, rule: str, source: str) -> list[str]:
    return [
        t.to_state for t in replay.transitions if t.rule == rule and dict(t.labels).get("source") == source
    ]


def _run_with_fault(replay, inject, clear, source: str, shared: tuple[str, ...] = ()) -> dict:
    """Run to the fault, hold it FAULT_FOR, check the source is marked, clear it, run to the end."""
    start = replay.world.start
    replay.run_until(start + FAULT_AT)
    assert health_of(replay, source)["up"]
    inject()
    replay.run_until(start + FAULT_AT + FAULT_FOR)
    during = health_of(replay, source)
    others = [h for h in replay.service.store.health() if h["source"] not in (source, *shared)]
    clear()
    replay.run_until(replay.world.end)
    replay.finish(0)
    assert all(h["up"] for h in others), "a fault in one source must not mark the others"
    return during


def _assert_caught_up(replay, steady, source: str) -> None:
    rows, obs = stored(replay.service.engine)
    assert health_of(replay, source)["up"]
    keys = observation_keys(replay)
    assert not [k for k, n in Counter(keys).items() if n > 1]  # nothing twice
    assert obs == steady["obs"]  # nothing lost: every observation of the undisturbed run
    assert rows == steady["rows"]
    assert {(r["channel"], r["raw_order_id"]): r["state"] for r in rows} == sim_states(
        replay.world, replay.clock.now()
    )
    assert _transitions(replay, "source_silent", source) == ["firing", "resolved"]
    sent = [n["body"]["markdown"]["content"] for n in replay.sim.wecom.received]
    assert any(source in body for body in sent)  # the no-data message names the source


HTTP_FAULTS = [
    # (channel, fault kind, fault params, error class in health, config overrides)
    ("douyin", "timeout", {"delay": 0.3}, "timeout", {"sources.douyin.timeout": "0.1s"}),
    ("jd", "server_error", {}, "http_5xx", {}),
    ("pdd", "server_error", {"mode": "platform"}, "unavailable", {}),  # the platform says "busy"
    ("tmall", "rate_limited", {"ban": 45}, "rate_limited", {}),
    ("youzan", "auth_expired", {}, "auth_expired", {}),
    ("pdd", "garbage", {"style": "truncated"}, "schema", {}),
    ("tmall", "garbage", {"style": "html"}, "schema", {}),
]


@pytest.mark.parametrize(
    ("channel", "kind", "params", "error_class", "overrides"),
    HTTP_FAULTS,
    ids=[f"{c}-{k}-{'-'.join(map(str, p.values()))}" for c, k, p, *_ in HTTP_FAULTS],
)
def test_channel_fault_marks_the_source_alerts_and_catches_up(
    tmp_path, steady, caplog, channel, kind, params, error_class, overrides
):
    replay = make_replay(tmp_path, overrides)
    faults = replay.sim.channels.faults
    try:
        with caplog.at_level(logging.WARNING, logger="collectors"):
            during = _run_with_fault(
                replay, lambda: faults.set(channel, kind, **params), lambda: faults.clear(channel), channel
            )
        assert not during["up"] and during["last_error_class"] == error_class
        assert (
            during["last_error"].startswith(f"{channel}: ") and len(during["last_error"]) > len(channel) + 4
        )
        assert during["consecutive_failures"] >= 1
        retries = [r.getMessage() for r in caplog.records if f"{channel} [{error_class}]" in r.getMessage()]
        if kind == "rate_limited":  # the ban's Retry-After is honoured, not the 1 s first backoff
            assert retries and all("retrying in 45 s" in m for m in retries)
        elif kind == "auth_expired" or kind == "garbage":
            assert not retries  # a person must act (or the next poll reads again): no hammering
        else:
            assert "retrying in 1 s" in retries[0]
        _assert_caught_up(replay, steady, channel)
    finally:
        replay.close()


def test_records_vanishing_mid_pagination_leave_no_gap(tmp_path, steady):
    # Small pages so that each poll walks several; the newest record moves away during each walk.
    replay = make_replay(tmp_path, {"sources.tmall.page_size": 2})
    faults = replay.sim.channels.faults
    try:
        start = replay.world.start
        replay.run_until(start + FAULT_AT)
        faults.set("tmall", "vanish_mid_page", count=1, times=3)
        replay.run_until(start + FAULT_AT + FAULT_FOR)
        assert any(c["page"] > 1 for c in replay.sim.channels.calls if c["channel"] == "tmall")
        replay.run_until(replay.world.end)
        replay.finish(0)
        rows, obs = stored(replay.service.engine)
        assert obs == steady["obs"] and rows == steady["rows"]
        assert not [k for k, n in Counter(observation_keys(replay)).items() if n > 1]
    finally:
        replay.close()


def test_a_changed_record_schema_is_quarantined_naming_source_record_and_field(tmp_path, steady):
    """The platform renames `status` for a while: those records go to quarantine, none vanish."""
    replay = make_replay(tmp_path)
    server = replay.sim.channels
    original = server.serve
    renamed: set[str] = set()

    def renaming(req):
        response = original(req)
        if route(req.path) != "tmall" or response.status != 200:
            return response
        doc = json.loads(response.body)
        trades = doc.get("trades_sold_increment_get_response", {}).get("trades", {}).get("trade", [])
        for trade in trades:
            trade["trade_status"] = trade.pop("status")
            renamed.add(trade["tid_str"])
        return Response(200, json.dumps(doc, ensure_ascii=False).encode(), response.headers)

    try:
        start = replay.world.start
        replay.run_until(start + FAULT_AT)
        server.serve = renaming
        replay.run_until(start + FAULT_AT + FAULT_FOR)
        server.serve = original
        replay.run_until(replay.world.end)
        replay.finish(0)
        with replay.service.engine.connect() as conn:
            held = [r._asdict() for r in conn.execute(select(quarantine))]
        assert held and renamed
        assert {q["source"] for q in held} == {"tmall"}
        assert {q["field"] for q in held} == {"status"}
        assert all("required field is missing" in q["reason"] for q in held)
        assert {q["record_key"] for q in held} == renamed  # every renamed record, named by its id
        assert health_of(replay, "tmall")["quarantined_total"] >= len(held)
        # Nothing else is touched, and what the renamed records said came back once they changed again.
        rows, _ = stored(replay.service.engine)
        truth = sim_states(replay.world, replay.clock.now())
        states = {(r["channel"], r["raw_order_id"]): r["state"] for r in rows}
        assert {k: v for k, v in states.items() if k[0] != "tmall"} == {
            k: v for k, v in truth.items() if k[0] != "tmall"
        }
        missing = {k[1] for k, v in truth.items() if k[0] == "tmall" and states.get(k) != v}
        assert missing <= renamed  # any tmall difference is a quarantined record, never a silent drop
    finally:
        server.serve = original
        replay.close()


@pytest.mark.parametrize("server", ["mariadb", "postgresql"])
def test_database_source_restarting_marks_it_and_catches_up(request, tmp_path, steady, server):
    """The WMS database drops every connection and refuses new ones for five minutes."""
    real = request.getfixturevalue("mysql_url" if server == "mariadb" else "pg_url")
    url = make_url(real)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or (3306 if server == "mariadb" else 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    overrides = {"sources.wms.url": proxied, "sources.wms_returns.url": proxied}
    replay = make_replay(tmp_path, overrides, wms_url=real)
    try:
        during = _run_with_fault(replay, proxy.down, proxy.up, "wms", shared=("wms_returns",))
        assert not during["up"] and during["last_error_class"] in ("unavailable", "timeout")
        assert during["last_error"].startswith("wms: ")
        _assert_caught_up(replay, steady, "wms")
    finally:
        replay.close()
        proxy.close()
