"""Real Mosquitto / InfluxDB processes started by cems.devtools.local (through the conftest fixtures)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cems.devtools.local import (
    INFLUXDB,
    MOSQUITTO,
    LocalServices,
    format_status,
    port_open,
    wait_for_port,
)
from cems.errors import ServiceError, SinkError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


# ---- small paho-mqtt 2.x helpers


class Collector:
    """A paho client that records received messages; connect() blocks until CONNACK."""

    def __init__(self, host: str, port: int, client_id: str = "", *, clean_session: bool = True) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.got = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        self.session_present: bool | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.host, self.port = host, port

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        assert not reason.is_failure, reason
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(msg)
        self.got.set()

    def connect(self) -> Collector:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        assert self.subscribed.wait(10), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(host: str, port: int, topic: str, payload: bytes, qos: int = 1) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.connect(host, port)
    pub.loop_start()
    try:
        info = pub.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


# ---- the shared session services


def test_mosquitto_publish_subscribe_round_trip(mosquitto: Any) -> None:
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.port != 1883
    topic = f"cems/test/{uuid.uuid4().hex}"
    sub = Collector(mosquitto.host, mosquitto.port).connect()
    try:
        sub.subscribe(topic)
        publish(mosquitto.host, mosquitto.port, topic, b'{"v": 1}')
        assert sub.got.wait(10), "message not delivered"
        assert sub.messages[0].payload == b'{"v": 1}'
        assert sub.messages[0].qos == 1
    finally:
        sub.close()


def test_influx_ping_write_query(influxdb: Any, influx_db: str) -> None:
    assert influxdb.port != 8086
    assert httpx.get(f"{influxdb.url}/ping", timeout=5).status_code == 204
    resp = httpx.post(
        f"{influxdb.url}/write",
        params={"db": influx_db},
        content=b'emission,site=S1,pollutant=SO2 value=12.5,flag="N" 1700000000000000000',
        timeout=5,
    )
    assert resp.status_code == 204, resp.text
    rows = influxdb.query(influx_db, "SELECT value, flag FROM emission GROUP BY site, pollutant")
    assert rows == [{"time": "2023-11-14T22:13:20Z", "value": 12.5, "flag": "N", "site": "S1", "pollutant": "SO2"}]
    rows = influxdb.query(influx_db, "SELECT * FROM emission", epoch="ns")
    assert rows[0]["time"] == 1700000000000000000


def test_influx_query_error_is_sink_error(influxdb: Any, influx_db: str) -> None:
    with pytest.raises(SinkError, match="InfluxDB query"):
        influxdb.query(influx_db, "SELEKT nonsense")


def test_status_shows_both(local_services: LocalServices, mosquitto: Any, influxdb: Any) -> None:
    status = local_services.status()
    mq, ix = status[MOSQUITTO], status[INFLUXDB]
    assert mq is not None and mq.url == mosquitto.url
    assert ix is not None and ix.url == influxdb.url
    text = format_status(status)
    assert mosquitto.url in text and influxdb.url in text


def test_up_is_idempotent(local_services: LocalServices) -> None:
    before = local_services.status()
    again = local_services.up()
    assert again[MOSQUITTO] == before[MOSQUITTO]
    assert again[INFLUXDB] == before[INFLUXDB]


def test_restart_keeps_influx_data(influxdb: Any, influx_db: str) -> None:
    influxdb.write(influx_db, "emission,site=S2 value=7i 1700000000000000000")
    old_pid, port = influxdb.pid, influxdb.port
    influxdb.stop()
    assert not port_open(influxdb.host, port)
    assert not influxdb.running()
    influxdb.start()
    assert influxdb.port == port and influxdb.pid != old_pid
    rows = influxdb.query(influx_db, "SELECT value FROM emission WHERE site = 'S2'")
    assert [r["value"] for r in rows] == [7]


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_keeps_mosquitto_persistent_session(mosquitto: Any, kill: bool) -> None:
    client_id = f"cems-persist-{uuid.uuid4().hex[:8]}"
    topic = f"cems/persist/{uuid.uuid4().hex}"
    sub = Collector(mosquitto.host, mosquitto.port, client_id, clean_session=False).connect()
    sub.subscribe(topic, qos=1)
    sub.close()

    # published while the persistent subscriber is offline: the broker queues it
    publish(mosquitto.host, mosquitto.port, topic, b"queued-while-offline", qos=1)
    if kill:
        time.sleep(3.5)  # > autosave_interval: a SIGKILL only loses what was not autosaved yet
    port = mosquitto.port
    mosquitto.restart(kill=kill)
    assert mosquitto.port == port

    sub = Collector(mosquitto.host, mosquitto.port, client_id, clean_session=False).connect()
    try:
        assert sub.session_present is True
        assert sub.got.wait(10), "queued QoS 1 message lost across the broker restart"
        assert [m.payload for m in sub.messages] == [b"queued-while-offline"]
    finally:
        sub.close()


def test_stopped_service_is_restored_after_test_part1(mosquitto: Any) -> None:
    mosquitto.stop()  # _restore_services starts it again after this test
    assert not mosquitto.running()


def test_stopped_service_is_restored_after_test_part2(mosquitto: Any) -> None:
    assert mosquitto.running()


# ---- a private set of services: lifecycle, cross-process status/down


def test_lifecycle_up_twice_status_down_from_another_process(tmp_path: Path, service_binaries: None) -> None:
    services = LocalServices(tmp_path / "svc")
    try:
        first = services.up(influx_db="lifecycle")
        second = services.up(influx_db="lifecycle")
        assert first == second  # same pids and ports: reused, not restarted
        mq, ix = first[MOSQUITTO], first[INFLUXDB]
        assert mq.port not in (1883,) and ix.port != 8086 and mq.port != ix.port
        assert ix.extra_ports["rpc"] not in (8088, ix.port, mq.port)
        conf = (tmp_path / "svc" / "mosquitto" / "mosquitto.conf").read_text()
        assert f"listener {mq.port} 127.0.0.1" in conf and "max_queued_messages 100000" in conf
        assert mq.log_file.exists() and ix.data_dir.is_dir()
        state = json.loads((tmp_path / "svc" / "state.json").read_text())
        assert state["services"][MOSQUITTO]["pid"] == mq.pid

        code = (
            "import sys, json; from pathlib import Path; from cems.devtools.local import LocalServices;"
            "s = LocalServices(Path(sys.argv[1])); st = s.status();"
            "print(json.dumps({k: (v.pid if v else None) for k, v in st.items()}));"
            "s.down()"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "svc")],
            capture_output=True, text=True, timeout=60, env=env, check=True,
        )  # fmt: skip
        seen = json.loads(out.stdout)
        assert seen[MOSQUITTO] == mq.pid and seen[INFLUXDB] == ix.pid

        for info in (mq, ix):
            assert wait_for_port(info.host, info.port, 5, open_=False), f"{info.name} still listens"
            assert not Path(f"/proc/{info.pid}").exists() or _is_zombie_or_gone(info.pid)
        assert not (tmp_path / "svc" / "state.json").exists()
        assert all(v is None for v in services.status().values())
    finally:
        services.down()


def _is_zombie_or_gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_explicit_busy_port_fails_with_log_tail(tmp_path: Path, service_binaries: None) -> None:
    services = LocalServices(tmp_path / "svc", start_timeout=15)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            with pytest.raises(ServiceError, match=r"(?is)mosquitto exited.*address already in use"):
                services.start_mosquitto(port=port)
        finally:
            services.down()


def test_missing_binary_names_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEMS_INFLUXD_BIN", str(tmp_path / "no-such-influxd"))
    with pytest.raises(ServiceError, match="apt-get install influxdb"):
        LocalServices(tmp_path / "svc").up((INFLUXDB,))


def test_victoria_v2_write_path(victoria: Any) -> None:
    resp = httpx.post(
        f"{victoria.url}/api/v2/write",
        params={"org": "cems", "bucket": "cems"},
        content=b"emission,site=S3 value=3.5 1700000000000000000",
        timeout=5,
    )
    assert resp.status_code == 204, resp.text
    deadline = time.monotonic() + 15
    while True:
        httpx.get(f"{victoria.url}/internal/force_flush", timeout=5)
        export = httpx.get(
            f"{victoria.url}/api/v1/export", params={"match[]": '{__name__="emission_value"}'}, timeout=5
        )
        if export.text.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    series = json.loads(export.text.splitlines()[0])
    assert series["metric"]["site"] == "S3" and series["values"] == [3.5]
