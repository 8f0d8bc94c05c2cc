"""`python -m sim run NAME_OR_FILE --report PATH`: replay a scenario through the real pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from sim.runner import run_scenario, write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Fulfillment Sentinel simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="replay a scenario on the virtual clock and write a JSON report")
    run.add_argument("scenario", help="scenario name (sim/scenarios/NAME.toml) or a path to a TOML file")
    run.add_argument("--report", help="where to write the JSON report (default: print a summary only)")
    run.add_argument("--seed", type=int, default=None)
    run.add_argument("--scale", type=float, default=1.0)
    run.add_argument("--config", default=None, help="config.toml to use (default: the project's)")
    run.add_argument("--store-url", default=None, help="store URL (default: a temporary SQLite file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    report = run_scenario(
        args.scenario, seed=args.seed, scale=args.scale, config_path=args.config, store_url=args.store_url
    )
    if args.report:
        write_report(report, args.report)
    summary = {
        "scenario": report["scenario"],
        "alerts": [(a["rule"], a["labels"], round(a["value"], 4), a["fired_at"]) for a in report["alerts"]],
        "notifications": len(report["notifications"]),
        "truth": {k: v for k, v in report["truth"].items() if not isinstance(v, dict)},
        "wall_seconds": report["wall_seconds"],
    }
    print(json.dumps(summary, ensure_ascii=False, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
