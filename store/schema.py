"""Tables (SQLAlchemy 2 Core). Times are UTC epoch milliseconds (BIGINT) for portable, fast SQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)

from collectors.types import DIMENSIONS
from store.lifecycle import PROGRESS_STATES, STATE_DIMENSIONS, STATES, WMS_REACHED, milestone_column


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class EpochMs(TypeDecorator):
    """Aware datetime in Python, UTC epoch milliseconds in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or isinstance(value, int):
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime cannot be stored; use UTC-aware datetimes")
        return to_ms(value)

    def process_result_value(self, value, dialect):
        return None if value is None else from_ms(int(value))


metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("global_id", String(48), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("raw_order_id", String(128), nullable=False),
    Column("state", String(32), nullable=False),
    Column("state_rank", Integer, nullable=False),
    Column("state_at", EpochMs, nullable=False),
    *[Column(milestone_column(s), EpochMs) for s in STATES],
    Column("amount_fen", BigInteger),  # the order's amount, from the first non-payment source that gives it
    Column("paid_amount_fen", BigInteger),  # what the payment notify says was paid
    Column("callback_delay_ms", BigInteger),  # the first payment notify's time after the payment
    Column("manual_at", EpochMs),  # a record showed a person handling the order (mapping `manual`), first at
    Column("channel_shipped_at", EpochMs),  # a channel source first showed it shipped (or later): write-back
    # The newest progress reported in the current state (mapping `progress_time`, e.g. the newest
    # carrier scan) when later than entering it; reset when the state changes. PROGRESS_STATES are
    # stuck from COALESCE(progress_at, state_at).
    Column("progress_at", EpochMs),
    *[Column(d, String(64)) for d in DIMENSIONS],
    Column("first_seen_at", EpochMs, nullable=False),
    Column("seen_roles", Integer, nullable=False),  # bit set of the source roles that showed it (ROLE_BITS)
    Column("duplicate_records", Integer, nullable=False),  # repeated deliveries of one source's state
    # The (source, state) facts delivered so far: a bit set (hex) over fact_codes, so an order read
    # back needs no scan of its observations to tell a repeat from a first delivery.
    Column("facts", String(255)),
    Column("last_event_at", EpochMs, nullable=False),  # the latest milestone (bounds dwell scans)
    Column("updated_at", EpochMs, nullable=False),
    # A 4-byte digest of each delivered record's key, in delivery order (store/records.py): what the
    # ingest keeps in memory to tell a new record from a stored one. NULL in rows of older versions.
    Column("record_keys", LargeBinary),
    # The order's newest record_log row (its records are a chain back from it). NULL in rows of older
    # versions, whose records are in order_records or observations.
    Column("records_tail", BigInteger),
    # Covering the stuck query (state, time in state, its dimensions): an index-only range scan.
    Index("ix_orders_state", "state", "state_at", *STATE_DIMENSIONS),
    Index("ix_orders_paid", "paid_at"),
    Index("ix_orders_last_event", "last_event_at"),
    # The per-hop sync cells (metrics/kpi.py): index-only range scans over the orders the ERP accepted
    # / that shipped in the window. Partial, so orders without the milestone cost nothing to index.
    Index(
        "ix_orders_erp_hop",
        "erp_accepted_at",
        "channel",
        "cancelled_at",
        "closed_at",
        *(milestone_column(s) for s in WMS_REACHED),
        sqlite_where=text("erp_accepted_at IS NOT NULL"),
        postgresql_where=text("erp_accepted_at IS NOT NULL"),
    ),
    Index(
        "ix_orders_ship_hop",
        "shipped_at",
        "channel",
        "seen_roles",
        "channel_shipped_at",
        sqlite_where=text("shipped_at IS NOT NULL"),
        postgresql_where=text("shipped_at IS NOT NULL"),
    ),
)

# The stuck query of each progress state (in transit: no carrier scan for 4 h) ranges over its stuck
# clock, COALESCE(progress_at, state_at): an index-only scan (the clock's columns ride along);
# partial, so other states' rows and updates cost nothing here.
for _state in PROGRESS_STATES:
    Index(
        f"ix_orders_{_state}_progress",
        orders.c.state,
        func.coalesce(orders.c.progress_at, orders.c.state_at),
        *(orders.c[d] for d in STATE_DIMENSIONS),
        orders.c.progress_at,
        orders.c.state_at,
        sqlite_where=text(f"state = '{_state}'"),
        postgresql_where=text(f"state = '{_state}'"),
    )

# Orders per open state, by one dimension at a time (dim "" = all): kept by the ingest, in the
# batch's transaction, so state counts never need a scan of the orders.
state_counts = Table(
    "state_counts",
    metadata,
    Column("state", String(32), primary_key=True),
    Column("dim", String(16), primary_key=True),
    Column("value", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

order_ids = Table(
    "order_ids",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("raw_order_id", String(128), primary_key=True),
    Column("global_id", String(48), nullable=False, unique=True),
    sqlite_with_rowid=False,
)

# The bit of each (source, state) pair in orders.facts, numbered in order of first delivery.
fact_codes = Table(
    "fact_codes",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("state", String(32), primary_key=True),
    Column("code", Integer, nullable=False, unique=True),
)

id_sequences = Table(
    "id_sequences",
    metadata,
    Column("prefix", String(32), primary_key=True),  # e.g. TB_20260212
    Column("last_seq", BigInteger, nullable=False),
)

# Every record delivered, as the evidence (store/records.py): one row per plan and order with that
# plan's records of it (a JSON list), appended in seq order, so a group's records fill a few new
# pages at the end of the table instead of rewriting a row per order in the middle of one.
# Each row points to the order's previous row; orders.records_tail to its newest.
record_log = Table(
    "record_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("global_id", String(48), nullable=False),
    Column("prev_seq", BigInteger),
    Column("records", Text, nullable=False),
)

# Where the previous version kept each order's records (a JSON list per order); read for orders whose
# row has no records_tail, and moved into record_log when the ingest next touches the order.
order_records = Table(
    "order_records",
    metadata,
    Column("global_id", String(48), primary_key=True),
    Column("records", Text, nullable=False),
    # A 4-byte digest per record's key, in the list's order (store/records.py): what the ingest reads
    # and keeps in memory to tell a new record from a stored one. NULL in rows of older versions.
    Column("record_keys", LargeBinary),
    sqlite_with_rowid=False,
)

# Where older versions kept each order's records; no longer written, read only for orders that have
# neither a records_tail nor an order_records row (store/records.py).
observations = Table(
    "observations",
    metadata,
    Column("global_id", String(48), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("record_key", String(255), primary_key=True),
    Column("state", String(32), nullable=False),
    Column("at", EpochMs, nullable=False),
    Column("ingested_at", EpochMs, nullable=False),
    sqlite_with_rowid=False,
)

cursors = Table(
    "cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", EpochMs, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("source", String(64), nullable=False),
    Column("record_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("field", String(255), nullable=False),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("at", EpochMs, nullable=False),
    UniqueConstraint("source", "fingerprint", name="uq_quarantine_source_fp"),
)

source_health = Table(
    "source_health",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("up", Boolean, nullable=False),
    Column("last_attempt_at", EpochMs),
    Column("last_success_at", EpochMs),
    Column("last_error_at", EpochMs),
    Column("last_error_class", String(32)),
    Column("last_error", Text),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("records_total", BigInteger, nullable=False, default=0),
    Column("observations_total", BigInteger, nullable=False, default=0),
    Column("quarantined_total", BigInteger, nullable=False, default=0),
    Column("errors_json", Text, nullable=False, default="{}"),  # error class -> count
    Column("lag_seconds", Float),
)

kpi_snapshots = Table(
    "kpi_snapshots",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("computed_at", EpochMs, nullable=False),
    Column("duration_seconds", Float, nullable=False),
)

kpi_values = Table(
    "kpi_values",
    metadata,
    Column("snapshot_id", BigInteger, nullable=False),
    Column("kpi", String(64), nullable=False),
    Column("labels", String(255), nullable=False),  # canonical JSON, sorted keys
    Column("value", Float, nullable=False),
    Index("ix_kpi_values_snapshot", "snapshot_id", "kpi"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("rule", String(128), nullable=False),
    Column("labels", String(255), nullable=False),  # canonical JSON, sorted keys
    Column("state", String(16), nullable=False),  # pending, firing, resolved
    Column("severity", String(8)),
    Column("value", Float),
    Column("pending_since", EpochMs),
    Column("fired_at", EpochMs),
    Column("resolved_at", EpochMs),
    Column("last_notified_at", EpochMs),
    Column("updated_at", EpochMs, nullable=False),
    Index("ix_alerts_state", "state"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dedup_key", String(255), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("route", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # firing, repeat, resolved
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending, sent, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("parts_sent", Integer, nullable=False, default=0),  # parts of a split body already accepted
    Column("created_at", EpochMs, nullable=False),
    Column("next_attempt_at", EpochMs),
    Column("sent_at", EpochMs),
    Column("response", Text),  # the receiver's answer (sent) or the failure reason (failed/retrying)
    Index("ix_outbox_status", "status", "id"),
)

# -- alert lifecycle (alerts/engine.py) ---------------------------------------------------------
# One row per alert notification (firing, repeat, resolved, escalate) before it is grouped into an
# outbox message; `alert` is the structured alert (JSON) the notifiers receive beside the markdown.
alert_notices = Table(
    "alert_notices",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("dedup_key", String(255), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("route", String(64), nullable=False),
    Column("group_key", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # firing, repeat, resolved, escalate
    Column("alert", Text, nullable=False),
    Column("body", Text, nullable=False),  # this alert's own markdown
    Column("status", String(16), nullable=False),  # queued, batched, suppressed
    Column("reason", Text),  # why it was suppressed (silence id, inhibiting alert)
    Column("outbox_id", BigInteger),
    Column("created_at", EpochMs, nullable=False),
    Index("ix_alert_notices_status", "status", "route"),
    Index("ix_alert_notices_outbox", "outbox_id"),
)

# When each (route, group) last sent a digest: group_wait / group_interval are measured from it.
alert_groups = Table(
    "alert_groups",
    metadata,
    Column("route", String(64), primary_key=True),
    Column("group_key", String(255), primary_key=True),
    Column("last_flush_at", EpochMs, nullable=False),
)

# Silences: matchers (JSON list of {name, value, regex}) muting notifications between starts and ends.
silences = Table(
    "silences",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("matchers", Text, nullable=False),
    Column("starts_at", EpochMs, nullable=False),
    Column("ends_at", EpochMs, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_at", EpochMs, nullable=False),
    Column("expired_by", String(128)),  # who ended it early (audit)
    Index("ix_silences_ends", "ends_at"),
)

# Acknowledgements, one per firing episode (fired_at) of an alert: stop escalation and repeats.
alert_acks = Table(
    "alert_acks",
    metadata,
    Column("fingerprint", String(64), primary_key=True),
    Column("fired_at", EpochMs, primary_key=True),
    Column("acked_by", String(128), nullable=False),
    Column("acked_at", EpochMs, nullable=False),
    Column("comment", Text, nullable=False, default=""),
)

# -- dashboard ------------------------------------------------------------------------------------
# Buyer personal data (name, phone, address, district) of an order, kept apart from the orders so
# only code that masks it reads it (metrics/pii.py); the latest non-empty value of each field wins.
order_pii = Table(
    "order_pii",
    metadata,
    Column("global_id", String(48), primary_key=True),
    Column("buyer_name", String(255)),
    Column("phone", String(255)),
    Column("address", Text),
    Column("district", String(64)),
    Column("updated_at", EpochMs, nullable=False),
)

# Who did what on the dashboard: logins (and failed ones), CSV exports, silences, acknowledgements.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", EpochMs, nullable=False),
    Column("user", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False),  # login, login_failed, export, silence, expire, ack
    Column("detail", Text, nullable=False, default="{}"),  # JSON, never a password or PII
    Index("ix_audit_log_at", "at"),
)
