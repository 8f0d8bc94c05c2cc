"""Collectors: poll sources, map native records to canonical observations."""
