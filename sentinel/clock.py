"""Injectable clocks: every component reads time through one of these."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime given where an aware one is required")
    return moment.astimezone(UTC)


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, scenario replay)."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = as_utc(moment)

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._now += delta
            return self._now


class ScaledClock:
    """Virtual time running `speed` times faster than the wall clock (the live demo)."""

    def __init__(self, start: datetime, speed: float = 1.0, monotonic=time.monotonic) -> None:
        self._start = as_utc(start)
        self._speed = speed
        self._monotonic = monotonic
        self._wall0 = monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> datetime:
        elapsed = (self._monotonic() - self._wall0) * self._speed
        return self._start + timedelta(seconds=elapsed)

    def rebase(self, moment: datetime) -> None:
        """Jump to `moment` and run on from there (the demo fast-forwards its quiet first hours)."""
        self._start = as_utc(moment)
        self._wall0 = self._monotonic()
