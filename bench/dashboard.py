"""Dashboard bench: server-side render time of every page at 1 M orders, vs a pandas cube.

    .venv/bin/python bench/dashboard.py [--orders 1000000] [--days 7] [--store PATH] [--runs 3]

Builds the bench world (bench/world.py) through the store's write path, buyer data for every order,
KPI snapshots over the last day (so 'vs yesterday' and the sparklines have data), a few alerts,
quarantined records and failed sends; then runs each page with Streamlit's AppTest, the script on the
server exactly as a browser session would run it, with the page caches cleared before every run
(cold: every query runs; the reconciliation and diagnosis pages up to their button, whose engines
have their own benches). `--store PATH` keeps the built SQLite store and reuses it next time.
The naive peer: the status cube computed by loading the orders into pandas. Progress goes to stderr;
figures to stdout, the last line one JSON object {page: seconds} (median of the cold runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from common import ROOT, environment, throwaway_store  # first: puts the repo on sys.path
from kpi import ingest
from sqlalchemy import func, insert, select
from world import START, World

from metrics.kpi import KpiEngine
from metrics.snapshot import load_latest_snapshot, save_snapshot
from sentinel.config import load_config
from store.db import init_schema, make_engine
from store.schema import alerts, order_pii, orders, outbox, quarantine
from store.store import ChannelIdentity, Store

PAGES = ("overview", "cube", "lifecycle", "sources", "alerts", "reconcile", "diagnose", "audit")
BAR_S = 1.5


def build(url: str, n_orders: int, days: float) -> None:
    """The 1 M world in the store, with buyer data, snapshots and some alert-side rows."""
    config = load_config()
    channels = {name: ChannelIdentity(c.code, c.id_pattern) for name, c in config.channels.items()}
    engine = make_engine(url)
    init_schema(engine)
    store = Store(engine, channels, config.service.timezone)
    end = START + timedelta(days=days)
    print(f"building {n_orders:,} orders over {days:g} days", file=sys.stderr)
    count, spent = ingest(store, World(n_orders, days).until(end), START, end, progress=True)
    print(f"ingest: {count:,} observations in {spent:.0f} s", file=sys.stderr)
    with engine.begin() as conn:  # buyer data of every order, as a decrypting ERP would hold it
        ids = [r[0] for r in conn.execute(select(orders.c.global_id))]
        for start in range(0, len(ids), 50_000):
            rows = [
                {"global_id": gid, "buyer_name": "张三", "phone": f"138{i:08d}", "address": "浙江省杭州市西湖区文三路90号",
                 "district": "西湖区", "updated_at": end}
                for i, gid in enumerate(ids[start : start + 50_000], start)
            ]  # fmt: skip
            conn.execute(insert(order_pii), rows)
    kpis = KpiEngine.from_config(engine, config.kpi)
    for back in (24, 12, 6, 3, 1, 0):  # kept snapshots: yesterday's, and a day of sparkline points
        save_snapshot(engine, kpis.compute(end - timedelta(hours=back)))
    with engine.begin() as conn:
        for i, rule in enumerate(r.name for r in config.alerts.rules):
            conn.execute(
                insert(alerts).values(
                    fingerprint=f"bench{i:011d}", rule=rule, labels="{}", state="firing", value=0.5,
                    pending_since=end - timedelta(minutes=10), fired_at=end - timedelta(minutes=5), updated_at=end,
                )
            )  # fmt: skip
        conn.execute(
            insert(quarantine),
            [
                {"source": "tmall", "record_key": str(i), "fingerprint": f"fp{i}", "field": "status",
                 "reason": "field status: unmapped status value 'X'", "raw": "{}", "at": end}
                for i in range(2000)
            ],
        )  # fmt: skip
        conn.execute(
            insert(outbox),
            [
                {"dedup_key": f"k{i}", "fingerprint": "f", "route": "ops", "kind": "firing", "body": "x",
                 "status": "failed", "attempts": 5, "created_at": end, "response": "errcode 93000"}
                for i in range(50)
            ],
        )  # fmt: skip
    engine.dispose()


def render_times(runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Cold (caches cleared) and warm render seconds of every page, as an admin (every page, clear PII)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from sentinel.auth import USER_KEY, User

    cold: dict[str, list[float]] = {p: [] for p in PAGES}
    warm: dict[str, list[float]] = {p: [] for p in PAGES}
    for _ in range(runs):
        for page in PAGES:
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
            at.session_state[USER_KEY] = User("bench", "admin")
            at.run()  # the entry page once (login state, navigation)
            for bucket in (cold, warm):
                if bucket is cold:
                    st.cache_data.clear()
                started = time.perf_counter()
                if page == "overview":
                    at.run()
                else:
                    at.switch_page(f"pages/{page}.py").run()
                bucket[page].append(time.perf_counter() - started)
                if at.exception:
                    raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
    return {p: statistics.median(v) for p, v in cold.items()}, {
        p: statistics.median(v) for p, v in warm.items()
    }


def naive_cube(url: str) -> float:
    """The cube the way a notebook would do it: every order into pandas, then group."""
    import pandas as pd

    engine = make_engine(url)
    started = time.perf_counter()
    with engine.connect() as conn:
        frame = pd.read_sql("SELECT state, state_at, channel FROM orders", conn)
    paid = frame[frame.state == "paid"]
    paid.groupby([paid.state_at // 3_600_000, "channel"]).size()
    seconds = time.perf_counter() - started
    engine.dispose()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--store", type=Path, default=None, help="SQLite file to keep (reused when present)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    given = f"sqlite:///{args.store.resolve()}" if args.store else None
    with throwaway_store(given) as url:
        with make_engine(url).connect() as conn:
            init_schema(conn.engine)
            have = conn.execute(select(func.count()).select_from(orders)).scalar()
        if not have:
            build(url, args.orders, args.days)
        else:
            print(
                f"reusing the store at {url} ({have:,} orders); a fresh snapshot by this code",
                file=sys.stderr,
            )
            engine = make_engine(url)
            latest = load_latest_snapshot(engine)
            save_snapshot(
                engine, KpiEngine.from_config(engine, load_config().kpi).compute(latest.computed_at)
            )
            engine.dispose()
        os.environ["SENTINEL_STORE_URL"] = url
        os.environ.pop("SENTINEL_CONFIG", None)
        cold, warm = render_times(args.runs)
        naive = naive_cube(url)
        with make_engine(url).connect() as conn:
            n = conn.execute(select(func.count()).select_from(orders)).scalar()
    print(json.dumps({**environment(url), "orders": n, "runs": args.runs}))
    for page in PAGES:
        flag = "ok" if cold[page] <= BAR_S else f"OVER the {BAR_S} s bar"
        print(f"{page:10s} cold {cold[page]:.3f} s, warm (cached) {warm[page]:.3f} s  {flag}")
    print(f"naive pandas cube (load every order, group): {naive:.3f} s vs the cube page {cold['cube']:.3f} s")
    print(json.dumps({page: round(cold[page], 3) for page in PAGES}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
