"""Incremental refresh (aggregates patched from the store's change feed) equals a full computation,
through the awkward changes: late earlier observations, skewed clocks, exits, time passing alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collectors.types import Batch, Observation
from metrics import kpi as kpi_module
from metrics.kpi import KpiEngine, dwell_floor
from store.store import Store

T0 = datetime(2026, 2, 12, 12, 0, 30, tzinfo=UTC)
WINDOW, SLA = timedelta(hours=2), timedelta(minutes=15)
TIMEOUTS = {
    "paid": timedelta(minutes=15),
    "picked": timedelta(minutes=12),
    "return_requested": timedelta(hours=24),
}


def ob(raw: str, state: str, minutes: float, channel: str = "tmall", n: int = 0, **dims) -> Observation:
    at = T0 + timedelta(minutes=minutes)
    return Observation("src", f"{raw}|{state}|{n}", channel, raw, state, at, dims, created_at=None)


def feed(store: Store, now_minutes: float, *observations: Observation) -> None:
    store.ingest(Batch("src", list(observations)), T0 + timedelta(minutes=now_minutes))


def values(snapshot) -> dict:
    return {(v.kpi, v.labels): v.value for v in snapshot.values}


WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "7d": timedelta(days=7)}


def full(store: Store, now: datetime):
    return KpiEngine(store.engine, WINDOW, SLA, TIMEOUTS, dwell_window=WINDOW, windows=WINDOWS).compute(now)


def test_refresh_equals_full_computation_through_awkward_changes(store, monkeypatch):
    feed(store, 1, ob("1", "created", 0), ob("1", "paid", 1), ob("2", "paid", 0.5, "jd", warehouse="WH1"))
    engine = KpiEngine(store.engine, WINDOW, SLA, TIMEOUTS, store=store, dwell_window=WINDOW, windows=WINDOWS)
    loads = []  # full reads of the store: only the first refresh may make one
    full_load = engine._load
    monkeypatch.setattr(engine, "_load", lambda conn, now: loads.append(now) or full_load(conn, now))
    now = T0 + timedelta(minutes=2)
    assert values(engine.refresh(now)) == values(full(store, now))  # the first refresh is a full one

    steps = [
        # reaches the WMS; a fast cancel; a new order on another channel
        (20, [ob("1", "wms_received", 19, warehouse="WH1", city="杭州市"), ob("3", "paid", 18, "jd"),
              ob("3", "cancelled", 18.5, "jd"), ob("1", "erp_accepted", 10), ob("2", "erp_accepted", 19.5, "jd")]),
        # a late observation moves an order's payment earlier (across a minute and a dwell bucket)
        (25, [ob("2", "paid", -7, "jd", n=1), ob("2", "wms_received", 24, "jd", warehouse="WH2")]),
        # a skewed source writes 40 minutes ahead; a pick that will stall; a return
        (30, [ob("4", "paid", 70), ob("4", "wms_received", 71), ob("1", "picked", 29),
              ob("5", "delivered", 28), ob("5", "return_requested", 29, cs_group="cs_day")]),
        (45, []),  # time alone: the pick stalls, the paid-only order goes stuck
        (75, [ob("2", "picked", 74, "jd"), ob("2", "packed", 74.5, "jd"),  # the skewed events come due
              ob("1", "packed", 72), ob("1", "shipped", 73)]),
        (200, [ob("6", "paid", 199)]),  # the first orders fall out of the 2 h window
        (300, [ob("6", "erp_accepted", 199.5)]),  # late news: the ERP took 6 long ago; not in the WMS
        # two days on, an old order reaches the WMS: only the hour cells of the 7 d window hold it
        (2 * 24 * 60, [ob("6", "wms_received", 2 * 24 * 60 - 1)]),
        (8 * 24 * 60, []),  # and a week later even those have gone
    ]  # fmt: skip
    seen = {}
    for minutes, batch in steps:
        if batch:
            feed(store, minutes, *batch)
        now = T0 + timedelta(minutes=minutes)
        seen[minutes] = snapshot = engine.refresh(now)
        got, expected = values(snapshot), values(full(store, now))
        assert got == expected, (minutes, set(got.items()) ^ set(expected.items()))

    assert len(loads) == 1  # every later refresh patched the aggregates from the change feed
    at75 = seen[
        75
    ]  # paid dwell: 3 cancelled after 30 s, 4 after 60 s, 1 after 9 min, 2 after 26.5 min (the ERP)
    assert at75.get("dwell_orders", state="paid") == 4
    assert (at75.get("dwell_p50_seconds", state="paid"), at75.get("dwell_p95_seconds", state="paid")) == (
        60,
        1590,
    )
    assert seen[45].get("stuck_orders", state="picked") == 1  # picked at 29, 12 min timeout
    assert seen[30].get("stuck_orders", state="picked") == 0
    assert seen[200].get("dwell_orders", state="paid") == 0  # everything left paid before the window
    # 7 d sync: orders 1, 2 and 4 (3 was cancelled before the WMS, 5 never paid, 6 too recent);
    # two days on, 6 too, which has reached the WMS
    assert seen[200].get("sync_paid_orders", window="7d") == 3
    two_days = seen[2 * 24 * 60]
    assert (
        two_days.get("sync_paid_orders", window="7d"),
        two_days.get("sync_unreached_orders", window="7d"),
    ) == (
        4,
        0,
    )
    assert two_days.get("sync_paid_orders") == 0  # nothing paid in the 2 h KPI window
    assert seen[8 * 24 * 60].get("sync_paid_orders", window="7d") == 0
    # ERP -> WMS over the week: 1 and 2 reached the WMS after the ERP accepted them; 6 waited two
    # days, its acceptance hour then held only by the hour cells the change feed patched
    erp_wms = [
        (
            seen[m].get("hop_sync_orders", hop="erp_wms", window="7d"),
            seen[m].get("hop_sync_unreached_orders", hop="erp_wms", window="7d"),
        )
        for m in (200, 300, 2 * 24 * 60)
    ]
    assert erp_wms == [(2, 0), (3, 1), (3, 0)]  # fmt: skip
    assert seen[300].get("hop_sync_orders", hop="erp_wms") == 1  # the 2 h KPI window holds only 6
    assert seen[300].get("manual_intervention_orders", window="1h") == 0
    assert seen[200].get("paid_orders", window="5m") == 1  # 6, paid a minute ago


def test_stuck_and_sync_edges_are_exact_to_the_millisecond(store):
    feed(store, 0, ob("1", "paid", 0), ob("2", "paid", 0.25))
    engine = KpiEngine(store.engine, WINDOW, SLA, TIMEOUTS, store=store, dwell_window=WINDOW, windows=WINDOWS)
    engine.refresh(T0)
    just_before = T0 + SLA + timedelta(seconds=14, milliseconds=999)
    at = T0 + SLA + timedelta(seconds=15)
    assert engine.refresh(just_before).get("stuck_orders", state="paid") == 1
    assert engine.refresh(at).get("stuck_orders", state="paid") == 2
    assert engine.refresh(at).get("sync_paid_orders") == 2
    assert values(engine.refresh(at)) == values(full(store, at))


def test_return_break_ratio_through_refresh_and_full(store):
    """Breaks are returns held 24 h in one return state; active returns are the open ones plus those
    refunded within the window. Time alone moves both; refresh and full computation agree."""
    feed(
        store,
        20,
        ob("r1", "delivered", 0), ob("r1", "return_requested", 1),
        ob("r2", "return_requested", 2), ob("r2", "return_approved", 5),
        ob("r3", "return_received", 8, "jd"), ob("r3", "refunded", 10, "jd"),
    )  # fmt: skip
    engine = KpiEngine(store.engine, WINDOW, SLA, TIMEOUTS, store=store, dwell_window=WINDOW, windows=WINDOWS)
    day = 24 * 60
    expected = {
        20: {(): (0, 3), "tmall": (0, 2), "jd": (0, 1)},
        day + 1: {(): (1, 2), "tmall": (1, 2)},  # r1 held 24 h; r3's refund left the 2 h window
        day + 5: {(): (2, 2), "tmall": (2, 2)},  # r2 too (return_approved's default 24 h)
        day + 10: {(): (1, 2), "tmall": (1, 2)},  # r1 refunded: active (in the window), no break
    }
    for minutes, series in expected.items():
        if minutes == day + 10:
            feed(store, minutes, ob("r1", "return_approved", day + 3), ob("r1", "refunded", day + 9))
        now = T0 + timedelta(minutes=minutes)
        snapshot = engine.refresh(now)
        assert values(snapshot) == values(full(store, now)), minutes
        got = {
            v.labels[0][1] if v.labels else (): (v.value,)
            for v in snapshot.values
            if v.kpi == "return_break_orders"
        }
        for key, (broken, active) in series.items():
            labels = {"channel": key} if key else {}
            assert snapshot.get("return_break_orders", **labels) == broken, (minutes, key, got)
            assert snapshot.get("return_active_orders", **labels) == active, (minutes, key)
            assert snapshot.get("return_break_ratio", **labels) == broken / active, (minutes, key)
        assert set(got) == set(series), minutes  # no series for a channel without active returns


def test_dwell_resolution():
    assert [dwell_floor(s) for s in (0, 599, 600, 7199, 7200, 86399, 86400, 10**8)] == [
        0, 599, 600, 7190, 7200, 86340, 86400, 30 * 86400,
    ]  # fmt: skip


def test_a_stays_dwell_index_in_one_step():
    """The change feed's index of a stay (its seconds) is the full load's index of its floored value,
    at every step's edges and across the steps."""
    edges = {e + d for e in (0, 600, 7200, 86400, 30 * 86400) for d in (-601, -11, -1, 0, 1, 9, 10, 599)}
    for seconds in sorted(edges | set(range(0, 40 * 86400, 997))):
        if seconds >= 0:
            index = kpi_module._dwell_index(seconds)
            assert index == kpi_module._dwell_index(dwell_floor(seconds)), seconds
            assert kpi_module._DWELL_VALUES[index] == dwell_floor(seconds), seconds


def test_dwell_failure_ratio_and_reasons_through_refresh_and_full(store):
    """A stay fails when the order leaves for an exit or a return (that is the reason), else when it
    lasts at least the state's timeout; an order still in the state counts once its timeout has run
    out within the dwell window. Time alone moves the overstayed ones in and out."""
    engine = KpiEngine(store.engine, WINDOW, SLA, TIMEOUTS, store=store, dwell_window=WINDOW, windows=WINDOWS)
    steps = {
        30: [ob("1", "paid", 0), ob("1", "cancelled", 1), ob("2", "paid", 0), ob("2", "wms_received", 20),
             ob("3", "paid", 0), ob("3", "wms_received", 5), ob("4", "paid", 2), ob("4", "closed", 3),
             ob("5", "paid", 10), ob("5", "return_requested", 12), ob("6", "paid", 29.5),
             ob("7", "picked", 25)],
        44: [],  # 6's 15 min in paid run out at 44.5: not yet
        50: [],  # now they have; 7's 12 min in picked ran out at 37
        52: [ob("6", "wms_received", 51)],  # 6 leaves paid after 21.5 min: still a timeout, now ended
        200: [],  # the 2 h window has moved past every stay
    }  # fmt: skip
    expected = {  # state -> (judged, {reason: failed})
        30: {"paid": (5, {"cancelled": 1, "closed": 1, "returned": 1, "timeout": 1}), "picked": (0, {})},
        44: {"paid": (5, {"cancelled": 1, "closed": 1, "returned": 1, "timeout": 1}), "picked": (1, {"timeout": 1})},
        50: {"paid": (6, {"cancelled": 1, "closed": 1, "returned": 1, "timeout": 2}), "picked": (1, {"timeout": 1})},
        52: {"paid": (6, {"cancelled": 1, "closed": 1, "returned": 1, "timeout": 2}), "picked": (1, {"timeout": 1})},
        200: {"paid": (0, {}), "picked": (0, {})},
    }  # fmt: skip
    for minutes, batch in steps.items():
        if batch:
            feed(store, minutes, *batch)
        now = T0 + timedelta(minutes=minutes)
        snapshot = engine.refresh(now)
        assert values(snapshot) == values(full(store, now)), minutes
        for state, (judged, failed) in expected[minutes].items():
            assert snapshot.get("dwell_judged_orders", state=state) == judged, (minutes, state)
            for reason in ("timeout", "cancelled", "closed", "returned"):
                got = snapshot.get("dwell_failure_orders", state=state, reason=reason)
                assert got == failed.get(reason, 0), (minutes, state, reason)
            ratio = snapshot.get("dwell_failure_ratio", state=state)
            assert ratio == (sum(failed.values()) / judged if judged else None), (minutes, state)
    # No timeout reason where the state has none; the other reasons always (a stable series set).
    assert snapshot.get("dwell_failure_orders", state="shipped", reason="timeout") is None
    assert snapshot.get("dwell_failure_orders", state="shipped", reason="returned") == 0


def test_in_transit_is_stuck_from_its_newest_scan_through_refresh_and_full(store):
    """In transit, the stuck clock is the newest carrier scan (repeated pushes bring it), not the
    pickup; its timeout limits the silence, not the stay (no dwell timeout). Refresh == full."""
    timeouts = {**TIMEOUTS, "in_transit": timedelta(hours=4)}

    def push(raw: str, pickup: float, newest: float, carrier: str = "ZTO") -> Observation:
        at, progress = T0 + timedelta(minutes=pickup), T0 + timedelta(minutes=newest)
        return Observation("kd", f"{raw}|in_transit", "tmall", raw, "in_transit", at, {"carrier": carrier},
                           progress_at=progress)  # fmt: skip

    def both(now_minutes: float):
        now = T0 + timedelta(minutes=now_minutes)
        snapshot = engine.refresh(now)
        expected = KpiEngine(
            store.engine, WINDOW, SLA, timeouts, dwell_window=WINDOW, windows=WINDOWS
        ).compute(now)
        assert values(snapshot) == values(expected), now_minutes
        return snapshot

    engine = KpiEngine(store.engine, WINDOW, SLA, timeouts, store=store, dwell_window=WINDOW, windows=WINDOWS)
    feed(store, 60, push("1", 10, 10), push("2", 20, 20, "SF"), push("3", 30, 30))
    assert both(60).get("stuck_orders", state="in_transit") == 0
    feed(store, 200, push("1", 10, 180), push("2", 20, 190, "SF"))  # 3's hub stops scanning
    at = both(4 * 60 + 30)  # 4 h after 3's only scan
    assert (at.get("stuck_orders", state="in_transit"), at.get("state_orders", state="in_transit")) == (1, 3)
    assert at.get("stuck_orders", state="in_transit", carrier="ZTO") == 1
    assert at.get("stuck_orders", state="in_transit", carrier="SF") == 0
    feed(store, 400, push("1", 10, 390), push("2", 20, 180, "SF"))  # 2: a late repeat of an old push
    at = both(4 * 60 + 190)  # 4 h after 2's newest scan; 1 scanned since
    assert at.get("stuck_orders", state="in_transit") == 2
    assert at.get("stuck_orders", state="in_transit", carrier="SF") == 1
    feed(store, 440, ob("2", "delivered", 430))
    at = both(450)  # 2 left in transit in the dwell window
    assert (at.get("stuck_orders", state="in_transit"), at.get("state_orders", state="in_transit")) == (1, 2)
    assert at.get("dwell_failure_orders", state="in_transit", reason="timeout") is None  # 2 travelled 7 h
    assert at.get("dwell_failure_ratio", state="in_transit") == 0
