"""A local webhook receiver for Alertmanager-format messages: auth, signature, size, schema, 429/5xx.

Answers by HTTP status, checked in this order:
  (queued)  replies queued with `fail_next`, e.g. 503 with Retry-After
  413  body over `max_bytes`
  401  missing/wrong bearer token; missing, stale (> `tolerance` off) or wrong signature
  429  over `per_minute` requests in a sliding minute, with Retry-After in seconds
  400  not JSON              422  not an Alertmanager version-4 message (the field is named)
  200  accepted
Signature: header X-Sentinel-Signature = "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body),
with the Unix timestamp in X-Sentinel-Timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections import deque
from datetime import datetime, timedelta
from typing import Any

from sentinel.clock import Clock
from sim.robots.base import Reply, Request, RobotServer, SlidingWindow

PATH = "/alerts"
STATUSES = ("firing", "resolved")
TOP_FIELDS = {
    "groupKey": str,
    "receiver": str,
    "groupLabels": dict,
    "commonLabels": dict,
    "commonAnnotations": dict,
    "externalURL": str,
    "alerts": list,
}
ALERT_FIELDS = {"labels": dict, "annotations": dict, "generatorURL": str, "fingerprint": str}


def schema_problem(doc: Any) -> str | None:
    """The first way `doc` is not an Alertmanager webhook message (version 4), or None."""
    if not isinstance(doc, dict):
        return "body: not an object"
    if doc.get("version") != "4":
        return 'version: must be "4"'
    if doc.get("status") not in STATUSES:
        return "status: must be firing or resolved"
    for name, kind in TOP_FIELDS.items():
        if not isinstance(doc.get(name), kind):
            return f"{name}: missing or not a {kind.__name__}"
    if not doc["alerts"]:
        return "alerts: empty"
    for i, alert in enumerate(doc["alerts"]):
        if not isinstance(alert, dict):
            return f"alerts[{i}]: not an object"
        if alert.get("status") not in STATUSES:
            return f"alerts[{i}].status: must be firing or resolved"
        for name, kind in ALERT_FIELDS.items():
            if not isinstance(alert.get(name), kind):
                return f"alerts[{i}].{name}: missing or not a {kind.__name__}"
        if not all(isinstance(v, str) for v in (*alert["labels"].values(), *alert["annotations"].values())):
            return f"alerts[{i}]: label and annotation values must be strings"
        for name in ("startsAt", "endsAt"):
            try:
                datetime.fromisoformat(str(alert.get(name)))
            except ValueError:
                return f"alerts[{i}].{name}: not an RFC 3339 time"
    return None


class WebhookReceiver(RobotServer):
    """An HTTP endpoint on 127.0.0.1:<free port> accepting Alertmanager webhook messages at `url`."""

    name = "webhook-sim"
    path = PATH

    def __init__(
        self,
        clock: Clock,
        bearer_token: str | None = None,
        hmac_secret: str | None = None,
        tolerance: timedelta = timedelta(minutes=5),
        max_bytes: int = 64 * 1024,
        per_minute: int | None = None,
    ) -> None:
        super().__init__(clock)
        self.bearer_token = bearer_token
        self.hmac_secret = hmac_secret
        self.tolerance = tolerance
        self.max_bytes = max_bytes
        self._window = SlidingWindow(per_minute) if per_minute else None
        self._queued: deque[Reply] = deque()

    def fail_next(self, status: int, retry_after: str | None = None, times: int = 1) -> None:
        """Answer the next `times` requests with `status` (and a Retry-After header, if given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._queued.extend(Reply(status, {"error": "injected"}, headers) for _ in range(times))

    # -- inspection ---------------------------------------------------------------------------
    def messages(self) -> list[dict[str, Any]]:
        """The accepted webhook messages, in arrival order."""
        with self._lock:
            return [r["body"] for r in self.received if r["status"] == 200]

    # -- the endpoint -------------------------------------------------------------------------
    def respond(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != self.path:
            return self.not_found()
        now = self.clock.now()
        with self._lock:
            reply = self._answer(request, now)
            try:
                body: Any = json.loads(request.raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                body = None
            headers = {k: v for k, v in request.headers.items() if k != "authorization"}
            self.received.append(
                {"at": now.isoformat(), "headers": headers, "body": body, "status": reply.status}
            )
        return reply

    def _answer(self, request: Request, now: datetime) -> Reply:
        if self._queued:
            return self._queued.popleft()
        if len(request.raw) > self.max_bytes:
            return Reply(413, {"error": f"body over {self.max_bytes} bytes"})
        if self.bearer_token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.bearer_token}".encode()):
                return Reply(401, {"error": "invalid bearer token"}, {"WWW-Authenticate": "Bearer"})
        if self.hmac_secret is not None:
            problem = self._signature_problem(request, now)
            if problem:
                return Reply(401, {"error": problem})
        if self._window is not None and not self._window.hit("all", now):
            wait = math.ceil(self._window.free_in("all", now)) or 1
            return Reply(429, {"error": "too many requests"}, {"Retry-After": str(wait)})
        try:
            doc = json.loads(request.raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return Reply(400, {"error": "body is not JSON"})
        problem = schema_problem(doc)
        if problem:
            return Reply(422, {"error": problem})
        return Reply(200, {"status": "ok"})

    def _signature_problem(self, request: Request, now: datetime) -> str | None:
        timestamp = request.headers.get("x-sentinel-timestamp", "")
        given = request.headers.get("x-sentinel-signature", "")
        if not timestamp.isdigit():
            return "missing signature timestamp"
        if abs(now.timestamp() - int(timestamp)) > self.tolerance.total_seconds():
            return "stale signature timestamp"
        digest = hmac.new(self.hmac_secret.encode(), timestamp.encode() + b"." + request.raw, hashlib.sha256)
        if not hmac.compare_digest(given.encode(), f"sha256={digest.hexdigest()}".encode()):
            return "invalid signature"
        return None
