"""Fixtures of the diagnosis tests: the shipped config and an empty store with its source roles."""

from __future__ import annotations

import pytest

from sentinel.config import DEFAULT_PATH, load_config
from store.db import init_schema, make_engine
from store.store import ChannelIdentity, Store


@pytest.fixture
def config():
    return load_config(DEFAULT_PATH)


@pytest.fixture
def store(store_url, config):
    engine = make_engine(store_url)
    init_schema(engine)
    identities = {n: ChannelIdentity(c.code, c.id_pattern) for n, c in config.channels.items()}
    roles = {name: s.effective_role for name, s in config.sources.items()}
    yield Store(engine, identities, config.service.timezone, roles)
    engine.dispose()
