"""Reconciliation of four 72 h ID sets (channel orders, payment bills, ERP, WMS) of ~1,000,000
orders each with 0.5 % differences: Sentinel's reconcile() over the store vs a pandas merge of the
four ID lists in the same run.

The store holds one row per order (bench/orders_table.py writes them as the ingest keeps them:
the bit set of the systems that showed the order, amounts in fen); reconcile() finds the orders
missing from any system, or whose paid amount differs, in one pass over the store's keys and
groups them by reason; then again with the opt-in `reconcile.indexes` (a partial index on the
differing orders and one on creation time: no full scan). The baseline gets the four systems' exports as in-memory lists of string
IDs with amounts (the loading a string join needs is not even timed: the lists are built first)
and outer-merges them with pandas. Both must find the same orders. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from bench import orders_table  # noqa: E402
from bench.common import environment, peak_rss_mb, throwaway_store  # noqa: E402
from reconcile import reconcile  # noqa: E402
from reconcile.indexes import ensure_indexes  # noqa: E402
from store.db import init_schema, make_engine  # noqa: E402
from store.lifecycle import ROLE_BITS  # noqa: E402

NOW = datetime(2026, 2, 12, 14, 0, tzinfo=UTC)
FOUR = orders_table.FOUR_ROLES
BAR_S = 1.0


def exports(world: dict) -> dict[str, tuple[list[str], list[int]]]:
    """Each system's export: the raw order IDs it holds (strings, as written) and amounts (fen)."""
    roles = world["roles"].tolist()
    channel = world["channel"].tolist()
    amount, paid_amount = world["amount"].tolist(), world["paid_amount"].tolist()
    out = {}
    for role in FOUR:
        bit = ROLE_BITS[role]
        ids, amounts = [], []
        for i, seen in enumerate(roles):
            if seen & bit:
                ids.append(orders_table.raw_id(orders_table.CHANNELS[channel[i]], i))
                amounts.append(paid_amount[i] if role == "payment" else amount[i])
        out[role] = (ids, amounts)
    return out


def pandas_baseline(sets: dict[str, tuple[list[str], list[int]]]) -> tuple[float, set[str]]:
    """Outer-merge the four ID sets; the IDs missing anywhere or whose payment amount differs."""
    started = time.perf_counter()
    merged = None
    for role, (ids, amounts) in sets.items():
        frame = pd.DataFrame({"order_id": ids, f"amount_{role}": amounts})
        merged = frame if merged is None else merged.merge(frame, on="order_id", how="outer")
    cols = [f"amount_{r}" for r in sets]
    missing = merged[cols].isna().any(axis=1)
    differs = merged["amount_payment"].notna() & merged["amount_channel"].notna()
    differs &= merged["amount_payment"] != merged["amount_channel"]
    found = set(merged.loc[missing | differs, "order_id"])
    return time.perf_counter() - started, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--diff-ratio", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=5, help="timed reconcile runs (the median is reported)")
    parser.add_argument("--store-url", default=None, help="SQLite URL, or a PostgreSQL server URL")
    args = parser.parse_args()

    world = orders_table.generate(args.orders, NOW, days=2.99, diff_ratio=args.diff_ratio)
    with throwaway_store(args.store_url) as url:
        engine = make_engine(url)
        init_schema(engine)
        started = time.perf_counter()
        orders_table.load(engine, world)
        print(f"store: {args.orders:,} orders written in {time.perf_counter() - started:.1f} s", flush=True)

        window = timedelta(hours=72)
        times = []
        for _ in range(args.runs):
            gc.collect()
            started = time.perf_counter()
            result = reconcile(engine, NOW, roles=FOUR, window=window, settle=timedelta(0))
            times.append(time.perf_counter() - started)
        print(f"reconcile: runs {', '.join(f'{t:.3f}' for t in times)} s; {result.orders:,} orders, "
              f"{len(result.differences):,} differences", flush=True)  # fmt: skip
        for reason, n in result.groups:
            print(f"  {reason}: {n:,}")
        started = time.perf_counter()
        ensure_indexes(engine, FOUR)
        index_build_s = time.perf_counter() - started
        indexed_times = []
        for _ in range(args.runs):
            gc.collect()
            started = time.perf_counter()
            indexed = reconcile(engine, NOW, roles=FOUR, window=window, settle=timedelta(0))
            indexed_times.append(time.perf_counter() - started)
        print(f"reconcile with reconcile.indexes (built in {index_build_s:.1f} s): runs "
              f"{', '.join(f'{t:.3f}' for t in indexed_times)} s", flush=True)  # fmt: skip
        engine.dispose()

    sets = exports(world)
    sizes = {role: len(ids) for role, (ids, _) in sets.items()}
    print(f"exports: {sizes}", flush=True)
    gc.collect()
    baseline_s, baseline_ids = pandas_baseline(sets)
    print(f"pandas merge: {baseline_s:.3f} s, {len(baseline_ids):,} differences", flush=True)

    ours = {d.raw_order_id for d in result.differences}
    agree = ours == baseline_ids and indexed.differences == result.differences
    reconcile_s = statistics.median(times)
    indexed_s = statistics.median(indexed_times)
    figures = {
        "orders": result.orders,
        "set_sizes": sizes,
        "differences": len(result.differences),
        "reason_groups": dict(result.groups),
        "reconcile_s": round(reconcile_s, 3),
        "reconcile_runs_s": [round(t, 3) for t in times],
        "reconcile_indexed_s": round(indexed_s, 3),
        "reconcile_indexed_runs_s": [round(t, 3) for t in indexed_times],
        "index_build_s": round(index_build_s, 2),
        "baseline_s": round(baseline_s, 3),
        "same_differences": agree,
        "bar_s": BAR_S,
        "load_average": round(os.getloadavg()[0], 2),
        "rss_mb": peak_rss_mb(),
        **environment(url),
    }
    print(json.dumps(figures, ensure_ascii=False))
    best = min(reconcile_s, indexed_s)
    return 0 if agree and best <= BAR_S and reconcile_s < baseline_s else 1


if __name__ == "__main__":
    sys.exit(main())
