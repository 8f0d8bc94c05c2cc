"""Cross-system reconciliation: the last 72 h of orders across payment, channel, ERP, WMS."""

from reconcile.core import Difference, Reconciliation, reconcile, to_csv

__all__ = ["Difference", "Reconciliation", "reconcile", "to_csv"]
