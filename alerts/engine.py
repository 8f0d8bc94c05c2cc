"""Alert rules over KPI snapshots and source health: pending -> firing -> resolved, persisted.

A state change queues a notice (alert_notices) in the same transaction; due groups of notices become
one outbox message each (a digest when several), after silences, inhibition and quiet hours; the
outbox is delivered part by part with retries, and folded into one digest when a robot's window is full.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, Table, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from alerts.message import alert_link, render_alert, render_digest
from alerts.model import Alert, all_match, matchers_of
from alerts.notifiers.base import PAYLOAD, THROTTLED, Notifier, SendResult
from alerts.notifiers.markup import title_of
from alerts.silences import Silence, active_silences
from metrics.snapshot import KpiValue, Labels, Snapshot, labels_of
from sentinel.clock import Clock
from sentinel.config import Config, RuleConfig
from store.schema import alert_acks, alert_groups, alert_notices, alerts, outbox

log = logging.getLogger("alerts.engine")

ACTIVE = ("pending", "firing")
# The count a rule's min_count is compared with: the denominator series with the same labels.
DENOMINATOR = {
    "sync_success_ratio": "sync_paid_orders",
    "sync_unreached_orders": "sync_paid_orders",
    "stuck_ratio": "state_orders",
    "stuck_orders": "state_orders",
    "order_loss_ratio": "order_loss_paid_orders",
    "order_loss_orders": "order_loss_paid_orders",
    "return_break_ratio": "return_active_orders",
    "return_break_orders": "return_active_orders",
    "dwell_failure_ratio": "dwell_judged_orders",
    "hop_sync_success_ratio": "hop_sync_orders",
    "hop_sync_unreached_orders": "hop_sync_orders",
    "manual_intervention_ratio": "paid_orders",
    "manual_intervention_orders": "paid_orders",
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
    if isinstance(labels, tuple):  # every evaluation asks again for the same series
        return _series_fingerprint(rule, labels)
    canonical = json.dumps({"rule": rule, "labels": dict(labels)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=50_000)
def _series_fingerprint(rule: str, labels: Labels) -> str:
    return fingerprint(rule, dict(labels))


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
        health: Callable[[], list[dict[str, Any]]] | None = None,
        diagnoser: Callable[[RuleConfig, dict[str, str], datetime], str | None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.notifiers = notifiers
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_age = max_age
        self.health = health  # Store.health: source rows for "no data" rules
        self.diagnoser = diagnoser  # the one-line likely cause for firing messages (diagnose/)
        self._recovered = False

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, snapshot: Snapshot) -> list[AlertTransition]:
        """Apply every rule to the snapshot; state changes and their notices commit together."""
        now = self.clock.now()
        transitions: list[AlertTransition] = []
        rules = {rule.name: rule for rule in self.config.alerts.rules}
        health = None
        with self.engine.begin() as conn:
            rows = {r.fingerprint: r for r in conn.execute(select(alerts))}
            acked = {(a.fingerprint, a.fired_at) for a in conn.execute(select(alert_acks))}
            seen: set[str] = set()
            for rule in rules.values():
                if rule.watches_sources:
                    health = health if health is not None else self._health()
                    watched = (
                        self._silent_sources(rule, health, now)
                        if rule.no_data is not None
                        else self._source_conditions(rule, health)
                    )
                else:
                    watched = [
                        (s.labels, s.value, self._condition(rule, s, snapshot))
                        for s in self._watched(rule, snapshot)
                    ]
                for labels, value, cond in watched:
                    fp = fingerprint(rule.name, labels)
                    seen.add(fp)
                    step = self._step(conn, rule, fp, labels, value, cond, rows.get(fp), snapshot, now, acked)
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
                step = self._step(conn, rule, fp, labels, None, False, row, snapshot, now, acked)
                if step is not None:
                    transitions.append(step)
            self._flush(conn, now)
        for t in transitions:
            log.info(
                "alert %s %s: %s -> %s (value %s)", t.rule, dict(t.labels), t.from_state, t.to_state, t.value
            )
        return transitions

    @staticmethod
    def _watched(rule: RuleConfig, snapshot: Snapshot) -> list[KpiValue]:
        keys = sorted({*rule.by, *rule.match, *rule.match_re})
        matchers = matchers_of(rule.match, rule.match_re)
        return [v for v in snapshot.series(rule.kpi, by=keys) if all_match(matchers, v.label_dict)]

    @staticmethod
    def _condition(rule: RuleConfig, series: KpiValue, snapshot: Snapshot) -> bool:
        if rule.min_count > 0:
            denominator = DENOMINATOR.get(rule.kpi)
            count = series.value if denominator is None else snapshot.get(denominator, **series.label_dict)
            if count is None or count < rule.min_count:
                return False
        return OPS[rule.op](series.value, rule.threshold)

    def _health(self) -> dict[str, dict[str, Any]]:
        rows = self.health() if self.health is not None else []
        return {row["source"]: row for row in rows}

    def _silent_sources(
        self, rule: RuleConfig, health: dict[str, dict[str, Any]], now: datetime
    ) -> list[tuple[Labels, float | None, bool]]:
        """(labels, seconds since the last successful poll, down?) per watched source that has polled."""
        names = rule.sources or tuple(n for n, s in self.config.sources.items() if s.enabled)
        out = []
        for name in names:
            row = health.get(name)
            if row is None:  # never polled yet: nothing to judge
                continue
            source = self.config.sources.get(name)
            labels = {"source": name}
            if source is not None and source.channel:
                labels["channel"] = source.channel
            last = row.get("last_success_at")
            silent = None if last is None else max(0.0, (now - last).total_seconds())
            down = not row.get("up") or silent is None or silent > rule.no_data.total_seconds()
            out.append((labels_of(labels), silent, down))
        return out

    def _watched_names(self, rule: RuleConfig, health: dict[str, dict[str, Any]]) -> tuple[str, ...]:
        if rule.sources:
            return rule.sources
        enabled = [n for n, s in self.config.sources.items() if s.enabled]
        return (*enabled, *(n for n, q in self.config.queues.items() if q.enabled))

    def _source_labels(self, name: str) -> Labels:
        source = self.config.sources.get(name) or self.config.queues.get(name)
        labels = {"source": name}
        if source is not None and source.channel:
            labels["channel"] = source.channel
        return labels_of(labels)

    def _source_conditions(
        self, rule: RuleConfig, health: dict[str, dict[str, Any]]
    ) -> list[tuple[Labels, float | None, bool]]:
        """(labels, value, condition) per watched source for `source_metric` / `source_errors` rules:
        the figure against the threshold, or whether the last poll failed with a listed class."""
        out = []
        for name in self._watched_names(rule, health):
            row = health.get(name)
            if row is None:
                continue
            if rule.source_metric is not None:
                value = row.get(rule.source_metric)
                if value is None:
                    continue
                cond = OPS[rule.op](float(value), rule.threshold)
            else:
                value = float(row.get("consecutive_failures") or 0)
                cond = not row.get("up") and row.get("last_error_class") in rule.source_errors
            out.append((self._source_labels(name), value, cond))
        return out

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
        acked: set[tuple[str, datetime]],
    ) -> AlertTransition | None:
        """Move one alert along its lifecycle; returns the transition, if any."""
        state = row.state if row is not None and row.state in ACTIVE else "inactive"

        def moved(to_state: str) -> AlertTransition:
            return AlertTransition(fp, rule.name, labels, state, to_state, value, now, rule.severity)

        def notify(kind: str, key: str, since: datetime) -> None:
            self._enqueue(conn, rule, fp, labels, value, kind, key, snapshot, now, since)

        if state == "inactive":
            if not cond:
                return None
            fields = {"state": "pending", "pending_since": now, "fired_at": None, "resolved_at": None}
            if rule.for_ <= timedelta(0):
                fields.update(state="firing", fired_at=now, last_notified_at=now)
                notify("firing", f"{fp}:firing:{_ms(now)}", now)
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
                notify("firing", f"{fp}:firing:{_ms(now)}", now)
                self._update(conn, fp, rule, value, now, state="firing", fired_at=now, last_notified_at=now)
                return moved("firing")
            self._update(conn, fp, rule, value, now)
            return None
        fired_at = row.fired_at or row.pending_since
        if not cond:
            notify("resolved", f"{fp}:resolved:{_ms(fired_at)}", fired_at)
            self._update(conn, fp, rule, value, now, state="resolved", resolved_at=now)
            return moved("resolved")
        is_acked = (fp, fired_at) in acked
        if rule.escalate_after is not None and not is_acked and now - fired_at >= rule.escalate_after:
            notify("escalate", f"{fp}:escalate:{_ms(fired_at)}", fired_at)  # once per episode (dedup key)
        repeat = self.config.alerts.repeat_interval
        last = row.last_notified_at or fired_at
        if repeat > timedelta(0) and now - last >= repeat and not is_acked:
            slot = fired_at + repeat * ((now - fired_at) // repeat)
            notify("repeat", f"{fp}:repeat:{_ms(slot)}", fired_at)
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

    def alert_labels(self, rule: RuleConfig, labels: Labels | dict[str, str]) -> dict[str, str]:
        """The labels silences, inhibition and grouping see: alertname, severity, kpi, series labels."""
        out = {"alertname": rule.name, "severity": rule.severity}
        if rule.kpi:
            out["kpi"] = rule.kpi
        out.update(dict(labels))
        return out

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
        """Queue one notice for grouping; a second enqueue with the same dedup_key is a no-op."""
        diagnosis = self._diagnosis(rule, labels, now) if kind in ("firing", "escalate") else None
        body = render_alert(
            kind, rule, labels, value, snapshot, self.config, now, since=since, diagnosis=diagnosis
        )
        full = self.alert_labels(rule, labels)
        alert = Alert(
            fingerprint=fp,
            rule=rule.name,
            labels=full,
            severity=rule.severity,
            state="resolved" if kind == "resolved" else "firing",
            kind=kind,
            value=value,
            threshold=rule.no_data.total_seconds() if rule.no_data is not None else rule.threshold,
            op=">" if rule.no_data is not None else (rule.op or "="),
            starts_at=since,
            ends_at=now if kind == "resolved" else None,
            title=title_of(body),
            summary=rule.summary,
            runbook=rule.runbook,
            url=alert_link(rule, dict(labels), self.config),
        )
        route = rule.escalate_route if kind == "escalate" else rule.route
        group = {k: full.get(k, "") for k in rule.grouping}
        row = {
            "dedup_key": dedup_key,
            "fingerprint": fp,
            "route": route,
            "group_key": json.dumps(group, sort_keys=True, ensure_ascii=False)[:255],
            "kind": kind,
            "alert": alert.to_json(),
            "body": body,
            "status": "queued",
            "created_at": now,
        }
        _insert_once(conn, alert_notices, row, "dedup_key")

    def _diagnosis(self, rule: RuleConfig, labels: Labels, now: datetime) -> str | None:
        """The diagnoser's line for this alert; a failing diagnosis never holds a message back."""
        if self.diagnoser is None or rule.no_data is not None:
            return None
        try:
            return self.diagnoser(rule, dict(labels), now)
        except Exception:
            log.exception("diagnosis for %s failed", rule.name)
            return None

    # -- grouping, silences, inhibition, quiet hours -------------------------------------------
    def flush(self) -> int:
        """Turn due groups of queued notices into outbox messages; the number of messages made."""
        with self.engine.begin() as conn:
            return self._flush(conn, self.clock.now())

    def _flush(self, conn: Connection, now: datetime) -> int:
        queued = conn.execute(
            select(alert_notices).where(alert_notices.c.status == "queued").order_by(alert_notices.c.id)
        ).all()
        if not queued:
            return 0
        rules = {rule.name: rule for rule in self.config.alerts.rules}
        groups: dict[tuple[str, str], list[Any]] = {}
        for notice in queued:
            groups.setdefault((notice.route, notice.group_key), []).append(notice)
        last_flush = {(g.route, g.group_key): g.last_flush_at for g in conn.execute(select(alert_groups))}
        silenced = active_silences(conn, now)
        firing = None
        made = 0
        wait, interval = self.config.alerts.group_wait, self.config.alerts.group_interval
        for (route, group_key), notices in groups.items():
            ready = [n for n in notices if not self._held(rules.get(json.loads(n.alert)["rule"]), now)]
            if not ready:
                continue
            first = min(n.created_at for n in ready)
            last = last_flush.get((route, group_key))
            due = first + wait if last is None or first - last >= interval else last + interval
            if now < due:
                continue
            firing = firing if firing is not None else self._firing_labels(conn, rules)
            sendable = []
            for notice in ready:
                alert = Alert.from_json(notice.alert)
                reason = self._suppressed(alert, silenced, firing)
                if reason:
                    conn.execute(
                        update(alert_notices)
                        .where(alert_notices.c.id == notice.id)
                        .values(status="suppressed", reason=reason)
                    )
                    log.info("notice %s (%s) suppressed: %s", notice.dedup_key, alert.rule, reason)
                else:
                    sendable.append(notice)
            if not sendable:
                continue
            self._make_message(conn, route, sendable, f"notices:{sendable[0].id}", now)
            _upsert_group(conn, route, group_key, now, exists=last is not None)
            made += 1
        return made

    def _make_message(
        self, conn: Connection, route: str, notices: list[Any], dedup_key: str, now: datetime, **extra
    ) -> int:
        """One outbox row carrying these notices (a digest when there are several)."""
        if len(notices) == 1:
            body, kind, fp = notices[0].body, notices[0].kind, notices[0].fingerprint
        else:
            target = self.config.alerts.routes.get(route)
            mentions = tuple(target.mentions) if target is not None else ()
            body = render_digest([n.body for n in notices], [n.kind for n in notices], mentions)
            kind = "digest"
            fp = hashlib.sha256(dedup_key.encode()).hexdigest()
        values = {
            "dedup_key": dedup_key,
            "fingerprint": fp,
            "route": route,
            "kind": kind,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "parts_sent": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        values.update(extra)
        outbox_id = conn.execute(insert(outbox).values(**values)).inserted_primary_key[0]
        conn.execute(
            update(alert_notices)
            .where(alert_notices.c.id.in_([n.id for n in notices]))
            .values(status="batched", outbox_id=outbox_id)
        )
        return outbox_id

    def _held(self, rule: RuleConfig | None, now: datetime) -> bool:
        """Quiet hours: a non-bypassing rule's messages wait until the window ends."""
        if rule is None or rule.quiet_hours is None or rule.severity in self.config.alerts.quiet_hours_bypass:
            return False
        return in_quiet_hours(rule.quiet_hours, now, ZoneInfo(self.config.service.timezone))

    def _firing_labels(self, conn: Connection, rules: dict[str, RuleConfig]) -> list[tuple[str, dict]]:
        """(fingerprint, labels) of every firing alert: the possible sources of inhibition."""
        out = []
        for row in conn.execute(select(alerts).where(alerts.c.state == "firing")):
            rule = rules.get(row.rule)
            if rule is not None:
                out.append((row.fingerprint, self.alert_labels(rule, json.loads(row.labels))))
        return out

    def _suppressed(self, alert: Alert, silenced: list[Silence], firing: list[tuple[str, dict]]) -> str:
        """Why this notice must not be sent ("" = send it)."""
        for silence in silenced:
            if silence.matches(alert.labels):
                return f"silenced by #{silence.id} ({silence.created_by})"
        for inhibit in self.config.alerts.inhibit_rules:
            if not all_match(matchers_of(inhibit.target_match, inhibit.target_match_re), alert.labels):
                continue
            source_matchers = matchers_of(inhibit.source_match, inhibit.source_match_re)
            for fp, labels in firing:
                if fp == alert.fingerprint or not all_match(source_matchers, labels):
                    continue
                if all(labels.get(k, "") == alert.labels.get(k, "") for k in inhibit.equal):
                    return f"inhibited by {labels.get('alertname')} {fp[:12]}"
        return ""

    # -- acknowledgement ------------------------------------------------------------------------
    def ack(self, fp: str, by: str, comment: str = "") -> dict[str, Any]:
        """Acknowledge the current firing episode of an alert (a fingerprint or a unique prefix of it)."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.fingerprint.startswith(fp))).all()
            if len(rows) != 1:
                raise LookupError(f"{len(rows)} alerts match fingerprint {fp!r}")
            row = rows[0]
            if row.state != "firing":
                raise LookupError(f"alert {row.fingerprint[:12]} is {row.state}, not firing")
            values = {
                "fingerprint": row.fingerprint,
                "fired_at": row.fired_at,
                "acked_by": by,
                "acked_at": now,
                "comment": comment,
            }
            _insert_once(conn, alert_acks, values, "fingerprint", "fired_at")
        log.info("alert %s (%s) acknowledged by %s", row.fingerprint[:12], row.rule, by)
        return {"fingerprint": row.fingerprint, "rule": row.rule, "fired_at": row.fired_at, "acked_by": by}

    # -- delivery -------------------------------------------------------------------------------
    def deliver(self) -> list[DeliveryResult]:
        """Send due outbox messages part by part in id order, one route at a time in order.

        Before each part is posted its row is marked `sending` (committed); a service killed during
        that post finds the mark on restart and counts the part as delivered without confirmation
        (the robot most likely has it), so no part is ever posted twice.
        """
        if not self._recovered:
            self._recover_in_doubt()
            self._recovered = True
        self.flush()
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
            result = self._send_row(row, notifier, now)
            if result.status == "retry" and result.detail.startswith(THROTTLED) and row.parts_sent == 0:
                folded = self._fold(row.route, row.id, result.next_attempt_at)
                if folded is not None:
                    result = folded
            results.append(result)
            if result.status != "sent":
                blocked.add(row.route)
        return results

    def _send_row(self, row: Any, notifier: Notifier, now: datetime) -> DeliveryResult:
        parts = notifier.split(row.body)
        if not parts:
            return self._record(row, [SendResult(False, False, PAYLOAD, "empty message body")], now)
        with self.engine.connect() as conn:
            structured = tuple(
                Alert.from_json(n.alert)
                for n in conn.execute(
                    select(alert_notices.c.alert)
                    .where(alert_notices.c.outbox_id == row.id)
                    .order_by(alert_notices.c.id)
                )
            )
        sent: list[SendResult] = []
        done = row.parts_sent
        while done < len(parts):
            wait = notifier.throttle_wait()
            if wait:
                sent.append(notifier._throttled(wait))
                break
            with self.engine.begin() as conn:  # the in-flight mark, before any byte leaves
                conn.execute(update(outbox).where(outbox.c.id == row.id).values(status="sending"))
            result = notifier.send_part(parts, done, structured)
            sent.append(result)
            if not result.ok:
                break
            done += 1
            if done < len(parts):  # progress of a split message survives a kill between parts
                with self.engine.begin() as conn:
                    conn.execute(
                        update(outbox).where(outbox.c.id == row.id).values(status="pending", parts_sent=done)
                    )
        return self._record(row, sent, now, total=len(parts))

    def _recover_in_doubt(self) -> None:
        """Rows left `sending` by a killed process: the part in flight counts as delivered, flagged."""
        with self.engine.begin() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.status == "sending")).all()
            for row in rows:
                notifier = self.notifiers.get(row.route)
                total = len(notifier.split(row.body)) if notifier is not None else row.parts_sent + 1
                parts_sent = row.parts_sent + 1
                note = f"unconfirmed: the service stopped while part {parts_sent}/{total} was being sent"
                values: dict[str, Any] = {"parts_sent": parts_sent, "response": note}
                if parts_sent >= total:
                    values.update(status="sent", sent_at=self.clock.now())
                else:
                    values.update(status="pending")
                conn.execute(update(outbox).where(outbox.c.id == row.id).values(**values))
                log.warning("outbox %d (%s via %s): %s", row.id, row.kind, row.route, note)

    def _fold(self, route: str, first_id: int, retry_at: datetime | None) -> DeliveryResult | None:
        """The route's window is full: fold its waiting unsent messages into one digest (nothing lost)."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            waiting = conn.execute(
                select(outbox)
                .where(outbox.c.route == route, outbox.c.status == "pending", outbox.c.parts_sent == 0)
                .order_by(outbox.c.id)
            ).all()
            if len(waiting) < 2:
                return None
            ids = [r.id for r in waiting]
            notices = conn.execute(
                select(alert_notices).where(alert_notices.c.outbox_id.in_(ids)).order_by(alert_notices.c.id)
            ).all()
            new_id = self._make_message(
                conn, route, notices, f"fold:{ids[0]}", now, next_attempt_at=retry_at or now
            )
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(status="folded", response=f"folded into digest #{new_id}")
            )
        log.info("route %s throttled: %d waiting messages folded into digest #%d", route, len(ids), new_id)
        detail = f"{THROTTLED}: {len(ids)} messages folded into digest #{new_id}"
        return DeliveryResult(new_id, "", route, "digest", "retry", 0, detail, retry_at)

    def _record(
        self, row: Any, sent: list[SendResult], now: datetime, total: int | None = None
    ) -> DeliveryResult:
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
            fields.update(status="pending", next_attempt_at=next_at, response=detail[:2000])
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

    def notification_counts(self) -> dict[tuple[str, str], int]:
        """Outbox messages not known to be delivered, per (route, status): pending, failed, unconfirmed.

        Every configured route has all three statuses (0 included), so a rule on `> 0` needs no absent().
        """
        from metrics.exporter import NOTIFICATION_STATUSES

        counts = {(r, s): 0 for r in self.config.alerts.routes for s in NOTIFICATION_STATUSES}
        status = case(
            (outbox.c.status.in_(("pending", "sending")), "pending"),
            (outbox.c.status == "failed", "failed"),
            else_="unconfirmed",
        )
        waiting = outbox.c.status.in_(("pending", "sending", "failed"))
        unconfirmed = (outbox.c.status == "sent") & outbox.c.response.startswith("unconfirmed")
        query = (
            select(outbox.c.route, status.label("status"), func.count())
            .where(waiting | unconfirmed)
            .group_by(outbox.c.route, status)
        )
        with self.engine.connect() as conn:
            for route, kind, count in conn.execute(query):
                counts[(route, kind)] = int(count)
        return counts

    def deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent outbox rows (without bodies), newest first: sent, waiting and failed."""
        cols = [c for c in outbox.c if c.name != "body"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*cols).order_by(outbox.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _insert_once(conn: Connection, table: Table, row: dict[str, Any], *keys: str) -> None:
    """INSERT unless a row with the same unique key exists (ON CONFLICT DO NOTHING where supported)."""
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        module = sqlite if dialect == "sqlite" else postgresql
        conn.execute(module.insert(table).values(**row).on_conflict_do_nothing(index_elements=list(keys)))
    elif (
        conn.execute(select(*(table.c[k] for k in keys)).where(*(table.c[k] == row[k] for k in keys))).first()
        is None
    ):
        conn.execute(insert(table).values(**row))


def _upsert_group(conn: Connection, route: str, group_key: str, now: datetime, exists: bool) -> None:
    if exists:
        conn.execute(
            update(alert_groups)
            .where(alert_groups.c.route == route, alert_groups.c.group_key == group_key)
            .values(last_flush_at=now)
        )
    else:
        conn.execute(insert(alert_groups).values(route=route, group_key=group_key, last_flush_at=now))


def in_quiet_hours(window: str, now: datetime, zone: ZoneInfo) -> bool:
    """Is `now` inside "HH:MM-HH:MM" (local time; the range may wrap past midnight)?"""
    start, end = (time.fromisoformat(t) for t in window.split("-"))
    local = now.astimezone(zone).time()
    return start <= local < end if start < end else local >= start or local < end
