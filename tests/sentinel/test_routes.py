"""Route kinds in config: each kind's fields, secrets from ${ENV}, dotted errors, one notifier class each."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from alerts.notifiers.dingtalk import DingTalkNotifier
from alerts.notifiers.email import EmailNotifier
from alerts.notifiers.feishu import FeishuNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.notifiers.wecom import WeComNotifier
from sentinel.config import ConfigError, parse_config
from sentinel.service import build_notifiers
from sim.robots.base import RobotSpec
from sim.robots.dingtalk import DingTalkReceiver
from sim.robots.feishu import FeishuReceiver
from sim.robots.smtp import SmtpReceiver
from sim.robots.webhook import WebhookReceiver
from sim.wecom import WeComReceiver

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "WECOM_KEY": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
    "DING_TOKEN": "ding-token-0123456789abcdef",
    "DING_SECRET": "SEC0123456789abcdef0123456789abcdef",
    "FS_TOKEN": "fs-token-0123456789",
    "FS_SECRET": "fs-secret-abcdef",
    "SMTP_PASSWORD": "abcdefghijklmnop",
    "HOOK_TOKEN": "hook-token-xyz-123",
    "HOOK_SECRET": "hook-secret-xyz-456",
}
ROUTES = {
    "wecom": {"kind": "wecom", "url": "http://127.0.0.1:1/cgi-bin/webhook/send", "key": "${WECOM_KEY}"},
    "ding": {
        "kind": "dingtalk",
        "url": "http://127.0.0.1:1/robot/send",
        "access_token": "${DING_TOKEN}",
        "secret": "${DING_SECRET}",
        "mentions": ["13800000000"],
    },
    "fs": {
        "kind": "feishu",
        "url": "http://127.0.0.1:1/open-apis/bot/v2/hook",
        "token": "${FS_TOKEN}",
        "secret": "${FS_SECRET:-}",
        "timeout": "5s",
    },
    "mail": {
        "kind": "email",
        "host": "127.0.0.1",
        "port": 1,
        "tls": "none",
        "username": "alerts@example.com",
        "password": "${SMTP_PASSWORD}",
        "sender": "alerts@example.com",
        "to": ["ops@example.com"],
    },
    "hook": {
        "kind": "webhook",
        "url": "http://127.0.0.1:1/alerts",
        "bearer_token": "${HOOK_TOKEN}",
        "hmac_secret": "${HOOK_SECRET}",
    },
}


def config(routes=None, env=None):
    routes = ROUTES if routes is None else routes
    rules = [
        {"name": f"r_{n}", "kpi": "sync_success_ratio", "op": "<", "threshold": 0.99, "route": n}
        for n in routes
    ]
    return parse_config({"alerts": {"routes": routes, "rules": rules}}, env=ENV if env is None else env)


def problems(routes, env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(routes, env)
    return info.value.problems


def test_every_kind_parses_with_secrets_from_the_environment():
    cfg = config()
    routes = cfg.alerts.routes
    assert [r.kind for r in routes.values()] == ["wecom", "dingtalk", "feishu", "email", "webhook"]
    assert routes["ding"].secret.get_secret_value() == ENV["DING_SECRET"]
    assert routes["fs"].secret.get_secret_value() == ENV["FS_SECRET"]
    unset = {k: v for k, v in ENV.items() if k != "FS_SECRET"}
    assert config(env=unset).alerts.routes["fs"].secret is None  # ${FS_SECRET:-} empty = unsigned bot
    assert routes["fs"].timeout.total_seconds() == 5
    assert routes["mail"].password.get_secret_value() == ENV["SMTP_PASSWORD"]
    assert routes["mail"].mentions == () and routes["hook"].mentions == ()
    for secret in ENV.values():
        assert secret not in repr(cfg)


@pytest.mark.parametrize(
    ("name", "changes", "expected"),
    [
        (
            "x",
            {"kind": "slack"},
            "alerts.routes.x.kind: must be one of wecom, dingtalk, feishu, email, webhook",
        ),
        ("ding", {"access_token": None}, "alerts.routes.ding.access_token: field required"),
        ("ding", {"key": "k"}, "alerts.routes.ding.key: unknown key"),
        (
            "ding",
            {"secret": "nosec"},
            "alerts.routes.ding.secret: Value error, a DingTalk signing secret starts with SEC",
        ),
        (
            "ding",
            {"url": "https://oapi.dingtalk.com/robot/send?access_token=x"},
            "alerts.routes.ding.url: Value error, put the token",
        ),
        ("fs", {"token": None}, "alerts.routes.fs.token: field required"),
        ("mail", {"to": []}, "alerts.routes.mail.to: "),
        ("mail", {"to": ["ops"]}, "alerts.routes.mail.to[0]: Value error, 'ops' is not an e-mail address"),
        ("mail", {"tls": "tls13"}, "alerts.routes.mail.tls: "),
        ("mail", {"mentions": ["x"]}, "alerts.routes.mail.mentions: unknown key"),
        (
            "mail",
            {"host": "smtp.example.com"},
            "alerts.routes.mail.tls: 'none' would send the password in clear",
        ),
        ("mail", {"username": None}, "alerts.routes.mail.username: field required when a password is set"),
        (
            "hook",
            {"url": "ftp://x"},
            "alerts.routes.hook.url: Value error, must start with http:// or https://",
        ),
    ],
)
def test_problems_name_the_dotted_key(name, changes, expected):
    route = dict(ROUTES.get(name, {}))
    for key, value in changes.items():
        if value is None:
            route.pop(key)
        else:
            route[key] = value
    found = problems({**ROUTES, name: route})
    assert any(p.startswith(expected) for p in found), found


def test_missing_environment_variable_names_the_route_key():
    env = {k: v for k, v in ENV.items() if k != "DING_SECRET"}
    assert "alerts.routes.ding.secret: environment variable DING_SECRET is not set" in problems(ROUTES, env)


def test_an_invalid_route_does_not_hide_other_problems():
    found = problems({**ROUTES, "ding": {"kind": "dingtalk"}, "fs": {**ROUTES["fs"], "colour": "red"}})
    assert "alerts.routes.ding.access_token: field required" in found
    assert "alerts.routes.fs.colour: unknown key" in found


def test_the_commented_route_examples_in_config_toml_are_valid():
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    block = text[text.index("# Other route kinds") :].split("\n\n", 1)[0]
    example = "\n".join(re.sub(r"^# ?", "", line) for line in block.splitlines()[1:])
    routes = tomllib.loads(example)["alerts"]["routes"]
    assert set(routes) == {"dingtalk", "feishu", "email", "webhook"}
    env = {"DINGTALK_ACCESS_TOKEN": "t", "FEISHU_BOT_TOKEN": "t", "SMTP_PASSWORD": "p"}
    cfg = config(routes, env)
    assert {name: r.kind for name, r in cfg.alerts.routes.items()} == {n: n for n in routes}


def test_build_notifiers_makes_one_class_per_kind(clock):
    notifiers = build_notifiers(config(), clock)
    assert {name: type(n) for name, n in notifiers.items()} == {
        "wecom": WeComNotifier,
        "ding": DingTalkNotifier,
        "fs": FeishuNotifier,
        "mail": EmailNotifier,
        "hook": WebhookNotifier,
    }
    assert notifiers["fs"].timeout == 5 and notifiers["hook"].receiver == "hook"
    for secret in ENV.values():
        assert secret not in repr(notifiers)


def test_configured_routes_deliver_to_their_local_servers(clock):
    """The whole path config -> build_notifiers -> real local servers, one alert per kind."""
    with (
        WeComReceiver(clock, [ENV["WECOM_KEY"]]) as wecom,
        DingTalkReceiver(clock, [RobotSpec(ENV["DING_TOKEN"], ENV["DING_SECRET"])]) as ding,
        FeishuReceiver(clock, [RobotSpec(ENV["FS_TOKEN"], ENV["FS_SECRET"])]) as fs,
        SmtpReceiver(clock, {"alerts@example.com": ENV["SMTP_PASSWORD"]}) as smtp,
        WebhookReceiver(clock, bearer_token=ENV["HOOK_TOKEN"], hmac_secret=ENV["HOOK_SECRET"]) as hook,
    ):
        routes = {
            "wecom": {**ROUTES["wecom"], "url": wecom.url},
            "ding": {**ROUTES["ding"], "url": ding.url},
            "fs": {**ROUTES["fs"], "url": fs.url},
            "mail": {**ROUTES["mail"], "port": smtp.port},
            "hook": {**ROUTES["hook"], "url": hook.url},
        }
        notifiers = build_notifiers(config(routes), clock)
        body = "### 履约告警 P1\n> 滞留订单 **12** 单"
        results = {name: n.send(body) for name, n in notifiers.items()}
        assert all(r[0].ok for r in results.values()), results
        counts = [len(wecom.contents()), len(ding.texts()), len(fs.messages()), len(smtp.received)]
        assert counts + [len(hook.messages())] == [1] * 5
        assert ding.received[0]["body"]["at"]["atMobiles"] == ["13800000000"]
        assert fs.received[0]["body"]["sign"]  # the secret came through ${FS_SECRET:-}
