"""An order's delivered records, kept in one order_records row beside its orders row.

Each record a source delivered for the order is one JSON array `[source, record_key, state, at_ms,
ingested_at_ms]` in the row's JSON list, and `record_keys` holds a 4-byte digest of each record's
key (its key_of text) in the same order. The store tells a new record from a stored one by the
digests it reads and keeps with the order's row (no observation table to insert into or look up per
record, no list text in memory); a digest found is confirmed against the text, so a collision
never drops a record. The evidence of an order is one row. Stores written by older versions keep
their records in the `observations` table (or a row without digests) until the ingest next reads
the order; readers here see both.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import Connection, text

Query = Callable[[str, dict], Iterable[tuple]]  # runs a SELECT with named parameters
_PLAIN = re.compile(r'[^"\\\x00-\x1f]*').fullmatch  # JSON encodes these characters as they are


def json_string(value: str) -> str:
    """`value` as a JSON string, as json.dumps(ensure_ascii=False) writes it."""
    if _PLAIN(value):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


class _Names(dict):
    """Source and state names as JSON strings, each encoded once (there are few)."""

    def __missing__(self, name: str) -> str:
        self[name] = text = json_string(name)
        return text


_NAMES = _Names()


def key_of(source: str, record_key: str) -> str:
    """What a stored record's text starts with, to tell whether (source, record key) is stored:
    `["src","key",` (a JSON string's text is canonical, and `[` then `"` opens an entry only)."""
    return f"[{_NAMES[source]},{json_string(record_key)},"


def digest(key_text: str) -> bytes:
    """The 4-byte digest of a record's key_of text, as record_keys holds it (CRC-32: the same in
    every process and version)."""
    return zlib.crc32(key_text.encode()).to_bytes(4, "little")


def digests(records: Iterable[tuple]) -> bytes:
    """record_keys of parsed records (parse's tuples): each record's key digest, in order."""
    return b"".join(digest(key_of(source, key)) for source, key, *_ in records)


def entry_after(key_text: str, state: str, at_ms: int, ingested_ms: int) -> str:
    """A record's text from its key_of text and the rest of it."""
    return f"{key_text}{_NAMES[state]},{at_ms},{ingested_ms}]"


def entry(source: str, record_key: str, state: str, at_ms: int, ingested_ms: int) -> str:
    return entry_after(key_of(source, record_key), state, at_ms, ingested_ms)


def append(records: str | None, entries: str) -> str:
    """The records list with `entries` (comma-joined entry texts) added at its end."""
    if not records or records == "[]":
        return f"[{entries}]"
    return f"{records[:-1]},{entries}]"


def parse(records: str | None) -> list[tuple[str, str, str, int, int]]:
    """(source, record key, state, at ms, ingested ms) of each stored record."""
    return [tuple(item) for item in json.loads(records)] if records else []


def observation_rows(source: Connection | Query, gids: Iterable[str] | None = None) -> Iterator[tuple]:
    """(global id, source, record key, state, at ms, ingested ms) of every stored record, of the
    given orders or of all, read through a connection or a `query(sql, params)` callable; records of
    a store written by an older version come from its table."""
    query = source if callable(source) else lambda sql, params: source.execute(text(sql), params)
    wanted = None if gids is None else sorted(set(gids))
    chunks = [None] if wanted is None else [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
    for chunk in chunks:
        where, params = "", {}
        if chunk is not None:
            where, params = _among(chunk)
        legacy: list[str] = []
        sql = f"SELECT o.global_id, r.records FROM orders o LEFT JOIN order_records r ON r.global_id = o.global_id{where}"
        for gid, records in query(sql, params):
            if records is None:
                legacy.append(gid)
            else:
                for item in parse(records):
                    yield (gid, *item)
        for i in range(0, len(legacy), 500):  # a whole older store: many orders, one IN list each 500
            where, params = _among(legacy[i : i + 500])
            sql = f"SELECT global_id, source, record_key, state, at, ingested_at FROM observations o{where}"
            yield from map(tuple, query(sql, params))


def _among(gids: list[str]) -> tuple[str, dict[str, str]]:
    marks = ", ".join(f":g{i}" for i in range(len(gids)))
    return f" WHERE o.global_id IN ({marks})", {f"g{i}": g for i, g in enumerate(gids)}


def count_records(conn: Connection) -> int:
    """How many records the store holds (counted in SQL: no list is parsed in Python)."""
    length = (
        "json_array_length(records)" if conn.dialect.name == "sqlite" else "json_array_length(records::json)"
    )
    listed = conn.execute(text(f"SELECT COALESCE(SUM({length}), 0) FROM order_records")).scalar_one()
    legacy = conn.execute(
        text("SELECT COUNT(*) FROM observations WHERE global_id NOT IN (SELECT global_id FROM order_records)")
    ).scalar_one()
    return int(listed) + int(legacy)
