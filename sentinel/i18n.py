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
    "nav.cube": ("状态立方体", "Status cube"),
    "nav.lifecycle": ("生命周期", "Lifecycle"),
    "nav.sources": ("数据源", "Sources"),
    "nav.alerts": ("告警", "Alerts"),
    "nav.audit": ("审计", "Audit"),
    "nav.reconcile": ("对账", "Reconciliation"),
    "nav.diagnose": ("诊断", "Diagnose"),
    "role.viewer": ("只读", "viewer"),
    "role.operator": ("运维", "operator"),
    "role.admin": ("管理员", "admin"),
    "auth.user": ("用户名", "User name"),
    "auth.password": ("密码", "Password"),
    "auth.login": ("登录", "Log in"),
    "auth.logout": ("退出登录", "Log out"),
    "auth.failed": ("用户名或密码错误", "Wrong user name or password"),
    "auth.locked": ("登录失败次数过多，请关闭页面后重试", "Too many failed logins; close the page and try again"),
    "auth.no_users": (
        "未配置看板用户：在 config.toml 的 [dashboard.users] 中设置 password_hash（python -m sentinel hash-password）",
        "No dashboard user is configured: set password_hash under [dashboard.users] in config.toml (python -m sentinel hash-password)",
    ),
    "auth.signed_in": ("已登录：{user}（{role}）", "Signed in: {user} ({role})"),
    "auth.denied": ("需要「{role}」权限", "The {role} role is needed"),
    "export.csv": ("导出 CSV", "Export CSV"),
    "tile.vs_yesterday": ("较昨日同时 {change}", "vs yesterday {change}"),
    "tile.no_yesterday": ("无昨日同期数据", "no figure from yesterday"),
    "dim.channel": ("渠道", "Channel"),
    "dim.warehouse": ("仓库", "Warehouse"),
    "dim.carrier": ("承运商", "Carrier"),
    "dim.province": ("省份", "Province"),
    "dim.city": ("城市", "City"),
    "dim.cs_group": ("客服组", "CS group"),
    "dim.sku": ("SKU", "SKU"),
    "dim.payment_method": ("支付方式", "Payment method"),
    "gran.5m": ("5分钟", "5 min"),
    "gran.1h": ("1小时", "1 hour"),
    "gran.1d": ("1天", "1 day"),
    "measure.in_state": ("仍停留", "Still in state"),
    "measure.entered": ("流入", "Entered (flow)"),
    "cube.title": ("状态立方体", "Status cube"),
    "cube.state": ("状态", "State"),
    "cube.dimension": ("维度", "Dimension"),
    "cube.granularity": ("时间粒度", "Granularity"),
    "cube.measure": ("口径", "Measure"),
    "cube.caption": ("{since} 至 {until}（{zone}）。仍停留：按进入时间统计当前仍在该状态的订单；流入：各时段进入该状态的订单。点击格子查看订单", "{since} to {until} ({zone}). Still in state: orders in the state now, by when they entered it; entered: orders that entered it in each bucket. Click a cell for its orders"),
    "cube.empty": ("该时间范围内没有此状态的订单", "No order in this state in this time range"),
    "cube.unknown": ("（未知）", "(unknown)"),
    "cube.orders": ("订单数", "Orders"),
    "cube.earlier": ("另有 {n} 单在更早时间进入该状态，仍未离开", "{n} more orders entered the state earlier and are still in it"),
    "cube.terminal": ("终态订单不会离开该状态：看「进入该状态」口径更有意义", "Orders never leave a final state: the 'entered' measure says more"),
    "cube.drill": ("格子里的订单", "Orders in the cell"),
    "cube.value": ("维度值", "Value"),
    "cube.bucket": ("时间段", "Time bucket"),
    "cube.cell": ("{value} · {bucket} · {state}：{n} 单", "{value} · {bucket} · {state}: {n} orders"),
    "cube.no_orders": ("该格子没有订单", "No order in this cell"),
    "order.global_id": ("全局订单号", "Global order ID"),
    "order.raw_order_id": ("渠道订单号", "Channel order ID"),
    "order.channel": ("渠道", "Channel"),
    "order.state": ("状态", "State"),
    "order.state_at": ("进入状态时间", "Entered state at"),
    "order.buyer_name": ("收件人", "Receiver"),
    "order.phone": ("手机号", "Phone"),
    "order.address": ("地址", "Address"),
    "lifecycle.title": ("订单生命周期", "Order lifecycle"),
    "lifecycle.caption": ("{since} 至 {until}（{zone}）付款的订单", "Orders paid from {since} to {until} ({zone})"),
    "lifecycle.empty": ("该时间范围内没有付款订单", "No order was paid in this time range"),
    "lifecycle.reached": ("到达该状态", "Reached the state"),
    "lifecycle.stuck_short": ("停滞 {n}", "{n} stuck"),
    "lifecycle.p50": ("停留时长 p50", "Time in state p50"),
    "lifecycle.p95": ("停留时长 p95", "Time in state p95"),
    "lifecycle.dwell_note": ("停留时长统计最近 {window} 内离开该状态的订单；失败率另计仍停留且已超时的订单", "Time in state covers orders that left it in the last {window}; the failure ratio also counts orders still there past the timeout"),
    "lifecycle.top_reason": ("主要失败原因", "Top failure reason"),
    "sources.title": ("数据源", "Sources"),
    "sources.source": ("数据源", "Source"),
    "sources.status": ("状态", "Status"),
    "sources.last_success": ("最近成功", "Last success"),
    "sources.since": ("距今", "Ago"),
    "sources.lag": ("数据延迟", "Lag"),
    "sources.last_error": ("最近错误", "Last error"),
    "sources.failures": ("连续失败", "Failures in a row"),
    "sources.records": ("记录数", "Records"),
    "sources.quarantined": ("隔离数", "Quarantined"),
    "sources.errors": ("错误类别", "Errors by class"),
    "sources.no_errors": ("没有错误记录", "No errors recorded"),
    "sources.quarantine": ("隔离区", "Quarantine"),
    "sources.no_quarantine": ("隔离区为空", "The quarantine is empty"),
    "sources.field": ("字段", "Field"),
    "sources.count": ("条数", "Records"),
    "sources.pick": ("数据源", "Source"),
    "sources.all": ("全部", "all"),
    "sources.raw_admin_only": ("原始记录可能含个人信息，仅管理员可见", "Raw records may hold personal data: admins only"),
    "alerts.title": ("告警", "Alerts"),
    "alerts.history": ("告警历史", "Alert history"),
    "alerts.no_history": ("还没有告警", "No alert yet"),
    "alerts.fired_at": ("触发时间", "Fired at"),
    "alerts.resolved_at": ("恢复时间", "Resolved at"),
    "alerts.acked_by": ("确认人", "Acknowledged by"),
    "alerts.sends": ("发送失败或未确认的通知", "Failed or unconfirmed notifications"),
    "alerts.sends_ok": ("所有通知均已送达", "Every notification was delivered"),
    "alerts.route": ("通道", "Route"),
    "alerts.kind": ("类型", "Kind"),
    "alerts.status": ("状态", "Status"),
    "alerts.attempts": ("尝试次数", "Attempts"),
    "alerts.created": ("创建时间", "Created"),
    "alerts.response": ("接收方应答", "Receiver's answer"),
    "alerts.silences": ("静默", "Silences"),
    "alerts.no_silences": ("当前没有静默", "No active silence"),
    "alerts.matchers": ("匹配条件", "Matchers"),
    "alerts.starts": ("开始", "Starts"),
    "alerts.ends": ("结束", "Ends"),
    "alerts.by": ("创建人", "By"),
    "alerts.comment": ("原因", "Reason"),
    "alerts.hours": ("时长（小时）", "Hours"),
    "alerts.silence": ("静默", "Silence"),
    "alerts.silenced": ("已添加静默 #{id}", "Silence #{id} added"),
    "alerts.expire_pick": ("提前结束静默", "End a silence now"),
    "alerts.any_channel": ("全部渠道", "any channel"),
    "alerts.expire": ("结束", "End"),
    "alerts.operator_only": ("静默与确认需要运维权限", "Silencing and acknowledging need the operator role"),
    "alerts.ack": ("确认告警", "Acknowledge"),
    "alerts.ack_button": ("确认", "Acknowledge"),
    "alerts.acked": ("已确认：不再重复通知或升级", "Acknowledged: no more repeats or escalation"),
    "alert.resolved": ("已恢复", "resolved"),
    "send.pending": ("待发送", "pending"),
    "send.sending": ("发送中", "sending"),
    "send.failed": ("失败", "failed"),
    "send.unconfirmed": ("未确认", "unconfirmed"),
    "audit.title": ("审计日志", "Audit log"),
    "audit.empty": ("还没有审计记录", "No audit entry yet"),
    "audit.at": ("时间", "Time"),
    "audit.user": ("用户", "User"),
    "audit.role": ("角色", "Role"),
    "audit.action": ("操作", "Action"),
    "audit.detail": ("详情", "Detail"),
    "audit.login": ("登录", "login"),
    "audit.login_failed": ("登录失败", "failed login"),
    "audit.logout": ("退出", "logout"),
    "audit.export": ("导出", "export"),
    "audit.silence": ("静默", "silence"),
    "audit.expire": ("结束静默", "silence ended"),
    "audit.ack": ("确认告警", "acknowledge"),
    "audit.diagnose": ("诊断", "diagnose"),
    "audit.reconcile": ("对账", "reconcile"),
    "diagnose.title": ("一键诊断", "One-click diagnosis"),
    "diagnose.focus": ("诊断对象", "Diagnose"),
    "diagnose.everything": ("全部（不限告警）", "everything (no particular alert)"),
    "diagnose.live": ("同时检查各数据源连通性（网络）", "Also check each source's connectivity (network)"),
    "diagnose.run": ("一键诊断", "Diagnose"),
    "diagnose.running": ("诊断中…", "Diagnosing…"),
    "diagnose.elapsed": ("诊断用时 {s} 秒（数据时间 {at}）", "Diagnosed in {s} s (data as of {at})"),
    "diagnose.nothing": ("未发现明确根因", "No cause stands out"),
    "diagnose.orders": ("受影响订单（前 {n} 单）", "Affected orders (first {n})"),
    "diagnose.findings": ("全部探针发现（{n} 条）", "Every probe's findings ({n})"),
    "diagnose.probe": ("探针", "Probe"),
    "diagnose.finding": ("发现", "Finding"),
    "diagnose.cause": ("指向原因", "Points at"),
    "diagnose.score": ("强度", "Strength"),
    "diagnose.order_count": ("订单数", "Orders"),
    "reconcile.title": ("跨系统对账", "Cross-system reconciliation"),
    "reconcile.run": ("立即对账", "Reconcile now"),
    "reconcile.running": ("对账中…", "Reconciling…"),
    "reconcile.caption": ("{since} 至 {until} 付款的订单，核对：{roles}；用时 {s} 秒", "Orders paid from {since} to {until}, checked in: {roles}; {s} s"),
    "reconcile.orders": ("参与对账订单", "Orders reconciled"),
    "reconcile.differences": ("差异订单", "Differences"),
    "reconcile.ratio": ("差异率", "Difference ratio"),
    "reconcile.clean": ("各系统一致，没有差异", "Every system agrees: no difference"),
    "reconcile.groups": ("按原因分组", "By reason"),
    "reconcile.list": ("差异明细", "Differences"),
    "reconcile.reason": ("原因", "Reason"),
    "reconcile.count": ("订单数", "Orders"),
    "reconcile.present": ("存在于", "Present in"),
    "reconcile.missing": ("缺失于", "Missing from"),
    "reconcile.amount": ("订单金额（元）", "Order amount (yuan)"),
    "reconcile.paid_amount": ("实付金额（元）", "Paid amount (yuan)"),
    "reconcile.paid_at": ("付款时间", "Paid at"),
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
    "kpi.dwell_failure_ratio": ("", "State failure ratio"),
    "kpi.dwell_failure_orders": ("", "Failed stays in the state"),
    "kpi.dwell_judged_orders": ("", "Stays judged in the state"),
    "reason.timeout": ("停留超时", "stayed past the timeout"),
    "reason.cancelled": ("订单取消", "cancelled"),
    "reason.closed": ("交易关闭", "closed"),
    "reason.returned": ("退货退款", "returned"),
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
    "kpi.hop_sync_success_ratio": ("", "Sync success ratio per hop"),
    "kpi.hop_sync_orders": ("", "Orders due past each hop"),
    "kpi.hop_sync_unreached_orders": ("", "Orders not past each hop"),
    "kpi.manual_intervention_ratio": ("", "Manual intervention ratio"),
    "kpi.manual_intervention_orders": ("", "Orders handled by a person"),
    "kpi.paid_orders": ("", "Paid orders"),
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


def dimension_label(dimension: str, lang: str | None = None) -> str:
    """A dimension's display name (the name itself when unknown)."""
    key = f"dim.{dimension}"
    return t(key, lang) if key in STRINGS else dimension


def failure_reason_label(reason: str | None, lang: str | None = None) -> str:
    """A dwell failure reason's display name (the reason itself when unknown)."""
    if not reason:
        return t("none", lang)
    key = f"reason.{reason}"
    return t(key, lang) if key in STRINGS else reason


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
