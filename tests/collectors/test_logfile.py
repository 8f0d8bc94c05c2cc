"""The JSON-lines log collector over the simulator's payment notify logs."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from collectors.errors import SourceUnavailable
from collectors.logfile import FilePosition, LogFileCollector
from sentinel.config import SourceConfig
from sim.payments import PaymentLog, received_at
from sim.scenario import load_scenario
from sim.world import World

NOW = datetime(2026, 2, 13, tzinfo=UTC)
CHANNEL_MAP = {c: c for c in ("tmall", "jd", "pdd", "douyin", "youzan")}
ALIPAY_MAPPING = {
    "order_id": "params.out_trade_no",
    "channel": "shop",
    "channel_map": CHANNEL_MAP,
    "status": "params.trade_status",
    "status_map": {"TRADE_SUCCESS": "paid", "TRADE_FINISHED": "ignore", "TRADE_CLOSED": "closed"},
    "status_time": "params.gmt_payment",
    "created_at": "params.gmt_create",
    "amount": "params.total_amount",
    "amount_unit": "yuan",
    "dims": {"payment_method": "provider"},
}
WECHAT_MAPPING = {
    "order_id": "resource.out_trade_no",
    "channel": "shop",
    "channel_map": CHANNEL_MAP,
    "status": "event_type",
    "status_map": {"TRANSACTION.SUCCESS": "paid", "REFUND.SUCCESS": "refunded"},
    "status_time": "resource.success_time",
    "time_format": "iso",
    "amount": "resource.amount.total",
    "amount_unit": "fen",
    "dims": {"payment_method": "provider"},
}


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(load_scenario("clean_day", scale=0.05))


def collector(path, mapping=ALIPAY_MAPPING, batch_lines=None) -> LogFileCollector:
    cfg = SourceConfig.model_validate(
        {"kind": "logfile", "path": str(path), "page_size": 5, "mapping": mapping}
    )
    return LogFileCollector("alipay", cfg, batch_lines=batch_lines)


def drain(col: LogFileCollector, cursor: str | None) -> tuple[list, str | None]:
    batches = list(col.poll(cursor, NOW))
    for b in batches:
        assert b.cursor is not None  # every batch carries its position
        cursor = b.cursor
    return batches, cursor


def paid_ids(world: World, method: str, until: datetime) -> set[str]:
    return {
        o.raw_id
        for o in world.orders
        if "paid" in o.events and o.payment_method == method and received_at(o) <= until
    }


def keys(batches) -> list[str]:
    return [o.record_key for b in batches for o in b.observations]


def test_maps_alipay_lines_in_batches(tmp_path, world):
    PaymentLog(tmp_path).sync(world, world.end)
    col = collector(tmp_path / "alipay_notify.log")
    batches, cursor = drain(col, None)
    assert all(b.records <= 50 for b in batches) and len(batches) > 1
    obs = [o for b in batches for o in b.observations]
    assert {o.raw_order_id for o in obs} == paid_ids(world, "alipay", world.end)
    orders = {o.raw_id: o for o in world.orders}
    for o in obs:
        truth = orders[o.raw_order_id]
        assert o.record_key == f"{o.raw_order_id}|paid" and o.state == "paid" and o.channel == truth.channel
        assert o.at == truth.events["paid"] and o.amount_fen == truth.amount_fen
        assert o.created_at == truth.created_at and o.dims == {"payment_method": "alipay"}
    assert batches[-1].max_event_at == max(o.at for o in obs)
    position = FilePosition.loads(cursor)
    assert position.offset == position.size == os.path.getsize(tmp_path / "alipay_notify.log")
    assert list(col.poll(cursor, NOW)) == []  # nothing new


def test_maps_wechatpay_lines(tmp_path, world):
    PaymentLog(tmp_path).sync(world, world.end)
    col = collector(tmp_path / "wechatpay_notify.log", WECHAT_MAPPING)
    batches, _ = drain(col, None)
    obs = [o for b in batches for o in b.observations]
    assert {o.raw_order_id for o in obs} == paid_ids(world, "wechat", world.end)
    assert not [q for b in batches for q in b.quarantined]
    assert {o.dims["payment_method"] for o in obs} == {"wechatpay"}


def test_resumes_at_the_cursor(tmp_path, world):
    log = PaymentLog(tmp_path)
    middle = world.start + timedelta(hours=12)
    log.sync(world, middle)
    col = collector(tmp_path / "alipay_notify.log")
    first, cursor = drain(col, None)
    log.sync(world, world.end)
    second, _ = drain(col, cursor)
    assert set(keys(first)).isdisjoint(keys(second))
    assert {k.split("|")[0] for k in keys(first) + keys(second)} == paid_ids(world, "alipay", world.end)
    assert FilePosition.loads(second[0].cursor).line > FilePosition.loads(cursor).line


def test_rotation_mid_stream_loses_and_repeats_nothing(tmp_path, world):
    log = PaymentLog(tmp_path)
    path = tmp_path / "alipay_notify.log"
    col = collector(path, batch_lines=7)
    times = sorted(received_at(o) for o in world.orders if "paid" in o.events)
    seen: list[str] = []
    cursor = None
    for i, t in enumerate(times[::15]):
        log.sync(world, t)
        if i % 3 == 1:
            log.sync(world, t + timedelta(minutes=20))  # lines written after our last read...
            log.rotate("alipay")  # ...end up in the rotated file
        if i % 3 == 2:
            log.sync(world, t + timedelta(minutes=40))
        batches, cursor = drain(col, cursor)
        seen += keys(batches)
    log.sync(world, world.end)
    batches, cursor = drain(col, cursor)
    seen += keys(batches)
    assert len(seen) == len(set(seen))
    assert {k.split("|")[0] for k in seen} == paid_ids(world, "alipay", world.end)


def test_partial_line_waits_for_its_newline(tmp_path, world):
    log = PaymentLog(tmp_path)
    log.sync(world, world.end)
    path = tmp_path / "alipay_notify.log"
    col = collector(path)
    _, cursor = drain(col, None)
    line = json.dumps(
        {
            "received_at": NOW.isoformat(),
            "provider": "alipay",
            "shop": "tmall",
            "params": {
                "out_trade_no": "3999999999999999999",
                "trade_status": "TRADE_SUCCESS",
                "gmt_payment": "2026-02-13 08:00:00",
                "total_amount": "10.00",
            },
        }
    )
    log.write_raw("alipay", line[:40])
    assert list(col.poll(cursor, NOW)) == []  # incomplete: not consumed
    log.write_raw("alipay", line[40:] + "\n")
    batches, cursor = drain(col, cursor)
    assert keys(batches) == ["3999999999999999999|paid"]
    assert FilePosition.loads(cursor).offset == os.path.getsize(path)


def test_rotated_file_partial_last_line_completes_when_the_writer_moves_on(tmp_path, world):
    log = PaymentLog(tmp_path)
    log.write_raw("alipay", '{"provider": "alipay"')
    col = collector(tmp_path / "alipay_notify.log")
    _, cursor = drain(col, None)
    log.rotate("alipay")
    assert list(col.poll(cursor, NOW)) == []  # the new file is not there: the writer may still append
    log.sync(world, world.end)
    batches, _ = drain(col, cursor)
    (bad,) = [q for b in batches for q in b.quarantined]
    assert bad.reason.startswith("line 1 is not valid JSON") and bad.raw == '{"provider": "alipay"'
    assert {k.split("|")[0] for k in keys(batches)} == paid_ids(world, "alipay", world.end)


def test_garbage_and_unmappable_lines_are_quarantined(tmp_path, world):
    log = PaymentLog(tmp_path)
    times = sorted(
        received_at(o) for o in world.orders if o.payment_method == "alipay" and "paid" in o.events
    )
    log.sync(world, times[2])
    log.write_raw("alipay", "<html>502 Bad Gateway</html>\n\n")
    log.write_raw(
        "alipay", json.dumps({"provider": "alipay", "shop": "ebay", "params": {"out_trade_no": "X1"}}) + "\n"
    )
    log.write_raw("alipay", b"\xff\xfe".decode("latin-1") + "\n")
    log.sync(world, world.end)
    batches, _ = drain(collector(tmp_path / "alipay_notify.log"), None)
    quarantined = [q for b in batches for q in b.quarantined]
    assert [(q.field, q.reason.split(":")[0]) for q in quarantined] == [
        ("$", "line 4 is not valid JSON"),
        ("shop", "line 6"),
        ("$", "line 7 is not valid JSON"),
    ]
    assert quarantined[1].reason.startswith("line 6: field shop: ")
    assert quarantined[0].raw == "<html>502 Bad Gateway</html>" and quarantined[0].record_key.endswith(":4")
    assert quarantined[1].record_key == "X1" and "unmapped channel value 'ebay'" in quarantined[1].reason
    assert {k.split("|")[0] for k in keys(batches)} == paid_ids(world, "alipay", world.end)


def test_truncation_restarts_at_the_beginning(tmp_path, world):
    log = PaymentLog(tmp_path)
    log.sync(world, world.end)
    path = tmp_path / "alipay_notify.log"
    col = collector(path)
    _, cursor = drain(col, None)
    path.write_text('{"provider": "alipay", "shop": "tmall", "params": {}}\n')  # truncated in place
    batches, cursor = drain(col, cursor)
    (q,) = [q for b in batches for q in b.quarantined]
    assert q.field == "params.out_trade_no" and FilePosition.loads(cursor).line == 1


def test_missing_file(tmp_path, world):
    col = collector(tmp_path / "alipay_notify.log")
    assert list(col.poll(None, NOW)) == []  # nothing written yet
    PaymentLog(tmp_path).sync(world, world.end)
    _, cursor = drain(col, None)
    (tmp_path / "alipay_notify.log").unlink()
    with pytest.raises(SourceUnavailable, match="is gone"):
        list(col.poll(cursor, NOW))
    assert list(col.poll("not json", NOW)) == []
