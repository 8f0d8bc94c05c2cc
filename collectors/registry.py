"""Build a collector for a configured source (one place knows the kinds)."""

from __future__ import annotations

from collectors.errors import RetryPolicy
from collectors.mapping import RecordMapper
from collectors.types import Collector
from sentinel.config import SourceConfig


def build_collector(
    name: str,
    cfg: SourceConfig,
    *,
    session=None,
    retry: RetryPolicy | None = None,
    mapper: RecordMapper | None = None,
) -> Collector:
    mapper = mapper or RecordMapper(name, cfg.mapping, channel=cfg.channel)
    if cfg.kind == "http" and cfg.api is not None:
        from collectors.api_source import JsonApiCollector

        return JsonApiCollector(name, cfg, session=session, retry=retry, mapper=mapper)
    if cfg.kind == "http":
        from collectors.http_channel import ChannelApiCollector

        return ChannelApiCollector(name, cfg, session=session, retry=retry, mapper=mapper)
    if cfg.kind == "sql":
        from collectors.sql_source import SqlCollector

        return SqlCollector(name, cfg, mapper=mapper)
    if cfg.kind == "logfile":
        from collectors.logfile import LogFileCollector

        return LogFileCollector(name, cfg, mapper=mapper)
    raise ValueError(f"sources.{name}.kind: unknown kind {cfg.kind!r}")
