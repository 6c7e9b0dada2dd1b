"""Lose nothing: InfluxDB outage (spool), ingester SIGKILL, broker restart; health and metrics."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_ingest import REGISTRY, Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.evidence import verify_archive
from cems.registry import parse_registry
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration


def _body(i: int) -> str:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1795305600 + 30 * i))  # 30-s steps from a fixed time
    return json.dumps({"data_time": t + "+00:00", "values": {"a21026": {"Rtd": float(i), "Flag": "N"}}})


def _count(influxdb: Any, db: str) -> int:
    rows = influxdb.query(db, "SELECT count(a21026_Rtd) FROM cems_reading")
    return int(rows[0]["count"]) if rows else 0


async def test_influxdb_outage_spools_acknowledges_and_writes_in_order_later(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    svc = IngestService(
        parse_registry(REGISTRY),
        MqttSettings(url=mosquitto.url, client_id=f"cems-spool-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db, timeout_s=2),
        IngestSettings(spool_dir=tmp_path / "spool", retry_initial_s=0.2, retry_max_s=1.0),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)
    pub = Mqtt(mosquitto.url)
    try:
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", _body(0))
        await asyncio.to_thread(wait_until, lambda: _count(influxdb, influx_db) == 1)
        influxdb.stop()
        for i in range(1, 41):
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", _body(i))
        # accepted (so acknowledged to the broker) while the database is down: they are in the spool
        await asyncio.to_thread(wait_until, lambda: svc.stats.accepted == 41)
        assert svc.stats.spooled_points == 40 and svc.stats.spool_bytes > 0
        influxdb.start()
        await asyncio.to_thread(wait_until, lambda: _count(influxdb, influx_db) == 41, 60)
        await asyncio.to_thread(wait_until, lambda: svc.stats.spool_bytes == 0, 30)
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 30)
    rows = influxdb.query(influx_db, "SELECT a21026_Rtd FROM cems_reading")
    assert [r["a21026_Rtd"] for r in rows] == [float(i) for i in range(41)]
    assert svc.spool is not None and svc.spool.empty()


def _cems_run(
    reg: Path, state: Path, mosquitto: Any, influxdb: Any, db: str, cid: str, health: int
) -> subprocess.Popen[str]:
    env = {**os.environ, "CEMS_STATE_DIR": str(state)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cems",
            "run",
            "--config",
            str(reg),
            "--mqtt-url",
            mosquitto.url,
            "--influx-url",
            influxdb.url,
            "--influx-db",
            db,
            "--client-id",
            cid,
            "--health-port",
            str(health),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigkill_of_the_ingester_loses_nothing_and_health_metrics_answer(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    cid = f"cems-kill-{uuid.uuid4().hex[:6]}"
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, cid, port)
    pub = Mqtt(mosquitto.url)
    try:
        wait_until(lambda: _health(port) is not None, 30)
        ok, doc = _health(port) or (False, {})
        assert ok and doc["mqtt_connected"] is True
        for i in range(150):
            pub.publish("cems/v1/MN0001/rtd", _body(i))
            if i == 75:
                os.killpg(proc.pid, signal.SIGKILL)  # crash mid-stream
                proc.wait()
        proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, cid, port)
        wait_until(lambda: _count(influxdb, influx_db) == 150, 60)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "cems_messages_received_total" in metrics and 'cems_last_data_time_seconds{mn="MN0001"}' in metrics
    finally:
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    rows = influxdb.query(influx_db, "SELECT a21026_Rtd FROM cems_reading")
    assert sorted(r["a21026_Rtd"] for r in rows) == [float(i) for i in range(150)]
    # the evidence archive survived the crash: the segment it left open was sealed as "recovered" at the restart,
    # every chain link checks, and every published message is in it (redelivered ones twice: received twice)
    evidence = tmp_path / "ingester" / "evidence"
    problems, n_segments = verify_archive(evidence)
    assert problems == [] and n_segments >= 2
    lines = [json.loads(x) for p in sorted(evidence.rglob("*.jsonl")) for x in p.read_bytes().splitlines()]
    assert any(x["kind"] == "close" and x["why"] == "recovered" for x in lines)
    archived = {x["sha256"] for x in lines if x["kind"] == "msg" and x["status"] == "accepted"}
    assert {hashlib.sha256(_body(i).encode()).hexdigest() for i in range(150)} <= archived


def _health(port: int) -> tuple[bool, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200, json.loads(r.read())
    except OSError:
        return None


async def test_broker_restart_reconnects_resubscribes_and_loses_nothing(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    svc = IngestService(
        parse_registry(REGISTRY),
        MqttSettings(url=mosquitto.url, client_id=f"cems-brk-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)
    try:
        pub = Mqtt(mosquitto.url, client_id=f"pub-{uuid.uuid4().hex[:6]}")
        for i in range(20):
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", _body(i))
        pub.close()
        await asyncio.to_thread(wait_until, lambda: _count(influxdb, influx_db) == 20)
        await asyncio.to_thread(mosquitto.restart)
        await asyncio.to_thread(wait_until, lambda: svc.conn.connected, 60)
        pub = Mqtt(mosquitto.url)
        for i in range(20, 40):
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", _body(i))
        pub.close()
        await asyncio.to_thread(wait_until, lambda: _count(influxdb, influx_db) == 40, 60)
        assert svc.conn.connects >= 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
