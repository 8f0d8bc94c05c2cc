"""A small order world written through the real store, with the faults a diagnosis must name."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from collectors.types import Batch, Observation
from store.store import Store

T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai


RAW = {"tmall": "{:018d}", "jd": "{:012d}", "douyin": "{:019d}", "youzan": "E{:023d}"}


@dataclass
class World:
    """Orders paid one every `spacing` from T0, each seen by its channel API, the payment log and
    the WMS unless a fault says otherwise; `write` ingests it all at `now`."""

    batches: dict[str, list[Observation]] = field(default_factory=dict)
    raw_ids: list[str] = field(default_factory=list)

    def add(self, source: str, o: Observation) -> None:
        self.batches.setdefault(source, []).append(o)

    def order(
        self,
        i: int,
        channel: str = "tmall",
        *,
        spacing: timedelta = timedelta(seconds=60),
        wms: bool = True,
        channel_api: bool = True,
        payment: bool = True,
        paid_amount: int | None = None,
        cancel_after: timedelta | None = None,
        payment_repeats: int = 0,
        wms_shift: timedelta = timedelta(0),
        warehouse: str = "WH_SH",
        sku: str = "SKU1",
        stop_at: str | None = None,
        erp: bool = False,
        created: datetime | None = None,
        transit: tuple[str, datetime] | None = None,
        pack_delay: timedelta = timedelta(minutes=5),
        payment_method: str | None = None,
    ) -> str:
        raw = RAW[channel].format(10**11 + i)
        self.raw_ids.append(raw)
        created = created or T0 + spacing * i
        paid = created + timedelta(seconds=30)
        amount = 1000 + i % 7
        dims = {
            "sku": sku,
            "province": "上海",
            "payment_method": payment_method or ("alipay" if channel == "tmall" else "wechat"),
        }
        if channel_api:
            self.add(
                channel,
                Observation(
                    channel, f"{raw}|created", channel, raw, "created", created, dims, amount, created
                ),
            )
            self.add(
                channel,
                Observation(channel, f"{raw}|paid", channel, raw, "paid", paid, dims, amount, created),
            )
        if payment:
            for k in range(payment_repeats + 1):
                key = f"{raw}|paid|{(paid + timedelta(seconds=2 + 20 * k)).isoformat()}"
                self.add(
                    "alipay",
                    Observation(
                        "alipay",
                        key,
                        channel,
                        raw,
                        "paid",
                        paid,
                        {"payment_method": payment_method or "alipay"},
                        paid_amount or amount,
                    ),
                )
        if cancel_after is not None:
            self.add(
                channel,
                Observation(
                    channel, f"{raw}|cancelled", channel, raw, "cancelled", paid + cancel_after, dims
                ),
            )
            return raw
        if erp:  # the ERP's record of it (wms_returns is the shipped config's ERP-role source)
            self.add(
                "wms_returns",
                Observation(
                    "wms_returns",
                    f"{raw}|erp_accepted",
                    channel,
                    raw,
                    "erp_accepted",
                    paid + timedelta(minutes=1),
                ),
            )
        if wms:
            steps = [("wms_received", timedelta(minutes=5)), ("picked", timedelta(minutes=10))]
            steps.append(("packed", timedelta(minutes=10) + pack_delay))
            for state, offset in steps:
                at = paid + offset + wms_shift
                wdims = {"warehouse": warehouse, "carrier": "SF", "sku": sku}
                self.add("wms", Observation("wms", f"{raw}|{state}", channel, raw, state, at, wdims, amount))
                if state == stop_at:
                    break
        if transit is not None:  # (carrier, last scan): shipped, picked up, scanned on the way until then
            carrier, scanned = transit
            tdims = {"carrier": carrier, "city": "广州"}
            self.add(
                "wms",
                Observation(
                    "wms", f"{raw}|shipped", channel, raw, "shipped", paid + timedelta(minutes=20), tdims
                ),
            )
            self.add(
                "kuaidi",
                Observation(
                    "kuaidi",
                    f"{raw}|in_transit",
                    channel,
                    raw,
                    "in_transit",
                    min(paid + timedelta(minutes=40), scanned),  # picked up
                    tdims,
                    progress_at=scanned,
                ),
            )
        return raw

    def write(self, store: Store, now: datetime) -> None:
        store.ingest_many(
            [Batch(s, observations=obs, records=len(obs)) for s, obs in self.batches.items()], now
        )
        for source in self.batches:
            store.record_poll_success(source, now)
