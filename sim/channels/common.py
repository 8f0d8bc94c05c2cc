"""Shared pieces of the fake channel APIs: the commercial view of an order, formats, signing."""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sim.model import SimOrder

BEIJING = ZoneInfo("Asia/Shanghai")
BJ_FORMAT = "%Y-%m-%d %H:%M:%S"
# Only these lifecycle events are visible on a sales channel; the warehouse steps are not.
COMMERCIAL = ("created", "paid", "shipped", "delivered", "cancelled", "closed")
_PHASE_ORDER = ("closed", "cancelled", "delivered", "shipped", "paid", "created")
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class View:
    """What a channel shows of one order at one moment."""

    order: SimOrder
    phase: str  # created | paid | shipped | delivered | cancelled | closed
    times: dict[str, datetime]  # commercial events visible so far (UTC, whole seconds)
    modified: datetime


def view_of(order: SimOrder, now: datetime) -> View | None:
    """The commercial view of `order` as of `now`, or None before it exists."""
    if order.created_at > now:
        return None
    times = {s: _floor(t) for s, t in order.events_until(now).items() if s in COMMERCIAL}
    times.setdefault("created", _floor(order.created_at))
    phase = next(p for p in _PHASE_ORDER if p in times)
    return View(order, phase, times, max(times.values()))


def visible(
    orders: Iterable[SimOrder], now: datetime, start: datetime, end: datetime, *, paid_only: bool = False
) -> list[View]:
    """Views whose modified time lies in [start, end] (inclusive, whole seconds)."""
    out = []
    for order in orders:
        view = view_of(order, now)
        if view is None or not start <= view.modified <= end:
            continue
        if paid_only and "paid" not in view.times:
            continue
        out.append(view)
    return out


class OrderIndex:
    """Channel-visible event times of a list of orders, sorted: finds what changed in a window."""

    def __init__(self, orders: list[SimOrder]) -> None:
        self.orders = orders
        pairs = sorted(
            (t, i)
            for i, o in enumerate(orders)
            for t in (o.created_at, *(t for s, t in o.events.items() if s in COMMERCIAL))
        )
        self._times = [t for t, _ in pairs]
        self._owners = [i for _, i in pairs]
        self._views: dict[tuple, list[View]] = {}  # the pages of one poll ask for the same window

    def changed(self, now: datetime, start: datetime, end: datetime, paid_only: bool) -> list[View]:
        """Views of the orders whose modified time is in [start, end] as of `now` (remembered for
        the last few windows: every page request of a poll reads the same one)."""
        key = (now, start, end, paid_only)
        views = self._views.get(key)
        if views is None:
            views = visible(self.candidates(start, end), now, start, end, paid_only=paid_only)
            if len(self._views) >= 8:
                self._views.clear()
            self._views[key] = views
        return list(views)

    @staticmethod
    def key(orders: list[SimOrder]) -> tuple:
        """Cheap identity of an order list; the index is rebuilt when it changes."""
        if not orders:
            return (0,)
        return (len(orders), id(orders[0]), id(orders[-1]), sum(len(o.events) for o in orders))

    def candidates(self, start: datetime, end: datetime) -> list[SimOrder]:
        """Orders with a visible event in [start, end + 1 s): the only ones whose modified can be there."""
        lo = bisect.bisect_left(self._times, start)
        hi = bisect.bisect_left(self._times, end + timedelta(seconds=1))
        return [self.orders[i] for i in sorted(set(self._owners[lo:hi]))]


def sort_views(views: list[View], descending: bool) -> list[View]:
    """Platform order: by modified time, ties broken by id so paging is stable."""
    return sorted(views, key=lambda v: (v.modified, v.order.raw_id), reverse=descending)


def page_of(items: list, page: int, size: int, base: int) -> list:
    start = (page - base) * size
    return items[start : start + size] if start >= 0 else []


def _floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


def bj(moment: datetime | None, empty: str | None = "") -> str | None:
    """UTC datetime -> Beijing naive `yyyy-MM-dd HH:mm:ss` (platform wall-clock strings)."""
    if moment is None:
        return empty
    return moment.astimezone(BEIJING).strftime(BJ_FORMAT)


def parse_bj(text: str) -> datetime:
    """Beijing naive string -> aware UTC; raises ValueError."""
    return datetime.strptime(text, BJ_FORMAT).replace(tzinfo=BEIJING).astimezone(UTC)


def unix(moment: datetime | None) -> int:
    return int(moment.timestamp()) if moment is not None else 0


def from_unix(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def cipher(order: SimOrder, what: str) -> str:
    """An opaque, stable ciphertext-looking string: platforms never show plaintext PII."""
    digest = hashlib.sha256(f"{order.channel}|{order.raw_id}|{what}".encode()).digest()
    return "~" + base64.b64encode(digest).decode()[:28] + "~"


def masked_mobile(order: SimOrder) -> str:
    """A platform-masked mobile number as JD's consigneeInfo shows it (`138****0000`), stable per order."""
    digest = hashlib.sha256(f"{order.channel}|{order.raw_id}|mobile".encode()).digest()
    return f"1{'3578'[digest[0] % 4]}{digest[1] % 10}****{int.from_bytes(digest[2:6]) % 10000:04d}"


def numeric_child(raw_id: str, n: int = 1) -> str:
    """A sub-order id derived from the parent (numeric ids get +n, others a suffix)."""
    return str(int(raw_id) + n) if raw_id.isdigit() else f"{raw_id}-{n}"


def md5_sign(secret: str, params: dict[str, str]) -> str:
    """TOP/JD/PDD: MD5(secret + k1v1k2v2... sorted by name + secret), upper-case hex."""
    text = secret + "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign") + secret
    return hashlib.md5(text.encode()).hexdigest().upper()


def hmac_md5_sign(secret: str, params: dict[str, str]) -> str:
    text = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    return hmac.new(secret.encode(), text.encode(), hashlib.md5).hexdigest().upper()


def hmac_sha256_hex(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class ApiRequest:
    """One decoded HTTP request: query and form parameters merged into `params`."""

    method: str
    path: str
    params: dict[str, str]
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json;charset=UTF-8", **(headers or {})})


@dataclass
class Context:
    """Everything a channel handler needs for one request."""

    now: datetime
    index: OrderIndex
    creds: dict[str, str]
    hide: int = 0  # vanish_mid_page: drop this many records from the head of the sorted list
    log: Callable[[dict], None] = lambda entry: None

    def changed(self, start: datetime, end: datetime, *, paid_only: bool = False) -> list[View]:
        """Views of the orders whose modified time is in [start, end] as of now."""
        return self.index.changed(self.now, start, end, paid_only)

    def hidden(self, items: list) -> list:
        return items[self.hide :] if self.hide else items


def request_id(ctx: Context) -> str:
    return hashlib.sha1(f"{ctx.now.timestamp()}|{id(ctx)}".encode()).hexdigest()[:13]
