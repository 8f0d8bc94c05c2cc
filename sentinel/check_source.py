"""`python -m sentinel check-source NAME`: read one page of a real source and show what Sentinel
would make of it — mapped canonical rows, records that would be quarantined (field path and
offending value), status values the status_map does not cover — without storing anything.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from collectors.errors import RetryPolicy, SchemaError, SourceError
from collectors.mapping import IGNORE, RecordMapper
from collectors.types import Observation, Quarantined
from sentinel.config import Config

SHOWN_ROWS = 20


class TallyingMapper(RecordMapper):
    """A RecordMapper that also counts the native status values it reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statuses: Counter[str] = Counter()

    def map(self, record: Any) -> list[Observation]:
        if isinstance(record, dict):
            try:
                native = self._native_status(record, self.record_key(record))
            except SchemaError:
                native = None  # the mapping itself reports the missing field
            if native is not None:
                self.statuses[native] += 1
        return super().map(record)


@dataclass
class SourceCheck:
    source: str
    kind: str
    role: str
    records: int = 0
    observations: list[Observation] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # native status value -> records
    status_map: dict[str, str] = field(default_factory=dict)
    status_path: str | None = None
    error: SourceError | None = None

    @property
    def unmapped(self) -> dict[str, int]:
        return {v: n for v, n in self.statuses.items() if v not in self.status_map}

    @property
    def ok(self) -> bool:
        return self.error is None and not self.quarantined and not self.unmapped


def check_source(cfg: Config, name: str, now: datetime) -> SourceCheck:
    """One page of source `name` through its collector and mapping; nothing is written anywhere."""
    from collectors.registry import build_collector

    src = cfg.sources[name]
    mapper = TallyingMapper(name, src.mapping, channel=src.channel)
    result = SourceCheck(
        name,
        src.kind,
        src.effective_role,
        status_map=dict(src.mapping.status_map),
        status_path=src.mapping.status,
    )
    collector = build_collector(name, src, retry=RetryPolicy(delays=()), mapper=mapper)
    pages = collector.poll(_newest(collector, now), now)
    try:
        batch = next(pages, None)
    except SourceError as exc:
        result.error = exc
        return result
    finally:
        pages.close()  # one page only: release the connection or file
    if batch is not None:
        result.records = batch.records
        result.quarantined = list(batch.quarantined)
        result.observations, rejected = _identity(cfg, name, batch.observations)
        result.quarantined += rejected
    result.statuses = mapper.statuses
    return result


def _newest(collector: Any, now: datetime) -> str | None:
    """An API is read from its newest window (what was just modified); other kinds from the start
    of their initial lookback (SQL) or file (logs)."""
    from collectors.http_channel import ChannelApiCollector

    if not isinstance(collector, ChannelApiCollector):
        return None
    preset, overlap = collector.preset, collector.cfg.overlap
    return (now - preset.settle - preset.slice + overlap).isoformat()


def _identity(
    cfg: Config, source: str, obs: list[Observation]
) -> tuple[list[Observation], list[Quarantined]]:
    """The store's identity checks (known channel, the channel's id_pattern), without a store."""
    patterns = {n: re.compile(c.id_pattern) for n, c in cfg.channels.items() if c.id_pattern}
    kept, rejected = [], []
    for o in obs:
        reason = None
        if o.channel not in cfg.channels:
            reason = ("channel", f"field channel: unknown channel {o.channel!r} (not in [channels])")
        elif (pattern := patterns.get(o.channel)) and not pattern.fullmatch(o.raw_order_id):
            reason = (
                "order_id",
                f"field order_id: {o.raw_order_id!r} does not match channels.{o.channel}.id_pattern"
                f" {pattern.pattern!r}",
            )
        if reason is None:
            kept.append(o)
        else:
            rejected.append(Quarantined(source, o.record_key, reason[0], reason[1], ""))
    return kept, rejected


def render(check: SourceCheck, zone: str, out: TextIO, rows: int = SHOWN_ROWS) -> None:
    """The report as text: rows, quarantine, status values."""
    tz = ZoneInfo(zone)
    w = out.write
    w(f"source {check.source} (kind {check.kind}, role {check.role}): one page read, nothing stored\n")
    if check.error is not None:
        w(f"  cannot read [{check.error.error_class}]: {check.error}\n")
        return
    w(
        f"  {check.records} records -> {len(check.observations)} canonical rows, "
        f"{len(check.quarantined)} would be quarantined\n"
    )
    w(f"\nmapped rows 映射结果 (first {min(rows, len(check.observations))} of {len(check.observations)}):\n")
    w(f"  {'channel':<10} {'order_id':<26} {'state':<14} {'at (' + zone + ')':<22} {'amount':>9}  dims\n")
    for o in check.observations[:rows]:
        amount = f"{o.amount_fen / 100:.2f}" if o.amount_fen is not None else "-"
        dims = " ".join(f"{k}={v}" for k, v in sorted(o.dims.items()))
        at = o.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
        w(f"  {o.channel:<10} {o.raw_order_id:<26} {o.state:<14} {at:<22} {amount:>9}  {dims}\n")
    w(f"\nwould be quarantined 将被隔离 ({len(check.quarantined)}):\n")
    for q in check.quarantined:
        w(f"  record {q.record_key}  {q.reason}\n")
    if not check.quarantined:
        w("  none\n")
    w(f"\nstatus values seen 状态值 (path {check.status_path}):\n")
    for value, count in sorted(check.statuses.items(), key=lambda item: (-item[1], item[0])):
        state = check.status_map.get(value)
        target = "NOT MAPPED 未映射" if state is None else ("ignored" if state == IGNORE else state)
        w(f"  {value!r:<24} {count:>6}  -> {target}\n")
    if check.unmapped:
        listed = ", ".join(f"{v!r} ({n})" for v, n in sorted(check.unmapped.items()))
        w(f"\nunmapped status values 未映射的状态值: {listed}\n")
        w(f'  add them to [sources.{check.source}.mapping] status_map (a canonical state, or "ignore")\n')
    w("\nresult: " + ("ok" if check.ok else "needs attention") + "\n")
