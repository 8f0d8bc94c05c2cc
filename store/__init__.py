"""Canonical model and the store (SQLAlchemy 2 Core)."""
