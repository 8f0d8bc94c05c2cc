"""Replay a scenario through the real pipeline on a virtual clock and report what happened."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service
from sim.channels.server import ChannelServer
from sim.erp import ErpServer
from sim.model import CHANNELS
from sim.payments import PaymentLog
from sim.returns_queue import ReturnsQueue
from sim.scenario import AuthFailureFault, ConsumersGoneFault, Fault, RateLimitFault, load_scenario
from sim.tracking import TrackingLog
from sim.wecom import WeComReceiver
from sim.wms import WmsDatabase
from sim.world import World

log = logging.getLogger("sim.runner")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
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
    returns_queue: ReturnsQueue | None = None
    _source_faults: dict[str, str] | None = None  # channel -> fault kind applied now

    def sync(self) -> None:
        """Let the WMS, payment and carrier systems write what has happened up to now, and the
        channel APIs misbehave as the scenario's source faults say."""
        now = self.clock.now()
        self._apply_source_faults(now)
        if self.returns_queue is not None:
            self.returns_queue.sync(now)
        self.wms.sync(self.world, now)
        self.payments.sync(self.world, now)
        self.tracking.sync(self.world, now)

    def _apply_source_faults(self, now: datetime) -> None:
        applied = self._source_faults if self._source_faults is not None else {}
        wanted: dict[str, Fault] = {}
        for fault in self.world.scenario.faults:
            if isinstance(fault, AuthFailureFault) and fault.active(now):
                wanted[fault.channel] = fault
        for channel in set(applied) - set(wanted):
            self.channels.faults.clear(channel)
            del applied[channel]
        for channel, fault in wanted.items():
            if applied.get(channel) == fault.kind:
                continue
            if isinstance(fault, RateLimitFault):
                self.channels.faults.set(channel, "rate_limited", ban=fault.ban, quota=fault.quota)
            else:
                self.channels.faults.set(channel, "auth_expired")
            applied[channel] = fault.kind
        self._source_faults = applied

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
            # The ERP is in the order flow: it must hold every paid order too.
            out["reconcile.roles"] = ["channel", "payment", "erp", "wms"]
        if self.world.scenario.tracking:
            hops.append("shipped_tracking")
        out["kpi.hops"] = hops
        out["alerts.routes.ops.url"] = self.wecom.url
        out["alerts.routes.ops.key"] = DEMO_ROBOT_KEY
        if self.returns_queue is not None:
            out["queues.returns_queue.enabled"] = True
            out["queues.returns_queue.url"] = self.returns_queue.url
            out["queues.returns_queue.queue"] = self.returns_queue.queue
        return out

    def close(self) -> None:
        if self.returns_queue is not None:
            self.returns_queue.close()
        self.channels.close()
        self.erp.close()
        self.wecom.close()
        self.wms.close()


def uses_queue(world: World) -> bool:
    """Does the scenario need the returns-approval queue (a fault of its consumers)?"""
    return any(isinstance(f, ConsumersGoneFault) for f in world.scenario.faults)


def start_world(
    world: World, clock, workdir: Path, wms_url: str | None = None, amqp_url: str | None = None
) -> SimWorld:
    """Start the world's systems; with `amqp_url`, return approvals travel over that RabbitMQ."""
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
    sim = SimWorld(world, clock, channels, wecom, wms, PaymentLog(log_dir), wms_url, log_dir, erp, tracking)
    if amqp_url is not None:
        sim.returns_queue = ReturnsQueue(amqp_url, world)
        wms.approval_known = sim.returns_queue.known
    return sim


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
        amqp_url: str | None = None,
        diagnose_on_alert: bool = True,
        wms_url: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.scenario = load_scenario(name)
        self.seed, self.scale, self.step = seed, scale, step
        self.world = World.generate(self.scenario, seed=seed, scale=scale)
        self.clock = ManualClock(self.world.start)
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sentinel-sim-")
            workdir = Path(self._tmp.name)
        if amqp_url is None and uses_queue(self.world):
            amqp_url = os.environ.get("SENTINEL_SIM_AMQP_URL", DEFAULT_AMQP_URL)
        self.sim = start_world(self.world, self.clock, workdir, wms_url=wms_url, amqp_url=amqp_url)
        settings = self.sim.overrides()
        settings["service.store_url"] = store_url or f"sqlite:///{workdir / 'sentinel.db'}"
        settings.update(overrides or {})  # e.g. a source's URL through a proxy, extra rules
        self.config = load_config(config_path or DEFAULT_PATH, overrides=settings)
        self.transitions: list = []
        self.diagnose_on_alert = diagnose_on_alert
        self.diagnosis: dict | None = None  # taken when the first alert fires (or at the end)
        self.service = self._new_service()

    def _new_service(self) -> Service:
        session = requests.Session()
        session.trust_env = False  # local servers only: no proxy and netrc look-up on every request
        service = Service(self.config, self.clock, session=session, sleep=lambda s: self.clock.advance(s))
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
            fresh = results.get("alerts") or []
            self.transitions.extend(fresh)
            firing = [t for t in fresh if _kind(t) == "firing"]
            if firing and self.diagnose_on_alert and self.diagnosis is None:
                self.diagnosis = self.diagnose(firing[0])
            self.clock.advance(self.step)

    def finish(self, wall0: float, diagnosis: bool = True) -> dict:
        """A last poll (sources and queues), KPI refresh and evaluation after the world has ended;
        the report."""
        self.service.poll_all()
        for name in self.service.queues:  # else a step longer than source_lag's 10 min reads it stale
            self.service.poll_queue(name)
        snapshot = self.service.refresh_kpis()
        self.transitions.extend(self.service.evaluate_alerts())
        report = {
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
        report["verdict"] = verdict(self.world.scenario, report["alerts"])
        report["diagnosis"] = self.diagnosis if diagnosis else None  # at the first alert
        # ... and a click at the end of the run, when the incident's evidence is complete.
        report["diagnosis_end"] = self.diagnose() if diagnosis else None
        if report["diagnosis_end"] is not None:
            first = _top(report["diagnosis"])
            top = first or _top(report["diagnosis_end"])
            report["verdict"]["top_cause"] = top
            report["verdict"]["top_cause_at"] = "alert" if first else "end"
            report["verdict"]["correct"] = top == self.world.scenario.truth.cause
        report["wall_seconds"] = round(time.perf_counter() - wall0, 2)
        return report

    def diagnose(self, alert=None) -> dict | None:
        """The diagnosis API's ranked causes now, focused on `alert` (a firing transition) as the
        ops lead's one click on it would be; None when the diagnose package is not installed."""
        try:
            from diagnose import diagnose
        except ImportError:
            return None
        rule = None if alert is None else next(r for r in self.config.alerts.rules if r.name == alert.rule)
        found = diagnose(
            self.service.engine,
            self.config,
            self.clock.now(),
            kpi=None if rule is None else rule.kpi,
            labels=None if alert is None else dict(alert.labels),
            store=_HealthView(self.service),
            live=False,
        )
        return {
            "at": self.clock.now().isoformat(),
            "alert": None if alert is None else {"rule": alert.rule, "labels": dict(alert.labels)},
            "causes": [_plain(c) for c in found.causes],
            "findings": [_plain(f) for f in found.findings],
            "elapsed_s": round(found.elapsed_s, 3),
        }

    def close(self) -> None:
        self.service.stop()
        self.sim.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _top(diagnosis: dict | None) -> str | None:
    causes = (diagnosis or {}).get("causes") or []
    return causes[0]["cause"] if causes else None


class _HealthView:
    """What the diagnosis reads as `store`: source health with the service's queue and clock figures."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def health(self) -> list[dict]:
        return self._service.source_health()


def _plain(item: Any) -> dict:
    from dataclasses import asdict, is_dataclass

    return asdict(item) if is_dataclass(item) else dict(item)


def verdict(scenario, alerts: list[dict]) -> dict:
    """Detected? when, how soon after the fault began (virtual), and the alerts no rule of the truth
    explains (false alerts). A clean scenario is "detected" when it raises nothing."""
    truth = scenario.truth
    hits = sorted((a for a in alerts if a["rule"] in truth.expect), key=lambda a: a["fired_at"])
    false = [a for a in alerts if a["rule"] not in truth.expect and a["rule"] not in truth.allow]
    out = {
        "cause": truth.cause,
        "detected": bool(hits) if truth.cause != "none" else None,
        "first_alert": hits[0]["rule"] if hits else None,
        "time_to_alert_s": None,
        "false_alerts": len(false),
        "false_alert_rules": sorted({a["rule"] for a in false}),
    }
    if hits:
        fired = datetime.fromisoformat(hits[0]["fired_at"])
        out["time_to_alert_s"] = round((fired - scenario.fault_start).total_seconds())
    return out


def run_scenario(name: str, diagnosis: bool = True, **options) -> dict:
    """Replay scenario `name` end to end (options as for Replay); returns the report dictionary."""
    wall0 = time.perf_counter()
    replay = Replay(name, diagnose_on_alert=diagnosis, **options)
    try:
        replay.run_until(replay.world.end)
        return replay.finish(wall0, diagnosis=diagnosis)
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
