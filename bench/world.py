"""A synthetic multi-channel order world for the benches, produced lazily in time order.

Orders arrive over the days with a daily rhythm (Asia/Shanghai hours) and walk the canonical
lifecycle: most are delivered, some cancelled, a few stuck in paid or picked, a few returned
(some of those stall). Every choice is a hash of (seed, order, purpose), so only one pending
event per order in flight is held in memory and a run is reproducible.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime

from collectors.types import Batch, Observation

START = datetime(2026, 2, 8, 16, tzinfo=UTC)  # Monday 2026-02-09 00:00 in Asia/Shanghai
_M64 = (1 << 64) - 1

# Orders per Shanghai hour of the day (relative): quiet nights, busy evenings.
HOURLY = (3, 2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 9, 8, 8, 8, 8, 8, 9, 11, 13, 14, 12, 7)
CHANNELS = {"tmall": 35, "pdd": 25, "douyin": 20, "jd": 15, "youzan": 5}
# Raw order IDs shaped to match each channel's id_pattern in config.toml.
RAW_ID = {
    "tmall": "{:018d}",
    "jd": "{:012d}",
    "pdd": "260209-{:015d}",
    "douyin": "{:019d}",
    "youzan": "E{:023d}",
}
WAREHOUSES = {"WH_SH_JIADING": 35, "WH_GZ_BAIYUN": 30, "WH_BJ_DAXING": 20, "WH_CD_SHUANGLIU": 15}
CARRIERS = {"SF": 25, "ZTO": 25, "YTO": 20, "JD": 12, "YUNDA": 10, "EMS": 8}
PAYMENTS = {"alipay": 55, "wechat": 40, "unionpay": 5}
CS_GROUPS = {"cs_day": 60, "cs_night": 25, "cs_vip": 15}
CITIES = {
    ("广东", "广州"): 8, ("广东", "深圳"): 8, ("上海", "上海"): 8, ("北京", "北京"): 7, ("浙江", "杭州"): 6,
    ("江苏", "南京"): 5, ("江苏", "苏州"): 5, ("四川", "成都"): 5, ("湖北", "武汉"): 4, ("重庆", "重庆"): 4,
    ("天津", "天津"): 3, ("陕西", "西安"): 3, ("湖南", "长沙"): 3, ("河南", "郑州"): 3, ("山东", "济南"): 3,
    ("山东", "青岛"): 3, ("福建", "厦门"): 2, ("福建", "福州"): 2, ("安徽", "合肥"): 2, ("辽宁", "沈阳"): 2,
    ("辽宁", "大连"): 2, ("云南", "昆明"): 2, ("广西", "南宁"): 2, ("江西", "南昌"): 2, ("河北", "石家庄"): 2,
    ("山西", "太原"): 1, ("黑龙江", "哈尔滨"): 1, ("吉林", "长春"): 1, ("贵州", "贵阳"): 1, ("新疆", "乌鲁木齐"): 1,
}  # fmt: skip

FORWARD = ("created", "paid", "wms_received", "picked", "packed", "shipped", "in_transit", "delivered")
LONG_HAUL = (*FORWARD[:-1], "in_transit", "delivered")  # a second carrier scan on the way
RETURN = ("return_requested", "return_approved", "return_awaiting_receipt", "return_received", "refunded")
PATHS = {
    FORWARD: 69.0,
    LONG_HAUL: 17.0,
    ("created", "cancelled"): 3.0,
    ("created", "paid", "cancelled"): 3.5,
    ("created", "paid"): 0.4,  # stuck in paid: never pushed to the WMS
    FORWARD[:4]: 0.4,  # stuck in picked: never packed
    FORWARD + RETURN: 3.0,
    FORWARD + RETURN[:2]: 0.5,  # the return stalls after approval
}
# Seconds before entering a state, (shortest, longest), skewed towards the short end.
DELAY = {
    "paid": (5, 900), "wms_received": (20, 1500), "picked": (300, 14400), "packed": (60, 900),
    "shipped": (1800, 28800), "in_transit": (3600, 43200), "delivered": (14400, 129600),
    "cancelled": (30, 3600), "return_requested": (43200, 345600), "return_approved": (600, 86400),
    "return_awaiting_receipt": (600, 7200), "return_received": (43200, 172800), "refunded": (600, 86400),
}  # fmt: skip
# The system each state is read from (anything else: "wms"); one batch holds one source.
SOURCE = {"created": "oms", "cancelled": "oms", "paid": "payment", "refunded": "payment",
          "in_transit": "carrier", "delivered": "carrier", "return_requested": "cs",
          "return_approved": "cs", "return_awaiting_receipt": "cs"}  # fmt: skip


class _Table:
    """A weighted choice driven by a uniform number."""

    def __init__(self, weights: dict) -> None:
        self.values = list(weights)
        self.cum = list(itertools.accumulate(weights.values()))

    def pick(self, u: float):
        return self.values[bisect_right(self.cum, u * self.cum[-1])]


_CHANNEL, _PATH, _CITY = _Table(CHANNELS), _Table(PATHS), _Table(CITIES)
_WAREHOUSE, _CARRIER, _PAYMENT, _CS = (
    _Table(WAREHOUSES),
    _Table(CARRIERS),
    _Table(PAYMENTS),
    _Table(CS_GROUPS),
)
_HOUR_CUM = [0.0] + [c / sum(HOURLY) for c in itertools.accumulate(HOURLY)]


class World:
    """Orders created over `days` (and on, at the same rate); `until(end)` yields their events."""

    def __init__(self, orders: int, days: float, seed: int = 7, batch: int = 1000) -> None:
        self.per_day = orders / days
        self.seed = seed
        self.batch = batch
        self.created = 0  # orders created so far
        self.observations = 0  # observations produced so far
        self._heap: list[int] = []  # at_ms << 32 | order << 5 | step: each order's next event
        self._buffers: dict[str, list[Observation]] = {}
        self._batches = 0

    def _u(self, order: int, salt: int) -> float:
        """A uniform number in [0, 1) for (seed, order, salt): splitmix64."""
        z = (order * 0x9E3779B97F4A7C15 + (salt + 1) * 0xD1B54A32D192ED03 + self.seed) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return (z ^ (z >> 31)) / 18446744073709551616.0

    def created_ms(self, order: int) -> int:
        """Creation time of an order: monotonic in `order`, denser in busy hours."""
        day, share = divmod(round(order / self.per_day, 9), 1.0)  # round: the last order ends at `days`
        hour = bisect_right(_HOUR_CUM, share) - 1
        within = (share - _HOUR_CUM[hour]) / (_HOUR_CUM[hour + 1] - _HOUR_CUM[hour])
        return int(START.timestamp() * 1000) + int((day * 24 + hour + within) * 3_600_000)

    def until(self, end: datetime) -> Iterator[Batch]:
        """Every event before `end` in time order, as per-source batches (remainders flushed last)."""
        end_ms, heap = int(end.timestamp() * 1000), self._heap
        while True:
            created = self.created_ms(self.created)
            if heap and heap[0] >> 32 < created:
                at, order, step = heap[0] >> 32, (heap[0] >> 5) & 0x7FFFFFF, heap[0] & 31
                if at >= end_ms:
                    break
                heapq.heappop(heap)
            elif created < end_ms:
                at, order, step = created, self.created, 0
                self.created += 1
            else:
                break
            path = _PATH.pick(self._u(order, 0))
            obs = self._observe(order, path[step], step, at)
            if step + 1 < len(path):
                low, high = DELAY[path[step + 1]]
                wait = low + (high - low) * self._u(order, 10 + step) ** 2
                heapq.heappush(heap, (at + int(wait * 1000)) << 32 | order << 5 | step + 1)
            buffer = self._buffers.setdefault(obs.source, [])
            buffer.append(obs)
            if len(buffer) >= self.batch:
                yield self._flush(obs.source)
        for source in sorted(self._buffers):
            if self._buffers[source]:
                yield self._flush(source)

    def _flush(self, source: str) -> Batch:
        obs, self._buffers[source] = self._buffers[source], []
        self._batches += 1
        self.observations += len(obs)
        return Batch(source, obs, cursor=str(self._batches), records=len(obs), max_event_at=obs[-1].at)

    def _observe(self, order: int, state: str, step: int, at_ms: int) -> Observation:
        channel = _CHANNEL.pick(self._u(order, 1))
        sku = int(2000 * self._u(order, 2) ** 3)
        dims, amount = {}, None
        if state == "created":
            province, city = _CITY.pick(self._u(order, 3))
            dims = {"province": province, "city": city, "sku": f"SKU{sku:04d}"}
        elif state == "paid":
            dims, amount = {"payment_method": _PAYMENT.pick(self._u(order, 4))}, 990 + sku * 7919 % 49000
        elif state == "wms_received":
            dims = {"warehouse": _WAREHOUSE.pick(self._u(order, 5))}
        elif state == "shipped":
            dims = {"carrier": _CARRIER.pick(self._u(order, 6))}
        elif state == "return_requested":
            dims = {"cs_group": _CS.pick(self._u(order, 7))}
        return Observation(
            SOURCE.get(state, "wms"),
            f"{order}-{step}",
            channel,
            RAW_ID[channel].format(order),
            state,
            datetime.fromtimestamp(at_ms / 1000, UTC),
            dims,
            amount,
            datetime.fromtimestamp(self.created_ms(order) / 1000, UTC),
        )
