"""An order's delivered records: the evidence, appended to record_log, and their key digests.

Each record a source delivered is one JSON array `[source, record_key, state, at_ms, ingested_at_ms]`.
A plan (one transaction of the store) appends one record_log row per order it gave new records: a
JSON list of them, with the seq of the order's previous row; orders.records_tail is the newest, so an
order's records are the chain back from it, and the rows are appended at the end of the table. The
orders row's `record_keys` holds a 4-byte digest of each record's key (its key_of text) in order:
the store tells a new record from a stored one by the digests it keeps with the order's row, and
confirms a digest found against the text, so a collision never drops a record. Orders written by
older versions keep their records in an order_records row (or the `observations` table) until the
ingest next touches them; readers here see all three.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import Connection, text

from store import _planner

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


JSON_NAMES = _Names()


_planner.use_json(JSON_NAMES, json_string)
# key_of(source, record_key): what a stored record's text starts with, to tell whether (source, record
# key) is stored: `["src","key",` (a JSON string's text is canonical, and `[` then `"` opens an entry
# only). digest(key_text): its 4-byte digest as record_keys holds it (CRC-32: the same in every
# process and version). Both are the compiled planner's (store/_planner.c), which tells new records
# from stored ones by them: one implementation.
key_of = _planner.key_of
digest = _planner.digest


def digests(records: Iterable[tuple]) -> bytes:
    """record_keys of parsed records (parse's tuples): each record's key digest, in order."""
    return b"".join(digest(key_of(source, key)) for source, key, *_ in records)


def entry_after(key_text: str, state: str, at_ms: int, ingested_ms: int) -> str:
    """A record's text from its key_of text and the rest of it."""
    return f"{key_text}{JSON_NAMES[state]},{at_ms},{ingested_ms}]"


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


def join(lists: Iterable[str]) -> str:
    """One records list of several (record_log rows' texts, oldest first)."""
    return f"[{','.join(item[1:-1] for item in lists if item != '[]')}]"


def texts(source: Connection | Query, gids: Iterable[str]) -> dict[str, str]:
    """Every stored record of each given order, as one JSON list text ("[]" for none): its
    record_log chain, or for an order an older version wrote its order_records row or its
    observations."""
    query = _query(source)
    wanted = sorted(set(gids))
    parts: dict[str, list[tuple[int, str]]] = {}
    for chunk in _chunked(wanted):
        where, params = _among(chunk)
        sql = (  # each order's chain, from orders.records_tail back along prev_seq: one statement
            "WITH RECURSIVE chain (gid, seq) AS ("
            f" SELECT o.global_id, o.records_tail FROM orders o{where} AND o.records_tail IS NOT NULL"
            " UNION ALL SELECT chain.gid, l.prev_seq FROM chain JOIN record_log l ON l.seq = chain.seq"
            " WHERE l.prev_seq IS NOT NULL)"
            " SELECT chain.gid, l.seq, l.records FROM chain JOIN record_log l ON l.seq = chain.seq"
        )
        for gid, seq, records in query(sql, params):
            parts.setdefault(gid, []).append((seq, records))
    out = {gid: join(records for _seq, records in sorted(items)) for gid, items in parts.items()}
    out.update(_older_texts(query, [gid for gid in wanted if gid not in out]))
    return out


def stored(query: Query, pairs: list[tuple[str, str]], dialect: str) -> set[tuple[str, str]]:
    """Which (global id, key_of text) pairs name a stored record of the order: searched in SQL along
    each order's record_log chain (only the pairs found come back); orders an older version wrote
    are read whole."""
    search = "instr" if dialect == "sqlite" else "strpos"
    found: set[tuple[str, str]] = set()
    for chunk in _chunked(pairs, 250):
        values = ", ".join(f"(:g{i}, :h{i})" for i in range(len(chunk)))
        params = {f"g{i}": gid for i, (gid, _head) in enumerate(chunk)}
        params.update((f"h{i}", head) for i, (_gid, head) in enumerate(chunk))
        sql = (  # each pair walks its order's chain from orders.records_tail back along prev_seq
            f"WITH RECURSIVE wanted (gid, head) AS (VALUES {values}),"
            " chain (gid, head, seq) AS ("
            " SELECT w.gid, w.head, o.records_tail FROM wanted w JOIN orders o ON o.global_id = w.gid"
            " WHERE o.records_tail IS NOT NULL"
            " UNION ALL SELECT chain.gid, chain.head, l.prev_seq FROM chain JOIN record_log l ON l.seq = chain.seq"
            f" WHERE l.prev_seq IS NOT NULL AND {search}(l.records, chain.head) = 0)"  # found: stop there
            " SELECT DISTINCT chain.gid, chain.head FROM chain JOIN record_log l ON l.seq = chain.seq"
            f" WHERE {search}(l.records, chain.head) > 0"
        )
        found.update((gid, head) for gid, head in query(sql, params))
    rest = sorted({gid for gid, head in pairs if (gid, head) not in found})
    older: list[str] = []
    for chunk in _chunked(rest):
        where, params = _among(chunk)
        sql = f"SELECT o.global_id FROM orders o{where} AND o.records_tail IS NULL"
        older += [gid for (gid,) in query(sql, params)]
    if older:
        listed = _older_texts(query, older)
        found.update(pair for pair in pairs if pair[0] in listed and pair[1] in listed[pair[0]])
    return found


def _older_texts(query: Query, gids: list[str]) -> dict[str, str]:
    """Records of orders an older version wrote: its order_records row, else its observations."""
    out: dict[str, str] = {}
    for chunk in _chunked(gids):
        where, params = _among(chunk)
        sql = f"SELECT o.global_id, o.records FROM order_records o{where}"
        out.update((gid, records) for gid, records in query(sql, params))
    legacy: dict[str, list[str]] = {gid: [] for gid in gids if gid not in out}
    for chunk in _chunked(list(legacy)):
        where, params = _among(chunk)
        sql = f"SELECT global_id, source, record_key, state, at, ingested_at FROM observations o{where} ORDER BY global_id, at"
        for gid, source, key, state, at, ingested in query(sql, params):
            legacy[gid].append(entry(source, key, state, at, ingested))
    out.update((gid, f"[{','.join(items)}]") for gid, items in legacy.items())
    return out


def observation_rows(source: Connection | Query, gids: Iterable[str] | None = None) -> Iterator[tuple]:
    """(global id, source, record key, state, at ms, ingested ms) of every stored record, of the
    given orders or of all, read through a connection or a `query(sql, params)` callable; records of
    orders an older version wrote come from its tables."""
    query = _query(source)
    if gids is not None:
        for gid, records in texts(query, gids).items():
            for item in parse(records):
                yield (gid, *item)
        return
    for gid, records in query("SELECT global_id, records FROM record_log ORDER BY seq", {}):
        for item in parse(records):
            yield (gid, *item)
    older = [gid for (gid,) in query("SELECT global_id FROM orders WHERE records_tail IS NULL", {})]
    yield from observation_rows(query, older)


def _query(source: Connection | Query) -> Query:
    return source if callable(source) else lambda sql, params: source.execute(text(sql), params)


def _chunked(items: list, size: int = 500) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _among(gids: list[str]) -> tuple[str, dict[str, str]]:
    marks = ", ".join(f":g{i}" for i in range(len(gids)))
    return f" WHERE o.global_id IN ({marks})", {f"g{i}": g for i, g in enumerate(gids)}


def count_records(conn: Connection) -> int:
    """How many records the store holds (counted in SQL: no list is parsed in Python)."""
    length = (
        "json_array_length(records)" if conn.dialect.name == "sqlite" else "json_array_length(records::json)"
    )
    logged = conn.execute(text(f"SELECT COALESCE(SUM({length}), 0) FROM record_log")).scalar_one()
    listed = conn.execute(text(f"SELECT COALESCE(SUM({length}), 0) FROM order_records")).scalar_one()
    legacy = conn.execute(
        text(
            "SELECT COUNT(*) FROM observations b WHERE global_id NOT IN (SELECT global_id FROM order_records)"
            " AND global_id NOT IN (SELECT global_id FROM orders WHERE records_tail IS NOT NULL)"
        )
    ).scalar_one()
    return int(logged) + int(listed) + int(legacy)
