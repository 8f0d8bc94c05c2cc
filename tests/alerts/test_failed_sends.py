"""Failed and waiting sends stay visible: outbox counts per route and status on /metrics."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import update
from test_engine import KEY, db, make_config, robot, sync_snapshot  # noqa: F401 (fixtures)

from alerts.notifiers.wecom import WeComNotifier
from sentinel.service import Service
from store.schema import outbox


def _service(db, clock, robot, key):  # noqa: F811
    config = make_config(robot.url, **{"for": "0s"})
    notifiers = {"ops": WeComNotifier(robot.url, SecretStr(key), clock)}
    return Service(config, clock, engine=db, collectors={}, notifiers=notifiers)


def _gauge(service: Service, status: str) -> str:
    prefix = f'fulfillment_alert_notifications{{route="ops",status="{status}"}} '
    [line] = [x for x in service.exporter.render().decode().splitlines() if x.startswith(prefix)]
    return line.removeprefix(prefix)


def test_a_rejected_send_shows_as_failed_on_the_metrics(db, clock, robot):  # noqa: F811
    service = _service(db, clock, robot, key="wrong-" + KEY)
    service.snapshot = sync_snapshot(clock, 0.5)
    service.evaluate_alerts()
    assert _gauge(service, "failed") == "1.0"
    assert _gauge(service, "pending") == "0.0" and _gauge(service, "unconfirmed") == "0.0"
    assert KEY not in service.exporter.render().decode()


def test_retrying_and_unconfirmed_sends_are_counted(db, clock, robot):  # noqa: F811
    down = make_config(robot.url, **{"for": "0s"})
    service = Service(
        down,
        clock,
        engine=db,
        collectors={},
        notifiers={"ops": WeComNotifier("http://127.0.0.1:9/x", SecretStr(KEY), clock, timeout=1)},
    )
    service.snapshot = sync_snapshot(clock, 0.5)
    service.evaluate_alerts()  # connection refused: retried later
    assert _gauge(service, "pending") == "1.0"
    with db.begin() as conn:  # what a kill during the post leaves behind
        conn.execute(update(outbox).values(status="sending"))
    restarted = _service(db, clock, robot, key=KEY)
    restarted.snapshot = service.snapshot
    restarted.evaluate_alerts()  # recovery counts the in-flight part as sent, unconfirmed
    assert _gauge(restarted, "unconfirmed") == "1.0" and _gauge(restarted, "pending") == "0.0"
    assert robot.messages() == []  # never posted twice
