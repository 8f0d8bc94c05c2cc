"""config.toml -> strict, cross-checked, frozen models; every problem reported at once."""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from collectors.api_config import ApiConfig
from collectors.errors import ERROR_CLASSES
from collectors.mapping import MappingConfig
from metrics.catalog import KPI_BY_NAME
from store.lifecycle import HOPS, RANK

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "config.toml"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match:
                return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    except (OverflowError, ValueError):  # NaN, or beyond what a timedelta holds
        pass
    raise ValueError(f"{value!r} is not a duration (e.g. 30s, 15m, 4h, 1d)")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ServiceConfig(Strict):
    timezone: str = "Asia/Shanghai"
    store_url: str = "sqlite:///var/sentinel.db"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    dashboard_url: str = "http://127.0.0.1:8501"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except ZoneInfoNotFoundError:  # a KeyError, which pydantic would not report as a problem
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class ChannelConfig(Strict):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9]{1,7}$")  # global ID prefix, e.g. TB, JD, PDD, DY, MINI
    name: str  # display name (zh)
    id_pattern: str | None = None  # regex a raw order id must match

    @field_validator("id_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


# Per-source health figures a source rule can watch (alerts/engine.py reads them from health rows):
# seconds since the last successful poll, lag behind the source, how far its newest times are ahead of the time they were read (a wrong
# clock), and for queues the backlog, the consumers and the oldest message's age.
SOURCE_METRICS = (
    "stale_seconds",
    "lag_seconds",
    "lead_seconds",
    "queue_messages",
    "queue_consumers",
    "queue_oldest_age_seconds",
)
ROLE_OF_KIND = {"http": "channel", "sql": "wms", "logfile": "payment"}


class SourceConfig(Strict):
    kind: Literal["http", "sql", "logfile"]
    # What the source is in the order's journey (order loss = payments no channel source shows);
    # unset: http -> channel, sql -> wms, logfile -> payment.
    role: Literal["channel", "payment", "erp", "wms", "carrier", "cs"] | None = None
    preset: str | None = None  # http protocol preset: tmall, jd, pdd, douyin, youzan, jushuitan
    # logfile of pushes as received: verify each record's signature first (kuaidi100: sign =
    # upper(MD5(param + credentials.salt))); a record failing it goes to quarantine
    signature: Literal["kuaidi100"] | None = None
    channel: str | None = None  # channel of every record, unless mapping.channel reads it
    url: str | None = None
    query: str | None = None  # sql: a SELECT with a :since parameter
    path: str | None = None  # logfile path
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    poll_interval: Duration = timedelta(seconds=60)
    overlap: Duration = timedelta(seconds=120)
    page_size: int = Field(default=100, ge=1, le=100)
    timeout: Duration = timedelta(seconds=10)
    initial_lookback: Duration = timedelta(hours=24)  # how far back the first poll reads
    cursor_field: str | None = None  # sql/http: record field that drives the incremental cursor
    enabled: bool = True
    api: ApiConfig | None = None  # http without a preset: the JSON API described in config alone
    mapping: MappingConfig

    @property
    def effective_role(self) -> str:
        return self.role or ROLE_OF_KIND[self.kind]


class KpiConfig(Strict):
    window: Duration = timedelta(hours=24)
    sync_sla: Duration = timedelta(minutes=15)
    refresh_interval: Duration = timedelta(seconds=30)
    fast_cancel: Duration = timedelta(seconds=60)  # paid -> cancelled within this counts as a fast cancel
    dwell_window: Duration = timedelta(hours=1)  # dwell percentiles over orders that left a state in it
    order_grace: Duration = timedelta(minutes=10)  # a payment with no channel order after this is lost
    callback_delay_limit: Duration = timedelta(seconds=8)  # a payment notify later than this is "late"
    tracking_sla: Duration = timedelta(hours=4)  # shipped -> the first carrier scan (hop shipped_tracking)
    writeback_sla: Duration = timedelta(minutes=15)  # shipped in the WMS -> shown shipped by the channel
    # Hops judged by the per-hop sync ratio; unset: each hop whose source roles have an enabled source.
    hops: tuple[str, ...] | None = None

    @field_validator("hops")
    @classmethod
    def _hops(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        bad = sorted(set(value or ()) - set(HOPS))
        if bad:
            raise ValueError(f"unknown hop(s) {bad}; use {list(HOPS)}")
        return value

    stuck_timeouts: dict[str, Duration] = Field(default_factory=dict)
    # Extra windows of the payment-family, per-hop sync and manual intervention KPIs, each exported
    # as window="<as written>": up to the KPI window less the SLA/grace with exact edges; longer
    # ones in whole hours (one more pass over their orders at each full refresh).
    windows: list[str] = Field(default_factory=lambda: ["5m", "1h"])

    @property
    def window_widths(self) -> dict[str, timedelta]:
        return {name: parse_duration(name) for name in self.windows}

    @field_validator("windows")
    @classmethod
    def _widths(cls, value: list[str]) -> list[str]:
        for name in value:
            width = parse_duration(name)
            if width <= timedelta(0) or width % timedelta(minutes=1):
                raise ValueError(f"{name!r}: a window is a positive whole number of minutes")
        if len(set(value)) != len(value):
            raise ValueError("windows repeat")
        return value

    @model_validator(mode="after")
    def _window_cells(self) -> KpiConfig:
        short_limit = self.window - max(self.sync_sla, self.order_grace)
        for name, width in self.window_widths.items():
            if short_limit < width <= self.window:
                raise ValueError(
                    f"windows: {name!r} must be at most the KPI window less the SLA/grace ({short_limit})"
                )
            if width > self.window and width % timedelta(hours=1):
                raise ValueError(f"windows: {name!r} is longer than the KPI window, so whole hours")
        return self

    @field_validator("stuck_timeouts")
    @classmethod
    def _states(cls, value: dict[str, timedelta]) -> dict[str, timedelta]:
        bad = sorted(k for k in value if k not in RANK)
        if bad:
            raise ValueError(f"unknown canonical state(s) {bad}")
        return value


_CLOCK = r"([01]\d|2[0-3]):[0-5]\d"
_QUIET = re.compile(rf"^{_CLOCK}-{_CLOCK}$")


def _regexes(value: dict[str, str]) -> dict[str, str]:
    for name, pattern in value.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{name}: invalid regex {pattern!r}: {exc}") from None
    return value


Regexes = Annotated[dict[str, str], AfterValidator(_regexes)]


class RuleConfig(Strict):
    name: str
    kpi: str | None = None  # required unless no_data is set
    by: tuple[str, ...] = ()  # label keys of the series this rule watches ([] = the total)
    match: dict[str, str] = Field(default_factory=dict)  # label = value
    match_re: Regexes = Field(default_factory=dict)  # label = regex (full match)
    op: Literal["<", "<=", ">", ">="] | None = None
    threshold: float | None = None
    for_: Duration = Field(default=timedelta(0), alias="for")
    min_count: float = 0  # ignore series whose denominator (count) is below this
    severity: Literal["P1", "P2", "P3"] = "P2"
    route: str
    summary: str = ""
    runbook: str = ""  # what to do, shown in every message of the rule
    # "No data": fires per source that is down or has not polled successfully for this long.
    no_data: Duration | None = None
    # Source health: fires per source whose `source_metric` (SOURCE_METRICS) meets op/threshold ...
    source_metric: Literal[SOURCE_METRICS] | None = None  # type: ignore[valid-type]
    # ... or whose last poll failed with one of these error classes (e.g. auth_expired).
    source_errors: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # source rules: the sources (or queues) watched ([] = all enabled)
    group_by: tuple[str, ...] | None = None  # label keys; alerts of one group share a digest (default: rule)
    quiet_hours: str | None = None  # "00:00-08:00" in service.timezone: messages held until it ends
    escalate_after: Duration | None = None  # firing and unacknowledged this long -> escalate_route, once
    escalate_route: str | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None and (not _QUIET.match(value) or value[:5] == value[6:]):
            raise ValueError(f"{value!r} is not a time range like 00:00-08:00")
        return value

    @property
    def watches_sources(self) -> bool:
        return self.no_data is not None or self.source_metric is not None or bool(self.source_errors)

    @model_validator(mode="after")
    def _kind(self) -> RuleConfig:
        kinds = [self.no_data is not None, self.source_metric is not None, bool(self.source_errors)]
        if sum(kinds) > 1:
            raise ValueError("give one of no_data, source_metric and source_errors")
        if not self.watches_sources:
            missing = [name for name in ("kpi", "op", "threshold") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{', '.join(missing)} required (or no_data for a source rule)")
        elif self.kpi is not None or self.by or self.match or self.match_re:
            raise ValueError("a source rule watches sources: kpi, by, match and match_re do not apply")
        elif self.source_metric is not None and (self.op is None or self.threshold is None):
            raise ValueError("a source_metric rule needs op and threshold")
        bad = sorted(set(self.source_errors) - set(ERROR_CLASSES))
        if bad:
            raise ValueError(f"unknown error class(es) {bad}; known: {list(ERROR_CLASSES)}")
        if (self.escalate_after is None) != (self.escalate_route is None):
            raise ValueError("escalate_after and escalate_route go together")
        return self

    @property
    def grouping(self) -> tuple[str, ...]:
        return self.group_by if self.group_by is not None else ("alertname",)


class InhibitRuleConfig(Strict):
    """While an alert matching `source_*` fires, alerts matching `target_*` with the same `equal`
    label values send nothing (e.g. a source that is down mutes the KPI alerts it causes)."""

    source_match: dict[str, str] = Field(default_factory=dict)
    source_match_re: Regexes = Field(default_factory=dict)
    target_match: dict[str, str] = Field(default_factory=dict)
    target_match_re: Regexes = Field(default_factory=dict)
    equal: tuple[str, ...] = ()


def _optional_secret(value: Any) -> Any:
    """An empty secret (e.g. an unset `${VAR:-}`) means "not configured"."""
    if value == "" or (isinstance(value, SecretStr) and not value.get_secret_value()):
        return None
    return value


def _address(value: str) -> str:
    if not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_optional_secret)]
Address = Annotated[str, AfterValidator(_address)]


class WeComRoute(Strict):
    """WeCom group robot: the key authorises sending; mentions are user ids or "@all"."""

    kind: Literal["wecom"]
    url: str
    key: SecretStr
    mentions: tuple[str, ...] = ()
    timeout: Duration = timedelta(seconds=10)


class DingTalkRoute(Strict):
    """DingTalk custom robot: access token in the URL, optional 加签 secret; mentions are mobiles or "all"."""

    kind: Literal["dingtalk"]
    url: str = "https://oapi.dingtalk.com/robot/send"
    access_token: SecretStr
    secret: OptionalSecret = None
    mentions: tuple[str, ...] = ()
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _no_token_in_url(cls, value: str) -> str:
        if "access_token=" in value:
            raise ValueError("put the token in access_token (a secret), not in the URL")
        return value

    @field_validator("secret")
    @classmethod
    def _sec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("SEC"):
            raise ValueError("a DingTalk signing secret starts with SEC")
        return value


class FeishuRoute(Strict):
    """Feishu/Lark custom bot: `url` is the hook base, the token its last segment; mentions are open ids."""

    kind: Literal["feishu"]
    url: str = "https://open.feishu.cn/open-apis/bot/v2/hook"
    token: SecretStr
    secret: OptionalSecret = None
    mentions: tuple[str, ...] = ()
    timeout: Duration = timedelta(seconds=10)


class EmailRoute(Strict):
    """SMTP submission: STARTTLS on 587 or implicit TLS on 465; login only after TLS."""

    kind: Literal["email"]
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: OptionalSecret = None
    sender: Address
    to: tuple[Address, ...] = Field(min_length=1)
    subject_prefix: str = "[履约告警]"
    timeout: Duration = timedelta(seconds=10)

    @property
    def mentions(self) -> tuple[str, ...]:
        return ()


class WebhookRoute(Strict):
    """Any HTTP endpoint taking Alertmanager's webhook JSON; optional bearer token and HMAC signature."""

    kind: Literal["webhook"]
    url: str
    bearer_token: OptionalSecret = None
    hmac_secret: OptionalSecret = None
    timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def mentions(self) -> tuple[str, ...]:
        return ()


RouteConfig = Annotated[
    WeComRoute | DingTalkRoute | FeishuRoute | EmailRoute | WebhookRoute, Field(discriminator="kind")
]
ROUTE_KINDS = ("wecom", "dingtalk", "feishu", "email", "webhook")


class AlertsConfig(Strict):
    eval_interval: Duration = timedelta(seconds=30)
    repeat_interval: Duration = timedelta(hours=1)
    group_wait: Duration = timedelta(seconds=30)  # a new group's first digest waits this long for more
    group_interval: Duration = timedelta(minutes=5)  # later changes of a group: one digest per interval
    quiet_hours_bypass: tuple[Literal["P1", "P2", "P3"], ...] = ("P1",)  # severities quiet hours never hold
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()
    inhibit_rules: tuple[InhibitRuleConfig, ...] = ()
    briefing_at: str | None = "09:00"  # morning briefing time of day, service time zone
    briefing_route: str | None = None  # the morning briefing goes to this route (unset = no briefing)

    @field_validator("briefing_at")
    @classmethod
    def _briefing_at(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(_CLOCK, value):
            raise ValueError(f"{value!r} is not a time of day like 09:00")
        return value or None

    @property
    def briefing(self) -> tuple[str, str] | None:
        """(HH:MM, route) of the morning briefing, or None when there is none to send."""
        if self.briefing_at is None or self.briefing_route is None:
            return None
        return self.briefing_at, self.briefing_route


class DashboardUser(Strict):
    """One dashboard login: its role and its scrypt hash (`python -m sentinel hash-password`)."""

    role: Literal["viewer", "operator", "admin"] = "viewer"
    password_hash: OptionalSecret = None  # unset or empty: the user cannot log in

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: SecretStr | None) -> SecretStr | None:
        from sentinel.auth import is_password_hash

        if value is not None and not is_password_hash(value.get_secret_value()):
            raise ValueError("not a password hash; make one with: python -m sentinel hash-password")
        return value


class DashboardConfig(Strict):
    refresh_interval: Duration = timedelta(seconds=10)  # live tiles re-read the store this often (<= 15 s)
    users: dict[str, DashboardUser] = Field(default_factory=dict)

    @field_validator("refresh_interval")
    @classmethod
    def _refresh(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(seconds=15):
            raise ValueError("must be between 1s and 15s")
        return value


class ReconcileConfig(Strict):
    """Cross-system reconciliation (reconcile/): which systems must each hold every paid order."""

    window: Duration = timedelta(hours=72)  # orders paid within this are reconciled
    settle: Duration = timedelta(minutes=30)  # orders paid more recently than this are not judged yet
    roles: tuple[Literal["channel", "payment", "erp", "wms", "carrier", "cs"], ...] = (
        "channel",
        "payment",
        "wms",
    )
    at: str | None = "02:00"  # the daily run, service time zone (with a route set)
    route: str | None = None  # the daily report goes to this route (e.g. an email route); unset = no report
    csv_dir: str = "var/reconcile"  # where each run's differences are written as CSV
    threshold: float = 0.001  # a difference ratio above this is flagged (the seeds' 0.1 %)
    indexes: bool = True  # keep the store indexes that spare reconcile() its full scan (reconcile/indexes.py)

    @field_validator("at")
    @classmethod
    def _at(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(_CLOCK, value):
            raise ValueError(f"{value!r} is not a time of day like 02:00")
        return value or None


class QueueConfig(Strict):
    """A message queue whose backlog Sentinel watches (RabbitMQ over AMQP 0-9-1)."""

    kind: Literal["amqp"] = "amqp"
    url: SecretStr  # amqp://user:password@host:5672/vhost
    queue: str
    poll_interval: Duration = timedelta(seconds=30)
    timeout: Duration = timedelta(seconds=5)
    channel: str | None = None  # the channel whose orders it carries, if one
    enabled: bool = True


class Config(Strict):
    service: ServiceConfig = ServiceConfig()
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    queues: dict[str, QueueConfig] = Field(default_factory=dict)
    kpi: KpiConfig = KpiConfig()
    alerts: AlertsConfig = AlertsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    reconcile: ReconcileConfig = ReconcileConfig()

    @model_validator(mode="after")
    def _default_hops(self) -> Config:
        """`kpi.hops` unset: the hops whose source roles all have an enabled source."""
        if self.kpi.hops is None:
            roles = {src.effective_role for src in self.sources.values() if src.enabled}
            hops = tuple(h for h, needs in HOPS.items() if set(needs) <= roles)
            object.__setattr__(self, "kpi", self.kpi.model_copy(update={"hops": hops}))
        return self


class ConfigError(Exception):
    """All problems of one config, each as `dotted.location: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _interpolate(node: Any, where: str, env: dict[str, str], problems: list[str]) -> Any:
    """Replace ${VAR} and ${VAR:-default} in strings from the environment."""
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{where}.{k}" if where else k, env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{where}[{i}]", env, problems) for i, v in enumerate(node)]
    if isinstance(node, str):

        def sub(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{where}: environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, node)
    return node


def _location(loc: tuple) -> str:
    if loc[:2] == ("alerts", "routes") and len(loc) > 3 and loc[3] in ROUTE_KINDS:
        loc = loc[:3] + loc[4:]  # drop the tagged-union member: alerts.routes.x.email.to -> ...x.to
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            name = "for" if item == "for_" else str(item)
            parts.append(("." if parts else "") + name)
    return "".join(parts)


def _cross_check(
    cfg: Config,
    rule_index: list[int] | None = None,
    names: dict[str, set[str]] | None = None,
) -> list[str]:
    """Checks across sections; `rule_index`/`names` come from the raw file when some entries were invalid."""
    problems = []
    rule_index = rule_index if rule_index is not None else list(range(len(cfg.alerts.rules)))
    channels = (names or {}).get("channels", set()) | set(cfg.channels)
    routes = (names or {}).get("routes", set()) | set(cfg.alerts.routes)
    for name, src in cfg.sources.items():
        where = f"sources.{name}"
        if src.channel is None and src.mapping.channel is None:
            problems.append(f"{where}.channel: set channel, or mapping.channel to read it per record")
        if src.channel is not None and src.channel not in channels:
            problems.append(f"{where}.channel: unknown channel {src.channel!r}")
        for native, channel in src.mapping.channel_map.items():
            if channel not in channels:
                problems.append(f"{where}.mapping.channel_map.{native}: unknown channel {channel!r}")
        if src.kind == "http" and not src.url:
            problems.append(f"{where}.url: field required for kind 'http'")
        if src.kind == "http" and not src.preset and src.api is None:
            problems.append(f"{where}.preset: set a preset, or describe the API in [{where}.api]")
        if src.preset and src.api is not None:
            problems.append(f"{where}.api: a preset already knows its API; set one of preset and api")
        if src.api is not None and src.kind != "http":
            problems.append(f"{where}.api: only for kind 'http'")
        if src.api is not None:
            for cred in sorted(src.api.credential_names() - set(src.credentials)):
                problems.append(f"{where}.credentials.{cred}: used by the api templates but not set")
        if src.kind == "sql":
            if not src.url:
                problems.append(f"{where}.url: field required for kind 'sql' (an SQLAlchemy URL)")
            if not src.query or ":since" not in src.query:
                problems.append(f"{where}.query: a SELECT with a :since parameter is required")
        if src.kind == "logfile" and not src.path:
            problems.append(f"{where}.path: field required for kind 'logfile'")
        if src.signature is not None:
            if src.kind != "logfile":
                problems.append(f"{where}.signature: only for kind 'logfile' (a log of received pushes)")
            if not (src.credentials.get("salt") and src.credentials["salt"].get_secret_value()):
                problems.append(f"{where}.credentials.salt: required to verify {src.signature} signatures")
    for i, rule in zip(rule_index, cfg.alerts.rules, strict=True):
        where = f"alerts.rules[{i}]"
        spec = KPI_BY_NAME.get(rule.kpi) if rule.kpi is not None else None
        if rule.watches_sources:
            for source in rule.sources:
                if source not in cfg.sources and source not in cfg.queues:
                    problems.append(f"{where}.sources: unknown source {source!r}")
        elif spec is None:
            problems.append(f"{where}.kpi: unknown KPI {rule.kpi!r}; known: {sorted(KPI_BY_NAME)}")
        else:
            for label in (*rule.by, *rule.match, *rule.match_re):
                if label not in spec.labels:
                    problems.append(f"{where}.by: KPI {rule.kpi} has no label {label!r}")
        if rule.route not in routes:
            problems.append(f"{where}.route: unknown route {rule.route!r}")
        if rule.escalate_route is not None and rule.escalate_route not in routes:
            problems.append(f"{where}.escalate_route: unknown route {rule.escalate_route!r}")
    if cfg.alerts.briefing_route is not None and cfg.alerts.briefing_route not in routes:
        problems.append(f"alerts.briefing_route: unknown route {cfg.alerts.briefing_route!r}")
    if cfg.reconcile.route is not None and cfg.reconcile.route not in routes:
        problems.append(f"reconcile.route: unknown route {cfg.reconcile.route!r}")
    for name, route in cfg.alerts.routes.items():
        if isinstance(route, EmailRoute):
            where = f"alerts.routes.{name}"
            if route.password is not None and not route.username:
                problems.append(f"{where}.username: field required when a password is set")
            local = route.host in ("localhost", "127.0.0.1", "::1")
            if route.tls == "none" and route.password is not None and not local:
                problems.append(f"{where}.tls: 'none' would send the password in clear; use starttls or ssl")
    names = [r.name for r in cfg.alerts.rules]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"alerts.rules: rule name {dup!r} is used twice")
    codes = [c.code for c in cfg.channels.values()]
    for dup in sorted({c for c in codes if codes.count(c) > 1}):
        problems.append(f"channels: code {dup!r} is used twice")
    return problems


def _messages(exc: ValidationError, prefix: tuple = ()) -> list[str]:
    out = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        loc = prefix + tuple(err["loc"])
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # a route's kind
            loc, msg = (*loc, "kind"), f"must be one of {', '.join(ROUTE_KINDS)}"
        out.append(f"{_location(loc)}: {msg}")
    return out


_ROUTE: TypeAdapter = TypeAdapter(RouteConfig)


def _valid(model: type[BaseModel] | TypeAdapter, value: Any) -> bool:
    try:
        if isinstance(model, TypeAdapter):
            model.validate_python(value)
        else:
            model.model_validate(value)
    except ValidationError:
        return False
    return True


def _salvage(data: dict) -> tuple[Config, list[int], dict[str, set[str]]]:
    """The entries of an invalid config that are valid on their own, to cross-check them too."""
    data = data if isinstance(data, dict) else {}
    section = lambda d, k: d.get(k) if isinstance(d.get(k), dict) else {}  # noqa: E731
    alerts = section(data, "alerts")
    raw_rules = alerts.get("rules") if isinstance(alerts.get("rules"), list) else []
    rule_index = [i for i, r in enumerate(raw_rules) if _valid(RuleConfig, r)]
    kept = {
        "service": section(data, "service") if _valid(ServiceConfig, section(data, "service")) else {},
        "kpi": section(data, "kpi") if _valid(KpiConfig, section(data, "kpi")) else {},
        "channels": {k: v for k, v in section(data, "channels").items() if _valid(ChannelConfig, v)},
        "sources": {k: v for k, v in section(data, "sources").items() if _valid(SourceConfig, v)},
        "alerts": {
            "routes": {k: v for k, v in section(alerts, "routes").items() if _valid(_ROUTE, v)},
            "rules": [raw_rules[i] for i in rule_index],
        },
    }
    names = {"channels": set(section(data, "channels")), "routes": set(section(alerts, "routes"))}
    return Config.model_validate(kept), rule_index, names


def _apply_override(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_config(
    raw: dict, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    problems: list[str] = []
    data = _interpolate(raw, "", dict(os.environ if env is None else env), problems)
    for dotted, value in (overrides or {}).items():
        _apply_override(data, dotted, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_messages(exc))
        problems.extend(_cross_check(*_salvage(data)))  # the valid rest is still cross-checked
        raise ConfigError(problems) from None
    problems.extend(_cross_check(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    path: str | Path | None = None, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    path = Path(path or os.environ.get("SENTINEL_CONFIG") or DEFAULT_PATH)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    environ = dict(os.environ if env is None else env)
    overrides = dict(overrides or {})
    if environ.get("SENTINEL_STORE_URL") and "service.store_url" not in overrides:
        overrides["service.store_url"] = environ["SENTINEL_STORE_URL"]
    return parse_config(raw, env=environ, overrides=overrides)
