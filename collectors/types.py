"""What collectors produce: canonical observations, quarantined records, batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# Dimensions an observation may carry onto its order (PRODUCT.md dimensions + amounts).
DIMENSIONS = ("warehouse", "carrier", "province", "city", "sku", "payment_method", "cs_group")
# Optional buyer personal data an observation may carry (stored apart, shown masked: metrics/pii.py).
PII_FIELDS = ("buyer_name", "phone", "address", "district")


@dataclass(frozen=True, slots=True)
class Observation:
    """One canonical fact: order `raw_order_id` of `channel` was in `state` at `at` (UTC)."""

    source: str
    record_key: str  # unique within the source; the same key twice is one fact
    channel: str
    raw_order_id: str
    state: str
    at: datetime
    dims: dict[str, str] = field(default_factory=dict)
    amount_fen: int | None = None
    created_at: datetime | None = None
    notified_at: datetime | None = None  # when a payment callback about it was sent (callback delay)
    pii: dict[str, str] = field(default_factory=dict)  # PII_FIELDS -> value, as the source gave it
    manual_at: datetime | None = None  # the record shows a manual action (mapping `manual`), at this time
    # The latest progress the record shows in `state` (mapping `progress_time`, e.g. the newest
    # carrier scan): news without a new state. A repeated record still carries it to its order.
    progress_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record that could not be mapped, kept with the reason naming its field."""

    source: str
    record_key: str
    field: str
    reason: str
    raw: str  # the record as received (JSON text or the raw line)


@dataclass(slots=True)
class Batch:
    """One page of a poll: written in one transaction together with `cursor`."""

    source: str
    observations: list[Observation] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    cursor: str | None = None  # new cursor to commit with this batch; None keeps the old one
    records: int = 0  # raw records read in this batch
    max_event_at: datetime | None = None  # newest source time seen (for lag)


class Collector(Protocol):
    name: str

    def poll(self, cursor: str | None, now: datetime) -> Iterator[Batch]:
        """Read what changed since `cursor`; raise a collectors.errors.SourceError on failure."""
        ...


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
