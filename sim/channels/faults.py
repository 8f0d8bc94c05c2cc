"""Fault controls of the fake channel APIs, shared by tests and scenarios."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FAULT_KINDS = ("rate_limited", "auth_expired", "server_error", "timeout", "garbage", "vanish_mid_page")
DEFAULTS: dict[str, dict[str, Any]] = {
    "rate_limited": {"ban": 30, "quota": 0},  # ban seconds; requests allowed between bans
    "auth_expired": {},
    "server_error": {"mode": "http"},  # "http" = HTTP 502, "platform" = the platform's transient code
    "timeout": {"delay": 0.5},  # wall seconds the server stalls before answering
    "garbage": {"style": "truncated"},  # "truncated" JSON or an "html" error page with HTTP 200
    "vanish_mid_page": {"count": 1},  # records (head of the sorted list) gone after the first page
}


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # affected requests left; None = until cleared
    served: int = 0
    banned_until: datetime | None = None
    quota_used: int = 0


@dataclass(frozen=True)
class Decision:
    """What the server must do to one request."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: int = 0  # rate_limited: remaining ban
    hide: int = 0  # vanish_mid_page: records to hide


class Faults:
    """One active fault per channel: `.set(channel, kind, times=N, **params)` / `.clear(channel)`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, Fault] = {}

    def set(self, channel: str, kind: str, *, times: int | None = None, **params: Any) -> None:
        """Inject `kind` on `channel` for the next `times` affected requests (None: until cleared)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {FAULT_KINDS}")
        unknown = sorted(set(params) - set(DEFAULTS[kind]))
        if unknown:
            raise ValueError(f"fault {kind!r} has no parameter(s) {unknown}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._active[channel] = Fault(kind, {**DEFAULTS[kind], **params}, times)

    def clear(self, channel: str | None = None) -> None:
        """Remove the fault of `channel` (or of every channel)."""
        with self._lock:
            if channel is None:
                self._active.clear()
            else:
                self._active.pop(channel, None)

    def active(self, channel: str) -> str | None:
        with self._lock:
            fault = self._active.get(channel)
            return fault.kind if fault else None

    def decide(self, channel: str, now: datetime) -> Decision | None:
        """Consume one request's worth of the channel's fault; None = serve normally."""
        with self._lock:
            fault = self._active.get(channel)
            if fault is None:
                return None
            decision = self._decide(fault, now)
            if decision is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._active[channel]
            return decision

    @staticmethod
    def _decide(fault: Fault, now: datetime) -> Decision | None:
        fault.served += 1
        if fault.kind == "rate_limited":
            if fault.banned_until is not None and now < fault.banned_until:
                left = math.ceil((fault.banned_until - now).total_seconds())
                return Decision(fault.kind, fault.params, seconds=max(1, left))
            if fault.quota_used < int(fault.params["quota"]):
                fault.quota_used += 1
                return None
            ban = int(fault.params["ban"])
            fault.banned_until, fault.quota_used = now + timedelta(seconds=ban), 0
            return Decision(fault.kind, fault.params, seconds=ban)
        if fault.kind == "vanish_mid_page":
            hide = 0 if fault.served == 1 else int(fault.params["count"])
            return Decision(fault.kind, fault.params, hide=hide)
        return Decision(fault.kind, fault.params)
