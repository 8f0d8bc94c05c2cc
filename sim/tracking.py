"""Kuaidi100 (快递100) tracking pushes as the merchant's callback receiver logs them.

The merchant subscribes each waybill when it ships, with a callback URL carrying its own
`shop` and `orderId` query parameters and a salt. Kuaidi100 checks the parcel (first 15-60 min
after subscribing, then every 2 hours) and, when the track has new scans, POSTs the form fields
`param` (JSON: status, lastResult with the scans newest first) and `sign` =
upper(MD5(param + salt)) (reference/payments_logistics_wms.md §8.1). The receiver answers
`{"result":true,"returnCode":"200","message":"成功"}` and writes one JSON line per push:
`{"received_at", "query": {"shop", "orderId"}, "param": "<the JSON text as received>", "sign"}`,
so the collector can verify the signature over the exact text.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sim.model import SimOrder
from sim.world import World

ZONE = ZoneInfo("Asia/Shanghai")
FILE = "kuaidi100_push.log"
DEFAULT_SALT = "kd100-demo-salt-7c2e91"
STATE_NAMES = {0: "在途", 1: "揽收", 2: "疑难", 3: "签收", 5: "派件", 6: "退回", 7: "转投"}
CALLBACK_PATH = "/kuaidi100/callback"


def _ftime(moment: datetime) -> str:
    return moment.astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S")


def push_param(order: SimOrder, at: datetime) -> dict:
    """The `param` document of the push Kuaidi100 sends at `at`: every scan up to then, newest first."""
    scans = [s for s in order.scans if s[0] <= at]
    newest = scans[-1][1]
    data = [
        {
            "context": text,
            "time": _ftime(when),
            "ftime": _ftime(when),
            "status": STATE_NAMES.get(code, ""),
            "areaName": f"{order.province},{order.city}",
        }
        for when, code, text in reversed(scans)
    ]
    return {
        "status": "shutdown" if newest == 3 else "polling",
        "billstatus": "",
        "message": "",
        "autoCheck": "0",
        "comOld": "",
        "comNew": "",
        "lastResult": {
            "message": "ok",
            "state": str(newest),
            "status": "200",
            "condition": "F00",
            "ischeck": "1" if newest == 3 else "0",
            "com": order.carrier,
            "nu": order.tracking_no,
            "data": data,
        },
    }


def push_line(order: SimOrder, at: datetime, salt: str = DEFAULT_SALT) -> dict:
    """One logged push: the callback's query, the form fields as received, and when."""
    param = json.dumps(push_param(order, at), ensure_ascii=False, separators=(",", ":"))
    return {
        "received_at": at.astimezone(UTC).isoformat(),
        "path": CALLBACK_PATH,
        "query": {"shop": order.channel, "orderId": order.raw_id},
        "param": param,
        "sign": hashlib.md5((param + salt).encode("utf-8")).hexdigest().upper(),
    }


class TrackingLog:
    """Appends Kuaidi100 pushes to `<directory>/kuaidi100_push.log` as they are received."""

    def __init__(self, directory: str | Path, salt: str = DEFAULT_SALT) -> None:
        self.directory = Path(directory)
        self.salt = salt
        self._world_id: int | None = None
        self._queue: list[tuple[datetime, int]] = []  # (push time, order index), sorted
        self._times: list[datetime] = []
        self._next = 0
        self._written: set[tuple[str, str]] | None = None  # (orderId, newest scan time)

    @property
    def path(self) -> Path:
        return self.directory / FILE

    def _index(self, world: World) -> None:
        self._queue = sorted((t, i) for i, o in enumerate(world.orders) for t in o.track_pushes)
        self._times, self._next = [t for t, _ in self._queue], 0
        self._world_id = id(world)

    def _load_written(self) -> set[tuple[str, str]]:
        """Pushes already logged (a restarted writer must not log them twice)."""
        out: set[tuple[str, str]] = set()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    doc = json.loads(line)
                    newest = json.loads(doc["param"])["lastResult"]["data"][0]["ftime"]
                    out.add((doc["query"]["orderId"], newest))
                except (ValueError, KeyError, IndexError, TypeError):
                    continue
        return out

    def sync(self, world: World, now: datetime) -> int:
        """Append a line for every push received by `now`; returns lines written."""
        if self._world_id != id(world):
            self._index(world)
        if self._written is None:
            self._written = self._load_written()
        upto = bisect.bisect_right(self._times, now)
        lines = []
        for at, i in self._queue[self._next : upto]:
            line = push_line(world.orders[i], at, self.salt)
            key = (line["query"]["orderId"], json.loads(line["param"])["lastResult"]["data"][0]["ftime"])
            if key in self._written:
                continue
            self._written.add(key)
            lines.append(json.dumps(line, ensure_ascii=False))
        if lines:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        self._next = max(self._next, upto)
        return len(lines)

    def write_raw(self, text: str) -> None:
        """Append raw text (tests: a forged or broken push)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
