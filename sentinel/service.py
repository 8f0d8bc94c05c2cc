"""The service: one scheduler running polls, KPI refresh and alert evaluation over the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import requests

from collectors.amqp_queue import QueueMonitor, QueueSample
from collectors.errors import RetryPolicy, SourceError
from collectors.registry import build_collector
from collectors.types import Batch, Collector
from metrics.kpi import KpiEngine
from metrics.snapshot import Snapshot, save_snapshot
from sentinel.clock import Clock
from sentinel.config import Config
from sentinel.runtime import tune_runtime
from store.db import init_schema, make_engine
from store.store import ChannelIdentity, IngestResult, Store

log = logging.getLogger("sentinel.service")
GROUP_OBSERVATIONS = 20_000  # pages of one poll are written together up to this many records


@dataclass
class PollOutcome:
    source: str
    ok: bool
    batches: int = 0
    totals: IngestResult = field(default_factory=IngestResult)
    error: SourceError | None = None


@dataclass
class Job:
    name: str
    interval: timedelta
    run: Callable[[], object]
    next_due: datetime | None = None


def build_notifiers(config: Config, clock: Clock, session: requests.Session | None = None) -> dict:
    """One notifier per configured route, of the class its `kind` names."""
    from alerts.notifiers.dingtalk import DingTalkNotifier
    from alerts.notifiers.email import EmailNotifier
    from alerts.notifiers.feishu import FeishuNotifier
    from alerts.notifiers.webhook import WebhookNotifier
    from alerts.notifiers.wecom import WeComNotifier

    robots = {
        "wecom": (WeComNotifier, "key"),
        "dingtalk": (DingTalkNotifier, "access_token"),
        "feishu": (FeishuNotifier, "token"),
    }
    notifiers: dict = {}
    for name, route in config.alerts.routes.items():
        timeout = route.timeout.total_seconds()
        match route.kind:
            case "wecom" | "dingtalk" | "feishu":
                robot, token_field = robots[route.kind]
                notifiers[name] = robot(
                    route.url,
                    getattr(route, token_field),
                    clock,
                    secret=getattr(route, "secret", None),  # WeCom robots have no signing secret
                    session=session,
                    timeout=timeout,
                    mentions=route.mentions,
                )
            case "email":
                notifiers[name] = EmailNotifier(
                    route.host,
                    route.port,
                    route.sender,
                    route.to,
                    clock,
                    tls=route.tls,
                    username=route.username,
                    password=route.password,
                    timeout=timeout,
                    subject_prefix=route.subject_prefix,
                )
            case "webhook":
                notifiers[name] = WebhookNotifier(
                    route.url,
                    clock,
                    receiver=name,
                    bearer_token=route.bearer_token,
                    hmac_secret=route.hmac_secret,
                    external_url=config.service.dashboard_url,
                    timezone=config.service.timezone,
                    session=session,
                    timeout=timeout,
                )
    return notifiers


class Service:
    """Wires config -> collectors -> store -> KPI snapshot -> exporter and alerts."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        engine=None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        collectors: dict[str, Collector] | None = None,
        notifiers: dict | None = None,
    ) -> None:
        from alerts.engine import AlertEngine
        from metrics.exporter import MetricsExporter

        self.config = config
        self.clock = clock
        self.engine = engine or make_engine(config.service.store_url)
        init_schema(self.engine)
        identities = {n: ChannelIdentity(c.code, c.id_pattern) for n, c in config.channels.items()}
        roles = {name: source.effective_role for name, source in config.sources.items()}
        self.store = Store(self.engine, identities, config.service.timezone, roles)
        self.session = session or requests.Session()
        retry = RetryPolicy(sleep=sleep)
        self.collectors = (
            collectors
            if collectors is not None
            else {
                name: build_collector(name, src, session=self.session, retry=retry)
                for name, src in config.sources.items()
                if src.enabled
            }
        )
        self.exporter = MetricsExporter(clock)
        self.queues = {
            name: QueueMonitor(name, q.url.get_secret_value(), q.queue, q.timeout.total_seconds())
            for name, q in config.queues.items()
            if q.enabled
        }
        self._lead: dict[str, float] = {}  # source -> seconds its newest time was ahead of the read
        if notifiers is None:
            notifiers = build_notifiers(config, clock, session=self.session)
        self.alerts = AlertEngine(
            self.engine, config, clock, notifiers, health=self.source_health, diagnoser=self.diagnosis_line
        )
        kpi = config.kpi
        self.kpis = KpiEngine.from_config(self.engine, kpi, store=self.store)
        self.snapshot: Snapshot | None = None
        if config.reconcile.indexes:
            from reconcile.indexes import ensure_indexes

            ensure_indexes(self.engine, config.reconcile.roles)
        self._diagnoses: dict[tuple, str | None] = {}
        self._scheduler = None
        self._metrics_server = None

    # -- jobs ---------------------------------------------------------------------------------
    def poll_source(self, name: str) -> PollOutcome:
        collector = self.collectors[name]
        started = time.perf_counter()  # wall time for the histogram, whatever the (virtual) clock says
        now = self.clock.now()
        outcome = PollOutcome(name, ok=True)
        pending: list[Batch] = []
        pending_records = 0

        newest: list = []
        results: list = []

        def flush(last: bool = False) -> bool:
            """Hand the pages read so far to the store's writer as one transaction (each with its
            cursor): it writes them while the next pages are read. The last pages of a poll that
            ended well carry its success (no transaction of its own); True when they did."""
            nonlocal pending_records
            newest.extend(b.max_event_at for b in pending if b.max_event_at is not None)
            carried = last and bool(pending)
            if pending:
                results.extend(self.store.submit(pending, self.clock.now(), {name: now} if carried else None))
            pending.clear()
            pending_records = 0
            return carried

        def written() -> None:
            """Wait for the writes; then count what they stored."""
            self.store.flush()
            for result in results:
                outcome.batches += 1
                for attr in (
                    "records",
                    "new_observations",
                    "duplicate_observations",
                    "quarantined",
                    "orders_touched",
                ):
                    setattr(outcome.totals, attr, getattr(outcome.totals, attr) + getattr(result, attr))

        try:
            for batch in collector.poll(self.store.cursor(name), now):
                pending.append(batch)
                pending_records += len(batch.observations) + len(batch.quarantined)
                if pending_records >= GROUP_OBSERVATIONS:
                    flush()
            success_written = flush(last=True)
            written()
        except SourceError as exc:
            flush()  # the pages read before the failure are good: keep them and their cursor
            written()
            log.warning("poll %s failed [%s]: %s", name, exc.error_class, exc)
            self.store.record_poll_failure(name, exc, now)
            outcome.ok, outcome.error = False, exc
            self.exporter.observe_poll(name, time.perf_counter() - started)
            return outcome
        if not success_written:
            self.store.record_poll_success(name, now)
        if newest:
            self._lead[name] = max(0.0, (max(newest) - now).total_seconds())
        self.exporter.observe_poll(name, time.perf_counter() - started)
        return outcome

    def poll_queue(self, name: str) -> QueueSample | None:
        """Sample a watched queue's backlog; its health row says whether the broker answered."""
        now = self.clock.now()
        try:
            sample = self.queues[name].sample(now)
        except SourceError as exc:
            log.warning("queue %s failed [%s]: %s", name, exc.error_class, exc)
            self.store.record_poll_failure(name, exc, now)
            return None
        self.store.record_poll_success(name, now)
        return sample

    def source_health(self) -> list[dict]:
        """Source-health rows with what the service knows beside the store: seconds since the last
        successful poll, how far a source's times run ahead of the clock, and each queue's latest
        backlog sample."""
        rows = self.store.health()
        now = self.clock.now()
        for row in rows:
            name = row["source"]
            last = row.get("last_success_at") or row.get("last_attempt_at")
            if last is not None:  # how long nothing could be read (a throttled or rejected source)
                row["stale_seconds"] = max(0.0, (now - last).total_seconds())
            if name in self._lead:
                row["lead_seconds"] = self._lead[name]
            monitor = self.queues.get(name)
            if monitor is not None and monitor.last is not None:
                row.update(monitor.last.health())
        return rows

    def poll_all(self) -> list[PollOutcome]:
        return [self.poll_source(name) for name in self.collectors]

    def refresh_kpis(self) -> Snapshot:
        snap = self.kpis.refresh(self.clock.now())
        save_snapshot(self.engine, snap)
        self.snapshot = snap
        self.exporter.update(snap, self.source_health())
        return snap

    def evaluate_alerts(self) -> list:
        if self.snapshot is None:
            return []
        transitions = self.alerts.evaluate(self.snapshot)
        self.alerts.deliver()
        self.exporter.update_notifications(self.alerts.notification_counts())
        return transitions

    def jobs(self) -> list[Job]:
        jobs = [
            Job(f"poll:{name}", self.config.sources[name].poll_interval, lambda n=name: self.poll_source(n))
            for name in self.collectors
        ]
        jobs += [
            Job(f"queue:{name}", self.config.queues[name].poll_interval, lambda n=name: self.poll_queue(n))
            for name in self.queues
        ]
        jobs.append(Job("kpi", self.config.kpi.refresh_interval, self.refresh_kpis))
        jobs.append(Job("alerts", self.config.alerts.eval_interval, self.evaluate_alerts))
        if self.config.alerts.briefing is not None:
            jobs.append(Job("briefing", timedelta(minutes=1), self.morning_briefing))
        if self.config.reconcile.route is not None and self.config.reconcile.at is not None:
            jobs.append(Job("reconcile", timedelta(minutes=1), self.daily_reconciliation))
        return jobs

    def daily_reconciliation(self) -> bool:
        """Run and queue today's reconciliation report when due (once a day) and deliver it."""
        from reconcile.daily import queue_daily

        queued = queue_daily(self.engine, self.config, self.clock.now())
        if queued:
            self.alerts.deliver()
        return queued

    def diagnosis_line(self, rule, labels: dict[str, str], now: datetime) -> str | None:
        """The one-line diagnosis a firing alert's message carries (no live network checks)."""
        from diagnose import HealthView, diagnose

        key = (now, rule.kpi, tuple(sorted(labels.items())))
        if key not in self._diagnoses:  # alerts firing together share one diagnosis per series
            if self._diagnoses and next(iter(self._diagnoses))[0] != now:
                self._diagnoses.clear()
            health = HealthView(getattr(self, "source_health", self.store.health))  # queue figures when kept
            result = diagnose(
                self.engine, self.config, now, kpi=rule.kpi, labels=labels, store=health, live=False
            )
            self._diagnoses[key] = result.summary_line() if result.causes else None
        return self._diagnoses[key]

    def morning_briefing(self) -> bool:
        """Queue today's briefing when due (once a day) and deliver it; True when it was queued now."""
        from alerts.briefing import queue_briefing

        queued = queue_briefing(self.engine, self.config, self.clock.now())
        if queued:
            self.alerts.deliver()
        return queued

    def run_due(self, jobs: list[Job]) -> dict[str, object]:
        """Run every job whose time has come on the (virtual) clock, in a fixed order; their results."""
        results: dict[str, object] = {}
        for job in jobs:
            if job.next_due is None or self.clock.now() >= job.next_due:
                results[job.name] = self._guarded(job)
                job.next_due = self.clock.now() + job.interval
        return results

    def _guarded(self, job: Job) -> object:
        try:
            return job.run()
        except Exception:  # a job's bug must not stop the scheduler; it is logged with its trace
            log.exception("job %s failed", job.name)
            return None

    # -- live mode ----------------------------------------------------------------------------
    def start(self, speed: float = 1.0, serve_metrics: bool = True) -> None:
        """Start the one APScheduler of this process (and the /metrics server)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        from metrics.exporter import serve

        tune_runtime()  # a long-running process from here on
        if serve_metrics:
            svc = self.config.service
            self._metrics_server = serve(self.exporter, svc.metrics_host, svc.metrics_port)
        scheduler = BackgroundScheduler(timezone="UTC")
        for job in self.jobs():
            seconds = max(0.5, job.interval.total_seconds() / speed)
            scheduler.add_job(
                self._guarded,
                "interval",
                args=[job],
                seconds=seconds,
                id=job.name,
                max_instances=1,
                coalesce=True,
                next_run_time=datetime.now().astimezone(),
            )
        scheduler.start()
        self._scheduler = scheduler

    @property
    def metrics_url(self) -> str | None:
        return None if self._metrics_server is None else self._metrics_server.url

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        for monitor in self.queues.values():
            monitor.close()
        self.engine.dispose()
