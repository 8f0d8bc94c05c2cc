"""Exactly once after kill -9: a real `python -m sentinel serve` is killed while the robot holds a send.

The outbox is prepared by this process (the real engine, real store); the service only delivers it.
The local WeCom robot holds its answer to one request, the service is SIGKILLed while waiting for it,
then restarted: every message must arrive exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import select
from test_engine import KEY, make_config, sync_snapshot

from alerts.engine import AlertEngine
from alerts.notifiers.wecom import WeComNotifier
from sentinel.clock import ManualClock
from sim.wecom import WeComReceiver
from store.db import init_schema, make_engine
from store.schema import outbox

ROOT = Path(__file__).resolve().parents[2]
HOLD_AT = 4  # the robot holds its answer to the 4th accepted message


class HoldingRobot(WeComReceiver):
    """The local WeCom robot, except that it keeps the service waiting for one answer."""

    def __init__(self, clock, keys) -> None:
        super().__init__(clock, keys)
        self.holding = threading.Event()
        self.release = threading.Event()

    def handle(self, key, raw, client):
        answer = super().handle(key, raw, client)
        if answer["errcode"] == 0 and len(self.messages()) == HOLD_AT and not self.holding.is_set():
            self.holding.set()
            self.release.wait(30)  # the service is killed meanwhile: this answer goes nowhere
        return answer


def _until(condition, seconds: float, what: str) -> None:
    """Wait for an external process (it runs on wall time, not on our clock)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _serve(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel", "serve", "--config", str(config_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SENTINEL_STORE_URL": ""},
    )


def test_kill_during_a_send_and_restart_deliver_every_message_exactly_once(store_url, tmp_path):
    clock = ManualClock(datetime.now(UTC))
    with HoldingRobot(clock, [KEY]) as robot:
        db = make_engine(store_url)
        init_schema(db)
        config = make_config(robot.url, by=["channel"], group_by=["channel"], **{"for": "0s"})
        engine = AlertEngine(db, config, clock, {"ops": WeComNotifier(robot.url, SecretStr(KEY), clock)})
        shops = {f"shop{i}": (0.2, 100) for i in range(8)}
        engine.evaluate(sync_snapshot(clock, None, channels=shops))  # 8 messages in the outbox
        with db.connect() as conn:
            bodies = [r.body for r in conn.execute(select(outbox))]
        assert len(bodies) == 8
        service_config = tmp_path / "service.toml"
        service_config.write_text(
            f'[service]\nstore_url = "{store_url}"\nmetrics_port = 0\n'
            '[kpi]\nrefresh_interval = "1s"\n'
            '[alerts]\neval_interval = "1s"\n'
            f'[alerts.routes.ops]\nkind = "wecom"\nurl = "{robot.url}"\nkey = "{KEY}"\n',
            encoding="utf-8",
        )
        first = _serve(service_config)
        try:
            _until(robot.holding.is_set, 60, "the service to send")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            robot.release.set()
            if first.poll() is None:
                first.kill()
        with db.connect() as conn:
            states = Counter(r.status for r in conn.execute(select(outbox)))
        assert states == {"sent": HOLD_AT - 1, "sending": 1, "pending": 8 - HOLD_AT}  # killed mid-send

        def all_sent() -> bool:
            with db.connect() as conn:
                return {r.status for r in conn.execute(select(outbox))} == {"sent"}

        second = _serve(service_config)
        try:
            _until(all_sent, 60, "the restarted service to deliver the rest")
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                second.wait(20)
            except subprocess.TimeoutExpired:
                second.kill()
        received = Counter(robot.contents())
        assert received == Counter(bodies)  # every message exactly once: none lost, none twice
        assert all(r["response"]["errcode"] == 0 for r in robot.received)
        with db.connect() as conn:
            notes = [r.response for r in conn.execute(select(outbox)) if r.response.startswith("unconfirmed")]
        assert len(notes) == 1  # the in-doubt send is visible as such
        db.dispose()
