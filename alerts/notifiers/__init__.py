"""Notifiers: one module per receiver kind behind the small base class in base.py."""

from alerts.notifiers.base import Notifier, SendResult
from alerts.notifiers.dingtalk import DingTalkNotifier
from alerts.notifiers.email import EmailNotifier
from alerts.notifiers.feishu import FeishuNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.notifiers.wecom import WeComNotifier

__all__ = [
    "DingTalkNotifier",
    "EmailNotifier",
    "FeishuNotifier",
    "Notifier",
    "SendResult",
    "WeComNotifier",
    "WebhookNotifier",
]
