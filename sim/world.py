"""The simulated world: deterministic orders with native ids and true timelines, plus faults.

`World.generate(scenario)` is a pure function of the scenario and its seed. The world knows
the ground truth, so `truth(now)` can be compared with what the monitor computed.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sim.model import CHANNELS, SimOrder
from sim.scenario import (
    DELAY_HOPS,
    SOURCE_FAULTS,
    CancelRuleFault,
    ClockSkewFault,
    ConsumersGoneFault,
    DelayFault,
    DropFault,
    DuplicateFault,
    Fault,
    ManualReviewFault,
    PriceChangeFault,
    Scenario,
    ScenarioError,
    SlowCallbackFault,
    StallFault,
)
from store.lifecycle import RETURNS

# Typical e-commerce order curve by local hour: quiet nights, late-morning and evening peaks.
DEFAULT_INTRADAY = (
    0.9, 0.5, 0.3, 0.2, 0.15, 0.15, 0.25, 0.5, 0.8, 1.1, 1.35, 1.3,
    1.1, 1.15, 1.3, 1.3, 1.2, 1.1, 1.1, 1.3, 1.6, 1.8, 1.7, 1.3,
)  # fmt: skip

# (merchant SKU code, unit price in fen, weight)
SKUS = (
    ("TS-RED-M", 7900, 10), ("TS-RED-L", 7900, 8), ("TS-BLK-M", 7900, 9), ("TS-WHT-S", 6900, 6),
    ("HD-GRY-L", 19900, 5), ("HD-NVY-XL", 19900, 4), ("JK-KHK-L", 39900, 2), ("PT-BLK-32", 15900, 4),
    ("SK-WHT-39", 29900, 3), ("SK-BLK-42", 29900, 3), ("CAP-RED-F", 4900, 5), ("BAG-CNV-01", 9900, 4),
)  # fmt: skip
QUANTITIES = ((1, 75), (2, 18), (3, 7))
DISCOUNTS_FEN = ((0, 60), (500, 20), (1000, 15), (2000, 5))

# (province, cities, weight, warehouse serving it)
REGIONS = (
    ("浙江省", ("杭州市", "宁波市", "温州市"), 9, "WH-HZ01"),
    ("江苏省", ("南京市", "苏州市", "无锡市"), 9, "WH-HZ01"),
    ("上海市", ("上海市",), 6, "WH-HZ01"),
    ("安徽省", ("合肥市",), 3, "WH-HZ01"),
    ("福建省", ("福州市", "厦门市"), 4, "WH-HZ01"),
    ("广东省", ("广州市", "深圳市", "东莞市", "佛山市"), 12, "WH-GZ01"),
    ("广西壮族自治区", ("南宁市",), 2, "WH-GZ01"),
    ("湖南省", ("长沙市",), 3, "WH-GZ01"),
    ("湖北省", ("武汉市",), 4, "WH-GZ01"),
    ("四川省", ("成都市", "绵阳市"), 5, "WH-CD01"),
    ("重庆市", ("重庆市",), 3, "WH-CD01"),
    ("云南省", ("昆明市",), 2, "WH-CD01"),
    ("陕西省", ("西安市",), 3, "WH-CD01"),
    ("北京市", ("北京市",), 5, "WH-BJ01"),
    ("天津市", ("天津市",), 2, "WH-BJ01"),
    ("河北省", ("石家庄市", "保定市"), 3, "WH-BJ01"),
    ("山东省", ("济南市", "青岛市"), 6, "WH-BJ01"),
    ("河南省", ("郑州市",), 5, "WH-BJ01"),
    ("辽宁省", ("沈阳市", "大连市"), 3, "WH-BJ01"),
)

# Payment method weights per channel: Tmall pays through Alipay, the WeChat shop through WeChat Pay.
PAYMENT_MIX = {
    "tmall": (("alipay", 1.0),),
    "jd": (("wechat", 0.55), ("alipay", 0.45)),
    "pdd": (("wechat", 0.7), ("alipay", 0.3)),
    "douyin": (("wechat", 0.6), ("alipay", 0.4)),
    "youzan": (("wechat", 1.0),),
}
CARRIER_MIX = {
    "jd": (("jd", 0.85), ("shunfeng", 0.1), ("zhongtong", 0.05)),
    "*": (("zhongtong", 0.3), ("yuantong", 0.25), ("yunda", 0.2), ("shunfeng", 0.17), ("jd", 0.08)),
}

# States a dropped hop takes away (the order never reaches that system, so nothing after it).
_AFTER_WMS = ("wms_received", "picked", "packed", "shipped", "in_transit", "delivered", *RETURNS)
HOP_STATES = {
    "wms": _AFTER_WMS,
    "erp": ("erp_accepted", *_AFTER_WMS),
    "channel": ("erp_accepted", *_AFTER_WMS, "cancelled"),
}
# Question types of the ERP's problem orders (聚水潭 question_type): a person must handle them.
QUESTION_TYPES = ("地址异常", "库存不足", "疑似风险订单", "买家留言待处理", "商品信息不符")
# Kuaidi100 push schedule after subscribing (at shipping): first check, then one every interval.
PUSH_FIRST = (900, 3600)
PUSH_INTERVAL = timedelta(hours=2)
# Between two carrier scans on the way (hubs, trunk lines, the delivery station): under 2 h, so that
# with Kuaidi100's 2-hourly checks a healthy track never goes 4 h without news (the in-transit timeout).
TRUNK_SCAN = (40 * 60, 110 * 60)
WAREHOUSE_CITY = {"WH-HZ01": "杭州市", "WH-GZ01": "广州市", "WH-CD01": "成都市", "WH-BJ01": "北京市"}
# The return path after delivery: (state, the scenario latency that leads into it).
RETURN_STEPS = (
    ("return_requested", "return_request"),
    ("return_approved", "return_approve"),
    ("return_awaiting_receipt", "return_send"),
    ("return_received", "return_receive"),
    ("refunded", "return_refund"),
)
DEFAULT_SLA = timedelta(minutes=15)
T = TypeVar("T")
DEFAULT_WINDOW = timedelta(hours=24)


def _digits(rng: random.Random, n: int) -> str:
    return str(rng.randrange(10 ** (n - 1), 10**n))


# Native raw order ids per channel (reference/channels.md §6); `local` is the local creation time.
RAW_ID_MAKERS: dict[str, Callable[[random.Random, datetime], str]] = {
    "tmall": lambda rng, local: str(rng.randrange(10**18, 4 * 10**18)),  # 19 digits, > 2^53
    "jd": lambda rng, local: str(rng.randrange(2 * 10**11, 4 * 10**11)),  # 12 digits
    "pdd": lambda rng, local: f"{local:%y%m%d}-{_digits(rng, 15)}",
    "douyin": lambda rng, local: "69" + _digits(rng, 17),  # 19 digits
    "youzan": lambda rng, local: f"E{local:%Y%m%d%H%M%S}{_digits(rng, 9)}",
}
TRACKING_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "zhongtong": lambda rng: "7" + _digits(rng, 14),
    "yuantong": lambda rng: "YT" + _digits(rng, 13),
    "shunfeng": lambda rng: "SF" + _digits(rng, 13),
    "yunda": lambda rng: "46" + _digits(rng, 13),
    "jd": lambda rng: "JDV" + _digits(rng, 12),
}

# -- fault appliers: one small function per kind, registered by kind ----------------------
FaultApplier = Callable[[Fault, list[SimOrder], random.Random, str], dict[str, int]]
FAULT_APPLIERS: dict[str, FaultApplier] = {}


def applies(kind: str) -> Callable[[FaultApplier], FaultApplier]:
    """Register the function that injects faults of `kind` into generated orders."""

    def register(fn: FaultApplier) -> FaultApplier:
        FAULT_APPLIERS[kind] = fn
        return fn

    return register


@applies("drop")
def drop_hop(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """The first `count` matching paid orders (by payment time) never reach the hop's system."""
    assert isinstance(fault, DropFault)
    candidates = [
        o
        for o in orders
        if "paid" in o.events
        and o.in_wms
        and o.in_channel
        and fault.match.matches(o.channel, o.payment_method, o.sku)
        and (fault.after is None or o.events["paid"] >= fault.after)
    ]
    if len(candidates) < fault.count:
        raise ScenarioError(
            [
                f"{where}.count: only {len(candidates)} matching paid orders after {fault.after}, need {fault.count}"
            ]
        )
    candidates.sort(key=lambda o: o.events["paid"])
    tag = {"wms": "wms_push_dropped", "erp": "erp_pull_dropped", "channel": "order_intake_dropped"}[fault.hop]
    for order in candidates[: fault.count]:
        for state in HOP_STATES[fault.hop]:
            order.events.pop(state, None)
        order.in_wms = False
        order.in_channel = fault.hop != "channel"
        if fault.hop != "wms":  # the ERP never had it
            order.in_erp, order.erp_pulled_at, order.manual = False, None, None
        order.scans, order.track_pushes = (), ()  # never shipped: nothing to track
        order.tags.add(tag)
    return {tag: fault.count}


def _paid_in_window(fault, orders: list[SimOrder]) -> Iterator[SimOrder]:
    """The orders a windowed payment fault hits: paid in [after, until) and matching."""
    for order in orders:
        paid = order.events.get("paid")
        if (
            paid is not None
            and fault.match.matches(order.channel, order.payment_method, order.sku)
            and (fault.after is None or paid >= fault.after)
            and (fault.until is None or paid < fault.until)
        ):
            yield order


@applies("price_change")
def change_price(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Matching orders paid in the window are paid the discounted price (never below 1 fen)."""
    assert isinstance(fault, PriceChangeFault)
    hit = 0
    for order in _paid_in_window(fault, orders):
        order.paid_amount_fen = max(1, order.amount_fen - fault.discount_fen)
        order.tags.add("price_not_synced")
        hit += 1
    return {"price_not_synced": hit}


@applies("slow_callback")
def slow_callbacks(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Matching orders paid in the window get their payment notify `delay` seconds late."""
    assert isinstance(fault, SlowCallbackFault)
    hit = 0
    for order in _paid_in_window(fault, orders):
        order.notify_delay = round(rng.uniform(*fault.delay), 3)
        order.tags.add("slow_callback")
        hit += 1
    return {"slow_callback": hit}


@applies("duplicate")
def duplicate_notifies(
    fault: Fault, orders: list[SimOrder], rng: random.Random, where: str
) -> dict[str, int]:
    """Matching paid orders get their payment notify sent again, 5-30 s after the first."""
    assert isinstance(fault, DuplicateFault)
    hit = 0
    for order in _paid_in_window(fault, orders):
        if rng.random() < fault.ratio:
            order.resends = tuple(sorted(round(rng.uniform(5, 30), 3) for _ in range(fault.copies)))
            order.tags.add("duplicate_callback")
            hit += 1
    return {"duplicate_callback": hit}


@applies("manual_review")
def manual_review(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Matching orders the ERP accepts, paid in the window, are held as question orders first."""
    assert isinstance(fault, ManualReviewFault)
    hit = 0
    for order in _paid_in_window(fault, orders):
        accepted = order.events.get("erp_accepted")
        if accepted is None or order.manual is not None or rng.random() >= fault.ratio:
            continue
        paid = order.events["paid"]
        order.manual = fault.question
        order.erp_pulled_at = paid + timedelta(seconds=max(1, int((accepted - paid).total_seconds()) // 4))
        order.erp_pulled_at = min(order.erp_pulled_at, accepted)
        order.tags.add("manual_review")
        hit += 1
    return {"manual_review": hit}


@applies("stall")
def stall(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Matching orders stop in `fault.state`: returns that entered it in [after, until) never leave
    it; parcels in transit at some time in [after, until) get no carrier scan after `after` (or
    their pickup) and are never delivered."""
    assert isinstance(fault, StallFault)
    transit = fault.state == "in_transit"
    candidates = [
        o
        for o in orders
        if fault.state in o.events
        and fault.match.matches_order(o)
        and (fault.until is None or o.events[fault.state] < fault.until)
        and (
            _on_the_way(o, fault.after)
            if transit
            else fault.after is None or o.events[fault.state] >= fault.after
        )
    ]
    what = "parcels in transit" if transit else "returns reach"
    if fault.count is not None:
        if len(candidates) < fault.count:
            raise ScenarioError(
                [f"{where}.count: only {len(candidates)} matching {what} {fault.state}, need {fault.count}"]
            )
        candidates.sort(key=lambda o: (o.events[fault.state], o.raw_id))
        hit = candidates[: fault.count]
    else:
        hit = [o for o in candidates if rng.random() < fault.ratio]
    if transit:
        for order in hit:
            pickup = order.events["in_transit"]
            stop_tracking(order, pickup if fault.after is None else max(fault.after, pickup))
            order.tags.add("tracking_stalled")
        return {"tracking_stalled": len(hit)}
    later = RETURNS[RETURNS.index(fault.state) + 1 :]
    for order in hit:
        for state in later:
            order.events.pop(state, None)
        order.tags.add("return_stalled")
    return {"return_stalled": len(hit)}


def _on_the_way(order: SimOrder, after: datetime | None) -> bool:
    """Not delivered by `after` (a parcel picked up later is on the way after it too)."""
    delivered = order.events.get("delivered")
    return after is None or delivered is None or delivered > after


FORWARD = ("wms_received", "picked", "packed", "shipped", "delivered")


@applies("delay")
def delay_hop(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Matching orders entering the state before the hop in the window take `delay` longer; every
    later step (returns included) shifts by the same amount."""
    assert isinstance(fault, DelayFault)
    state = DELAY_HOPS[fault.hop]
    before = ("paid", *FORWARD)[FORWARD.index(state)]
    hit = 0
    for order in orders:
        start = order.events.get(before)
        if (
            start is None
            or state not in order.events
            or not fault.active(start)
            or not fault.match.matches_order(order)
            or rng.random() >= fault.ratio
        ):
            continue
        extra = timedelta(seconds=round(rng.uniform(*fault.delay)))
        first = order.events[state]
        for name, at in list(order.events.items()):
            if at >= first and name not in ("created", "paid", "cancelled"):
                order.events[name] = at + extra
        order.tags.add(f"{fault.hop}_delayed")
        hit += 1
    return {f"{fault.hop}_delayed": hit}


@applies("cancel_rule")
def cancel_rule(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """`ratio` of the matching orders paid in the window are cancelled `within` seconds of paying."""
    assert isinstance(fault, CancelRuleFault)
    hit = 0
    for order in list(_paid_in_window(fault, orders)):
        if rng.random() >= fault.ratio:
            continue
        paid = order.events["paid"]
        order.events = {
            "created": order.events["created"],
            "paid": paid,
            "cancelled": paid + timedelta(seconds=round(rng.uniform(*fault.within), 3)),
        }
        order.in_wms = False
        order.tags.add("cancelled_by_rule")
        hit += 1
    return {"cancelled_by_rule": hit}


@applies("consumers_gone")
def consumers_gone(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Return approvals published while the queue has no consumer wait; one that waits `ttl` expires
    and that return never reaches the warehouse (it stays approved). The others are consumed when the
    consumers come back, so the return steps after approval cannot happen before that."""
    assert isinstance(fault, ConsumersGoneFault)
    lost = late = 0
    later = RETURNS[RETURNS.index("return_approved") + 1 :]
    for order in orders:
        approved = order.events.get("return_approved")
        if approved is None or not fault.active(approved):
            continue
        if fault.until is None or approved + fault.ttl <= fault.until:
            for state in later:
                order.events.pop(state, None)
            order.tags.add("return_approval_expired")
            lost += 1
            continue
        nxt = order.events.get(later[0])
        if nxt is not None and nxt < fault.until:
            shift = fault.until - nxt
            for state in later:
                if state in order.events:
                    order.events[state] += shift
        order.tags.add("return_approval_late")
        late += 1
    return {"return_approval_expired": lost, "return_approval_late": late}


def _no_order_change(fault: Fault, orders: list[SimOrder], rng: random.Random, where: str) -> dict[str, int]:
    """Faults of a system, not of orders (the runner applies them on the virtual clock)."""
    return {}


for _kind in (*SOURCE_FAULTS, "clock_skew"):
    FAULT_APPLIERS[_kind] = _no_order_change


# -- generation ------------------------------------------------------------------------------
def _pick(rng: random.Random, table: tuple[tuple[T, float], ...]) -> T:
    values, cumulative = _cumulative(table)
    return rng.choices(values, cum_weights=cumulative)[0]  # the same draw as with weights=


@functools.cache
def _cumulative(table: tuple, weight_at: int = -1) -> tuple[list, list[float]]:
    """A weighted table's values and running weight totals (what choices() would sum each call)."""
    return [row[0] for row in table], list(itertools.accumulate(row[weight_at] for row in table))


def _latency(rng: random.Random, bounds: tuple[float, float]) -> timedelta:
    """Right-skewed delay inside [min, max]: most hops are quick, a few take long."""
    low, high = bounds
    seconds = rng.triangular(low, high, low + (high - low) * 0.25) if high > low else low
    return timedelta(seconds=max(1, round(seconds)))


def _creation_times(sc: Scenario, rng: random.Random, zone: ZoneInfo) -> list[datetime]:
    """`sc.orders` creation times in [start, start+duration), following the intraday curve."""
    curve = sc.intraday or DEFAULT_INTRADAY
    t = sc.start.astimezone(UTC)
    end = t + sc.duration
    segments: list[tuple[datetime, float]] = []
    weights: list[float] = []
    while t < end:
        local = t.astimezone(zone)
        next_hour = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
        seg_end = min(next_hour, end)
        length = (seg_end - t).total_seconds()
        segments.append((t, length))
        weights.append(curve[local.hour] * length)
        t = seg_end
    if not any(weights):
        raise ScenarioError(["intraday: every hour inside the creation window has weight 0"])
    picks = rng.choices(segments, weights=weights, k=sc.orders)
    return sorted(
        (s + timedelta(seconds=int(rng.random() * length))).replace(microsecond=0) for s, length in picks
    )


def _make_order(
    sc: Scenario,
    rng: random.Random,
    zone: ZoneInfo,
    channel: str,
    created: datetime,
    paid: bool,
    used_ids: set[str],
) -> SimOrder:
    local = created.astimezone(zone)
    raw_id = RAW_ID_MAKERS[channel](rng, local)
    while raw_id in used_ids:
        raw_id = RAW_ID_MAKERS[channel](rng, local)
    used_ids.add(raw_id)
    sku, price, _ = rng.choices(SKUS, cum_weights=_cumulative(SKUS)[1])[0]
    qty = _pick(rng, QUANTITIES)
    amount = max(price * qty // 2, price * qty - _pick(rng, DISCOUNTS_FEN))
    province, cities, _, warehouse = rng.choices(REGIONS, cum_weights=_cumulative(REGIONS, 2)[1])[0]
    carrier = _pick(rng, CARRIER_MIX.get(channel, CARRIER_MIX["*"]))
    order = SimOrder(
        channel=channel,
        raw_id=raw_id,
        created_at=created,
        amount_fen=amount,
        sku=sku,
        province=province,
        city=rng.choice(cities),
        payment_method=_pick(rng, PAYMENT_MIX[channel]),
        warehouse=warehouse,
        carrier=carrier,
        tracking_no=TRACKING_MAKERS[carrier](rng),
    )
    lat = sc.latency
    events = {"created": created}
    if paid:
        t = events["paid"] = created + _latency(rng, lat.pay)
        for state, bounds in (
            ("wms_received", lat.wms),
            ("picked", lat.pick),
            ("packed", lat.pack),
            ("shipped", lat.ship),
            ("delivered", lat.deliver),
        ):
            t = t + _latency(rng, bounds)
            events[state] = t
    elif rng.random() < sc.cancel_ratio:
        events["cancelled"] = created + _latency(rng, lat.cancel)
    order.events = {s: t for s, t in events.items() if t <= sc.end}
    return order


def _add_returns(sc: Scenario, orders: list[SimOrder]) -> None:
    """`sc.return_ratio` of the delivered orders walk the return path (own random stream, so the
    rest of the world is the same with or without returns)."""
    if not sc.return_ratio:
        return
    rng = random.Random(f"returns:{sc.seed}")
    for order in orders:
        delivered = order.events.get("delivered")
        if delivered is None or rng.random() >= sc.return_ratio:
            continue
        t = delivered
        for state, hop in RETURN_STEPS:
            t = t + _latency(rng, getattr(sc.latency, hop))
            if t > sc.end:
                break
            order.events[state] = t


def _add_erp(sc: Scenario, orders: list[SimOrder]) -> None:
    """The ERP hop between paying and the WMS (own random stream, so the rest of the world is the
    same with or without it): the ERP pulls a paid order and accepts it (review passed, released
    to the warehouse) before the WMS receives it; `manual_ratio` of them are question orders a
    person handles first (pulled early, accepted later)."""
    rng = random.Random(f"erp:{sc.seed}")
    for order in orders:
        paid = order.events.get("paid")
        if paid is None:
            continue
        wms = order.events.get("wms_received")
        gap = (
            (wms - paid).total_seconds() if wms is not None else _latency(rng, sc.latency.wms).total_seconds()
        )
        manual = rng.random() < sc.manual_ratio
        low, high = (0.5, 0.9) if manual else (0.1, 0.5)
        accepted = paid + timedelta(
            seconds=min(max(1, int(gap * rng.uniform(low, high))), max(1, int(gap) - 1))
        )
        pulled = paid + timedelta(seconds=max(1, int(gap * rng.uniform(0.05, 0.2)))) if manual else accepted
        pulled = min(pulled, accepted)
        if pulled > sc.end:
            continue
        order.erp_pulled_at = pulled
        if manual:
            order.manual = rng.choice(QUESTION_TYPES)
        if accepted <= sc.end:
            order.events["erp_accepted"] = accepted


def plan_pushes(scans: list[tuple[datetime, int, str]], first_check: datetime, end: datetime) -> tuple:
    """Kuaidi100 checks the parcel at `first_check` and every PUSH_INTERVAL after, and pushes the
    track when it has new scans: the push times of `scans` (up to `end`)."""
    pushes: list[datetime] = []
    for at, _code, _text in scans:
        if at <= first_check:
            push = first_check
        else:
            steps = -(-(at - first_check) // PUSH_INTERVAL)
            push = first_check + steps * PUSH_INTERVAL
        if push <= end and (not pushes or push > pushes[-1]):
            pushes.append(push)
    return tuple(pushes)


def _add_tracking(sc: Scenario, orders: list[SimOrder]) -> None:
    """Carrier scans after shipping (own random stream): picked up, on the way every few hours,
    out for delivery, signed at the delivered time; and when Kuaidi100 pushes them."""
    rng = random.Random(f"tracking:{sc.seed}")
    for order in orders:
        shipped = order.events.get("shipped")
        if shipped is None:
            continue
        delivered = order.events.get("delivered")
        pickup = shipped + _latency(rng, sc.latency.pickup)
        if delivered is not None and pickup >= delivered:
            pickup = shipped + timedelta(seconds=int((delivered - shipped).total_seconds()) // 2)
        origin = WAREHOUSE_CITY.get(order.warehouse, "")
        scans = [(pickup, 1, f"【{origin}】{order.carrier} 已揽收")]
        out = delivered - timedelta(seconds=rng.randint(1800, 5400)) if delivered is not None else None
        t = pickup
        while True:  # trunk scans until the parcel goes out for delivery (or the world ends)
            t = t + _latency(rng, TRUNK_SCAN)
            if (out is not None and t >= out) or t > sc.end:
                break
            scans.append((t, 0, f"【{order.province}转运中心】已发出"))
        if delivered is not None:
            if out > scans[-1][0]:
                scans.append((out, 5, f"【{order.city}】快件已由快递员派送中"))
            scans.append((delivered, 3, f"【{order.city}】已签收，签收人：本人"))
        order.scans = tuple(s for s in scans if s[0] <= sc.end)
        first_check = shipped + timedelta(seconds=rng.randint(*PUSH_FIRST))
        order.track_pushes = plan_pushes(list(order.scans), first_check, sc.end)
        if order.scans:
            order.events["in_transit"] = pickup


def stop_tracking(order: SimOrder, at: datetime, *, undelivered: bool = True) -> None:
    """Fault hook: the carrier's scans of `order` stop at `at` (e.g. a hub that stops scanning).
    Scans after `at` and the pushes that would have carried them go; with `undelivered` the parcel
    is not delivered either (no delivered, no return path)."""
    kept = tuple(scan for scan in order.scans if scan[0] <= at)
    if kept:
        last = kept[-1][0]
        first_after = next((p for p in order.track_pushes if p >= last), None)  # carries the last scan
        order.track_pushes = tuple(p for p in order.track_pushes if first_after is None or p <= first_after)
    else:
        order.track_pushes = ()
        order.events.pop("in_transit", None)
    order.scans = kept
    if undelivered:
        for state in ("delivered", *RETURNS):
            order.events.pop(state, None)


class World:
    """Ground truth of one simulated run: orders, their true timelines and injected faults."""

    def __init__(self, scenario: Scenario, orders: list[SimOrder], fault_counts: dict[str, int]) -> None:
        self.scenario = scenario
        self.orders = orders
        self.fault_counts = dict(fault_counts)
        self.start = scenario.start.astimezone(UTC)
        self.end = scenario.end.astimezone(UTC)
        self._by_channel: dict[str, list[SimOrder]] = {c: [] for c in CHANNELS}
        for order in orders:
            if order.in_channel:  # a lost order never reaches the channel's order list
                self._by_channel[order.channel].append(order)

    @classmethod
    def generate(cls, scenario: Scenario, seed: int | None = None, scale: float = 1) -> World:
        """Build the world deterministically from the scenario (and an optional seed override)."""
        sc = scenario.scaled(scale, seed)
        rng = random.Random(sc.seed)
        zone = ZoneInfo(sc.timezone)
        times = _creation_times(sc, rng, zone)
        mix = sc.channel_mix.weights()
        channels = rng.choices(list(mix), weights=list(mix.values()), k=sc.orders)
        paid = set(rng.sample(range(sc.orders), sc.paid))
        used: set[str] = set()
        orders = [_make_order(sc, rng, zone, channels[i], t, i in paid, used) for i, t in enumerate(times)]
        _add_returns(sc, orders)
        if sc.erp:
            _add_erp(sc, orders)
        if sc.tracking:
            _add_tracking(sc, orders)
        counts: dict[str, int] = {}
        for i, fault in enumerate(sc.faults):
            applier = FAULT_APPLIERS.get(fault.kind)
            if applier is None:
                raise ScenarioError([f"faults[{i}].kind: no applier registered for {fault.kind!r}"])
            for tag, n in applier(fault, orders, rng, f"faults[{i}]").items():
                counts[tag] = counts.get(tag, 0) + n
        return cls(sc, orders, counts)

    def recorded_time(self, system: str, moment: datetime | None) -> datetime | None:
        """The time `system` writes for the true `moment` (a clock_skew fault shifts it)."""
        if moment is None:
            return None
        for fault in self.scenario.faults:
            if isinstance(fault, ClockSkewFault) and fault.system == system and fault.active(moment):
                return moment + fault.offset
        return moment

    def orders_by_channel(self, channel: str) -> list[SimOrder]:
        return self._by_channel.get(channel, [])

    def stuck_paid(self, now: datetime, sla: timedelta = DEFAULT_SLA) -> list[SimOrder]:
        """Orders paid more than `sla` before `now` that never reached the WMS (nor got cancelled)."""
        return [o for o in self.orders if _stuck(o, now, sla)]

    def truth(self, now: datetime, sla: timedelta = DEFAULT_SLA, window: timedelta = DEFAULT_WINDOW) -> dict:
        """Counts and sync KPIs at `now`, computed from the ground truth alone."""
        total = _Tally()
        per: dict[str, _Tally] = {c: _Tally() for c in CHANNELS}
        for order in self.orders:
            for tally in (total, per[order.channel]):
                tally.add(order, now, sla, window)
        return {
            "at": now.astimezone(UTC).isoformat(),
            "cause": self.scenario.truth.cause,
            **total.as_dict(),
            "faults": dict(self.fault_counts),
            "by_channel": {c: t.as_dict() for c, t in per.items() if t.created},
        }


def _reached(order: SimOrder, now: datetime) -> bool:
    at = order.events.get("wms_received")
    return at is not None and at <= now


def _cancelled(order: SimOrder, now: datetime) -> bool:
    at = order.events.get("cancelled")
    return at is not None and at <= now


def _stuck(order: SimOrder, now: datetime, sla: timedelta) -> bool:
    paid = order.events.get("paid")
    return paid is not None and paid <= now - sla and not _reached(order, now) and not _cancelled(order, now)


class _Tally:
    """Ground-truth counters for one slice of orders."""

    def __init__(self) -> None:
        self.created = self.paid = self.cancelled = self.reached = self.shipped = self.stuck = 0
        self.sync_paid = self.sync_reached = 0

    def add(self, order: SimOrder, now: datetime, sla: timedelta, window: timedelta) -> None:
        if order.created_at > now:
            return
        self.created += 1
        reached, cancelled = _reached(order, now), _cancelled(order, now)
        paid = order.events.get("paid")
        self.paid += paid is not None and paid <= now
        self.cancelled += cancelled
        self.reached += reached
        self.shipped += "shipped" in order.events and order.events["shipped"] <= now
        self.stuck += _stuck(order, now, sla)
        if paid is not None and now - window <= paid <= now - sla and not (cancelled and not reached):
            self.sync_paid += 1
            self.sync_reached += reached

    def as_dict(self) -> dict:
        return {
            "created": self.created,
            "paid": self.paid,
            "cancelled": self.cancelled,
            "reached_wms": self.reached,
            "shipped": self.shipped,
            "stuck_paid": self.stuck,
            "sync_paid_orders": self.sync_paid,
            "sync_unreached_orders": self.sync_paid - self.sync_reached,
            "sync_success_ratio": self.sync_reached / self.sync_paid if self.sync_paid else None,
        }
