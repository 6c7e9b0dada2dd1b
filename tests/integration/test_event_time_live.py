"""Event time through a real ``cems run`` (issue 12 item 1): the DAS's CN=2061 hourly record, sent after the
hour and after the wall clock has closed it from the real-time data, revises the stored ``cems_hourly`` point
and opens the exceedance, as ``cems replay`` of the same packets does."""

from __future__ import annotations

import json
import signal
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)
from test_reliability import _cems_run, _free_port

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.replay import replay

pytestmark = pytest.mark.integration

REGISTRY = one_outlet()
SO2, O2 = "a21026", "a19001"


def _rtd(t: datetime) -> dict[str, Any]:
    # 30 mg/m³ at the reference O2 (6 %): compliant (limit 35)
    return {"data_time": t.isoformat(), "values": {SO2: {"Rtd": 30.0, "Flag": "N"}, O2: {"Rtd": 6.0, "Flag": "N"}}}


def _das(t: datetime) -> dict[str, Any]:
    # the DAS's own hourly record: 37.5 mg/m³ at 6 % O2 (ZsAvg 37.5 > 35)
    vals = {SO2: {"Avg": 37.5, "ZsAvg": 37.5, "Flag": "N"}, O2: {"Avg": 6.0, "Flag": "N"}}
    return {"data_time": t.isoformat(), "values": vals}


def _hourly(influxdb: Any, db: str, hour: datetime) -> dict[str, Any] | None:
    ms = int(hour.timestamp() * 1000)
    q = f"SELECT * FROM cems_hourly WHERE \"pollutant\" = '{SO2}' AND time = {ms}ms"
    rows = influxdb.query(db, q)
    return rows[0] if rows else None


def test_late_cn2061_through_cems_run_revises_the_hour_and_opens_the_exceedance(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    # an hour that ended more than an hour ago (the wall clock closes it at once), inside the hold (3 h)
    hour = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, f"cems-late-{uuid.uuid4().hex[:6]}", port)
    pub = Mqtt(mosquitto.url)
    alerts = Mqtt(mosquitto.url)
    alerts.subscribe("cems/alerts/v1/#")
    try:
        rtd = [_rtd(hour + timedelta(seconds=30 * i)) for i in range(120)]
        wait_until(lambda: _health_up(port), 30)
        for doc in rtd:
            pub.publish("cems/v1/MN0001/rtd", json.dumps(doc))
        # the clock closes the hour from the real-time data: compliant
        wait_until(lambda: (_hourly(influxdb, influx_db, hour) or {}).get("source") == "realtime", 60)
        first = _hourly(influxdb, influx_db, hour)
        assert first is not None and first["exceeds"] is False
        # then the DAS's CN=2061 for that hour arrives
        pub.publish("cems/v1/MN0001/hour", json.dumps(_das(hour)))
        wait_until(lambda: (_hourly(influxdb, influx_db, hour) or {}).get("source") == "das_2061", 60)
        rec = _hourly(influxdb, influx_db, hour)
        assert rec is not None and rec["exceeds"] is True and rec["zs_avg"] == 37.5
        q = "SELECT * FROM cems_event WHERE \"type\" = 'hourly_exceedance'"
        wait_until(lambda: bool(influxdb.query(influx_db, q)), 30)
        (ev,) = influxdb.query(influx_db, q)
        assert ev["late"] is True and ev["start"] == hour.isoformat()
        wait_until(lambda: any(t.endswith("/hourly_exceedance") for t, _ in alerts.got), 30)
        bodies = [json.loads(b) for t, b in alerts.got if t.endswith("/hourly_exceedance")]
        opened = [b for b in bodies if b.get("update") == "opened"]
        assert len(opened) == 1 and opened[0]["late"] is True
        # the same packets replayed give the same record and event
        lines = [json.dumps({"mn": "MN0001", "stream": "rtd", **d}) for d in rtd]
        lines.append(json.dumps({"mn": "MN0001", "stream": "hour", **_das(hour)}))
        res = replay(parse_registry(REGISTRY), lines, "jsonl")
        (h,) = [r for r in res.hourly if r.pollutant == SO2 and r.hour_start == hour]
        assert (h.source, h.zs_avg, h.exceeds) == ("das_2061", 37.5, True)
        assert [e.start for e in res.events if e.type == "hourly_exceedance"] == [hour]
    finally:
        pub.close()
        alerts.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _health_up(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _minute(t: datetime) -> dict[str, Any]:
    # 20 mg/m³ at the reference O2 (6 %)
    return {"data_time": t.isoformat(), "values": {SO2: {"Avg": 20.0, "Flag": "N"}, O2: {"Avg": 6.0, "Flag": "N"}}}


def _archived(state: Path, hour: datetime) -> bool:
    import sqlite3

    db = state / "ingester" / "compliance.sqlite3"
    if not db.exists():
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            row = c.execute("SELECT 1 FROM hour_archive WHERE mn = 'MN0001' AND hour = ?", (int(hour.timestamp()),))
            return row.fetchone() is not None
        except sqlite3.OperationalError:
            return False


def test_a_day_late_backfill_through_cems_run_revises_the_archived_hour(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An hour of yesterday got 30 minute records; the hour is emitted (not valid), leaves memory (hold 0) for
    the SQLite archive, and cems run restarts; then the DAS back-fills (补传) the other 30 minutes, a day
    late.  The stored hour is rebuilt exactly: valid, 60 minutes, as cems replay of the same packets."""
    hour = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    monkeypatch.setenv("CEMS_LATE_HOLD_HOURS", "0")  # out of memory at once: only the archive can revise it
    port = _free_port()
    cid = f"cems-backfill-{uuid.uuid4().hex[:6]}"
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, cid, port)
    pub = Mqtt(mosquitto.url)
    first = [_minute(hour + timedelta(minutes=i)) for i in range(30)]
    rest = [_minute(hour + timedelta(minutes=i)) for i in range(30, 60)]
    try:
        wait_until(lambda: _health_up(port), 30)
        for doc in first:
            pub.publish("cems/v1/MN0001/min", json.dumps(doc))
        wait_until(lambda: (_hourly(influxdb, influx_db, hour) or {}).get("valid_minutes") == 30, 60)
        assert (_hourly(influxdb, influx_db, hour) or {}).get("valid") is False
        wait_until(lambda: _archived(tmp_path, hour), 60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, cid, port)
        wait_until(lambda: _health_up(port), 30)
        for doc in rest:
            pub.publish("cems/v1/MN0001/min", json.dumps(doc))
        wait_until(lambda: (_hourly(influxdb, influx_db, hour) or {}).get("valid_minutes") == 60, 60)
        rec = _hourly(influxdb, influx_db, hour)
        assert rec is not None and rec["valid"] is True and rec["avg"] == 20.0
        lines = [json.dumps({"mn": "MN0001", "stream": "min", **d}) for d in first + rest]
        res = replay(parse_registry(REGISTRY), lines, "jsonl")
        (h,) = [r for r in res.hourly if r.pollutant == SO2 and r.hour_start == hour]
        assert (h.valid, h.valid_minutes, h.avg) == (True, 60, rec["avg"])
        assert res.late_unrevised == 0
    finally:
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
