"""Process settings of the long-running service (and of the benches that measure it)."""

from __future__ import annotations

import gc
import sys

# The ingest allocates and frees millions of small objects an hour while the store's caches keep a
# few hundred thousand alive: with CPython's default thresholds (700, 10, 10) the cyclic collector
# walks those caches again and again (about a tenth of the ingest's time at 1 M orders). Young
# collections every 500,000 allocations, the oldest generation rarely: the service makes few cycles.
# At 100,000 they came several times per planned group of the store and walked its live rows and
# observations: at 300,000 orders 151 young collections took 7.1 s of a 68 s ingest; at 500,000,
# about 70 take under 1 s (the group's short-lived rows are gone by then).
GC_THRESHOLDS = (500_000, 20, 10)
# The store's writer thread hands the GIL back to the planning thread whenever SQLite works, and
# needs it again when SQLite returns: waiting up to the default 5 ms each time starves it.
SWITCH_INTERVAL_S = 0.0005


def tune_runtime() -> None:
    """Set the service's garbage-collector thresholds and GIL switch interval (process-wide)."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
