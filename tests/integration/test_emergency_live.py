"""Heavy-pollution response live (issue 16), through the real Mosquitto and InfluxDB: an operator sets an
orange warning over MQTT (retained), a listed line emits above its cut during it, the ingester raises
``warning_level`` and ``emergency_noncompliance`` events (alerts, InfluxDB, SQLite), and a fresh ingester learns
the level again from the retained setting.

Line kiln1 on MN0001: SO2 baseline 10 kg/h, orange cut 20 % → allowed 8 kg/h.  SO2 25 mg/m³ × flow 100 m³/s =
9 kg/h (HJ 75-2017: measured concentration × dry standard flow)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import emergency_line, one_outlet  # tests/registries.py
from test_compliance_live import FakeClock, Mqtt, config, start_service, wait_until

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules.emergency import WarningLevel
from cems.service.compliance import list_events
from cems.service.mqtt import MqttSettings
from cems.service.warnings import publish_warning

pytestmark = pytest.mark.integration

T0 = (datetime.now(BEIJING) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def hour_doc(h: int, so2: float) -> dict[str, Any]:
    return {
        "schema": "cems.reading/1",
        "mn": "MN0001",
        "stream": "hour",
        "data_time": (T0 + timedelta(hours=h)).isoformat(),
        "values": {
            "a21026": {"Avg": so2, "Flag": "N"},
            "a19001": {"Avg": 6.0, "Flag": "N"},
            "a00000": {"Avg": 100.0, "Flag": "N"},
        },
    }


async def test_warning_set_over_mqtt_judges_the_emergency_list(
    mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path
) -> None:
    prefix = f"cems/cmd/t{uuid.uuid4().hex[:8]}"  # retained settings must not leak into other tests
    registry = parse_registry(
        one_outlet(
            enterprise=emergency_line(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n"),
            tail=f'[topics]\ncommand_prefix = "{prefix}"\n',
        )
    )
    clock = FakeClock(T0 + timedelta(hours=6))  # the service's clock at the data: hours are decided by the data
    cfg = config(tmp_path, clock)
    alerts = Mqtt(mosquitto.url)
    await asyncio.to_thread(alerts.subscribe, "cems/alerts/v1/#")
    pub = Mqtt(mosquitto.url)
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, f"cems-em-{uuid.uuid4().hex[:6]}")
    try:
        start, end = T0 + timedelta(hours=8), T0 + timedelta(hours=12)
        reply = await publish_warning(
            MqttSettings(url=mosquitto.url), registry.topics, WarningLevel.ORANGE, start, end, "张三", confirm_s=20
        )
        assert reply is not None and reply["result"] == "set" and reply["level"] == "orange"
        history = json.loads((tmp_path / "state" / "warnings.json").read_text(encoding="utf-8"))
        assert [(h["level"], h["by"]) for h in history] == [("orange", "张三")]

        docs = [hour_doc(h, 25.0 if h in (8, 9) else 5.0) for h in range(6, 13)]  # hour 12 decides hour 11
        infos = [pub.c.publish("cems/v1/MN0001/hour", json.dumps(d), qos=1) for d in docs]
        for i in infos:
            await asyncio.to_thread(i.wait_for_publish, 10)
        closed = await asyncio.to_thread(
            wait_until,
            lambda: [
                d for _, d in alerts.alerts("closed") if d["type"] == "emergency_noncompliance" and d["hours"] == 2
            ],
        )
        ev = closed[-1]
        assert ev["start"] == start.isoformat() and ev["hours"] == 2 and ev["pollutant"] == "a21026"
        assert not ev["late"] and ev["end"] == (start + timedelta(hours=2)).isoformat()
        assert ev["peak"] == pytest.approx(9.0) and ev["limit"] == pytest.approx(8.0)
        assert "cut 20%" in ev["profile"] and "baseline 10" in ev["profile"]
        topics = {t for t, _ in alerts.alerts()}
        assert "cems/alerts/v1/130602/E001/emergency_noncompliance" in topics
        assert "cems/alerts/v1/city/city/warning_level" in topics

        rows = await asyncio.to_thread(list_events, influxdb.url, influx_db, only_open=False)
        types = {r["type"] for r in rows}
        assert {"warning_level", "emergency_noncompliance"} <= types
        with sqlite3.connect(tmp_path / "state" / "compliance.sqlite3") as c:
            stored = {t for (t,) in c.execute("SELECT type FROM events")}
        assert {"warning_level", "emergency_noncompliance"} <= stored
    finally:
        await run.stop()

    # a fresh ingester (another state dir) learns the level from the retained setting
    cfg2 = config(tmp_path / "fresh", clock)
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg2, f"cems-em-{uuid.uuid4().hex[:6]}")
    try:
        path = tmp_path / "fresh" / "state" / "warnings.json"
        await asyncio.to_thread(wait_until, path.exists)
        assert json.loads(path.read_text(encoding="utf-8"))[0]["level"] == "orange"
        # the same setting again: already recorded, no second history entry
        again = await publish_warning(
            MqttSettings(url=mosquitto.url),
            registry.topics,
            WarningLevel.ORANGE,
            start,
            end,
            "张三",
            set_at=datetime.fromisoformat(history[0]["set_at"]),
            confirm_s=20,
        )
        assert again is not None and again["result"] == "already_set"
        assert len(json.loads(path.read_text(encoding="utf-8"))) == 1
    finally:
        await run.stop()
        alerts.close()
        pub.close()
