"""Property-based bad input: every mapper and parser either maps a record or quarantines it with a
reason naming source, record and field. Nothing crashes, nothing is silently dropped."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.errors import SchemaError, SourceError
from collectors.http_channel import ChannelApiCollector
from collectors.logfile import LogFileCollector
from collectors.mapping import IGNORE, RecordMapper, get_path
from collectors.presets import Credentials, get_preset
from collectors.types import Observation
from sentinel.clock import ManualClock
from sentinel.config import DEFAULT_PATH, ConfigError, load_config, parse_config, parse_duration
from sim.channels import DEFAULT_CREDENTIALS, ChannelServer
from sim.model import CHANNELS
from sim.scenario import load_scenario
from sim.world import World
from store.lifecycle import RANK

CONFIG = load_config(DEFAULT_PATH)
SOURCES = sorted(CONFIG.sources)
PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "null", "2026-02-30 10:00:00", "9999-12-31 23:59:59", "1e400", "-1", "NaN"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


# -- a valid record for any mapping, built from the mapping itself ------------------------------
def _time_text(fmt: str, moment: datetime) -> Any:
    if fmt == "unix":
        return int(moment.timestamp())
    if fmt == "unix_ms":
        return int(moment.timestamp() * 1000)
    if fmt == "iso":
        return moment.isoformat()
    return moment.astimezone(UTC).strftime(fmt)


def _set_path(record: dict, path: str, value: Any) -> None:
    """Set `value` at a mapping path, creating the objects and lists on the way ([-1]: the last)."""
    tokens = re.findall(r"([^.\[\]]+)|\[(-?\d+)\]", path)
    node: Any = record
    for i, (name, index) in enumerate(tokens):
        last = i == len(tokens) - 1
        empty = [] if not last and tokens[i + 1][1] else {}
        if name:
            if last:
                node[name] = value
            else:
                node = node.setdefault(name, empty)
            continue
        j = int(index)
        while len(node) <= (j if j >= 0 else -j - 1):
            node.append(None)
        j = j if j >= 0 else len(node) + j
        if last:
            node[j] = value
        else:
            node[j] = node[j] if node[j] is not None else empty
            node = node[j]


def mapping_paths(mapping) -> list[str]:
    paths = [mapping.order_id]
    if mapping.status:
        paths += re.findall(r"\{([^{}]+)\}", mapping.status) or [mapping.status]
    for p in (mapping.status_time, mapping.channel, mapping.amount, mapping.created_at, mapping.notified_at):
        if p:
            paths.append(p)
    paths += list(mapping.times.values()) + list(mapping.dims.values()) + list(mapping.pii.values())
    if mapping.delivery_id:
        paths.append(mapping.delivery_id)
    return list(dict.fromkeys(paths))


def valid_record(mapping) -> dict:
    moment = datetime(2026, 2, 12, 2, 0, tzinfo=UTC)
    record: dict = {}
    for path in mapping_paths(mapping):
        _set_path(record, path, "x")
    _set_path(record, mapping.order_id, "100200300")
    for path in list(mapping.times.values()) + [p for p in (mapping.status_time, mapping.created_at) if p]:
        _set_path(record, path, _time_text(mapping.time_format, moment))
    if mapping.notified_at:
        _set_path(record, mapping.notified_at, _time_text(mapping.time_format, moment))
    if mapping.amount:
        _set_path(record, mapping.amount, "12.50" if mapping.amount_unit == "yuan" else 1250)
    if mapping.channel:
        _set_path(record, mapping.channel, next(iter(mapping.channel_map), "tmall"))
    if mapping.status:
        native = next(k for k, v in mapping.status_map.items() if v != IGNORE)
        fields = re.findall(r"\{([^{}]+)\}", mapping.status)
        if fields:  # a template: split the native value back into its fields
            parts = re.fullmatch(
                re.sub(r"\\\{[^{}]+\\\}", "(.*?)", re.escape(mapping.status)), native
            ).groups()
            for path, part in zip(fields, parts, strict=True):
                _set_path(record, path, part)
        else:
            _set_path(record, mapping.status, native)
    return record


ALL_MAPPINGS = [(name, CONFIG.sources[name].mapping, CONFIG.sources[name].channel) for name in SOURCES]


@pytest.mark.parametrize(("name", "mapping", "channel"), ALL_MAPPINGS, ids=SOURCES)
def test_the_built_record_is_valid(name, mapping, channel):
    observations = RecordMapper(name, mapping, channel=channel).map(valid_record(mapping))
    assert observations and all(isinstance(o, Observation) for o in observations)


def _check_observations(name: str, observations: list[Observation]) -> None:
    for o in observations:
        assert o.source == name and o.state in RANK and o.raw_order_id
        assert o.at.tzinfo is not None and o.at.utcoffset() == timedelta(0)
        assert o.amount_fen is None or (isinstance(o.amount_fen, int) and o.amount_fen >= 0)


def _check_mapped_or_named(name: str, mapping, channel, record: Any) -> str:
    """Map one record: observations, or a SchemaError naming source, record and field."""
    mapper = RecordMapper(name, mapping, channel=channel)
    try:
        observations = mapper.map(record)
    except SchemaError as exc:
        assert exc.source == name
        assert exc.record == mapper.record_key(record) and exc.record
        assert exc.field and exc.field in str(exc) and exc.record in str(exc)
        assert exc.field == "$" or exc.field in mapping_paths(mapping) or exc.field == mapping.status
        return "quarantined"
    _check_observations(name, observations)
    if not observations:  # only a status the mapping says to ignore may yield nothing
        native = mapper._native_status(record, mapper.record_key(record))
        assert mapping.status_map.get(native) == IGNORE
    return "mapped"


@pytest.mark.parametrize(("name", "mapping", "channel"), ALL_MAPPINGS, ids=SOURCES)
@PROFILE
@given(data=st.data())
def test_any_damaged_record_is_mapped_or_quarantined_naming_its_field(name, mapping, channel, data):
    record = valid_record(mapping)
    for path in data.draw(st.lists(st.sampled_from(mapping_paths(mapping)), max_size=4, unique=True)):
        if data.draw(st.booleans()):
            _set_path(record, path, data.draw(json_values))
        else:  # the field disappears (a schema change)
            parent, _, leaf = path.rpartition(".")
            node = get_path(record, parent) if parent else record
            if isinstance(node, dict):
                node.pop(leaf, None)
    _check_mapped_or_named(name, mapping, channel, record)


@pytest.mark.parametrize(("name", "mapping", "channel"), ALL_MAPPINGS, ids=SOURCES)
@PROFILE
@given(record=json_values)
def test_any_json_value_is_mapped_or_quarantined(name, mapping, channel, record):
    _check_mapped_or_named(name, mapping, channel, record)


# -- the five platforms' response parsers, on real responses damaged anywhere -----------------------
T0 = datetime(2026, 2, 12, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def responses():
    """One real response document per channel from the local channel server (busy hour orders)."""
    world = World.generate(load_scenario(Path(__file__).parent / "scenarios" / "busy_hour.toml"))
    clock = ManualClock(T0)
    out = {}
    with ChannelServer(world.orders_by_channel, clock) as server:
        for channel in CHANNELS:
            preset = get_preset(channel)
            creds = Credentials(channel, DEFAULT_CREDENTIALS[channel])
            call = preset.request(creds, T0 - timedelta(minutes=30), T0, preset.page_base, 50, T0)
            resp = requests.request(
                call.method,
                server.url_for(channel),
                params=call.params or None,
                data=call.data if call.data is not None else call.body,
                headers=call.headers or None,
                timeout=10,
            )
            doc = json.loads(resp.content)
            assert preset.parse(channel, doc).records, channel
            out[channel] = doc
    return out


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:3]):
            out += _paths(value, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize("channel", CHANNELS)
@PROFILE
@given(data=st.data())
def test_any_damaged_response_is_parsed_or_a_typed_error_and_no_record_is_dropped(responses, channel, data):
    doc = json.loads(json.dumps(responses[channel]))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        doc = _replace(doc, path, data.draw(json_values))
    preset = get_preset(channel)
    try:
        page = preset.parse(channel, doc)
    except SourceError as exc:
        assert exc.source == channel and str(exc).startswith(f"{channel}: ")
        return
    assert isinstance(page.records, list) and isinstance(page.total, int) and page.total >= 0
    collector = ChannelApiCollector.__new__(ChannelApiCollector)
    collector.name, collector.mapper = (
        channel,
        RecordMapper(channel, CONFIG.sources[channel].mapping, channel=channel),
    )
    batch = collector._batch(page, None)
    assert batch.records == len(page.records)
    mapped = {o.raw_order_id for o in batch.observations}
    for record in page.records:  # each record: in the observations, in quarantine, or ignored
        key = collector.mapper.record_key(record)
        assert (
            key in mapped
            or any(q.record_key == key for q in batch.quarantined)
            or (_check_mapped_or_named(channel, collector.mapper.mapping, channel, record) == "mapped")
        )
    for q in batch.quarantined:
        assert q.source == channel and q.record_key and q.field and q.reason and q.raw


# -- the payment notify log parser, on arbitrary lines -----------------------------------------
@pytest.mark.parametrize("source", ["alipay", "wechatpay"])
@PROFILE
@given(
    lines=st.lists(
        st.one_of(st.binary(max_size=60), json_values.map(lambda v: json.dumps(v).encode())), max_size=8
    )
)
def test_any_log_line_is_mapped_or_quarantined(tmp_path_factory, source, lines):
    path = tmp_path_factory.mktemp("log") / "notify.log"
    lines = [line.replace(b"\n", b" ") for line in lines]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    cfg = CONFIG.sources[source].model_copy(update={"path": str(path)})
    collector = LogFileCollector(source, cfg)
    batches = list(collector.poll(None, T0))
    records = sum(b.records for b in batches)
    assert records == sum(1 for line in lines if line.rstrip(b"\r").strip())  # every line counted
    quarantined = [q for b in batches for q in b.quarantined]
    keys = {q.record_key for q in quarantined}
    assert len(keys) == len(quarantined)
    for q in quarantined:
        assert q.source == source and q.record_key and q.field and q.reason
    mapped_lines = records - len(quarantined)
    assert mapped_lines >= 0


# -- durations and the whole config ------------------------------------------------------------
@given(st.one_of(st.text(max_size=12), scalars))
def test_any_duration_is_parsed_or_rejected_with_its_value(value):
    try:
        result = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        assert repr(value)[:20] in str(exc) or "duration" in str(exc)
        return
    assert isinstance(result, timedelta)
    assert not isinstance(value, float) or math.isfinite(value)


RAW_CONFIG = __import__("tomllib").loads(Path(DEFAULT_PATH).read_text(encoding="utf-8"))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_damaged_config_is_valid_or_every_problem_has_a_dotted_key(data):
    raw = json.loads(json.dumps(RAW_CONFIG, default=str))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(raw)[1:]))
        raw = _replace(raw, path, data.draw(json_values))
    try:
        parse_config(raw, env={})
    except ConfigError as exc:
        assert exc.problems and all(": " in p for p in exc.problems)
