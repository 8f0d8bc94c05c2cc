"""Prometheus exposition of the latest KPI snapshot and source health; scrapes never compute KPIs."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from metrics.catalog import KPI_BY_NAME, KPIS
from metrics.snapshot import Snapshot
from sentinel.clock import Clock

log = logging.getLogger("sentinel.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricSpec:
    """One exposed metric: the single source for name, type, labels, unit and help."""

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    labels: tuple[str, ...]
    unit: str
    help: str
    buckets: tuple[float, ...] = ()  # histogram upper bounds, ascending; +Inf is implied


# From a 1 ms local read to a 60 s page walk over a throttled channel API.
POLL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)


HEALTH_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fulfillment_source_up", "gauge", ("source",), "boolean",
               "1 when the last poll of the source succeeded, 0 otherwise."),
    MetricSpec("fulfillment_source_last_success_timestamp_seconds", "gauge", ("source",), "seconds",
               "Unix time of the last successful poll of the source."),
    MetricSpec("fulfillment_source_consecutive_failures", "gauge", ("source",), "polls",
               "Polls of the source that failed in a row since the last success."),
    MetricSpec("fulfillment_source_errors_total", "counter", ("source", "class"), "errors",
               "Failed polls of the source by error class (timeout, http_5xx, rate_limited, ...)."),
    MetricSpec("fulfillment_source_records_total", "counter", ("source",), "records",
               "Native records read from the source."),
    MetricSpec("fulfillment_source_observations_total", "counter", ("source",), "observations",
               "New canonical observations stored from the source."),
    MetricSpec("fulfillment_source_quarantined_total", "counter", ("source",), "records",
               "Records of the source that could not be mapped and went to quarantine."),
    MetricSpec("fulfillment_source_lag_seconds", "gauge", ("source",), "seconds",
               "How far the newest event read from the source lags behind the time it was read."),
    MetricSpec("fulfillment_source_lead_seconds", "gauge", ("source",), "seconds",
               "How far the newest event read from the source is ahead of the time it was read (a wrong clock)."),
    MetricSpec("fulfillment_queue_messages", "gauge", ("source",), "messages",
               "Messages waiting in a watched queue (its backlog)."),
    MetricSpec("fulfillment_queue_consumers", "gauge", ("source",), "consumers",
               "Consumers attached to a watched queue."),
    MetricSpec("fulfillment_queue_oldest_message_age_seconds", "gauge", ("source",), "seconds",
               "Age of the oldest message waiting in a watched queue (0 when it is empty)."),
)  # fmt: skip
# Source-rule figures (sentinel.config.SOURCE_METRICS) -> the PromQL expression exposing them.
SOURCE_METRIC_NAMES = {
    "stale_seconds": "time() - fulfillment_source_last_success_timestamp_seconds",
    "lag_seconds": "fulfillment_source_lag_seconds",
    "lead_seconds": "fulfillment_source_lead_seconds",
    "queue_messages": "fulfillment_queue_messages",
    "queue_consumers": "fulfillment_queue_consumers",
    "queue_oldest_age_seconds": "fulfillment_queue_oldest_message_age_seconds",
}

SELF_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fulfillment_snapshot_timestamp_seconds", "gauge", (), "seconds",
               "Unix time the exposed KPI snapshot was computed at."),
    MetricSpec("fulfillment_snapshot_age_seconds", "gauge", (), "seconds",
               "Seconds since the exposed KPI snapshot was computed (by the service clock, at scrape)."),
    MetricSpec("fulfillment_kpi_refresh_duration_seconds", "gauge", (), "seconds",
               "Wall time the KPI job took to compute the exposed snapshot."),
    MetricSpec("fulfillment_source_poll_duration_seconds", "histogram", ("source",), "seconds",
               "Wall time of each poll of the source, failed polls included.", POLL_BUCKETS),
)  # fmt: skip

ALERT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("fulfillment_alert_notifications", "gauge", ("route", "status"), "messages",
               "Alert messages in the outbox by route and delivery status: pending (waiting or retrying), "
               "failed (gave up after the last attempt), unconfirmed (in flight when the service stopped)."),
)  # fmt: skip
NOTIFICATION_STATUSES = ("pending", "failed", "unconfirmed")

KPI_METRICS: tuple[MetricSpec, ...] = tuple(
    MetricSpec(k.metric, "gauge", k.labels, k.unit, k.help) for k in KPIS
)
METRICS: tuple[MetricSpec, ...] = KPI_METRICS + HEALTH_METRICS + SELF_METRICS + ALERT_METRICS
METRIC_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}
_AGE = METRIC_BY_NAME["fulfillment_snapshot_age_seconds"]
_POLL = METRIC_BY_NAME["fulfillment_source_poll_duration_seconds"]
_NOTIFICATIONS = METRIC_BY_NAME["fulfillment_alert_notifications"]


def _family(spec: MetricSpec) -> Metric:
    if spec.kind == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help)
    return GaugeMetricFamily(spec.name, spec.help)


def _add(family: Metric, spec: MetricSpec, labels: dict[str, str], value: float) -> None:
    sample = spec.name if spec.kind == "gauge" else f"{family.name}_total"
    family.add_sample(sample, labels, float(value))


def kpi_families(snapshot: Snapshot | None) -> list[Metric]:
    """One family per catalog KPI; series whose label keys the catalog does not allow are dropped."""
    families = {k.name: _family(METRIC_BY_NAME[k.metric]) for k in KPIS}
    if snapshot is None:
        return list(families.values())
    dropped: set[str] = set()
    # Sorted so the exposition is stable: totals first, then by label values.
    for value in sorted(snapshot.values, key=lambda v: (v.kpi, len(v.labels), v.labels)):
        kpi = KPI_BY_NAME.get(value.kpi)
        if kpi is None or not set(value.label_dict) <= set(kpi.labels):
            dropped.add(value.kpi)
            continue
        _add(families[kpi.name], METRIC_BY_NAME[kpi.metric], value.label_dict, value.value)
    if dropped:
        log.warning("snapshot series not in the KPI catalog were not exported: %s", sorted(dropped))
    return list(families.values())


def _epoch(moment: Any) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.timestamp()
    return float(moment) / 1000.0  # raw epoch ms straight from the table


def _error_counts(raw: Any, source: str) -> dict[str, float]:
    if isinstance(raw, Mapping):
        return {str(k): float(v) for k, v in raw.items()}
    try:
        counts = json.loads(raw or "{}")
        return {str(k): float(v) for k, v in counts.items()}
    except (ValueError, TypeError, AttributeError):
        log.warning("source %s: unreadable errors_json, error counts not exported", source)
        return {}


_HEALTH_COLUMNS = {
    "fulfillment_source_up": lambda r: 1.0 if r.get("up") else 0.0,
    "fulfillment_source_last_success_timestamp_seconds": lambda r: _epoch(r.get("last_success_at")),
    "fulfillment_source_consecutive_failures": lambda r: r.get("consecutive_failures") or 0,
    "fulfillment_source_records_total": lambda r: r.get("records_total") or 0,
    "fulfillment_source_observations_total": lambda r: r.get("observations_total") or 0,
    "fulfillment_source_quarantined_total": lambda r: r.get("quarantined_total") or 0,
    "fulfillment_source_lag_seconds": lambda r: r.get("lag_seconds"),
    "fulfillment_source_lead_seconds": lambda r: r.get("lead_seconds"),
    "fulfillment_queue_messages": lambda r: r.get("queue_messages"),
    "fulfillment_queue_consumers": lambda r: r.get("queue_consumers"),
    "fulfillment_queue_oldest_message_age_seconds": lambda r: r.get("queue_oldest_age_seconds"),
}


def health_families(health: Iterable[Mapping[str, Any]]) -> list[Metric]:
    """Source-health families from source_health rows (only counts and classes, never messages)."""
    rows = sorted(health, key=lambda r: str(r["source"]))
    families = []
    for spec in HEALTH_METRICS:
        family = _family(spec)
        for row in rows:
            source = str(row["source"])
            if spec.name == "fulfillment_source_errors_total":
                for cls, count in sorted(_error_counts(row.get("errors_json"), source).items()):
                    _add(family, spec, {"source": source, "class": cls}, count)
                continue
            value = _HEALTH_COLUMNS[spec.name](row)
            if value is not None:
                _add(family, spec, {"source": source}, value)
        families.append(family)
    return families


class _Histogram:
    """Live state of one labelled histogram (per-bucket counts and sum per label value), thread-safe."""

    def __init__(self, spec: MetricSpec) -> None:
        self._spec = spec
        self._lock = threading.Lock()
        self._series: dict[str, tuple[list[int], float]] = {}

    def observe(self, label: str, value: float) -> None:
        with self._lock:
            counts, total = self._series.get(label) or ([0] * (len(self._spec.buckets) + 1), 0.0)
            counts[bisect.bisect_left(self._spec.buckets, value)] += 1  # le is inclusive
            self._series[label] = (counts, total + value)

    def family(self) -> Metric:
        """A fresh family with cumulative buckets, series sorted by label value."""
        with self._lock:
            series = sorted((label, list(counts), total) for label, (counts, total) in self._series.items())
        family = _family(self._spec)
        bounds = [floatToGoString(b) for b in self._spec.buckets] + ["+Inf"]
        for label, counts, total in series:
            cumulative = list(zip(bounds, itertools.accumulate(counts), strict=True))
            family.add_metric([label], cumulative, sum_value=total)
        return family


class _Families:
    """A fixed list of families in the shape generate_latest() reads."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


@dataclass(frozen=True)
class _State:
    families: tuple[Metric, ...]
    body: bytes


class _Latest:
    """The latest snapshot and source health, rendered once, on the first scrape that needs them."""

    def __init__(self, snapshot: Snapshot | None, health: Iterable[Mapping[str, Any]]) -> None:
        self.computed_at = None if snapshot is None else snapshot.computed_at
        self._inputs: tuple | None = (snapshot, health)
        self._state: _State | None = None
        self._lock = threading.Lock()

    def state(self) -> _State:
        if self._state is None:
            with self._lock:
                if self._state is None:
                    self._state = _build(*self._inputs)
                    self._inputs = None
        return self._state


def _build(snapshot: Snapshot | None, health: Iterable[Mapping[str, Any]]) -> _State:
    families = kpi_families(snapshot) + health_families(health)
    if snapshot is not None:
        stamp = GaugeMetricFamily("fulfillment_snapshot_timestamp_seconds",
                                  METRIC_BY_NAME["fulfillment_snapshot_timestamp_seconds"].help,
                                  value=snapshot.computed_at.timestamp())  # fmt: skip
        duration = GaugeMetricFamily("fulfillment_kpi_refresh_duration_seconds",
                                     METRIC_BY_NAME["fulfillment_kpi_refresh_duration_seconds"].help,
                                     value=snapshot.duration_seconds)  # fmt: skip
        families += [stamp, duration]
    return _State(tuple(families), generate_latest(_Families(families)))


class MetricsExporter:
    """Custom Collector serving the latest snapshot; update() swaps state, collect() only reads it.

    The exposition text of a snapshot is rendered once, on the first scrape after its update (a
    replay that nobody scrapes never renders), and cached; only the poll duration histogram (fed
    between updates) and the snapshot age (scrape time) are live, so render() appends those freshly
    (cheap) to the cached body.
    """

    def __init__(self, clock: Clock, registry: CollectorRegistry | None = None) -> None:
        self._clock = clock
        self._polls = _Histogram(_POLL)
        self._notifications: dict[tuple[str, str], int] = {}
        self._latest = _Latest(None, [])
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, snapshot: Snapshot, health: list[dict]) -> None:
        """Swap in a new snapshot and source health (called by the KPI job, never by a scrape)."""
        self._latest = _Latest(snapshot, list(health))  # one reference swap: scrapes see old or new

    def observe_poll(self, source: str, seconds: float) -> None:
        """Record the wall time of one poll of a source (called by the poll job, never by a scrape)."""
        self._polls.observe(source, seconds)

    def update_notifications(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Swap in the outbox counts per (route, status) (called after delivery, never by a scrape)."""
        self._notifications = dict(counts)

    def _live_families(self, latest: _Latest) -> list[Metric]:
        notifications = _family(_NOTIFICATIONS)
        for (route, status), count in sorted(self._notifications.items()):
            _add(notifications, _NOTIFICATIONS, {"route": route, "status": status}, count)
        families = [self._polls.family(), notifications]
        if latest.computed_at is not None:
            age = max(0.0, (self._clock.now() - latest.computed_at).total_seconds())
            families.append(GaugeMetricFamily(_AGE.name, _AGE.help, value=age))
        return families

    def describe(self) -> Iterator[Metric]:
        """Every family this collector may expose, so the registry can reject duplicate names."""
        for spec in METRICS:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        latest = self._latest
        yield from latest.state().families
        yield from self._live_families(latest)

    def render(self) -> bytes:
        """Exposition text of this exporter: the cached body plus the live families."""
        latest = self._latest
        return latest.state().body + generate_latest(_Families(self._live_families(latest)))


class _Handler(BaseHTTPRequestHandler):
    exporter: MetricsExporter  # set on a per-server subclass

    def _reply(self, status: int, body: bytes, content_type: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, self.exporter.render(), CONTENT_TYPE, head)
        elif path == "/healthz":
            self._reply(200, b"ok\n", "text/plain; charset=utf-8", head)
        elif path == "/":
            body = b'<html><body><a href="/metrics">/metrics</a></body></html>\n'
            self._reply(200, body, "text/html; charset=utf-8", head)
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8", head)

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("metrics http %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A threaded HTTP server answering GET /metrics and GET /healthz; port 0 picks a free port."""

    def __init__(self, exporter: MetricsExporter, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("MetricsHandler", (_Handler,), {"exporter": exporter})
        server_cls = _Server6 if ":" in host else _Server
        self._httpd = server_cls((host, port), handler)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The scrape address, e.g. http://127.0.0.1:9464/metrics."""
        return f"{self.base_url}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(exporter: MetricsExporter, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Start serving the exporter over HTTP in a background thread."""
    return MetricsServer(exporter, host, port)
