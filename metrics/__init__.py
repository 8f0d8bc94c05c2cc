"""KPI engine, snapshots and the Prometheus exposition."""
