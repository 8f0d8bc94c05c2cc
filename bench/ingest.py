"""Store ingest throughput: the batched write path vs a row-at-a-time writer, same data, same run.

    .venv/bin/python bench/ingest.py [--orders 20000] [--store-url sqlite:///... or a PostgreSQL server URL]

Prints its figures; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from common import environment, throwaway_store  # first: puts the repo on sys.path
from sqlalchemy import insert, select

from collectors.types import Batch, Observation
from store.db import init_schema, make_engine
from store.records import observation_rows
from store.schema import observations
from store.store import ChannelIdentity, Store

FORWARD = ("created", "paid", "wms_received", "picked", "packed", "shipped", "delivered")
CHANNELS = {"tmall": ChannelIdentity("TB"), "jd": ChannelIdentity("JD"), "pdd": ChannelIdentity("PDD")}


def synthetic(orders: int, seed: int = 7) -> list[Observation]:
    """About 7 observations an order, as the forward lifecycle produces them, interleaved in time."""
    rng = random.Random(seed)
    start = datetime(2026, 2, 12, tzinfo=UTC)
    out = []
    for i in range(orders):
        channel = rng.choice(list(CHANNELS))
        at = start + timedelta(seconds=rng.randrange(86400))
        created = at
        for state in FORWARD[: rng.randint(2, len(FORWARD))]:
            out.append(
                Observation(
                    "bench",
                    f"{i}:{state}",
                    channel,
                    f"{i:012d}",
                    state,
                    at,
                    {"warehouse": f"WH{i % 4}", "carrier": f"C{i % 6}"},
                    9900,
                    created,
                )  # fmt: skip
            )
            at += timedelta(seconds=rng.randrange(60, 3600))
    out.sort(key=lambda o: o.at)
    return out


def batched(store: Store, obs: list[Observation], size: int) -> float:
    started = time.perf_counter()
    now = datetime(2026, 2, 14, tzinfo=UTC)
    for i in range(0, len(obs), size):
        store.ingest(Batch("bench", obs[i : i + size], cursor=str(i), records=size), now)
    return time.perf_counter() - started


def row_at_a_time(engine, obs: list[Observation]) -> float:
    """The naive writer: one transaction per record, look it up, insert it."""
    started = time.perf_counter()
    now = datetime(2026, 2, 14, tzinfo=UTC)
    for o in obs:
        with engine.begin() as conn:
            seen = conn.execute(
                select(observations.c.global_id).where(
                    observations.c.source == o.source, observations.c.record_key == o.record_key
                )
            ).first()
            if seen is None:
                conn.execute(
                    insert(observations).values(
                        source=o.source,
                        record_key=o.record_key,
                        global_id=o.raw_order_id,
                        state=o.state,
                        at=o.at,
                        ingested_at=now,
                    )  # fmt: skip
                )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--naive-share", type=float, default=0.1, help="share of the data the naive writer gets"
    )
    parser.add_argument("--store-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, throwaway_store(args.store_url) as url:
        engine = make_engine(url)
        init_schema(engine)
        store = Store(engine, CHANNELS, "Asia/Shanghai")
        obs = synthetic(args.orders)
        seconds = batched(store, obs, args.batch)
        again = batched(store, obs, args.batch)  # the same records again: all duplicates
        with engine.connect() as conn:
            stored = sum(1 for _ in observation_rows(conn))
        naive_url = f"sqlite:///{tmp}/naive.db" if args.store_url is None else url
        naive_engine = make_engine(naive_url)
        init_schema(naive_engine)
        sample = obs[: max(1, int(len(obs) * args.naive_share))]
        naive = row_at_a_time(
            naive_engine, [Observation(**{**_fields(o), "source": "naive"}) for o in sample]
        )
        engine.dispose()
        naive_engine.dispose()
    figures = {
        **environment(url),
        "orders": args.orders,
        "observations": len(obs),
        "stored": stored,
        "ingest_obs_per_s": round(len(obs) / seconds),
        "reingest_duplicates_obs_per_s": round(len(obs) / again),
        "naive_obs_per_s": round(len(sample) / naive),
    }
    print(
        f"batched ingest: {figures['ingest_obs_per_s']:,} obs/s ({len(obs):,} observations, {seconds:.2f} s)"
    )
    print(f"same records again (all duplicates): {figures['reingest_duplicates_obs_per_s']:,} obs/s")
    print(f"row-at-a-time writer: {figures['naive_obs_per_s']:,} obs/s ({len(sample):,} observations)")
    print(json.dumps(figures))
    return 0 if stored == len(obs) else 1


def _fields(o: Observation) -> dict:
    return {name: getattr(o, name) for name in Observation.__slots__}


if __name__ == "__main__":
    sys.exit(main())
