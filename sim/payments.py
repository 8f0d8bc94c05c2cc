"""Payment notify logs as a merchant's order service writes them: one JSON line per notify.

`alipay_notify.log` holds Alipay async notify parameters (reference §6.2); `wechatpay_notify.log`
holds WeChat Pay APIv3 envelopes with the decrypted transaction as `resource` (§7.3).
A line is written when the notify is received, 1-3 s after the payment.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sim.model import SimOrder
from sim.world import World

ZONE = ZoneInfo("Asia/Shanghai")
PROVIDERS = {"alipay": "alipay", "wechat": "wechatpay"}  # SimOrder.payment_method -> provider
FILES = {"alipay": "alipay_notify.log", "wechatpay": "wechatpay_notify.log"}
ALIPAY_APP_ID = "2021004112345678"
ALIPAY_SELLER_ID = "2088641234567890"
WECHAT_APP_ID = "wx5f3c2a1b9d8e7f60"
WECHAT_MCH_ID = "1612345678"
_OPENID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def _local(moment: datetime) -> str:
    return moment.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")


def _rng(order: SimOrder) -> random.Random:
    """Per-order randomness, stable whatever order the lines are written in."""
    digest = hashlib.sha256(f"{order.channel}|{order.raw_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def received_at(order: SimOrder) -> datetime:
    """When the merchant received the payment notify (the callback delay is 1-3 s)."""
    normal = 1 + _rng(order).random() * 2
    return order.events["paid"] + timedelta(
        seconds=normal if order.notify_delay is None else order.notify_delay
    )


def paid_amount(order: SimOrder) -> int:
    """What the payment notify says was paid (a price change the order system missed differs)."""
    return order.amount_fen if order.paid_amount_fen is None else order.paid_amount_fen


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def delivery_times(order: SimOrder) -> list[datetime]:
    """When each copy of the payment notify was received: the first, then any resends."""
    first = received_at(order)
    return [first, *(first + timedelta(seconds=delay) for delay in order.resends)]


def alipay_line(order: SimOrder, got: datetime | None = None) -> dict:
    """A notify as received at `got` (default: the first delivery); resends repeat the same params."""
    rng = _rng(order)
    paid, first = order.events["paid"], received_at(order)
    got = got or first
    amount = _yuan(paid_amount(order))
    day = paid.astimezone(ZONE).strftime("%Y%m%d")
    phone = f"1{rng.choice('3578')}{rng.randrange(10)}****{_digits(rng, 4)}"
    params = {
        "notify_time": _local(first),
        "notify_type": "trade_status_sync",
        "notify_id": f"{day}00222{_digits(rng, 21)}",
        "app_id": ALIPAY_APP_ID,
        "charset": "utf-8",
        "version": "1.0",
        "sign_type": "RSA2",
        "trade_no": f"{day}2200{_digits(rng, 16)}",
        "out_trade_no": order.raw_id,
        "buyer_id": f"2088{_digits(rng, 12)}",
        "buyer_logon_id": phone,
        "seller_id": ALIPAY_SELLER_ID,
        "trade_status": "TRADE_SUCCESS",
        "total_amount": amount,
        "receipt_amount": amount,
        "invoice_amount": amount,
        "buyer_pay_amount": amount,
        "point_amount": "0.00",
        "subject": f"订单 {order.raw_id}",
        "gmt_create": _local(order.created_at),
        "gmt_payment": _local(paid),
        "fund_bill_list": json.dumps([{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}]),
    }
    return {
        "received_at": got.astimezone(UTC).isoformat(),
        "provider": "alipay",
        "shop": order.channel,
        "params": params,
    }


def wechatpay_line(order: SimOrder, got: datetime | None = None) -> dict:
    rng = _rng(order)
    paid, first = order.events["paid"], received_at(order)
    got = got or first
    day = paid.astimezone(ZONE).strftime("%Y%m%d")
    resource = {
        "appid": WECHAT_APP_ID,
        "mchid": WECHAT_MCH_ID,
        "out_trade_no": order.raw_id,
        "transaction_id": f"4200{_digits(rng, 4)}{day}{_digits(rng, 12)}",
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": rng.choice(("OTHERS", "CMB_DEBIT", "ICBC_DEBIT", "CCB_CREDIT")),
        "attach": "",
        "success_time": paid.astimezone(ZONE).isoformat(timespec="seconds"),
        "payer": {"openid": "o" + "".join(rng.choice(_OPENID_CHARS) for _ in range(27))},
        "amount": {
            "total": paid_amount(order),
            "payer_total": paid_amount(order),
            "currency": "CNY",
            "payer_currency": "CNY",
        },
    }
    return {
        "received_at": got.astimezone(UTC).isoformat(),
        "provider": "wechatpay",
        "shop": order.channel,
        "id": f"EV-{first.astimezone(ZONE):%Y%m%d%H%M%S}{_digits(rng, 10)}",
        "create_time": first.astimezone(ZONE).isoformat(timespec="seconds"),
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    }


LINE_MAKERS = {"alipay": alipay_line, "wechatpay": wechatpay_line}


class PaymentLog:
    """Appends notify lines to `<directory>/<provider>_notify.log` as payments are received."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._world_id: int | None = None
        self._queue: list[tuple[datetime, int, int]] = []  # (received_at, order index, copy), sorted
        self._times: list[datetime] = []
        self._next = 0
        self._written: set[tuple[str, str, int]] | None = None  # (provider, out_trade_no, copy)

    def path(self, provider: str) -> Path:
        return self.directory / FILES[provider]

    def _index(self, world: World) -> None:
        queue = [
            (got, i, copy)
            for i, o in enumerate(world.orders)
            if "paid" in o.events
            for copy, got in enumerate(delivery_times(o))
        ]
        queue.sort()
        self._queue, self._times, self._next = queue, [t for t, *_ in queue], 0
        self._world_id = id(world)

    def _load_written(self) -> set[tuple[str, str, int]]:
        """Notifies already in the files (a restarted writer must not log them twice)."""
        copies: dict[tuple[str, str], int] = {}
        for provider in FILES:
            for path in (self.path(provider).with_name(FILES[provider] + ".1"), self.path(provider)):
                if not path.exists():
                    continue
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        doc = json.loads(line)
                        body = doc.get("params") or doc.get("resource") or {}
                        key = (doc["provider"], body["out_trade_no"])
                    except (ValueError, KeyError, AttributeError, TypeError):
                        continue
                    copies[key] = copies.get(key, 0) + 1
        return {(provider, raw, copy) for (provider, raw), n in copies.items() for copy in range(n)}

    def sync(self, world: World, now: datetime) -> int:
        """Append a line for every payment notify received by `now`; returns lines written."""
        if self._world_id != id(world):
            self._index(world)
        if self._written is None:
            self._written = self._load_written()
        upto = bisect.bisect_right(self._times, now)  # resends sort after their first delivery
        lines: dict[str, list[str]] = {p: [] for p in FILES}
        for got, i, copy in self._queue[self._next : upto]:
            order = world.orders[i]
            provider = PROVIDERS[order.payment_method]
            if (provider, order.raw_id, copy) in self._written:
                continue
            lines[provider].append(json.dumps(LINE_MAKERS[provider](order, got), ensure_ascii=False))
            self._written.add((provider, order.raw_id, copy))
        self.directory.mkdir(parents=True, exist_ok=True)
        for provider, batch in lines.items():
            if batch:
                with self.path(provider).open("a", encoding="utf-8") as f:
                    f.write("\n".join(batch) + "\n")
        self._next = max(self._next, upto)
        return sum(len(b) for b in lines.values())

    def rotate(self, provider: str) -> Path:
        """Rename the provider's log to `.1` (replacing an older one), like logrotate; returns it."""
        path = self.path(provider)
        rotated = path.with_name(path.name + ".1")
        os.replace(path, rotated)
        return rotated

    def write_raw(self, provider: str, text: str) -> None:
        """Append raw text (tests: garbage or a partial line, as a crashing writer leaves it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path(provider).open("a", encoding="utf-8") as f:
            f.write(text)
