"""Field signatures: which field values (channel/shop, payment method, SKU prefix, SKU) the orders
missing in a system share, against the orders that system holds (concentration analysis).

An ERP's pull filters drop orders by field: a shop, a payment method, a SKU prefix. The orders one
filter dropped share its value and go missing far more often than the orders without it (lift).
A greedy cover picks the most telling value (or pair of values: the best binomial likelihood gain
among those with a lift of 3 or more), takes its orders out of both the missing and the
population, and looks again among the rest: several filters at once come out as
several groups, and what no value explains is left ungrouped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SIGNATURE_DIMS = ("channel", "payment_method", "sku_prefix", "sku")
PAIRS = (("channel", "payment_method"), ("channel", "sku_prefix"), ("payment_method", "sku_prefix"))
SHARED_DIMS = ("channel", "payment_method", "sku_prefix")  # described when every order of a group has one
DIM_NAMES_ZH = {"channel": "渠道", "payment_method": "支付方式", "sku_prefix": "SKU 前缀", "sku": "SKU"}
MIN_GROUP = 3  # fewer orders than this is no signature
MIN_LIFT = 3.0  # orders with the values go missing at least this many times as often as the rest
MAX_LIFT = 100.0
MAX_GROUPS = 6
_PREFIX = re.compile(r"^([A-Za-z]+[-_./])")

Fields = tuple[str | None, str | None, str | None]  # (channel, payment_method, sku) as the store keeps them
Condition = tuple[tuple[str, str], ...]  # (dimension, value) pairs, all of which an order has


def sku_prefix(sku: str | None) -> str | None:
    """`CAP-RED-F` -> `CAP-`: the letters before the code's first separator, with it."""
    if not sku:
        return None
    m = _PREFIX.match(sku)
    return m.group(1) if m else None


def field_values(fields: Fields) -> dict[str, str | None]:
    channel, payment_method, sku = fields
    return {"channel": channel, "payment_method": payment_method, "sku_prefix": sku_prefix(sku), "sku": sku}


@dataclass(frozen=True)
class Signature:
    """A group of missing orders and the field values behind it."""

    matched: Condition  # the values that single the group out
    shared: dict[str, str]  # values every order of the group has (the matched ones included)
    orders: tuple[str, ...]  # the group's order IDs
    population: int  # orders (missing or not) with the matched values
    rate: float  # missing share among them
    rate_elsewhere: float  # missing share among the other orders not yet explained
    lift: float

    def text(self, channel_names: dict[str, str] | None = None) -> str:
        """`渠道 有赞 · 支付方式 wechat`."""
        parts = []
        for dim, value in self.shared.items():
            if dim == "channel" and channel_names:
                value = channel_names.get(value, value)
            parts.append(f"{DIM_NAMES_ZH.get(dim, dim)} {value}")
        return " · ".join(parts)

    def to_dict(self, limit: int = 50) -> dict:
        return {
            "fields": dict(self.shared),
            "matched": dict(self.matched),
            "orders": len(self.orders),
            "order_ids": list(self.orders[:limit]),
            "population": self.population,
            "missing_rate": round(self.rate, 4),
            "missing_rate_elsewhere": round(self.rate_elsewhere, 4),
            "lift": round(self.lift, 2),
        }


def _conditions(values: dict[str, str | None]) -> Iterable[Condition]:
    for dim in SIGNATURE_DIMS:
        if values[dim] is not None:
            yield ((dim, values[dim]),)
    for a, b in PAIRS:
        if values[a] is not None and values[b] is not None:
            yield ((a, values[a]), (b, values[b]))


def _matches(values: dict[str, str | None], cond: Condition) -> bool:
    return all(values[dim] == value for dim, value in cond)


def _log_likelihood_gain(k_in: int, n_in: int, k_out: int, n_out: int) -> float:
    """How much better one missing rate inside and another outside explain the missing orders than
    a single rate for all (binomial log-likelihood ratio): high for a value most of whose orders
    are missing, low for a common value that merely holds many of them."""
    n_in, n_out = max(n_in, k_in), max(n_out, k_out)
    p = (k_in + k_out) / (n_in + n_out)
    if p <= 0 or p >= 1:
        return 0.0

    def part(k: int, n: int) -> float:
        q = k / n if n else 0.0
        out = k * math.log(q / p) if k else 0.0
        return out + ((n - k) * math.log((1 - q) / (1 - p)) if n - k else 0.0)

    return part(k_in, n_in) + part(k_out, n_out)


def _elevated(k: int, n: int, k_out: int, n_out: int) -> bool:
    """k missing of n go missing at least MIN_LIFT times as often as k_out of n_out (two at least)."""
    if k < 2 or n <= 0:
        return False
    return (k / n) / ((k_out + 1) / (max(n_out, k_out) + 1)) >= MIN_LIFT


def _order_key(cond: Condition) -> tuple:
    return (len(cond), tuple(SIGNATURE_DIMS.index(d) for d, _ in cond), tuple(v for _, v in cond))


def group_by_signature(
    missing: Sequence[tuple[str, Fields]], population: Sequence[tuple[Fields, int]]
) -> tuple[list[Signature], list[str]]:
    """The missing orders ((id, fields)) grouped by the field values they share, against
    `population` ((fields, orders) of every order judged, the missing ones included): the groups,
    most telling first, and the IDs no group explains."""
    pop = [(field_values(f), int(n)) for f, n in population]
    remaining = [(oid, field_values(f)) for oid, f in missing]
    chosen: list[Condition] = []
    groups: list[Signature] = []
    while len(remaining) >= MIN_GROUP and len(groups) < MAX_GROUPS:
        bad = Counter(c for _, v in remaining for c in _conditions(v))
        bad = Counter({c: n for c, n in bad.items() if n >= MIN_GROUP})
        if not bad:
            break
        base: Counter = Counter()
        total = 0
        for v, n in pop:
            if any(_matches(v, c) for c in chosen):
                continue  # explained already
            total += n
            for c in _conditions(v):
                if c in bad:
                    base[c] += n
        total = max(total, len(remaining))
        scored = {}
        for cond, n_bad in bad.items():
            n_base = max(base[cond], n_bad)
            if n_base >= total:
                continue  # every order has it: nothing to compare with
            rate_in = n_bad / n_base
            # One more missing order outside: a few leftovers sharing a common value are no signature.
            rate_out = (len(remaining) - n_bad + 1) / (max(total - n_base, len(remaining) - n_bad) + 1)
            lift = min(rate_in / rate_out, MAX_LIFT)
            if lift < MIN_LIFT:
                continue
            gain = _log_likelihood_gain(n_bad, n_base, len(remaining) - n_bad, total - n_base)
            scored[cond] = ((-gain, _order_key(cond)), n_base, rate_in, rate_out, lift)
        if not scored:
            break
        cond = min(scored, key=lambda c: scored[c][0])
        if len(cond) == 2:
            # A pair whose single value also loses its other orders more often is that value's
            # signature (a shop filter hits every payment method, however they happened to fall).
            wider = [
                (c,)
                for c in cond
                if (c,) in scored
                and _elevated(
                    bad[(c,)] - bad[cond],
                    base[(c,)] - base[cond],
                    len(remaining) - bad[(c,)],
                    total - scored[(c,)][1],
                )
            ]
            if wider:
                cond = min(wider, key=lambda c: scored[c][0])
        _, n_base, rate_in, rate_out, lift = scored[cond]
        members = [(oid, v) for oid, v in remaining if _matches(v, cond)]
        remaining = [(oid, v) for oid, v in remaining if not _matches(v, cond)]
        chosen.append(cond)
        shared = dict(cond)
        for dim in SHARED_DIMS:
            values = {v[dim] for _, v in members}
            if len(values) == 1 and None not in values:
                shared.setdefault(dim, values.pop())
        shared = {d: shared[d] for d in SIGNATURE_DIMS if d in shared}
        orders = tuple(oid for oid, _ in members)
        groups.append(Signature(cond, shared, orders, n_base, rate_in, rate_out, lift))
    return groups, [oid for oid, _ in remaining]


def population_counts(sql, where: str, params: dict) -> list[tuple[Fields, int]]:
    """(channel, payment_method, sku) -> orders, over the orders matching `where` (one grouped scan)."""
    rows = sql.rows(
        f"SELECT channel, payment_method, sku, count(*) FROM orders WHERE {where} "
        "GROUP BY channel, payment_method, sku",
        params,
    )
    return [((c, p, s), int(n)) for c, p, s, n in rows]


def order_fields(sql, ids: Sequence[str], chunk: int = 500) -> dict[str, Fields]:
    """Each order's (channel, payment_method, sku), by global ID."""
    out: dict[str, Fields] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        marks = ", ".join(f":g{k}" for k in range(len(part)))
        rows = sql.rows(
            f"SELECT global_id, channel, payment_method, sku FROM orders WHERE global_id IN ({marks})",
            {f"g{k}": g for k, g in enumerate(part)},
        )
        out.update({g: (c, p, s) for g, c, p, s in rows})
    return out


@dataclass(frozen=True)
class ReasonSignatures:
    """One reason's differences (e.g. missing_erp) by field signature."""

    reason: str
    groups: list[Signature]
    ungrouped: list[str]  # IDs no signature explains

    @property
    def orders(self) -> int:
        return sum(len(g.orders) for g in self.groups) + len(self.ungrouped)


def difference_signatures(sql, result, downstream: Iterable[str] = ("erp", "wms")) -> list[ReasonSignatures]:
    """The differences a reconciliation could only call `missing_<system>` (a downstream system
    lacks them, no more specific reason) grouped by the field values they share, against every
    order of the reconciled span: a pull filter's orders come out as one group per filter."""
    systems = set(downstream)
    by_reason: dict[str, list[str]] = {}
    for d in result.differences:
        if d.reason.startswith("missing_") and d.reason[len("missing_") :] in systems:
            by_reason.setdefault(d.reason, []).append(d.global_id)
    by_reason = {r: ids for r, ids in by_reason.items() if len(ids) >= MIN_GROUP}
    if not by_reason:
        return []
    span = {"since": int(result.since.timestamp() * 1000), "until": int(result.until.timestamp() * 1000)}
    population = population_counts(sql, "paid_at >= :since AND paid_at <= :until", span)
    fields = order_fields(sql, [g for ids in by_reason.values() for g in ids])
    out = []
    for reason, ids in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        groups, rest = group_by_signature([(g, fields[g]) for g in ids if g in fields], population)
        out.append(ReasonSignatures(reason, groups, rest + [g for g in ids if g not in fields]))
    return out


def signature_rows(
    groups: list[tuple[str, int]],
    signatures: list[ReasonSignatures],
    channel_names: dict[str, str] | None = None,
) -> list[tuple[str, str | None, int]]:
    """(reason, signature text or None, orders): a reason with field signatures once per signature
    (and once for the orders none explains), the others once."""
    by_reason = {s.reason: s for s in signatures if s.groups}
    rows: list[tuple[str, str | None, int]] = []
    for reason, n in groups:
        found = by_reason.get(reason)
        if found is None:
            rows.append((reason, None, n))
            continue
        rows += [(reason, g.text(channel_names), len(g.orders)) for g in found.groups]
        if found.ungrouped:
            rows.append((reason, "无共同字段特征", len(found.ungrouped)))
    return rows
