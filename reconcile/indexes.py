"""Optional store indexes that let reconciliation skip the full scan (`reconcile.indexes = true`):
a partial index on the orders some reconciled system lacks or whose amounts differ (by payment
time), and an index on creation time for the millisecond-duplicate signature. They cost the ingest
a little (an order enters the partial index while incomplete and leaves it once every system has
shown it), which is why they are opt-in; reconcile() uses them whenever they exist."""

from __future__ import annotations

from sqlalchemy import Engine, text

from store.lifecycle import ROLE_BITS

CREATED_INDEX = "ix_orders_created_at"


def role_mask(roles: tuple[str, ...]) -> int:
    mask = 0
    for role in roles:
        mask |= ROLE_BITS[role]
    return mask


def differs_predicate(mask: int) -> str:
    """The orders that differ for these systems (literal mask: a partial index must match it)."""
    return (
        f"((seen_roles & {int(mask)}) <> {int(mask)} OR (amount_fen IS NOT NULL AND paid_amount_fen IS NOT NULL "
        "AND amount_fen <> paid_amount_fen))"
    )


def partial_index(mask: int) -> str:
    return f"ix_orders_reconcile_{int(mask)}"


def ensure_indexes(engine: Engine, roles: tuple[str, ...]) -> None:
    """Create the two indexes for `roles` if they are missing (idempotent)."""
    mask = role_mask(roles)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {CREATED_INDEX} ON orders (created_at)"))
        conn.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {partial_index(mask)} ON orders (paid_at) WHERE {differs_predicate(mask)}"
            )
        )


def has_indexes(sql, mask: int) -> bool:
    """Whether both indexes exist (read through the probe's read-only transaction)."""
    names = {"a": CREATED_INDEX, "b": partial_index(mask)}
    if sql.sqlite:
        found = sql.rows("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN (:a, :b)", names)
    else:
        found = sql.rows(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'orders' AND indexname IN (:a, :b)", names
        )
    return len(found) == 2
