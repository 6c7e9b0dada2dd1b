"""Marks through a real ``cems run`` and the real Mosquitto and InfluxDB (issue 14): ``cems marks add`` over MQTT
closes the open exceedance as ``marked`` (never deleted), a mark older than the repair window is refused, a
late declaration is kept without effect, a withdrawal restores the exceedance; ``cems marks list --json`` gives
the records that make ``cems replay --marks`` give the same events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py
from test_event_time_live import _health_up
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)
from test_reliability import _cems_run, _free_port

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.replay import load_marks, replay

pytestmark = pytest.mark.integration

REGISTRY = one_outlet()
PM, SO2, NOX, O2 = "a34013", "a21026", "a21002", "a19001"


def _das(t: datetime, so2: float) -> dict[str, Any]:
    vals = {
        PM: {"Avg": 3.0, "ZsAvg": 3.0, "Flag": "N"},
        SO2: {"Avg": so2, "ZsAvg": so2, "Flag": "N"},
        NOX: {"Avg": 20.0, "ZsAvg": 20.0, "Flag": "N"},
        O2: {"Avg": 6.0, "Flag": "N"},
    }
    return {"data_time": t.isoformat(), "values": vals}


def _cems(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cems", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def iso(t: datetime) -> str:
    return t.isoformat()


def _exceedance(influxdb: Any, db: str) -> dict[str, Any] | None:
    rows = influxdb.query(db, "SELECT * FROM cems_event WHERE \"type\" = 'hourly_exceedance'")
    return rows[0] if len(rows) == 1 else None


def test_marks_through_cems_run_and_replay_gives_the_same_events(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    base = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0) - timedelta(hours=8)
    so2 = [20.0, 50.0, 50.0, 20.0, 20.0]  # 1 and 2 hours after base exceed 35 mg/m³
    docs = [_das(base + timedelta(hours=i), v) for i, v in enumerate(so2)]
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, f"cems-marks-{uuid.uuid4().hex[:6]}", port)
    pub = Mqtt(mosquitto.url)
    mqtt_args = ["--mqtt-url", mosquitto.url, "--config", str(reg), "--wait", "30"]
    read_args = ["--influx-url", influxdb.url, "--influx-db", influx_db]
    try:
        wait_until(lambda: _health_up(port), 30)
        for d in docs:
            pub.publish("cems/v1/MN0001/hour", json.dumps(d))
        wait_until(lambda: (_exceedance(influxdb, influx_db) or {}).get("status") == "closed", 60)
        ev = _exceedance(influxdb, influx_db)
        assert ev is not None and ev["start"] == iso(base + timedelta(hours=1)) and ev["hours"] == 2

        # the enterprise marks the fault: the exceedance is closed as marked, with the mark's id
        r = _cems("marks", "add", "--mn", "MN0001", "--type", "cp_fault", "--from", iso(base + timedelta(hours=1)),
                  "--to", iso(base + timedelta(hours=3)), "--reason", "引风机跳闸", "--by", "王工",
                  "--attachment", "DOC-118", *mqtt_args)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "accepted" in r.stdout
        wait_until(lambda: (_exceedance(influxdb, influx_db) or {}).get("status") == "marked", 30)
        ev = _exceedance(influxdb, influx_db)
        assert ev is not None and ev["event_id"] and ev["marks"]

        # a mark of a period older than the repair window is refused, with the reason
        old = base - timedelta(days=12)
        r = _cems("marks", "add", "--mn", "MN0001", "--type", "cp_fault", "--from", iso(old),
                  "--to", iso(old + timedelta(hours=2)), "--reason", "补标", "--by", "王工", *mqtt_args)  # fmt: skip
        assert r.returncode == 1 and "mark_too_late" in r.stderr, (r.stdout, r.stderr)
        # a late stop declaration is kept, without effect
        r = _cems("marks", "declare", "--mn", "MN0001", "--from", iso(old), "--to", iso(old + timedelta(days=1)),
                  "--reason", "停产检修", "--by", "王工", *mqtt_args)  # fmt: skip
        assert r.returncode == 1 and "WITHOUT EFFECT" in r.stdout, (r.stdout, r.stderr)

        lst = _cems("marks", "list", "--mn", "MN0001", "--json", *read_args)
        assert lst.returncode == 0, lst.stderr
        records = load_marks(lst.stdout.splitlines())
        assert [(m.kind, m.status) for m in records] == [("mark", "accepted"), ("declaration", "late")]
        mark = records[0]
        assert (mark.submitter, mark.attachment, mark.via) == ("王工", "DOC-118", "cems/v1/MN0001/mark")
        assert ev["marks"] == mark.record_id

        lines = [json.dumps({"mn": "MN0001", "stream": "hour", **d}) for d in docs]
        res = replay(parse_registry(REGISTRY), lines, "jsonl", marks=records)
        assert [(e.event_id, e.status, ",".join(e.marks)) for e in res.events if e.type == "hourly_exceedance"] == [
            (ev["event_id"], "marked", mark.record_id)
        ]

        # withdrawn, the exceedance stands again (same event, reopened late) and replay agrees
        r = _cems("marks", "withdraw", mark.record_id, "--mn", "MN0001", "--by", "王工", "--reason", "标记有误",
                  *mqtt_args)  # fmt: skip
        assert r.returncode == 0, r.stderr
        wait_until(lambda: (_exceedance(influxdb, influx_db) or {}).get("status") == "closed", 30)
        ev = _exceedance(influxdb, influx_db)
        records = load_marks(_cems("marks", "list", "--json", *read_args).stdout.splitlines())
        assert [m.kind for m in records] == ["mark", "declaration", "withdrawal"]
        res = replay(parse_registry(REGISTRY), lines, "jsonl", marks=records)
        (again,) = [e for e in res.events if e.type == "hourly_exceedance"]
        assert ev is not None and (again.event_id, again.status, again.hours) == (ev["event_id"], "closed", ev["hours"])
        text = _cems("marks", "list", *read_args).stdout
        assert f"withdrawn by {records[2].record_id}" in text
    finally:
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


async def test_marks_survive_a_restart_and_alert_when_they_close_an_exceedance(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    """In-process ingester with a fixed clock: the mark's answer, the ``marked`` alert, the append-only SQLite
    table; after a restart the same submission is a duplicate and a withdrawal reopens the exceedance."""
    import asyncio
    import sqlite3

    from test_compliance_live import FakeClock, config, start_service

    from cems.protocol.mark import mark_payload
    from cems.registry import Topics
    from cems.service.compliance import DB_FILE, submit_mark
    from cems.service.mqtt import MqttSettings

    t0 = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0)
    base = t0 - timedelta(hours=6)
    registry = parse_registry(REGISTRY)
    clock = FakeClock(t0)
    cfg = config(tmp_path, clock)
    alerts = Mqtt(mosquitto.url)
    await asyncio.to_thread(alerts.subscribe, "cems/alerts/v1/#")
    pub = Mqtt(mosquitto.url)
    settings = MqttSettings(url=mosquitto.url, client_id="t")
    payload = mark_payload(
        "mark", mn="MN0001", submitter="王工", reason="脱硫系统故障", type_="cp_fault",
        start=base + timedelta(hours=1), end=base + timedelta(hours=3),
    )  # fmt: skip
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, f"cems-m-{uuid.uuid4().hex[:6]}")
    try:
        for i, v in enumerate([20.0, 50.0, 50.0, 20.0, 20.0]):
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hour", json.dumps(_das(base + timedelta(hours=i), v)))
        await asyncio.to_thread(
            wait_until, lambda: (_exceedance(influxdb, influx_db) or {}).get("status") == "closed", 30
        )
        reply = await submit_mark(settings, Topics(), payload, confirm_s=20, request_id="fixed1")
        assert reply is not None and reply["result"] == "accepted", reply
        rid = reply["record"]["record_id"]

        def marked_alerts() -> list[dict[str, Any]]:
            return [json.loads(b) for t, b in alerts.got if json.loads(b).get("update") == "marked"]

        await asyncio.to_thread(wait_until, lambda: marked_alerts(), 20)
        (alert,) = marked_alerts()
        assert alert["status"] == "marked" and alert["marks"] == [rid]
    finally:
        await run.stop()
    with sqlite3.connect(tmp_path / "state" / DB_FILE) as db:
        assert [r[0] for r in db.execute("SELECT record_id FROM marks")] == [rid]
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, f"cems-m-{uuid.uuid4().hex[:6]}")
    try:
        reply = await submit_mark(settings, Topics(), payload, confirm_s=20, request_id="fixed1")
        assert reply is not None and reply["result"] == "duplicate"  # the ledger came back from SQLite
        w = mark_payload("withdrawal", mn="MN0001", submitter="王工", reason="误标", target=rid)
        reply = await submit_mark(settings, Topics(), w, confirm_s=20)
        assert reply is not None and reply["result"] == "accepted", reply
        await asyncio.to_thread(
            wait_until, lambda: (_exceedance(influxdb, influx_db) or {}).get("status") == "closed", 20
        )
        bad = mark_payload("withdrawal", mn="MN0001", submitter="王工", target=rid)
        reply = await submit_mark(settings, Topics(), bad, confirm_s=20)
        assert reply is not None and reply["result"] == "unknown_mark"
    finally:
        await run.stop()
        alerts.close()
        pub.close()
    with sqlite3.connect(tmp_path / "state" / DB_FILE) as db:
        assert [r[0] for r in db.execute("SELECT kind FROM marks ORDER BY received_ts")] == ["mark", "withdrawal"]
