"""Soak: the peak rate (5,000 observations/s) for 10 minutes through the real SQL collector.

A writer process plays the WMS: every 100 ms it commits the shipped stock-out rows of that tenth of a
second into `wms_stockout` (the simulator's table, SQLite file), each row carrying four milestones
(received, picked, packed, shipped: four observations). The service polls it with the project's WMS
source (config.toml's query and mapping) on a fixed interval on the wall clock, writes the store and
refreshes the KPIs every 10 s. Each poll's lag is how long the oldest row it brought in had waited
since its commit. At the end the writer stops, the service catches up, and every row's four
observations are checked in the store: none lost, none twice.

    python bench/soak.py                  # 3 minutes of warm-up, then 10 measured at 5,000 obs/s
    python bench/soak.py --minutes 1      # a short trial (after the same warm-up)

A warm-up (3 minutes by default, `--warmup-minutes`) runs at the same rate before the measured
minutes: imports, caches, the order cache and SQLite's page caches fill during it, and `rss_start_mb`
is taken when it ends, so the RSS bar judges growth at steady state rather than warming. Every minute
one line goes to stderr: rows written, observations stored, the latest poll's lag, RSS and SQLite's
heap (every connection's page cache included; store/db.py caps it for the whole process).

    python bench/soak.py --minutes 1 --warmup-minutes 1   # a quick check of the bench itself

The last line is one JSON object: obs_per_s, max_lag_s, poll_interval_s, rss_start_mb, rss_end_mb,
rss_growth_ratio, lost, duplicated (and details). obs_per_s and max_lag_s cover the whole run, the
warm-up included; RSS start is taken at the end of the warm-up, end after the last poll.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import ROOT, throwaway_store

sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from sentinel.clock import SystemClock  # noqa: E402
from sentinel.config import DEFAULT_PATH, load_config  # noqa: E402
from sentinel.runtime import tune_runtime  # noqa: E402
from sentinel.service import Service  # noqa: E402
from sim.wms import WmsDatabase  # noqa: E402
from store.db import SQLITE_HEAP_LIMIT_MB, sqlite_heap_mb, sqlite_heap_peak_mb  # noqa: E402
from store.records import observation_rows  # noqa: E402
from store.schema import orders  # noqa: E402

OBS_PER_ROW = 4  # wms_received, picked, packed, shipped
SHOPS = ("JD01",)  # JD ids are plain digits: the id pattern accepts the writer's sequence numbers
TICK = 0.1


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def writer(path: str, rows_per_s: int, seconds: float, done: mp.Value, stop: mp.Event) -> None:
    """Commit rows_per_s * TICK shipped rows every TICK seconds (local naive times, as a WMS)."""
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    per_tick = max(1, round(rows_per_s * TICK))
    start = time.monotonic()
    n = 0
    tick = 0
    while not stop.is_set() and time.monotonic() - start < seconds:
        local = (datetime.now(UTC) + timedelta(hours=8)).replace(tzinfo=None, microsecond=0)
        stamp = local.strftime("%Y-%m-%d %H:%M:%S")
        rows = []
        for _ in range(per_tick):
            n += 1
            rows.append(
                (f"CK{n:010d}", str(10**11 + n), SHOPS[n % len(SHOPS)], "WH-SH", 110, 4, f"SKU-{n % 97}",
                 1, "99.00", "上海市", "上海市", "zto", f"ZT{n:010d}", stamp, stamp, stamp, stamp, stamp)
            )  # fmt: skip
        conn.executemany(
            "INSERT INTO wms_stockout (stockout_no, src_order_no, shop_no, warehouse_no, status, "
            "consign_status, spec_no, goods_count, receivable, receiver_province, receiver_city, "
            "logistics_code, logistics_no, created, modified, pick_time, pack_time, consign_time) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.commit()
        with done.get_lock():
            done.value = n
        tick += 1
        pause = start + tick * TICK - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    conn.close()


def wms_source(url: str, poll_interval: float, overlap: str) -> dict:
    raw = tomllib.loads(Path(DEFAULT_PATH).read_text(encoding="utf-8"))
    source = dict(raw["sources"]["wms"])
    source.update(url=url, poll_interval=f"{poll_interval}s", overlap=overlap, page_size=100)
    return source


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured minutes, after the warm-up")
    parser.add_argument(
        "--warmup-minutes", type=float, default=3.0, help="minutes at the same rate before rss_start_mb"
    )
    parser.add_argument("--rate", type=int, default=5000, help="observations per second")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--overlap", default="5s", help="the WMS source's re-read overlap")
    parser.add_argument("--store-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    warmup = args.warmup_minutes * 60
    seconds = warmup + args.minutes * 60  # the writer runs through both
    rows_per_s = args.rate // OBS_PER_ROW

    with throwaway_store(args.store_url) as store_url:
        workdir = (
            Path(store_url.removeprefix("sqlite:///")).parent if store_url.startswith("sqlite") else None
        )
        workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
        wms_path = workdir / f"soak_wms_{os.getpid()}.db"
        WmsDatabase(f"sqlite:///{wms_path}").create()
        config = load_config(
            DEFAULT_PATH,
            overrides={
                "service.store_url": store_url,
                "sources": {"wms": wms_source(f"sqlite:///{wms_path}", args.poll_interval, args.overlap)},
                "alerts.rules": [],
            },
        )
        tune_runtime()  # as Service.start does
        service = Service(config, SystemClock(), notifiers={})
        done, stop = mp.Value("q", 0), mp.Event()
        proc = mp.Process(target=writer, args=(str(wms_path), rows_per_s, seconds, done, stop), daemon=True)

        lags, polls, kpi_refreshes, kpi_s = [], 0, 0, []
        seen_rows = 0  # rows written before the start of the last complete poll
        stored_so_far = 0
        rss_start = heap_start = None
        # Per minute: does it level off (caches full) or keep climbing (a leak)?
        rss_by_minute: list[float] = []
        heap_by_minute: list[float | None] = []
        print(
            f"soak: {args.warmup_minutes:g} min warm-up + {args.minutes:g} min measured at {args.rate} obs/s, "
            f"polls every {args.poll_interval:g} s; SQLite heap budget {SQLITE_HEAP_LIMIT_MB} MB",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.monotonic()
        proc.start()
        next_poll = next_kpi = t0
        written_at: list[tuple[int, float]] = []  # (rows written, when) samples for lag
        while proc.is_alive() or seen_rows < done.value:
            now = time.monotonic()
            if now >= next_poll:
                before = done.value
                written_at.append((before, now))
                outcome = service.poll_source("wms")
                end = time.monotonic()
                polls += 1
                stored_so_far += outcome.totals.new_observations
                if not outcome.ok:
                    print(f"poll failed: {outcome.error}", file=sys.stderr)
                # The oldest row this poll brought in was committed just after the previous poll began.
                previous = [t for n, t in written_at[:-1] if n <= seen_rows]
                if before > seen_rows:
                    lags.append(end - (previous[-1] if previous else t0))
                seen_rows = before
                next_poll = max(next_poll + args.poll_interval, end)
                if rss_start is None and end - t0 >= warmup:
                    rss_start, heap_start = rss_mb(), sqlite_heap_mb()
                if end - t0 >= 60 * (len(rss_by_minute) + 1):
                    rss_by_minute.append(round(rss_mb(), 1))
                    heap = sqlite_heap_mb()
                    heap_by_minute.append(None if heap is None else round(heap, 1))
                    minute = len(rss_by_minute)
                    phase = "warm-up" if minute * 60 <= warmup else "measured"
                    print(
                        f"minute {minute} ({phase}): rows {before:,}, observations stored {stored_so_far:,}, "
                        f"lag {lags[-1] if lags else 0:.2f} s, RSS {rss_by_minute[-1]:.1f} MB, "
                        f"SQLite heap {_mb(heap)}",
                        file=sys.stderr,
                        flush=True,
                    )
            if now >= next_kpi:
                k0 = time.perf_counter()
                service.refresh_kpis()
                kpi_s.append(time.perf_counter() - k0)
                kpi_refreshes += 1
                next_kpi += 10
            if not proc.is_alive() and seen_rows >= done.value:
                break
            time.sleep(max(0.0, min(next_poll, next_kpi) - time.monotonic()))
        proc.join()
        service.poll_source("wms")  # the rows committed during the last poll
        rss_end, heap_end = rss_mb(), sqlite_heap_mb()
        elapsed = time.monotonic() - t0
        total_rows = done.value
        with service.engine.connect() as conn:
            stored_obs = sum(1 for row in observation_rows(conn) if row[1] == "wms")
            stored_orders = conn.execute(select(func.count()).select_from(orders)).scalar_one()
            repeats = conn.execute(
                select(func.coalesce(func.sum(orders.c.duplicate_records), 0))
            ).scalar_one()
            complete = conn.execute(
                select(func.count()).select_from(orders).where(orders.c.state == "shipped")
            ).scalar_one()
        service.stop()
        wms_path.unlink(missing_ok=True)
    print(
        f"end: RSS {rss_start or rss_end:.1f} -> {rss_end:.1f} MB, SQLite heap {_mb(heap_start)} -> "
        f"{_mb(heap_end)} (peak {_mb(sqlite_heap_peak_mb())})",
        file=sys.stderr,
        flush=True,
    )

    expected = total_rows * OBS_PER_ROW
    rss_start = rss_start or rss_end
    peak = sqlite_heap_peak_mb()
    figures = {
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "target_obs_per_s": args.rate,
        "rows_written": total_rows,
        "observations_expected": expected,
        "observations_stored": stored_obs,
        "orders_stored": stored_orders,
        "orders_shipped": complete,
        "polls": polls,
        "kpi_refreshes": kpi_refreshes,
        "kpi_refresh_max_s": round(max(kpi_s, default=0), 3),
        "overlap": args.overlap,
        "store": store_url.split(":")[0],
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "obs_per_s": round(stored_obs / elapsed, 1),
        "max_lag_s": round(max(lags, default=0), 2),
        "poll_interval_s": args.poll_interval,
        "rss_by_minute_mb": rss_by_minute,
        "sqlite_heap_by_minute_mb": heap_by_minute,
        "sqlite_heap_peak_mb": None if peak is None else round(peak, 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_ratio": round(rss_end / rss_start - 1, 4),
        "lost": expected - stored_obs if stored_obs <= expected else 0,
        "duplicated": max(0, stored_obs - expected) + int(repeats),
    }
    figures["bars_met"] = (
        figures["lost"] == 0
        and figures["duplicated"] == 0
        and figures["max_lag_s"] <= 2 * args.poll_interval
        and figures["rss_growth_ratio"] <= 0.10
    )
    print(json.dumps(figures, ensure_ascii=False))
    return 0 if figures["bars_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
