"""Data interruption (数据中断) live: opens as soon as the threshold passes on the clock, closes at the first
data after the gap; silence inside a declared stop is not an interruption.  And the same from replay."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.replay import replay
from cems.service.compliance import ComplianceConfig
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

T0 = (datetime.now(BEIJING) - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)

REGISTRY = f"""
[city]
name = "测试市"
[[district]]
code = "D1"
name = "d"
[[enterprise]]
id = "E1"
name = "e"
district = "D1"
[[enterprise.outlet]]
mn = "LIVE"
name = "o"
profile = "cement_kiln"
rtd_interval_s = 30
[[enterprise.outlet]]
mn = "STOPPED"
name = "s"
profile = "cement_kiln"
rtd_interval_s = 30
[[enterprise.outlet.stop]]
from = {(T0 + timedelta(minutes=5)).isoformat()}
to = {(T0 + timedelta(hours=2)).isoformat()}
reason = "停产检修"
"""


def doc(mn: str, t: datetime) -> str:
    return json.dumps(
        {
            "mn": mn,
            "stream": "rtd",
            "data_time": t.isoformat(),
            "values": {"a21026": {"Rtd": 20.0, "Flag": "N"}, "a19001": {"Rtd": 10.0, "Flag": "N"}},
        }
    )


def test_replay_derives_the_interruption_from_data_times() -> None:
    lines = [doc(mn, T0 + timedelta(seconds=30 * i)) for mn in ("LIVE", "STOPPED") for i in range(10)]
    lines += [doc("LIVE", T0 + timedelta(minutes=40))]
    lines += [doc("STOPPED", T0 + timedelta(minutes=40))]  # silence inside the declared stop
    res = replay(parse_registry(REGISTRY), lines, "jsonl")
    ev = [e.to_json() for e in res.events if e.type == "data_interruption"]
    assert [(e["mn"], e["start"], e["end"], e["status"]) for e in ev] == [
        ("LIVE", (T0 + timedelta(seconds=270)).isoformat(), (T0 + timedelta(minutes=40)).isoformat(), "closed")
    ]


async def test_interruption_opens_on_the_clock_and_closes_with_data(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    now = {"t": T0}
    svc = IngestService(
        parse_registry(REGISTRY),
        MqttSettings(url=mosquitto.url, client_id=f"cems-intr-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db),
        compliance=ComplianceConfig(state_dir=tmp_path / "state", clock=lambda: now["t"], clock_interval_s=0.2),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)
    pub = Mqtt(mosquitto.url)
    alerts = Mqtt(mosquitto.url)
    alerts.subscribe("cems/alerts/v1/#")
    try:
        for i in range(10):
            for mn in ("LIVE", "STOPPED"):
                await asyncio.to_thread(pub.publish, f"cems/v1/{mn}/rtd", doc(mn, T0 + timedelta(seconds=30 * i)))
        await asyncio.to_thread(wait_until, lambda: svc.stats.accepted == 20)
        now["t"] = T0 + timedelta(minutes=14)  # last data 09:04:30 + 10 min threshold = 09:14:30: not yet
        await asyncio.sleep(1.0)
        assert not alerts.got
        now["t"] = T0 + timedelta(minutes=15)
        got = await asyncio.to_thread(wait_until, lambda: list(alerts.got))
        ((topic, body),) = got
        opened = json.loads(body)
        assert topic == "cems/alerts/v1/D1/E1/data_interruption"
        assert (opened["mn"], opened["status"], opened["update"]) == ("LIVE", "open", "opened")
        assert opened["start"] == (T0 + timedelta(seconds=270)).isoformat() and opened["end"] is None
        now["t"] = T0 + timedelta(minutes=20)
        await asyncio.to_thread(pub.publish, "cems/v1/LIVE/rtd", doc("LIVE", T0 + timedelta(minutes=20)))
        closed = await asyncio.to_thread(
            wait_until, lambda: [json.loads(b) for _, b in alerts.got if json.loads(b)["status"] == "closed"]
        )
        assert closed[0]["end"] == (T0 + timedelta(minutes=20)).isoformat()
        assert not [b for _, b in alerts.got if json.loads(b)["mn"] == "STOPPED"]
    finally:
        pub.close()
        alerts.close()
        stop.set()
        await asyncio.wait_for(task, 30)
