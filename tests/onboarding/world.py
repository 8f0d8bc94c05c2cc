"""A merchant's systems Sentinel has never seen, written for these tests only.

"Kestrel" is an independent web shop: its order API speaks Portuguese status words, keeps naive
São Paulo times as `dd.mm.yyyy HH:MM:SS`, money in centavos, records under `resultado.pedidos`,
cursor-token paging, a modified-since window in unix seconds, and an API key header. Its warehouse
(a German 3PL) writes one row per phase change into `lager_ereignis` with naive Berlin times.
The world knows every order's true timeline; `truth()` derives the KPIs from it.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert

SHOP_ZONE = ZoneInfo("America/Sao_Paulo")
WMS_ZONE = ZoneInfo("Europe/Berlin")
SHOP_TIME = "%d.%m.%Y %H:%M:%S"
END = datetime(2026, 2, 12, 14, 0, tzinfo=UTC)
START = END - timedelta(hours=6)
SHOP_WORDS = {  # the shop's own status words (API) for the states it knows
    "created": "aguardando_pagamento",
    "paid": "pago",
    "cancelled": "cancelado",
    "shipped": "enviado",
    "delivered": "entregue",
}
WMS_PHASES = {"wms_received": "EINGANG", "picked": "KOMMISSIONIERT", "packed": "VERPACKT"}
RANK = ["created", "paid", "wms_received", "picked", "packed", "shipped", "delivered"]
WAREHOUSES = ("Lager-Kassel", "Lager-Erfurt")


@dataclass
class Order:
    ref: str
    cents: int
    state_code: str  # Brazilian state (UF) of the address
    warehouse: str
    events: dict[str, datetime] = field(default_factory=dict)

    def until(self, now: datetime) -> dict[str, datetime]:
        return {s: t for s, t in self.events.items() if t <= now}


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def make_ref(n: int, style: str) -> str:
    """The shop's order number; `style` 'v1' (KST/2026/00042-q) or 'v2' (kst-2026-00042)."""
    if style == "v1":
        return f"KST/2026/{n:05d}-{'abcdefghjkmnpqrstuvwxyz'[n % 23]}"
    return f"kst-2026-{n:05d}"


def generate(seed: int = 7, orders: int = 80, id_style: str = "v1") -> list[Order]:
    """Orders created over six hours: most flow to delivery; some stop (no WMS push), some cancel."""
    rnd = random.Random(seed)
    out = []
    for n in range(1, orders + 1):
        created = _second(START + timedelta(seconds=rnd.randrange(int((END - START).total_seconds()) - 600)))
        o = Order(make_ref(n, id_style), rnd.randrange(1990, 89900), rnd.choice("SP RJ MG PR".split()),
                  rnd.choice(WAREHOUSES))  # fmt: skip
        o.events["created"] = created
        roll = rnd.random()
        if roll < 0.08:  # never paid: cancelled by the shop after a while
            o.events["cancelled"] = created + timedelta(minutes=rnd.randrange(20, 60))
            out.append(o)
            continue
        paid = created + timedelta(seconds=rnd.randrange(30, 600))
        o.events["paid"] = paid
        if roll < 0.14:  # paid and cancelled at once (a misfiring rule: fast cancel)
            o.events["cancelled"] = paid + timedelta(seconds=rnd.randrange(5, 50))
        elif roll < 0.24:  # paid but never pushed to the warehouse
            pass
        else:
            t = paid + timedelta(minutes=rnd.randrange(1, 12))
            for state in ("wms_received", "picked", "packed", "shipped", "delivered"):
                o.events[state] = t
                t += timedelta(minutes=rnd.randrange(5, 50))
        out.append(o)
    return out


# -- the shop's order API ---------------------------------------------------------------------


def shop_record(o: Order, now: datetime, words: dict[str, str]) -> dict | None:
    ev = {s: t for s, t in o.until(now).items() if s in SHOP_WORDS}
    if not ev:
        return None
    current = "cancelled" if "cancelled" in ev else max(ev, key=RANK.index)

    def local(s: str) -> str | None:
        return ev[s].astimezone(SHOP_ZONE).strftime(SHOP_TIME) if s in ev else None

    return {
        "referencia": o.ref,
        "situacao": words[current],
        "alterado_em": local(current),
        "datas": {"criado": local("created"), "pago": local("paid"), "enviado": local("shipped")},
        "valor": {"centavos": o.cents, "moeda": "BRL"},
        "entrega": {"uf": o.state_code},
    }


class ShopApi:
    """The shop's API on a real local HTTP server (port 0): key header, cursor pages, time window."""

    def __init__(self, orders: list[Order], clock, api_key: str, words: dict[str, str] | None = None) -> None:
        self.orders, self.clock, self.api_key = orders, clock, api_key
        self.words = dict(words or SHOP_WORDS)
        self.requests: list[dict] = []
        self.extra: list[dict] = []  # records served as they are (malformed ones for check-source)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v3/loja/pedidos"

    def __enter__(self) -> ShopApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, query: dict[str, str], headers) -> tuple[int, dict]:
        self.requests.append(query)
        if path != "/v3/loja/pedidos":
            return 404, {"ok": False, "erro": "rota desconhecida"}
        if headers.get("X-Kestrel-Key") != self.api_key:
            return 401, {"ok": False, "erro": "chave inválida"}
        try:
            since = datetime.fromtimestamp(int(query["alterado_desde"]), UTC)
            until = datetime.fromtimestamp(int(query["alterado_ate"]), UTC)
            limit = int(query.get("limite", "50"))
            offset = int(base64.urlsafe_b64decode(query["apos"]).decode()) if "apos" in query else 0
        except (KeyError, ValueError):
            return 400, {"ok": False, "erro": "parâmetros inválidos"}
        now = self.clock.now()
        rows = []
        for o in self.orders:
            record = shop_record(o, now, self.words)
            if record is None:
                continue
            modified = datetime.strptime(record["alterado_em"], SHOP_TIME).replace(tzinfo=SHOP_ZONE)
            if since <= modified < until:
                rows.append(record)
        for record in self.extra:
            modified = datetime.strptime(record["alterado_em"], SHOP_TIME).replace(tzinfo=SHOP_ZONE)
            rows += [record] if since <= modified < until else []
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        token = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
        return 200, {"ok": True, "resultado": {"pedidos": page, "paginacao": {"proximo": token}}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, doc = api.answer(url.path, query, self.headers)
                body = json.dumps(doc, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler


# -- the warehouse's event table --------------------------------------------------------------

META = MetaData()
EVENTS = Table(
    "lager_ereignis",
    META,
    Column("lfd_nr", Integer, primary_key=True, autoincrement=True),
    Column("beleg_nr", String(40), nullable=False),
    Column("phase", String(20), nullable=False),
    Column("zeitpunkt", DateTime, nullable=False),  # naive, Europe/Berlin
    Column("lager", String(40), nullable=False),
)


class Warehouse:
    """The 3PL's database: a phase row is written when the phase happens (as the clock passes it)."""

    def __init__(self, url: str, orders: list[Order], phases: dict[str, str] | None = None) -> None:
        self.engine = create_engine(url)
        self.orders = orders
        self.phases = phases or WMS_PHASES
        self._written: set[tuple[str, str]] = set()
        META.create_all(self.engine)

    def sync(self, now: datetime) -> None:
        rows = []
        for o in self.orders:
            for state, at in o.until(now).items():
                if state in self.phases and (o.ref, state) not in self._written:
                    self._written.add((o.ref, state))
                    local = at.astimezone(WMS_ZONE).replace(tzinfo=None)
                    rows.append({"beleg_nr": o.ref, "phase": self.phases[state], "zeitpunkt": local,
                                 "lager": o.warehouse})  # fmt: skip
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(EVENTS), rows)

    def close(self) -> None:
        self.engine.dispose()


# -- the world's own truth --------------------------------------------------------------------

REACHED = ("wms_received", "picked", "packed")
ORDER = {"created": 0, "paid": 1, "wms_received": 3, "picked": 4, "packed": 5, "shipped": 6,
         "delivered": 8, "cancelled": 100}  # fmt: skip


def truth(orders: list[Order], now: datetime, *, window: timedelta, sla: timedelta, paid_timeout: timedelta,
          fast_cancel: timedelta) -> dict[tuple[str, tuple], float]:  # fmt: skip
    """KPIs by their definitions (PRODUCT.md / metrics/catalog.py), from the true timelines."""
    out: dict[tuple[str, tuple], float] = {}
    judged = reached = stuck = fast = paid_recent = 0
    states: dict[str, int] = {}
    for o in orders:
        ev = o.until(now)
        state = max(ev, key=ORDER.__getitem__)
        if state not in ("delivered", "cancelled"):
            states[state] = states.get(state, 0) + 1
            stuck += state == "paid" and ev["paid"] <= now - paid_timeout
        paid = ev.get("paid")
        got_there = any(s in ev for s in REACHED)
        if (
            paid is not None
            and now - window <= paid <= now - sla
            and not ("cancelled" in ev and not got_there)
        ):
            judged += 1
            reached += got_there
        if paid is not None and now - window <= paid <= now:
            paid_recent += 1
            fast += "cancelled" in ev and ev["cancelled"] - paid <= fast_cancel
    for state, n in states.items():
        out[("state_orders", (("state", state),))] = n
    out[("stuck_orders", (("state", "paid"),))] = stuck
    out[("sync_paid_orders", ())] = judged
    out[("sync_unreached_orders", ())] = judged - reached
    out[("sync_success_ratio", ())] = reached / judged
    out[("fast_cancel_orders", ())] = fast
    out[("fast_cancel_ratio", ())] = fast / paid_recent
    return out
