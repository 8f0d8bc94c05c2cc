"""Fixtures of the metrics tests: an empty store (Tmall and JD) on each database."""

from __future__ import annotations

import pytest

from store.db import init_schema, make_engine
from store.store import ChannelIdentity, Store


@pytest.fixture
def store(store_url):
    engine = make_engine(store_url)
    init_schema(engine)
    yield Store(engine, {"tmall": ChannelIdentity("TB"), "jd": ChannelIdentity("JD")}, "Asia/Shanghai")
    engine.dispose()
