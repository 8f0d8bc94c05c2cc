"""Reconciliation: every order paid in the last 72 h against the systems that must each hold it
(payment bills, channel orders, ERP/OMS, WMS, …), and the orders whose amounts disagree.

It reads the store's own keys, never re-joins strings: identity is resolved once at ingest
(every raw ID, in whatever format a system writes it, maps to one global order), and each order
row carries the bit set of the source roles that showed it (`seen_roles`) and its amounts in
integer fen. So one scan of the orders finds every difference, and ID format, collation,
timestamp or decimal precision cannot make a false one. Differences are grouped by a reason
signature:

- `payment_without_order`: a payment no channel order matches (intake outage);
- `order_without_payment`: a channel order paid, with no payment record;
- `ms_duplicate`: missing downstream while another order of the channel was created within
  3 ms of it (an ERP de-duplication rule took it for a repeat);
- `coupon_detail_missing`: missing downstream and its order amount differs from what was paid
  (a discount/coupon breakdown the ERP filters on is missing);
- `push_missing`: the ERP has it, the WMS does not (an update such as an address change that
  was never pushed on);
- `missing_<role>`: missing in a system, no more specific signature;
- `amount_mismatch`: every system has it, the paid amount differs from the order amount.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import Engine

from diagnose.sql import ReadOnlySql
from reconcile.indexes import differs_predicate, has_indexes
from store.lifecycle import ROLE_BITS, WMS_REACHED
from store.schema import to_ms

MS_DUPLICATE_MS = 3  # creation times this close (ms) make an ERP take two orders for one
ROLE_NAMES_ZH = {
    "channel": "渠道订单",
    "payment": "支付账单",
    "erp": "ERP/OMS",
    "wms": "WMS",
    "carrier": "物流",
    "cs": "客服",
}
REASONS_ZH = {
    "payment_without_order": "支付成功但无订单（接单中断）",
    "order_without_payment": "有订单无支付账单",
    "ms_duplicate": "创建时间毫秒级相近，被判为重复单拦截",
    "coupon_detail_missing": "优惠券抵扣明细缺失（订单金额≠实付），被 ERP 过滤",
    "push_missing": "ERP 有单未推送 WMS（如收货地址变更未推送）",
    "amount_mismatch": "各系统都有，实付金额与订单金额不符",
}
DOWNSTREAM = ("erp", "wms", "carrier", "cs")  # systems that need not hold an order cancelled early
CSV_FIELDS = (
    "reason",
    "reason_zh",
    "global_id",
    "channel",
    "raw_order_id",
    "present",
    "missing",
    "amount_fen",
    "paid_amount_fen",
    "paid_at",
)


@dataclass(frozen=True)
class Difference:
    global_id: str
    channel: str
    raw_order_id: str
    present: tuple[str, ...]
    missing: tuple[str, ...]
    amount_fen: int | None
    paid_amount_fen: int | None
    paid_at_ms: int
    reason: str

    @property
    def reason_zh(self) -> str:
        return reason_zh(self.reason)


def reason_zh(reason: str) -> str:
    if reason.startswith("missing_"):
        return f"{ROLE_NAMES_ZH.get(reason[8:], reason[8:])}缺失"
    return REASONS_ZH.get(reason, reason)


@dataclass
class Reconciliation:
    since: datetime
    until: datetime
    roles: tuple[str, ...]
    orders: int  # orders paid in [since, until]: the population reconciled
    differences: list[Difference] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ratio(self) -> float:
        return len(self.differences) / self.orders if self.orders else 0.0

    @property
    def groups(self) -> list[tuple[str, int]]:
        """(reason, orders) by reason, largest first."""
        return sorted(Counter(d.reason for d in self.differences).items(), key=lambda kv: (-kv[1], kv[0]))

    def by_reason(self, reason: str) -> list[Difference]:
        return [d for d in self.differences if d.reason == reason]

    def missing_in(self, role: str) -> list[Difference]:
        return [d for d in self.differences if role in d.missing]


def reconcile(
    engine: Engine,
    now: datetime,
    *,
    roles: tuple[str, ...] = ("channel", "payment", "wms"),
    window: timedelta = timedelta(hours=72),
    settle: timedelta = timedelta(minutes=30),
    sql: ReadOnlySql | None = None,
) -> Reconciliation:
    """Orders paid in [now - window, now - settle] missing from any of `roles`, or whose amounts
    differ; one pass over the window's orders (their creation times come along for the
    millisecond-duplicate signature)."""
    started = time.perf_counter()
    if sql is None:
        with ReadOnlySql(engine, timeout_s=60) as ro:
            return reconcile(engine, now, roles=roles, window=window, settle=settle, sql=ro)
    until = now - settle
    since_ms, until_ms = to_ms(now - window), to_ms(until)
    mask = 0
    for role in roles:
        mask |= ROLE_BITS[role]
    reached = " OR ".join(f"{s}_at IS NOT NULL" for s in WMS_REACHED)
    exited = (
        f"CASE WHEN (cancelled_at IS NOT NULL OR closed_at IS NOT NULL) AND NOT ({reached}) THEN 1 ELSE 0 END"
    )
    differs = (
        "((seen_roles & :mask) <> :mask OR (amount_fen IS NOT NULL AND paid_amount_fen IS NOT NULL "
        "AND amount_fen <> paid_amount_fen))"
    )
    fields = ["global_id", "channel", "raw_order_id", "seen_roles", "amount_fen", "paid_amount_fen", "paid_at",
              "created_at", exited]  # fmt: skip
    packed = " || char(31) || ".join(f"coalesce(CAST({f} AS TEXT), '')" for f in fields)
    key = "created_at"
    want_keys = any(r in DOWNSTREAM for r in roles)
    indexed = has_indexes(sql, mask)
    keys = None
    if indexed:
        # The partial index holds just the differing orders; creation-time neighbours by lookup.
        where = "paid_at >= :since AND paid_at <= :until"
        (count,) = sql.rows(f"SELECT count(*) FROM orders WHERE {where}", since=since_ms, until=until_ms)[0]
        found = sql.rows(
            f"SELECT {', '.join(fields)} FROM orders WHERE {where} AND {differs_predicate(mask)}",
            since=since_ms,
            until=until_ms,
        )
        records = [["" if v is None else str(v) for v in row] for row in found]
    elif sql.sqlite:
        # One sequential pass (`+paid_at`: a million index lookups cost more than a scan): the count,
        # every order's (channel, creation time) key, and the differing orders packed as text.
        keys_sql = f"group_concat({key})" if want_keys else "''"
        query = (
            f"SELECT count(*), {keys_sql}, group_concat(CASE WHEN {differs} THEN {packed} END, char(30)) "
            "FROM orders WHERE +paid_at >= :since AND +paid_at <= :until"
        )
        count, key_text, diff_text = sql.rows(query, since=since_ms, until=until_ms, mask=mask)[0]
        keys = _int_array(key_text)
        records = [r.split("\x1f") for r in diff_text.split("\x1e")] if diff_text else []
    else:
        pg_packed = packed.replace("char(31)", "chr(31)")
        keys_sql = f"array_agg({key}) FILTER (WHERE created_at IS NOT NULL)" if want_keys else "NULL"
        query = (
            f"SELECT count(*), {keys_sql}, string_agg(CASE WHEN {differs} THEN {pg_packed} END, chr(30)) "
            "FROM orders WHERE paid_at >= :since AND paid_at <= :until"
        )
        count, key_list, diff_text = sql.rows(query, since=since_ms, until=until_ms, mask=mask)[0]
        keys = np.array(key_list or [], dtype=np.int64)
        records = [r.split("\x1f") for r in diff_text.split("\x1e")] if diff_text else []
    pending = []
    for (
        gid,
        channel,
        raw_id,
        seen_text,
        amount_text,
        paid_amount_text,
        paid_text,
        created_text,
        exited_text,
    ) in records:
        seen = int(seen_text)
        missing = tuple(r for r in roles if not seen & ROLE_BITS[r])
        if exited_text == "1":  # cancelled/closed before the warehouse: downstream systems need not have it
            missing = tuple(r for r in missing if r not in DOWNSTREAM)
        amount = int(amount_text) if amount_text else None
        paid_amount = int(paid_amount_text) if paid_amount_text else None
        differs_now = amount is not None and paid_amount is not None and amount != paid_amount
        if not missing and not differs_now:
            continue
        present = tuple(r for r in ROLE_BITS if seen & ROLE_BITS[r])
        created = int(created_text) if created_text else None
        pending.append(
            (
                gid,
                channel,
                raw_id,
                present,
                missing,
                amount,
                paid_amount,
                int(paid_text),
                created,
                differs_now,
            )
        )
    candidates = [p for p in pending if _downstream_missing(p[4]) and p[8] is not None]
    if keys is None:
        # Orders created near each candidate, itself included; those of the very same millisecond
        # left out where that is a whole second (see _ms_neighbours).
        whole = [int(c[8] % 1000 == 0) for c in candidates]
        twins = sql.scalars_many(
            "SELECT count(*) FROM orders WHERE created_at >= ? AND created_at <= ? AND (created_at <> ? OR ? = 0)",
            [
                (c[8] - MS_DUPLICATE_MS, c[8] + MS_DUPLICATE_MS, c[8], w)
                for c, w in zip(candidates, whole, strict=True)
            ],
        )
        near = {c[0] for c, n, w in zip(candidates, twins, whole, strict=True) if n - (1 - w) >= 1}
    else:
        near = _ms_neighbours(candidates, keys)
    differences = [
        Difference(
            gid,
            channel,
            raw_id,
            present,
            missing,
            amount,
            paid_amount,
            paid_at,
            _reason(present, missing, differs_now, gid in near),
        )
        for gid, channel, raw_id, present, missing, amount, paid_amount, paid_at, _created, differs_now in pending
    ]
    differences.sort(key=lambda d: (d.reason, d.paid_at_ms, d.global_id))
    return Reconciliation(
        now - window, until, tuple(roles), int(count), differences, time.perf_counter() - started
    )


def _downstream_missing(missing: tuple[str, ...]) -> bool:
    return bool(missing) and "channel" not in missing and any(r in DOWNSTREAM for r in missing)


def _reason(present: tuple[str, ...], missing: tuple[str, ...], differs: bool, ms_twin: bool) -> str:
    if "channel" in missing and "payment" in present:
        return "payment_without_order"
    if "payment" in missing and "channel" in present and not any(r in DOWNSTREAM for r in missing):
        return "order_without_payment"
    if _downstream_missing(missing):
        if ms_twin:
            return "ms_duplicate"
        if differs:
            return "coupon_detail_missing"
        if "erp" in present and "wms" in missing:
            return "push_missing"
        return f"missing_{missing[0]}"
    if missing:
        return f"missing_{missing[0]}"
    return "amount_mismatch"


def _ms_neighbours(candidates: list[tuple], keys: np.ndarray) -> set[str]:
    """Candidates (missing downstream) with another order created within MS_DUPLICATE_MS of them
    (sources with whole-second times: another order 1..MS_DUPLICATE_MS ms away, never the same second)
    (the window's creation times, sorted once): what an ERP's "same creation time" de-duplication
    rule takes for a repeat, whichever shop the other order came from."""
    if not candidates:
        return set()
    keys = np.sort(keys)
    own = np.array([c[8] for c in candidates], dtype=np.int64)
    lo = np.searchsorted(keys, own - MS_DUPLICATE_MS, side="left")
    hi = np.searchsorted(keys, own + MS_DUPLICATE_MS, side="right")
    same = np.searchsorted(keys, own, side="right") - np.searchsorted(keys, own, side="left")
    # A creation time shared to the millisecond says nothing when the source writes whole seconds
    # (every order of that second shares it): only then is an identical time no twin.
    whole_second = own % 1000 == 0
    near = (hi - lo) - np.where(whole_second, same, 1)
    return {c[0] for c, n in zip(candidates, near, strict=True) if n >= 1}


def _int_array(text: str | None) -> np.ndarray:
    """Comma-separated integers (SQLite group_concat) as an int64 array, parsed in C."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")  # noqa: NPY201 - the text form is not deprecated


def to_csv(result: Reconciliation, zone=None) -> str:
    """The differences as CSV (UTF-8 with BOM so Excel shows the Chinese), one row per order."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for d in result.differences:
        paid = (
            datetime.fromtimestamp(d.paid_at_ms / 1000).astimezone(zone)
            if zone
            else datetime.fromtimestamp(d.paid_at_ms / 1000).astimezone()
        )
        writer.writerow(
            [d.reason, d.reason_zh, d.global_id, d.channel, d.raw_order_id, "|".join(d.present), "|".join(d.missing),
             d.amount_fen if d.amount_fen is not None else "", d.paid_amount_fen if d.paid_amount_fen is not None else "",
             paid.isoformat(timespec="seconds")]
        )  # fmt: skip
    return buffer.getvalue()
