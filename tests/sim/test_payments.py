"""Payment notify logs written as the world's payments are received."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sim.payments import PaymentLog, received_at
from sim.scenario import load_scenario
from sim.world import World

BJ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(load_scenario("clean_day", scale=0.05))


def read(path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def test_alipay_lines_carry_the_notify_fields(tmp_path, world):
    log = PaymentLog(tmp_path)
    log.sync(world, world.end)
    lines = read(tmp_path / "alipay_notify.log")
    orders = {o.raw_id: o for o in world.orders}
    assert (
        len(lines) == sum(1 for o in world.orders if "paid" in o.events and o.payment_method == "alipay") > 0
    )
    for line in lines:
        p = line["params"]
        order = orders[p["out_trade_no"]]
        assert line["provider"] == "alipay" and line["shop"] == order.channel
        assert p["trade_status"] == "TRADE_SUCCESS" and p["notify_type"] == "trade_status_sync"
        assert re.fullmatch(r"\d{28}", p["trade_no"]) and p["trade_no"].startswith("2026021")
        assert re.fullmatch(r"2088\d{12}", p["buyer_id"]) and "****" in p["buyer_logon_id"]
        assert p["total_amount"] == f"{order.amount_fen / 100:.2f}"
        assert p["gmt_payment"] == order.events["paid"].astimezone(BJ).strftime("%Y-%m-%d %H:%M:%S")
        assert p["gmt_create"] == order.created_at.astimezone(BJ).strftime("%Y-%m-%d %H:%M:%S")
        got = datetime.fromisoformat(line["received_at"])
        assert got.utcoffset() == timedelta(0)
        assert timedelta(seconds=1) <= got - order.events["paid"] <= timedelta(seconds=3)
    received = [line["received_at"] for line in lines]
    assert received == sorted(received)


def test_wechatpay_lines_carry_the_decrypted_transaction(tmp_path, world):
    PaymentLog(tmp_path).sync(world, world.end)
    lines = read(tmp_path / "wechatpay_notify.log")
    orders = {o.raw_id: o for o in world.orders}
    assert lines
    for line in lines:
        r = line["resource"]
        order = orders[r["out_trade_no"]]
        assert order.payment_method == "wechat" and line["shop"] == order.channel
        assert line["provider"] == "wechatpay" and line["event_type"] == "TRANSACTION.SUCCESS"
        assert line["id"].startswith("EV-") and r["trade_state"] == "SUCCESS"
        assert re.fullmatch(r"4200\d{24}", r["transaction_id"])
        assert r["amount"] == {
            "total": order.amount_fen,
            "payer_total": order.amount_fen,
            "currency": "CNY",
            "payer_currency": "CNY",
        }
        assert datetime.fromisoformat(r["success_time"]) == order.events["paid"]
        assert r["success_time"].endswith("+08:00") and r["payer"]["openid"].startswith("o")


def test_sync_is_incremental_and_idempotent(tmp_path, world):
    log = PaymentLog(tmp_path)
    paid = sorted(received_at(o) for o in world.orders if "paid" in o.events)
    middle = paid[len(paid) // 2]
    first = log.sync(world, middle)
    assert first == len([t for t in paid if t <= middle])
    assert log.sync(world, middle) == 0
    assert log.sync(world, world.end) == len(paid) - first
    # A restarted writer finds what is already logged (also in the rotated file).
    log.rotate("alipay")
    assert PaymentLog(tmp_path).sync(world, world.end) == 0
    keys = [
        (line["provider"], (line.get("params") or line.get("resource"))["out_trade_no"])
        for name in ("alipay_notify.log.1", "wechatpay_notify.log")
        for line in read(tmp_path / name)
    ]
    assert len(keys) == len(set(keys)) == len(paid)


def test_rotate_starts_a_new_file(tmp_path, world):
    log = PaymentLog(tmp_path)
    paid = sorted(received_at(o) for o in world.orders if "paid" in o.events)
    log.sync(world, paid[10])
    before = read(tmp_path / "alipay_notify.log")
    rotated = log.rotate("alipay")
    assert rotated.name == "alipay_notify.log.1" and read(rotated) == before
    assert not (tmp_path / "alipay_notify.log").exists()
    log.sync(world, world.end)
    after = read(tmp_path / "alipay_notify.log")
    assert after and not {json.dumps(x) for x in after} & {json.dumps(x) for x in before}
