"""Ground-truth KPIs computed from the simulated world alone, independently of the store and its SQL.

The definitions mirror PRODUCT.md (and metrics/kpi.py's docstrings), applied to what a monitor can
know at `now`: events up to `now`, and only orders some source shows (JD and Pinduoduo list paid
orders only).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from metrics.kpi import (
    DWELL_BUCKET_MS,
    ERP_REACHED,
    FAILURE_REASONS,
    MINUTE_MS,
    OPEN_RETURNS,
    RETURN_BREAK_AFTER,
    SHORT_WINDOWS,
    dwell_floor,
)
from sim.model import PAID_ONLY_CHANNELS, SimOrder
from sim.payments import delivery_times, paid_amount, received_at
from store.lifecycle import EXITS, FORWARD, HOPS, PROGRESS_STATES, RANK, RETURNS, TERMINAL, WMS_REACHED

Key = tuple[str, tuple[tuple[str, str], ...]]


def _labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def _visible(order: SimOrder, now: datetime) -> dict[str, datetime] | None:
    events = order.events_until(now)
    if not order.in_channel:
        # Lost by the order service: only its payment notify shows it (Alipay's carries gmt_create).
        shown = ("paid", "created") if order.payment_method == "alipay" else ("paid",)
        events = {s: t for s, t in events.items() if s in shown} if "paid" in events else {}
    if not events or (order.channel in PAID_ONLY_CHANNELS and "paid" not in events):
        return None
    if "in_transit" in events and not order.pushed_by(now):  # the carrier's scan is known once pushed
        del events["in_transit"]
    return events


def _repeats(order: SimOrder, now: datetime) -> int:
    """Payment notifies received again by `now` (the first delivery is the record itself)."""
    return sum(1 for t in delivery_times(order)[1:] if t <= now)


def _hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _rank(n: int, q: float) -> int:
    return max(1, math.ceil(q * n))


def _recent_payment(order, ev, paid, keys, now, fast_cancel, callback_limit, tallies) -> None:
    """Count one order paid in a "recent" window: fast cancel, repeats, amount, callback delay."""
    cancels, duplicates, mismatches, callbacks = tallies
    fast = "cancelled" in ev and ev["cancelled"] - paid <= fast_cancel
    for key in keys:
        cancels[key][0] += 1
        cancels[key][1] += fast
        duplicates[key][0] += 1
        duplicates[key][1] += _repeats(order, now)
        # both amounts are known once the channel shows the order and the notify came
        mismatches[key] += order.in_channel and paid_amount(order) != order.amount_fen
        if received_at(order) <= now:  # the notify says when it was sent, to the second
            delay_s = int((received_at(order) - paid).total_seconds())
            callbacks[key][0] += 1
            callbacks[key][1] += delay_s * 1000 > callback_limit.total_seconds() * 1000


def kpi_truth(
    orders: list[SimOrder],
    now: datetime,
    *,
    window: timedelta,
    sla: timedelta,
    timeouts: dict[str, timedelta],
    fast_cancel: timedelta,
    dwell_window: timedelta = timedelta(hours=1),
    order_grace: timedelta = timedelta(minutes=10),
    callback_limit: timedelta = timedelta(seconds=8),
    windows: dict[str, timedelta] = SHORT_WINDOWS,
    tracking_sla: timedelta = timedelta(hours=4),
    writeback_sla: timedelta = timedelta(minutes=15),
    hops: tuple[str, ...] | None = None,
) -> dict[Key, float]:
    """Every KPI series the engine computes from orders, keyed like Snapshot: (kpi, labels)."""
    out: dict[Key, float] = {}
    counts: dict[tuple[str, tuple], list[int]] = defaultdict(lambda: [0, 0])
    sync: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    cancels: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    duplicates: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # orders paid, repeats
    mismatches: dict[tuple, int] = defaultdict(int)  # orders paid whose paid amount differs
    callbacks: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # payments notified, late
    losses: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # payments past grace, lost
    returns: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # active returns, breaks
    dwell: dict[str, list[float]] = defaultdict(list)
    judged: dict[str, int] = defaultdict(int)  # stays ended in the dwell window or overstayed in it
    failed: dict[tuple[str, str], int] = defaultdict(int)  # (state, reason) -> stays
    hop_sync: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # (hop, labels) -> counted, reached
    manual: dict[tuple, list[int]] = defaultdict(
        lambda: [0, 0]
    )  # labels -> paid in window, handled by a person
    hops = tuple(HOPS) if hops is None else tuple(h for h in HOPS if h in hops)
    # A progress state's timeout limits the silence in it, not the stay: no dwell timeout.
    dwell_timeouts = {s: t for s, t in timeouts.items() if s not in PROGRESS_STATES}
    start = now - window
    # Hops judged by the minute their start falls in: whole minutes from the window's start to the
    # last one ending at or before now - the hop's SLA.
    # In a short window, its width in whole minutes ending there; in a long one, from the start of
    # the hour `width` before the hour the range ends in.
    now_ms, start_ms = int(now.timestamp() * 1000), int(start.timestamp() * 1000)

    def minute_span(sla: timedelta, width: timedelta | None) -> tuple[int, int]:
        end_ms = now_ms - int(sla.total_seconds() * 1000)
        last = (end_ms + 1) // MINUTE_MS - 1
        if width is None:
            return -(-start_ms // MINUTE_MS), last
        if width > window:
            return (end_ms // 3_600_000 - int(width / timedelta(hours=1))) * 60, last
        return last - int(width / timedelta(minutes=1)) + 1, last

    def in_minutes(at: datetime, span: tuple[int, int]) -> bool:
        return span[0] <= int(at.timestamp() * 1000) // MINUTE_MS <= span[1]

    # The KPI window (no label), then the other windows ending where each family can judge.
    # Windows up to the KPI window start `width` before each range's end; longer ones at the start
    # of the hour `width` before the hour the range ends in.
    ends = (now - sla, now, now - order_grace)
    spans = [((), start, start, start)] + [
        ((("window", name),), *((_hour_start(end) if width > window else end) - width for end in ends))
        for name, width in windows.items()
    ]
    hop_spans = {
        extra: {
            hop: minute_span(sla_of, width)
            for hop, sla_of in (
                ("erp_wms", sla),
                ("shipped_tracking", tracking_sla),
                ("status_writeback", writeback_sla),
            )
        }
        for extra, width in [((), None), *(((("window", name),), width) for name, width in windows.items())]
    }
    tallies = (cancels, duplicates, mismatches, callbacks)
    # Dwell: orders that left the state in the dwell window's whole 5-minute buckets, at the engine's resolution.
    now_bucket = int(now.timestamp() * 1000) // DWELL_BUCKET_MS
    first_bucket = now_bucket - math.ceil(dwell_window.total_seconds() * 1000 / DWELL_BUCKET_MS) + 1
    for order in orders:
        ev = _visible(order, now)
        if ev is None:
            continue
        state = max(ev, key=RANK.__getitem__)
        reached = any(s in ev for s in WMS_REACHED)
        if state not in TERMINAL:
            since = ev[state]
            if state in PROGRESS_STATES:  # in transit: stuck from the newest carrier scan pushed
                since = max(since, order.newest_scan(now) or since)
            stuck = state in timeouts and since <= now - timeouts[state]
            dims = [(), (("channel", order.channel),)]
            if order.in_channel:  # the address comes with the channel's order
                dims += [(("province", order.province),), (("city", order.city),)]
            if "wms_received" in ev:  # the warehouse and carrier are known from the WMS
                dims += [(("warehouse", order.warehouse),), (("carrier", order.carrier),)]
            for dim in dims:
                agg = counts[(state, dim)]
                agg[0] += 1
                agg[1] += stuck
        # Returns active in the window: in an open return state now, or refunded within the window.
        if state in OPEN_RETURNS or (state == "refunded" and ev[state] >= start):
            broken = state in OPEN_RETURNS and ev[state] <= now - timeouts.get(state, RETURN_BREAK_AFTER)
            for key in ((), (("channel", order.channel),)):
                returns[key][0] += 1
                returns[key][1] += broken
        paid = ev.get("paid")
        ended = "cancelled" in ev or "closed" in ev
        erp_reached = any(s in ev for s in ERP_REACHED)
        for extra, sync_low, recent_low, settled_low in spans:
            keys = (extra, tuple(sorted((*extra, ("channel", order.channel)))))
            if paid is not None and recent_low <= paid <= now:
                handled = order.manual is not None and order.erp_pulled_at <= now
                for key in keys:
                    manual[key][0] += 1
                    manual[key][1] += handled
            minutes = hop_spans[extra]
            hop_checks = (
                (
                    "channel_erp",
                    paid is not None and sync_low <= paid <= now - sla and not (ended and not erp_reached),
                    erp_reached,
                ),
                (
                    "erp_wms",
                    "erp_accepted" in ev
                    and in_minutes(ev["erp_accepted"], minutes["erp_wms"])
                    and not (ended and not reached),
                    reached,
                ),
                (
                    "shipped_tracking",
                    "shipped" in ev and in_minutes(ev["shipped"], minutes["shipped_tracking"]),
                    order.pushed_by(now),
                ),
                # shipped per the WMS; the channel shows it shipped (or later) once it has shipped
                (
                    "status_writeback",
                    "shipped" in ev
                    and order.in_wms
                    and in_minutes(ev["shipped"], minutes["status_writeback"]),
                    order.in_channel,
                ),
            )
            for hop, counted, passed in hop_checks:
                if hop in hops and counted:
                    for key in keys:
                        hop_sync[(hop, key)][0] += 1
                        hop_sync[(hop, key)][1] += passed
            if paid is not None and sync_low <= paid <= now - sla and not (ended and not reached):
                for key in keys:
                    sync[key][0] += 1
                    sync[key][1] += reached
            if paid is not None and recent_low <= paid <= now:
                _recent_payment(order, ev, paid, keys, now, fast_cancel, callback_limit, tallies)
            if paid is not None and settled_low <= paid <= now - order_grace:  # every payment has a notify
                for key in keys:
                    losses[key][0] += 1
                    losses[key][1] += not order.in_channel
        _dwell_truth(ev, state, dwell_timeouts, (first_bucket, now_bucket, now), dwell, judged, failed)
    for (state, dim), (n, stuck) in counts.items():
        labels = tuple(sorted((*dim, ("state", state))))
        out[("state_orders", labels)] = n
        if state in timeouts:
            out[("stuck_orders", labels)] = stuck
            out[("stuck_ratio", labels)] = stuck / n
    for extra, *_ in spans:  # the engine always gives each window's totals, zeros included
        for tally in (sync, cancels, duplicates, callbacks, losses):
            tally.setdefault(extra, [0, 0])
    for key, (paid, reached) in sync.items():
        out[("sync_paid_orders", key)] = paid
        out[("sync_unreached_orders", key)] = paid - reached
        if paid:
            out[("sync_success_ratio", key)] = reached / paid
    for key, (paid, fast) in cancels.items():
        out[("fast_cancel_orders", key)] = fast
        if paid:
            out[("fast_cancel_ratio", key)] = fast / paid
    for key, (paid, repeats) in duplicates.items():
        out[("amount_mismatch_orders", key)] = mismatches[key]
        out[("duplicate_records", key)] = repeats
        if paid:
            out[("amount_mismatch_ratio", key)] = mismatches[key] / paid
            out[("duplicate_free_ratio", key)] = paid / (paid + repeats)
    for key, (notified, late) in callbacks.items():
        out[("late_callback_orders", key)] = late
        if notified:
            out[("late_callback_ratio", key)] = late / notified
    for key, (payments, lost) in losses.items():
        out[("order_loss_paid_orders", key)] = payments
        out[("order_loss_orders", key)] = lost
        if payments:
            out[("order_loss_ratio", key)] = lost / payments
    for hop in hops:  # the engine always gives each hop's total in each window, zeros included
        for extra, *_ in spans:
            hop_sync.setdefault((hop, extra), [0, 0])
    for (hop, key), (counted, passed) in hop_sync.items():
        labels = tuple(sorted((*key, ("hop", hop))))
        out[("hop_sync_orders", labels)] = counted
        out[("hop_sync_unreached_orders", labels)] = counted - passed
        if counted:
            out[("hop_sync_success_ratio", labels)] = passed / counted
    for extra, *_ in spans:
        manual.setdefault(extra, [0, 0])
    for key, (paid_n, handled) in manual.items():
        out[("paid_orders", key)] = paid_n
        out[("manual_intervention_orders", key)] = handled
        if paid_n:
            out[("manual_intervention_ratio", key)] = handled / paid_n
    returns.setdefault((), [0, 0])
    for key, (active, broken) in returns.items():
        out[("return_break_orders", key)] = broken
        out[("return_active_orders", key)] = active
        if active:
            out[("return_break_ratio", key)] = broken / active
    for s in FORWARD[:-1]:
        values = sorted(dwell.get(s, []))
        labels = _labels(state=s)
        out[("dwell_orders", labels)] = len(values)
        if values:
            out[("dwell_p50_seconds", labels)] = values[_rank(len(values), 0.5) - 1]
            out[("dwell_p95_seconds", labels)] = values[_rank(len(values), 0.95) - 1]
        out[("dwell_judged_orders", labels)] = judged[s]
        for reason in FAILURE_REASONS:
            if reason != "timeout" or s in dwell_timeouts:
                out[("dwell_failure_orders", _labels(state=s, reason=reason))] = failed[(s, reason)]
        if judged[s]:
            out[("dwell_failure_ratio", labels)] = sum(failed[(s, r)] for r in FAILURE_REASONS) / judged[s]
    return out


def _dwell_truth(ev, state, timeouts, window, dwell, judged, failed) -> None:
    """One order's stays in the forward states: the dwell time of each stay that ended in the dwell
    window (first later milestone in lifecycle order: later forward states, exits, returns), and
    whether it failed (left for an exit or a return; else lasted at least the timeout); a stay
    still going counts as failed (timeout) when its timeout ran out in the window."""
    first_bucket, now_bucket, now = window
    now_ms = int(now.timestamp() * 1000)
    exits = {**{x: x for x in EXITS}, **{x: "returned" for x in RETURNS}}
    for i, s in enumerate(FORWARD[:-1]):
        if s not in ev:
            continue
        entered_ms = int(ev[s].timestamp() * 1000)
        timeout_ms = int(timeouts[s].total_seconds() * 1000) if s in timeouts else None
        later = [x for x in (*FORWARD[i + 1 :], *EXITS, *RETURNS) if x in ev]
        if not later:  # still in s (its highest state)
            assert state == s
            deadline_ms = None if timeout_ms is None else entered_ms + timeout_ms
            if deadline_ms is not None and first_bucket * DWELL_BUCKET_MS <= deadline_ms <= now_ms:
                judged[s] += 1
                failed[(s, "timeout")] += 1
            continue
        left_ms = int(ev[later[0]].timestamp() * 1000)
        if left_ms < entered_ms or not first_bucket <= left_ms // DWELL_BUCKET_MS <= now_bucket:
            continue
        dwell[s].append(dwell_floor((left_ms - entered_ms) // 1000))
        judged[s] += 1
        if later[0] in exits:
            failed[(s, exits[later[0]])] += 1
        elif timeout_ms is not None and left_ms - entered_ms >= timeout_ms:
            failed[(s, "timeout")] += 1
