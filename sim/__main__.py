"""`python -m sim run NAME_OR_FILE [--report PATH]` replays a scenario through the real pipeline;
`python -m sim run --all` replays every scenario and prints the detection table."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta

from sim.runner import run_scenario, write_report
from sim.scenario import available_scenarios

COLUMNS = ("scenario", "detected", "time to first alert", "top diagnosed cause", "correct", "false alerts")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def table_row(report: dict) -> tuple[str, ...]:
    v = report["verdict"]
    clean = v["cause"] == "none"
    detected = (
        ("yes" if not report["alerts"] else "NO (alerts)") if clean else ("yes" if v["detected"] else "NO")
    )
    diagnosed = report.get("diagnosis_end") is not None
    top = v.get("top_cause") if diagnosed else None
    if top and v.get("top_cause_at") == "end":
        top += " (at end)"  # the diagnosis at the first alert named no cause
    if clean:
        correct = "-"
    elif not diagnosed:
        correct = "n/a"
    else:
        correct = "yes" if v.get("correct") else "no"
    false = str(v["false_alerts"]) + (f" ({', '.join(v['false_alert_rules'])})" if v["false_alerts"] else "")
    return (
        report["scenario"],
        detected,
        "-" if clean else _duration(v["time_to_alert_s"]),
        top or ("(diagnose not installed)" if not diagnosed else "-"),
        correct,
        false,
    )


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for i, row in enumerate([COLUMNS, *rows]):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Fulfillment Sentinel simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="replay a scenario on the virtual clock and write a JSON report")
    run.add_argument("scenario", nargs="?", help="scenario name (sim/scenarios/NAME.toml) or a TOML path")
    run.add_argument("--all", action="store_true", help="replay every scenario and print the table")
    run.add_argument("--report", help="where to write the JSON report (with --all: a directory)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--scale", type=float, default=1.0)
    run.add_argument("--step", type=float, default=60, help="virtual seconds per replay step (default 60)")
    run.add_argument("--amqp-url", default=None, help="RabbitMQ for the returns queue (default: local)")
    run.add_argument("--config", default=None, help="config.toml to use (default: the project's)")
    run.add_argument("--store-url", default=None, help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args(argv)
    if bool(args.all) == bool(args.scenario):
        parser.error("give a scenario name or --all")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    options = dict(
        seed=args.seed,
        scale=args.scale,
        step=timedelta(seconds=args.step),
        config_path=args.config,
        store_url=args.store_url,
        amqp_url=args.amqp_url,
    )
    if args.all:
        rows = []
        for name in available_scenarios():
            report = run_scenario(name, **options)
            if args.report:
                write_report(report, f"{args.report}/{name}.json")
            rows.append(table_row(report))
            print(f"{name}: {report['wall_seconds']} s", file=sys.stderr)
        print_table(rows)
        return 0

    report = run_scenario(args.scenario, **options)
    if args.report:
        write_report(report, args.report)
    summary = {
        "scenario": report["scenario"],
        "alerts": [
            (a["rule"], a["labels"], None if a["value"] is None else round(a["value"], 4), a["fired_at"])
            for a in report["alerts"]
        ],
        "notifications": len(report["notifications"]),
        "truth": {k: v for k, v in report["truth"].items() if not isinstance(v, dict)},
        "verdict": report["verdict"],
        "diagnosis": [
            (c["cause"], round(c["score"], 3)) for c in (report.get("diagnosis") or {}).get("causes", [])[:3]
        ],
        "wall_seconds": report["wall_seconds"],
    }
    print(json.dumps(summary, ensure_ascii=False, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
