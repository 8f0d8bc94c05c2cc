"""Role checks on the server: every dashboard action refuses a user below its role, an unknown role
and nobody logged in, whatever the page showed; a refused action changes nothing and audits nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from alerts.silences import list_silences
from sentinel import actions, audit
from sentinel.auth import AccessDenied, User
from sentinel.config import DEFAULT_PATH, load_config
from store.db import init_schema, make_engine
from store.schema import alert_acks, audit_log

NOW = datetime(2026, 2, 12, 10, 0, tzinfo=UTC)
ROLES = ("viewer", "operator", "admin")


@pytest.fixture
def setup(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    init_schema(engine)
    config = load_config(DEFAULT_PATH, overrides={"service.store_url": url})
    made = actions.silence(engine, User("ops", "operator"), {"channel": "jd"}, 1, "upgrade", NOW)
    yield engine, config, made.id
    engine.dispose()


ACTIONS = {  # action -> (the least role, the call)
    "silence": (
        "operator",
        lambda engine, config, sid, user: actions.silence(engine, user, {"alertname": "x"}, 2, "why", NOW),
    ),
    "expire": ("operator", lambda engine, config, sid, user: actions.expire(engine, user, sid, NOW)),
    "ack": (
        "operator",
        lambda engine, config, sid, user: actions.acknowledge(engine, config, user, "fp1", "seen", NOW),
    ),
    "diagnose": (
        "viewer",
        lambda engine, config, sid, user: actions.diagnose(engine, config, user, NOW, live=False),
    ),
    "reconcile": ("viewer", lambda engine, config, sid, user: actions.reconcile(engine, config, user, NOW)),
}
REFUSED = [
    (name, user)
    for name, (least, _) in ACTIONS.items()
    for user in [None, User("guest", "guest"), *(User(r, r) for r in ROLES[: ROLES.index(least)])]
]


@pytest.mark.parametrize(
    ("name", "user"), REFUSED, ids=[f"{n}-{u.role if u else 'anonymous'}" for n, u in REFUSED]
)
def test_an_action_below_its_role_is_refused_and_changes_nothing(setup, name, user):
    engine, config, sid = setup
    with engine.connect() as conn:
        entries = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    with pytest.raises(AccessDenied):
        ACTIONS[name][1](engine, config, sid, user)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == entries
        assert conn.execute(select(func.count()).select_from(alert_acks)).scalar_one() == 0
    (silence,) = list_silences(engine, NOW, include_expired=True)
    assert silence.id == sid and silence.expired_by is None  # not ended, and no other made


@pytest.mark.parametrize("name", ["silence", "expire", "diagnose", "reconcile"])
def test_an_action_at_its_role_runs_and_is_audited(setup, name):
    engine, config, sid = setup
    least = ACTIONS[name][0]
    ACTIONS[name][1](engine, config, sid, User("li", least))
    entry = audit.recent(engine)[0]
    assert (entry["user"], entry["role"], entry["action"]) == ("li", least, name)
