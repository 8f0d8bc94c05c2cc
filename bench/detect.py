"""Detection bench: one injected fault, watched by Sentinel and by Prometheus + Alertmanager side by side.

    .venv/bin/python bench/detect.py [--lead 60] [--timeout 240] [--refresh 5s] [--eval 5s] [--group-wait 0s]

The fault is the `wms_push_gap` scenario: from 20:30 the ERP -> WMS push silently drops Tmall/Alipay
orders. Nothing errors; an order becomes faulty only when it has been paid for the sync SLA (15 min)
without reaching the WMS. So no monitor can know before `paid + SLA` of the first dropped order, and
that instant is the fault start here: the first moment a record visible at the sources (paid at the
channel API and in the Alipay log, absent from the WMS table) is faulty by the KPI's definition.

Method, so the wall-clock comparison is honest:
1. Prometheus (`/usr/bin/prometheus`, its default scrape and evaluation interval, 1m) and Alertmanager
   (`/usr/bin/prometheus-alertmanager`, default route timings: group_wait 30s, ...) start first. The
   rules file is `render_rules()` of the very config Sentinel runs (what `python -m sentinel
   export-rules` writes), checked by promtool; Prometheus scrapes Sentinel's /metrics and Alertmanager
   posts to a webhook receiver run here. Both systems therefore see the same metrics.
2. The quiet evening before the fault is replayed at full speed on the virtual clock (ScaledClock
   rebased minute by minute, as `python -m sentinel demo` does) up to `lead` seconds before the fault
   start. That part is virtual time only; nothing is measured in it.
3. From there everything runs at real time (speed 1): the simulated sources write as the world
   happens, Sentinel's APScheduler polls them at their configured (wall) intervals, Prometheus
   scrapes and evaluates on its own. The fault start F is a known wall time (rebase + lead).
4. Detection = wall time the message is received - F: Sentinel's digest at the local WeCom robot
   (sim/wecom.py), Prometheus + Alertmanager's notification at the webhook receiver.

The one rule compared is config.toml's `sync_ratio_low` with `for` set to 0s on both sides (its 5m
would add the same five minutes to both and break the six-minute budget). Sentinel runs with its
KPI refresh and alert evaluation every 5 s and no group_wait (the bar is one poll interval + 5 s;
all of them are printed); Prometheus and Alertmanager run with their defaults, read back from their
own status APIs. Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from common import environment  # first: puts the repo on sys.path

from alerts.promrules import render_rules
from metrics.exporter import serve
from sentinel.clock import ScaledClock
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service
from sim.runner import DEMO_ROBOT_KEY, start_world
from sim.scenario import load_scenario
from sim.wecom import WeComReceiver
from sim.world import World

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RULE = "sync_ratio_low"
SCENARIO = "wms_push_gap"
# Alertmanager's DefaultRouteOpts, applied to a route that sets none (as the bench's does).
AM_ROUTE_DEFAULTS = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TimedWeCom(WeComReceiver):
    """The local WeCom robot, also noting the wall (monotonic) time of each accepted message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[tuple[float, str]] = []

    def handle(self, key, raw, client):
        response = super().handle(key, raw, client)
        if response["errcode"] == 0:
            body = json.loads(raw)
            self.arrivals.append((time.monotonic(), body[body["msgtype"]].get("content", "")))
        return response


class WebhookSink:
    """Alertmanager's webhook receiver: records the wall (monotonic) time and body of each POST."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                at = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                sink.arrivals.append((at, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alert"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def first_firing(self, alertname: str) -> float | None:
        for at, body in self.arrivals:
            if any(
                a.get("status") == "firing" and a.get("labels", {}).get("alertname") == alertname
                for a in body.get("alerts", [])
            ):
                return at
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def wait_ready(url: str, deadline: float) -> None:
    while True:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not become ready")
        time.sleep(0.2)


def start_prometheus_stack(workdir: Path, rules: str, metrics_port: int, sink: WebhookSink) -> dict:
    """Alertmanager and Prometheus with their default timings; returns their processes and ports."""
    (workdir / "rules.yml").write_text(rules, encoding="utf-8")
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(workdir / "rules.yml")], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise SystemExit(f"promtool rejected the exported rules:\n{check.stdout}{check.stderr}")
    am_port, prom_port = free_port(), free_port()
    # No group_wait/group_interval/repeat_interval: Alertmanager's defaults apply.
    (workdir / "alertmanager.yml").write_text(
        f"route:\n  receiver: bench\nreceivers:\n  - name: bench\n    webhook_configs:\n"
        f"      - url: {json.dumps(sink.url)}\n",
        encoding="utf-8",
    )
    # No global section: Prometheus's default scrape_interval and evaluation_interval apply.
    (workdir / "prometheus.yml").write_text(
        f"rule_files: [{json.dumps(str(workdir / 'rules.yml'))}]\n"
        f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n"
        f"scrape_configs:\n  - job_name: sentinel\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n",
        encoding="utf-8",
    )
    logs = {name: open(workdir / f"{name}.log", "w") for name in ("alertmanager", "prometheus")}  # noqa: SIM115
    am = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={workdir / 'am'}",
         f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
        stdout=logs["alertmanager"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=logs["prometheus"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    wait_ready(f"http://127.0.0.1:{am_port}/-/ready", deadline)
    wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", deadline)
    return {"am": am, "prom": prom, "am_port": am_port, "prom_port": prom_port, "logs": logs}


def applied_defaults(stack: dict) -> dict:
    """The timings Prometheus and Alertmanager actually run with, from their own status APIs."""
    prom_cfg = requests.get(f"http://127.0.0.1:{stack['prom_port']}/api/v1/status/config", timeout=5)
    am_cfg = requests.get(f"http://127.0.0.1:{stack['am_port']}/api/v2/status", timeout=5)
    prom_yaml, am_yaml = prom_cfg.json()["data"]["yaml"], am_cfg.json()["config"]["original"]

    def field(text: str, name: str) -> str | None:
        match = re.search(rf"^\s*{name}:\s*(\S+)", text, re.MULTILINE)
        return match.group(1) if match else None

    out = {
        "prometheus_scrape_interval": field(prom_yaml, "scrape_interval"),
        "prometheus_evaluation_interval": field(prom_yaml, "evaluation_interval"),
    }
    for name, default in AM_ROUTE_DEFAULTS.items():  # unset route timings are not echoed by /status
        out[f"alertmanager_{name}"] = field(am_yaml, name) or default
    return out


def fault_start(world: World, sla: timedelta) -> datetime:
    """The first instant an order is paid `sla` ago, never reached the WMS and is not cancelled."""
    candidates = sorted(o.events["paid"] + sla for o in world.orders if not o.in_wms and "paid" in o.events)
    for moment in candidates:
        if world.stuck_paid(moment, sla):
            assert not world.stuck_paid(moment - timedelta(milliseconds=1), sla)
            return moment
    raise SystemExit("the scenario has no dropped paid order")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lead", type=float, default=60, help="real-time seconds before the fault start")
    parser.add_argument("--timeout", type=float, default=240, help="seconds after the fault start to wait")
    parser.add_argument("--refresh", default="5s", help="Sentinel's kpi.refresh_interval")
    parser.add_argument("--eval", default="5s", help="Sentinel's alerts.eval_interval")
    parser.add_argument("--group-wait", default="0s", help="Sentinel's alerts.group_wait")
    args = parser.parse_args()
    for binary in (PROMETHEUS, PROMTOOL, ALERTMANAGER):
        if not shutil.which(binary):
            raise SystemExit(f"{binary} is missing (Debian packages prometheus, prometheus-alertmanager)")

    workdir = Path(tempfile.mkdtemp(prefix="sentinel-detect-"))
    world = World.generate(load_scenario(SCENARIO))
    base = load_config(DEFAULT_PATH)
    start = fault_start(world, base.kpi.sync_sla)
    clock = ScaledClock(world.start, speed=1.0)
    sim = start_world(world, clock, workdir / "world")
    robot = TimedWeCom(clock, [DEMO_ROBOT_KEY]).start()
    metrics_port = free_port()
    overrides = sim.overrides()
    overrides.update({
        "service.store_url": f"sqlite:///{workdir / 'sentinel.db'}",
        "service.metrics_port": metrics_port,
        "alerts.routes.ops.url": robot.url,
        "kpi.refresh_interval": args.refresh,
        "alerts.eval_interval": args.eval,
        "alerts.group_wait": args.group_wait,
        "alerts.rules": [{**_raw_rule(RULE), "for": "0s"}],
    })  # fmt: skip
    config = load_config(DEFAULT_PATH, overrides=overrides)
    service = Service(config, clock)
    metrics = serve(service.exporter, "127.0.0.1", metrics_port)
    sink = WebhookSink()
    stack = start_prometheus_stack(workdir, render_rules(config), metrics_port, sink)
    stop = threading.Event()
    try:
        defaults = applied_defaults(stack)
        say(f"Prometheus {version(PROMETHEUS)} and Alertmanager {version(ALERTMANAGER)} up: {defaults}")
        # 2. the virtual evening up to `lead` before the fault, at full speed
        until = start - timedelta(seconds=args.lead)
        wall0, jobs, moment = time.monotonic(), service.jobs(), world.start
        while moment < until:
            clock.rebase(moment)
            sim.sync()
            service.run_due(jobs)
            moment = min(moment + timedelta(minutes=1), until)
        say(f"replayed {world.start:%H:%M}-{until:%H:%M} UTC virtual in {time.monotonic() - wall0:.1f} s")
        # 3. real time from here: the fault starts `lead` seconds from now
        clock.rebase(until)
        fault_at = time.monotonic() + args.lead
        fault_epoch = time.time() + args.lead

        def world_loop() -> None:
            while not stop.is_set():
                sim.sync()
                stop.wait(0.2)

        threading.Thread(target=world_loop, name="sim-world", daemon=True).start()
        service.start(speed=1.0, serve_metrics=False)
        say(f"live at real time; fault start (first dropped order overdue) in {args.lead:.0f} s")
        sentinel_at = prom_at = None
        while time.monotonic() < fault_at + args.timeout and (sentinel_at is None or prom_at is None):
            if sentinel_at is None:
                sentinel_at = next((at for at, text in robot.arrivals if _is_firing(text)), None)
                if sentinel_at is not None:
                    say(f"Sentinel's WeCom message received at F{sentinel_at - fault_at:+.1f} s")
            if prom_at is None:
                prom_at = sink.first_firing(RULE)
                if prom_at is not None:
                    say(f"Alertmanager's webhook received at F{prom_at - fault_at:+.1f} s")
            time.sleep(0.05)
        early = [at for at, text in robot.arrivals if at < fault_at] + [
            at for at, _ in sink.arrivals if at < fault_at
        ]
        prom_active = _prometheus_active_at(stack["prom_port"], fault_epoch)
    finally:
        stop.set()
        service.stop()
        metrics.close()
        for proc in (stack["prom"], stack["am"]):
            proc.terminate()
        for proc in (stack["prom"], stack["am"]):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in stack["logs"].values():
            log.close()
        sink.close()
        robot.close()
        sim.close()
        shutil.rmtree(workdir, ignore_errors=True)

    sentinel_s = None if sentinel_at is None else round(sentinel_at - fault_at, 2)
    prom_s = None if prom_at is None else round(prom_at - fault_at, 2)
    poll = config.sources["wms"].poll_interval.total_seconds()
    bar = poll + 5
    result = {
        "bench": "detect",
        "scenario": SCENARIO,
        "rule": RULE,
        "fault_start_virtual": start.isoformat(),
        "sentinel_detect_s": sentinel_s,
        "prom_am_detect_s": prom_s,
        "prom_rule_active_s": prom_active,
        "poll_interval_s": poll,
        "poll_intervals_s": {n: s.poll_interval.total_seconds() for n, s in config.sources.items()},
        "bar_s": bar,
        "sentinel_within_bar": sentinel_s is not None and sentinel_s <= bar,
        "sentinel_faster": sentinel_s is not None and (prom_s is None or sentinel_s < prom_s),
        "false_alarms_before_fault": len(early),
        "rule_for": "0s (both)",
        "sentinel_timings": {
            "kpi_refresh_interval_s": config.kpi.refresh_interval.total_seconds(),
            "alerts_eval_interval_s": config.alerts.eval_interval.total_seconds(),
            "alerts_group_wait_s": config.alerts.group_wait.total_seconds(),
        },
        "prom_am_timings": {
            **defaults,
            "source": "defaults: no timing is set in prometheus.yml or alertmanager.yml",
        },
        "versions": {
            "prometheus": version(PROMETHEUS),
            "alertmanager": version(ALERTMANAGER),
            **environment(config.service.store_url),
        },
    }
    print(f"Sentinel:               {sentinel_s} s after the fault start (bar {bar:g} s)")
    print(f"Prometheus+Alertmanager: {prom_s} s after the fault start (defaults)")
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result["sentinel_within_bar"] and result["sentinel_faster"] else 1


def _raw_rule(name: str) -> dict:
    """The rule's table as written in config.toml."""
    raw = tomllib.loads(Path(DEFAULT_PATH).read_text(encoding="utf-8"))
    return next(r for r in raw["alerts"]["rules"] if r["name"] == name)


def _is_firing(text: str) -> bool:
    return "已恢复" not in text  # the config has this one rule: any other message is its firing


def _prometheus_active_at(port: int, fault_epoch: float) -> float | None:
    """When Prometheus's rule evaluation first found the alert active, relative to the fault start."""
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    for alert in answer.get("data", {}).get("alerts", []):
        if alert.get("labels", {}).get("alertname") == RULE and alert.get("activeAt"):
            active = datetime.fromisoformat(alert["activeAt"].replace("Z", "+00:00"))
            return round(active.timestamp() - fault_epoch, 2)
    return None


if __name__ == "__main__":
    sys.exit(main())
