"""The diagnosis names the injected cause, with evidence and the affected orders (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from diagnose_world import T0, World

from collectors.errors import AuthExpired, RateLimited
from diagnose import CAUSES, diagnose


def run(store, config, now, **kw):
    return diagnose(store.engine, config, now, live=False, store=store, **kw)


def gid(store, channel: str, raw: str) -> str:
    return store.global_id(channel, raw)


def test_clean_world_names_no_cause(store, config):
    world = World()
    for i in range(120):
        world.order(i, "tmall" if i % 3 else "jd")
    now = T0 + timedelta(hours=3)
    world.write(store, now)
    result = run(store, config, now)
    assert result.causes == []
    assert result.summary_line() == "自动诊断：未发现明确根因"


def test_push_gap_is_named_with_its_orders_start_and_concentration(store, config):
    world = World()
    gap = []
    for i in range(200):
        channel = "jd" if i % 4 == 0 else "tmall"
        dropped = channel == "tmall" and i >= 120
        raw = world.order(i, channel, wms=not dropped)
        if dropped:
            gap.append(raw)
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    result = run(store, config, now, kpi="sync_success_ratio")
    top = result.causes[0]
    assert top.cause == "wms_push_gap"
    assert set(top.orders) >= {gid(store, "tmall", r) for r in gap}
    facts = {e["fact"]: e for e in top.evidence}
    assert facts["unreached_orders"]["count"] == len(gap)
    assert facts["gap_start"]["at"] == "2026-02-12 20:01:30"  # order 121 (120 is JD) paid 18:00:30 + 121 min
    where = {(e["dimension"], e["value"]) for e in top.evidence if e.get("fact") == "concentration"}
    assert ("channel", "tmall") in where  # every order pays by Alipay here: not a distinction
    assert "天猫" in top.summary
    assert result.summary_line().startswith("自动诊断：ERP→WMS 推送静默中断")


def test_fast_cancels_name_a_cancel_rule(store, config):
    world = World()
    for i in range(150):
        world.order(i, cancel_after=timedelta(seconds=20) if 60 <= i < 90 else None)
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    top = run(store, config, now).causes[0]
    assert top.cause == "cancel_misfire"
    assert len(top.orders) == 30


def test_amount_mismatch_names_price_change_by_sku(store, config):
    world = World()
    for i in range(150):
        changed = i % 5 == 0
        world.order(i, sku="SKU_LIVE" if changed else f"SKU{i % 9}", paid_amount=500 if changed else None)
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    top = run(store, config, now).causes[0]
    assert top.cause == "price_mismatch"
    assert any(e.get("fact") == "concentration" and e["value"] == "SKU_LIVE" for e in top.evidence)


def test_duplicate_callbacks_show_repeats_and_timing(store, config):
    world = World()
    for i in range(150):
        world.order(i, payment_repeats=1 if i % 10 == 0 else 0)
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    top = run(store, config, now).causes[0]
    assert top.cause == "duplicate_callbacks"
    timing = next(e for e in top.evidence if e.get("fact") == "repeat_interval")
    assert timing["median_s"] == 20.0
    assert next(e for e in top.evidence if e.get("fact") == "repeat_sources")["sources"] == {"alipay": 15}


def test_rejected_key_names_credentials(store, config):
    world = World()
    for i in range(60):
        world.order(i)
    now = T0 + timedelta(hours=2)
    world.write(store, now)
    for k in range(4):
        store.record_poll_failure("jd", AuthExpired("jd", "invalid access_token"), now + timedelta(minutes=k))
    result = run(store, config, now + timedelta(minutes=5))
    assert result.causes[0].cause == "api_key_rotated"
    assert "凭证" in result.causes[0].summary


def test_rate_limiting_named_from_error_classes(store, config):
    world = World()
    for i in range(60):
        world.order(i)
    now = T0 + timedelta(hours=2)
    world.write(store, now)
    for k in range(5):
        store.record_poll_failure(
            "pdd", RateLimited("pdd", "40002 too many requests"), now + timedelta(minutes=k)
        )
    assert run(store, config, now + timedelta(minutes=6)).causes[0].cause == "api_rate_limited"


def test_lost_payments_name_the_intake_with_the_payment_ids(store, config):
    world = World()
    lost = []
    for i in range(180):
        outage = 60 <= i < 100
        raw = world.order(i, channel_api=not outage, wms=not outage)
        if outage:
            lost.append(raw)
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    top = run(store, config, now, kpi="order_loss_ratio").causes[0]
    assert top.cause == "intake_outage"
    ids = next(e for e in top.evidence if e.get("fact") == "missing_payment_ids")["ids"]
    assert sorted(ids) == sorted(lost)


def test_local_time_labelled_utc_is_clock_skew_not_a_stall(store, config):
    world = World()
    for i in range(100):
        world.order(i, wms_shift=timedelta(hours=-8) if i % 2 else timedelta(0))
    now = T0 + timedelta(hours=3)
    world.write(store, now)
    result = run(store, config, now)
    top = result.causes[0]
    assert top.cause == "timezone_skew"
    offset = next(e for e in top.evidence if e.get("fact") == "offset")
    assert offset["source"] == "wms" and offset["whole_hours"] == -8
    assert "pick_pack_stall" not in [c.cause for c in result.causes]


def test_pick_pack_stall_names_the_warehouse(store, config):
    world = World()
    for i in range(120):
        held = i % 3 == 0
        world.order(
            i,
            warehouse="WH_GZ" if held else ("WH_SH" if i % 2 else "WH_BJ"),
            stop_at="picked" if held else None,
        )
    now = T0 + timedelta(hours=3)
    world.write(store, now)
    top = run(store, config, now, kpi="stuck_ratio", labels={"state": "picked"}).causes[0]
    assert top.cause == "pick_pack_stall"
    conc = next(e for e in top.evidence if e.get("fact") == "concentration")
    assert (conc["dimension"], conc["value"]) == ("warehouse", "WH_GZ")


def test_every_cause_is_a_catalog_id_and_probes_are_timed(store, config):
    world = World()
    for i in range(100):
        world.order(i, wms=i < 60, cancel_after=timedelta(seconds=5) if i % 9 == 0 else None)
    now = T0 + timedelta(hours=3)
    world.write(store, now)
    result = run(store, config, now)
    assert result.causes and all(c.cause in CAUSES for c in result.causes)
    assert [c.score for c in result.causes] == sorted((c.score for c in result.causes), reverse=True)
    assert {"sync_gap", "connectivity", "field_filter", "rule_hits"} <= set(result.probe_seconds)
    assert result.to_dict()["causes"][0]["cause"] == result.causes[0].cause


def test_orders_filtered_for_several_reasons_name_field_filter_loss(store, config):
    config = config.model_copy(
        update={
            "reconcile": config.reconcile.model_copy(update={"roles": ("channel", "payment", "erp", "wms")})
        }
    )
    world = World()
    for i in range(300):
        if i % 40 == 7:  # coupon detail missing: the ERP filtered it
            world.order(i, paid_amount=500, wms=False)
        elif i % 40 == 17:  # created 1 ms after the previous order: taken for a duplicate
            world.order(i, created=T0 + timedelta(seconds=60 * (i - 1), milliseconds=1), wms=False)
        elif i % 100 == 33:  # address changed, never pushed on to the WMS
            world.order(i, erp=True, wms=False)
        else:
            world.order(i, erp=True)
    now = T0 + timedelta(hours=6)
    world.write(store, now)
    result = run(store, config, now)
    top = result.causes[0]
    assert top.cause == "field_filter_loss"
    groups = {e["reason"]: e["orders"] for e in top.evidence if e.get("fact") == "difference_group"}
    assert groups == {"coupon_detail_missing": 8, "ms_duplicate": 8, "push_missing": 3}


def _erp_world(lost, pushed_not) -> tuple[World, dict[str, set[str]]]:
    """600 orders through the ERP (every 20: 12 Tmall, 4 JD, 3 Douyin, 1 Youzan; SKUs CAP-… on 1 in
    20); `lost(i, channel, sku)` names the filter that kept order i from the ERP's pull, if any;
    `pushed_not(i, channel)`: the ERP has it, the WMS never got it."""
    world, raws = World(), {}
    skus = ("TS-RED-M", "HD-GRY-L", "PT-BLK-32", "BAG-CNV-01")
    for i in range(600):
        k = i % 20
        channel = "tmall" if k < 12 else "jd" if k < 16 else "douyin" if k < 19 else "youzan"
        method = {"tmall": "alipay", "youzan": "wechat"}.get(channel)
        method = method or ("wechat" if (i // 40 + i) % 2 else "alipay")
        sku = "CAP-RED-F" if i % 40 in (5, 13) else skus[(i // 20) % 4]
        why = lost(i, channel, sku)
        unpushed = pushed_not(i, channel)
        raw = world.order(
            i, channel, erp=why is None, wms=why is None and not unpushed, sku=sku, payment_method=method
        )
        raws.setdefault(why or ("unpushed" if unpushed else "fine"), set()).add((channel, raw))
    return world, raws


def test_orders_the_erp_never_pulled_name_its_filters_by_field_signature(store, config):
    def lost(i, channel, sku):
        if i >= 300 and channel == "youzan":
            return "youzan"
        if i >= 300 and sku.startswith("CAP-"):
            return "cap"
        if i >= 500 and channel == "douyin":
            return "douyin"
        return None

    world, raws = _erp_world(lost, lambda i, channel: False)
    now = T0 + timedelta(hours=11)
    world.write(store, now)
    result = run(store, config, now, kpi="sync_success_ratio")
    top = result.causes[0]
    assert top.cause == "field_filter_loss", [(c.cause, c.score) for c in result.causes]
    assert "wms_push_gap" not in {c.cause for c in result.causes}  # the ERP never had them
    ids = {name: {gid(store, ch, r) for ch, r in raws[name]} for name in ("youzan", "cap", "douyin")}
    finding = next(f for f in result.findings if f.probe == "erp_pull")
    facts = [e for e in finding.evidence if e["fact"] == "field_signature"]
    assert [(e["fields"], e["orders"]) for e in facts] == [
        ({"channel": "youzan", "payment_method": "wechat"}, 15),
        ({"sku_prefix": "CAP-"}, 14),
        ({"channel": "douyin"}, 15),
    ]
    assert [set(e["order_ids"]) for e in facts] == [ids["youzan"], ids["cap"], ids["douyin"]]
    assert set(top.orders) >= ids["youzan"] | ids["cap"] | ids["douyin"]
    head = {e["fact"]: e for e in finding.evidence}
    assert head["erp_never_pulled"]["count"] == 44 and head["erp_pulled_the_others"]["pulled_share"] >= 0.8
    assert head["erp_source"]["up"] is True
    assert "微信小程序 · 支付方式 wechat 15 单" in finding.title and "SKU 前缀 CAP- 14 单" in finding.title


def test_orders_the_erp_has_but_the_wms_never_got_stay_a_push_gap(store, config):
    world, raws = _erp_world(lambda i, channel, sku: None, lambda i, channel: i >= 400 and channel == "tmall")
    now = T0 + timedelta(hours=11)
    world.write(store, now)
    result = run(store, config, now, kpi="sync_success_ratio")
    assert result.causes[0].cause == "wms_push_gap", [(c.cause, c.score) for c in result.causes]
    assert "field_filter_loss" not in {c.cause for c in result.causes}
    assert not [f for f in result.findings if f.probe == "erp_pull"]
    facts = {e["fact"]: e for e in result.causes[0].evidence}
    assert facts["unreached_orders"]["count"] == len(raws["unpushed"]) == 120


def test_rule_hits_name_the_rules_that_would_fire_and_their_orders(store, config):
    from metrics.kpi import KpiEngine
    from metrics.snapshot import save_snapshot

    world = World()
    gap = [world.order(i, wms=i < 60) for i in range(100)][60:]
    now = T0 + timedelta(hours=3)
    world.write(store, now)
    save_snapshot(store.engine, KpiEngine.from_config(store.engine, config.kpi, store=store).compute(now))
    [hits] = [f for f in run(store, config, now).findings if f.probe == "rule_hits"]
    would = {e["rule"]: e for e in hits.evidence if e["fact"] == "would_fire"}
    assert would["sync_ratio_low"]["labels"] == {} and would["sync_ratio_low"]["orders"] == 40
    assert set(hits.orders) == {gid(store, "tmall", raw) for raw in gap}
    assert "sync_ratio_low" in hits.title


def test_tracking_stall_names_the_carrier(store, config):
    """Parcels in transit for hours, most still scanned (their newest scan is recent), a third not
    since T0 + 1 h: stuck from the newest scan, concentrated on one carrier, the feed still alive."""
    assert config.kpi.stuck_timeouts["in_transit"] == timedelta(hours=4)  # "no tracking update 4 h"
    world, stalled_ids = World(), []
    for i in range(150):
        stalled = i % 3 == 0
        carrier = "ZTO" if stalled else ("SF" if i % 2 else "YTO")
        last_scan = T0 + timedelta(hours=1) if stalled else T0 + timedelta(hours=7, minutes=i % 50)
        raw = world.order(i, transit=(carrier, last_scan))
        if stalled:
            stalled_ids.append(raw)
    now = T0 + timedelta(hours=8)
    world.write(store, now)
    top = run(store, config, now, kpi="stuck_ratio", labels={"state": "in_transit"}).causes[0]
    assert top.cause == "tracking_stall" and top.score >= 0.8
    conc = next(e for e in top.evidence if e.get("fact") == "concentration")
    assert (conc["dimension"], conc["value"]) == ("carrier", "ZTO")
    assert sorted(top.orders) == sorted(gid(store, "tmall", raw) for raw in stalled_ids)
    scans = next(e for e in top.evidence if e.get("fact") == "last_scans")
    assert scans["earliest"] == scans["latest"] == "2026-02-12 19:00:00"  # T0 + 1 h in Shanghai
    feed = next(e for e in top.evidence if e.get("fact") == "tracking_feed")
    assert feed["parcels_updated_within_timeout"] == feed["elsewhere"] == 100
    assert {c["carrier"] for c in feed["by_carrier"]} == {"SF", "YTO"}
    assert "轨迹仍在更新" in top.summary


def test_a_packing_stall_that_has_cleared_is_still_named_with_its_warehouse(store, config):
    world = World()
    for i in range(150):
        stalled = i % 3 == 0 and 30 <= i < 120
        warehouse = "WH_GZ" if i % 3 == 0 else ("WH_SH" if i % 2 else "WH_BJ")
        world.order(
            i, warehouse=warehouse, pack_delay=timedelta(minutes=40) if stalled else timedelta(minutes=4)
        )
    now = T0 + timedelta(hours=5)  # every order is packed by now: nothing is stuck any more
    world.write(store, now)
    top = run(store, config, now).causes[0]
    assert top.cause == "pick_pack_stall"
    assert next(e for e in top.evidence if e.get("fact") == "slow_packing")["count"] == 30
    conc = next(e for e in top.evidence if e.get("fact") == "concentration" and e["dimension"] != "hour")
    assert (conc["dimension"], conc["value"]) == ("warehouse", "WH_GZ")
    assert "WH_GZ" in top.summary and "拣货后超时才打包" in top.summary
