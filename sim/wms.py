"""A simulated ERP/WMS database: Wangdiantong-style stock-out orders and return (refund) orders
written as the world unfolds.

Like a real WMS it stores naive local (Beijing) DATETIMEs and integer status codes
(reference/payments_logistics_wms.md §9.2). Works on SQLite, MariaDB/MySQL and PostgreSQL.

Returns reach the monitor through `wms_refund`, the ERP's return order (退换单): the ERP pulls each
platform's after-sale request, customer service approves it, the buyer's return waybill is
recorded, the warehouse books the goods in and finance refunds. It is the one system that sees every
step of the canonical return path for every channel: the platforms' refund overlays
(reference/channels.md) differ in depth (Youzan only has "in progress"/"done", PDD has no
"goods sent back" code, JD keeps after-sales in a separate API) and none sees the warehouse receipt.
Each step keeps its own time column, so a poll that misses a step still learns when it happened.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import DATETIME as SQLITE_DATETIME

from sim.model import SimOrder
from sim.world import World

ZONE = ZoneInfo("Asia/Shanghai")
SHOP_NO = {"tmall": "TMALL01", "jd": "JD01", "pdd": "PDD01", "douyin": "DY01", "youzan": "YZ01"}

# Stock-out status codes (旺店通 stockout status).
STATUS_CANCELLED = 5
STATUS_ACCEPTED = 53
STATUS_PICKED = 79
STATUS_PACKED = 70  # 待发货: packed, waiting for the carrier
STATUS_SHIPPED = 110
# consign_status bits: 1 checked, 2 weighed, 16 picked, 32 waybill returned, 64 sorted.
CONSIGN_BITS = {
    STATUS_ACCEPTED: 0,
    STATUS_PICKED: 16,
    STATUS_PACKED: 16 | 1 | 2,
    STATUS_SHIPPED: 16 | 1 | 2 | 32 | 64,
}
# (canonical state, WMS status it sets), in the order a stock-out moves through them.
TRANSITIONS = (
    ("wms_received", STATUS_ACCEPTED),
    ("picked", STATUS_PICKED),
    ("packed", STATUS_PACKED),
    ("shipped", STATUS_SHIPPED),
)

# Return order process_status codes (the ERP's 退换单; styled after Wangdiantong, not verified
# against its documentation) and the time column each step fills.
REFUND_CANCELLED = 10  # 已取消 (withdrawn by the buyer)
REFUND_STEPS = (
    ("return_requested", 20, "created"),  # 待审核: after-sale request pulled from the platform
    ("return_approved", 30, "agree_time"),  # 已同意: CS approved, waiting for the buyer to send back
    ("return_awaiting_receipt", 60, "send_time"),  # 待收货: buyer's return waybill recorded
    ("return_received", 80, "stockin_time"),  # 已入库: the warehouse received the goods
    ("refunded", 90, "refund_time"),  # 已完成: refunded
)

# Second-precision text on SQLite, the way a MySQL DATETIME prints (no microseconds).
_SQLITE_SECONDS = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"
LocalDateTime = DateTime(timezone=False).with_variant(
    SQLITE_DATETIME(storage_format=_SQLITE_SECONDS), "sqlite"
)

metadata = MetaData()
wms_stockout = Table(
    "wms_stockout",
    metadata,
    Column("stockout_no", String(32), primary_key=True),
    Column("src_order_no", String(64), nullable=False),
    Column("shop_no", String(16), nullable=False),
    Column("warehouse_no", String(16), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("consign_status", Integer, nullable=False, default=0),
    Column("spec_no", String(40), nullable=False),
    Column("goods_count", Integer, nullable=False, default=1),
    Column("receivable", Numeric(12, 2), nullable=False),
    Column("receiver_province", String(32)),
    Column("receiver_city", String(32)),
    Column("logistics_code", String(20)),
    Column("logistics_no", String(40)),
    Column("created", LocalDateTime, nullable=False),
    Column("modified", LocalDateTime, nullable=False),
    Column("pick_time", LocalDateTime),
    Column("pack_time", LocalDateTime),
    Column("consign_time", LocalDateTime),
    Index("ix_wms_stockout_modified", "modified"),
    Index("ix_wms_stockout_src_order_no", "src_order_no"),
)


wms_refund = Table(
    "wms_refund",
    metadata,
    Column("refund_no", String(32), primary_key=True),
    Column("src_order_no", String(64), nullable=False),
    Column("shop_no", String(16), nullable=False),
    Column("warehouse_no", String(16), nullable=False),
    Column("process_status", SmallInteger, nullable=False),
    Column("refund_amount", Numeric(12, 2), nullable=False),
    Column("return_logistics_no", String(40)),
    Column("created", LocalDateTime, nullable=False),
    Column("modified", LocalDateTime, nullable=False),
    Column("agree_time", LocalDateTime),
    Column("send_time", LocalDateTime),
    Column("stockin_time", LocalDateTime),
    Column("refund_time", LocalDateTime),
    Index("ix_wms_refund_modified", "modified"),
)
RETURN_STATES = tuple(state for state, _code, _column in REFUND_STEPS)
STOCKOUT_STATES = ("wms_received", "picked", "packed", "shipped", "cancelled")


def local_naive(moment: datetime | None) -> datetime | None:
    """UTC-aware -> naive Beijing time at whole seconds, as a WMS DATETIME column holds it."""
    if moment is None:
        return None
    return moment.astimezone(ZONE).replace(tzinfo=None, microsecond=0)


def stockout_status(order: SimOrder, now: datetime) -> int | None:
    """The stock-out status of `order` at `now` (None: the WMS has not received it)."""
    events = order.events
    if not order.in_wms or not ("wms_received" in events and events["wms_received"] <= now):
        return None
    if "cancelled" in events and events["cancelled"] <= now:
        return STATUS_CANCELLED
    status = STATUS_ACCEPTED
    for state, code in TRANSITIONS:
        if state in events and events[state] <= now:
            status = code
    return status


def stockout_no(index: int, order: SimOrder) -> str:
    return f"CK{local_naive(order.events['wms_received']):%Y%m%d}{index:07d}"


def _recorded(ev: dict[str, datetime], skew: Callable[[datetime], datetime] | None) -> dict[str, datetime]:
    return ev if skew is None else {s: skew(t) for s, t in ev.items()}


def stockout_row(index: int, order: SimOrder, now: datetime, skew=None) -> dict:
    """The full `wms_stockout` row of `order` as of `now` (it must have reached the WMS); `skew`
    maps a true time to the time the WMS writes (a wrong clock)."""
    true = {s: t for s, t in order.events.items() if t <= now}
    ev = _recorded(true, skew)
    status = stockout_status(order, now)
    packed = "packed" in ev
    return {
        "stockout_no": stockout_no(index, order),
        "src_order_no": order.raw_id,
        "shop_no": SHOP_NO[order.channel],
        "warehouse_no": order.warehouse,
        "status": status,
        "consign_status": CONSIGN_BITS.get(status, 0),
        "spec_no": order.sku,
        "goods_count": 1,
        "receivable": Decimal(order.amount_fen) / 100,
        "receiver_province": order.province,
        "receiver_city": order.city,
        "logistics_code": order.carrier,
        "logistics_no": order.tracking_no if packed else None,  # e-waybill printed at packing
        "created": local_naive(ev["wms_received"]),
        "modified": local_naive(max(t for s, t in ev.items() if s in STOCKOUT_STATES)),
        "pick_time": local_naive(ev.get("picked")),
        "pack_time": local_naive(ev.get("packed")),
        "consign_time": local_naive(ev.get("shipped")),
    }


def refund_row(index: int, order: SimOrder, now: datetime, skew=None, upto: str | None = None) -> dict | None:
    """The `wms_refund` row of `order` as of `now` (None: no return requested yet); `upto`: the
    last return step the ERP can know of (the warehouse has not heard of the approval yet)."""
    true = {s: t for s, t in order.events.items() if t <= now}
    if upto is not None:
        known = RETURN_STATES[: RETURN_STATES.index(upto) + 1]
        true = {s: t for s, t in true.items() if s not in RETURN_STATES or s in known}
    ev = _recorded(true, skew)
    if not order.in_wms or "return_requested" not in ev:
        return None
    row = {
        "refund_no": f"TH{local_naive(true['return_requested']):%Y%m%d}{index:07d}",
        "src_order_no": order.raw_id,
        "shop_no": SHOP_NO[order.channel],
        "warehouse_no": order.warehouse,
        "refund_amount": Decimal(order.amount_fen) / 100,
        "return_logistics_no": None,
    }
    for state, code, column in REFUND_STEPS:
        row[column] = local_naive(ev.get(state))
        if state in ev:
            row["process_status"], row["modified"] = code, local_naive(ev[state])
    if row["send_time"] is not None:
        row["return_logistics_no"] = "RT" + order.tracking_no
    return row


def _engine(url: str) -> Engine:
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":  # WAL: collectors read while the world writes

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


class WmsDatabase:
    """The WMS side of the world: `sync(world, now)` writes what the warehouse has done by `now`."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.engine = engine or _engine(url)
        self._written: dict[str, int] | None = None  # stockout_no -> status last written
        self._world_id: int | None = None
        self._changes: list[tuple[datetime, int]] = []  # (when, order index), sorted by time
        self._times: list[datetime] = []
        self._applied = 0  # changes before this index are in the database
        self._refunds: dict[str, int] = {}  # refund_no -> process_status last written
        self._refund_changes: list[tuple[datetime, int]] = []
        self._refund_times: list[datetime] = []
        self._refund_applied = 0
        # Return orders whose approval has not reached the warehouse yet (queue path): index set.
        self.approval_known: Callable[[int], bool] | None = None
        self._held: set[int] = set()

    def __repr__(self) -> str:
        return f"WmsDatabase({self.engine.url.render_as_string(hide_password=True)})"

    def create(self) -> None:
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _index(self, world: World) -> None:
        """Every moment a stock-out changes, sorted, so a sync only touches what moved."""
        changes = []
        for i, order in enumerate(world.orders):
            if not order.in_wms or "wms_received" not in order.events:
                continue
            for state in ("wms_received", "picked", "packed", "shipped", "cancelled"):
                if state in order.events:
                    changes.append((order.events[state], i))
        changes.sort()
        self._changes = changes
        self._times = [t for t, _ in changes]
        self._applied = 0
        refunds = sorted(
            (order.events[state], i)
            for i, order in enumerate(world.orders)
            if order.in_wms
            for state, _code, _column in REFUND_STEPS
            if state in order.events
        )
        self._refund_changes, self._refund_times = refunds, [t for t, _ in refunds]
        self._refund_applied = 0
        self._world_id = id(world)

    def _load_written(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(wms_stockout.c.stockout_no, wms_stockout.c.status))
            written = {r.stockout_no: int(r.status) for r in rows}
            rows = conn.execute(select(wms_refund.c.refund_no, wms_refund.c.process_status))
            self._refunds = {r.refund_no: int(r.process_status) for r in rows}
            return written

    @staticmethod
    def _skew(world: World):
        if not any(getattr(f, "system", None) == "wms" for f in world.scenario.faults):
            return None
        return lambda moment: world.recorded_time("wms", moment)

    def sync(self, world: World, now: datetime) -> int:
        """Upsert stock-outs that changed up to `now`; returns the number of rows written."""
        if self._world_id != id(world):
            self._index(world)
        skew = self._skew(world)
        if self._written is None:
            self._written = self._load_written()
        upto = bisect.bisect_right(self._times, now)
        touched = sorted({i for _, i in self._changes[self._applied : upto]})
        inserts, updates = [], []
        for i in touched:
            order = world.orders[i]
            if stockout_status(order, now) is None:
                continue
            row = stockout_row(i, order, now, skew)
            previous = self._written.get(row["stockout_no"])
            if previous == row["status"]:
                continue
            (inserts if previous is None else updates).append(row)
        self._write_rows(wms_stockout, "stockout_no", _UPDATED, inserts, updates)
        for row in inserts + updates:
            self._written[row["stockout_no"]] = row["status"]
        self._applied = max(self._applied, upto)
        return len(inserts) + len(updates) + self._sync_refunds(world, now, skew)

    def _write_rows(self, table, key: str, changed: tuple[str, ...], inserts: list, updates: list) -> None:
        """New rows inserted, moved rows updated (their `changed` columns), in one transaction."""
        if not inserts and not updates:
            return
        with self.engine.begin() as conn:
            if inserts:
                conn.execute(insert(table), inserts)
            if updates:
                stmt = (
                    update(table)
                    .where(table.c[key] == bindparam("b_key"))
                    .values({c: bindparam(c) for c in changed})
                )
                conn.execute(stmt, [{"b_key": r[key], **{c: r[c] for c in changed}} for r in updates])

    def _sync_refunds(self, world: World, now: datetime, skew=None) -> int:
        """Upsert the return orders that moved up to `now` (and those whose approval just reached
        the warehouse)."""
        upto = bisect.bisect_right(self._refund_times, now)
        touched = {i for _, i in self._refund_changes[self._refund_applied : upto]}
        known = self.approval_known
        if known is not None:
            touched |= {i for i in self._held if known(i)}
        inserts, updates = [], []
        for i in sorted(touched):
            order = world.orders[i]
            held = known is not None and "return_approved" in order.events and not known(i)
            if held and order.events["return_approved"] <= now:
                self._held.add(i)
            else:
                self._held.discard(i)
            row = refund_row(i, order, now, skew, upto="return_approved" if held else None)
            if row is None or self._refunds.get(row["refund_no"]) == row["process_status"]:
                continue
            (inserts if row["refund_no"] not in self._refunds else updates).append(row)
        self._write_rows(wms_refund, "refund_no", _REFUND_UPDATED, inserts, updates)
        for row in inserts + updates:
            self._refunds[row["refund_no"]] = row["process_status"]
        self._refund_applied = max(self._refund_applied, upto)
        return len(inserts) + len(updates)


_REFUND_UPDATED = (
    "process_status",
    "modified",
    "return_logistics_no",
    "agree_time",
    "send_time",
    "stockin_time",
    "refund_time",
)
_UPDATED = (
    "status",
    "consign_status",
    "logistics_no",
    "modified",
    "pick_time",
    "pack_time",
    "consign_time",
)
