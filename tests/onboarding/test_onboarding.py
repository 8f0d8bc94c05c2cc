"""Onboarding by config.toml alone: a shop API and a warehouse table Sentinel has never seen.

The sources' shapes, names, status words, time zones and ID formats appear nowhere in the presets
(tests/onboarding/world.py). They are configured only through the config text below; the KPIs the
service computes must equal the world's own truth. check-source shows what a page would become
and stores nothing.
"""

from __future__ import annotations

import difflib
import io
import logging
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from sentinel.__main__ import main
from sentinel.check_source import check_source, render
from sentinel.clock import ManualClock
from sentinel.config import parse_config
from sentinel.service import Service
from tests.onboarding.world import END, EVENTS, SHOP_WORDS, START, ShopApi, Warehouse, generate, truth

API_KEY = "kst-live-7f3a9c2e51d84b06"
CONFIG = """
[service]
timezone = "Asia/Shanghai"
store_url = "${STORE_URL}"

[channels.kestrel]
code = "KST"
name = "Kestrel 独立站"
id_pattern = 'KST/\\d{4}/\\d{5}-[a-z]'

[kpi]
window = "24h"
sync_sla = "15m"
fast_cancel = "60s"

[kpi.stuck_timeouts]
paid = "15m"

# The shop's order API: records under resultado.pedidos, cursor tokens, a modified-since window.
[sources.kestrel_api]
kind = "http"
channel = "kestrel"
url = "${KESTREL_API_URL}"
credentials = { api_key = "${KESTREL_API_KEY}" }
poll_interval = "1m"
overlap = "2m"
initial_lookback = "12h"
page_size = 5  # small pages: several cursor tokens per window

[sources.kestrel_api.api]
records = "resultado.pedidos"
paging = "cursor"
cursor_param = "apos"
next_cursor = "resultado.paginacao.proximo"
size_param = "limite"
since_param = "alterado_desde"
until_param = "alterado_ate"
time_format = "unix"
window = "1h"
auth = "header"
auth_name = "X-Kestrel-Key"
auth_value = "{api_key}"

[sources.kestrel_api.mapping]
order_id = "referencia"
status = "situacao"
status_time = "alterado_em"
time_format = "%d.%m.%Y %H:%M:%S"
timezone = "America/Sao_Paulo"
amount = "valor.centavos"
amount_unit = "fen"
times = { created = "datas.criado", paid = "datas.pago", shipped = "datas.enviado" }
dims = { province = "entrega.uf" }

[sources.kestrel_api.mapping.status_map]
aguardando_pagamento = "created"
pago = "paid"
cancelado = "cancelled"
enviado = "shipped"
entregue = "delivered"

# The 3PL warehouse: one row per phase change, naive Berlin times.
[sources.lager]
kind = "sql"
role = "wms"
channel = "kestrel"
url = "${LAGER_DB_URL}"
query = "SELECT lfd_nr, beleg_nr, phase, zeitpunkt, lager FROM lager_ereignis WHERE zeitpunkt >= :since ORDER BY zeitpunkt, lfd_nr"
cursor_field = "zeitpunkt"
poll_interval = "1m"
overlap = "5m"
initial_lookback = "12h"

[sources.lager.mapping]
order_id = "beleg_nr"
status = "phase"
status_time = "zeitpunkt"
timezone = "Europe/Berlin"
dims = { warehouse = "lager" }

[sources.lager.mapping.status_map]
EINGANG = "wms_received"
KOMMISSIONIERT = "picked"
VERPACKT = "packed"
"""


@pytest.fixture(params=["mariadb", "postgresql"])
def wms_url(request):
    """The warehouse database: once on MariaDB, once on PostgreSQL."""
    return request.getfixturevalue("mysql_url" if request.param == "mariadb" else "pg_url")


def load(text: str, api: ShopApi, wms_url: str, store_url: str):
    env = {"STORE_URL": store_url, "KESTREL_API_URL": api.url, "KESTREL_API_KEY": API_KEY,
           "LAGER_DB_URL": wms_url}  # fmt: skip
    return parse_config(tomllib.loads(text), env=env)


def replay(cfg, orders, clock, wms: Warehouse, step: timedelta = timedelta(minutes=5)) -> Service:
    """The service polls both sources every `step` of the world's six hours, then computes KPIs."""
    service = Service(cfg, clock)
    moment = START
    while moment <= END:
        clock.set(moment)
        wms.sync(moment)
        for name in service.collectors:
            outcome = service.poll_source(name)
            assert outcome.ok, outcome.error
        moment += step
    service.refresh_kpis()
    return service


def kpis_equal_truth(service: Service, orders) -> list[str]:
    """Differences between the service's KPIs and the world's truth (empty when all agree)."""
    kpi = service.config.kpi
    expected = truth(orders, END, window=kpi.window, sla=kpi.sync_sla,
                     paid_timeout=kpi.stuck_timeouts["paid"], fast_cancel=kpi.fast_cancel)  # fmt: skip
    wrong = []
    for (name, labels), value in sorted(expected.items()):
        got = service.snapshot.get(name, **dict(labels))
        if got is None or abs(got - value) > 1e-9:
            wrong.append(f"{name}{dict(labels)}: engine {got}, truth {value}")
    return wrong


def quarantined(service: Service) -> int:
    from store.schema import quarantine

    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(quarantine)).scalar()


def test_unseen_shop_api_and_warehouse_table_give_exact_kpis(wms_url, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    orders = generate()
    clock = ManualClock(START)
    with ShopApi(orders, clock, API_KEY) as api:
        wms = Warehouse(wms_url, orders)
        cfg = load(CONFIG, api, wms_url, f"sqlite:///{tmp_path / 'store.db'}")
        service = replay(cfg, orders, clock, wms)
        wms.close()
    assert kpis_equal_truth(service, orders) == []
    assert quarantined(service) == 0
    snap = service.snapshot
    assert 0 < snap.get("sync_success_ratio") < 1  # the world has orders never pushed to the warehouse
    assert snap.get("fast_cancel_orders") > 0 and snap.get("stuck_orders", state="paid") > 0
    # the API was read page by page through its cursor tokens, within modified-since windows
    assert any("apos" in q for q in api.requests) and all("alterado_desde" in q for q in api.requests)
    assert API_KEY not in caplog.text
    # global identity: the API's and the warehouse's records of an order are one order
    assert service.store.global_id("kestrel", orders[0].ref).startswith("KST_")
    service.engine.dispose()


def test_check_source_shows_rows_quarantine_and_unmapped_statuses_and_stores_nothing(mysql_url, tmp_path):
    orders = generate(orders=30)
    clock = ManualClock(END)
    store_file = tmp_path / "store.db"
    with ShopApi(orders, clock, API_KEY) as api:
        api.extra = [
            {"referencia": "KST/2026/09001-a", "situacao": "extraviado", "alterado_em": "12.02.2026 10:40:00",
             "datas": {}, "valor": {"centavos": 100}},
            {"referencia": "KST/2026/09002-b", "situacao": "pago", "alterado_em": "12.02.2026 10:40:00",
             "datas": {"pago": "31/02/2026 10:00"}, "valor": {"centavos": 100}},
            {"referencia": "KST-9003", "situacao": "pago", "alterado_em": "12.02.2026 10:40:00",
             "datas": {}, "valor": {"centavos": 100}},
        ]  # fmt: skip
        wms = Warehouse(mysql_url, orders)
        wms.sync(END)
        # the whole six hours in one window, on one page
        one_page = CONFIG.replace("page_size = 5 ", "page_size = 50 ").replace(
            'window = "1h"', 'window = "12h"'
        )
        cfg = load(one_page, api, mysql_url, f"sqlite:///{store_file}")
        result = check_source(cfg, "kestrel_api", END)
        out = io.StringIO()
        render(result, cfg.service.timezone, out)
        text = out.getvalue()
        wms_check = check_source(cfg, "lager", END)
        rows_before = _count(mysql_url)
        # the command line does the same (exit 1: something needs attention)
        config_file = tmp_path / "config.toml"
        config_file.write_text(one_page, encoding="utf-8")
        env = {"STORE_URL": f"sqlite:///{store_file}", "KESTREL_API_URL": api.url, "KESTREL_API_KEY": API_KEY,
               "LAGER_DB_URL": mysql_url}  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            code = main(
                ["check-source", "kestrel_api", "--config", str(config_file), "--at", END.isoformat()]
            )
            ok = main(["check-source", "lager", "--config", str(config_file), "--at", END.isoformat()])
        wms.close()
    assert code == 1 and ok == 0
    visible = [o for o in orders if o.until(END)]
    assert result.records == len(visible) + 3 <= 50  # one page
    assert {o.raw_order_id for o in result.observations} == {o.ref for o in visible}
    assert {(q.field, q.record_key) for q in result.quarantined} == {
        ("situacao", "KST/2026/09001-a"),
        ("datas.pago", "KST/2026/09002-b"),
        ("order_id", "KST-9003|paid"),
    }
    assert result.unmapped == {"extraviado": 1}
    assert "'31/02/2026 10:00' is not a time" in text and "unmapped status values" in text
    assert "does not match channels.kestrel.id_pattern" in text
    assert "'pago'" in text and "-> paid" in text
    assert API_KEY not in text
    assert wms_check.ok and {o.state for o in wms_check.observations} == {"wms_received", "picked", "packed"}
    # nothing stored: the store was never created, the warehouse table is untouched
    assert not store_file.exists()
    assert rows_before == _count(mysql_url)


def _count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(EVENTS)).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ("id_format", "id_pattern = 'KST/\\d{4}/\\d{5}-[a-z]'", "id_pattern = 'kst-\\d{4}-\\d{5}'"),
        ("status_word", 'enviado = "shipped"', 'despachado = "shipped"'),
    ],
)
def test_a_new_id_format_or_status_word_is_one_config_line(change, old, new, pg_url, tmp_path):
    """The shop changes its order numbers (or renames one status word): the old config quarantines
    its records and the KPIs go wrong; one changed line makes them exact again."""
    orders = generate(seed=11, orders=50, id_style="v2" if change == "id_format" else "v1")
    words = {**SHOP_WORDS, "shipped": "despachado"} if change == "status_word" else SHOP_WORDS
    edited = CONFIG.replace(old, new)
    diff = [d for d in difflib.ndiff(CONFIG.splitlines(), edited.splitlines()) if d[:2] in ("- ", "+ ")]
    assert diff == [f"- {old}", f"+ {new}"]
    results = {}
    for label, text in (("old", CONFIG), ("edited", edited)):
        clock = ManualClock(START)
        with ShopApi(orders, clock, API_KEY, words=words) as api:
            wms = Warehouse(pg_url, orders)
            cfg = load(text, api, pg_url, f"sqlite:///{tmp_path / label}.db")
            if label == "old":
                clock.set(END)
                check = check_source(cfg, "kestrel_api", END)
                results["check"] = check
            service = replay(cfg, orders, clock, wms, step=timedelta(minutes=15))
            wms.close()
        results[label] = (kpis_equal_truth(service, orders), quarantined(service))
        service.engine.dispose()
        with create_engine(pg_url).begin() as conn:  # the next run's warehouse starts empty
            conn.execute(EVENTS.delete())
    wrong, held = results["old"]
    assert wrong and held > 0
    check = results["check"]
    if change == "status_word":
        assert set(check.unmapped) == {"despachado"}
    else:
        assert {q.field for q in check.quarantined} == {"order_id"}
    assert results["edited"] == ([], 0)


def test_config_file_is_checked_like_any_other(tmp_path):
    """The onboarding config passes check-config; an api table with a paging gap is named."""
    path = Path(tmp_path / "c.toml")
    path.write_text(CONFIG.replace('next_cursor = "resultado.paginacao.proximo"\n', ""), encoding="utf-8")
    env = {
        "STORE_URL": "sqlite://",
        "KESTREL_API_URL": "http://x",
        "KESTREL_API_KEY": "k",
        "LAGER_DB_URL": "sqlite://",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["check-config", "--config", str(path)]) == 1
        path.write_text(CONFIG, encoding="utf-8")
        assert main(["check-config", "--config", str(path)]) == 0
