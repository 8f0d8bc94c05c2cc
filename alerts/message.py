"""Chinese WeCom markdown for one alert: what broke, how many orders, where, since when, a link."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from alerts.notifiers.markup import drop_mentions
from metrics.catalog import KPI_BY_NAME
from metrics.snapshot import Labels, Snapshot
from sentinel.config import Config, RuleConfig
from store.lifecycle import PROGRESS_STATES, STATE_LABELS_ZH

MAX_BYTES = 3800  # well under WeCom's 4096 so a route mention or two still fits in one message
TOP_CHANNELS = 5
SEVERITY_COLOUR = {"P1": "warning", "P2": "warning", "P3": "comment"}
LABEL_NAMES_ZH = {
    "channel": "渠道",
    "state": "状态",
    "warehouse": "仓库",
    "carrier": "承运商",
    "source": "数据源",
    "province": "省份",
    "city": "城市",
    "cs_group": "客服组",
    "hop": "环节",
}
HOP_NAMES_ZH = {
    "channel_erp": "渠道→ERP",
    "erp_wms": "ERP→仓库",
    "shipped_tracking": "发货→物流轨迹",
    "status_writeback": "发货状态回传渠道",
}
HEADS = {"firing": "履约告警", "repeat": "履约告警持续中", "escalate": "履约告警升级"}


def render_alert(
    kind: str,
    rule: RuleConfig,
    labels: Labels | dict[str, str],
    value: float | None,
    snapshot: Snapshot | None,
    config: Config,
    now: datetime,
    since: datetime | None = None,
    diagnosis: str | None = None,
) -> str:
    """The markdown body for a `firing`, `repeat`, `escalate` or `resolved` notification;
    `diagnosis` is the one-line likely cause (diagnose/), shown on firing and escalation."""
    labels = dict(labels)
    zone = ZoneInfo(config.service.timezone)
    since = since or now
    if rule.no_data is not None:
        return _no_data(kind, rule, labels, value, config, now, since, zone)
    if rule.watches_sources:
        return _source_rule(kind, rule, labels, value, config, now, since, zone)
    spec = KPI_BY_NAME.get(rule.kpi)
    title = spec.title_zh if spec else rule.kpi
    scope = _scope(labels, config)
    if kind == "resolved":
        lines = [
            f'### <font color="info">已恢复</font> {title}',
            f"> 范围：{scope}",
            f"> 当前值：{_value_text(rule, value)}（阈值 {rule.op} {_fmt(rule, rule.threshold)}）",
            f"> 持续时长：{_duration(now - since)}（{_local(since, zone)} 至 {_local(now, zone)}）",
        ]
    else:
        direction = "低于" if rule.op in ("<", "<=") else "高于"
        colour = SEVERITY_COLOUR.get(rule.severity, "warning")
        head = HEADS.get(kind, "履约告警")
        lines = [
            f'### {head} <font color="{colour}">{rule.severity}</font> {title}{direction}阈值',
            f"> 范围：{scope}",
            f"> 当前值：**{_value_text(rule, value)}**（阈值 {rule.op} {_fmt(rule, rule.threshold)}）",
            *_impact(rule, labels, snapshot, config),
            *_since_and_advice(kind, rule, since, now, zone),
            *([f"> {_one_line(diagnosis, 300)}"] if diagnosis else []),
        ]
    return _finish(lines, rule, labels, config, kind)


def _finish(lines: list[str], rule: RuleConfig, labels: dict[str, str], config: Config, kind: str) -> str:
    tail = [f"[查看详情]({alert_link(rule, labels, config)})"]
    route = config.alerts.routes.get(rule.escalate_route if kind == "escalate" else rule.route)
    if route is not None and route.mentions:
        tail.append(" ".join(f"<@{m}>" for m in route.mentions))
    return _fit(lines + tail, len(tail))


def _no_data(
    kind: str,
    rule: RuleConfig,
    labels: dict[str, str],
    value: float | None,
    config: Config,
    now: datetime,
    since: datetime,
    zone: ZoneInfo,
) -> str:
    """A source that stopped reporting: which one, which channel, since when."""
    scope = _scope(labels, config)
    silent = "从未成功" if value is None else f"已 {_duration(timedelta(seconds=value))}无成功拉取"
    if kind == "resolved":
        lines = [
            '### <font color="info">已恢复</font> 数据源恢复上报',
            f"> 范围：{scope}",
            f"> 中断时长：{_duration(now - since)}（{_local(since, zone)} 至 {_local(now, zone)}）",
        ]
    else:
        colour = SEVERITY_COLOUR.get(rule.severity, "warning")
        lines = [
            f'### {HEADS.get(kind, "履约告警")} <font color="{colour}">{rule.severity}</font> 数据源停止上报',
            f"> 范围：{scope}",
            f"> 状态：**{silent}**（阈值 {_duration(rule.no_data)}）",
            "> 影响：该数据源的订单不再更新，相关渠道的履约指标可能失真",
            *_since_and_advice(kind, rule, since, now, zone),
        ]
    return _finish(lines, rule, labels, config, kind)


# source_metric -> (title, how its value reads)
SOURCE_METRIC_TEXT = {
    "stale_seconds": ("数据源拉取受阻，数据滞后", "seconds"),
    "lag_seconds": ("数据源数据滞后", "seconds"),
    "lead_seconds": ("数据源时间超前（时钟或时区错误）", "seconds"),
    "queue_messages": ("消息队列积压", "messages"),
    "queue_consumers": ("消息队列消费者数", "consumers"),
    "queue_oldest_age_seconds": ("消息队列最老消息等待过久", "seconds"),
}


def _source_figure(unit: str, value: float | None) -> str:
    if value is None:
        return "无数据"
    if unit == "seconds":
        return _duration(timedelta(seconds=value))
    return f"{value:g} 条" if unit == "messages" else f"{value:g} 个"


def _source_rule(
    kind: str,
    rule: RuleConfig,
    labels: dict[str, str],
    value: float | None,
    config: Config,
    now: datetime,
    since: datetime,
    zone: ZoneInfo,
) -> str:
    """A source or queue health rule: which source, the figure against its threshold, since when."""
    scope = _scope(labels, config)
    if rule.source_metric is not None:
        title, unit = SOURCE_METRIC_TEXT[rule.source_metric]
        state = f"**{_source_figure(unit, value)}**（阈值 {rule.op} {_source_figure(unit, rule.threshold)}）"
    else:
        title = f"数据源拉取失败（{'、'.join(rule.source_errors)}）"
        state = f"**连续失败 {0 if value is None else int(value)} 次**"
    if kind == "resolved":
        lines = [
            f'### <font color="info">已恢复</font> {title}',
            f"> 范围：{scope}",
            f"> 持续时长：{_duration(now - since)}（{_local(since, zone)} 至 {_local(now, zone)}）",
        ]
    else:
        colour = SEVERITY_COLOUR.get(rule.severity, "warning")
        lines = [
            f'### {HEADS.get(kind, "履约告警")} <font color="{colour}">{rule.severity}</font> {title}',
            f"> 范围：{scope}",
            f"> 状态：{state}",
            *_since_and_advice(kind, rule, since, now, zone),
        ]
    return _finish(lines, rule, labels, config, kind)


def _since_and_advice(
    kind: str, rule: RuleConfig, since: datetime, now: datetime, zone: ZoneInfo
) -> list[str]:
    """Since when (and how long, on repeats and escalations), why escalated, likely cause, runbook."""
    lines = [
        f"> 开始时间：{_local(since, zone)}"
        + (f"（已持续 {_duration(now - since)}）" if kind in ("repeat", "escalate") else "")
    ]
    if kind == "escalate":
        lines.append(f"> 升级原因：告警已持续 {_duration(now - since)} 无人确认")
    if rule.summary:
        lines.append(f"> 可能原因：{_one_line(rule.summary, 200)}")
    if rule.runbook:
        lines.append(f"> 处置手册：{_one_line(rule.runbook, 300)}")
    return lines


def render_digest(bodies: list[str], kinds: list[str], mentions: tuple[str, ...] = ()) -> str:
    """Several alerts of one group as one message: a count line, then each alert's own text."""
    firing = sum(1 for k in kinds if k != "resolved")
    resolved = len(kinds) - firing
    counts = "，".join(
        part
        for part in (f"告警 {firing} 条" if firing else "", f"恢复 {resolved} 条" if resolved else "")
        if part
    )
    lines = [f"## 履约告警汇总（{counts}）"]
    for body in bodies:
        lines += ["", drop_mentions(body).strip()]
    if mentions:
        lines += ["", " ".join(f"<@{m}>" for m in mentions)]
    return "\n".join(lines)


def _impact(rule: RuleConfig, labels: dict[str, str], snap: Snapshot | None, config: Config) -> list[str]:
    """How many orders and where: the counts behind a ratio, and the top channels."""
    if snap is None:
        return []
    lines = []
    if rule.kpi == "sync_success_ratio":
        stuck = snap.get("sync_unreached_orders", **labels)
        paid = snap.get("sync_paid_orders", **labels)
        sla = _duration(config.kpi.sync_sla)
        if stuck is not None:
            total = f"（共 {int(paid)} 单）" if paid is not None else ""
            lines.append(f"> 滞留订单：**{int(stuck)}** 单已付款超过 {sla}未到达仓库{total}")
        if "channel" not in labels:
            lines += _channels(snap, "sync_unreached_orders", {}, config)
    elif rule.kpi == "hop_sync_success_ratio":
        unreached = snap.get("hop_sync_unreached_orders", **labels)
        due = snap.get("hop_sync_orders", **labels)
        if unreached is not None:
            hop = HOP_NAMES_ZH.get(labels.get("hop", ""), labels.get("hop", ""))
            total = f"（共 {int(due)} 单）" if due is not None else ""
            lines.append(f"> 未同步订单：**{int(unreached)}** 单卡在「{hop}」{total}")
        if "channel" not in labels and "hop" in labels:
            lines += _channels(snap, "hop_sync_unreached_orders", {"hop": labels["hop"]}, config)
    elif rule.kpi in ("stuck_ratio", "stuck_orders"):
        state = labels.get("state")
        stuck = snap.get("stuck_orders", **labels)
        total = snap.get("state_orders", **labels)
        timeout = config.kpi.stuck_timeouts.get(state) if state else None
        if stuck is not None:
            where = f"在「{_state(state)}」状态" if state else ""
            over = f"超过 {_duration(timeout)}" if timeout else "超时"
            if timeout and state in PROGRESS_STATES:
                over += "无物流更新"  # from the newest carrier scan, not from entering the state
            count = f"（该状态共 {int(total)} 单）" if total is not None else ""
            lines.append(f"> 停滞订单：**{int(stuck)}** 单{where}{over}{count}")
        if "channel" not in labels and state:
            lines += _channels(snap, "stuck_orders", {"state": state}, config)
    return lines


def _channels(snap: Snapshot, kpi: str, fixed: dict[str, str], config: Config) -> list[str]:
    """One line naming the channels with the most affected orders (truncated)."""
    keys = sorted({*fixed, "channel"})
    counts = [
        (v.label_dict["channel"], int(v.value))
        for v in snap.series(kpi, by=keys)
        if all(v.label_dict.get(k) == val for k, val in fixed.items()) and v.value > 0
    ]
    if not counts:
        return []
    counts.sort(key=lambda item: (-item[1], item[0]))
    shown = "、".join(f"{_channel(name, config)} {n} 单" for name, n in counts[:TOP_CHANNELS])
    rest = len(counts) - TOP_CHANNELS
    more = (
        f" 等 {len(counts)} 个渠道（其余 {rest} 个共 {sum(n for _, n in counts[TOP_CHANNELS:])} 单）"
        if rest > 0
        else ""
    )
    return [f"> 影响渠道：{shown}{more}"]


def _scope(labels: dict[str, str], config: Config) -> str:
    if not labels:
        return "全部渠道"
    parts = []
    for key, val in sorted(labels.items()):
        shown = (
            _channel(val, config)
            if key == "channel"
            else _state(val)
            if key == "state"
            else HOP_NAMES_ZH.get(val, val)
            if key == "hop"
            else val
        )
        parts.append(f"{LABEL_NAMES_ZH.get(key, key)} {shown}")
    return "，".join(parts)


def _channel(name: str, config: Config) -> str:
    channel = config.channels.get(name)
    return channel.name if channel else name


def _state(state: str | None) -> str:
    return STATE_LABELS_ZH.get(state or "", state or "")


def _fmt(rule: RuleConfig, number: float) -> str:
    spec = KPI_BY_NAME.get(rule.kpi)
    if spec is not None and spec.unit == "ratio":
        return f"{number * 100:.2f}%"
    if float(number).is_integer():
        return str(int(number))
    return f"{number:.2f}"


def _value_text(rule: RuleConfig, value: float | None) -> str:
    return "无数据" if value is None else _fmt(rule, value)


def alert_link(rule: RuleConfig, labels: dict[str, str], config: Config) -> str:
    """The dashboard drill-down for one alert."""
    first = {"kpi": rule.kpi} if rule.kpi else {"page": "sources"}
    query = urlencode({**first, **dict(sorted(labels.items()))})
    return f"{config.service.dashboard_url.rstrip('/')}/?{query}"


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _duration(delta: timedelta) -> str:
    """A human duration in Chinese: 45 秒, 15 分钟, 1 小时 5 分钟, 2 天 3 小时."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} 天" + (f" {hours} 小时" if hours else "")
    if hours:
        return f"{hours} 小时" + (f" {minutes} 分钟" if minutes else "")
    if minutes:
        return f"{minutes} 分钟"
    return f"{secs} 秒"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _fit(lines: list[str], tail: int) -> str:
    """Join lines under MAX_BYTES: keep the last `tail` lines (link, mentions), drop middle ones."""
    body = "\n".join(lines)
    if _size(body) <= MAX_BYTES:
        return body
    kept_tail = lines[len(lines) - tail :]
    budget = MAX_BYTES - _size("\n".join(kept_tail)) - 8
    head: list[str] = []
    for line in lines[: len(lines) - tail]:
        if _size("\n".join([*head, line])) > budget:
            break
        head.append(line)
    body = "\n".join([*head, "…", *kept_tail])
    while _size(body) > MAX_BYTES:  # only with absurd mention lists: cut on character boundaries
        body = body[: -max(1, (_size(body) - MAX_BYTES) // 3)]
    return body


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
