"""Helpers the benches share: the repo on the import path, a throwaway store, environment figures."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402


@contextlib.contextmanager
def throwaway_store(url: str | None) -> Iterator[str]:
    """A store URL for one run: a temp SQLite file by default, a SQLite URL as given, or a fresh
    database on the given PostgreSQL server (created here, dropped afterwards)."""
    if url is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    server = make_url(url)
    if server.get_backend_name() != "postgresql":
        yield url
        return
    name = f"sentinel_bench_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def environment(url: str) -> dict[str, str]:
    """Which store and which versions produced the figures."""
    return {
        "store": make_url(url).get_backend_name(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    """Resident set size of this process now (Linux /proc/self/statm: pages)."""
    with open("/proc/self/statm") as statm:
        return round(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20), 1)


def usage() -> dict[str, float]:
    """CPU seconds of the process and of the calling thread, and the bytes the process has passed
    to read() and write() so far (Linux /proc/self/io: page-cache hits and writes included): taken
    before and after a phase, their differences say which thread spent what and how much I/O."""
    times = os.times()
    out = {"process_cpu_s": times.user + times.system, "thread_cpu_s": time.thread_time()}
    with contextlib.suppress(OSError), open("/proc/self/io") as io:
        fields = dict(line.split(": ") for line in io.read().splitlines())
        out.update(read_bytes=int(fields["rchar"]), written_bytes=int(fields["wchar"]))
    return out
