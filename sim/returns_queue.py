"""The returns-approval queue: customer service publishes each approved return to RabbitMQ, the
warehouse consumes it and only then books the return in (sim/wms.py holds later steps back).

Runs over a real RabbitMQ broker (pika). The replay's clock runs far faster than the broker's, so
the queue's message TTL is applied on the virtual clock: each message carries its virtual publish
time (`timestamp`) and `expiration_ms` header, and while no consumer is attached the simulator drops
what has waited longer than that from the head of the queue (RabbitMQ's own per-queue TTL works the
same way: expired messages leave from the head). A `consumers_gone` fault cancels the warehouse's
consumer for its window, so the broker really reports zero consumers and a growing backlog.
"""

from __future__ import annotations

import bisect
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pika

from sim.scenario import ConsumersGoneFault
from sim.world import World

QUEUE_PREFIX = "sentinel.sim.returns.approved"
DRAIN_TIMEOUT = 10.0  # wall seconds to wait for the broker to hand over published messages


class ReturnsQueue:
    """CS publisher, warehouse consumer and virtual-time expiry around one real queue."""

    def __init__(self, url: str, world: World, queue: str | None = None) -> None:
        self.world = world
        self.url = url
        self.queue = (
            queue or f"{QUEUE_PREFIX}.{world.scenario.name}.{uuid.uuid4().hex[:12]}"
        )  # unique across processes
        self.gone = [f for f in world.scenario.faults if isinstance(f, ConsumersGoneFault)]
        self.ttl = self.gone[0].ttl if self.gone else timedelta(hours=1)
        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        self._ch = self._conn.channel()
        self._ch.queue_declare(self.queue, durable=False, auto_delete=False)
        self._ch.basic_qos(prefetch_count=500)
        approvals = sorted(
            (o.events["return_approved"], i)
            for i, o in enumerate(world.orders)
            if o.in_wms and "return_approved" in o.events
        )
        self._approvals, self._times = approvals, [t for t, _ in approvals]
        self._next = 0
        self.published = 0
        self.received: set[int] = set()  # order indexes whose approval the warehouse got
        self.expired: set[int] = set()
        self._consumer_tag: str | None = None
        self._down_until: datetime | None = None  # the end of the consumers' outage in progress

    def known(self, index: int) -> bool:
        """Has the warehouse received the approval of order `index`?"""
        return index in self.received

    def sync(self, now: datetime) -> None:
        """Publish approvals made up to `now`, expire what waited past its TTL, deliver if consumed."""
        self._conn.process_data_events(time_limit=0)  # answers the broker's heartbeats while idle
        upto = bisect.bisect_right(self._times, now)
        for at, index in self._approvals[self._next : upto]:
            order = self.world.orders[index]
            body = {"order_index": index, "channel": order.channel, "src_order_no": order.raw_id}
            props = pika.BasicProperties(
                content_type="application/json",
                timestamp=int(at.timestamp()),
                headers={"approved_at_ms": int(at.timestamp() * 1000)},
                delivery_mode=2,
            )
            self._ch.basic_publish("", self.queue, json.dumps(body).encode(), props)
            self.published += 1
        self._next = max(self._next, upto)
        down = [f for f in self.gone if f.active(now)]
        if not down:
            if self._down_until is not None:  # what expired before the consumers came back is gone
                self._expire(self._down_until)
                self._down_until = None
            self._attach()
            self._drain()
        else:
            self._detach()
            self._down_until = down[0].until or self.world.end
            self._expire(now)

    # -- warehouse consumer -----------------------------------------------------------------------
    def _on_message(self, ch, method, properties, body: bytes) -> None:
        index = json.loads(body)["order_index"]
        self.received.add(index)
        ch.basic_ack(method.delivery_tag)

    def _attach(self) -> None:
        if self._consumer_tag is None:
            self._consumer_tag = self._ch.basic_consume(self.queue, self._on_message)

    def _detach(self) -> None:
        if self._consumer_tag is not None:
            self._ch.basic_cancel(self._consumer_tag)
            self._consumer_tag = None

    def _drain(self) -> None:
        """Process deliveries until every published, unexpired approval has been received."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while len(self.received) + len(self.expired) < self.published:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"queue {self.queue}: {self.published - len(self.received) - len(self.expired)} "
                    f"messages not delivered within {DRAIN_TIMEOUT:g} s"
                )
            self._conn.process_data_events(time_limit=0.05)

    def _expire(self, now: datetime) -> None:
        """Drop messages from the head that have waited the TTL by `now` (virtual time)."""
        while True:
            method, props, body = self._ch.basic_get(self.queue, auto_ack=False)
            if method is None:
                return
            published = datetime.fromtimestamp(props.headers["approved_at_ms"] / 1000, UTC)
            if published + self.ttl > now:  # the head is the oldest: nothing behind it expired
                self._ch.basic_nack(method.delivery_tag, requeue=True)
                return
            self._ch.basic_ack(method.delivery_tag)
            self.expired.add(json.loads(body)["order_index"])

    def close(self, delete: bool = True) -> None:
        try:
            self._detach()
            if delete:
                self._ch.queue_delete(self.queue)
            self._conn.close()
        except (pika.exceptions.AMQPError, AssertionError):  # a lost connection cannot cancel cleanly
            pass
