"""Alert rules over KPI snapshots: pending -> firing -> resolved, persisted, with a transactional outbox."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from alerts.message import render_alert
from alerts.notifiers.base import THROTTLED, Notifier, SendResult
from metrics.snapshot import KpiValue, Labels, Snapshot, labels_of
from sentinel.clock import Clock
from sentinel.config import Config, RuleConfig
from store.schema import alerts, outbox

log = logging.getLogger("alerts.engine")

ACTIVE = ("pending", "firing")
# The count a rule's min_count is compared with: the denominator series with the same labels.
DENOMINATOR = {
    "sync_success_ratio": "sync_paid_orders",
    "sync_unreached_orders": "sync_paid_orders",
    "stuck_ratio": "state_orders",
    "stuck_orders": "state_orders",
}
OPS = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
}


@dataclass(frozen=True)
class AlertTransition:
    """One state change of one alert; `kind` is the new state."""

    fingerprint: str
    rule: str
    labels: Labels
    from_state: str  # inactive, pending, firing
    to_state: str  # pending, firing, resolved, inactive
    value: float | None
    at: datetime
    severity: str

    @property
    def kind(self) -> str:
        return self.to_state


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt of one outbox row led to."""

    outbox_id: int
    fingerprint: str
    route: str
    kind: str
    status: str  # sent, retry, failed
    attempts: int
    detail: str
    next_attempt_at: datetime | None = None


def fingerprint(rule: str, labels: Labels | dict[str, str]) -> str:
    """Stable identity of one alert: a hash of the rule name and the series labels."""
    canonical = json.dumps({"rule": rule, "labels": dict(labels)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class AlertEngine:
    """Evaluates rules against snapshots and delivers queued notifications; all state is in the store."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        clock: Clock,
        notifiers: dict[str, Notifier],
        *,
        backoff: timedelta = timedelta(seconds=30),
        max_backoff: timedelta = timedelta(minutes=10),
        max_age: timedelta = timedelta(hours=24),
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.notifiers = notifiers
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_age = max_age

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, snapshot: Snapshot) -> list[AlertTransition]:
        """Apply every rule to the snapshot; state changes and their outbox rows commit together."""
        now = self.clock.now()
        transitions: list[AlertTransition] = []
        rules = {rule.name: rule for rule in self.config.alerts.rules}
        with self.engine.begin() as conn:
            rows = {r.fingerprint: r for r in conn.execute(select(alerts))}
            seen: set[str] = set()
            for rule in rules.values():
                for series in self._watched(rule, snapshot):
                    fp = fingerprint(rule.name, series.labels)
                    seen.add(fp)
                    cond = self._condition(rule, series, snapshot)
                    step = self._step(
                        conn, rule, fp, series.labels, series.value, cond, rows.get(fp), snapshot, now
                    )
                    if step is not None:
                        transitions.append(step)
            for fp, row in rows.items():
                if fp in seen or row.state not in ACTIVE:
                    continue
                labels = labels_of(json.loads(row.labels))
                rule = rules.get(row.rule)
                if rule is None:  # the rule was removed from config: close quietly
                    transitions.append(self._close(conn, row, labels, now))
                    continue
                step = self._step(conn, rule, fp, labels, None, False, row, snapshot, now)
                if step is not None:
                    transitions.append(step)
        for t in transitions:
            log.info(
                "alert %s %s: %s -> %s (value %s)", t.rule, dict(t.labels), t.from_state, t.to_state, t.value
            )
        return transitions

    @staticmethod
    def _watched(rule: RuleConfig, snapshot: Snapshot) -> list[KpiValue]:
        keys = sorted({*rule.by, *rule.match})
        return [
            v
            for v in snapshot.series(rule.kpi, by=keys)
            if all(v.label_dict.get(k) == val for k, val in rule.match.items())
        ]

    @staticmethod
    def _condition(rule: RuleConfig, series: KpiValue, snapshot: Snapshot) -> bool:
        if rule.min_count > 0:
            denominator = DENOMINATOR.get(rule.kpi)
            count = series.value if denominator is None else snapshot.get(denominator, **series.label_dict)
            if count is None or count < rule.min_count:
                return False
        return OPS[rule.op](series.value, rule.threshold)

    def _step(
        self,
        conn: Connection,
        rule: RuleConfig,
        fp: str,
        labels: Labels,
        value: float | None,
        cond: bool,
        row: Any,
        snapshot: Snapshot,
        now: datetime,
    ) -> AlertTransition | None:
        """Move one alert along its lifecycle; returns the transition, if any."""
        state = row.state if row is not None and row.state in ACTIVE else "inactive"

        def moved(to_state: str) -> AlertTransition:
            return AlertTransition(fp, rule.name, labels, state, to_state, value, now, rule.severity)

        if state == "inactive":
            if not cond:
                return None
            fields = {"state": "pending", "pending_since": now, "fired_at": None, "resolved_at": None}
            if rule.for_ <= timedelta(0):
                fields.update(state="firing", fired_at=now, last_notified_at=now)
                self._enqueue(
                    conn, rule, fp, labels, value, "firing", f"{fp}:firing:{_ms(now)}", snapshot, now, now
                )
            common = {"rule": rule.name, "severity": rule.severity, "value": value, "updated_at": now}
            if row is None:
                labels_json = json.dumps(dict(labels), sort_keys=True, ensure_ascii=False)
                conn.execute(insert(alerts).values(fingerprint=fp, labels=labels_json, **common, **fields))
            else:
                conn.execute(update(alerts).where(alerts.c.fingerprint == fp).values(**common, **fields))
            return moved(fields["state"])
        if state == "pending":
            if not cond:
                conn.execute(delete(alerts).where(alerts.c.fingerprint == fp))
                return moved("inactive")
            if now - row.pending_since >= rule.for_:
                self._enqueue(
                    conn, rule, fp, labels, value, "firing", f"{fp}:firing:{_ms(now)}", snapshot, now, now
                )
                self._update(conn, fp, rule, value, now, state="firing", fired_at=now, last_notified_at=now)
                return moved("firing")
            self._update(conn, fp, rule, value, now)
            return None
        fired_at = row.fired_at or row.pending_since
        if not cond:
            key = f"{fp}:resolved:{_ms(fired_at)}"
            self._enqueue(conn, rule, fp, labels, value, "resolved", key, snapshot, now, fired_at)
            self._update(conn, fp, rule, value, now, state="resolved", resolved_at=now)
            return moved("resolved")
        repeat = self.config.alerts.repeat_interval
        last = row.last_notified_at or fired_at
        if repeat > timedelta(0) and now - last >= repeat:
            slot = fired_at + repeat * ((now - fired_at) // repeat)
            key = f"{fp}:repeat:{_ms(slot)}"
            self._enqueue(conn, rule, fp, labels, value, "repeat", key, snapshot, now, fired_at)
            self._update(conn, fp, rule, value, now, last_notified_at=now)
        else:
            self._update(conn, fp, rule, value, now)
        return None

    def _close(self, conn: Connection, row: Any, labels: Labels, now: datetime) -> AlertTransition:
        conn.execute(
            update(alerts)
            .where(alerts.c.fingerprint == row.fingerprint)
            .values(state="resolved", resolved_at=now, updated_at=now)
        )
        return AlertTransition(
            row.fingerprint, row.rule, labels, row.state, "resolved", None, now, row.severity or ""
        )

    @staticmethod
    def _update(
        conn: Connection, fp: str, rule: RuleConfig, value: float | None, now: datetime, **fields
    ) -> None:
        conn.execute(
            update(alerts)
            .where(alerts.c.fingerprint == fp)
            .values(value=value, severity=rule.severity, updated_at=now, **fields)
        )

    def _enqueue(
        self,
        conn: Connection,
        rule: RuleConfig,
        fp: str,
        labels: Labels,
        value: float | None,
        kind: str,
        dedup_key: str,
        snapshot: Snapshot,
        now: datetime,
        since: datetime,
    ) -> None:
        """Queue one notification; a second enqueue with the same dedup_key is a no-op."""
        body = render_alert(kind, rule, labels, value, snapshot, self.config, now, since=since)
        row = {
            "dedup_key": dedup_key,
            "fingerprint": fp,
            "route": rule.route,
            "kind": kind,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "parts_sent": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        dialect = conn.dialect.name
        if dialect in ("sqlite", "postgresql"):
            module = sqlite if dialect == "sqlite" else postgresql
            conn.execute(
                module.insert(outbox).values(**row).on_conflict_do_nothing(index_elements=["dedup_key"])
            )
        elif conn.execute(select(outbox.c.id).where(outbox.c.dedup_key == dedup_key)).first() is None:
            conn.execute(insert(outbox).values(**row))

    # -- delivery -----------------------------------------------------------------------------
    def deliver(self) -> list[DeliveryResult]:
        """Send due outbox rows in id order, one route at a time in order; retry or fail visibly."""
        now = self.clock.now()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox).where(outbox.c.status == "pending").order_by(outbox.c.id)
            ).all()
        blocked: set[str] = set()  # a route that failed or waits keeps its later rows in order
        results: list[DeliveryResult] = []
        for row in rows:
            if row.route in blocked:
                continue
            if row.next_attempt_at is not None and row.next_attempt_at > now:
                blocked.add(row.route)
                continue
            notifier = self.notifiers.get(row.route)
            if notifier is None:
                fail = SendResult(False, False, "config", f"no notifier for route {row.route!r}")
                results.append(self._record(row, [fail], now))
                continue
            result = self._record(row, notifier.send(row.body, skip=row.parts_sent), now)
            results.append(result)
            if result.status != "sent":
                blocked.add(row.route)
        return results

    def _record(self, row: Any, sent: list[SendResult], now: datetime) -> DeliveryResult:
        """Persist the outcome of one send: sent, scheduled retry, or failed with its reason."""
        accepted = [r for r in sent if r.ok]
        failure = next((r for r in sent if not r.ok), None)
        only_throttled = failure is not None and failure.code == THROTTLED and not accepted  # no I/O at all
        attempts = row.attempts + (0 if only_throttled else 1)
        fields: dict[str, Any] = {"attempts": attempts, "parts_sent": row.parts_sent + len(accepted)}
        next_at = None
        if failure is None:
            answer = " | ".join(r.response_text for r in accepted) or "ok"
            fields.update(status="sent", sent_at=now, response=answer[:2000])
            status, detail = "sent", answer
        elif failure.retryable and now - row.created_at < self.max_age:
            delay = self._delay(attempts, failure)
            next_at = now + delay
            detail = f"{failure.code}: {failure.detail}"
            fields.update(next_attempt_at=next_at, response=detail[:2000])
            status = "retry"
        else:
            expired = " (gave up: older than the retry window)" if failure.retryable else ""
            detail = f"{failure.code}: {failure.detail}{expired}"
            fields.update(status="failed", response=detail[:2000])
            status = "failed"
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(**fields))
        level = logging.INFO if status == "sent" else logging.WARNING
        log.log(level, "outbox %d (%s via %s): %s %s", row.id, row.kind, row.route, status, detail)
        return DeliveryResult(row.id, row.fingerprint, row.route, row.kind, status, attempts, detail, next_at)

    def _delay(self, attempts: int, failure: SendResult) -> timedelta:
        if failure.code == THROTTLED and failure.retry_after:
            return timedelta(seconds=failure.retry_after)
        exponential = min(self.backoff * (2 ** max(0, attempts - 1)), self.max_backoff)
        return max(exponential, timedelta(seconds=failure.retry_after or 0))

    # -- read side for pages ------------------------------------------------------------------
    def active_alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, most severe and oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.state.in_(ACTIVE))).all()
        out = [
            {
                "fingerprint": r.fingerprint,
                "rule": r.rule,
                "labels": json.loads(r.labels),
                "state": r.state,
                "value": r.value,
                "since": r.fired_at if r.state == "firing" else r.pending_since,
                "severity": r.severity or "",
            }
            for r in rows
        ]
        out.sort(key=lambda a: (a["state"] != "firing", a["severity"], a["since"]))
        return out

    def deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent outbox rows (without bodies), newest first: sent, waiting and failed."""
        cols = [c for c in outbox.c if c.name != "body"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).order_by(outbox.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
