"""Scenario TOML -> a strict, frozen model; every problem reported as `dotted.location: message`.

A scenario says how many orders a simulated world has, how they spread over channels and the
day, how long each hop takes, and which faults are injected. Fault kinds live in a registry
(`FAULT_KINDS`): each kind is a small model here and an applier in `sim/world.py`.
"""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sentinel.config import Duration, parse_duration
from sim.model import CHANNELS

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
PAYMENT_METHODS = ("alipay", "wechat")


class ScenarioError(Exception):
    """All problems of one scenario, each as `dotted.location: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(value: Any) -> float:
    return parse_duration(value).total_seconds()


def _positive_range(cls, value: Any) -> tuple[float, float]:
    """A fault's [min, max] seconds (numbers or durations), both above zero (a field validator)."""
    low, high = (_seconds(v) for v in value)
    if not 0 < low <= high:
        raise ValueError(f"need 0 < min <= max, got [{low:g}, {high:g}]")
    return low, high


class Latency(Strict):
    """Per-hop delays in seconds as [min, max] (numbers or durations like "8m")."""

    pay: tuple[float, float] = (5, 600)  # created -> paid
    wms: tuple[float, float] = (30, 480)  # paid -> wms_received (SLA 15 min)
    pick: tuple[float, float] = (60, 600)  # wms_received -> picked
    pack: tuple[float, float] = (60, 480)  # picked -> packed (timeout 12 min)
    ship: tuple[float, float] = (600, 7200)  # packed -> shipped (timeout 4 h)
    deliver: tuple[float, float] = (86400, 259200)  # shipped -> delivered
    pickup: tuple[float, float] = (1200, 5400)  # shipped -> the carrier's first scan (worlds with tracking)
    cancel: tuple[float, float] = (900, 1800)  # created -> cancelled (unpaid orders)
    # The return path of a returned order (each return state's timeout is 24 h: a clean world stays under it).
    return_request: tuple[float, float] = (3600, 259200)  # delivered -> return_requested (buyer asks)
    return_approve: tuple[float, float] = (300, 43200)  # return_requested -> return_approved (CS agrees)
    return_send: tuple[float, float] = (
        1800,
        72000,
    )  # return_approved -> return_awaiting_receipt (buyer ships back)
    return_receive: tuple[float, float] = (
        28800,
        79200,
    )  # return_awaiting_receipt -> return_received (warehouse)
    return_refund: tuple[float, float] = (600, 21600)  # return_received -> refunded (finance)

    @field_validator("*", mode="before")
    @classmethod
    def _range(cls, value: Any) -> tuple[float, float]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError('expected [min, max], e.g. [30, 480] or ["30s", "8m"]')
        low, high = (_seconds(v) for v in value)
        if low < 0 or high < low:
            raise ValueError(f"need 0 <= min <= max, got [{low:g}, {high:g}]")
        return low, high


class ChannelMix(Strict):
    """Relative weight of each channel among created orders."""

    tmall: float = Field(default=0.0, ge=0)
    jd: float = Field(default=0.0, ge=0)
    pdd: float = Field(default=0.0, ge=0)
    douyin: float = Field(default=0.0, ge=0)
    youzan: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> ChannelMix:
        if not any(self.weights().values()):
            raise ValueError("at least one channel needs a positive weight")
        return self

    def weights(self) -> dict[str, float]:
        return {channel: getattr(self, channel) for channel in CHANNELS}


class FaultMatch(Strict):
    """Which orders a fault may hit; an empty list matches everything."""

    channel: tuple[str, ...] = ()
    payment_method: tuple[str, ...] = ()
    sku_prefix: str | None = None

    @field_validator("channel")
    @classmethod
    def _channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = sorted(set(value) - set(CHANNELS))
        if bad:
            raise ValueError(f"unknown channel(s) {bad}; use {list(CHANNELS)}")
        return value

    @field_validator("payment_method")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = sorted(set(value) - set(PAYMENT_METHODS))
        if bad:
            raise ValueError(f"unknown payment method(s) {bad}; use {list(PAYMENT_METHODS)}")
        return value

    def matches(self, channel: str, payment_method: str, sku: str) -> bool:
        return (
            (not self.channel or channel in self.channel)
            and (not self.payment_method or payment_method in self.payment_method)
            and (self.sku_prefix is None or sku.startswith(self.sku_prefix))
        )


class Fault(Strict):
    """Base of every fault kind; subclasses register themselves with `fault_kind`."""

    kind: str
    scales: ClassVar[tuple[str, ...]] = ()  # integer fields multiplied by the scenario scale

    def scaled(self, scale: float) -> Fault:
        return self.model_copy(update={f: max(1, round(getattr(self, f) * scale)) for f in self.scales})


FAULT_KINDS: dict[str, type[Fault]] = {}


def fault_kind(kind: str):
    """Class decorator registering a fault model under `kind`."""

    def register(cls: type[Fault]) -> type[Fault]:
        FAULT_KINDS[kind] = cls
        return cls

    return register


@fault_kind("drop")
class DropFault(Fault):
    """A hop silently never happens for `count` matching orders paid at or after `after`."""

    kind: Literal["drop"] = "drop"
    # wms: the ERP's push to the WMS; channel: the order service loses the order after payment;
    # erp: the ERP never pulls the order from the channel (worlds with an ERP)
    hop: Literal["wms", "channel", "erp"] = "wms"
    match: FaultMatch = FaultMatch()
    after: AwareDatetime | None = None
    count: int = Field(ge=1)
    scales: ClassVar[tuple[str, ...]] = ("count",)


@fault_kind("price_change")
class PriceChangeFault(Fault):
    """A live-stream price change the order system never gets: matching orders paid in
    [after, until) are paid `discount_fen` less than the order amount says."""

    kind: Literal["price_change"] = "price_change"
    match: FaultMatch = FaultMatch()
    after: AwareDatetime | None = None
    until: AwareDatetime | None = None
    discount_fen: int = Field(gt=0)


@fault_kind("slow_callback")
class SlowCallbackFault(Fault):
    """The payment platform sends notifies late: matching orders paid in [after, until) are
    notified `delay` seconds ([min, max]) after paying instead of 1-3 s."""

    kind: Literal["slow_callback"] = "slow_callback"
    match: FaultMatch = FaultMatch()
    after: AwareDatetime | None = None
    until: AwareDatetime | None = None
    delay: tuple[float, float] = (10, 60)

    _range = field_validator("delay", mode="before")(_positive_range)


@fault_kind("duplicate")
class DuplicateFault(Fault):
    """The payment platform sends the notify again (e.g. after a 504) for `ratio` of the matching
    orders paid in [after, until): `copies` extra notifies, each 5-30 s after the first."""

    kind: Literal["duplicate"] = "duplicate"
    match: FaultMatch = FaultMatch()
    after: AwareDatetime | None = None
    until: AwareDatetime | None = None
    ratio: float = Field(gt=0, le=1)
    copies: int = Field(default=1, ge=1, le=5)


@fault_kind("manual_review")
class ManualReviewFault(Fault):
    """A person has to handle more orders (e.g. a risk rule flags them, stock sync breaks): `ratio`
    of the matching orders paid in [after, until) become ERP question orders (worlds with an ERP)."""

    kind: Literal["manual_review"] = "manual_review"
    match: FaultMatch = FaultMatch()
    after: AwareDatetime | None = None
    until: AwareDatetime | None = None
    ratio: float = Field(gt=0, le=1)
    question: str = "疑似风险订单"  # the question type the ERP records


class DelayMatch(FaultMatch):
    """FaultMatch plus the warehouse / carrier / city an order goes through."""

    warehouse: tuple[str, ...] = ()
    carrier: tuple[str, ...] = ()
    city: tuple[str, ...] = ()

    def matches_order(self, order: Any) -> bool:
        return (
            self.matches(order.channel, order.payment_method, order.sku)
            and (not self.warehouse or order.warehouse in self.warehouse)
            and (not self.carrier or order.carrier in self.carrier)
            and (not self.city or order.city in self.city)
        )


@fault_kind("stall")
class StallFault(Fault):
    """Orders stop in `state`: of the matching ones there in [after, until), `ratio` (or the first
    `count` by entry time) never move on. Returns: those entering it in the window (e.g. refunds no
    longer pulled or pushed after an API key rotation; a return queue without consumers). In transit
    (worlds with tracking): parcels on the way at some time in the window, whose carrier scans stop
    from `after` (or their pickup, if later) and never resume: a hub that stops scanning; the
    parcel is never delivered."""

    kind: Literal["stall"] = "stall"
    state: Literal[
        "in_transit", "return_requested", "return_approved", "return_awaiting_receipt", "return_received"
    ]
    match: DelayMatch = DelayMatch()
    after: AwareDatetime | None = None
    until: AwareDatetime | None = None
    ratio: float | None = Field(default=None, gt=0, le=1)
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_amount(self) -> StallFault:
        if (self.ratio is None) == (self.count is None):
            raise ValueError("give exactly one of ratio and count")
        return self

    def scaled(self, scale: float) -> Fault:
        if self.count is None:
            return self
        return self.model_copy(update={"count": max(1, round(self.count * scale))})


class _Window(Fault):
    """A fault active in [after, until) of virtual time (None: from the start / to the end)."""

    after: AwareDatetime | None = None
    until: AwareDatetime | None = None

    def active(self, now: datetime) -> bool:
        return (self.after is None or now >= self.after) and (self.until is None or now < self.until)


DELAY_HOPS = {  # hop -> the state whose entry it delays (everything after it shifts too)
    "wms": "wms_received",
    "pick": "picked",
    "pack": "packed",
    "ship": "shipped",
    "deliver": "delivered",
}


@fault_kind("delay")
class DelayFault(_Window):
    """A hop takes `delay` ([min, max]) longer for matching orders that reach the state before it in
    [after, until) (e.g. a warehouse's packing line stalls); every later step shifts with it."""

    kind: Literal["delay"] = "delay"
    hop: Literal["wms", "pick", "pack", "ship", "deliver"]
    match: DelayMatch = DelayMatch()
    delay: tuple[float, float]
    ratio: float = Field(default=1.0, gt=0, le=1)

    _range = field_validator("delay", mode="before")(_positive_range)


@fault_kind("cancel_rule")
class CancelRuleFault(_Window):
    """A misconfigured rule cancels `ratio` of the matching orders paid in [after, until) within
    `within` ([min, max]) of paying; they never reach the warehouse."""

    kind: Literal["cancel_rule"] = "cancel_rule"
    match: FaultMatch = FaultMatch()
    ratio: float = Field(gt=0, le=1)
    within: tuple[float, float] = (3, 30)

    _range = field_validator("within", mode="before")(_positive_range)


@fault_kind("clock_skew")
class ClockSkewFault(_Window):
    """A system writes wrong times from `after`: each time it records is off by `offset` (e.g. local
    time labelled as UTC). `system`: the ERP/WMS database."""

    kind: Literal["clock_skew"] = "clock_skew"
    system: Literal["wms"] = "wms"
    offset: Duration

    @field_validator("offset")
    @classmethod
    def _nonzero(cls, value: timedelta) -> timedelta:
        if not value:
            raise ValueError("must not be zero")
        return value


SOURCE_FAULTS = ("auth_failure", "rate_limit")


@fault_kind("auth_failure")
class AuthFailureFault(_Window):
    """A channel API rejects the merchant's credentials in [after, until) (a rotated API key)."""

    kind: Literal["auth_failure"] = "auth_failure"
    channel: str

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if value not in CHANNELS:
            raise ValueError(f"unknown channel {value!r}; use {list(CHANNELS)}")
        return value


@fault_kind("rate_limit")
class RateLimitFault(AuthFailureFault):
    """A channel API throttles the merchant in [after, until): `quota` requests pass, then every
    request is refused (with Retry-After) for `ban` seconds."""

    kind: Literal["rate_limit"] = "rate_limit"  # type: ignore[assignment]
    quota: int = Field(default=1, ge=0)
    ban: int = Field(default=60, ge=1)


@fault_kind("consumers_gone")
class ConsumersGoneFault(_Window):
    """The warehouse's consumers of the returns-approval queue scale to zero in [after, until):
    approvals published meanwhile wait, and expire after `ttl`; a return whose approval expired
    never reaches the warehouse (it stays approved)."""

    kind: Literal["consumers_gone"] = "consumers_gone"
    queue: Literal["returns"] = "returns"
    ttl: Duration = timedelta(hours=1)


class Truth(Strict):
    cause: str = "none"  # injected root cause id, e.g. "wms_push_gap"
    # Alert rules that detect it (the first of them to fire is the detection) and rules that may
    # also fire as its consequences; any other alert counts as a false alert.
    expect: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _expects(self) -> Truth:
        if self.cause != "none" and not self.expect:
            raise ValueError("a scenario with a cause names the alert rules that must detect it (expect)")
        return self


class Scenario(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 1
    start: AwareDatetime
    duration: Duration  # orders are created in [start, start + duration)
    settle: Duration = timedelta(hours=1)  # replay time after creation ends
    orders: int = Field(ge=1)
    paid: int = Field(ge=0)  # exact number of orders that get paid
    cancel_ratio: float = Field(default=0.6, ge=0, le=1)  # of unpaid orders, how many get cancelled
    return_ratio: float = Field(default=0.03, ge=0, le=1)  # of delivered orders, how many are returned
    channel_mix: ChannelMix = ChannelMix(tmall=0.3, jd=0.2, pdd=0.25, douyin=0.15, youzan=0.1)
    intraday: tuple[float, ...] | None = None  # 24 weights by local hour (None: the default curve)
    timezone: str = "Asia/Shanghai"  # zone of `intraday` hours and of native local times
    latency: Latency = Latency()
    # Systems besides the channels, payments and the WMS: the ERP (Jushuitan order API) between the
    # channels and the WMS, and carrier tracking (Kuaidi100 pushes) after shipping.
    erp: bool = False
    tracking: bool = False
    manual_ratio: float = Field(default=0.02, ge=0, le=1)  # of the ERP's orders, handled by a person
    faults: tuple[Fault, ...] = ()
    truth: Truth = Truth()

    @field_validator("duration")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @field_validator("intraday")
    @classmethod
    def _curve(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (len(value) != 24 or min(value) < 0 or not any(value)):
            raise ValueError("expected 24 non-negative weights, one per local hour, not all zero")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.paid > self.orders:
            raise ValueError(f"paid ({self.paid}) cannot exceed orders ({self.orders})")
        if self.settle.total_seconds() < self.latency.pay[1]:
            raise ValueError("settle must be at least latency.pay max, so every paid order pays in the world")
        if not self.tracking and any(
            isinstance(f, StallFault) and f.state == "in_transit" for f in self.faults
        ):
            raise ValueError("a stall in transit needs carrier tracking (tracking = true)")
        return self

    def with_hops(self) -> Scenario:
        """The same scenario in a world with the ERP and carrier tracking (the demo's world)."""
        return self.model_copy(update={"erp": True, "tracking": True})

    @property
    def end(self) -> datetime:
        return self.start + self.duration + self.settle

    @property
    def fault_start(self) -> datetime:
        """When the first fault begins (the scenario's start if no fault says)."""
        times = [f.after for f in self.faults if getattr(f, "after", None) is not None]
        return min(times) if times else self.start

    def scaled(self, scale: float = 1.0, seed: int | None = None) -> Scenario:
        """The same scenario with orders/paid/fault counts multiplied by `scale`."""
        update: dict[str, Any] = {}
        if seed is not None:
            update["seed"] = seed
        if scale != 1:
            if scale <= 0:
                raise ScenarioError([f"scale: must be positive, got {scale}"])
            orders = max(1, round(self.orders * scale))
            update.update(
                orders=orders,
                paid=min(orders, round(self.paid * scale)),
                faults=tuple(f.scaled(scale) for f in self.faults),
            )
        return self.model_copy(update=update) if update else self


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts)


def _problems(exc: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        where = prefix + (("." if prefix and err["loc"] else "") + _location(err["loc"]))
        out.append(f"{where or '$'}: {msg}")
    return out


def parse_scenario(raw: dict[str, Any]) -> Scenario:
    """Validate a scenario dictionary (parsed TOML); raises ScenarioError listing every problem."""
    problems: list[str] = []
    data = dict(raw)
    faults = []
    for i, item in enumerate(data.get("faults") or []):
        where = f"faults[{i}]"
        kind = item.get("kind") if isinstance(item, dict) else None
        model = FAULT_KINDS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(f"{where}.kind: unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
            continue
        try:
            faults.append(model.model_validate(item))
        except ValidationError as exc:
            problems.extend(_problems(exc, where))
    data["faults"] = tuple(faults)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc))
        raise ScenarioError(problems) from None
    if problems:
        raise ScenarioError(problems)
    return scenario


def scenario_path(name_or_path: str | Path) -> Path:
    """`clean_day` -> sim/scenarios/clean_day.toml; anything with a suffix or slash is a path."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        return Path(text)
    return SCENARIO_DIR / f"{text}.toml"


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path, *, scale: float = 1.0, seed: int | None = None) -> Scenario:
    """Load a scenario by name (sim/scenarios/NAME.toml) or path, optionally scaled/reseeded."""
    path = scenario_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError([f"{path}: no such scenario; available: {available_scenarios()}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError([f"{path}: {exc}"]) from None
    return parse_scenario(raw).scaled(scale, seed)
