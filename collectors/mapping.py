"""Config-driven mapping of a native record onto canonical observations.

Paths are dotted with optional list indexes (`orders.order[0].outer_sku_id`). A status may be a
single path or a template over several fields (`"{confirm_status}/{order_status}"`), looked up
in `status_map`. Every failure names the field path and the offending value.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from collectors.errors import SchemaError
from collectors.types import DIMENSIONS, PII_FIELDS, Observation
from store.lifecycle import RANK

IGNORE = "ignore"
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")
_TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")
_MISSING = object()


class MappingConfig(BaseModel):
    """How one source's records map onto the canonical lifecycle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: str
    status: str | None = None
    status_map: dict[str, str] = Field(default_factory=dict)
    status_time: str | None = None
    # The time of the record's latest progress in its status (e.g. Kuaidi100's newest scan), for a
    # status that can last long while news keeps coming: stuck is then measured from it.
    progress_time: str | None = None
    times: dict[str, str] = Field(default_factory=dict)
    channel: str | None = None
    channel_map: dict[str, str] = Field(default_factory=dict)
    amount: str | None = None
    amount_unit: Literal["yuan", "fen"] = "yuan"
    created_at: str | None = None
    notified_at: str | None = None  # payment notify logs: when the callback was sent (callback delay)
    # A field telling that a person handled the order (e.g. Jushuitan's question_type, an operator):
    # any value but a null value marks the record's observations as a manual action.
    manual: str | None = None
    dims: dict[str, str] = Field(default_factory=dict)
    pii: dict[str, str] = Field(default_factory=dict)  # buyer_name/phone/address/district -> field path
    # A field telling repeated deliveries of one record apart (e.g. when a callback was received):
    # each delivery is then its own record, and repeats count as duplicate records.
    delivery_id: str | None = None
    time_format: str = "%Y-%m-%d %H:%M:%S"  # strftime pattern, or "unix", "unix_ms", "iso"
    timezone: str = "Asia/Shanghai"  # zone of times written without an offset
    null_values: tuple[str, ...] = ("", "0", "0001-01-01 00:00:00", "1970-01-01 08:00:00")

    @field_validator("status_map")
    @classmethod
    def _known_states(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted({v for v in value.values() if v != IGNORE and v not in RANK})
        if bad:
            raise ValueError(f"unknown canonical state(s) {bad}; use one of {sorted(RANK)} or 'ignore'")
        return value

    @field_validator("times")
    @classmethod
    def _known_time_states(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if k not in RANK)
        if bad:
            raise ValueError(f"unknown canonical state(s) {bad}")
        return value

    @field_validator("dims")
    @classmethod
    def _known_dims(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if k not in DIMENSIONS)
        if bad:
            raise ValueError(f"unknown dimension(s) {bad}; use {list(DIMENSIONS)}")
        return value

    @field_validator("pii")
    @classmethod
    def _known_pii(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if k not in PII_FIELDS)
        if bad:
            raise ValueError(f"unknown personal data field(s) {bad}; use {list(PII_FIELDS)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value


@lru_cache(maxsize=4096)
def _path_steps(path: str) -> tuple[tuple[str, int], ...]:
    """A dotted path's steps: (name, 0) for a key, ("", index) for a list item."""
    return tuple((name, 0) if name else ("", int(index)) for name, index in _PATH_TOKEN.findall(path))


def get_path(record: Any, path: str) -> Any:
    """Value at a dotted path, or the module's _MISSING sentinel."""
    node = record
    for name, i in _path_steps(path):  # parsed once per path: millions of reads at peak
        if name:
            if not isinstance(node, dict) or name not in node:
                return _MISSING
            node = node[name]
        else:  # negative: from the end ([-1] is the last item)
            if not isinstance(node, list) or not -len(node) <= i < len(node):
                return _MISSING
            node = node[i]
    return node


@lru_cache(maxsize=8192)
def _text_time(text: str, fmt: str, zone: str) -> datetime:
    """A source's time text -> aware UTC. Cached: at peak thousands of rows share each second
    (strptime costs ~30 µs a call); raises ValueError/OverflowError, which are not cached."""
    if fmt in ("unix", "unix_ms"):
        seconds = float(text) / (1000 if fmt == "unix_ms" else 1)
        return datetime.fromtimestamp(seconds, UTC)
    if fmt == "iso":
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        moment = datetime.strptime(text, fmt)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC)


def record_fingerprint(record: Any) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()[:16]


class RecordMapper:
    """Maps one source's native records; raises SchemaError naming source, record and field."""

    def __init__(self, source: str, mapping: MappingConfig, channel: str | None = None) -> None:
        self.source = source
        self.mapping = mapping
        self.channel = channel
        self._zone = ZoneInfo(mapping.timezone)
        if mapping.channel is None and channel is None:
            raise ValueError(f"{source}: mapping needs a channel field or the source's channel")

    # -- field readers -------------------------------------------------------------------
    def _fail(self, key: str, field: str, message: str) -> SchemaError:
        return SchemaError(self.source, key, field, message)

    def _text(self, record: dict, path: str, key: str, required: bool) -> str | None:
        value = get_path(record, path)
        if value is _MISSING or value is None:
            if required:
                raise self._fail(key, path, "required field is missing")
            return None
        if isinstance(value, (dict, list)):
            raise self._fail(key, path, f"expected a scalar, got {type(value).__name__}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)

    def parse_time(self, raw: Any, key: str, path: str) -> datetime | None:
        if raw is _MISSING or raw is None:
            return None
        if isinstance(raw, datetime):  # SQL drivers return datetimes; naive ones are source-local
            moment = raw if raw.tzinfo else raw.replace(tzinfo=self._zone)
            return moment.astimezone(UTC)
        text = str(raw).strip()
        if text in self.mapping.null_values:
            return None
        fmt = self.mapping.time_format
        try:
            return _text_time(text, fmt, self.mapping.timezone)
        except (ValueError, OverflowError):
            raise self._fail(key, path, f"{text!r} is not a time in format {fmt!r}") from None

    def _amount(self, record: dict, key: str) -> int | None:
        path = self.mapping.amount
        if path is None:
            return None
        text = self._text(record, path, key, required=False)
        if text is None or text == "":
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise self._fail(key, path, f"{text!r} is not a number") from None
        if self.mapping.amount_unit == "yuan":
            value = value * 100
        if value != value.to_integral_value() or value < 0:
            raise self._fail(key, path, f"{text!r} is not a valid {self.mapping.amount_unit} amount")
        return int(value)

    def _native_status(self, record: dict, key: str) -> str | None:
        template = self.mapping.status
        if template is None:
            return None
        if "{" not in template:
            return self._text(record, template, key, required=True)
        parts = {}
        for path in _TEMPLATE_FIELD.findall(template):
            parts[path] = self._text(record, path, key, required=True)
        return _TEMPLATE_FIELD.sub(lambda m: parts[m.group(1)] or "", template)

    def record_key(self, record: Any) -> str:
        value = get_path(record, self.mapping.order_id) if isinstance(record, dict) else _MISSING
        if value is _MISSING or value is None or isinstance(value, (dict, list)) or not str(value).strip():
            # No usable id: name the record by its content, so that two such records stay apart
            return record_fingerprint(record)
        return str(value)

    # -- the mapping -------------------------------------------------------------------
    def map(self, record: Any) -> list[Observation]:
        key = self.record_key(record)
        if not isinstance(record, dict):
            raise self._fail(key, "$", f"expected an object, got {type(record).__name__}")
        m = self.mapping
        raw_id = self._text(record, m.order_id, key, required=True)
        if not raw_id:
            raise self._fail(key, m.order_id, "order id is empty")
        channel = self.channel
        if m.channel is not None:
            native = self._text(record, m.channel, key, required=True)
            channel = m.channel_map.get(native, native) if m.channel_map else native
            if m.channel_map and native not in m.channel_map:
                raise self._fail(key, m.channel, f"unmapped channel value {native!r}")
        dims = {}
        for dim, path in m.dims.items():
            text = self._text(record, path, key, required=False)
            if text:
                dims[dim] = text
        pii = {}
        for name, path in m.pii.items():
            text = self._text(record, path, key, required=False)
            if text:
                pii[name] = text
        amount = self._amount(record, key)
        created_at = None
        if m.created_at is not None:
            created_at = self.parse_time(get_path(record, m.created_at), key, m.created_at)

        stamps: dict[str, datetime] = {}
        for state, path in m.times.items():
            moment = self.parse_time(get_path(record, path), key, path)
            if moment is not None:
                stamps[state] = moment
        native = self._native_status(record, key)
        status = None  # the record's own status (the others are milestones it also shows)
        if native is not None:
            status = m.status_map.get(native)
            if status is None:
                raise self._fail(key, m.status, f"unmapped status value {native!r}")
            if status != IGNORE and status not in stamps:
                if m.status_time is None:
                    raise self._fail(key, m.status or "status", "no status_time configured")
                moment = self.parse_time(get_path(record, m.status_time), key, m.status_time)
                if moment is None:
                    raise self._fail(key, m.status_time, "time of the current status is missing")
                stamps[status] = moment
        if created_at is None:
            created_at = stamps.get("created")
        notified_at = None
        if m.notified_at is not None:
            notified_at = self.parse_time(get_path(record, m.notified_at), key, m.notified_at)
        suffix = ""
        if m.delivery_id is not None:
            suffix = "|" + self._text(record, m.delivery_id, key, required=True)
        manual_at = None
        if m.manual is not None:
            flag = self._text(record, m.manual, key, required=False)
            if flag is not None and flag.strip() not in (*m.null_values, "false", "False"):
                # the time the record shows it: its status time, else its latest milestone
                manual_at = (
                    self.parse_time(get_path(record, m.status_time), key, m.status_time)
                    if m.status_time is not None
                    else None
                ) or max(stamps.values(), default=None)
                suffix += "|manual"  # a record that shows the manual action is a fact of its own
        progress_at = None  # the progress belongs to the record's status (none when ignored)
        if m.progress_time is not None and status is not None and status != IGNORE:
            progress_at = self.parse_time(get_path(record, m.progress_time), key, m.progress_time)
        return [
            Observation(
                source=self.source,
                record_key=f"{raw_id}|{state}{suffix}",
                channel=channel,
                raw_order_id=raw_id,
                state=state,
                at=moment,
                dims=dims,
                amount_fen=amount,
                created_at=created_at,
                notified_at=notified_at,
                pii=pii,
                manual_at=manual_at,
                progress_at=progress_at if state == status else None,
            )
            for state, moment in sorted(stamps.items(), key=lambda item: RANK[item[0]])
        ]
