"""Config: strict models, every problem at once with its dotted location, secrets from env."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "channels": {"tmall": {"code": "TB", "name": "天猫"}},
    "sources": {
        "tmall": {
            "kind": "http",
            "preset": "tmall",
            "channel": "tmall",
            "url": "http://127.0.0.1:1/router/rest",
            "credentials": {"app_secret": "${TMALL_APP_SECRET}"},
            "mapping": {
                "order_id": "tid_str",
                "status": "status",
                "status_time": "modified",
                "status_map": {"WAIT_BUYER_PAY": "created"},
            },
        }
    },
    "alerts": {
        "routes": {"ops": {"kind": "wecom", "url": "http://127.0.0.1:1/send", "key": "${ROBOT_KEY:-k}"}},
        "rules": [
            {
                "name": "sync",
                "kpi": "sync_success_ratio",
                "op": "<",
                "threshold": 0.9995,
                "for": "5m",
                "route": "ops",
            }
        ],
    },
}


def broken(**changes):
    import copy

    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return raw


def problems(raw, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env={"TMALL_APP_SECRET": "s3cret"} if env is None else env)
    return info.value.problems


def test_valid_config_with_secret_from_environment():
    cfg = parse_config(BASE, env={"TMALL_APP_SECRET": "s3cret"})
    secret = cfg.sources["tmall"].credentials["app_secret"]
    assert secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.alerts.rules[0].for_.total_seconds() == 300
    assert cfg.alerts.routes["ops"].key.get_secret_value() == "k"


def test_missing_mapping_field_is_named_by_its_dotted_key():
    assert "sources.tmall.mapping.order_id: field required" in problems(
        broken(sources__tmall__mapping__order_id=None)
    )


def test_every_problem_is_reported_at_once():
    raw = broken(
        sources__tmall__mapping__order_id=None,
        sources__tmall__pool_interval="1m",
        alerts__rules__0__kpi="no_such_kpi",
    )
    found = problems(raw)
    assert "sources.tmall.mapping.order_id: field required" in found
    assert "sources.tmall.pool_interval: unknown key" in found
    raw = broken(alerts__rules__0__kpi="no_such_kpi", alerts__rules__0__route="nowhere")
    found = problems(raw)
    assert any(p.startswith("alerts.rules[0].kpi: unknown KPI 'no_such_kpi'") for p in found)
    assert "alerts.rules[0].route: unknown route 'nowhere'" in found


def test_field_errors_and_cross_section_errors_come_together():
    raw = broken(sources__tmall__poll_interval="soon", alerts__rules__0__route="nowhere")
    found = problems(raw)
    assert any(p.startswith("sources.tmall.poll_interval:") for p in found)
    assert "alerts.rules[0].route: unknown route 'nowhere'" in found
    # An invalid route is reported once, as itself; rules naming it are not called "unknown".
    found = problems(broken(alerts__routes__ops__kind="pager"))
    assert any(p.startswith("alerts.routes.ops.kind:") for p in found)
    assert not any("unknown route" in p for p in found)


def test_unknown_state_in_status_map_and_bad_duration():
    found = problems(
        broken(sources__tmall__mapping__status_map={"X": "teleported"}, sources__tmall__poll_interval="soon")
    )
    assert any(p.startswith("sources.tmall.mapping.status_map:") and "teleported" in p for p in found)
    assert any(p.startswith("sources.tmall.poll_interval:") and "duration" in p for p in found)


def test_missing_environment_variable_names_the_key():
    assert (
        "sources.tmall.credentials.app_secret: environment variable TMALL_APP_SECRET is not set"
        in problems(BASE, env={})
    )


def test_project_config_is_valid():
    load_config(ROOT / "config.toml", env={})


@pytest.mark.parametrize(("text", "code"), [("", 0), ("[sources.x]\nkind = 'ftp'\n", 1)])
def test_check_config_exit_codes(tmp_path, text, code):
    path = tmp_path / "c.toml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "sentinel", "check-config", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    if code:
        assert "sources.x.kind" in done.stderr


def test_kpi_windows_short_from_minutes_long_in_whole_hours():
    raw = broken(kpi={"windows": ["5m", "1h", "7d"]})
    assert parse_config(raw, env={"TMALL_APP_SECRET": "s3cret"}).kpi.window_widths["7d"].days == 7
    # 23 h 55 min: past the minute cells' reach (24 h less the 15 min SLA), short of hour cells
    assert any("'1435m' must be at most" in p for p in problems(broken(kpi={"windows": ["1435m"]})))
    assert any("whole hours" in p for p in problems(broken(kpi={"windows": ["1441m"]})))
    assert any("kpi.windows" in p for p in problems(broken(kpi={"windows": ["soon"]})))


def test_unknown_time_zone_is_a_problem_with_its_key():
    assert problems(broken(service={"timezone": "0"})) == [
        "service.timezone: Value error, unknown time zone '0'"
    ]
