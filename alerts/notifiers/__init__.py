"""Notifiers: one module per receiver kind behind the small base class in base.py."""

from alerts.notifiers.base import Notifier, SendResult
from alerts.notifiers.wecom import WeComNotifier

__all__ = ["Notifier", "SendResult", "WeComNotifier"]
