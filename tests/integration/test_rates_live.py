"""Live transmission rates: ``cems_rate`` per outlet/day and district/month, written as hours complete."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_ingest import REGISTRY, Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.service.compliance import ComplianceConfig
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration


async def test_cems_rate_is_written_as_hours_complete(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    day = (datetime.now(BEIJING) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    now = {"t": day + timedelta(hours=8)}
    svc = IngestService(
        parse_registry(REGISTRY),
        MqttSettings(url=mosquitto.url, client_id=f"cems-rate-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db),
        compliance=ComplianceConfig(
            state_dir=tmp_path / "state", clock=lambda: now["t"], clock_interval_s=0.2, rates_interval_s=0.0
        ),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)
    pub = Mqtt(mosquitto.url)
    try:
        # hours 08 and 09: all 60 minutes valid; hour 10: 30 minutes only (invalid under HJ 75's 45-minute rule)
        for m in range(150):
            t = day + timedelta(hours=8, minutes=m)
            doc = {
                "data_time": t.isoformat(),
                "values": {"a21026": {"Avg": 10.0, "Flag": "N"}, "a19001": {"Avg": 8.0, "Flag": "N"}},
            }
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/min", json.dumps(doc))
        await asyncio.to_thread(wait_until, lambda: svc.stats.accepted == 150)
        now["t"] = day + timedelta(hours=12)  # hours up to 11:00 are over
        q = "SELECT * FROM cems_rate WHERE \"level\" = 'outlet'"
        # rewritten as hours complete (the same point is overwritten): wait for the state at 12:00
        rows = await asyncio.to_thread(
            wait_until, lambda: [r for r in influxdb.query(influx_db, q, epoch="s") if r["expected"] == 33], 30
        )
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 30)
    (r,) = rows
    # counted to date: at 12:00 the hour 11:00–12:00 is still open for late data (5 min), so 00:00–11:00
    # = 11 hours × 3 assessed factors are expected; SO2 received for 08, 09, 10; 10 invalid
    assert (r["mn"], r["expected"], r["received"], r["valid"]) == ("MN0001", 33, 3, 2)
    assert r["time"] == int(day.timestamp())
    assert abs(r["effective_rate"] - 2 / 33) < 1e-9
    (d,) = influxdb.query(influx_db, "SELECT * FROM cems_rate WHERE \"level\" = 'district'")
    # the month to date: every hour since the 1st is due (issue 12 item 4: not from the first record)
    before = 24 * 3 * (day.day - 1)
    assert (d["district"], d["expected"], d["received"], d["valid"]) == ("130602", before + 33, 3, 2)
    assert d["supervision"] is True and "低于考核目标" in d["reasons"]
