"""Diagnosis wall time at 1,000,000 orders: every probe over the store during a WMS push gap.

The store holds 1 M orders over 7 days (bench/orders_table.py writes them as the ingest keeps them,
one row per order, and the state counts are rebuilt from them), a few stuck, cancelled, missing in
one system or with amount differences, and a push gap: the last 600 Tmall/Alipay orders paid
20 min to 3 h ago never reached the WMS. diagnose() runs every probe (the live connectivity
checks off: the shipped config's sources are remote); the top cause must be wms_push_gap. The
naive peer is the same questions over the KPI window's orders loaded into pandas. Last line: JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from bench import orders_table  # noqa: E402
from bench.common import environment, peak_rss_mb, throwaway_store  # noqa: E402
from diagnose import diagnose  # noqa: E402
from sentinel.config import DEFAULT_PATH, load_config  # noqa: E402
from store.db import init_schema, make_engine  # noqa: E402
from store.store import Store  # noqa: E402

NOW = datetime(2026, 2, 12, 14, 0, tzinfo=UTC)
GAP = 600
BAR_S = 5.0


def naive(engine, config) -> float:
    """Load the window's orders into pandas and ask the same order questions there."""
    started = time.perf_counter()
    since = int((NOW - config.kpi.window).timestamp() * 1000)
    frame = pd.read_sql_query(f"SELECT * FROM orders WHERE paid_at >= {since}", engine)
    judged = frame[frame.paid_at <= int((NOW - config.kpi.sync_sla).timestamp() * 1000)]
    reached = judged[["wms_received_at", "picked_at", "packed_at"]].notna().any(axis=1)
    unreached = judged[~reached]
    for dim in ("channel", "payment_method", "sku", "warehouse", "carrier", "province", "city"):
        (unreached[dim].value_counts(normalize=True) / judged[dim].value_counts(normalize=True)).dropna()
    frame[(frame.amount_fen != frame.paid_amount_fen)].groupby("sku").size()
    frame[(frame.cancelled_at - frame.paid_at) <= 60_000].groupby("channel").size()
    frame[(frame.seen_roles & 2 != 0) & (frame.seen_roles & 1 == 0)].groupby("channel").size()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--runs", type=int, default=3, help="timed diagnoses (the median is reported)")
    parser.add_argument("--store-url", default=None, help="SQLite URL, or a PostgreSQL server URL")
    args = parser.parse_args()
    config = load_config(DEFAULT_PATH)

    world = orders_table.generate(args.orders, NOW, days=args.days, diff_ratio=0.0005, gap=GAP)
    with throwaway_store(args.store_url) as url:
        engine = make_engine(url)
        init_schema(engine)
        started = time.perf_counter()
        orders_table.load(engine, world)
        Store(engine, {}, config.service.timezone).rebuild_state_counts()
        print(f"store: {args.orders:,} orders written in {time.perf_counter() - started:.1f} s", flush=True)

        times, result = [], None
        for _ in range(args.runs):
            gc.collect()
            started = time.perf_counter()
            result = diagnose(engine, config, NOW, live=False)
            times.append(time.perf_counter() - started)
        print(f"diagnose: runs {', '.join(f'{t:.3f}' for t in times)} s", flush=True)
        for cause in result.causes:
            print(f"  {cause.cause} {cause.score:.2f}: {cause.summary}")
        slowest = sorted(result.probe_seconds.items(), key=lambda kv: -kv[1])[:5]
        print("  slowest probes: " + ", ".join(f"{k} {v:.3f} s" for k, v in slowest))
        focused_started = time.perf_counter()
        focused = diagnose(
            engine, config, NOW, live=False, kpi="sync_success_ratio", labels={"channel": "tmall"}
        )
        focused_s = time.perf_counter() - focused_started
        gc.collect()
        naive_s = naive(engine, config)
        print(f"naive pandas: {naive_s:.3f} s", flush=True)
        engine.dispose()

    top = result.causes[0].cause if result.causes else None
    diagnose_s = statistics.median(times)
    figures = {
        "orders": args.orders,
        "diagnose_s": round(diagnose_s, 3),
        "diagnose_runs_s": [round(t, 3) for t in times],
        "focused_diagnose_s": round(focused_s, 3),
        "naive_pandas_s": round(naive_s, 3),
        "top_cause": top,
        "focused_top_cause": focused.causes[0].cause if focused.causes else None,
        "probe_seconds": {k: round(v, 3) for k, v in result.probe_seconds.items()},
        "live_checks": False,
        "bar_s": BAR_S,
        "load_average": round(os.getloadavg()[0], 2),
        "rss_mb": peak_rss_mb(),
        **environment(url),
    }
    print(json.dumps(figures, ensure_ascii=False))
    return 0 if top == "wms_push_gap" and diagnose_s <= BAR_S else 1


if __name__ == "__main__":
    sys.exit(main())
