"""Evidence round trip through a real `cems run`, Mosquitto and InfluxDB, then the CLI: packets published
(JSON, raw HJ 212, one rejected) → archived as received → `cems evidence export` → `cems evidence verify` OK →
one byte of the case file's packet file changed → verify fails naming that file (exit 1)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_ingest import REGISTRY, Mqtt, wait_until  # same directory (pytest prepend import mode)
from test_reliability import _free_port, _health

from cems.model import BEIJING
from cems.protocol.hj212 import encode

pytestmark = pytest.mark.integration

T = (datetime.now(BEIJING) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)


def cems(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cems", *args], env=env, capture_output=True, text=True, timeout=120)


def hj212(minute: int, pw: str = "123456") -> bytes:
    t = T + timedelta(minutes=minute)
    return encode(
        cn="2051",
        qn=t.strftime("%Y%m%d%H%M%S000"),
        st="31",
        pw=pw,
        mn="MN0001",
        flag=5,
        data_time=t.strftime("%Y%m%d%H%M%S"),
        values={"a21026": {"Avg": 12.0 + minute, "Flag": "N"}, "a19001": {"Avg": 7.5, "Flag": "N"}},
    ).encode()


def json_rtd(second: int, so2: float) -> bytes:
    t = T + timedelta(seconds=second)
    return json.dumps({"data_time": t.isoformat(), "values": {"a21026": {"Rtd": so2, "Flag": "N"}}}).encode()


def test_evidence_round_trip_through_cems_run_and_the_cli(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    env = {**os.environ, "CEMS_STATE_DIR": str(tmp_path)}
    cid = f"cems-evidence-{uuid.uuid4().hex[:6]}"
    run = [sys.executable, "-m", "cems", "run", "--config", str(reg), "--mqtt-url", mosquitto.url]
    port = _free_port()
    run += ["--influx-url", influxdb.url, "--influx-db", influx_db, "--client-id", cid, "--health-port", str(port)]
    proc = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    published = [
        ("cems/v1/MN0001/rtd", json_rtd(0, 20.0)),
        ("cems/v1/MN0001/rtd", json_rtd(30, 21.0)),
        ("cems/v1/MN0001/hj212", hj212(1)),
        ("cems/v1/MN0001/hj212", hj212(2, pw="wrong")),  # rejected: bad_password
    ]
    pub = Mqtt(mosquitto.url)
    try:
        wait_until(lambda: (_health(port) or (False, {}))[0], 30)  # connected to the broker
        time.sleep(1.0)  # and subscribed (a new client id has no session to queue messages in before that)
        for topic, payload in published:
            pub.publish(topic, payload)

        def stored() -> int:
            rows = influxdb.query(influx_db, "SELECT count(a21026_Rtd), count(a21026_Avg) FROM cems_reading")
            return int(rows[0]["count"] or 0) + int(rows[0]["count_1"] or 0) if rows else 0

        wait_until(lambda: stored() == 3, 60)

        def metrics() -> str:
            return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

        wait_until(lambda: "cems_evidence_lines_total 4.0" in metrics(), 30)  # the rejected one too
        assert "cems_evidence_failures_total 0.0" in metrics()
    finally:
        pub.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]

    case = tmp_path / "case.zip"
    t0, t1 = (T - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), (T + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    ex = cems(
        "evidence", "export", "--config", str(reg), "--mn", "MN0001", "--from", t0, "--to", t1, "--by", "张三",
        "--out", str(case), "--influx-url", influxdb.url, "--influx-db", influx_db,
        env=env,
    )  # fmt: skip
    assert ex.returncode == 0, ex.stderr
    with zipfile.ZipFile(case) as z:
        names = set(z.namelist())
        readings = [json.loads(x) for x in z.read("readings.jsonl").splitlines()]
        manifest = json.loads(z.read("manifest.json"))
        (packet_file,) = [n for n in names if n.startswith("packets/")]
        lines = [json.loads(x) for x in z.read(packet_file).splitlines()]
        packet_bytes = z.read(packet_file)
    assert {"README.txt", "SHA256SUMS", "manifest.json", "hourly.jsonl", "events.jsonl", "marks.json"} <= names
    assert manifest["exported_by"] == "张三" and manifest["mn"] == "MN0001"
    # every published message, byte for byte, with its verdict
    msgs = [x for x in lines if x["kind"] == "msg"]
    assert sorted((m["topic"], base64.b64decode(m["payload"])) for m in msgs) == sorted(published)
    verdicts = {base64.b64decode(m["payload"]): (m["status"], m.get("reason")) for m in msgs}
    assert verdicts[hj212(2, pw="wrong")] == ("rejected", "bad_password")
    assert [verdicts[p] for _, p in published[:3]] == [("accepted", None)] * 3
    assert lines[0]["kind"] == "header" and lines[0]["attrs"]["client_id"] == cid
    assert lines[-1]["kind"] == "seal" and lines[-1]["records"] == 4  # the ingester stopped: segment sealed
    # the readings decoded from the raw packets are those stored
    by_payload = {r["sha256"]: r for r in readings}
    packet = by_payload[msgs[[base64.b64decode(m["payload"]) for m in msgs].index(hj212(1))]["sha256"]]
    assert packet["reading"]["values"]["a21026"]["Avg"] == 13.0 and "data_time" in packet["selected_by"]

    ok = cems("evidence", "verify", str(case), env=env)
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    if shutil.which("sha256sum"):
        out = tmp_path / "case"
        zipfile.ZipFile(case).extractall(out)
        assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out).returncode == 0
    assert cems("evidence", "verify", str(tmp_path / "ingester" / "evidence"), env=env).returncode == 0

    # one byte of the packet file changed (a value in a payload: "rejected" → "accepted" is one line's edit too)
    i = packet_bytes.index(b'"status":"rejected"') + len(b'"status":"')
    tampered = packet_bytes[:i] + b"R" + packet_bytes[i + 1 :]
    bad = tmp_path / "tampered.zip"
    with zipfile.ZipFile(case) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            dst.writestr(n, tampered if n == packet_file else src.read(n))
    fail = cems("evidence", "verify", str(bad), env=env)
    assert fail.returncode == 1
    assert f"FAIL {packet_file}" in fail.stderr and "NOT verified" in fail.stderr
    # a changed byte inside the zip's compressed data is caught too, and named
    raw = bytearray(case.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo(packet_file)
    raw[info.header_offset + 30 + len(info.filename) + 5] ^= 0x01
    (tmp_path / "flipped.zip").write_bytes(bytes(raw))
    flipped = cems("evidence", "verify", str(tmp_path / "flipped.zip"), env=env)
    assert flipped.returncode == 1 and packet_file in flipped.stderr
