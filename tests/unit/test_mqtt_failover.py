"""A list of brokers to fail over between (issue 20): ``--mqtt-url`` / ``CEMS_MQTT_URL`` parsing into
:class:`MqttSettings` and the client's rotation over the list, against fake brokers on loopback (the real
3-node NATS cluster is in tests/integration/test_nats_cluster_live.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket

import pytest
from test_mqtt_client import FakeBroker  # same directory (pytest prepend import mode)

from cems.cli._common import add_command_client_args, add_mqtt_args, command_client, mqtt_settings
from cems.config import Env, url_list
from cems.errors import ConfigError
from cems.service.mqtt import MqttConnection, MqttSettings


def _parse(argv: list[str], env: dict[str, str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_mqtt_args(p, Env(env or {}))
    return p.parse_args(argv)


def test_url_list_splits_on_commas_drops_blanks_and_repeats_in_order() -> None:
    assert url_list(" mqtt://a:1883, ,mqtt://b:1883,mqtt://a:1883 ,mqtt://c") == (
        "mqtt://a:1883",
        "mqtt://b:1883",
        "mqtt://c",
    )
    assert url_list("") == () and url_list(None) == ()


def test_one_url_gives_no_failover() -> None:
    s = mqtt_settings(_parse(["--mqtt-url", "mqtt://broker:1883"]))
    assert s.url == "mqtt://broker:1883" and s.failover_urls == ()
    assert s.endpoints == [("broker", 1883, False)]


def test_a_comma_list_and_the_repeated_option_give_the_same_brokers_in_order() -> None:
    listed = mqtt_settings(_parse(["--mqtt-url", "mqtt://a:1883,mqtt://b:1884,mqtts://c"]))
    repeated = mqtt_settings(_parse(["--mqtt-url", "mqtt://a:1883", "--mqtt-url", "mqtt://b:1884,mqtts://c"]))
    for s in (listed, repeated):
        assert s.urls == ("mqtt://a:1883", "mqtt://b:1884", "mqtts://c")
        assert s.endpoints == [("a", 1883, False), ("b", 1884, False), ("c", 8883, True)]


def test_the_environment_variable_takes_a_list_and_the_option_replaces_it() -> None:
    env = {"CEMS_MQTT_URL": "mqtt://n1:1883,mqtt://n2:1883"}
    assert mqtt_settings(_parse([], env)).urls == ("mqtt://n1:1883", "mqtt://n2:1883")
    assert mqtt_settings(_parse(["--mqtt-url", "mqtt://x:1"], env)).urls == ("mqtt://x:1",)


def test_credentials_are_taken_out_of_every_url_of_the_list(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cems.cli"):
        s = mqtt_settings(_parse(["--mqtt-url", "mqtt://u:pw@a:1883,mqtt://u:pw@b:1883"]))
    assert s.urls == ("mqtt://a:1883", "mqtt://b:1883")
    assert s.credentials() == ("u", "pw")
    assert "holds a password" in caplog.text and "pw" not in " ".join(s.urls)


@pytest.mark.parametrize("bad", ["mqtt://a:1883,http://b:80", "mqtt://a:1883,mqtt://b:99999", " , "])
def test_a_bad_url_in_the_list_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        mqtt_settings(_parse(["--mqtt-url", bad]))


def test_the_command_client_options_take_a_list_too() -> None:
    p = argparse.ArgumentParser()
    add_command_client_args(p, Env({}))
    _, s = command_client(p.parse_args(["--mqtt-url", "mqtt://a:1,mqtt://b:2"]), Env({}))
    assert s.urls == ("mqtt://a:1", "mqtt://b:2")


def _dead_url() -> str:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"mqtt://127.0.0.1:{s.getsockname()[1]}"


def _client(urls: list[str]) -> MqttConnection:
    conn = MqttConnection(MqttSettings(url=urls[0], failover_urls=tuple(urls[1:]), client_id="cems-ingester-f"), [])
    conn.min_delay_s, conn.max_delay_s = 0.05, 1.0
    return conn


async def _until(cond: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_an_unreachable_broker_is_skipped_for_the_next_one_of_the_list() -> None:
    async def run() -> None:
        async with FakeBroker(lambda n: "ok") as broker:
            conn = _client([_dead_url(), _dead_url(), broker.url])
            await conn.start(wait_s=3.0)
            assert conn.connected and len(broker.accepted) == 1
            assert conn.broker == broker.url.removeprefix("mqtt://")
            await conn.stop()

    asyncio.run(run())


def test_a_dropped_connection_goes_on_at_the_next_broker_round_robin() -> None:
    async def run() -> None:
        async with FakeBroker(lambda n: "ok") as a, FakeBroker(lambda n: "ok") as b:
            conn = _client([a.url, b.url])
            await conn.start(wait_s=3.0)
            assert (len(a.accepted), len(b.accepted)) == (1, 0)
            # node a fails: its connections drop and it accepts no new ones
            assert a.server is not None
            a.server.close()
            for w in a._writers:
                w.close()
            await _until(lambda: len(b.accepted) == 1 and conn.connected)
            assert len(a.accepted) == 1 and conn.disconnects == 1
            # the drop of a (well-established) connection is not a takeover: the next node is tried at once
            assert b.accepted[0] - a.accepted[0] < 1.0
            await conn.stop()

    asyncio.run(run())


def test_every_broker_unreachable_backs_off_per_round_then_connects_when_one_is_back() -> None:
    async def run() -> None:
        dead = [_dead_url(), _dead_url()]
        conn = _client(dead)
        task = asyncio.create_task(conn.start(wait_s=10.0))
        await asyncio.sleep(1.0)  # rounds of 2 refusals; back-off 0.05, 0.1, 0.2, 0.4 s after each round
        assert 2 <= conn._failed_in_row <= 12 and not conn.connected  # every broker tried, no busy loop
        async with FakeBroker(lambda n: "ok") as broker:
            # the broker comes back on the second address of the list
            conn._endpoints[1] = ("127.0.0.1", int(broker.url.rsplit(":", 1)[1]), False)
            await task
            assert conn.connected and len(broker.accepted) == 1
            await conn.stop()

    asyncio.run(run())
