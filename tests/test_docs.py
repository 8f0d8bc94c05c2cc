"""Docs that cannot drift: the README lists every metric and every config section the code has."""

from __future__ import annotations

from pathlib import Path

from metrics.exporter import METRICS
from sentinel.config import Config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_metric_as_the_code_declares_it():
    rows = [f"| `{m.name}` | {m.kind} | {', '.join(m.labels)} | {m.help} |" for m in METRICS]
    missing = [row for row in rows if row not in README]
    assert not missing, "update the README's Metrics table with these rows:\n" + "\n".join(missing)


def test_readme_documents_every_config_section():
    missing = [name for name in Config.model_fields if f"[{name}" not in README]
    assert not missing, f"document these config sections in the README: {missing}"


def test_readme_starts_with_the_two_commands():
    head = README[: README.index("## Architecture")]
    assert "make demo" in head and "make test" in head
