"""Shared pieces of the reliability tests: a short scenario replay, its ground truth, a TCP proxy."""

from __future__ import annotations

import socket
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sentinel.config import DEFAULT_PATH
from sim.model import PAID_ONLY_CHANNELS
from sim.runner import Replay
from store.records import observation_rows
from store.schema import cursors, fact_codes, orders

SCENARIO = Path(__file__).parent / "scenarios" / "busy_hour.toml"
# Columns that say when Sentinel read something, not what the order is: they depend on poll timing.
INGEST_TIMES = {"first_seen_at", "updated_at"}
SILENT_RULE = {  # a source that fails (or is quiet) for 3 minutes raises a P1 "no data" alert
    "name": "source_silent",
    "no_data": "3m",
    "severity": "P1",
    "route": "ops",
}


def project_rules() -> list[dict]:
    raw = tomllib.loads(Path(DEFAULT_PATH).read_text(encoding="utf-8"))
    return list(raw["alerts"]["rules"])


def make_replay(workdir: Path, overrides: dict[str, Any] | None = None, **options: Any) -> Replay:
    """The busy hour through the real pipeline, with the source-silent rule added."""
    settings = {"alerts.rules": [*project_rules(), SILENT_RULE], **(overrides or {})}
    return Replay(str(SCENARIO), workdir=workdir, overrides=settings, **options)


def stored(engine) -> tuple[list[dict], set[tuple]]:
    """Order rows and observations in the store, keyed by (channel, raw id) instead of the global id
    (its sequence number follows which source saw the order first, i.e. poll timing), without ingest
    times and record_log positions."""
    with engine.connect() as conn:
        codes = {code: (source, state) for source, state, code in conn.execute(select(fact_codes))}

        def facts(bits: str | None) -> list[tuple[str, str]]:  # bit numbers follow arrival order too
            value = int(bits or "0", 16)
            return sorted(pair for code, pair in codes.items() if value >> code & 1)

        def digests(keys: bytes | None) -> list[bytes]:  # one per record, in arrival order: compared as a set
            keys = keys or b""
            return sorted(keys[i : i + 4] for i in range(0, len(keys), 4))

        rows = sorted(
            (  # records_tail: where in record_log the order's newest row went, which follows poll timing
                {
                    k: v
                    for k, v in r.items()
                    if k not in INGEST_TIMES and k not in ("global_id", "records_tail")
                }
                | {"facts": facts(r["facts"]), "record_keys": digests(r["record_keys"])}
                for r in conn.execute(select(orders)).mappings()
            ),
            key=lambda r: (r["channel"], r["raw_order_id"]),
        )
        ids = {r.global_id: (r.channel, r.raw_order_id) for r in conn.execute(select(orders))}
        obs = {
            (*ids[gid], source, key, state, at) for gid, source, key, state, at, _ in observation_rows(conn)
        }
    return rows, obs


def observation_keys(replay: Replay) -> list[tuple[str, str]]:
    """(source, record key) of every stored observation, repeats included."""
    with replay.service.engine.connect() as conn:
        return [(source, key) for _, source, key, *_ in observation_rows(conn)]


def cursor_map(replay: Replay) -> dict[str, str]:
    with replay.service.engine.connect() as conn:
        return {r.source: r.value for r in conn.execute(select(cursors))}


def sim_states(world, now) -> dict[tuple[str, str], str]:
    """The simulator's truth: each visible order's state at `now`."""
    out = {}
    for order in world.orders:
        if order.channel in PAID_ONLY_CHANNELS and "paid" not in order.events_until(now):
            continue
        state = order.state_at(now)
        if state is not None:
            out[(order.channel, order.raw_id)] = state
    return out


def health_of(replay: Replay, source: str) -> dict:
    return next(h for h in replay.service.store.health() if h["source"] == source)


class TcpProxy:
    """A TCP proxy on port 0 in front of a database server: `down()` drops every connection and
    refuses new ones (as a restarting server does), `up()` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and every proxied connection in both directions."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        time.sleep(0.05)  # let the pump threads notice (wall time of the proxy, not of the test clock)

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
