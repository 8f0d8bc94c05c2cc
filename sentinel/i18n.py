"""UI strings: zh-CN by default with an English switch; the language lives in the Streamlit session."""

from __future__ import annotations

from metrics.catalog import KPI_BY_NAME
from store.lifecycle import STATE_LABELS_ZH

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"
SESSION_KEY = "sentinel_lang"  # the st.session_state key (and widget key) of the language switch
LANG_NAMES = {"zh": "中文", "en": "English"}

# key -> (zh, en). Format fields use str.format names.
STRINGS: dict[str, tuple[str, str]] = {
    "app.title": ("履约哨兵", "Fulfillment Sentinel"),
    "app.language": ("语言 / Language", "语言 / Language"),
    "app.config_error": ("配置有误，无法打开看板：", "The configuration is invalid; the dashboard cannot open:"),
    "nav.overview": ("总览", "Overview"),
    "overview.title": ("履约健康总览", "Fulfillment health overview"),
    "overview.empty": ("暂无数据，服务启动后约30秒内出现", "No data yet: it appears within about 30 s after the service starts"),
    "overview.snapshot_time": ("快照时间：{time}（{zone}）", "Snapshot time: {time} ({zone})"),
    "overview.golden": ("核心指标", "Key indicators"),
    "tile.threshold": ("告警条件 {op} {threshold}", "alert when {op} {threshold}"),
    "tile.no_rule": ("未配置阈值", "no threshold configured"),
    "tile.no_value": ("暂无数据", "no data"),
    "tile.help": ("{status}；规则级别 {severity}", "{status}; rule severity {severity}"),
    "status.ok": ("正常", "healthy"),
    "status.bad": ("异常", "unhealthy"),
    "status.unknown": ("未知", "unknown"),
    "section.channels": ("各渠道同步", "Sync by channel"),
    "section.stuck": ("各状态停滞订单", "Stuck orders by state"),
    "section.sources": ("数据源健康", "Source health"),
    "section.alerts": ("活动告警", "Active alerts"),
    "col.channel": ("渠道", "Channel"),
    "col.state": ("状态", "State"),
    "col.stuck_orders": ("停滞订单数", "Stuck orders"),
    "col.state_orders": ("该状态订单数", "Orders in state"),
    "col.stuck_ratio": ("停滞率", "Stuck ratio"),
    "col.alert_state": ("告警状态", "Alert state"),
    "col.severity": ("级别", "Severity"),
    "col.rule": ("规则", "Rule"),
    "col.labels": ("维度", "Labels"),
    "col.value": ("当前值", "Value"),
    "col.since": ("开始时间", "Since"),
    "col.summary": ("说明", "Summary"),
    "stuck.none": ("当前没有停滞订单统计", "No stuck-order figures yet"),
    "channels.none": ("暂无渠道同步数据", "No per-channel sync figures yet"),
    "sources.none": ("尚未轮询任何数据源", "No source has been polled yet"),
    "source.up": ("正常", "up"),
    "source.down": ("故障", "down"),
    "source.last_success": ("{ago}前成功", "last success {ago} ago"),
    "source.never": ("从未成功", "never succeeded"),
    "source.detail": (
        "最近错误：{error}；连续失败 {failures} 次；延迟 {lag}",
        "last error: {error}; {failures} failure(s) in a row; lag {lag}",
    ),
    "alerts.none": ("当前没有活动告警", "No active alerts"),
    "alert.pending": ("待定", "pending"),
    "alert.firing": ("告警中", "firing"),
    "none": ("无", "none"),
    "unit.s": ("{n}秒", "{n}s"),
    "unit.m": ("{n}分钟", "{n} min"),
    "unit.h": ("{n}小时", "{n} h"),
    "unit.d": ("{n}天", "{n} d"),
    "error.timeout": ("超时", "timeout"),
    "error.unavailable": ("无法连接", "unavailable"),
    "error.http_5xx": ("服务端错误(5xx)", "server error (5xx)"),
    "error.http_4xx": ("请求被拒绝(4xx)", "request rejected (4xx)"),
    "error.rate_limited": ("被限流", "rate limited"),
    "error.auth_expired": ("凭证失效", "credential expired"),
    "error.config": ("配置错误", "configuration error"),
    "error.clock_skew": ("时钟偏差", "clock skew"),
    "error.schema": ("数据格式错误", "schema error"),
    "error.error": ("其他错误", "other error"),
    "kpi.sync_success_ratio": ("", "Order sync success ratio"),
    "kpi.sync_paid_orders": ("", "Paid orders past the SLA"),
    "kpi.sync_unreached_orders": ("", "Paid orders not in the WMS"),
    "kpi.stuck_ratio": ("", "Stuck ratio"),
    "kpi.stuck_orders": ("", "Stuck orders"),
    "kpi.state_orders": ("", "Orders per state"),
    "kpi.fast_cancel_ratio": ("", "Cancelled right after payment"),
    "kpi.fast_cancel_orders": ("", "Orders cancelled right after payment"),
    "kpi.dwell_p50_seconds": ("", "Time in state, p50"),
    "kpi.dwell_p95_seconds": ("", "Time in state, p95"),
    "kpi.dwell_orders": ("", "Orders that left the state"),
    "kpi.duplicate_free_ratio": ("", "Duplicate-free ratio"),
    "kpi.duplicate_records": ("", "Duplicate records"),
    "kpi.order_loss_ratio": ("", "Order loss ratio"),
    "kpi.order_loss_orders": ("", "Payments with no order"),
    "kpi.order_loss_paid_orders": ("", "Payments past the grace period"),
    "kpi.amount_mismatch_ratio": ("", "Paid amount mismatch ratio"),
    "kpi.amount_mismatch_orders": ("", "Orders with a paid amount mismatch"),
    "kpi.late_callback_ratio": ("", "Late payment callback ratio"),
    "kpi.late_callback_orders": ("", "Late payment callbacks"),
    "kpi.return_break_ratio": ("", "Return break ratio"),
    "kpi.return_break_orders": ("", "Returns stuck over 24 h"),
    "kpi.return_active_orders": ("", "Active returns"),
}  # fmt: skip


def current_lang() -> str:
    """The session's language inside a Streamlit run, else the default."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return DEFAULT_LANG
    import streamlit as st

    lang = st.session_state.get(SESSION_KEY, DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def t(key: str, lang: str | None = None, **fields: object) -> str:
    """The UI string for `key` in `lang` (default: the session's); unknown keys raise KeyError."""
    zh, en = STRINGS[key]
    text = en if (lang or current_lang()) == "en" and en else zh
    return text.format(**fields) if fields else text


def kpi_title(name: str, lang: str | None = None) -> str:
    """A KPI's display title: the catalog's Chinese title, or its English one."""
    spec = KPI_BY_NAME.get(name)
    if (lang or current_lang()) == "en" and f"kpi.{name}" in STRINGS:
        return STRINGS[f"kpi.{name}"][1]
    return spec.title_zh if spec else name


def state_label(state: str, lang: str | None = None) -> str:
    """A canonical state's display name."""
    if (lang or current_lang()) == "en":
        return state.replace("_", " ")
    return STATE_LABELS_ZH.get(state, state)


def error_label(error_class: str | None, lang: str | None = None) -> str:
    """An error class's display name (the class itself when unknown)."""
    if not error_class:
        return t("none", lang)
    key = f"error.{error_class}"
    return t(key, lang) if key in STRINGS else error_class


def duration(seconds: float | None, lang: str | None = None) -> str:
    """A short human duration: 45秒, 12分钟, 3小时, 2天."""
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return t(f"unit.{unit}", lang, n=int(seconds // size))
    return t("unit.s", lang, n=int(seconds))
