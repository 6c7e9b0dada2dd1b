"""Broker security on a real Mosquitto: per-gateway credentials (username = MN), the cems ACL, TLS.

A private ``LocalServices`` runs the secured broker (``mosquitto-secure``) with the files written by
``cems.security.write_broker_config`` (the ``cems broker-config`` command) and a CA made by
``generate_test_ca``.  Mosquitto 2.0 drops an unauthorised PUBLISH silently (a QoS 1 publish is still
PUBACKed under MQTT 3.1.1), so non-delivery is asserted with a privileged subscriber: the forbidden
publish is sent FIRST and an allowed marker after it on the same connection; the broker handles one
connection's packets in order, so once the marker arrived (plus a short grace period) a delivered
forbidden message would already be there.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cems.devtools.local import MOSQUITTO, MOSQUITTO_SECURE, LocalServices, ServiceInfo, missing_binaries
from cems.security import BrokerConfigOptions, generate_test_ca, write_broker_config
from cems.service.mqtt import MqttSettings
from gateways._paho import make_client

pytestmark = pytest.mark.integration

MN1, MN2, SENSOR = "13060200001001", "13060200001002", "GRID0001"
SECRETS = {
    MN1: "pw-gateway-1",
    MN2: "pw-gateway-2",
    SENSOR: "pw-grid-1",
    "cems-ingester": "pw-ingester",
    "cems-bridge": "pw-bridge",
    "cems-monitor": "pw-monitor",
}
REGISTRY = f"""
[city]
name = "test city"

[[district]]
code = "130602"
name = "D"

[[enterprise]]
id = "E001"
name = "plant"
district = "130602"

[[enterprise.outlet]]
mn = "{MN1}"
name = "1#"
profile = "coal_power_ultra_low"

[[enterprise.outlet]]
mn = "{MN2}"
name = "2#"
profile = "coal_power_ultra_low"

[[grid_sensor]]
id = "{SENSOR}"
district = "130602"
"""
GRACE_S = 0.5
"""How long a subscriber waits, after an allowed marker arrived, for a forbidden message to show up."""


def _require_tools() -> None:
    missing = missing_binaries([MOSQUITTO])
    if missing:
        msg = "; ".join(missing.values())
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@dataclass
class SecureBroker:
    services: LocalServices
    info: ServiceInfo
    out_dir: Path
    ca: Path

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def tls_port(self) -> int:
        return self.info.extra_ports["tls"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    _require_tools()
    root = tmp_path_factory.mktemp("security")
    registry = root / "registry.toml"
    registry.write_text(REGISTRY, encoding="utf-8")
    secrets = root / "secrets.env"
    secrets.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()), encoding="utf-8")
    secrets.chmod(0o600)
    out = root / "broker"
    options = BrokerConfigOptions(
        config=str(registry), out_dir=str(out), secrets=str(secrets), monitor_user="cems-monitor"
    )
    assert write_broker_config(options).startswith("wrote ")
    ca, cert, key = generate_test_ca(root / "tls")
    services = LocalServices(root / "services")
    try:
        info = services.start_mosquitto_secure(passwd_file=out / "passwd", acl_file=out / "acl", tls=(ca, cert, key))
        yield SecureBroker(services, info, out, ca)
    finally:
        services.down()


# ---- paho-mqtt 2.x helpers


class Client:
    """A paho client that records what it receives; ``connect()`` returns the CONNACK reason code."""

    def __init__(
        self,
        port: int,
        user: str | None = None,
        password: str | None = None,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:10]}", protocol=mqtt.MQTTv311
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        if tls is not None:
            self.c.tls_set_context(tls)
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.connack = threading.Event()
        self.reason: Any = None
        self.granted: list[Any] = []
        self.subacked = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.connack.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        self.granted = list(reasons)
        self.subacked.set()

    def connect(self) -> Any:
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        assert self.connack.wait(10), "no CONNACK"
        return self.reason

    def login(self) -> Client:
        reason = self.connect()
        assert not reason.is_failure, reason
        return self

    def subscribe(self, *topics: str) -> list[Any]:
        self.subacked.clear()
        self.c.subscribe([(t, 1) for t in topics])
        assert self.subacked.wait(10), "no SUBACK"
        return self.granted

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(10)  # PUBACK: also for a publish the ACL drops
        assert info.is_published()

    def wait_for(self, payload: bytes, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: any(p == payload for _, p in self.messages), timeout), (
                f"{payload!r} not delivered; got {self.messages}"
            )
        time.sleep(GRACE_S)

    def payloads(self) -> list[bytes]:
        with self.cond:
            return [p for _, p in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def login(made: list[Client], port: int, user: str, **kw: Any) -> Client:
    c = Client(port, user, SECRETS[user], **kw)
    made.append(c)
    return c.login()


def ingester_subscriber(made: list[Client], port: int) -> Client:
    sub = login(made, port, "cems-ingester")
    granted = sub.subscribe("cems/v1/+/+", "grid/v1/+")
    assert all(not g.is_failure for g in granted), granted
    return sub


def tls_context(ca: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca) if ca else None)


# ---- authentication


def test_anonymous_client_cannot_connect(broker: SecureBroker) -> None:
    c = Client(broker.port)
    try:
        reason = c.connect()
        assert reason.is_failure and reason == "Not authorized", reason
    finally:
        c.close()


def test_anonymous_client_cannot_connect_over_tls(broker: SecureBroker) -> None:
    c = Client(broker.tls_port, tls=tls_context(broker.ca))
    try:
        reason = c.connect()
        assert reason.is_failure and reason == "Not authorized", reason
    finally:
        c.close()


@pytest.mark.parametrize(
    ("user", "password"),
    [(MN1, SECRETS[MN2]), (MN1, ""), ("13069999999999", "anything"), ("cems-ingester", "guess")],
    ids=["other-gateways-password", "empty-password", "unknown-mn", "wrong-ingester-password"],
)
def test_wrong_credentials_are_refused(broker: SecureBroker, user: str, password: str) -> None:
    c = Client(broker.port, user, password)
    try:
        reason = c.connect()
        assert reason.is_failure and reason in ("Not authorized", "Bad user name or password"), reason
    finally:
        c.close()


# ---- the ACL


def test_gateway_publishes_only_under_its_own_mn(broker: SecureBroker, clients: list[Client]) -> None:
    sub = ingester_subscriber(clients, broker.port)
    gw = login(clients, broker.port, MN1)
    gw.publish(f"cems/v1/{MN2}/rtd", b"spoofed-as-MN2")  # another MN: dropped
    gw.publish(f"cems/v1/{MN1}/rtd/extra", b"too-deep")  # not a {mn}/{stream} topic: dropped
    gw.publish(f"grid/v1/{MN1}", b"gateway-as-grid")  # grid/v1/MN1 is allowed by the pattern but...
    gw.publish(f"cems/v1/{MN1}/rtd", b"own-mn")
    sub.wait_for(b"own-mn")
    got = sub.payloads()
    assert b"spoofed-as-MN2" not in got and b"too-deep" not in got
    # ...an MN is never a grid sensor id (checked by broker_users), so the ingester rejects it as unknown.
    assert sub.messages[-1] == (f"cems/v1/{MN1}/rtd", b"own-mn")


def test_gateway_cannot_publish_alerts_or_commands(broker: SecureBroker, clients: list[Client]) -> None:
    monitor = login(clients, broker.port, "cems-monitor")
    assert not monitor.subscribe("cems/alerts/v1/#")[0].is_failure
    cmd_sub = login(clients, broker.port, "cems-ingester")
    assert not cmd_sub.subscribe("cems/cmd/v1/#")[0].is_failure
    gw = login(clients, broker.port, MN1)
    gw.publish("cems/alerts/v1/130602/E001/exceedance", b"fake-alert")
    gw.publish("cems/cmd/v1/reload", b"fake-command")
    ingester = login(clients, broker.port, "cems-ingester")
    ingester.publish("cems/alerts/v1/130602/E001/exceedance", b"real-alert")
    monitor.wait_for(b"real-alert")
    assert monitor.payloads() == [b"real-alert"]
    assert cmd_sub.payloads() == []


def test_grid_sensor_publishes_only_its_own_topic(broker: SecureBroker, clients: list[Client]) -> None:
    sub = ingester_subscriber(clients, broker.port)
    station = login(clients, broker.port, SENSOR)
    station.publish("grid/v1/GRID0002", b"other-station")
    station.publish(f"cems/v1/{MN1}/rtd", b"station-as-outlet")
    station.publish(f"grid/v1/{SENSOR}", b"own-station")
    sub.wait_for(b"own-station")
    assert sub.payloads() == [b"own-station"]


def test_ingester_reads_data_and_cannot_publish_it(broker: SecureBroker, clients: list[Client]) -> None:
    data_sub = ingester_subscriber(clients, broker.port)
    monitor = login(clients, broker.port, "cems-monitor")
    monitor.subscribe("cems/alerts/v1/#")
    ingester = login(clients, broker.port, "cems-ingester")
    ingester.publish(f"cems/v1/{MN1}/rtd", b"ingester-injected")  # read-only on data: dropped
    ingester.publish("grid/v1/GRID0001", b"ingester-injected-grid")
    ingester.publish("cems/alerts/v1/130602/E001/interruption", b"alert-ok")
    ingester.publish("cems/deadletter/v1/unknown_mn", b"deadletter-ok")
    monitor.wait_for(b"alert-ok")
    # a gateway's reading after the injection attempts: the ingester's subscription gets exactly that one
    login(clients, broker.port, MN2).publish(f"cems/v1/{MN2}/min", b"reading")
    data_sub.wait_for(b"reading")
    assert data_sub.payloads() == [b"reading"]
    assert monitor.payloads() == [b"alert-ok"]


@pytest.mark.parametrize("user", ["cems-ingester", "cems-bridge", "cems-monitor"])
def test_service_users_get_no_gateway_rights(broker: SecureBroker, clients: list[Client], user: str) -> None:
    # `pattern write cems/v1/%u/+` matches every user; the ACL denies it back for service users
    sub = ingester_subscriber(clients, broker.port)
    svc = login(clients, broker.port, user)
    svc.publish(f"cems/v1/{user}/rtd", b"as-own-name")
    svc.publish(f"cems/v1/{user}/hj212", b"as-own-name-hj212")
    svc.publish(f"grid/v1/{user}", b"as-own-grid")
    login(clients, broker.port, MN1).publish(f"cems/v1/{MN1}/rtd", b"marker")
    sub.wait_for(b"marker")
    assert sub.payloads() == [b"marker"]


def test_deadletters_are_written_by_the_ingester(broker: SecureBroker, clients: list[Client]) -> None:
    # The monitor has no read right on dead letters. Mosquitto 2.0's acl_file does not refuse the
    # SUBSCRIBE itself (SUBACK grants it) but checks every message against the receiver's read rights
    # when delivering it, so nothing arrives.
    monitor = login(clients, broker.port, "cems-monitor")
    monitor.subscribe("cems/deadletter/v1/#", "cems/alerts/v1/#")
    ingester = login(clients, broker.port, "cems-ingester")
    ingester.publish("cems/deadletter/v1/bad_json", b"rejected")  # the ingester may write it...
    ingester.publish("cems/alerts/v1/130602/E001/warning", b"marker")
    monitor.wait_for(b"marker")
    assert monitor.payloads() == [b"marker"]  # ...the monitor may not read it


def test_monitor_is_read_only_on_alerts(broker: SecureBroker, clients: list[Client]) -> None:
    monitor = login(clients, broker.port, "cems-monitor")
    monitor.subscribe("cems/v1/+/+", "grid/v1/+", "cems/alerts/v1/#")  # readings: never delivered to it
    monitor.publish("cems/alerts/v1/130602/E001/exceedance", b"monitor-forged")
    monitor.publish(f"cems/v1/{MN1}/rtd", b"monitor-reading")
    login(clients, broker.port, MN1).publish(f"cems/v1/{MN1}/rtd", b"gateway-reading")
    login(clients, broker.port, SENSOR).publish(f"grid/v1/{SENSOR}", b"grid-reading")
    login(clients, broker.port, "cems-ingester").publish("cems/alerts/v1/130602/E001/warning", b"marker")
    monitor.wait_for(b"marker")
    assert monitor.payloads() == [b"marker"]


def test_bridge_writes_hj212_for_any_mn_only(broker: SecureBroker, clients: list[Client]) -> None:
    sub = ingester_subscriber(clients, broker.port)
    bridge = login(clients, broker.port, "cems-bridge")
    bridge.publish(f"cems/v1/{MN2}/rtd", b"bridge-json")  # only raw HJ 212 packets
    bridge.publish("cems/alerts/v1/130602/E001/exceedance", b"bridge-alert")
    bridge.publish(f"cems/v1/{MN1}/hj212", b"##packet-MN1")
    bridge.publish(f"cems/v1/{MN2}/hj212", b"##packet-MN2")
    sub.wait_for(b"##packet-MN2")
    assert sub.payloads() == [b"##packet-MN1", b"##packet-MN2"]


# ---- TLS


def test_tls_round_trip_with_the_ca(broker: SecureBroker, clients: list[Client]) -> None:
    sub = login(clients, broker.tls_port, "cems-ingester", tls=tls_context(broker.ca))
    sub.subscribe("cems/v1/+/+")
    # the gateway uses the project's own client factory with an mqtts:// URL
    settings = MqttSettings(
        url=f"mqtts://localhost:{broker.tls_port}",
        client_id=f"gw-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        username=MN1,
        password=SECRETS[MN1],
        ca_file=str(broker.ca),
    )
    client, host, port = make_client(settings, manual_ack=False)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(host, port)
    client.loop_start()
    try:
        assert connected.wait(10)
        client.publish(f"cems/v1/{MN1}/rtd", b"over-tls", qos=1).wait_for_publish(10)
        sub.wait_for(b"over-tls")
        assert sub.messages == [(f"cems/v1/{MN1}/rtd", b"over-tls")]
    finally:
        client.disconnect()
        client.loop_stop()


def test_tls_without_the_ca_fails_the_handshake(broker: SecureBroker) -> None:
    c = Client(broker.tls_port, MN1, SECRETS[MN1], tls=tls_context(None))  # system CAs only
    with pytest.raises(ssl.SSLCertVerificationError):
        c.c.connect("127.0.0.1", broker.tls_port, keepalive=30)


def test_plain_mqtt_on_the_tls_port_gets_nowhere(broker: SecureBroker) -> None:
    c = Client(broker.tls_port, MN1, SECRETS[MN1])
    c.c.connect("127.0.0.1", broker.tls_port, keepalive=30)
    c.c.loop_start()
    try:
        assert not c.connack.wait(2) or c.reason.is_failure
    finally:
        c.close()


# ---- the service itself


def test_secured_broker_beside_the_plain_one_and_restart(broker: SecureBroker) -> None:
    services = broker.services
    plain = services.start_mosquitto()
    try:
        c = Client(plain.port)
        assert not c.connect().is_failure  # the plain development broker still takes anonymous clients
        c.close()
        conf = (broker.info.config_file or Path()).read_text()
        assert "allow_anonymous false" in conf and f"listener {broker.tls_port} 127.0.0.1" in conf
        status = services.status()
        assert status[MOSQUITTO_SECURE] is not None and status[MOSQUITTO] is not None

        again = services.start_mosquitto_secure(
            passwd_file=broker.out_dir / "passwd", acl_file=broker.out_dir / "acl", tls=_tls_files(broker)
        )
        assert again == broker.info  # idempotent: same process and ports
        restarted = services.restart(MOSQUITTO_SECURE)
        assert restarted.port == broker.port and restarted.extra_ports == broker.info.extra_ports
        assert restarted.pid != broker.info.pid
        broker.info = restarted
        anon = Client(broker.port)
        assert anon.connect().is_failure
        anon.close()
        gw = Client(broker.port, MN1, SECRETS[MN1])
        assert not gw.connect().is_failure
        gw.close()
    finally:
        services.stop_service(MOSQUITTO)


def _tls_files(broker: SecureBroker) -> tuple[Path, Path, Path]:
    d = broker.ca.parent
    return d / "ca.crt", d / "server.crt", d / "server.key"


# ---- marks (issue 14): an MN marks only itself and reads only its own answers


def test_gateway_marks_only_its_own_mn_and_reads_only_its_own_answers(
    broker: SecureBroker, clients: list[Client]
) -> None:
    sub = ingester_subscriber(clients, broker.port)  # cems/v1/+/+ covers cems/v1/{mn}/mark
    gw = login(clients, broker.port, MN1)
    gw.publish(f"cems/v1/{MN2}/mark", b"mark-as-MN2")  # another MN: dropped by the broker
    gw.publish(f"cems/v1/{MN1}/mark", b"mark-own")
    sub.wait_for(b"mark-own")
    assert b"mark-as-MN2" not in sub.payloads()
    assert sub.messages[-1] == (f"cems/v1/{MN1}/mark", b"mark-own")
    granted = gw.subscribe(f"cems/cmd/v1/reply/{MN1}/+", f"cems/cmd/v1/reply/{MN2}/+", "cems/cmd/v1/reply/+")
    assert not granted[0].is_failure
    ingester = login(clients, broker.port, "cems-ingester")
    ingester.publish(f"cems/cmd/v1/reply/{MN2}/r2", b"answer-to-MN2")
    ingester.publish("cems/cmd/v1/reply/r3", b"answer-to-an-ack")
    ingester.publish(f"cems/cmd/v1/reply/{MN1}/r1", b"answer-to-MN1")
    gw.wait_for(b"answer-to-MN1")
    time.sleep(GRACE_S)
    assert gw.payloads() == [b"answer-to-MN1"]
