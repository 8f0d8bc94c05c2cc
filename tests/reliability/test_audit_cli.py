"""Silences made on the command line are audited like those made on the dashboard (who, what, why)."""

from __future__ import annotations

from sentinel import audit
from sentinel.__main__ import main
from store.db import make_engine


def test_cli_silence_add_and_expire_are_in_the_audit_log(tmp_path, capsys, store_url):
    path = tmp_path / "config.toml"
    path.write_text(f'[service]\nstore_url = "{store_url}"\n', encoding="utf-8")
    args = ["--config", str(path)]
    assert main(["silence", "add", *args, "--match", "channel=tmall", "--duration", "2h",
                 "--by", "zhangsan", "--comment", "WMS 维护"]) == 0  # fmt: skip
    assert main(["silence", "expire", *args, "1", "--by", "lisi"]) == 0
    capsys.readouterr()
    engine = make_engine(store_url)
    entries = audit.recent(engine)
    engine.dispose()
    assert [(e["user"], e["role"], e["action"]) for e in entries] == [
        ("lisi", "cli", "expire"),
        ("zhangsan", "cli", "silence"),
    ]
    added = entries[1]["detail"]
    assert added["id"] == 1 and added["matchers"] == ["channel=tmall"] and added["comment"] == "WMS 维护"
