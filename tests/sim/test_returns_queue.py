"""The returns-approval queue over the real RabbitMQ, and Sentinel's queue-depth monitor on it."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from collectors.amqp_queue import QueueMonitor
from collectors.errors import SourceConfigError
from sim.returns_queue import ReturnsQueue
from sim.scenario import parse_scenario
from sim.world import World

AMQP_URL = os.environ.get("SENTINEL_TEST_AMQP_URL")
pytestmark = pytest.mark.skipif(AMQP_URL is None, reason="SENTINEL_TEST_AMQP_URL is not set (RabbitMQ)")
BJ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 3, 2, 18, tzinfo=BJ)
AFTER, UNTIL = START + timedelta(hours=3), START + timedelta(hours=4, minutes=30)


def _world() -> World:
    return World.generate(
        parse_scenario(
            {
                "name": "qtest",
                "start": START,
                "duration": "4h",
                "settle": "3h",
                "orders": 600,
                "paid": 580,
                "return_ratio": 0.6,
                "latency": {
                    "deliver": ["2h", "3h"],
                    "return_request": ["10m", "30m"],
                    "return_approve": ["5m", "20m"],
                },
                "faults": [{"kind": "consumers_gone", "after": AFTER, "until": UNTIL, "ttl": "1h"}],
                "truth": {"cause": "mq_consumers_gone", "expect": ["queue_backlog"]},
            }
        )
    )


def test_the_warehouse_receives_exactly_the_approvals_the_truth_says_and_the_monitor_sees_the_backlog():
    world = _world()
    queue = ReturnsQueue(AMQP_URL, world, queue=f"test.returns.{uuid.uuid4().hex[:8]}")
    monitor = QueueMonitor("returns_queue", AMQP_URL, queue.queue)
    samples = []
    try:
        now = world.start
        while now <= world.end:
            queue.sync(now)
            samples.append((now, monitor.sample(now)))
            now += timedelta(minutes=1)
    finally:
        monitor.close()
        queue.close()
    approved = {i for i, o in enumerate(world.orders) if "return_approved" in o.events and o.in_wms}
    lost = {i for i, o in enumerate(world.orders) if "return_approval_expired" in o.tags}
    assert lost and queue.expired == lost  # the broker lost exactly the approvals the truth says
    assert queue.received == approved - lost  # ... and delivered every other one, once
    during = [s for t, s in samples if AFTER + timedelta(minutes=1) <= t < UNTIL]
    before = [s for t, s in samples if t < AFTER]
    assert all(s.consumers == 0 for s in during) and all(s.consumers == 1 for s in before)
    assert max(s.messages for s in during) > 5
    assert max(s.oldest_age_seconds for s in during) >= 50 * 60  # it grows to the TTL ...
    assert all(s.oldest_age_seconds <= 3600 for s in during)  # ... and never past it (expired)
    after = [s for t, s in samples if t >= UNTIL + timedelta(minutes=1)]
    assert all(s.messages == 0 and s.oldest_age_seconds == 0 for s in after)


def test_a_missing_queue_is_a_config_error_naming_it_and_no_secret():
    monitor = QueueMonitor("returns_queue", AMQP_URL, "no.such.queue.here")
    with pytest.raises(SourceConfigError) as err:
        monitor.sample(START)
    assert "no.such.queue.here" in str(err.value) and "guest:guest" not in str(err.value)
    monitor.close()
