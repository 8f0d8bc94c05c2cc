"""A store of N orders written straight into the orders table (one row per order, as the ingest
keeps it), for the benches that read orders rather than ingest them: reconcile and diagnose.

Orders are spread over `days` up to `now` with 0.5 % missing from one of the four systems
(channel, payment, ERP, WMS) by default, a few stuck, cancelled or with amount differences, and
optional incidents on top (a WMS push gap). Deterministic for a seed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from store.lifecycle import RANK, ROLE_BITS
from store.schema import orders, to_ms

CHANNELS = ("tmall", "pdd", "douyin", "jd", "youzan")
CHANNEL_WEIGHTS = (0.35, 0.25, 0.20, 0.15, 0.05)
CODES = {"tmall": "TB", "pdd": "PDD", "douyin": "DY", "jd": "JD", "youzan": "MINI"}
RAW = {
    "tmall": "{:018d}",
    "jd": "{:012d}",
    "pdd": "260209-{:015d}",
    "douyin": "{:019d}",
    "youzan": "E{:023d}",
}
WAREHOUSES = ("WH_SH_JIADING", "WH_GZ_BAIYUN", "WH_BJ_DAXING", "WH_CD_SHUANGLIU")
CARRIERS = ("SF", "ZTO", "YTO", "JD", "YUNDA", "EMS")
PAYMENTS = ("alipay", "wechat", "unionpay")
SKUS = tuple(f"SKU{i:04d}" for i in range(200))
CITIES = (
    ("广东", "广州"),
    ("广东", "深圳"),
    ("上海", "上海"),
    ("北京", "北京"),
    ("浙江", "杭州"),
    ("四川", "成都"),
)
FOUR_ROLES = ("channel", "payment", "erp", "wms")
ALL_FOUR = sum(ROLE_BITS[r] for r in FOUR_ROLES)
COLUMNS = [c.name for c in orders.c]


def generate(
    n: int, now: datetime, days: float = 3.0, seed: int = 7, diff_ratio: float = 0.005, gap: int = 0
) -> dict:
    """Column arrays of n orders; `gap` Tmall/Alipay orders of the last 3 h never reach the WMS."""
    rng = np.random.default_rng(seed)
    now_ms = to_ms(now)
    span = int(days * 86_400_000)
    created = np.sort(now_ms - rng.integers(20 * 60_000, span, n))
    paid = created + rng.integers(5_000, 600_000, n)
    channel = rng.choice(len(CHANNELS), n, p=CHANNEL_WEIGHTS)
    roles = np.full(n, ALL_FOUR, dtype=np.int64)
    differ = rng.random(n) < diff_ratio
    dropped = rng.integers(0, 4, n)
    roles[differ] &= ~np.array([ROLE_BITS[r] for r in FOUR_ROLES])[dropped[differ]]
    payment = rng.choice(len(PAYMENTS), n, p=(0.55, 0.40, 0.05))
    amount = rng.integers(990, 99_900, n)
    paid_amount = amount.copy()
    odd = rng.random(n) < 0.0005
    paid_amount[odd] -= 500
    wms_at = paid + rng.integers(20_000, 1_500_000, n)
    no_wms = (roles & ROLE_BITS["wms"]) == 0
    if gap:
        recent = np.flatnonzero(
            (paid > now_ms - 3 * 3_600_000) & (paid < now_ms - 20 * 60_000) & (channel == 0) & (payment == 0)
        )
        chosen = recent[-gap:] if len(recent) >= gap else recent
        no_wms[chosen] = True
        roles[chosen] &= ~ROLE_BITS["wms"]
    picked = wms_at + rng.integers(300_000, 7_200_000, n)
    packed = picked + rng.integers(60_000, 600_000, n)  # within the 12-minute picked timeout
    shipped = packed + rng.integers(1_800_000, 28_800_000, n)
    delivered = shipped + rng.integers(14_400_000, 129_600_000, n)
    return {
        "n": n,
        "created": created,
        "paid": paid,
        "channel": channel,
        "roles": roles,
        "payment": payment,
        "amount": amount,
        "paid_amount": paid_amount,
        "wms": np.where(no_wms, -1, wms_at),
        "picked": np.where(no_wms | (picked > now_ms), -1, picked),
        "packed": np.where(no_wms | (packed > now_ms), -1, packed),
        "shipped": np.where(no_wms | (shipped > now_ms), -1, shipped),
        "delivered": np.where(no_wms | (delivered > now_ms), -1, delivered),
        "warehouse": rng.integers(0, len(WAREHOUSES), n),
        "carrier": rng.integers(0, len(CARRIERS), n),
        "sku": rng.integers(0, len(SKUS), n),
        "city": rng.integers(0, len(CITIES), n),
        "now_ms": now_ms,
    }


def raw_id(channel: str, i: int) -> str:
    return RAW[channel].format(10_000_000 + i)


def global_id(channel: str, created_ms: int, i: int) -> str:
    day = datetime.fromtimestamp(created_ms / 1000, UTC).strftime("%Y%m%d")
    return f"{CODES[channel]}_{day}_{i:07d}"


def rows(world: dict):
    """Orders rows (tuples in orders-column order), lazily."""
    pos = {c: i for i, c in enumerate(COLUMNS)}
    ms = ("created", "paid", "wms", "picked", "packed", "shipped", "delivered")
    states = ("created", "paid", "wms_received", "picked", "packed", "shipped", "delivered")
    cols = {
        k: world[k].tolist()
        for k in (
            *ms,
            "channel",
            "roles",
            "payment",
            "amount",
            "paid_amount",
            "warehouse",
            "carrier",
            "sku",
            "city",
        )
    }
    now_ms = world["now_ms"]
    for i in range(world["n"]):
        row = [None] * len(COLUMNS)
        ch = CHANNELS[cols["channel"][i]]
        created = cols["created"][i]
        row[pos["global_id"]] = global_id(ch, created, i)
        row[pos["channel"]] = ch
        row[pos["raw_order_id"]] = raw_id(ch, i)
        state, at = "paid", cols["paid"][i]
        for key, s in zip(ms, states, strict=True):
            value = cols[key][i]
            if value >= 0:
                row[pos[f"{s}_at"]] = value
                state, at = s, value
        row[pos["state"]], row[pos["state_rank"]], row[pos["state_at"]] = state, RANK[state], at
        row[pos["amount_fen"]] = cols["amount"][i]
        row[pos["paid_amount_fen"]] = cols["paid_amount"][i]
        row[pos["warehouse"]] = WAREHOUSES[cols["warehouse"][i]]
        row[pos["carrier"]] = CARRIERS[cols["carrier"][i]]
        row[pos["sku"]] = SKUS[cols["sku"][i]]
        row[pos["payment_method"]] = PAYMENTS[cols["payment"][i]]
        row[pos["province"]], row[pos["city"]] = CITIES[cols["city"][i]]
        row[pos["first_seen_at"]] = created
        row[pos["seen_roles"]] = cols["roles"][i]
        row[pos["duplicate_records"]] = 0
        row[pos["last_event_at"]] = at
        row[pos["updated_at"]] = now_ms
        yield tuple(row)


def load(engine, world: dict, chunk: int = 20_000) -> None:
    """Write the world's orders rows through the driver (one transaction per chunk)."""
    marks = ", ".join("?" if engine.dialect.paramstyle == "qmark" else "%s" for _ in COLUMNS)
    sql = f"INSERT INTO orders ({', '.join(COLUMNS)}) VALUES ({marks})"
    batch = []
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        for row in rows(world):
            batch.append(row)
            if len(batch) >= chunk:
                cursor.executemany(sql, batch)
                batch.clear()
        if batch:
            cursor.executemany(sql, batch)
        cursor.close()
