"""Fulfillment Sentinel: glue (config, clock, service, CLI)."""
