"""What a channel preset is: request building/signing, envelope parsing, error classification."""

from __future__ import annotations

import functools
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from collectors.errors import SchemaError, SourceConfigError

BEIJING = ZoneInfo("Asia/Shanghai")
_RETRY_AFTER = re.compile(r"(\d+(?:\.\d+)?)\s*(?:more\s+)?(?:seconds?|secs?|秒)", re.IGNORECASE)


@dataclass(frozen=True)
class Call:
    """One HTTP request to make: query params, and a form (`data`) or a raw `body`."""

    method: str
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """One page of native records and the platform's total count for the whole window."""

    records: list[Any]
    total: int


class Credentials:
    """A source's secrets in plain text for signing; repr and errors never show the values."""

    def __init__(self, source: str, values: Mapping[str, SecretStr | str]) -> None:
        self._source = source
        self._values = {
            k: v.get_secret_value() if isinstance(v, SecretStr) else str(v) for k, v in values.items()
        }

    def get(self, *names: str) -> str:
        """The first of `names` that is set; SourceConfigError naming the keys otherwise."""
        for name in names:
            value = self._values.get(name)
            if value:
                return value
        raise SourceConfigError(self._source, f"credentials.{' or '.join(names)} is not set")

    def secrets(self) -> list[str]:
        return [v for v in self._values.values() if v]

    def __repr__(self) -> str:
        return f"Credentials({self._source!r}, keys={sorted(self._values)}, values=***)"


class Preset(ABC):
    """One platform's order-list protocol."""

    name: str
    page_base: int = 1  # number of the first page
    slice: timedelta = timedelta(minutes=30)  # longest modified-time window per request
    settle: timedelta = timedelta(seconds=10)  # read up to now - settle (let the platform settle)
    error_envelope: bool = True  # 4xx bodies carry the platform's error codes: parse them first

    @abstractmethod
    def request(
        self, creds: Credentials, start: datetime, end: datetime, page: int, size: int, now: datetime
    ) -> Call:
        """The signed call listing orders modified in [start, end] (UTC), page `page`."""

    @abstractmethod
    def parse(self, source: str, doc: Any) -> Page:
        """Records and total from a decoded response; raise the typed error of a platform error."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "parse" in cls.__dict__:
            cls.parse = _shape_checked(cls.__dict__["parse"])


def _shape_checked(parse):
    """Any response of an unexpected shape (a list where an object belongs, null, ...) is a
    SchemaError naming the response, never an AttributeError escaping the collector."""

    @functools.wraps(parse)
    def checked(self, source: str, doc: Any) -> Page:
        try:
            return parse(self, source, doc)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            message = f"unexpected response shape ({type(exc).__name__}: {exc})"[:300]
            raise SchemaError(source, "response", "$", message) from None

    return checked


def bj(moment: datetime) -> str:
    """Aware datetime -> Beijing wall-clock `yyyy-MM-dd HH:mm:ss` (what these platforms expect)."""
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def md5_sign(secret: str, params: Mapping[str, str]) -> str:
    """TOP/JD/PDD signature: MD5(secret + sorted name+value pairs + secret), upper-case hex."""
    text = secret + "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign") + secret
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


def retry_after(*texts: Any) -> float | None:
    """Seconds from 'ban will last 39 more seconds' / '请30秒后重试' style messages."""
    for text in texts:
        match = _RETRY_AFTER.search(str(text or ""))
        if match:
            return float(match.group(1))
    return None


def dig(source: str, doc: Any, *keys: str) -> Any:
    """doc[k1][k2]...; SchemaError naming the response path when a level is missing."""
    node, path = doc, "$"
    for key in keys:
        path = f"{path}.{key}" if path != "$" else key
        if not isinstance(node, dict) or key not in node:
            raise SchemaError(source, "response", path, "missing in the response envelope")
        node = node[key]
    return node


def as_list(source: str, value: Any, path: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SchemaError(source, "response", path, f"expected a list, got {type(value).__name__}")
    return value


def as_count(source: str, value: Any, path: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise SchemaError(source, "response", path, f"{value!r} is not a count") from None
    if count < 0:
        raise SchemaError(source, "response", path, f"{count} is negative")
    return count


def describe(parts: Mapping[str, Any]) -> str:
    """`code=7 msg=App Call Limited ...` from the non-empty error fields."""
    return " ".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))
