"""`python -m sentinel diagnose` and `python -m sentinel reconcile` on the configured store, audited."""

from __future__ import annotations

import csv
import getpass
import json
from datetime import timedelta

from diagnose_world import T0, World

from sentinel import audit
from sentinel.__main__ import main
from sentinel.clock import ManualClock


def test_diagnose_and_reconcile_commands(store_url, tmp_path, monkeypatch, capsys):
    from sentinel.config import DEFAULT_PATH, load_config
    from store.db import init_schema, make_engine
    from store.store import ChannelIdentity, Store

    monkeypatch.setenv("SENTINEL_STORE_URL", store_url)
    cfg = load_config(DEFAULT_PATH)
    engine = make_engine(store_url)
    init_schema(engine)
    identities = {n: ChannelIdentity(c.code, c.id_pattern) for n, c in cfg.channels.items()}
    store = Store(
        engine, identities, cfg.service.timezone, {n: s.effective_role for n, s in cfg.sources.items()}
    )
    world = World()
    for i in range(200):
        world.order(i, "jd" if i % 4 == 0 else "tmall", wms=not (i % 4 and i >= 120))
    now = T0 + timedelta(hours=4)
    world.write(store, now)
    engine.dispose()
    monkeypatch.setattr("sentinel.clock.SystemClock", lambda: ManualClock(now))

    assert main(["diagnose", "--no-live", "--json", "--kpi", "sync_success_ratio", "--by", "ops-li"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["causes"][0]["cause"] == "wms_push_gap" and len(report["causes"][0]["orders"]) == 60

    assert main(["diagnose", "--no-live"]) == 0
    text = capsys.readouterr().out
    assert "1. [wms_push_gap] ERP→WMS 推送静默中断" in text and "受影响订单：TB_20260212_" in text

    out = tmp_path / "diff.csv"
    assert main(["reconcile", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "差异 60 单" in printed and "WMS缺失（missing_wms）〔渠道 天猫 · 支付方式 alipay〕：60 单" in printed
    )
    rows = list(csv.DictReader(out.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()))
    assert len(rows) == 60 and rows[0]["missing"] == "wms"

    # Each run is in the audit log like the dashboard's: who, role "cli", what; the CSV is an export.
    engine = make_engine(store_url)
    entries = audit.recent(engine)
    engine.dispose()
    me = getpass.getuser()
    assert [(e["user"], e["role"], e["action"]) for e in entries] == [
        (me, "cli", "export"),
        (me, "cli", "reconcile"),
        (me, "cli", "diagnose"),
        ("ops-li", "cli", "diagnose"),
    ]
    assert entries[0]["detail"] == {"what": "reconcile", "rows": 60, "path": str(out)}
    assert entries[1]["detail"] == {"differences": 60}
    assert entries[3]["detail"] == {"kpi": "sync_success_ratio", "labels": {}, "top": "wms_push_gap"}
