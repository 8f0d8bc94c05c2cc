"""A real Prometheus scrapes our /metrics and evaluates the exported alert rules against it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from prometheus_client import CollectorRegistry

from alerts.engine import AlertEngine
from alerts.promrules import render_rules
from metrics.exporter import MetricsExporter, serve
from metrics.snapshot import KpiValue, Snapshot, labels_of
from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, Config, parse_config

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package `prometheus`)"
)
T0 = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
DEADLINE = 20.0  # seconds to wait for Prometheus to scrape/evaluate (an external process, not our clock)
TARGET_LABELS = {"instance", "job"}

# Each line says what the alert engine decides for the series, and Prometheus must agree.
SNAP = Snapshot(
    T0,
    tuple(
        KpiValue(kpi, labels_of(labels), value)
        for kpi, labels, value in [
            ("sync_success_ratio", {}, 0.5),  # sync_ratio_low fires: below 0.9995 with 100 paid
            ("sync_paid_orders", {}, 100),
            ("sync_success_ratio", {"channel": "tmall"}, 0.5),  # a breakdown: the rule watches the total
            ("sync_paid_orders", {"channel": "tmall"}, 50),
            ("sync_success_ratio", {"channel": "jd"}, 1.0),
            ("sync_paid_orders", {"channel": "jd"}, 50),
            ("stuck_ratio", {"state": "picked"}, 0.5),  # stuck_by_state fires for picked
            ("state_orders", {"state": "picked"}, 40),
            ("stuck_ratio", {"state": "paid"}, 0.6),  # 5 orders: under min_count 20
            ("state_orders", {"state": "paid"}, 5),
            ("stuck_ratio", {"state": "packed"}, 0.05),  # exactly the threshold: `>` is false
            ("state_orders", {"state": "packed"}, 100),
            ("stuck_ratio", {"state": "shipped"}, 0.9),  # no denominator series at all
            ("stuck_ratio", {"state": "paid", "channel": "jd"}, 0.9),  # by channel too: not watched
            ("state_orders", {"state": "paid", "channel": "jd"}, 100),
        ]
    ),
    0.25,
)
FIRING = {("sync_ratio_low", ()), ("stuck_by_state", (("state", "picked"),))}
POLLS = [("tmall", 0.02), ("tmall", 0.3), ("wms", 0.004)]


def fast_config() -> Config:
    """The project's config.toml with every rule's `for` cut to 1 s, so alerts fire within seconds."""
    raw = tomllib.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    for rule in raw["alerts"]["rules"]:
        rule["for"] = "1s"
    return parse_config(raw, env={})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prometheus:
    """A prometheus process on a free port with its own config and TSDB under a temp directory."""

    def __init__(self, workdir: Path, target: str, rule_file: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rule_file)],
                    "scrape_configs": [{"job_name": "sentinel", "static_configs": [{"targets": [target]}]}],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_for(self._ready, "Prometheus to become ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful Prometheus HTTP API answer."""
        url = f"{self.base_url}/api/v1/{path}" + (f"?{urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict]:
        return self.api("query", query=promql)["result"]

    def wait_for(self, probe: Callable[[], Any], what: str) -> Any:
        """Poll `probe` until it returns something truthy; fail with Prometheus' own diagnosis."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
            result = probe()
            if result:
                return result
            time.sleep(0.2)
        targets = self.api("targets")["activeTargets"] if self._ready() else "not ready"
        pytest.fail(f"timed out after {DEADLINE:g}s waiting for {what}; targets: {targets}\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def exporter() -> MetricsExporter:
    exp = MetricsExporter(ManualClock(T0), CollectorRegistry())
    exp.update(SNAP, [])
    for source, seconds in POLLS:
        exp.observe_poll(source, seconds)
    return exp


@pytest.fixture(scope="module")
def prometheus(exporter, tmp_path_factory) -> Prometheus:
    workdir = tmp_path_factory.mktemp("prometheus")
    rule_file = workdir / "rules.yml"
    rule_file.write_text(render_rules(fast_config()), encoding="utf-8")
    target = serve(exporter, "127.0.0.1", 0)
    try:
        prom = Prometheus(workdir, f"127.0.0.1:{target.port}", rule_file)
    except BaseException:
        target.close()
        raise
    yield prom
    prom.close()
    target.close()


def _series(labels: dict[str, str], drop: set[str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k not in drop))


def test_prometheus_scrapes_the_exposed_kpi_value(prometheus):
    promql = 'fulfillment_sync_success_ratio{channel="tmall"}'
    result = prometheus.wait_for(lambda: prometheus.query(promql), promql)
    assert len(result) == 1
    assert result[0]["metric"]["job"] == "sentinel"
    assert float(result[0]["value"][1]) == SNAP.get("sync_success_ratio", channel="tmall") == 0.5


def test_prometheus_reads_the_poll_duration_histogram(prometheus):
    promql = 'fulfillment_source_poll_duration_seconds_bucket{source="tmall"}'
    buckets = prometheus.wait_for(lambda: prometheus.query(promql), promql)
    by_le = {b["metric"]["le"]: float(b["value"][1]) for b in buckets}
    assert (by_le["0.01"], by_le["0.025"], by_le["0.25"], by_le["0.5"], by_le["+Inf"]) == (0, 1, 1, 2, 2)
    (total,) = prometheus.query('fulfillment_source_poll_duration_seconds_sum{source="tmall"}')
    assert float(total["value"][1]) == pytest.approx(0.32)
    quantile = prometheus.query(
        'histogram_quantile(0.5, fulfillment_source_poll_duration_seconds_bucket{source="wms"})'
    )
    assert 0.0025 < float(quantile[0]["value"][1]) <= 0.005


def test_exported_rules_fire_in_prometheus_exactly_where_the_engine_would(prometheus):
    config = fast_config()
    engine_says = {
        (rule.name, series.labels)
        for rule in config.alerts.rules
        for series in AlertEngine._watched(rule, SNAP)
        if AlertEngine._condition(rule, series, SNAP)
    }
    assert engine_says == FIRING

    def firing() -> list[dict] | None:
        alerts = prometheus.api("alerts")["alerts"]
        states = {(a["labels"]["alertname"], a["state"]) for a in alerts}
        return alerts if len(alerts) >= len(FIRING) and all(s == "firing" for _, s in states) else None

    alerts = prometheus.wait_for(firing, f"alerts {sorted(FIRING)} to fire")
    dropped = TARGET_LABELS | {"alertname", "severity", "route"}
    assert {(a["labels"]["alertname"], _series(a["labels"], dropped)) for a in alerts} == FIRING
    rules = {rule.name: rule for rule in config.alerts.rules}
    for alert in alerts:
        rule = rules[alert["labels"]["alertname"]]
        assert (alert["labels"]["severity"], alert["labels"]["route"]) == (rule.severity, rule.route)
        assert float(alert["value"]) == 0.5  # the ratio, not the count `and` joined it with
    sync = next(a for a in alerts if a["labels"]["alertname"] == "sync_ratio_low")
    assert sync["annotations"]["summary"] == rules["sync_ratio_low"].summary
