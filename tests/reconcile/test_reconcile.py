"""Reconciliation across payment, channel, ERP and WMS from the store's keys (SQLite and PostgreSQL):
the seeds' 47 missing orders by reason, no false differences from formats, CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from collectors.mapping import MappingConfig, RecordMapper
from collectors.types import Batch, Observation
from diagnose.sql import ReadOnlySql
from reconcile import reconcile, to_csv
from reconcile.indexes import ensure_indexes, has_indexes, role_mask
from reconcile.signatures import difference_signatures, group_by_signature, sku_prefix
from store.db import init_schema, make_engine
from store.store import ChannelIdentity, Store

T0 = datetime(2026, 2, 18, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
FOUR = ("channel", "payment", "erp", "wms")
ROLES = {"douyin": "channel", "tmall": "channel", "pay": "payment", "erp": "erp", "wms": "wms"}


@pytest.fixture
def store(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    channels = {"douyin": ChannelIdentity("DY", r"\d{19}"), "tmall": ChannelIdentity("TB", r"\d{18,19}")}
    yield Store(engine, channels, "Asia/Shanghai", ROLES)
    engine.dispose()


def observe(
    source: str, raw: str, state: str, at: datetime, amount: int | None, created: datetime | None = None
):
    return Observation(source, f"{raw}|{state}", "douyin", raw, state, at, {}, amount, created)


def test_the_seeds_47_missing_orders_grouped_by_reason(store):
    """1,284 Douyin orders, 1,237 in the ERP: 23 without coupon detail, 19 created within 3 ms of
    another order (taken for duplicates), 5 whose address change never reached the WMS."""
    batches: dict[str, list[Observation]] = {s: [] for s in ("douyin", "pay", "erp", "wms")}
    coupon, twins, unpushed = set(), set(), set()
    for i in range(1284):
        raw = f"{7_000_000_000_000_000_000 + i}"
        created = T0 + timedelta(seconds=40 * i)
        if 300 <= i < 319:  # a twin of the previous order, 1-2 ms later
            created = T0 + timedelta(seconds=40 * (i - 100), milliseconds=1 + i % 2)
            twins.add(raw)
        paid = created + timedelta(seconds=30)
        amount, paid_amount = 5990, 5990
        if 600 <= i < 623:
            paid_amount = 4990  # a 10-yuan coupon the channel's order detail did not itemise
            coupon.add(raw)
        if 900 <= i < 905:
            unpushed.add(raw)
        batches["douyin"].append(observe("douyin", raw, "paid", paid, amount, created))
        batches["pay"].append(observe("pay", raw, "paid", paid, paid_amount))
        if raw not in coupon and raw not in twins:
            batches["erp"].append(observe("erp", raw, "erp_accepted", paid + timedelta(minutes=1), amount))
            if raw not in unpushed:
                batches["wms"].append(
                    observe("wms", raw, "wms_received", paid + timedelta(minutes=3), amount)
                )
    now = T0 + timedelta(days=1)
    store.ingest_many([Batch(s, observations=o) for s, o in batches.items()], now)

    scanned = reconcile(store.engine, now, roles=FOUR)
    ensure_indexes(store.engine, FOUR)  # the opt-in indexes give the same answer without the scan
    result = reconcile(store.engine, now, roles=FOUR)
    assert result.differences == scanned.differences and result.orders == scanned.orders
    with ReadOnlySql(store.engine) as sql:
        assert has_indexes(sql, role_mask(FOUR)) and not has_indexes(sql, role_mask(("channel", "wms")))
    assert result.orders == 1284
    assert len(result.differences) == 47
    assert dict(result.groups) == {"coupon_detail_missing": 23, "ms_duplicate": 19, "push_missing": 5}
    assert {d.raw_order_id for d in result.by_reason("coupon_detail_missing")} == coupon
    assert {d.raw_order_id for d in result.by_reason("ms_duplicate")} == twins
    assert {d.raw_order_id for d in result.by_reason("push_missing")} == unpushed
    assert len(result.missing_in("erp")) == 42 and len(result.missing_in("wms")) == 47
    assert result.ratio == pytest.approx(47 / 1284)


def test_formats_of_ids_amounts_and_times_make_no_difference(store):
    """The same orders as a channel API, a payment notify log and a WMS database write them: IDs as
    strings and as integers, yuan as "12.3", "12.30" and Decimal("12.300"), times in local text, ISO
    with milliseconds and naive datetimes. A string join of these would see every order differ."""
    channel = RecordMapper(
        "tmall",
        MappingConfig(order_id="tid_str", amount="payment", times={"paid": "pay_time"}),
        channel="tmall",
    )
    payment = RecordMapper(
        "pay",
        MappingConfig(
            order_id="out_trade_no", amount="total_amount", times={"paid": "gmt_payment"}, time_format="iso"
        ),
        channel="tmall",
    )
    wms = RecordMapper(
        "wms",
        MappingConfig(
            order_id="src_order_no",
            amount="receivable",
            channel="shop_no",
            channel_map={"TMALL01": "tmall"},
            times={"wms_received": "created"},
        ),
    )
    obs, naive = [], []
    for i in range(50):
        tid = 2026021800000000000 + i * 7919
        local = datetime(2026, 2, 18, 9, 0, 0) + timedelta(minutes=i)
        yuan = Decimal(1230 + i * 10) / 100  # 12.30, 12.40, ...
        obs += channel.map(
            {
                "tid_str": str(tid),
                "tid": float(tid),
                "payment": f"{yuan:.2f}",
                "pay_time": f"{local:%Y-%m-%d %H:%M:%S}",
            }
        )
        utc_ms = (local - timedelta(hours=8)).isoformat(timespec="milliseconds")
        obs += payment.map(
            {"out_trade_no": str(tid), "total_amount": str(yuan.normalize()), "gmt_payment": utc_ms + "Z"}
        )
        obs += wms.map(
            {
                "src_order_no": tid,
                "receivable": yuan.quantize(Decimal("0.001")),
                "shop_no": "TMALL01",
                "created": local + timedelta(minutes=5),
            }
        )
        naive.append(
            (str(float(tid)), f"{yuan:.2f}", str(yuan.normalize()), str(yuan.quantize(Decimal("0.001"))))
        )
    assert all(len({a, b, c}) == 3 for _, a, b, c in naive)  # as strings, no amount agrees
    assert any(f != str(2026021800000000000 + i * 7919) for i, (f, *_) in enumerate(naive))  # float IDs drift
    for source in ("tmall", "pay", "wms"):
        store.ingest(Batch(source, observations=[o for o in obs if o.source == source]), T0)

    result = reconcile(store.engine, T0 + timedelta(hours=3), roles=("channel", "payment", "wms"))
    assert result.orders == 50
    assert result.differences == []


@pytest.mark.parametrize("indexed", [False, True])
def test_whole_second_creation_times_are_no_millisecond_twins(store, indexed):
    """A channel writing whole seconds gives orders of the same second the same millisecond: a
    push gap among them is a push gap, not ERP de-duplication (the wms_push_gap false reason)."""
    batches: dict[str, list[Observation]] = {s: [] for s in ("douyin", "pay", "erp", "wms")}
    for i in range(30):
        raw = f"{7_200_000_000_000_000_000 + i}"
        created = T0 + timedelta(seconds=i // 3)  # three orders in each second, .000 each
        paid = created + timedelta(seconds=30)
        batches["douyin"].append(observe("douyin", raw, "paid", paid, 100, created))
        batches["pay"].append(observe("pay", raw, "paid", paid, 100))
        batches["erp"].append(observe("erp", raw, "erp_accepted", paid + timedelta(minutes=1), 100))
        if i % 2:  # every other order never reaches the WMS
            batches["wms"].append(observe("wms", raw, "wms_received", paid + timedelta(minutes=3), 100))
    now = T0 + timedelta(hours=2)
    store.ingest_many([Batch(s, observations=o) for s, o in batches.items()], now)
    if indexed:
        ensure_indexes(store.engine, FOUR)
    result = reconcile(store.engine, now, roles=FOUR)
    assert dict(result.groups) == {"push_missing": 15}


def test_lost_payments_early_cancels_recent_orders_and_amounts(store):
    batches: dict[str, list[Observation]] = {s: [] for s in ("douyin", "pay", "wms")}
    for i in range(40):
        raw = f"{7_100_000_000_000_000_000 + i}"
        paid = T0 + timedelta(minutes=i)
        if i < 3:  # the order service never took these payments
            batches["pay"].append(observe("pay", raw, "paid", paid, 100))
            continue
        batches["douyin"].append(observe("douyin", raw, "paid", paid, 100))
        batches["pay"].append(observe("pay", raw, "paid", paid, 90 if i == 5 else 100))
        if i in (7, 8):  # cancelled before the warehouse: the WMS need not have them
            batches["douyin"].append(observe("douyin", raw, "cancelled", paid + timedelta(minutes=5), None))
        elif i < 35:
            batches["wms"].append(observe("wms", raw, "wms_received", paid + timedelta(minutes=2), 100))
    now = T0 + timedelta(minutes=60)  # orders 30..39 were paid less than `settle` (30 min) ago
    store.ingest_many([Batch(s, observations=o) for s, o in batches.items()], now)

    result = reconcile(store.engine, now, roles=("channel", "payment", "wms"))
    assert result.orders == 31
    assert dict(result.groups) == {"payment_without_order": 3, "amount_mismatch": 1}
    mismatch = result.by_reason("amount_mismatch")[0]
    assert (mismatch.amount_fen, mismatch.paid_amount_fen) == (100, 90)
    assert result.by_reason("payment_without_order")[0].missing == ("channel", "wms")

    later = reconcile(store.engine, now + timedelta(hours=1), roles=("channel", "payment", "wms"))
    assert dict(later.groups)["missing_wms"] == 5  # 30..34 reached it; 35..39 never did

    rows = list(csv.DictReader(io.StringIO(to_csv(result).lstrip("\ufeff"))))
    assert [r["reason"] for r in rows] == [
        "amount_mismatch",
        "payment_without_order",
        "payment_without_order",
        "payment_without_order",
    ]
    assert (
        rows[0]["reason_zh"] == "各系统都有，实付金额与订单金额不符" and rows[1]["missing"] == "channel|wms"
    )


def test_orders_an_erp_never_pulled_are_grouped_by_the_field_values_they_share(store):
    """The ERP's pull filters from order 300 on: Tmall orders paid by WeChat, and SKUs "CAP-…";
    five more orders missing here and there share nothing. The missing_erp differences come out
    as one group per filter (the values its orders share against every order of the span)."""
    batches: dict[str, list[Observation]] = {s: [] for s in ("tmall", "douyin", "pay", "erp", "wms")}
    by_filter: dict[str, set[str]] = {"tmall_wechat": set(), "cap": set(), "scattered": set()}
    skus = ("TS-RED-M", "HD-GRY-L", "PT-BLK-32", "JK-KHK-L", "BAG-CNV-01")
    for i in range(600):
        raw = f"{7_300_000_000_000_000_000 + i}"
        channel = "tmall" if i % 4 < 2 else "douyin"
        method = "wechat" if i % 2 else "alipay"
        sku = {5: "CAP-RED-F", 8: "CAP-BLK-F"}.get(i % 10, skus[i % 5])
        created = T0 + timedelta(seconds=40 * i)
        paid = created + timedelta(seconds=30)
        if i >= 300 and channel == "tmall" and method == "wechat":
            by_filter["tmall_wechat"].add(raw)
        elif i >= 300 and sku.startswith("CAP-"):
            by_filter["cap"].add(raw)
        elif i in (12, 59, 102, 150, 223):
            by_filter["scattered"].add(raw)
        dims = {"sku": sku}
        batches[channel].append(
            Observation(channel, f"{raw}|paid", channel, raw, "paid", paid, dims, 990, created)
        )
        pay = {"payment_method": method}
        batches["pay"].append(Observation("pay", f"{raw}|paid", channel, raw, "paid", paid, pay, 990))
        if any(raw in ids for ids in by_filter.values()):
            continue
        batches["erp"].append(
            Observation(
                "erp", f"{raw}|erp", channel, raw, "erp_accepted", paid + timedelta(minutes=1), {}, 990
            )
        )
        batches["wms"].append(
            Observation(
                "wms", f"{raw}|wms", channel, raw, "wms_received", paid + timedelta(minutes=3), {}, 990
            )
        )
    now = T0 + timedelta(days=1)
    store.ingest_many([Batch(s, observations=o) for s, o in batches.items()], now)

    result = reconcile(store.engine, now, roles=FOUR)
    missing = sum(len(ids) for ids in by_filter.values())
    assert dict(result.groups) == {"missing_erp": missing}
    with ReadOnlySql(store.engine) as sql:
        (found,) = difference_signatures(sql, result)
    raw_of = {d.global_id: d.raw_order_id for d in result.differences}
    assert found.reason == "missing_erp" and found.orders == missing
    assert [g.shared for g in found.groups] == [
        {"channel": "tmall", "payment_method": "wechat"},
        {"sku_prefix": "CAP-"},
    ]
    assert {raw_of[g] for g in found.groups[0].orders} == by_filter["tmall_wechat"]
    assert {raw_of[g] for g in found.groups[1].orders} == by_filter["cap"]
    assert {raw_of[g] for g in found.ungrouped} == by_filter["scattered"]
    assert all(g.lift >= 3 for g in found.groups)
    assert found.groups[1].text() == "SKU 前缀 CAP-"


def test_a_few_leftovers_sharing_a_common_value_make_no_signature():
    # 3 missing Tmall orders among 800 Tmall and 200 other orders: Tmall is common, not a filter.
    population = [(("tmall", "alipay", "TS-RED-M"), 800), (("jd", "wechat", "HD-GRY-L"), 200)]
    missing = [(f"o{i}", ("tmall", "alipay", "TS-RED-M")) for i in range(3)]
    assert group_by_signature(missing, population) == ([], ["o0", "o1", "o2"])
    assert (sku_prefix("CAP-RED-F"), sku_prefix("SKU0001"), sku_prefix(None)) == ("CAP-", None, None)
