"""What a diagnosis returns: findings (one probe's evidence) and ranked causes."""

from __future__ import annotations

from dataclasses import dataclass, field

# The incident catalog of PRODUCT.md: the vocabulary of `Cause.cause` and of a scenario's truth.
CAUSES = (
    "wms_push_gap",
    "intake_outage",
    "api_rate_limited",
    "duplicate_callbacks",
    "api_key_rotated",
    "mq_consumers_gone",
    "cancel_misfire",
    "timezone_skew",
    "field_filter_loss",
    "pick_pack_stall",
    "tracking_stall",
    "price_mismatch",
)

CAUSE_TITLES_ZH = {
    "wms_push_gap": "ERP→WMS 推送静默中断",
    "intake_outage": "订单服务接单中断（有支付无订单）",
    "api_rate_limited": "渠道 API 限流",
    "duplicate_callbacks": "支付回调重复推送",
    "api_key_rotated": "渠道 API 密钥失效（凭证轮换）",
    "mq_consumers_gone": "退货消息队列无消费者",
    "cancel_misfire": "取消规则误触发（付款后秒取消）",
    "timezone_skew": "系统时区/时钟偏差",
    "field_filter_loss": "字段过滤导致订单缺失（对账差异）",
    "pick_pack_stall": "仓库拣货→打包停滞",
    "tracking_stall": "物流轨迹停止更新",
    "price_mismatch": "价格未同步（实付金额与订单金额不符）",
}


@dataclass(frozen=True)
class Finding:
    """One probe's observation: what it saw, how strongly it points at a cause, and the evidence."""

    probe: str  # the probe that made it, e.g. "sync_gap", "connectivity", "sql"
    title: str  # one Chinese line
    evidence: list[dict] = field(default_factory=list)  # facts, each a small dict (JSON-safe)
    orders: list[str] = field(default_factory=list)  # affected global order IDs (capped)
    cause: str | None = None  # the catalog cause it supports, if any
    score: float = 0.0  # 0..1: how strongly it supports `cause`
    order_count: int = 0  # affected orders in all (orders may be capped)


@dataclass(frozen=True)
class Cause:
    """A ranked likely root cause: a catalog id, its score and the evidence behind it."""

    cause: str
    score: float
    title: str
    summary: str  # one Chinese line, for alert messages
    evidence: list[dict]
    orders: list[str]


@dataclass(frozen=True)
class Diagnosis:
    causes: list[Cause]  # best first
    findings: list[Finding]
    elapsed_s: float
    probe_seconds: dict[str, float] = field(default_factory=dict)  # wall time of each probe

    @property
    def top(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    def summary_line(self) -> str:
        """One Chinese line naming the likely cause (or that none stands out)."""
        top = self.top
        if top is None:
            return "自动诊断：未发现明确根因"
        return f"自动诊断：{top.summary}（置信度 {top.score:.0%}）"

    def to_dict(self) -> dict:
        return {
            "causes": [
                {
                    "cause": c.cause,
                    "score": round(c.score, 3),
                    "title": c.title,
                    "summary": c.summary,
                    "evidence": c.evidence,
                    "orders": c.orders,
                }
                for c in self.causes
            ],
            "findings": [
                {
                    "probe": f.probe,
                    "title": f.title,
                    "cause": f.cause,
                    "score": round(f.score, 3),
                    "order_count": f.order_count,
                    "orders": f.orders,
                    "evidence": f.evidence,
                }
                for f in self.findings
            ],
            "elapsed_s": round(self.elapsed_s, 3),
            "probe_seconds": {k: round(v, 3) for k, v in self.probe_seconds.items()},
        }
