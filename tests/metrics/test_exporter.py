"""The Prometheus exporter: a custom Collector on a fresh registry, the exposition text, the HTTP server."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import metrics.exporter as exporter_mod
from collectors.errors import SourceTimeout
from collectors.types import Batch
from metrics.catalog import KPIS
from metrics.exporter import CONTENT_TYPE, METRICS, MetricsExporter, serve
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.config import DEFAULT_PATH, load_config
from sentinel.service import Service

T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
PROMTOOL = "/usr/bin/promtool"


def snap(*values: tuple[str, dict[str, str], float], at: datetime = T0, duration: float = 0.25) -> Snapshot:
    return Snapshot(at, tuple(KpiValue(k, labels_of(lb), v) for k, lb, v in values), duration)


def health_row(source: str = "tmall_api", **over) -> dict:
    row = {
        "source": source,
        "up": True,
        "last_success_at": T0 - timedelta(seconds=20),
        "last_error_class": "timeout",
        "last_error": "tmall_api: timeout calling https://api.example/?app_key=SECRET123",
        "consecutive_failures": 0,
        "records_total": 120,
        "observations_total": 118,
        "quarantined_total": 2,
        "errors_json": '{"http_5xx": 1, "timeout": 3}',
        "lag_seconds": 4.5,
    }
    row.update(over)
    return row


SNAP = snap(
    ("sync_success_ratio", {}, 0.75),
    ("sync_success_ratio", {"channel": "tmall"}, 0.5),
    ("sync_success_ratio", {"channel": "jd"}, 1.0),
    ("sync_paid_orders", {}, 4),
    ("stuck_orders", {"state": "paid"}, 3),
    ("stuck_orders", {"state": "paid", "channel": "jd"}, 3),
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def exporter(clock, registry) -> MetricsExporter:
    exp = MetricsExporter(clock, registry)
    exp.update(SNAP, [health_row()])
    return exp


def test_kpi_series_carry_their_labels(exporter, registry):
    assert registry.get_sample_value("fulfillment_sync_success_ratio") == 0.75
    assert registry.get_sample_value("fulfillment_sync_success_ratio", {"channel": "tmall"}) == 0.5
    assert registry.get_sample_value("fulfillment_sync_paid_orders") == 4
    assert registry.get_sample_value("fulfillment_stuck_orders", {"state": "paid", "channel": "jd"}) == 3


def test_source_health_series(exporter, registry):
    src = {"source": "tmall_api"}
    assert registry.get_sample_value("fulfillment_source_up", src) == 1
    assert registry.get_sample_value(
        "fulfillment_source_last_success_timestamp_seconds", src
    ) == pytest.approx((T0 - timedelta(seconds=20)).timestamp())
    assert registry.get_sample_value("fulfillment_source_errors_total", {**src, "class": "timeout"}) == 3
    assert registry.get_sample_value("fulfillment_source_errors_total", {**src, "class": "http_5xx"}) == 1
    assert registry.get_sample_value("fulfillment_source_records_total", src) == 120
    assert registry.get_sample_value("fulfillment_source_observations_total", src) == 118
    assert registry.get_sample_value("fulfillment_source_quarantined_total", src) == 2
    assert registry.get_sample_value("fulfillment_source_lag_seconds", src) == 4.5


def test_error_text_never_reaches_the_exposition(exporter):
    assert b"SECRET123" not in exporter.render()


def test_snapshot_age_follows_the_clock_between_updates(exporter, registry, clock):
    assert registry.get_sample_value("fulfillment_snapshot_age_seconds") == 0
    clock.advance(42)
    assert registry.get_sample_value("fulfillment_snapshot_age_seconds") == 42
    assert b"fulfillment_snapshot_age_seconds 42.0\n" in exporter.render()
    assert registry.get_sample_value("fulfillment_kpi_refresh_duration_seconds") == 0.25
    assert registry.get_sample_value("fulfillment_snapshot_timestamp_seconds") == T0.timestamp()


def test_label_values_gone_from_the_snapshot_leave_the_exposition(exporter, registry):
    exporter.update(snap(("sync_success_ratio", {"channel": "jd"}, 0.9)), [])
    assert registry.get_sample_value("fulfillment_sync_success_ratio", {"channel": "tmall"}) is None
    assert registry.get_sample_value("fulfillment_sync_success_ratio") is None
    assert registry.get_sample_value("fulfillment_sync_success_ratio", {"channel": "jd"}) == 0.9
    assert registry.get_sample_value("fulfillment_source_up", {"source": "tmall_api"}) is None
    assert b"tmall" not in exporter.render()


def test_series_outside_the_catalog_are_dropped(clock, registry):
    exp = MetricsExporter(clock, registry)
    exp.update(snap(("no_such_kpi", {}, 1), ("sync_success_ratio", {"warehouse": "W1"}, 0.5)), [])
    text = exp.render().decode()
    assert "no_such_kpi" not in text and "W1" not in text


def test_missing_and_unreadable_health_fields_yield_no_series(clock, registry):
    exp = MetricsExporter(clock, registry)
    exp.update(
        SNAP, [health_row("wms_db", up=False, last_success_at=None, lag_seconds=None, errors_json="{oops")]
    )
    src = {"source": "wms_db"}
    assert registry.get_sample_value("fulfillment_source_up", src) == 0
    assert registry.get_sample_value("fulfillment_source_last_success_timestamp_seconds", src) is None
    assert registry.get_sample_value("fulfillment_source_lag_seconds", src) is None
    assert "fulfillment_source_errors_total{" not in exp.render().decode()


def test_before_the_first_update_there_are_no_samples(clock, registry):
    exp = MetricsExporter(clock, registry)
    samples = [line for line in exp.render().decode().splitlines() if not line.startswith("#")]
    assert samples == []


def test_a_snapshot_is_rendered_once_on_its_first_scrape_not_per_scrape(exporter, monkeypatch, clock):
    builds = []
    real = exporter_mod.kpi_families
    monkeypatch.setattr(exporter_mod, "kpi_families", lambda snap: builds.append(snap) or real(snap))
    exporter.update(SNAP, [health_row()])
    exporter.update(SNAP, [health_row()])  # updates nobody scrapes are never rendered
    assert builds == []
    first = exporter.render()
    clock.advance(5)
    again = exporter.render()
    assert builds == [SNAP]
    assert b"fulfillment_snapshot_age_seconds 5.0" in again and again.replace(b" 5.0\n", b" 0.0\n") == first


def test_poll_durations_form_a_cumulative_histogram_per_source(exporter, registry):
    for source, seconds in [("wms_db", 0.003), ("tmall_api", 0.25), ("tmall_api", 0.3), ("tmall_api", 75)]:
        exporter.observe_poll(source, seconds)
    name, tmall = "fulfillment_source_poll_duration_seconds", {"source": "tmall_api"}
    assert registry.get_sample_value(f"{name}_bucket", {**tmall, "le": "0.1"}) == 0
    assert registry.get_sample_value(f"{name}_bucket", {**tmall, "le": "0.25"}) == 1  # le is inclusive
    assert registry.get_sample_value(f"{name}_bucket", {**tmall, "le": "0.5"}) == 2
    assert registry.get_sample_value(f"{name}_bucket", {**tmall, "le": "60.0"}) == 2
    assert registry.get_sample_value(f"{name}_bucket", {**tmall, "le": "+Inf"}) == 3
    assert registry.get_sample_value(f"{name}_count", tmall) == 3
    assert registry.get_sample_value(f"{name}_sum", tmall) == pytest.approx(75.55)
    assert registry.get_sample_value(f"{name}_count", {"source": "wms_db"}) == 1


def test_poll_durations_survive_snapshot_updates(exporter, registry):
    exporter.observe_poll("wms_db", 0.5)
    exporter.update(snap(("sync_success_ratio", {}, 1.0)), [])
    assert (
        registry.get_sample_value("fulfillment_source_poll_duration_seconds_count", {"source": "wms_db"}) == 1
    )


class _Collector:
    """A source that answers with one empty page, or fails with a timeout."""

    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail = name, fail

    def poll(self, cursor, now):
        if self.fail:
            raise SourceTimeout(self.name, "no answer")
        yield Batch(self.name)


def test_service_polls_feed_the_histogram_failures_included(tmp_path, clock):
    config = load_config(
        DEFAULT_PATH, env={}, overrides={"service.store_url": f"sqlite:///{tmp_path / 's.db'}"}
    )
    collectors = {"up_src": _Collector("up_src", False), "down_src": _Collector("down_src", True)}
    service = Service(config, clock, collectors=collectors, notifiers={})
    try:
        assert [o.ok for o in service.poll_all()] == [True, False]
        service.poll_source("up_src")
    finally:
        service.stop()
    count = "fulfillment_source_poll_duration_seconds_count"
    assert service.exporter.registry.get_sample_value(count, {"source": "up_src"}) == 2
    assert service.exporter.registry.get_sample_value(count, {"source": "down_src"}) == 1


def test_render_matches_the_registry_exposition(exporter, registry):
    exporter.observe_poll("wms_db", 0.02)
    assert exporter.render() == generate_latest(registry)


def test_a_second_exporter_on_the_same_registry_is_rejected(exporter, registry, clock):
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        MetricsExporter(clock, registry)


def test_metric_table_follows_prometheus_naming():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)), "metric names must be unique"
    assert {k.metric for k in KPIS} <= set(names)
    for m in METRICS:
        assert re.fullmatch(r"fulfillment_[a-z0-9_]+", m.name), m.name
        assert m.help and m.help.endswith("."), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        if m.unit in ("seconds", "ratio"):
            assert re.search(rf"_{m.unit}(_total)?$", m.name), f"{m.name} should end with its unit {m.unit}"
        for label in m.labels:
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", label), label
        if m.kind == "histogram":
            assert list(m.buckets) == sorted(set(m.buckets)) and m.buckets[0] > 0, m.name
            assert "le" not in m.labels, m.name
        else:
            assert m.buckets == (), m.name


GOLDEN = """\
# HELP fulfillment_sync_success_ratio Orders paid at least the SLA ago that reached the WMS, over orders paid at least the SLA ago.
# TYPE fulfillment_sync_success_ratio gauge
fulfillment_sync_success_ratio 0.75
fulfillment_sync_success_ratio{channel="jd"} 1.0
fulfillment_sync_success_ratio{channel="tmall"} 0.5
# HELP fulfillment_sync_paid_orders Orders paid at least the SLA ago within the KPI window (the sync ratio's denominator).
# TYPE fulfillment_sync_paid_orders gauge
fulfillment_sync_paid_orders 4.0
# HELP fulfillment_sync_unreached_orders Orders paid at least the SLA ago that have not reached the WMS.
# TYPE fulfillment_sync_unreached_orders gauge
# HELP fulfillment_stuck_ratio Orders in a state longer than its timeout (in transit: without a carrier scan), over orders in that state.
# TYPE fulfillment_stuck_ratio gauge
# HELP fulfillment_stuck_orders Orders in a state longer than its timeout (in transit: without a carrier scan).
# TYPE fulfillment_stuck_orders gauge
fulfillment_stuck_orders{state="paid"} 3.0
fulfillment_stuck_orders{channel="jd",state="paid"} 3.0
# HELP fulfillment_state_orders Orders currently in each canonical state.
# TYPE fulfillment_state_orders gauge
# HELP fulfillment_fast_cancel_ratio Orders paid in the KPI window and cancelled within the fast-cancel limit of paying, over orders paid.
# TYPE fulfillment_fast_cancel_ratio gauge
# HELP fulfillment_fast_cancel_orders Orders paid in the KPI window and cancelled within the fast-cancel limit of paying.
# TYPE fulfillment_fast_cancel_orders gauge
# HELP fulfillment_dwell_p50_seconds Median time spent in a state, over orders that left it within the dwell window (nearest rank).
# TYPE fulfillment_dwell_p50_seconds gauge
# HELP fulfillment_dwell_p95_seconds 95th percentile of the time spent in a state, over orders that left it within the dwell window.
# TYPE fulfillment_dwell_p95_seconds gauge
# HELP fulfillment_dwell_orders Orders that left a state within the dwell window (the dwell percentiles' population).
# TYPE fulfillment_dwell_orders gauge
# HELP fulfillment_dwell_failure_ratio Stays in a state that failed (left for cancelled, closed or a return; else lasted at least the state's timeout), over stays judged: orders that left the state within the dwell window, or are still in it and ran past its timeout within the window.
# TYPE fulfillment_dwell_failure_ratio gauge
# HELP fulfillment_dwell_failure_orders Failed stays in a state by reason (timeout, cancelled, closed, returned); the top failure reason is the one with the most.
# TYPE fulfillment_dwell_failure_orders gauge
# HELP fulfillment_dwell_judged_orders The dwell failure ratio's denominator: stays judged: orders that left the state within the dwell window, or are still in it and ran past its timeout within the window.
# TYPE fulfillment_dwell_judged_orders gauge
# HELP fulfillment_duplicate_free_ratio Orders paid in the KPI window over their records received (the orders plus repeated deliveries).
# TYPE fulfillment_duplicate_free_ratio gauge
# HELP fulfillment_duplicate_records Repeated deliveries (e.g. payment callbacks sent again) of orders paid in the KPI window.
# TYPE fulfillment_duplicate_records gauge
# HELP fulfillment_order_loss_ratio Payments in the KPI window, at least the grace period old, that no channel source shows, over those payments.
# TYPE fulfillment_order_loss_ratio gauge
# HELP fulfillment_order_loss_orders Payments in the KPI window, at least the grace period old, that no channel source shows.
# TYPE fulfillment_order_loss_orders gauge
# HELP fulfillment_order_loss_paid_orders Payments in the KPI window at least the grace period old (the order loss ratio's denominator).
# TYPE fulfillment_order_loss_paid_orders gauge
# HELP fulfillment_return_break_ratio Returns held in one return state longer than its timeout (24 h), over returns active in the KPI window (orders now in an open return state, or refunded within the window).
# TYPE fulfillment_return_break_ratio gauge
# HELP fulfillment_return_break_orders Returns held in one return state longer than its timeout (24 h).
# TYPE fulfillment_return_break_orders gauge
# HELP fulfillment_return_active_orders Returns active in the KPI window: orders now in an open return state, or refunded within the window.
# TYPE fulfillment_return_active_orders gauge
# HELP fulfillment_amount_mismatch_ratio Orders paid in the KPI window whose paid amount differs from the order amount, over orders paid.
# TYPE fulfillment_amount_mismatch_ratio gauge
# HELP fulfillment_amount_mismatch_orders Orders paid in the KPI window whose paid amount (payment notify) differs from the order amount.
# TYPE fulfillment_amount_mismatch_orders gauge
# HELP fulfillment_late_callback_ratio Payments in the KPI window whose notify came later than the callback delay limit, over payments notified.
# TYPE fulfillment_late_callback_ratio gauge
# HELP fulfillment_late_callback_orders Payments in the KPI window whose notify came later than the callback delay limit after paying.
# TYPE fulfillment_late_callback_orders gauge
# HELP fulfillment_hop_sync_success_ratio Per hop, orders that entered it in the KPI window at least the hop's SLA ago and got past it, over those orders.
# TYPE fulfillment_hop_sync_success_ratio gauge
# HELP fulfillment_hop_sync_orders Per hop, orders that entered it in the KPI window at least the hop's SLA ago (the hop sync ratio's denominator).
# TYPE fulfillment_hop_sync_orders gauge
# HELP fulfillment_hop_sync_unreached_orders Per hop, orders that entered it in the KPI window at least the hop's SLA ago and have not got past it.
# TYPE fulfillment_hop_sync_unreached_orders gauge
# HELP fulfillment_manual_intervention_ratio Orders paid in the KPI window that a person handled (an ERP/WMS record shows a manual action), over orders paid.
# TYPE fulfillment_manual_intervention_ratio gauge
# HELP fulfillment_manual_intervention_orders Orders paid in the KPI window that a person handled (an ERP/WMS record shows a manual action).
# TYPE fulfillment_manual_intervention_orders gauge
# HELP fulfillment_paid_orders Orders paid in the KPI window.
# TYPE fulfillment_paid_orders gauge
# HELP fulfillment_source_up 1 when the last poll of the source succeeded, 0 otherwise.
# TYPE fulfillment_source_up gauge
fulfillment_source_up{source="tmall_api"} 1.0
# HELP fulfillment_source_last_success_timestamp_seconds Unix time of the last successful poll of the source.
# TYPE fulfillment_source_last_success_timestamp_seconds gauge
fulfillment_source_last_success_timestamp_seconds{source="tmall_api"} 1.77089038e+09
# HELP fulfillment_source_consecutive_failures Polls of the source that failed in a row since the last success.
# TYPE fulfillment_source_consecutive_failures gauge
fulfillment_source_consecutive_failures{source="tmall_api"} 0.0
# HELP fulfillment_source_errors_total Failed polls of the source by error class (timeout, http_5xx, rate_limited, ...).
# TYPE fulfillment_source_errors_total counter
fulfillment_source_errors_total{class="http_5xx",source="tmall_api"} 1.0
fulfillment_source_errors_total{class="timeout",source="tmall_api"} 3.0
# HELP fulfillment_source_records_total Native records read from the source.
# TYPE fulfillment_source_records_total counter
fulfillment_source_records_total{source="tmall_api"} 120.0
# HELP fulfillment_source_observations_total New canonical observations stored from the source.
# TYPE fulfillment_source_observations_total counter
fulfillment_source_observations_total{source="tmall_api"} 118.0
# HELP fulfillment_source_quarantined_total Records of the source that could not be mapped and went to quarantine.
# TYPE fulfillment_source_quarantined_total counter
fulfillment_source_quarantined_total{source="tmall_api"} 2.0
# HELP fulfillment_source_lag_seconds How far the newest event read from the source lags behind the time it was read.
# TYPE fulfillment_source_lag_seconds gauge
fulfillment_source_lag_seconds{source="tmall_api"} 4.5
# HELP fulfillment_source_lead_seconds How far the newest event read from the source is ahead of the time it was read (a wrong clock).
# TYPE fulfillment_source_lead_seconds gauge
# HELP fulfillment_queue_messages Messages waiting in a watched queue (its backlog).
# TYPE fulfillment_queue_messages gauge
# HELP fulfillment_queue_consumers Consumers attached to a watched queue.
# TYPE fulfillment_queue_consumers gauge
# HELP fulfillment_queue_oldest_message_age_seconds Age of the oldest message waiting in a watched queue (0 when it is empty).
# TYPE fulfillment_queue_oldest_message_age_seconds gauge
# HELP fulfillment_snapshot_timestamp_seconds Unix time the exposed KPI snapshot was computed at.
# TYPE fulfillment_snapshot_timestamp_seconds gauge
fulfillment_snapshot_timestamp_seconds 1.7708904e+09
# HELP fulfillment_kpi_refresh_duration_seconds Wall time the KPI job took to compute the exposed snapshot.
# TYPE fulfillment_kpi_refresh_duration_seconds gauge
fulfillment_kpi_refresh_duration_seconds 0.25
# HELP fulfillment_source_poll_duration_seconds Wall time of each poll of the source, failed polls included.
# TYPE fulfillment_source_poll_duration_seconds histogram
fulfillment_source_poll_duration_seconds_bucket{le="0.001",source="tmall_api"} 0.0
fulfillment_source_poll_duration_seconds_bucket{le="0.0025",source="tmall_api"} 0.0
fulfillment_source_poll_duration_seconds_bucket{le="0.005",source="tmall_api"} 1.0
fulfillment_source_poll_duration_seconds_bucket{le="0.01",source="tmall_api"} 1.0
fulfillment_source_poll_duration_seconds_bucket{le="0.025",source="tmall_api"} 1.0
fulfillment_source_poll_duration_seconds_bucket{le="0.05",source="tmall_api"} 1.0
fulfillment_source_poll_duration_seconds_bucket{le="0.1",source="tmall_api"} 1.0
fulfillment_source_poll_duration_seconds_bucket{le="0.25",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="0.5",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="1.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="2.5",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="5.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="10.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="20.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="30.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="60.0",source="tmall_api"} 2.0
fulfillment_source_poll_duration_seconds_bucket{le="+Inf",source="tmall_api"} 3.0
fulfillment_source_poll_duration_seconds_count{source="tmall_api"} 3.0
fulfillment_source_poll_duration_seconds_sum{source="tmall_api"} 75.253
# HELP fulfillment_alert_notifications Alert messages in the outbox by route and delivery status: pending (waiting or retrying), failed (gave up after the last attempt), unconfirmed (in flight when the service stopped).
# TYPE fulfillment_alert_notifications gauge
fulfillment_alert_notifications{route="ops",status="failed"} 1.0
fulfillment_alert_notifications{route="ops",status="pending"} 2.0
# HELP fulfillment_snapshot_age_seconds Seconds since the exposed KPI snapshot was computed (by the service clock, at scrape).
# TYPE fulfillment_snapshot_age_seconds gauge
fulfillment_snapshot_age_seconds 30.0
"""


def test_golden_exposition(exporter, clock):
    for seconds in (0.003, 0.25, 75):
        exporter.observe_poll("tmall_api", seconds)
    exporter.update_notifications({("ops", "pending"): 2, ("ops", "failed"): 1})
    clock.advance(30)
    assert exporter.render().decode() == GOLDEN


@pytest.mark.skipif(not shutil.which("promtool", path="/usr/bin"), reason="promtool is not installed")
def test_promtool_accepts_the_exposition(exporter):
    exporter.observe_poll("tmall_api", 0.2)
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exporter.render(), capture_output=True, timeout=30
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


@pytest.fixture
def server(exporter):
    srv = serve(exporter, "127.0.0.1", 0)
    yield srv
    srv.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_http_metrics_endpoint(server, exporter, clock):
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
    clock.advance(7)
    status, headers, body = get(server.url)
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    assert body == exporter.render()
    assert b"fulfillment_snapshot_age_seconds 7.0" in body


def test_http_healthz_and_unknown_paths(server):
    assert get(f"{server.base_url}/healthz")[::2] == (200, b"ok\n")
    assert get(f"{server.base_url}/nope")[0] == 404


def test_server_close_frees_the_port(exporter):
    srv = serve(exporter, "127.0.0.1", 0)
    url = srv.url
    srv.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)
