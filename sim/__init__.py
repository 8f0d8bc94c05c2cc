"""The simulated world: channels, payments, WMS, scenarios, and the scenario runner."""
