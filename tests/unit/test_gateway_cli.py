"""``cems-gateway``: the entry point reads argv and the environment; the bridge takes what it is given."""

from __future__ import annotations

import pytest
from registries import one_outlet  # tests/registries.py

from cems.config import Env
from cems.errors import ConfigError
from cems.registry import parse_registry
from gateways.cli import build_parser, main
from gateways.hj212_bridge import HJ212Bridge, bridge_mqtt_settings


def test_help_of_each_command_ends_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["simulate", "--help"], ["hj212-bridge", "--help"]):
        with pytest.raises(SystemExit) as exc:
            build_parser(Env({"CEMS_CONFIG": "registry.toml"})).parse_args(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "example: cems-gateway " in out.splitlines()[-1]


def test_option_defaults_come_from_the_given_environment() -> None:
    env = Env({"CEMS_CONFIG": "/etc/r.toml", "CEMS_MQTT_URL": "mqtts://b:8883", "CEMS_BRIDGE_LISTEN": "[::]:9000"})
    a = build_parser(env).parse_args(["hj212-bridge"])
    assert (a.config, a.mqtt_url, a.listen) == ("/etc/r.toml", "mqtts://b:8883", "[::]:9000")
    s = build_parser(env).parse_args(["simulate"])
    assert (s.config, s.mqtt_url) == ("/etc/r.toml", "mqtts://b:8883")
    with pytest.raises(SystemExit):
        build_parser(Env({})).parse_args(["simulate"])  # --config is required without CEMS_CONFIG


def test_errors_are_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hj212-bridge", "--config", "x.toml", "--listen", "nowhere"]) == 2
    assert "cems-gateway: error: --listen 'nowhere' must be HOST:PORT" in capsys.readouterr().err


def test_bridge_settings_carry_credentials_and_a_unique_client_id() -> None:
    a = bridge_mqtt_settings("mqtt://b:1883", username="cems-bridge", password="pw", ca_file="")
    b = bridge_mqtt_settings("mqtt://b:1883")
    assert a.credentials() == ("cems-bridge", "pw") and a.ca_file is None and a.clean_session
    assert a.client_id.startswith("cems-hj212-bridge-") and a.client_id != b.client_id
    assert bridge_mqtt_settings("mqtt://b", client_id="fixed").client_id == "fixed"


def test_bridge_resolves_password_env_in_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = parse_registry(one_outlet().replace('password = "123456"', 'password_env = "PW_MN0001"'))
    monkeypatch.setenv("PW_MN0001", "from-process-environment")
    given = HJ212Bridge(registry, "mqtt://127.0.0.1:1", environ={"PW_MN0001": "s3cret"})
    assert given._password("MN0001") == (True, "s3cret")
    assert given._password("NOPE") == (False, None)
    # without a mapping the bridge reads no environment: the variable is missing and it refuses to start
    with pytest.raises(ConfigError, match="PW_MN0001"):
        HJ212Bridge(registry, "mqtt://127.0.0.1:1")
