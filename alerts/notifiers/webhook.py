"""Generic webhook: Alertmanager's webhook JSON (version 4), optional bearer token and HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import requests
from pydantic import SecretStr

from alerts.model import Alert
from alerts.notifiers.base import (
    CONFIG,
    OK,
    PAYLOAD,
    RATE_LIMITED,
    TRANSIENT,
    Notifier,
    SendResult,
    as_secret,
    http_post,
    protect,
    retry_after_seconds,
    unix_ms,
)
from alerts.notifiers.markup import FONT, LINK, title_of, to_plain
from sentinel.clock import Clock

RATE_LIMIT_BACKOFF = 60.0  # 429 without a Retry-After header
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
TIMESTAMP_HEADER = "X-Sentinel-Timestamp"
SIGNATURE_HEADER = "X-Sentinel-Signature"  # "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
_TIME = r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2})"
_STARTS = re.compile(rf"开始时间：{_TIME}")
_SPAN = re.compile(rf"（{_TIME} 至 {_TIME}）")
_SEVERITY = re.compile(r"^P\d$")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for one request body."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WebhookNotifier(Notifier):
    """Posts each alert as an Alertmanager webhook message; 2xx ok, 429/5xx retry, other 4xx permanent."""

    kind: ClassVar[str] = "webhook"
    max_bytes: ClassVar[int] = 64 * 1024  # one JSON document per alert, never split
    per_minute: ClassVar[int] = 60

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        receiver: str = "sentinel",
        bearer_token: SecretStr | str | None = None,
        hmac_secret: SecretStr | str | None = None,
        external_url: str = "",
        timezone: str = "Asia/Shanghai",
        session: requests.Session | None = None,
        timeout: float = 10,
    ) -> None:
        super().__init__(clock)
        self.url = url
        self.receiver = receiver
        self._token = as_secret(bearer_token)
        self._hmac = as_secret(hmac_secret)
        for value in self._secrets():
            protect(value)
        self.external_url = external_url
        self.zone = ZoneInfo(timezone)
        self.session = session or requests.Session()
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"WebhookNotifier(url={self.target!r}, receiver={self.receiver!r})"

    @property
    def target(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook[{parts.scheme}://{parts.netloc}]"  # path and query may hold a token

    def _secrets(self) -> tuple[str, ...]:
        values = [s.get_secret_value() for s in (self._token, self._hmac) if s is not None]
        query = urlsplit(self.url).query
        return (*values, *([query] if query else []))

    def split(self, body: str) -> list[str]:
        """A webhook message is one JSON document: never split (oversize is a PAYLOAD failure)."""
        return [body] if body.strip() else []

    # -- the Alertmanager document ------------------------------------------------------------
    def _local(self, text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=self.zone)

    def alert(self, part: str) -> dict[str, Any]:
        """One Alertmanager alert read from the engine's message: status, labels, times, link."""
        first = next((line for line in part.split("\n") if line.strip()), "")
        tags = [m.group(2).strip() for m in FONT.finditer(first)]
        status = "resolved" if "已恢复" in tags or "已恢复" in first else "firing"
        link = next((m.group(2) for m in LINK.finditer(part) if m.group(2).startswith("http")), "")
        query = dict(parse_qsl(urlsplit(link).query)) if link else {}
        kpi = query.pop("kpi", "")
        labels = {"alertname": kpi or "fulfillment_alert", **dict(sorted(query.items()))}
        # The fingerprint identifies the series: the resolved message does not state the severity.
        canonical = json.dumps(labels, sort_keys=True, ensure_ascii=False).encode("utf-8")
        severity = next((t for t in tags if _SEVERITY.match(t)), "")
        if severity:
            labels["severity"] = severity
        starts, ends = self.clock.now(), None
        if span := _SPAN.search(part):
            starts, ends = self._local(span.group(1)), self._local(span.group(2))
        elif found := _STARTS.search(part):
            starts = self._local(found.group(1))
        if status == "resolved" and ends is None:
            ends = self.clock.now()
        return {
            "status": status,
            "labels": labels,
            "annotations": {"summary": title_of(first), "description": to_plain(part).strip()},
            "startsAt": _rfc3339(starts),
            "endsAt": _rfc3339(ends) if ends is not None else ZERO_TIME,
            "generatorURL": link,
            "fingerprint": hashlib.sha256(canonical).hexdigest()[:16],
        }

    def document(self, part: str) -> dict[str, Any]:
        """The webhook message for one alert (a group of one)."""
        alert = self.alert(part)
        name = alert["labels"]["alertname"]
        return {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "truncatedAlerts": 0,
            "status": alert["status"],
            "receiver": self.receiver,
            "groupLabels": {"alertname": name},
            "commonLabels": alert["labels"],
            "commonAnnotations": alert["annotations"],
            "externalURL": self.external_url,
            "alerts": [alert],
        }

    def structured_alert(self, alert: Alert) -> dict[str, Any]:
        """One Alertmanager alert from the engine's structured alert (no markdown parsing)."""
        annotations = {"summary": alert.title, **alert.annotations}
        if alert.summary:
            annotations["description"] = alert.summary
        if alert.runbook:
            annotations["runbook"] = alert.runbook
        if alert.value is not None:
            annotations["value"] = f"{alert.value:g}"
        if alert.threshold is not None:
            annotations["threshold"] = f"{alert.op} {alert.threshold:g}"
        return {
            "status": "resolved" if alert.state == "resolved" else "firing",
            "labels": dict(sorted(alert.labels.items())),
            "annotations": {k: str(v) for k, v in annotations.items() if v != ""},
            "startsAt": _rfc3339(alert.starts_at),
            "endsAt": _rfc3339(alert.ends_at) if alert.ends_at is not None else ZERO_TIME,
            "generatorURL": alert.url,
            "fingerprint": alert.fingerprint[:16],
        }

    def group_document(self, alerts: tuple[Alert, ...]) -> dict[str, Any]:
        """The webhook message for a group of structured alerts (a digest is one message)."""
        items = [self.structured_alert(a) for a in alerts]
        label_sets = [a["labels"] for a in items]
        common = {k: v for k, v in label_sets[0].items() if all(ls.get(k) == v for ls in label_sets)}
        notes = [a["annotations"] for a in items]
        common_notes = {k: v for k, v in notes[0].items() if all(n.get(k) == v for n in notes)}
        group = {k: common[k] for k in ("alertname",) if k in common} or common
        key = ",".join(f'{k}="{v}"' for k, v in sorted(group.items()))
        status = "firing" if any(a["status"] == "firing" for a in items) else "resolved"
        doc = {
            "version": "4",
            "groupKey": f"{{}}:{{{key}}}",
            "truncatedAlerts": 0,
            "status": status,
            "receiver": self.receiver,
            "groupLabels": group,
            "commonLabels": common,
            "commonAnnotations": common_notes,
            "externalURL": self.external_url,
            "alerts": items,
        }
        # Too big for one request: keep the first alerts and say how many were left out.
        while len(items) > 1 and len(json.dumps(doc, ensure_ascii=False).encode("utf-8")) > self.max_bytes:
            cut = max(1, len(items) // 4)
            del items[-cut:]
            doc["truncatedAlerts"] += cut
        return doc

    # -- sending ------------------------------------------------------------------------------
    def _send_structured(self, part: str, alerts: tuple[Alert, ...]) -> SendResult:
        return self._post(self.group_document(alerts))

    def _send_part(self, part: str) -> SendResult:
        """Without structured alerts (a hand-written message), the alert is read from the markdown."""
        return self._post(self.document(part))

    def _post(self, document: dict[str, Any]) -> SendResult:
        data = json.dumps(document, ensure_ascii=False).encode("utf-8")
        if len(data) > self.max_bytes:
            return SendResult(False, False, PAYLOAD, f"body is {len(data)} bytes, over {self.max_bytes}")
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "fulfillment-sentinel"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        if self._hmac is not None:
            timestamp = str(unix_ms(self.clock.now()) // 1000)
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._hmac.get_secret_value(), timestamp, data)
        response = http_post(self.session, self.url, self.timeout, data=data, headers=headers)
        if isinstance(response, SendResult):
            return response
        wait = retry_after_seconds(response.headers.get("Retry-After"), self.clock.now())
        return self._classify(response.status_code, response.text, wait)

    @staticmethod
    def _classify(status: int, text: str, retry_after: float | None = None) -> SendResult:
        """2xx ok; 429, 408 and 5xx retry (not before Retry-After); redirects and auth failures are config."""
        detail, answer = f"HTTP {status}", text[:500]
        if 200 <= status < 300:
            return SendResult(True, False, OK, detail, answer)
        if status == 429:
            return SendResult(False, True, RATE_LIMITED, detail, answer, retry_after or RATE_LIMIT_BACKOFF)
        if status >= 500 or status == 408:
            return SendResult(False, True, TRANSIENT, detail, answer, retry_after)
        if 300 <= status < 400 or status in (401, 403, 404, 405, 410):
            return SendResult(False, False, CONFIG, detail, answer)
        return SendResult(False, False, PAYLOAD, detail, answer)  # 400, 413, 422, ...
