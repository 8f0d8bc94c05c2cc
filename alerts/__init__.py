"""Alerting: rules over KPI snapshots, a persisted lifecycle, an outbox and chat notifiers."""
