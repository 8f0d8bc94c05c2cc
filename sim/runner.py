"""Replay a scenario through the real pipeline on a virtual clock and report what happened."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service
from sim.channels.server import ChannelServer
from sim.erp import ErpServer
from sim.model import CHANNELS
from sim.payments import PaymentLog
from sim.scenario import load_scenario
from sim.tracking import TrackingLog
from sim.wecom import WeComReceiver
from sim.wms import WmsDatabase
from sim.world import World

log = logging.getLogger("sim.runner")
DEMO_ROBOT_KEY = "5d0c2e64-7f1a-4b8e-9c3d-2a6b8e1f4c70"


@dataclass
class SimWorld:
    """The running simulated systems around one world."""

    world: World
    clock: ManualClock
    channels: ChannelServer
    wecom: WeComReceiver
    wms: WmsDatabase
    payments: PaymentLog
    wms_url: str
    log_dir: Path
    erp: ErpServer
    tracking: TrackingLog

    def sync(self) -> None:
        """Let the WMS, payment and carrier systems write what has happened up to now."""
        now = self.clock.now()
        self.wms.sync(self.world, now)
        self.payments.sync(self.world, now)
        self.tracking.sync(self.world, now)

    def overrides(self) -> dict[str, Any]:
        """Config overrides that point Sentinel's sources and robot at this world; the ERP and
        carrier sources are switched off in a world without those systems."""
        out: dict[str, Any] = {f"sources.{ch}.url": self.channels.url_for(ch) for ch in CHANNELS}
        out["sources.wms.url"] = self.wms_url
        out["sources.wms_returns.url"] = self.wms_url
        out["sources.alipay.path"] = str(self.log_dir / "alipay_notify.log")
        out["sources.wechatpay.path"] = str(self.log_dir / "wechatpay_notify.log")
        out["sources.erp.url"] = self.erp.url
        out["sources.erp.enabled"] = self.world.scenario.erp
        out["sources.kuaidi100.path"] = str(self.tracking.path)
        out["sources.kuaidi100.enabled"] = self.world.scenario.tracking
        # The hops this world has (its return orders come from the ERP database even without the
        # ERP's order flow, so the roles alone would over-claim the ERP hops).
        hops = ["status_writeback"]
        if self.world.scenario.erp:
            hops[:0] = ["channel_erp", "erp_wms"]
        if self.world.scenario.tracking:
            hops.append("shipped_tracking")
        out["kpi.hops"] = hops
        out["alerts.routes.ops.url"] = self.wecom.url
        out["alerts.routes.ops.key"] = DEMO_ROBOT_KEY
        return out

    def close(self) -> None:
        self.channels.close()
        self.erp.close()
        self.wecom.close()
        self.wms.close()


def start_world(world: World, clock, workdir: Path, wms_url: str | None = None) -> SimWorld:
    workdir.mkdir(parents=True, exist_ok=True)
    wms_url = wms_url or f"sqlite:///{workdir / 'wms.db'}"
    wms = WmsDatabase(wms_url)
    wms.create()
    log_dir = workdir / "payments"
    log_dir.mkdir(exist_ok=True)
    channels = ChannelServer(world.orders_by_channel, clock)
    channels.start()
    wecom = WeComReceiver(clock, [DEMO_ROBOT_KEY])
    wecom.start()
    erp = ErpServer(world, clock).start()
    tracking = TrackingLog(workdir / "tracking")
    return SimWorld(world, clock, channels, wecom, wms, PaymentLog(log_dir), wms_url, log_dir, erp, tracking)


class Replay:
    """One scenario replayed through the real pipeline on a manual clock, step by step."""

    def __init__(
        self,
        name: str,
        *,
        seed: int | None = None,
        scale: float = 1.0,
        config_path: str | Path | None = None,
        workdir: Path | None = None,
        store_url: str | None = None,
        step: timedelta = timedelta(seconds=60),
    ) -> None:
        self.scenario = load_scenario(name)
        self.seed, self.scale, self.step = seed, scale, step
        self.world = World.generate(self.scenario, seed=seed, scale=scale)
        self.clock = ManualClock(self.world.start)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sentinel-sim-")
            workdir = Path(self._tmp.name)
        self.sim = start_world(self.world, self.clock, workdir)
        overrides = self.sim.overrides()
        overrides["service.store_url"] = store_url or f"sqlite:///{workdir / 'sentinel.db'}"
        self.config = load_config(config_path or DEFAULT_PATH, overrides=overrides)
        self.transitions: list = []
        self.service = self._new_service()

    def _new_service(self) -> Service:
        service = Service(self.config, self.clock, sleep=lambda s: self.clock.advance(s))
        self._jobs = service.jobs()
        return service

    def restart_service(self) -> None:
        """Stop the service and start a fresh one on the same store, as a process restart would."""
        self.service.stop()
        self.service = self._new_service()

    def run_until(self, until: datetime) -> None:
        """Let the world and the service run, one step at a time, until the clock passes `until`."""
        while self.clock.now() <= until:
            self.sim.sync()
            results = self.service.run_due(self._jobs)
            self.transitions.extend(results.get("alerts") or [])
            self.clock.advance(self.step)

    def finish(self, wall0: float) -> dict:
        """A last poll, KPI refresh and evaluation after the world has ended; the report."""
        self.service.poll_all()
        snapshot = self.service.refresh_kpis()
        self.transitions.extend(self.service.evaluate_alerts())
        return {
            "scenario": self.scenario.name,
            "seed": self.seed if self.seed is not None else self.scenario.seed,
            "scale": self.scale,
            "virtual_start": self.world.start.isoformat(),
            "virtual_end": self.clock.now().isoformat(),
            "wall_seconds": round(time.perf_counter() - wall0, 2),
            "alerts": [_alert_entry(t) for t in self.transitions if _kind(t) == "firing"],
            "notifications": self.sim.wecom.received,
            "kpis": [{"kpi": v.kpi, "labels": dict(v.labels), "value": v.value} for v in snapshot.values],
            "sources": [_health_entry(h) for h in self.service.store.health()],
            "truth": self.world.truth(self.clock.now()),
        }

    def close(self) -> None:
        self.service.stop()
        self.sim.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def run_scenario(name: str, **options) -> dict:
    """Replay scenario `name` end to end (options as for Replay); returns the report dictionary."""
    wall0 = time.perf_counter()
    replay = Replay(name, **options)
    try:
        replay.run_until(replay.world.end)
        return replay.finish(wall0)
    finally:
        replay.close()


def _kind(transition) -> str:
    return getattr(transition, "kind", None) or getattr(transition, "to_state", "")


def _alert_entry(t) -> dict:
    return {
        "rule": t.rule,
        "labels": dict(t.labels),
        "value": t.value,
        "fired_at": t.at.isoformat(),
    }


def _health_entry(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def write_report(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
