"""Diagnostic probes. Each reads the store through the read-only SQL probe (or a source, live) and
returns findings with evidence; a finding may support one catalog cause with a score in 0..1.

The order probes share one scan of the orders paid in the KPI window (the columns they need, one
row per order) and classify each row once; the stuck probes read the (state, state_at) index.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from diagnose.model import Finding
from diagnose.sql import ReadOnlySql
from metrics.kpi import stuck_clock
from reconcile.signatures import group_by_signature, population_counts
from sentinel.config import Config
from store.lifecycle import ROLE_BITS, STATE_LABELS_ZH, WMS_REACHED
from store.records import observation_rows

ORDER_CAP = 200  # affected orders listed per finding (the count is always exact)
MIN_ORDERS = 5  # fewer bad orders than this is noise, not a pattern
FUTURE_SLACK_MS = 5 * 60_000  # an event this far past "now" is in the future (clock skew)
DISORDER_MS = 30 * 60_000  # a later milestone this far before payment is out of order (clock skew)
CONCENTRATION_DIMS = ("channel", "payment_method", "sku", "warehouse", "carrier", "province", "city", "hour")
DIM_NAMES_ZH = {
    "channel": "渠道",
    "payment_method": "支付方式",
    "sku": "SKU",
    "warehouse": "仓库",
    "carrier": "承运商",
    "province": "省份",
    "city": "城市",
    "cs_group": "客服组",
    "hour": "小时",
    "source": "数据源",
}
_PAYMENT, _CHANNEL, _ERP = ROLE_BITS["payment"], ROLE_BITS["channel"], ROLE_BITS["erp"]
ERP_FLOW = 0.5  # the ERP shows at least this share of the orders that reached the WMS: it is in the flow

SCAN_COLUMNS = (
    "global_id",
    "channel",
    "raw_order_id",
    "state",
    "state_at",
    "created_at",
    "paid_at",
    "erp_accepted_at",
    "wms_received_at",
    "picked_at",
    "packed_at",
    "shipped_at",
    "in_transit_at",
    "delivered_at",
    "cancelled_at",
    "closed_at",
    "amount_fen",
    "paid_amount_fen",
    "warehouse",
    "carrier",
    "province",
    "city",
    "sku",
    "payment_method",
    "seen_roles",
    "duplicate_records",
)
_C = {c: i for i, c in enumerate(SCAN_COLUMNS)}
_REACHED = tuple(_C[f"{s}_at"] for s in WMS_REACHED)
_LATER = tuple(
    _C[f"{s}_at"] for s in ("wms_received", "picked", "packed", "shipped", "in_transit", "delivered")
)
_AFTER_PICK = tuple(_C[f"{s}_at"] for s in ("packed", "shipped", "in_transit", "delivered", "cancelled"))
_TIMES = tuple(_C[c] for c in SCAN_COLUMNS if c.endswith("_at"))


@dataclass
class Context:
    """What every probe sees: the read-only SQL, the config, the time, the focus, source health."""

    sql: ReadOnlySql
    config: Config
    now: datetime
    kpi: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    health: list[dict] = field(default_factory=list)
    live: bool = True
    live_timeout_s: float = 1.5
    _scan: Scan | None = None

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.service.timezone)

    def local(self, ms: int | None) -> str | None:
        if ms is None:
            return None
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def span(self, first_ms: int, last_ms: int) -> str:
        """`20:30–21:10`, with the dates when the span crosses a day."""
        a, b = self.local(first_ms), self.local(last_ms)
        if a[:10] == b[:10]:
            return f"{a[11:16]}–{b[11:16]}"
        return f"{a[5:16]} 至 {b[5:16]}"

    def scan(self) -> Scan:
        if self._scan is None:
            self._scan = Scan.read(self)
        return self._scan

    def health_of(self, source: str) -> dict | None:
        return next((h for h in self.health if h["source"] == source), None)

    def sources_with_role(self, role: str) -> list[str]:
        return [n for n, s in self.config.sources.items() if s.enabled and s.effective_role == role]

    def source_channels(self, source: str) -> set[str]:
        """Channels a source feeds (its `channel`, or its channel map's values)."""
        src = self.config.sources.get(source)
        if src is None:
            return set()
        if src.channel:
            return {src.channel}
        return set(src.mapping.channel_map.values()) if src.mapping.channel_map else set(self.config.channels)


_EXITED_EARLY = (
    "((cancelled_at IS NOT NULL OR closed_at IS NOT NULL) AND NOT ("
    + " OR ".join(f"{s}_at IS NOT NULL" for s in WMS_REACHED)
    + "))"
)
# Baselines the bad orders are measured against (SQL over the window's orders).
COUNTED_JUDGED = f"paid_at <= :judged AND NOT {_EXITED_EARLY}"
PAYMENTS_JUDGED = f"paid_at <= :graced AND (seen_roles & {_PAYMENT}) <> 0"
ERP_SEEN = f"((seen_roles & {_ERP}) <> 0 OR erp_accepted_at IS NOT NULL)"
ALL_PAID = "1 = 1"
PICKED = "picked_at IS NOT NULL"
# Picked, and packed (or past packing, or still waiting now) only after the picked timeout.
SLOW_PACK = (
    "(picked_at IS NOT NULL AND coalesce(packed_at, shipped_at, in_transit_at, delivered_at, cancelled_at, "
    ":now_ms) - picked_at > :pick_ms)"
)


@dataclass
class Scan:
    """The window's orders (paid in the KPI window, focus labels applied) that any probe calls bad,
    fetched once and classified once; totals come from one aggregate query."""

    rows: list[tuple]
    orders: int = 0  # orders paid in the window
    counted_judged: int = 0  # paid SLA ago or more, not cancelled before the WMS (sync denominator)
    by_payment_judged: int = 0  # payments at least the grace period old (order-loss denominator)
    reached_judged: int = 0  # counted_judged orders that reached the WMS
    erp_seen_reached: int = 0  # ... and that an ERP-role source showed too
    unreached: list[tuple] = field(default_factory=list)
    lost: list[tuple] = field(default_factory=list)
    fast: list[tuple] = field(default_factory=list)
    mismatch: list[tuple] = field(default_factory=list)
    duplicated: list[tuple] = field(default_factory=list)
    future: list[tuple] = field(default_factory=list)
    disorder: list[tuple] = field(default_factory=list)
    slow_pack: list[tuple] = field(default_factory=list)  # picked -> packed took longer than its timeout
    where: str = ""
    params: dict = field(default_factory=dict)

    @classmethod
    def read(cls, ctx: Context) -> Scan:
        kpi = ctx.config.kpi
        params = {
            "since": ctx.now_ms - int(kpi.window.total_seconds() * 1000),
            "judged": ctx.now_ms - int(kpi.sync_sla.total_seconds() * 1000),
            "graced": ctx.now_ms - int(kpi.order_grace.total_seconds() * 1000),
            "fast_ms": int(kpi.fast_cancel.total_seconds() * 1000),
            "future": ctx.now_ms + FUTURE_SLACK_MS,
            "disorder_ms": DISORDER_MS,
            "now_ms": ctx.now_ms,
        }
        pick_timeout = kpi.stuck_timeouts.get("picked")
        if pick_timeout is not None:
            params["pick_ms"] = int(pick_timeout.total_seconds() * 1000)
        where = ["paid_at >= :since"]
        for key, value in sorted(ctx.labels.items()):
            if key in (
                "channel",
                "warehouse",
                "carrier",
                "province",
                "city",
                "sku",
                "payment_method",
                "cs_group",
            ):
                where.append(f"{key} = :l_{key}")
                params[f"l_{key}"] = value
        window = " AND ".join(where)
        reached = " OR ".join(f"{s}_at IS NOT NULL" for s in WMS_REACHED)
        later = " OR ".join(
            f"{s}_at < paid_at - :disorder_ms"
            for s in ("wms_received", "picked", "packed", "shipped", "in_transit", "delivered")
        )
        bad = " OR ".join(
            (
                f"({COUNTED_JUDGED} AND NOT ({reached}))",
                f"(paid_at <= :graced AND (seen_roles & {_PAYMENT}) <> 0 AND (seen_roles & {_CHANNEL}) = 0)",
                "(cancelled_at IS NOT NULL AND cancelled_at - paid_at <= :fast_ms)",
                "(amount_fen IS NOT NULL AND paid_amount_fen IS NOT NULL AND amount_fen <> paid_amount_fen)",
                "duplicate_records > 0",
                "last_event_at > :future",
                f"({later})",
                *([SLOW_PACK] if pick_timeout is not None else []),
            )
        )
        totals = ctx.sql.rows(
            f"SELECT count(*), sum(CASE WHEN {COUNTED_JUDGED} THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN {PAYMENTS_JUDGED} THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN {COUNTED_JUDGED} AND ({reached}) THEN 1 ELSE 0 END), "
            f"sum(CASE WHEN {COUNTED_JUDGED} AND ({reached}) AND {ERP_SEEN} THEN 1 ELSE 0 END) "
            f"FROM orders WHERE {window}",
            params,
        )[0]
        rows = ctx.sql.rows(
            f"SELECT {', '.join(SCAN_COLUMNS)} FROM orders WHERE {window} AND ({bad})", params
        )
        scan = cls(
            rows,
            int(totals[0]),
            int(totals[1] or 0),
            int(totals[2] or 0),
            int(totals[3] or 0),
            int(totals[4] or 0),
            where=window,
            params=params,
        )
        judged, graced, fast_ms, future = (
            params["judged"],
            params["graced"],
            params["fast_ms"],
            params["future"],
        )
        paid_i, cancel_i, closed_i = _C["paid_at"], _C["cancelled_at"], _C["closed_at"]
        roles_i, amount_i, paid_amount_i = _C["seen_roles"], _C["amount_fen"], _C["paid_amount_fen"]
        dups_i = _C["duplicate_records"]
        for r in rows:
            paid = r[paid_i]
            reached_row = any(r[i] is not None for i in _REACHED)
            exited = r[cancel_i] is not None or r[closed_i] is not None
            roles = r[roles_i]
            lost = bool(roles & _PAYMENT and not roles & _CHANNEL and paid <= graced)
            if lost:
                scan.lost.append(r)
            if paid <= judged and not (exited and not reached_row) and not reached_row and not lost:
                scan.unreached.append(r)
            if r[cancel_i] is not None and r[cancel_i] - paid <= fast_ms:
                scan.fast.append(r)
            if r[amount_i] is not None and r[paid_amount_i] is not None and r[amount_i] != r[paid_amount_i]:
                scan.mismatch.append(r)
            if r[dups_i]:
                scan.duplicated.append(r)
            if any(r[i] is not None and r[i] > future for i in _TIMES):
                scan.future.append(r)
            elif any(r[i] is not None and r[i] < paid - DISORDER_MS for i in _LATER):
                scan.disorder.append(r)
            elif pick_timeout is not None and r[_C["picked_at"]] is not None:
                after = next((r[i] for i in _AFTER_PICK if r[i] is not None), ctx.now_ms)
                if after - r[_C["picked_at"]] > params["pick_ms"]:
                    scan.slow_pack.append(r)
        return scan

    @property
    def erp_in_flow(self) -> bool:
        """An ERP-role source shows most orders that reached the WMS: orders pass through the ERP
        (a returns-only ERP source shows a few, and says nothing of the order flow)."""
        return self.reached_judged > 0 and self.erp_seen_reached / self.reached_judged >= ERP_FLOW

    def unpulled(self) -> list[tuple]:
        """Unreached orders seen on the channel that no ERP-role source ever showed, when the ERP is
        in the flow (else none: nothing to tell an ERP pull from a push)."""
        if not self.erp_in_flow:
            return []
        return [r for r in self.unreached if not _erp_seen(r) and r[_C["seen_roles"]] & _CHANNEL]

    def baseline(
        self, ctx: Context, predicate: str, picks: list[tuple[str, str]], extra: str = "", **params
    ) -> tuple[int, list[int]]:
        """Orders of the window matching `predicate` (and `extra`): how many, and how many have each
        (dimension, value) of `picks` — one aggregate query."""
        offset = int(ctx.now.astimezone(ctx.zone).utcoffset().total_seconds())
        sums, args = [], {**self.params, **params, "tz_off": offset}
        for i, (dim, value) in enumerate(picks):
            if dim == "hour":
                sums.append(
                    f"sum(CASE WHEN ((paid_at / 1000 + :tz_off) / 3600) % 24 = :p{i} THEN 1 ELSE 0 END)"
                )
                args[f"p{i}"] = int(value.rstrip("时"))
            else:
                sums.append(f"sum(CASE WHEN {dim} = :p{i} THEN 1 ELSE 0 END)")
                args[f"p{i}"] = value
        cols = ", ".join(["count(*)", *sums])
        row = ctx.sql.rows(f"SELECT {cols} FROM orders WHERE {self.where} AND {predicate}{extra}", args)[0]
        return int(row[0]), [int(v or 0) for v in row[1:]]


# -- helpers ------------------------------------------------------------------------------------
def _erp_seen(row: tuple) -> bool:
    return bool(row[_C["seen_roles"]] & _ERP) or row[_C["erp_accepted_at"]] is not None


def _value(ctx: Context, row: tuple, dim: str) -> str | None:
    if dim == "hour":
        paid = row[_C["paid_at"]]
        return f"{datetime.fromtimestamp(paid / 1000, UTC).astimezone(ctx.zone).hour:02d}时"
    return row[_C[dim]]


def concentration(
    ctx: Context, bad: list[tuple], predicate: str, dims: Iterable[str] = CONCENTRATION_DIMS
) -> list[dict]:
    """Dimension values over-represented among the bad orders against the baseline (the window's
    orders matching `predicate`): see over_represented; most concentrated first."""
    if len(bad) < MIN_ORDERS:
        return []
    picks = []
    for dim in dims:
        value, n_bad = Counter(_value(ctx, r, dim) for r in bad).most_common(1)[0]
        if value is not None and n_bad / len(bad) >= 0.5:
            picks.append((dim, value, n_bad))
    if not picks:
        return []
    total, counts = ctx.scan().baseline(ctx, predicate, [(d, v) for d, v, _ in picks])
    found = [
        over_represented(d, v, n, len(bad), n_base, total)
        for (d, v, n), n_base in zip(picks, counts, strict=True)
    ]
    out = [e for e in found if e is not None]
    out.sort(key=lambda e: (-e["bad_share"] * min(e["lift"], 20), e["dimension"]))
    return out


def over_represented(dim: str, value: str, n_bad: int, bad: int, n_base: int, base: int) -> dict | None:
    """One dimension value against the rest: at least half of the bad orders have it, and orders
    with it go bad at least 3 times as often as the others (lift = that rate ratio)."""
    n_base = max(n_base, n_bad)
    base = max(base, n_base)
    rate_in = n_bad / n_base if n_base else 0.0
    if base <= n_base:
        return None  # every order has this value: nothing to compare it with
    rate_out = (bad - n_bad) / (base - n_base)
    lift = rate_in / rate_out if rate_out else float("inf")
    if n_bad / bad < 0.5 or lift < 3:
        return None
    return {
        "dimension": dim,
        "value": value,
        "bad_orders": n_bad,
        "bad_share": round(n_bad / bad, 3),
        "baseline_share": round(n_base / base, 3) if base else 0.0,
        "bad_rate": round(rate_in, 4),
        "bad_rate_elsewhere": round(rate_out, 4),
        "lift": round(min(lift, 999.0), 2),
    }


def dense_start(times: list[int], run: int = 4, spread: float = 5.0) -> int:
    """Where sorted event times start to pile up: the first one followed by `run` gaps each at most
    `spread` times the median gap (a few strays before a gap's start are noise)."""
    if len(times) <= run:
        return times[0]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    limit = spread * max(1, statistics.median(gaps))
    for i in range(len(gaps) - run + 1):
        if all(g <= limit for g in gaps[i : i + run]):
            return times[i]
    return times[0]


def concentration_text(ctx: Context, found: list[dict], limit: int = 3) -> str:
    parts = []
    for e in found[:limit]:
        value = e["value"]
        if e["dimension"] == "channel":
            value = ctx.config.channels[value].name if value in ctx.config.channels else value
        parts.append(f"{DIM_NAMES_ZH.get(e['dimension'], e['dimension'])} {value} 占 {e['bad_share']:.0%}")
    return "，".join(parts)


def _ids(rows: list[tuple]) -> list[str]:
    return [r[0] for r in rows[:ORDER_CAP]]


def _scaled(x: float, full: float) -> float:
    return max(0.0, min(1.0, x / full)) if full > 0 else 0.0


def _broken_sources(ctx: Context, channels: set[str]) -> list[dict]:
    """Sources feeding these channels that fail, or whose errors are rate limiting / auth."""
    out = []
    for name in ctx.sources_with_role("channel"):
        if channels and not (ctx.source_channels(name) & channels):
            continue
        h = ctx.health_of(name)
        if h is None:
            continue
        errors = json.loads(h.get("errors_json") or "{}")
        lag = h.get("lag_seconds") or 0
        if not h["up"] or errors.get("rate_limited") or errors.get("auth_expired") or lag > 600:
            out.append({"source": name, "up": bool(h["up"]), "errors": errors, "lag_seconds": lag})
    return out


# -- probes -------------------------------------------------------------------------------------
def probe_sync_gap(ctx: Context) -> list[Finding]:
    """Paid ≥ SLA ago, not in the WMS (not cancelled first, not a lost payment): where, since when,
    and whether the WMS source itself is healthy (a silent push gap) or not. With the ERP in the
    order flow, only the orders the ERP has: those it never pulled are probe_erp_pull's."""
    scan = ctx.scan()
    unpulled = {r[0] for r in scan.unpulled()}
    bad = [r for r in scan.unreached if r[0] not in unpulled]
    if not bad:
        return []
    paid_i = _C["paid_at"]
    found = concentration(ctx, bad, COUNTED_JUDGED)
    segment = next((e for e in found if e["dimension"] != "hour"), None)  # where, not when
    inside = [r for r in bad if segment is None or _value(ctx, r, segment["dimension"]) == segment["value"]]
    inside.sort(key=lambda r: r[paid_i])
    start = dense_start([r[paid_i] for r in inside])
    missing_after = sum(1 for r in inside if r[paid_i] >= start)
    extra = " AND paid_at >= :gap_start"
    total_after, counts = scan.baseline(
        ctx,
        COUNTED_JUDGED,
        [(segment["dimension"], segment["value"])] if segment else [],
        extra,
        gap_start=start,
    )
    after = counts[0] if segment else total_after
    gap_share = missing_after / after if after else 0.0
    base = scan.counted_judged
    ratio = len(bad) / base if base else 0.0
    ordered = sorted(bad, key=lambda r: r[paid_i])
    wms = [ctx.health_of(s) for s in ctx.sources_with_role("wms")]
    wms_ok = [h for h in wms if h is not None]
    wms_healthy = all(h["up"] for h in wms_ok)  # no health rows: nothing says it is not
    ordered = sorted(bad, key=lambda r: r[paid_i])
    evidence = [
        {"fact": "unreached_orders", "count": len(bad), "judged_orders": base, "ratio": round(ratio, 4)},
        *([{"fact": "erp_never_pulled_excluded", "count": len(unpulled)}] if unpulled else []),
        {"fact": "gap_start", "at": ctx.local(start), "share_missing_since": round(gap_share, 3)},
        *({"fact": "concentration", **e} for e in found[:4]),
        *(
            {
                "fact": "wms_source",
                "source": h["source"],
                "up": bool(h["up"]),
                "last_error_class": h.get("last_error_class"),
            }
            for h in wms_ok
        ),
    ]
    score = 0.0
    if len(bad) >= MIN_ORDERS and ratio >= 0.002:
        score = (
            0.25 + 0.35 * _scaled(gap_share, 0.5) + (0.15 if found else 0.0) + (0.1 if wms_healthy else -0.2)
        )
    where = concentration_text(ctx, found, 2)
    title = (
        f"自 {ctx.local(start)[5:16]} 起 {len(bad)} 单已付款"
        + ("、ERP 已有，" if scan.erp_in_flow else "")
        + "超过 SLA 未到达仓库"
        + (f"（{where}）" if where else "")
        + ("，WMS 数据源本身正常" if wms_healthy else "，WMS 数据源异常")
    )
    return [
        Finding("sync_gap", title, evidence, _ids(ordered), "wms_push_gap", min(score, 0.95), len(bad)),
    ]


def probe_erp_pull(ctx: Context) -> list[Finding]:
    """Paid on the channel ≥ SLA ago, never in the WMS, and never shown by the ERP while the ERP is
    in the flow, healthy, and pulled the other orders of that span: the ERP's pull skipped them (its
    field filters). Which field values they share against the pulled orders (field signatures)."""
    scan = ctx.scan()
    bad = sorted(scan.unpulled(), key=lambda r: r[_C["paid_at"]])
    if len(bad) < MIN_ORDERS:
        return []
    paid_i = _C["paid_at"]
    first, last = bad[0][paid_i], bad[-1][paid_i]
    in_span, _ = scan.baseline(
        ctx, COUNTED_JUDGED, [], " AND paid_at >= :first AND paid_at <= :last", first=first, last=last
    )
    pulled_share = 1 - len(bad) / in_span if in_span else 0.0
    ratio = len(bad) / scan.counted_judged if scan.counted_judged else 1.0
    erp = [h for h in (ctx.health_of(s) for s in ctx.sources_with_role("erp")) if h is not None]
    erp_up = all(h["up"] for h in erp)
    population = population_counts(ctx.sql, f"{scan.where} AND {COUNTED_JUDGED}", scan.params)
    missing = [(r[0], (r[_C["channel"]], r[_C["payment_method"]], r[_C["sku"]])) for r in bad]
    groups, ungrouped = group_by_signature(missing, population)
    grouped = len(bad) - len(ungrouped)
    names = {k: c.name for k, c in ctx.config.channels.items()}
    evidence = [
        {
            "fact": "erp_never_pulled",
            "count": len(bad),
            "judged_orders": scan.counted_judged,
            "ratio": round(ratio, 4),
            "share_of_unreached": round(len(bad) / len(scan.unreached), 3),
        },
        {
            "fact": "erp_pulled_the_others",
            "from": ctx.local(first),
            "to": ctx.local(last),
            "orders_in_span": in_span,
            "pulled_share": round(pulled_share, 4),
        },
        *(
            {
                "fact": "erp_source",
                "source": h["source"],
                "up": bool(h["up"]),
                "last_error_class": h.get("last_error_class"),
            }
            for h in erp
        ),
        *({"fact": "field_signature", "signature": g.text(names), **g.to_dict()} for g in groups),
        *(
            [{"fact": "no_field_signature", "orders": len(ungrouped), "order_ids": ungrouped[:50]}]
            if ungrouped
            else []
        ),
        {"fact": "affected_orders", "count": len(bad), "ids": _ids(bad)},
    ]
    score = 0.0
    if ratio >= 0.002:
        score = (
            0.5
            + (0.1 if erp_up else -0.2)  # a failing ERP source loses orders without any filter
            + (0.1 if pulled_share >= 0.5 else 0.0)  # selective: the ERP pulled most of the span
            + 0.2 * grouped / len(bad)  # the missing orders share field values the pulled ones lack
            + (0.05 if len(groups) >= 2 else 0.0)
        )
    parts = "，".join(f"{g.text(names)} {len(g.orders)} 单" for g in groups[:4])
    title = (
        f"{ctx.span(first, last)} {len(bad)} 单渠道已付款但 ERP 从未抓取"
        f"（ERP 数据源{'正常' if erp_up else '异常'}，同期 {in_span} 单中 {pulled_share:.0%} 已抓取）"
        + (f"：{parts}" if parts else "")
    )
    return [Finding("erp_pull", title, evidence, _ids(bad), "field_filter_loss", min(score, 0.95), len(bad))]


def probe_order_loss(ctx: Context) -> list[Finding]:
    """Payments with no channel order after the grace period: the missing payment IDs, when, and
    whether the channel's own source was failing (then it is the source, not the intake)."""
    scan = ctx.scan()
    bad = scan.lost
    if not bad:
        return []
    paid_i = _C["paid_at"]
    ordered = sorted(bad, key=lambda r: r[paid_i])
    times = [r[paid_i] for r in ordered]
    first, last = dense_start(times), -dense_start([-t for t in reversed(times)])  # strays are noise
    lost_in_span = sum(1 for r in ordered if first <= r[paid_i] <= last)
    in_span, _ = scan.baseline(
        ctx, PAYMENTS_JUDGED, [], " AND paid_at >= :first AND paid_at <= :last", first=first, last=last
    )
    span_share = lost_in_span / in_span if in_span else 0.0
    channels = {r[_C["channel"]] for r in bad}
    broken = _broken_sources(ctx, channels)
    found = concentration(ctx, bad, PAYMENTS_JUDGED)
    evidence = [
        {"fact": "payments_without_order", "count": len(bad), "payments": scan.by_payment_judged},
        {
            "fact": "time_span",
            "from": ctx.local(first),
            "to": ctx.local(last),
            "share_lost_in_span": round(span_share, 3),
        },
        {"fact": "missing_payment_ids", "ids": [r[_C["raw_order_id"]] for r in ordered[:ORDER_CAP]]},
        *({"fact": "concentration", **e} for e in found[:3]),
        *({"fact": "channel_source_failing", **b} for b in broken),
    ]
    score = 0.0
    if len(bad) >= MIN_ORDERS:
        score = 0.35 + 0.6 * _scaled(span_share, 0.3)  # an outage loses most payments of its span
        if broken:
            score *= 0.4  # the orders exist at the channel; its API is what fails
    title = f"{ctx.span(first, last)} 有 {len(bad)} 笔支付成功但无订单记录"
    return [
        Finding("order_loss", title, evidence, _ids(ordered), "intake_outage", min(score, 0.95), len(bad))
    ]


def probe_source_errors(ctx: Context) -> list[Finding]:
    """Each source's error classes (counts, the last one and when), lag and failure streak."""
    out = []
    for h in ctx.health:
        errors = json.loads(h.get("errors_json") or "{}")
        lag = h.get("lag_seconds") or 0.0
        failing = not h["up"]
        if not errors and not failing and lag < 600:
            continue
        name = h["source"]
        evidence = [
            {
                "fact": "source_health",
                "source": name,
                "up": bool(h["up"]),
                "errors_by_class": errors,
                "last_error_class": h.get("last_error_class"),
                "last_error_at": _iso(ctx, h.get("last_error_at")),
                "last_success_at": _iso(ctx, h.get("last_success_at")),
                "consecutive_failures": h.get("consecutive_failures") or 0,
                "lag_seconds": round(lag, 1),
            }
        ]
        last = h.get("last_error_class")
        auth = errors.get("auth_expired", 0)
        limited = errors.get("rate_limited", 0)
        if auth and (failing and last == "auth_expired" or auth >= 3):
            score = 0.7 + 0.25 * _scaled(h.get("consecutive_failures") or auth, 5)
            title = f"数据源 {name} 凭证被拒（auth_expired {auth} 次）：API 密钥已失效或被轮换"
            out.append(Finding("source_errors", title, evidence, [], "api_key_rotated", min(score, 0.97)))
        elif limited:
            score = 0.45 + 0.3 * _scaled(limited, 5) + 0.2 * _scaled(lag, 900)
            title = f"数据源 {name} 被限流（rate_limited {limited} 次，滞后 {lag / 60:.0f} 分钟）"
            out.append(Finding("source_errors", title, evidence, [], "api_rate_limited", min(score, 0.95)))
        else:
            classes = "、".join(f"{k} {v} 次" for k, v in sorted(errors.items())) or "无错误记录"
            title = f"数据源 {name} {'当前失败' if failing else '有错误'}（{classes}）"
            out.append(Finding("source_errors", title, evidence))
    return out


def _iso(ctx: Context, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(ctx.zone).strftime("%Y-%m-%d %H:%M:%S")
    return ctx.local(int(value))


def probe_duplicates(ctx: Context) -> list[Finding]:
    """Orders with repeated deliveries of one fact (callbacks resent): how many, and their timing."""
    scan = ctx.scan()
    bad = scan.duplicated
    if not bad:
        return []
    repeats = sum(r[_C["duplicate_records"]] for r in bad)
    ratio = len(bad) / scan.orders if scan.orders else 0.0
    ordered = sorted(bad, key=lambda r: -r[_C["duplicate_records"]])
    timing = _delivery_timing(ctx, [r[0] for r in ordered[:50]])
    evidence = [
        {
            "fact": "duplicated_orders",
            "count": len(bad),
            "repeats": repeats,
            "orders": scan.orders,
            "ratio": round(ratio, 4),
        },
        *timing,
        *({"fact": "concentration", **e} for e in concentration(ctx, bad, ALL_PAID)[:3]),
    ]
    score = 0.0
    # Asked about the duplicate KPI's alert, the resends that raised it are the pattern even while
    # they are still few against the whole window (the alert fires minutes after they begin).
    asked = ctx.kpi in ("duplicate_free_ratio", "duplicate_records")
    if len(bad) >= MIN_ORDERS and (ratio >= 0.005 or asked):
        score = 0.55 + 0.4 * _scaled(max(ratio, 0.04 if asked else 0.0), 0.04)
    gaps = next((e for e in timing if e["fact"] == "repeat_interval"), None)
    when = f"，重复间隔中位 {gaps['median_s']:.0f} 秒" if gaps and gaps.get("median_s") is not None else ""
    title = f"{len(bad)} 单（{ratio:.1%}）收到重复回调/推送共 {repeats} 次{when}"
    return [
        Finding(
            "duplicates", title, evidence, _ids(ordered), "duplicate_callbacks", min(score, 0.95), len(bad)
        )
    ]


def _delivery_timing(ctx: Context, gids: list[str]) -> list[dict]:
    """Repeated records of one (source, state) per order: the sources and the spacing of arrivals."""
    if not gids:
        return []
    rows = sorted(
        (gid, source, state, ingested, key)
        for gid, source, key, state, _at, ingested in observation_rows(ctx.sql.rows, gids)
    )
    groups: dict[tuple, list[tuple]] = {}
    for gid, source, state, ingested, key in rows:
        groups.setdefault((gid, source, state), []).append((key, ingested))
    gaps, sources, examples = [], Counter(), []
    for (gid, source, state), items in groups.items():
        if len(items) < 2:
            continue
        sources[source] += 1
        received = sorted(_received_ms(key, ingested) for key, ingested in items)
        gaps += [(b - a) / 1000 for a, b in zip(received, received[1:], strict=False)]
        if len(examples) < 5:
            examples.append(
                {"order": gid, "source": source, "state": state, "records": [k for k, _ in items][:4]}
            )
    out = [{"fact": "repeat_sources", "sources": dict(sources)}] if sources else []
    if gaps:
        out.append(
            {
                "fact": "repeat_interval",
                "median_s": round(statistics.median(gaps), 1),
                "max_s": round(max(gaps), 1),
            }
        )
    out += [{"fact": "example", **e} for e in examples]
    return out


def _received_ms(record_key: str, ingested: int) -> int:
    """The delivery time a record key carries after its last '|' (notify logs: the receipt time)."""
    tail = record_key.rsplit("|", 1)[-1]
    for parse in (lambda t: datetime.fromisoformat(t), lambda t: datetime.fromtimestamp(float(t), UTC)):
        try:
            moment = parse(tail)
        except (ValueError, OverflowError, OSError):
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    return int(ingested)


def probe_fast_cancel(ctx: Context) -> list[Finding]:
    """Paid orders cancelled within the fast-cancel limit: a cancel rule misfiring, by channel/hour."""
    scan = ctx.scan()
    bad = scan.fast
    if not bad:
        return []
    ratio = len(bad) / scan.orders if scan.orders else 0.0
    found = concentration(ctx, bad, ALL_PAID)
    paid_i, cancel_i = _C["paid_at"], _C["cancelled_at"]
    delays = [(r[cancel_i] - r[paid_i]) / 1000 for r in bad]
    ordered = sorted(bad, key=lambda r: r[paid_i])
    evidence = [
        {"fact": "fast_cancels", "count": len(bad), "paid_orders": scan.orders, "ratio": round(ratio, 4)},
        {
            "fact": "cancel_delay",
            "median_s": round(statistics.median(delays), 1),
            "max_s": round(max(delays), 1),
        },
        {"fact": "time_span", "from": ctx.local(ordered[0][paid_i]), "to": ctx.local(ordered[-1][paid_i])},
        *({"fact": "concentration", **e} for e in found[:3]),
    ]
    score = 0.0
    if len(bad) >= MIN_ORDERS and ratio >= 0.01:
        score = 0.55 + 0.3 * _scaled(ratio, 0.06) + (0.1 if found else 0.0)
    where = concentration_text(ctx, found, 2)
    title = f"{len(bad)} 单付款后 {statistics.median(delays):.0f} 秒内被取消（{ratio:.1%}）" + (
        f"，{where}" if where else ""
    )
    return [
        Finding("fast_cancel", title, evidence, _ids(ordered), "cancel_misfire", min(score, 0.95), len(bad))
    ]


def probe_amount_mismatch(ctx: Context) -> list[Finding]:
    """Paid amount (payment notify) differing from the order amount: by SKU and channel."""
    scan = ctx.scan()
    bad = scan.mismatch
    if not bad:
        return []
    ratio = len(bad) / scan.orders if scan.orders else 0.0
    found = concentration(ctx, bad, ALL_PAID, ("sku", "channel", "payment_method", "hour"))
    a_i, p_i = _C["amount_fen"], _C["paid_amount_fen"]
    diffs = Counter(r[p_i] - r[a_i] for r in bad)
    evidence = [
        {"fact": "amount_mismatch", "count": len(bad), "orders": scan.orders, "ratio": round(ratio, 4)},
        {"fact": "differences_fen", "most_common": [[d, n] for d, n in diffs.most_common(5)]},
        *({"fact": "concentration", **e} for e in found[:3]),
        *(
            {
                "fact": "example",
                "order": r[0],
                "amount_fen": r[a_i],
                "paid_amount_fen": r[p_i],
                "sku": r[_C["sku"]],
            }
            for r in bad[:5]
        ),
    ]
    score = 0.0
    if len(bad) >= MIN_ORDERS and ratio >= 0.003:
        score = 0.5 + 0.3 * _scaled(ratio, 0.05) + (0.15 if found else 0.0)
    where = concentration_text(ctx, found, 2)
    title = f"{len(bad)} 单实付金额与订单金额不符" + (f"（{where}）" if where else "")
    return [
        Finding("amount_mismatch", title, evidence, _ids(bad), "price_mismatch", min(score, 0.95), len(bad))
    ]


def probe_clock_skew(ctx: Context) -> list[Finding]:
    """Events in the future and milestones before payment, per source: whole-hour offsets mean a
    system writes local time labelled as UTC (or the reverse)."""
    scan = ctx.scan()
    future = scan.future
    disorder = scan.disorder
    extra = ctx.sql.rows(
        "SELECT global_id FROM orders WHERE last_event_at > :cut", {"cut": ctx.now_ms + FUTURE_SLACK_MS}
    )
    known = {r[0] for r in future}
    future_ids = [r[0] for r in future] + [g for (g,) in extra if g not in known]
    if len(future_ids) + len(disorder) < MIN_ORDERS:
        return []
    offsets: dict[str, list[float]] = {}
    sample = future_ids[:100] + [r[0] for r in disorder[:100]]
    marks = ", ".join(f":g{i}" for i in range(len(sample)))
    paid_at = dict(
        ctx.sql.rows(
            f"SELECT global_id, paid_at FROM orders WHERE global_id IN ({marks})",
            {f"g{i}": g for i, g in enumerate(sample)},
        )
    )
    for gid, source, _key, state, at, ingested in observation_rows(ctx.sql.rows, sample):
        paid = paid_at.get(gid)
        if at > ingested + FUTURE_SLACK_MS:
            offsets.setdefault(source, []).append((at - ingested) / 3_600_000)
        elif state != "paid" and paid is not None and at < paid - DISORDER_MS:
            offsets.setdefault(source, []).append((at - paid) / 3_600_000)
    findings = []
    for source, hours in sorted(offsets.items(), key=lambda kv: -len(kv[1])):
        med = statistics.median(hours)
        whole = round(med)
        near_whole = whole != 0 and sum(1 for h in hours if abs(h - whole) <= 0.6) / len(hours) >= 0.6
        evidence = [
            {"fact": "events_in_future", "orders": len(future_ids)},
            {"fact": "milestones_before_payment", "orders": len(disorder)},
            {
                "fact": "offset",
                "source": source,
                "median_hours": round(med, 2),
                "whole_hours": whole if near_whole else None,
                "samples": len(hours),
            },
        ]
        score = 0.55 + (0.35 if near_whole else 0.0) + 0.05 * _scaled(len(hours), 20)
        offset = f"整 {whole:+d} 小时" if near_whole else f"约 {med:+.1f} 小时"
        title = f"数据源 {source} 的时间戳偏差{offset}（{len(future_ids)} 单有未来时间，{len(disorder)} 单里程碑早于付款）"
        ids = future_ids[:ORDER_CAP] + [r[0] for r in disorder[: max(0, ORDER_CAP - len(future_ids))]]
        findings.append(
            Finding(
                "clock_skew",
                title,
                evidence,
                ids,
                "timezone_skew",
                min(score, 0.97),
                len(future_ids) + len(disorder),
            )
        )
    return findings


def _stuck_groups(
    ctx: Context, state: str, dims: tuple[str, ...]
) -> tuple[Counter, list[tuple], timedelta | None]:
    """Orders held in `state` past its configured timeout (from entering it, or from the latest
    progress in a progress state: the KPI's stuck clock): counts by dimension value (grouped in SQL
    over the state's index) and the ORDER_CAP longest held, as (global id, clock, paid_at)."""
    timeout = ctx.config.kpi.stuck_timeouts.get(state)
    if timeout is None:
        return Counter(), [], None
    cut = ctx.now_ms - int(timeout.total_seconds() * 1000)
    cols, clock = ", ".join(dims), stuck_clock(state)
    counts: Counter = Counter()
    for *values, n in ctx.sql.rows(
        f"SELECT {cols}, count(*) FROM orders WHERE state = :state AND {clock} <= :cut GROUP BY {cols}",
        {"state": state, "cut": cut},
    ):
        counts[("", "")] += n
        for dim, value in zip(dims, values, strict=True):
            if value:
                counts[(dim, value)] += n
    oldest = ctx.sql.rows(
        f"SELECT global_id, {clock}, paid_at FROM orders WHERE state = :state AND {clock} <= :cut "
        f"ORDER BY {clock} LIMIT {ORDER_CAP}",
        {"state": state, "cut": cut},
    )
    return counts, oldest, timeout


def _state_baseline(ctx: Context, states: tuple[str, ...]) -> dict[tuple[str, str], int]:
    marks = ", ".join(f":s{i}" for i in range(len(states)))
    rows = ctx.sql.rows(
        f"SELECT dim, value, sum(n) FROM state_counts WHERE state IN ({marks}) GROUP BY dim, value",
        {f"s{i}": s for i, s in enumerate(states)},
    )
    return {(dim, value): int(n) for dim, value, n in rows}


def _stuck_in(
    ctx: Context, states: tuple[str, ...], dims: tuple[str, ...]
) -> tuple[Counter, list[tuple], dict[str, timedelta]]:
    """Stuck orders of the states that have a timeout: counts by (dimension, value), the oldest
    rows, and each state's timeout."""
    counts: Counter = Counter()
    oldest: list[tuple] = []
    timeouts: dict[str, timedelta] = {}
    for state in states:
        c, rows, timeout = _stuck_groups(ctx, state, dims)
        if timeout is not None:
            counts += c
            oldest += rows
            timeouts[state] = timeout
    return counts, oldest, timeouts


def _stuck_fact(timeouts: dict[str, timedelta], n_stuck: int, total: int, ratio: float) -> dict:
    return {
        "fact": "stuck_orders",
        "states": list(timeouts),
        "count": n_stuck,
        "in_states": total,
        "ratio": round(ratio, 4),
        "timeouts_s": {s: int(t.total_seconds()) for s, t in timeouts.items()},
    }


def _stuck_finding(
    ctx: Context, states: tuple[str, ...], dims: tuple[str, ...], cause: str, probe: str
) -> list[Finding]:
    counts, oldest, timeouts = _stuck_in(ctx, states, dims)
    n_stuck = counts[("", "")]
    if not n_stuck:
        return []
    # Milestones stamped hours before payment are clock skew, not a stall.
    skewed = sum(1 for _, _, paid in oldest if paid is not None and _ < paid - DISORDER_MS)
    base = _state_baseline(ctx, states)
    total = max(base.get(("", ""), 0), n_stuck)
    # Concentration against all the window's orders: the state's own population is mostly the stuck.
    picks = []
    for dim in dims:
        values = [(v, n) for (d, v), n in counts.items() if d == dim]
        if values:
            value, n = max(values, key=lambda vn: (vn[1], vn[0]))
            if n / n_stuck >= 0.5:
                picks.append((dim, value, n))
    found = []
    if picks:
        orders, base_counts = ctx.scan().baseline(ctx, ALL_PAID, [(d, v) for d, v, _ in picks])
        found = [
            over_represented(d, v, n, n_stuck, n_base, orders)
            for (d, v, n), n_base in zip(picks, base_counts, strict=True)
        ]
        found = [e for e in found if e is not None]
    found.sort(key=lambda e: -e["bad_share"] * min(e["lift"], 20))
    ratio = n_stuck / total if total else 1.0
    oldest.sort(key=lambda r: r[1])
    evidence = [
        _stuck_fact(timeouts, n_stuck, total, ratio),
        {"fact": "oldest_since", "at": ctx.local(oldest[0][1])},
        *({"fact": "concentration", **e} for e in found[:3]),
    ]
    score = 0.0
    if n_stuck >= MIN_ORDERS and ratio >= 0.03:
        score = 0.3 + 0.3 * _scaled(ratio, 0.3) + (0.3 if found else 0.0)
        if oldest and skewed / len(oldest) > 0.5:
            score *= 0.3
            evidence.append({"fact": "stamped_before_payment", "orders": skewed, "of_listed": len(oldest)})
    where = concentration_text(ctx, found, 2)
    names = "/".join(STATE_LABELS_ZH.get(s, s) for s in timeouts)
    title = f"{n_stuck} 单停在「{names}」超过时限（占该状态 {ratio:.0%}）" + (f"，{where}" if where else "")
    return [
        Finding(probe, title, evidence, [r[0] for r in oldest[:ORDER_CAP]], cause, min(score, 0.95), n_stuck)
    ]


def probe_pick_pack(ctx: Context) -> list[Finding]:
    """Picked but not packed past the timeout (12 min), now (the state index) and over the KPI window
    (packed late, a stall that has since cleared): which warehouse."""
    findings = _stuck_finding(
        ctx, ("picked",), ("warehouse", "channel", "carrier"), "pick_pack_stall", "pick_pack_stall"
    )
    scan = ctx.scan()
    slow = scan.slow_pack
    if len(slow) < MIN_ORDERS:
        return findings
    picked, _ = scan.baseline(ctx, PICKED, [])
    ratio = len(slow) / picked if picked else 0.0
    found = concentration(ctx, slow, PICKED, ("warehouse", "channel", "carrier", "hour"))
    pick_i = _C["picked_at"]
    waits = sorted(
        next((r[i] for i in _AFTER_PICK if r[i] is not None), ctx.now_ms) - r[pick_i] for r in slow
    )
    ordered = sorted(slow, key=lambda r: r[pick_i])
    evidence = [
        {"fact": "slow_packing", "count": len(slow), "picked_orders": picked, "ratio": round(ratio, 4)},
        {
            "fact": "pack_wait",
            "median_s": round(statistics.median(waits) / 1000),
            "max_s": round(waits[-1] / 1000),
        },
        {"fact": "time_span", "from": ctx.local(ordered[0][pick_i]), "to": ctx.local(ordered[-1][pick_i])},
        *({"fact": "concentration", **e} for e in found[:3]),
    ]
    score = 0.0
    if ratio >= 0.03:
        score = (
            0.3 + 0.3 * _scaled(ratio, 0.3) + (0.3 if any(e["dimension"] != "hour" for e in found) else 0.0)
        )
    where = concentration_text(ctx, [e for e in found if e["dimension"] != "hour"], 2)
    title = (
        f"{ctx.span(ordered[0][pick_i], ordered[-1][pick_i])} {len(slow)} 单拣货后超时才打包"
        f"（等待中位 {statistics.median(waits) / 60000:.0f} 分钟）" + (f"，{where}" if where else "")
    )
    findings.append(
        Finding(
            "pick_pack_stall", title, evidence, _ids(ordered), "pick_pack_stall", min(score, 0.95), len(slow)
        )
    )
    return findings


TRACKING_STATES = ("shipped", "in_transit")  # shipped: when it has a timeout (no first scan)
TRACKING_DIMS = ("carrier", "city", "province", "warehouse", "channel")


def probe_tracking(ctx: Context) -> list[Finding]:
    """Parcels with no tracking update past the timeout (in transit: no carrier scan for 4 h, from
    the newest scan): which carrier and city against the parcels on the way, their last scans, and
    whether the tracking feed itself still brings news (other parcels' scans keep arriving: a hub
    stopped scanning, not the feed)."""
    counts, oldest, timeouts = _stuck_in(ctx, TRACKING_STATES, TRACKING_DIMS)
    n_stuck = counts[("", "")]
    if not n_stuck:
        return []
    base = _state_baseline(ctx, tuple(timeouts))  # the parcels on the way, by dimension value
    total = max(base.get(("", ""), 0), n_stuck)
    found = []
    for dim in TRACKING_DIMS:
        values = [(v, n) for (d, v), n in counts.items() if d == dim]
        if values:
            value, n = max(values, key=lambda vn: (vn[1], vn[0]))
            e = over_represented(dim, value, n, n_stuck, base.get((dim, value), 0), total)
            if e is not None:
                found.append(e)
    found.sort(key=lambda e: -e["bad_share"] * min(e["lift"], 20))
    first, last = _last_scans(ctx, timeouts)
    fresh = _fresh_tracks(ctx, timeouts.get("in_transit"))
    stalled_carrier = next((e["value"] for e in found if e["dimension"] == "carrier"), None)
    fresh_elsewhere = sum(n for carrier, n, _ in fresh if carrier != stalled_carrier)
    feeds = _tracking_feeds(ctx)
    feed_down = [f["source"] for f in feeds if not f["up"]]
    ratio = n_stuck / total if total else 1.0
    oldest.sort(key=lambda r: r[1])
    skewed = sum(1 for _, clock, paid in oldest if paid is not None and clock < paid - DISORDER_MS)
    evidence = [
        _stuck_fact(timeouts, n_stuck, total, ratio),
        {"fact": "last_scans", "earliest": ctx.local(first), "latest": ctx.local(last)},
        *({"fact": "concentration", **e} for e in found[:3]),
        {
            "fact": "tracking_feed",
            "sources": feeds,
            "parcels_updated_within_timeout": sum(n for _, n, _ in fresh),
            "elsewhere": fresh_elsewhere,
            "by_carrier": [
                {"carrier": carrier, "parcels": n, "newest_scan": ctx.local(newest)}
                for carrier, n, newest in fresh[:5]
            ],
        },
    ]
    score = 0.0
    if n_stuck >= MIN_ORDERS:
        score = 0.35 + 0.2 * _scaled(ratio, 0.3) + (0.3 if found else 0.0) + (0.1 if fresh_elsewhere else 0.0)
        if feed_down or not fresh_elsewhere:
            score *= 0.5  # no news from anywhere: the feed stopped (source health), not one hub
        if oldest and skewed / len(oldest) > 0.5:
            score *= 0.3
            evidence.append({"fact": "stamped_before_payment", "orders": skewed, "of_listed": len(oldest)})
    where = concentration_text(ctx, found, 2)
    silence = "/".join(_hours_text(t) for t in dict.fromkeys(timeouts.values()))
    title = f"{n_stuck} 单在途包裹超过 {silence}无物流更新（占在途 {ratio:.1%}）" + (
        f"，{where}" if where else ""
    )
    if fresh_elsewhere and not feed_down:
        title += f"；其余 {fresh_elsewhere} 单轨迹仍在更新，轨迹数据源正常"
    elif feed_down:
        title += f"；轨迹数据源 {'、'.join(feed_down)} 异常"
    return [
        Finding(
            "tracking_stall",
            title,
            evidence,
            [r[0] for r in oldest[:ORDER_CAP]],
            "tracking_stall",
            min(score, 0.95),
            n_stuck,
        )
    ]


def _hours_text(t: timedelta) -> str:
    minutes = int(t.total_seconds() // 60)
    return f"{minutes // 60} 小时" if minutes % 60 == 0 else f"{minutes} 分钟"


def _last_scans(ctx: Context, timeouts: dict[str, timedelta]) -> tuple[int | None, int | None]:
    """The earliest and the latest last update of the stuck parcels (the latest: about when the
    scans stopped)."""
    first = last = None
    for state, timeout in timeouts.items():
        clock = stuck_clock(state)
        low, high = ctx.sql.rows(
            f"SELECT min({clock}), max({clock}) FROM orders WHERE state = :state AND {clock} <= :cut",
            {"state": state, "cut": ctx.now_ms - int(timeout.total_seconds() * 1000)},
        )[0]
        if low is not None:
            first = low if first is None else min(first, low)
            last = high if last is None else max(last, high)
    return first, last


def _fresh_tracks(ctx: Context, timeout: timedelta | None) -> list[tuple[str, int, int]]:
    """Parcels in transit scanned within the timeout, per carrier: (carrier, parcels, newest scan),
    most first. Scans still arriving say the tracking feed works."""
    if timeout is None:
        return []
    clock = stuck_clock("in_transit")
    rows = ctx.sql.rows(
        f"SELECT carrier, count(*), max({clock}) FROM orders WHERE state = 'in_transit' "
        f"AND {clock} > :cut GROUP BY carrier",
        {"cut": ctx.now_ms - int(timeout.total_seconds() * 1000)},
    )
    return sorted(((c or "", int(n), int(at)) for c, n, at in rows), key=lambda r: (-r[1], r[0]))


def _tracking_feeds(ctx: Context) -> list[dict]:
    """Health of the carrier-role sources (the tracking feed)."""
    out = []
    for name in ctx.sources_with_role("carrier"):
        h = ctx.health_of(name)
        if h is None:
            continue
        success = h.get("last_success_at")
        if isinstance(success, datetime):
            success = int(success.timestamp() * 1000)
        out.append(
            {
                "source": name,
                "up": bool(h["up"]),
                "last_success_at": ctx.local(success),
                "errors": json.loads(h.get("errors_json") or "{}"),
            }
        )
    return out


RETURN_HANDOFF = ("return_approved", "return_awaiting_receipt")  # CS approved, the warehouse has not got it


def probe_returns(ctx: Context) -> list[Finding]:
    """Returns held between CS approval and the warehouse: with the channel APIs healthy, the hand-off
    (the return queue) lost them; queue depth and consumers from queue-metric sources when present."""
    counts: Counter = Counter()
    oldest: list[tuple] = []
    for state in RETURN_HANDOFF:
        c, rows, _timeout = _stuck_groups(ctx, state, ("channel",))
        counts += c
        oldest += rows
    n_stuck = counts[("", "")]
    queue = _queue_health(ctx)
    if n_stuck < MIN_ORDERS and not queue:
        return []
    base = _state_baseline(ctx, RETURN_HANDOFF)
    total = max(base.get(("", ""), 0), n_stuck)
    channels = {v for (d, v) in counts if d == "channel"}
    auth = [b for b in _broken_sources(ctx, channels) if b["errors"].get("auth_expired")]
    evidence = [
        {"fact": "returns_stuck_after_approval", "count": n_stuck, "in_states": total},
        *({"fact": "queue", **q} for q in queue),
        *({"fact": "channel_source_auth_failing", **b} for b in auth),
    ]
    consumers_gone = any(q.get("consumers") == 0 for q in queue)
    score = 0.0
    if consumers_gone:
        score = 0.9
    elif n_stuck >= MIN_ORDERS:
        score = 0.5 + 0.2 * _scaled(n_stuck / total if total else 0, 0.5)
    if auth:
        score *= 0.5  # the channel rejects our key: api_key_rotated explains the stall better
    q = f"，队列消费者 {queue[0].get('consumers')}" if queue and queue[0].get("consumers") is not None else ""
    title = f"{n_stuck} 单退货在客服审核后未到仓库{q}"
    return [
        Finding(
            "returns_handoff",
            title,
            evidence,
            [r[0] for r in sorted(oldest, key=lambda r: r[1])[:ORDER_CAP]],
            "mq_consumers_gone",
            min(score, 0.95),
            n_stuck,
        )
    ]


def _queue_health(ctx: Context) -> list[dict]:
    """Queue metrics kept as source health rows by queue sources (role or name mentions a queue)."""
    out = []
    for h in ctx.health:
        name = h["source"]
        src = ctx.config.sources.get(name)
        kind = getattr(src, "kind", "") if src else ""
        watched = name in ctx.config.queues  # [queues.NAME]: the service's queue-depth monitor
        if not watched and "queue" not in name and "mq" not in name and kind not in ("rabbitmq", "queue"):
            continue
        extra = {}
        # The service's health rows carry queue_messages / queue_consumers / queue_oldest_age_seconds.
        for key, alias in (("depth", "queue_messages"), ("consumers", "queue_consumers"),
                           ("oldest_age_seconds", "queue_oldest_age_seconds")):  # fmt: skip
            value = h.get(key, h.get(alias))
            if value is not None:
                extra[key] = value
        out.append(
            {"source": name, "up": bool(h["up"]), "last_error_class": h.get("last_error_class"), **extra}
        )
    return out


def _latest_snapshot(ctx: Context, kpis: set[str]):
    """The latest KPI snapshot's series of `kpis`, read through the probe's transaction."""
    from metrics.snapshot import KpiValue, Snapshot, labels_of

    head = ctx.sql.rows(
        "SELECT id, computed_at FROM kpi_snapshots ORDER BY computed_at DESC, id DESC LIMIT 1"
    )
    if not head or not kpis:
        return None
    marks = ", ".join(f":k{i}" for i in range(len(kpis)))
    rows = ctx.sql.rows(
        f"SELECT kpi, labels, value FROM kpi_values WHERE snapshot_id = :sid AND kpi IN ({marks})",
        {"sid": head[0][0], **{f"k{i}": k for i, k in enumerate(sorted(kpis))}},
    )
    values = tuple(KpiValue(kpi, labels_of(json.loads(labels)), value) for kpi, labels, value in rows)
    return Snapshot(datetime.fromtimestamp(head[0][1] / 1000, UTC), values)


def _rule_orders(ctx: Context, kpi: str | None, labels: dict) -> list[str]:
    """The window's orders behind a rule's KPI series (as the order probes classify them)."""
    scan = ctx.scan()
    pick = {
        "sync_success_ratio": scan.unreached,
        "order_loss_ratio": scan.lost,
        "duplicate_free_ratio": scan.duplicated,
        "fast_cancel_ratio": scan.fast,
        "amount_mismatch_ratio": scan.mismatch,
        "amount_mismatch_orders": scan.mismatch,
    }.get(kpi or "", [])
    channel = labels.get("channel")
    return [r[0] for r in pick if channel is None or r[_C["channel"]] == channel][:ORDER_CAP]


def probe_rule_hits(ctx: Context) -> list[Finding]:
    """Which alert rules fire or are pending (the alerts table), which would fire on the latest
    snapshot (condition met, `for` not yet served or not evaluated yet), and on which orders."""
    from alerts.engine import DENOMINATOR, AlertEngine

    rows = ctx.sql.rows(
        "SELECT rule, labels, state, value, fired_at FROM alerts WHERE state IN ('pending', 'firing')"
    )
    active = {(rule, labels) for rule, labels, *_ in rows}
    rules = [r for r in ctx.config.alerts.rules if r.kpi is not None]
    kpis = {r.kpi for r in rules} | {DENOMINATOR[r.kpi] for r in rules if r.kpi in DENOMINATOR}
    snapshot = _latest_snapshot(ctx, kpis)
    would = []
    if snapshot is not None:
        for rule in rules:
            for series in AlertEngine._watched(rule, snapshot):
                key = (rule.name, json.dumps(series.label_dict, sort_keys=True, ensure_ascii=False))
                if key not in active and AlertEngine._condition(rule, series, snapshot):
                    would.append((rule, series))
    if not rows and not would:
        return []
    by_name = {r.name: r for r in ctx.config.alerts.rules}
    evidence, orders = [], []
    for rule_name, labels, state, value, fired_at in sorted(rows, key=lambda r: (r[2] != "firing", r[0]))[
        :20
    ]:
        label_dict = json.loads(labels)
        rule = by_name.get(rule_name)
        hit = _rule_orders(ctx, rule.kpi if rule else None, label_dict)
        orders += [o for o in hit if o not in orders]
        evidence.append(
            {
                "fact": "alert",
                "rule": rule_name,
                "labels": label_dict,
                "state": state,
                "value": value,
                "since": _iso(ctx, fired_at),
                "orders": len(hit),
            }
        )
    for rule, series in would[:20]:
        hit = _rule_orders(ctx, rule.kpi, series.label_dict)
        orders += [o for o in hit if o not in orders]
        evidence.append(
            {
                "fact": "would_fire",
                "rule": rule.name,
                "labels": series.label_dict,
                "value": series.value,
                "op": rule.op,
                "threshold": rule.threshold,
                "orders": len(hit),
            }
        )
    firing = sum(1 for r in rows if r[2] == "firing")
    names = "、".join(sorted({r[0] for r in rows} | {rule.name for rule, _ in would})[:5])
    title = f"{firing} 条告警触发中，{len(rows) - firing} 条待定，{len(would)} 条按最新指标将触发：{names}"
    return [Finding("rule_hits", title, evidence, orders[:ORDER_CAP], order_count=len(orders))]


PROBES: dict[str, Callable[[Context], list[Finding]]] = {
    "sync_gap": probe_sync_gap,
    "erp_pull": probe_erp_pull,
    "order_loss": probe_order_loss,
    "source_errors": probe_source_errors,
    "duplicates": probe_duplicates,
    "fast_cancel": probe_fast_cancel,
    "amount_mismatch": probe_amount_mismatch,
    "clock_skew": probe_clock_skew,
    "pick_pack_stall": probe_pick_pack,
    "tracking_stall": probe_tracking,
    "returns_handoff": probe_returns,
    "rule_hits": probe_rule_hits,
}
