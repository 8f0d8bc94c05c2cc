"""`python -m sentinel diagnose` and `python -m sentinel reconcile`: the same functions the
dashboard calls, printed for a terminal (or as JSON). Both are audited like the dashboard's: who
(`--by`, else the login name), role "cli", what was asked and found; a CSV written is an export."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from diagnose.model import Diagnosis

MAX_ORDERS_SHOWN = 20


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (a bare container)
        return "?"


def render_text(result: Diagnosis) -> str:
    """The ranked causes with their evidence, then the other findings, in Chinese."""
    lines = [f"诊断用时 {result.elapsed_s:.2f} 秒"]
    if not result.causes:
        lines.append("未发现明确根因。")
    for rank, cause in enumerate(result.causes, 1):
        lines.append(f"{rank}. [{cause.cause}] {cause.title}（置信度 {cause.score:.0%}）")
        lines.append(f"   {cause.summary}")
        for e in cause.evidence[:12]:
            facts = {k: v for k, v in e.items() if k not in ("probe", "title")}
            lines.append(f"   - {json.dumps(facts, ensure_ascii=False, default=str)}")
        if cause.orders:
            more = f" 等 {len(cause.orders)} 单" if len(cause.orders) > MAX_ORDERS_SHOWN else ""
            lines.append(f"   受影响订单：{', '.join(cause.orders[:MAX_ORDERS_SHOWN])}{more}")
    others = [f for f in result.findings if not f.cause or f.score == 0]
    if others:
        lines.append("其他发现：")
        lines += [f"- {f.title}" for f in others]
    return "\n".join(lines)


def diagnose_command(args: argparse.Namespace, cfg, engine, clock) -> int:
    from diagnose.engine import diagnose

    labels = {}
    for item in args.label or []:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--label {item!r}: expected name=value", file=sys.stderr)
            return 2
        labels[key] = value
    from sentinel import audit

    result = diagnose(engine, cfg, clock.now(), kpi=args.kpi, labels=labels, live=not args.no_live)
    top = result.top.cause if result.top else None
    audit.record(engine, clock.now(), _who(args), "cli", "diagnose", kpi=args.kpi, labels=labels, top=top)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2) if args.json else render_text(result))
    return 0


def reconcile_command(args: argparse.Namespace, cfg, engine, clock) -> int:
    from reconcile.core import reason_zh, reconcile, to_csv
    from reconcile.daily import run_signatures
    from reconcile.signatures import signature_rows
    from sentinel import audit

    rc = cfg.reconcile
    result = reconcile(engine, clock.now(), roles=rc.roles, window=rc.window, settle=rc.settle)
    who = _who(args)
    audit.record(engine, clock.now(), who, "cli", "reconcile", differences=len(result.differences))
    names = {k: c.name for k, c in cfg.channels.items()}
    print(
        f"对账 {len(result.roles)} 个系统（{'、'.join(result.roles)}），{result.orders} 单，"
        f"差异 {len(result.differences)} 单（{result.ratio:.3%}），用时 {result.elapsed_s:.2f} 秒"
    )
    for reason, signature, n in signature_rows(result.groups, run_signatures(engine, result), names):
        print(f"- {reason_zh(reason)}（{reason}）" + (f"〔{signature}〕" if signature else "") + f"：{n} 单")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        Path(args.csv).write_text(to_csv(result, ZoneInfo(cfg.service.timezone)), encoding="utf-8")
        audit.record(
            engine,
            clock.now(),
            who,
            "cli",
            "export",
            what="reconcile",
            rows=len(result.differences),
            path=args.csv,
        )
        print(f"CSV：{args.csv}")
    return 0


def add_commands(sub) -> None:
    dia = sub.add_parser("diagnose", help="run the diagnostic probes and rank the likely causes")
    dia.add_argument("--kpi", default=None, help="focus on one KPI (e.g. sync_success_ratio)")
    dia.add_argument("--label", action="append", help="series label name=value (e.g. channel=tmall)")
    dia.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    dia.add_argument("--no-live", action="store_true", help="skip the live connectivity checks")
    dia.add_argument("--by", default=None, help="who runs it (audit; default: the login name)")
    dia.add_argument("--config", default=None)
    rec = sub.add_parser("reconcile", help="reconcile the last 72 h of orders across the systems")
    rec.add_argument("--csv", default=None, help="write the differences to this CSV file")
    rec.add_argument("--by", default=None, help="who runs it (audit; default: the login name)")
    rec.add_argument("--config", default=None)
