"""`python -m sentinel check-config | check-source | serve | demo | export-rules | silence | ack | diagnose | reconcile`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sentinel.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def check_config(path: str | None) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"config: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"config ok: {len(cfg.channels)} channels, {len(cfg.sources)} sources, {len(cfg.alerts.rules)} rules"
    )
    return 0


def check_source_command(path: str | None, name: str, rows: int, at: str | None = None) -> int:
    """Exit 0 when the page maps cleanly, 1 when records would be quarantined or statuses are
    unmapped, 2 when the source cannot be read or is not configured."""
    from sentinel.check_source import check_source, render
    from sentinel.clock import SystemClock

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    if name not in cfg.sources:
        print(f"unknown source {name!r}; configured: {', '.join(sorted(cfg.sources))}", file=sys.stderr)
        return 2
    now = SystemClock().now()
    if at:
        now = datetime.fromisoformat(at)
        now = now if now.tzinfo else now.replace(tzinfo=ZoneInfo(cfg.service.timezone))
    result = check_source(cfg, name, now)
    render(result, cfg.service.timezone, sys.stdout, rows)
    if result.error is not None:
        return 2
    return 0 if result.ok else 1


def _dashboard(port: int, env: dict[str, str]) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def _wait_forever(stop: threading.Event) -> None:
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            stop.wait(1)
    except KeyboardInterrupt:
        pass


def serve(path: str | None, dashboard_port: int | None) -> int:
    from sentinel.clock import SystemClock
    from sentinel.service import Service

    cfg = load_config(path)
    service = Service(cfg, SystemClock())
    service.start()
    print(f"/metrics: {service.metrics_url}")
    ui = None
    if dashboard_port:
        ui = _dashboard(dashboard_port, dict(os.environ))
        print(f"dashboard: http://127.0.0.1:{dashboard_port}")
    _wait_forever(threading.Event())
    service.stop()
    if ui:
        ui.terminate()
    return 0


def demo(scenario: str, speed: float, dashboard_port: int, metrics_port: int, workdir: Path) -> int:
    """The simulated world, the service and the dashboard, live on a sped-up virtual clock."""
    from sentinel.clock import ScaledClock
    from sentinel.service import Service
    from sim.runner import start_world
    from sim.scenario import load_scenario
    from sim.world import World

    shutil.rmtree(workdir, ignore_errors=True)
    world = World.generate(load_scenario(scenario).with_hops())  # the demo world has the ERP and carrier
    clock = ScaledClock(world.start, speed=speed)
    sim = start_world(world, clock, workdir)
    store_url = f"sqlite:///{workdir / 'sentinel.db'}"
    overrides = sim.overrides()
    overrides["service.store_url"] = store_url
    overrides["service.metrics_port"] = metrics_port
    overrides["service.dashboard_url"] = f"http://127.0.0.1:{dashboard_port}"
    cfg = load_config(overrides=overrides)
    service = Service(cfg, clock)
    stop = threading.Event()

    def world_loop() -> None:
        while not stop.is_set():
            sim.sync()
            stop.wait(0.5)

    warm_until = _warm_up(world, clock, sim, service)
    threading.Thread(target=world_loop, name="sim-world", daemon=True).start()
    service.start(speed=speed)
    logins = _demo_logins()
    env = {**os.environ, "SENTINEL_STORE_URL": store_url, **{k: v for k, (_, _, v) in logins.items()}}
    ui = _dashboard(dashboard_port, env)
    print("履约哨兵 Fulfillment Sentinel demo", flush=True)
    print(f"  scenario:  {scenario} — {world.scenario.description}")
    zone = ZoneInfo(cfg.service.timezone)
    print(
        f"  virtual time {warm_until.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}"
        f" (replayed from {world.start.astimezone(zone):%H:%M}), {speed:g}x speed"
    )
    print(f"  dashboard: http://127.0.0.1:{dashboard_port}")
    for user, password, _ in logins.values():
        print(f"    login {user:<8} password {password}")
    print(f"  /metrics:  {service.metrics_url}")
    print(f"  WeCom robot messages received: {sim.wecom.url.split('/cgi-bin')[0]}/_received")
    print("  Ctrl-C to stop", flush=True)
    _wait_forever(stop)
    stop.set()
    ui.terminate()
    service.stop()
    sim.close()
    return 0


def _demo_logins() -> dict[str, tuple[str, str, str]]:
    """A fresh password per demo run for each configured role user: env var -> (user, password, hash)."""
    import secrets

    from sentinel.auth import hash_password

    out = {}
    for user in ("viewer", "operator", "admin"):
        var = f"SENTINEL_{user.upper()}_PASSWORD_HASH"
        if os.environ.get(var):
            continue  # the user's own hash stands
        password = secrets.token_urlsafe(9)
        out[var] = (user, password, hash_password(password))
    return out


def _warm_up(world, clock, sim, service, lead: timedelta = timedelta(minutes=20)) -> datetime:
    """Replay the quiet hours before the first fault at full speed, so the demo shows it in minutes."""
    faults = [f.after for f in world.scenario.faults if getattr(f, "after", None) is not None]
    until = max(world.start, min(faults) - lead) if faults else world.start
    jobs, moment = service.jobs(), world.start
    while moment < until:
        clock.rebase(moment)
        sim.sync()
        service.run_due(jobs)
        moment += timedelta(minutes=1)
    clock.rebase(until)
    return until


def _alert_store(path: str | None):
    """The configured store (schema created if missing) and the service clock, for the CLI."""
    from sentinel.clock import SystemClock
    from store.db import init_schema, make_engine

    cfg = load_config(path)
    engine = make_engine(cfg.service.store_url)
    init_schema(engine)
    return cfg, engine, SystemClock()


def _local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def silence_command(args: argparse.Namespace) -> int:
    """`silence add|list|expire`: silences are stored, audited (who, why) and expire on their own."""
    from alerts.model import parse_matcher
    from alerts.silences import add_silence, expire_silence, list_silences
    from sentinel import audit
    from sentinel.config import parse_duration

    cfg, engine, clock = _alert_store(args.config)
    now = clock.now()
    zone = cfg.service.timezone
    try:
        if args.action == "add":
            matchers = [parse_matcher(m) for m in args.match]
            starts = datetime.fromisoformat(args.starts) if args.starts else now
            if starts.tzinfo is None:
                starts = starts.replace(tzinfo=ZoneInfo(zone))
            silence = add_silence(
                engine, matchers, starts, starts + parse_duration(args.duration), args.by, args.comment, now
            )
            audit.record(engine, now, args.by, "cli", "silence", id=silence.id,
                         matchers=[str(m) for m in silence.matchers], ends_at=silence.ends_at,
                         comment=args.comment)  # fmt: skip
            print(f"静默 #{silence.id} 已添加：{' '.join(map(str, silence.matchers))}，"
                  f"{_local(silence.starts_at, zone)} 至 {_local(silence.ends_at, zone)}")  # fmt: skip
        elif args.action == "list":
            for s in list_silences(engine, now, include_expired=args.all):
                print(
                    f"#{s.id}\t{s.state(now)}\t{' '.join(map(str, s.matchers))}\t"
                    f"{_local(s.starts_at, zone)} 至 {_local(s.ends_at, zone)}\t{s.created_by}\t{s.comment}"
                    + (f"\t(提前结束：{s.expired_by})" if s.expired_by else "")
                )
        else:
            silence = expire_silence(engine, args.id, args.by, now)
            audit.record(engine, now, args.by, "cli", "expire", id=silence.id)
            print(f"静默 #{silence.id} 已结束（{args.by}）")
    except (ValueError, LookupError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def ack_command(args: argparse.Namespace) -> int:
    """`ack FINGERPRINT --by NAME`: stops escalation and repeats of the alert's current episode."""
    from alerts.engine import AlertEngine
    from sentinel import audit

    cfg, engine, clock = _alert_store(args.config)
    try:
        acked = AlertEngine(engine, cfg, clock, {}).ack(args.fingerprint, args.by, args.comment)
        audit.record(engine, clock.now(), args.by, "cli", "ack", fingerprint=acked["fingerprint"],
                     rule=acked["rule"], comment=args.comment)  # fmt: skip
    except LookupError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"告警 {acked['fingerprint'][:12]}（{acked['rule']}）已由 {acked['acked_by']} 确认")
    return 0


def hash_password_command(from_stdin: bool) -> int:
    """Print a scrypt hash for [dashboard.users.NAME] password_hash; the password is never echoed."""
    import getpass

    from sentinel.auth import hash_password

    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    if len(password) < 8:
        print("a password needs at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sentinel", description="Fulfillment Sentinel 履约哨兵")
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check-config", help="validate config.toml; exit 0 when valid, 1 otherwise")
    chk.add_argument("--config", default=None)
    cks = sub.add_parser(
        "check-source",
        help="read one page of a source and show the mapped rows, quarantine, unmapped statuses",
    )
    cks.add_argument("name", help="the source's name in [sources.NAME]")
    cks.add_argument("--config", default=None)
    cks.add_argument("--rows", type=int, default=20, help="mapped rows to print")
    cks.add_argument("--at", default=None, help="read as if it were this ISO time (naive = service zone)")
    pre = sub.add_parser(
        "preset", help="list the copyable source blocks, or print one to paste into config.toml"
    )
    pre.add_argument("name", nargs="?", default=None)
    srv = sub.add_parser("serve", help="run the service (scheduler + /metrics) on real sources")
    srv.add_argument("--config", default=None)
    srv.add_argument("--dashboard-port", type=int, default=None)
    dem = sub.add_parser("demo", help="run the simulated world, the service and the dashboard")
    dem.add_argument("--scenario", default=os.environ.get("SENTINEL_DEMO_SCENARIO", "wms_push_gap"))
    dem.add_argument("--speed", type=float, default=float(os.environ.get("SENTINEL_DEMO_SPEED", "20")))
    dem.add_argument(
        "--dashboard-port", type=int, default=int(os.environ.get("SENTINEL_DASHBOARD_PORT", "8501"))
    )
    dem.add_argument("--metrics-port", type=int, default=int(os.environ.get("SENTINEL_METRICS_PORT", "9464")))
    dem.add_argument(
        "--workdir", type=Path, default=ROOT / "var" / "demo", help="emptied, then holds the demo's files"
    )
    exp = sub.add_parser("export-rules", help="write the alert rules as a Prometheus rules file (YAML)")
    exp.add_argument("--config", default=None)
    exp.add_argument("--out", default=None, help="file to write (default: stdout)")
    sil = sub.add_parser("silence", help="add, list or expire alert silences")
    sil_sub = sil.add_subparsers(dest="action", required=True)
    sil_add = sil_sub.add_parser("add", help="mute alerts whose labels match, for a while")
    sil_add.add_argument("--match", action="append", required=True, help="name=value or name=~regex")
    sil_add.add_argument("--duration", required=True, help="e.g. 2h, 30m")
    sil_add.add_argument("--starts", default=None, help="ISO time (default: now; naive = service zone)")
    sil_add.add_argument("--by", required=True, help="who adds it (audit)")
    sil_add.add_argument("--comment", required=True, help="why (audit)")
    sil_list = sil_sub.add_parser("list", help="active and future silences")
    sil_list.add_argument("--all", action="store_true", help="expired ones too")
    sil_exp = sil_sub.add_parser("expire", help="end a silence now")
    sil_exp.add_argument("id", type=int)
    sil_exp.add_argument("--by", required=True)
    for p in (sil_add, sil_list, sil_exp):
        p.add_argument("--config", default=None)
    ack = sub.add_parser("ack", help="acknowledge a firing alert (no escalation, no repeats)")
    ack.add_argument("fingerprint", help="the alert's fingerprint or a unique prefix of it")
    ack.add_argument("--by", required=True)
    ack.add_argument("--comment", default="")
    ack.add_argument("--config", default=None)
    hsh = sub.add_parser("hash-password", help="print the password_hash of a dashboard user (reads stdin)")
    hsh.add_argument("--stdin", action="store_true", help="read the password from standard input, no prompt")
    from diagnose.cli import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "check-source":
        return check_source_command(args.config, args.name, args.rows, args.at)
    if args.command == "preset":
        from collectors.presets import source_preset, source_presets

        if args.name is None:
            print("\n".join(source_presets()))
            return 0
        try:
            print(source_preset(args.name), end="")
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        return 0
    if args.command == "export-rules":
        from alerts.promrules import export_rules

        return export_rules(args.config, args.out)
    if args.command == "silence":
        return silence_command(args)
    if args.command == "ack":
        return ack_command(args)
    if args.command == "hash-password":
        return hash_password_command(args.stdin)
    if args.command in ("diagnose", "reconcile"):
        from diagnose.cli import diagnose_command, reconcile_command

        cfg, engine, clock = _alert_store(args.config)
        try:
            run = diagnose_command if args.command == "diagnose" else reconcile_command
            return run(args, cfg, engine, clock)
        finally:
            engine.dispose()
    if args.command == "serve":
        return serve(args.config, args.dashboard_port)
    return demo(args.scenario, args.speed, args.dashboard_port, args.metrics_port, args.workdir)


if __name__ == "__main__":
    time.tzset() if hasattr(time, "tzset") else None
    sys.exit(main())
