"""The structured alert handed to notifiers, and label matchers (rules, silences, inhibition)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Alert:
    """One alert as a notifier sees it: what the markdown says, as data."""

    fingerprint: str
    rule: str
    labels: dict[str, str]  # alertname, severity, kpi/source and the series labels
    severity: str
    state: str  # firing, resolved
    kind: str  # firing, repeat, resolved, escalate
    value: float | None
    threshold: float | None
    op: str
    starts_at: datetime
    ends_at: datetime | None = None
    title: str = ""
    summary: str = ""
    runbook: str = ""
    url: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["starts_at"] = self.starts_at.isoformat()
        data["ends_at"] = self.ends_at.isoformat() if self.ends_at else None
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        data = json.loads(text)
        data["starts_at"] = datetime.fromisoformat(data["starts_at"])
        data["ends_at"] = datetime.fromisoformat(data["ends_at"]) if data.get("ends_at") else None
        return cls(**data)


@dataclass(frozen=True)
class Matcher:
    """`name=value` (equality) or `name=~regex` (full match); a missing label reads as ""."""

    name: str
    value: str
    regex: bool = False

    def __post_init__(self) -> None:
        if self.regex:
            re.compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        return re.fullmatch(self.value, actual) is not None if self.regex else actual == self.value

    def __str__(self) -> str:
        return f"{self.name}{'=~' if self.regex else '='}{self.value}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "regex": self.regex}


_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|=)\s*(.*?)\s*$")


def parse_matcher(text: str) -> Matcher:
    """`channel=tmall` or `channel=~tm.*` (quotes around the value are dropped)."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a matcher (name=value or name=~regex)")
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    try:
        return Matcher(name, value, op == "=~")
    except re.error as exc:
        raise ValueError(f"{text!r}: invalid regex: {exc}") from None


def matchers_of(equal: Mapping[str, str] = {}, regex: Mapping[str, str] = {}) -> tuple[Matcher, ...]:  # noqa: B006
    """Config-style `match` / `match_re` tables as matchers."""
    return (
        *(Matcher(k, v) for k, v in sorted(equal.items())),
        *(Matcher(k, v, True) for k, v in sorted(regex.items())),
    )


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
