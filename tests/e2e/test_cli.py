"""The ``cems`` command end to end, as a user runs it (subprocesses, real services)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from registries import one_outlet  # tests/registries.py

pytestmark = pytest.mark.e2e

REGISTRY = one_outlet()


def cems(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cems", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands() -> None:
    out = cems("--help").stdout
    for command in ("run", "services", "demo", "hj212", "registry", "query"):
        assert command in out
    assert "CEMS_MQTT_URL" in cems("run", "--help").stdout


def test_registry_check_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    bad = REGISTRY.replace('profile = "coal_power_ultra_low"', 'profile = "no_such_profile"\nrtd_interval_s = 0')
    p = tmp_path / "bad.toml"
    p.write_text(bad, encoding="utf-8")
    r = cems("registry", "check", str(p))
    assert r.returncode == 2
    assert "enterprise[0](E001).outlet[0](MN0001).profile: unknown limit profile 'no_such_profile'" in r.stderr
    assert "enterprise[0](E001).outlet[0](MN0001).rtd_interval_s" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(REGISTRY, encoding="utf-8")
    r = cems("registry", "check", str(good))
    assert r.returncode == 0 and "1 outlets" in r.stdout


def test_registry_check_warns_about_a_profile_change_that_ends_an_explicit_ref_o2(tmp_path: Path) -> None:
    text = REGISTRY.replace(
        'profile = "coal_power_ultra_low"',
        'profile = "boiler_coal_special"\nref_o2 = 9.0\n'
        'limit_change = [{from = 2026-06-01, profile = "boiler_gas_special", reason = "煤改气"}]',
        1,
    )
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    r = cems("registry", "check", str(p))
    assert r.returncode == 0, r.stderr
    assert "warning: enterprise[0](E001).outlet[0](MN0001).limit_change[0] (from 2026-06-01)" in r.stderr
    assert "1 warning(s) above" in r.stdout


def test_bad_registry_never_starts_the_service(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(
        REGISTRY.replace('district = "130602"\n[[enterprise.outlet]]', 'district = "999"\n[[enterprise.outlet]]')
    )
    r = cems("run", "--config", str(p), "--mqtt-url", "mqtt://127.0.0.1:9", "--influx-url", "http://127.0.0.1:9")
    assert r.returncode == 2 and "'999' is not a [[district]] code" in r.stderr


def test_services_up_status_down(tmp_path: Path) -> None:
    env = {"CEMS_STATE_DIR": str(tmp_path)}
    up = cems("services", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "mqtt://127.0.0.1:" in up.stdout and "http://127.0.0.1:" in up.stdout
        assert ":1883" not in up.stdout and ":8086" not in up.stdout
        st = cems("services", "status", env=env)
        assert st.returncode == 0
        q = cems("query", "SHOW DATABASES", env=env)
        assert q.returncode == 0 and "cems" in q.stdout
    finally:
        down = cems("services", "down", env=env)
    assert down.returncode == 0
    assert cems("services", "status", env=env).returncode == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(port: int, timeout: float = 60.0) -> None:
    """Until ``/healthz`` answers 200 (a loaded machine may take seconds to start the ingester)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"cems run was not healthy within {timeout:.0f} s")


def test_run_ingests_and_flushes_on_sigterm(tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    env = {
        **os.environ,
        "CEMS_CONFIG": str(reg),
        "CEMS_MQTT_URL": mosquitto.url,
        "CEMS_INFLUX_URL": influxdb.url,
        "CEMS_INFLUX_DB": influx_db,
        "CEMS_CLIENT_ID": f"cems-e2e-{uuid.uuid4().hex[:6]}",
        "CEMS_STATE_DIR": str(tmp_path),
    }
    health = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cems", "run", "--health-port", str(health)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        _wait_healthy(health)  # the ingester is connected (it subscribes right after CONNACK)
        time.sleep(0.5)
        for i in range(50):
            body = {
                "data_time": f"2026-11-22T08:{i:02d}:00+08:00",
                "values": {"a21026": {"Rtd": float(i), "Flag": "N"}},
            }
            pub.publish("cems/v1/MN0001/rtd", json.dumps(body), qos=1).wait_for_publish(10)
        pub.publish("cems/v1/MN0001/rtd", b"garbage", qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    stats = json.loads(err.strip().splitlines()[-1])
    assert stats["accepted"] == 50 and stats["rejected"] == {"malformed_json": 1}
    rows = influxdb.query(influx_db, "SELECT count(a21026_Rtd) FROM cems_reading")
    assert rows[0]["count"] == 50


def test_hj212_decode_every_line_and_never_stops(tmp_path: Path) -> None:
    real = Path(__file__).resolve().parents[1] / "data" / "hj212_real_packets.jsonl"
    packets = [json.loads(line)["packet"] for line in real.read_text(encoding="utf-8").splitlines() if line.strip()]
    inp = tmp_path / "packets.txt"
    inp.write_text("\n".join([*packets[:5], "this is not a packet", "##00", *packets[5:]]) + "\n", encoding="utf-8")
    r = cems("hj212", "decode", str(inp))
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(out) == len(packets) + 2
    assert out[5]["ok"] is False and out[5]["error"] and out[6]["ok"] is False
    first = out[0]
    assert first["ok"] and first["crc_ok"] and first["version"] == "2017" and first["cn"] == "2061"
    assert first["data_time"] == "2019-09-24T22:00:00+08:00"
    assert first["values"]["a34006"] == {"Avg": 2.697, "Flag": "N"}
    # encode rebuilds packets with a correct CRC and length from the decoded JSON
    good = [line for line in r.stdout.splitlines() if json.loads(line)["ok"]]
    enc = subprocess.run(
        [sys.executable, "-m", "cems", "hj212", "encode", "-"], input="\n".join(good), capture_output=True, text=True
    )
    assert enc.returncode == 0, enc.stderr
    back = subprocess.run(
        [sys.executable, "-m", "cems", "hj212", "decode"], input=enc.stdout, capture_output=True, text=True
    )
    again = [json.loads(line) for line in back.stdout.splitlines()]
    assert len(again) == len(good) and all(d["ok"] and d["crc_ok"] for d in again)
    assert [d["values"] for d in again] == [json.loads(g)["values"] for g in good]


def test_demo_runs_for_a_duration_cleans_up_and_leaves_data(tmp_path: Path) -> None:
    env = {"CEMS_STATE_DIR": str(tmp_path)}
    r = cems("demo", "--duration", "12", "--speed", "120", env=env, timeout=180)
    try:
        assert r.returncode == 0, r.stderr[-3000:]
        done = next(line for line in r.stdout.splitlines() if line.startswith("Done:"))
        accepted = int(done.split()[1])
        assert accepted > 50, r.stdout
        assert "rejected none" in done
        q = cems("query", "SELECT count(a21026_Rtd) FROM cems_reading", env=env)
        assert q.returncode == 0 and json.loads(q.stdout.splitlines()[0])["count"] > 0
        # the demo's own simulator process is gone
        sim_pid = int(r.stdout.split("Simulator started (pid ", 1)[1].split(",", 1)[0])
        with pytest.raises(ProcessLookupError):
            os.kill(sim_pid, 0)
    finally:
        cems("services", "down", env=env)
