"""KPI bench at the PRODUCT.md scale: ingest, full and incremental refresh, /metrics, RSS, vs pandas.

    .venv/bin/python bench/kpi.py [--orders 1000000] [--days 7] [--store-url URL] [--skip-naive]

Without --store-url the store is a temp SQLite file; a PostgreSQL URL names the server, on which
a throwaway database is created and dropped. KPI settings and channels come from config.toml.
Progress goes to stderr; figures to stdout, the last line one JSON object.

ingest_obs_per_s: the store writes while the next group is generated and planned, so the figure is
the observations over the ingest loop's wall time less what the world alone takes to generate them
(timed in a second pass without the store); any slowing of the generator by the store's threads is
charged to the store.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from datetime import timedelta

import requests
from common import (  # first: puts the repo on sys.path
    current_rss_mb,
    environment,
    peak_rss_mb,
    throwaway_store,
    usage,
)
from sqlalchemy import func, select
from world import START, World

from metrics.catalog import KPI_BY_NAME
from metrics.exporter import MetricsExporter, serve
from metrics.kpi import KpiEngine
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.runtime import tune_runtime
from sentinel.service import GROUP_OBSERVATIONS
from store.db import init_schema, make_engine
from store.lifecycle import PROGRESS_STATES, TERMINAL, WMS_REACHED, milestone_column
from store.records import count_records
from store.schema import orders
from store.store import ChannelIdentity, Store

# The KPIs the pandas baseline recomputes, by state and/or channel (the engine may export more).
NAIVE_KPIS = ("sync_paid_orders", "sync_unreached_orders", "sync_success_ratio",
              "state_orders", "stuck_orders", "stuck_ratio")  # fmt: skip
SERIES_TARGET = 10_000
INCREMENT = timedelta(minutes=5)


def ingest(store: Store, batches, start, end, progress: bool) -> tuple[int, float, float]:
    """Feed batches to the store as the service does: a source's pages handed over together up to
    GROUP_OBSERVATIONS (Store.submit; the writer writes a group while the next is generated and
    planned), a flush at the end. Returns the observations, the loop's wall seconds (generation
    included) and the seconds spent in the store's calls."""
    count, spent, shown = 0, 0.0, 0
    pending: dict[str, list] = {}

    def call(method, *args) -> float:
        started = time.perf_counter()
        method(*args)
        return time.perf_counter() - started

    began = time.perf_counter()
    for batch in batches:
        group = pending.setdefault(batch.source, [])
        group.append(batch)
        count += len(batch.observations)
        if sum(len(b.observations) for b in group) >= GROUP_OBSERVATIONS:
            spent += call(store.submit, group, group[-1].max_event_at)
            pending[batch.source] = []
        done = int(10 * (batch.max_event_at - start) / (end - start))
        if progress and done > shown:
            shown = done
            rate = count / (time.perf_counter() - began)
            print(f"  ingest {10 * done:3d} %: {count:,} obs, {rate:,.0f} obs/s wall", file=sys.stderr)
    for group in pending.values():
        if group:
            spent += call(store.submit, group, group[-1].max_event_at)
    spent += call(store.flush)
    return count, time.perf_counter() - began, spent


def generation_seconds(orders: int, days: float, end) -> float:
    """What the bench's world alone takes to produce the same events (no store): the part of the
    ingest loop's wall time that is not the store's."""
    started = time.perf_counter()
    for _batch in World(orders, days).until(end):
        pass
    return time.perf_counter() - started


def timed(refresh, now) -> tuple[float, Snapshot]:
    started = time.perf_counter()
    snapshot = refresh(now)
    return time.perf_counter() - started, snapshot


def keyed(snapshot: Snapshot, naive_only: bool = False) -> dict[str, float]:
    """Values by "kpi {labels}"; naive_only keeps the KPIs and label sets the baseline computes."""
    return {
        f"{v.kpi} {json.dumps(dict(v.labels), sort_keys=True)}": v.value
        for v in snapshot.values
        if not naive_only or (v.kpi in NAIVE_KPIS and {k for k, _ in v.labels} <= {"state", "channel"})
    }


def differences(expected: dict[str, float], actual: dict[str, float]) -> list[str]:
    """Series whose values differ (a count missing on one side counts as 0)."""
    out = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key, 0.0), actual.get(key, 0.0)
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"{key}: {a} vs {b}")
    return out


def synthetic_snapshot(real: Snapshot, timeouts, target: int) -> Snapshot:
    """The real snapshot's exportable series plus per-shop series of catalog KPIs up to `target`."""
    rng = random.Random(7)
    values = [
        v for v in real.values if v.kpi in KPI_BY_NAME and set(v.label_dict) <= set(KPI_BY_NAME[v.kpi].labels)
    ]
    channels = sorted({v.label_dict["channel"] for v in real.values if "channel" in v.label_dict})
    for shop in range(1, 10_000):
        for channel in channels:
            labels = {"channel": f"{channel}_shop{shop:03d}"}
            n = rng.randrange(1, 5000)
            values += [
                KpiValue("sync_paid_orders", labels_of(labels), n),
                KpiValue("sync_unreached_orders", labels_of(labels), n // 1000),
                KpiValue("sync_success_ratio", labels_of(labels), 1 - (n // 1000) / n),
            ]
            for state in timeouts:
                stuck = rng.randrange(0, 20)
                series = labels_of(labels, state=state)
                values += [
                    KpiValue("state_orders", series, n),
                    KpiValue("stuck_orders", series, stuck),
                    KpiValue("stuck_ratio", series, stuck / n),
                ]
        if len(values) >= target:
            break
    return Snapshot(real.computed_at, tuple(values[:target]), real.duration_seconds)


def scrape(snapshot: Snapshot, health: list[dict], scrapes: int = 20) -> tuple[float, int]:
    """Median ms of GET /metrics on the real HTTP server, and the samples one answer holds."""
    exporter = MetricsExporter(ManualClock(snapshot.computed_at))
    exporter.update(snapshot, health)
    server = serve(exporter)
    try:
        with requests.Session() as session:
            session.get(server.url, timeout=10).raise_for_status()  # warm-up
            times = []
            for _ in range(scrapes):
                started = time.perf_counter()
                answer = session.get(server.url, timeout=10)
                answer.raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
        lines = answer.text.splitlines()
        return statistics.median(times), sum(1 for line in lines if line and not line.startswith("#"))
    finally:
        server.close()


def naive_kpis(spec: dict) -> dict:
    """The baseline: load the orders table into pandas and compute the same KPIs there."""
    import pandas as pd
    from sqlalchemy import create_engine

    started = time.perf_counter()
    engine = create_engine(spec["url"])
    df = pd.read_sql("SELECT * FROM orders", engine)
    now, out = spec["now_ms"], {}

    def put(kpi: str, labels: dict, value: float) -> None:
        out[f"{kpi} {json.dumps(labels, sort_keys=True)}"] = float(value)

    reached = df[[milestone_column(s) for s in WMS_REACHED]].notna().any(axis=1)
    ended_early = (df["cancelled_at"].notna() | df["closed_at"].notna()) & ~reached
    in_sla = df["paid_at"].between(now - spec["window_ms"], now - spec["sla_ms"]) & ~ended_early
    sync = reached[in_sla].groupby(df.loc[in_sla, "channel"]).agg(["size", "sum"])
    for labels, (n, ok) in [({"channel": c}, row) for c, row in sync.iterrows()] + [({}, sync.sum())]:
        put("sync_paid_orders", labels, n)
        put("sync_unreached_orders", labels, n - ok)
        if n:
            put("sync_success_ratio", labels, ok / n)
    live = df[~df["state"].isin(TERMINAL)]
    cut = live["state"].map({s: now - ms for s, ms in spec["timeouts_ms"].items()})
    # in transit: from the newest carrier scan when there is one (COALESCE(progress_at, state_at))
    clock = live["progress_at"].where(live["state"].isin(PROGRESS_STATES), None).fillna(live["state_at"])
    cube = live.assign(stuck=clock <= cut).groupby(["state", "channel"])["stuck"].agg(["size", "sum"])
    rows = [({"state": s, "channel": c}, row) for (s, c), row in cube.iterrows()]
    rows += [({"state": s}, row) for s, row in cube.groupby(level="state").sum().iterrows()]
    for labels, (n, stuck) in rows:
        put("state_orders", labels, n)
        if labels["state"] in spec["timeouts_ms"]:
            put("stuck_orders", labels, stuck)
            put("stuck_ratio", labels, stuck / n)
    return {"seconds": time.perf_counter() - started, "rss_mb": peak_rss_mb(), "values": out}


def run_naive(url: str, now, kpi) -> dict:
    """The naive baseline in a child process, so its memory is its own."""
    spec = {
        "url": url,
        "now_ms": int(now.timestamp() * 1000),
        "window_ms": int(kpi.window.total_seconds() * 1000),
        "sla_ms": int(kpi.sync_sla.total_seconds() * 1000),
        "timeouts_ms": {s: int(t.total_seconds() * 1000) for s, t in kpi.stuck_timeouts.items()},
    }
    command = [sys.executable, __file__, "--naive-child", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--store-url", default=None, help="SQLite URL, or a PostgreSQL server URL")
    parser.add_argument("--skip-naive", action="store_true", help="skip the pandas baseline")
    parser.add_argument("--naive-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        print(json.dumps(naive_kpis(json.loads(args.naive_child))))
        return 0
    tune_runtime()  # the service's process settings (Service.start)
    config = load_config()
    channels = {name: ChannelIdentity(c.code, c.id_pattern) for name, c in config.channels.items()}
    cfg = config.kpi
    with throwaway_store(args.store_url) as url:
        engine = make_engine(url)
        init_schema(engine)
        store = Store(engine, channels, config.service.timezone)
        world = World(args.orders, args.days)
        end = START + timedelta(days=args.days)
        print(f"generating and ingesting {args.orders:,} orders over {args.days:g} days", file=sys.stderr)
        before = usage()
        count, wall, spent = ingest(store, world.until(end), START, end, progress=True)
        used = {key: value - before[key] for key, value in usage().items()}
        generation = generation_seconds(args.orders, args.days, end)
        rate = count / (wall - generation)
        # Where the loop's time went: the calling thread generates the world and plans (Python, one
        # GIL); the store's writer thread runs the statements; the I/O is mostly the WAL's frames.
        split = {
            "ingest_main_thread_cpu_s": round(used["thread_cpu_s"], 1),
            "ingest_other_threads_cpu_s": round(used["process_cpu_s"] - used["thread_cpu_s"], 1),
        }
        if "written_bytes" in used:
            split["ingest_written_kb_per_obs"] = round(used["written_bytes"] / count / 1024, 2)
            split["ingest_read_kb_per_obs"] = round(used["read_bytes"] / count / 1024, 2)
        print(
            f"ingest: {count:,} observations of {world.created:,} orders in {wall:.1f} s wall, of which"
            f" the world alone takes {generation:.1f} s: {rate:,.0f} obs/s"
            f" ({count / spent:,.0f} obs/s counting only the {spent:.1f} s the caller spent in the store)"
        )
        print(f"ingest CPU and I/O: {json.dumps(split)}")

        print(f"RSS after the ingest: {current_rss_mb()} MB now, {peak_rss_mb()} MB peak", file=sys.stderr)
        kpis = KpiEngine.from_config(engine, cfg, store=store)
        full = [timed(kpis.compute, end) for _ in range(3)]
        full_s = statistics.median(t for t, _ in full)
        print(
            f"RSS after the full refreshes: {current_rss_mb()} MB now, {peak_rss_mb()} MB peak",
            file=sys.stderr,
        )
        print(f"full refresh (compute, median of 3): {full_s:.3f} s, {len(full[0][1].values)} series")

        # The rolling week (kpi.windows + "7d", off by default): what its hour cells cost.
        weekly = KpiEngine.from_config(
            engine, cfg.model_copy(update={"windows": [*cfg.windows, "7d"]}), store
        )
        week_full_s = statistics.median(timed(weekly.compute, end)[0] for _ in range(3))
        print(f"full refresh with window 7d (median of 3): {week_full_s:.3f} s")
        print(
            f"RSS after the 7d full refreshes: {current_rss_mb()} MB now, {peak_rss_mb()} MB peak",
            file=sys.stderr,
        )

        kpis.refresh(end)  # right after the full computation: the next refreshes are incremental
        weekly.refresh(end)
        now, incremental, week_incremental = end, [], []
        for _ in range(3):
            added, _wall, _spent = ingest(store, world.until(now + INCREMENT), now, now + INCREMENT, False)
            now += INCREMENT
            incremental.append(timed(kpis.refresh, now))
            week_incremental.append(timed(weekly.refresh, now))
        snapshot = incremental[-1][1]
        incremental_s = statistics.median(t for t, _ in incremental)
        week_incremental_s = statistics.median(t for t, _ in week_incremental)
        print(
            f"incremental refresh (after 5 min, {added:,} new obs; median of 3): {incremental_s * 1000:.1f} ms"
            f" ({week_incremental_s * 1000:.1f} ms with window 7d)"
        )
        if diff := differences(keyed(weekly.compute(now)), keyed(week_incremental[-1][1])):
            print(
                f"WARNING: with window 7d refresh() differs from compute() on {len(diff)} series, e.g. {diff[:3]}"
            )
        if diff := differences(keyed(kpis.compute(now)), keyed(snapshot)):
            print(f"WARNING: refresh() differs from compute() on {len(diff)} series, e.g. {diff[:3]}")
        else:
            print("cross-check: refresh() == compute() on every series")

        wide = synthetic_snapshot(snapshot, cfg.stuck_timeouts, SERIES_TARGET)
        scrape_ms, series = scrape(wide, store.health())
        print(f"/metrics: {scrape_ms:.1f} ms median of 20 scrapes, {series:,} samples")
        print(
            f"RSS after the refreshes and scrapes: {current_rss_mb()} MB now, {peak_rss_mb()} MB peak",
            file=sys.stderr,
        )
        with engine.connect() as conn:
            stored_obs = count_records(conn)
            stored_orders = conn.execute(select(func.count()).select_from(orders)).scalar()
        engine.dispose()
        rss = peak_rss_mb()
        print(f"store: {stored_orders:,} orders, {stored_obs:,} observations; peak RSS {rss} MB")

        figures = {
            **environment(url),
            "orders": args.orders,
            "observations": count,
            "ingest_obs_per_s": round(rate),
            "ingest_wall_s": round(wall, 1),
            "ingest_generation_s": round(generation, 1),
            "ingest_store_calls_obs_per_s": round(count / spent),
            **split,
            "full_refresh_s": round(full_s, 4),
            "incremental_refresh_s": round(incremental_s, 4),
            "full_refresh_7d_s": round(week_full_s, 4),
            "incremental_refresh_7d_s": round(week_incremental_s, 4),
            "metrics_scrape_ms": round(scrape_ms, 2),
            "metrics_series": series,
            "rss_mb": rss,
            "naive_full_refresh_s": None,
            "naive_rss_mb": None,
        }
        if not args.skip_naive:
            naive = run_naive(url, now, cfg)
            figures.update(naive_full_refresh_s=round(naive["seconds"], 3), naive_rss_mb=naive["rss_mb"])
            print(f"naive pandas refresh: {naive['seconds']:.2f} s, RSS {naive['rss_mb']} MB")
            diff = differences(keyed(snapshot, naive_only=True), naive["values"])
            if diff:
                print(f"WARNING: engine and pandas differ on {len(diff)} series, e.g. {diff[:3]}")
            else:
                print(f"cross-check: engine == pandas on all {len(naive['values'])} series")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
