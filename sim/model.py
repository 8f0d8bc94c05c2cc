"""Ground truth of the simulated world: one SimOrder per order, with its true timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

CHANNELS = ("tmall", "jd", "pdd", "douyin", "youzan")  # youzan = the WeChat mini-program shop
# Channels whose order-list API returns paid orders only (reference/channels.md): an order there
# that is never paid is invisible to any monitor, by the platform's design.
PAID_ONLY_CHANNELS = frozenset({"jd", "pdd"})


@dataclass
class SimOrder:
    channel: str  # one of CHANNELS
    raw_id: str  # native id format of the channel (string, even when numeric)
    created_at: datetime  # UTC
    amount_fen: int
    sku: str  # merchant SKU code, e.g. TS-RED-M
    province: str
    city: str
    payment_method: str  # alipay | wechat
    warehouse: str  # WH-HZ, WH-GZ, ...
    carrier: str  # kuaidi100 carrier code
    tracking_no: str
    # True times (UTC) at which the order entered each canonical state. Only states that really
    # happened by the end of the world are present. Keys: created, paid, (erp_accepted in a world
    # with an ERP), wms_received, picked, packed, shipped, (in_transit: the carrier's first scan, in
    # a world with tracking), delivered, cancelled, and for returned orders return_requested,
    # return_approved, return_awaiting_receipt, return_received, refunded.
    events: dict[str, datetime] = field(default_factory=dict)
    # Which systems saw the order: a fault can keep the WMS from ever receiving it.
    in_wms: bool = True
    in_channel: bool = True  # False: the order service lost it; only the payment notify shows it
    resends: tuple[float, ...] = ()  # payment notifies sent again, seconds after the first receipt
    notify_delay: float | None = None  # seconds from paying to the payment notify, when it is slow
    paid_amount_fen: int | None = None  # what the buyer really paid, when it differs from amount_fen
    tags: set[str] = field(default_factory=set)  # fault tags, e.g. {"wms_push_dropped"}
    # The ERP hop (worlds with `erp = true`): when the ERP pulled the order from the channel (a
    # question order is pulled before it is accepted), and the question type when a person had to
    # handle it (人工干预: address, stock, risk review ...).
    in_erp: bool = True
    erp_pulled_at: datetime | None = None
    manual: str | None = None
    # Carrier tracking (worlds with `tracking = true`): the carrier's scans (time, Kuaidi100 state
    # code, text), oldest first, and the times Kuaidi100 pushed the track to the merchant.
    scans: tuple[tuple[datetime, int, str], ...] = ()
    track_pushes: tuple[datetime, ...] = ()

    def pushed_by(self, now: datetime) -> bool:
        """Whether Kuaidi100 had pushed any scan of this parcel by `now`."""
        return bool(self.track_pushes) and self.track_pushes[0] <= now

    def newest_scan(self, now: datetime) -> datetime | None:
        """The newest carrier scan Kuaidi100 had pushed by `now` (each push carries every scan so far)."""
        pushed = [p for p in self.track_pushes if p <= now]
        if not pushed:
            return None
        return max((at for at, _code, _text in self.scans if at <= pushed[-1]), default=None)

    def side_times(self) -> list[datetime]:
        """Moments besides `events` at which a source shows something new about the order."""
        out = list(self.track_pushes)
        if self.erp_pulled_at is not None:
            out.append(self.erp_pulled_at)
        return out

    def state_at(self, now: datetime) -> str | None:
        """The latest canonical state entered at or before `now` (None: not created yet)."""
        latest, latest_at = None, None
        for state, at in self.events.items():
            if at <= now and (latest_at is None or at >= latest_at):
                latest, latest_at = state, at
        return latest

    def events_until(self, now: datetime) -> dict[str, datetime]:
        return {s: t for s, t in self.events.items() if t <= now}

    def modified_at(self, now: datetime) -> datetime | None:
        seen = [t for t in self.events.values() if t <= now]
        return max(seen) if seen else None
