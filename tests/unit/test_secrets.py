"""Secrets stay out of argv, URLs, logs and world-readable files (issue 13, item 8)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import stat
from pathlib import Path

import httpx
import pytest

from cems.cli._common import add_influx_args, add_mqtt_args, influx_config, mqtt_settings
from cems.config import Env, private_dir, redact_url, split_url_credentials
from cems.devtools.local import LocalServices
from cems.service.outbox import StateDB
from cems.sinks.influx import InfluxConfig, InfluxWriter
from cems.sinks.spool import Spool
from gateways.hj212_bridge import bridge_mqtt_settings


def parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_mqtt_args(p, Env(env or {}))
    add_influx_args(p, Env(env or {}))
    return p.parse_args(argv)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_influx_v1_credentials_travel_in_the_authorization_header() -> None:
    url, params, headers = InfluxConfig(token="writer:s3cret").write_request()
    assert "u" not in params and "p" not in params and "s3cret" not in url
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"writer:s3cret").decode()
    assert "Authorization" not in InfluxConfig().write_request()[2]


def test_create_database_sends_no_password_in_the_url() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [{}]})

    async def run() -> None:
        w = InfluxWriter(InfluxConfig(url="http://influx:8086", token="writer:s3cret"))
        w._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        await w.ensure_database()
        await w.aclose()

    asyncio.run(run())
    assert "s3cret" not in str(seen[0].url)
    assert seen[0].headers["Authorization"].startswith("Basic ")


def test_a_password_in_the_mqtt_url_is_moved_out_of_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = mqtt_settings(parse(["--mqtt-url", "mqtt://ingester:s3cret@broker:1883", "--influx-url", "x"]))
    assert s.url == "mqtt://broker:1883" and s.credentials() == ("ingester", "s3cret")
    assert "holds a password" in caplog.text and "s3cret" not in caplog.text
    b = bridge_mqtt_settings("mqtts://bridge:p%40ss@broker:8883")
    assert b.url == "mqtts://broker:8883" and b.credentials() == ("bridge", "p@ss")
    assert split_url_credentials("mqtt://broker") == ("mqtt://broker", None, None)
    assert redact_url("mqtt://u:s3cret@h:1") == "mqtt://u:***@h:1"


def test_secrets_on_the_command_line_warn_files_and_variables_do_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        mqtt_settings(parse(["--mqtt-url", "mqtt://b", "--mqtt-password", "pw"]))
        influx_config(parse(["--influx-url", "http://i", "--influx-token", "u:p"]))
    assert "--mqtt-password on the command line" in caplog.text
    assert "--influx-token on the command line" in caplog.text
    caplog.clear()
    (tmp_path / "pw").write_text("from-file\n")
    (tmp_path / "tok").write_text("u:from-file\n")
    with caplog.at_level(logging.WARNING):
        a = parse(["--mqtt-url", "mqtt://b", "--mqtt-password-file", str(tmp_path / "pw"), "--influx-url", "http://i"])
        assert mqtt_settings(a).password == "from-file"
        a = parse(["--influx-url", "http://i"], {"CEMS_INFLUX_TOKEN_FILE": str(tmp_path / "tok")})
        assert influx_config(a).token == "u:from-file"
        a = parse(["--mqtt-url", "mqtt://b", "--influx-url", "http://i"], {"CEMS_MQTT_PASSWORD": "env"})
        assert mqtt_settings(a).password == "env"
    assert caplog.text == ""


def test_state_spool_and_sqlite_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state" / "spool")
    assert mode(spool.dir) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert mode(private_dir(loose)) == 0o700  # an existing directory is tightened too

    async def open_db() -> Path:
        db = StateDB(tmp_path / "ingester" / "compliance.sqlite3")
        await db.open()
        await db.close()
        return db.path

    path = asyncio.run(open_db())
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    services = LocalServices(tmp_path / "services")
    services._save({})
    assert mode(tmp_path / "services") == 0o700
