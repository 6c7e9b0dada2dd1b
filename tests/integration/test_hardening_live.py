"""Issue 13 through the real Mosquitto and InfluxDB: a poison message, an oversized payload and ill-formed
fields are dead-lettered with a reason while the good readings around them are stored and the service runs on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_ingest import REGISTRY, Mqtt, wait_until  # same directory (pytest prepend import mode)

import cems.service.ingest
from cems.decode import decode_message
from cems.protocol.hj212._crc import crc16
from cems.registry import Registry, parse_registry
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration


class Running:
    def __init__(self, svc: IngestService, task: asyncio.Task[None]) -> None:
        self.svc = svc
        self.task = task


@pytest.fixture
async def running(mosquitto: Any, influxdb: Any, influx_db: str) -> AsyncIterator[Running]:
    svc = IngestService(
        parse_registry(REGISTRY),
        MqttSettings(url=mosquitto.url, client_id=f"cems-hard-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)  # subscriptions acknowledged
    yield Running(svc, task)
    stop.set()
    await asyncio.wait_for(task, 30)


def reading(data_time: str, rtd: float) -> str:
    return json.dumps({"data_time": data_time, "values": {"a21026": {"Rtd": rtd, "Flag": "N"}}})


def hj212_month_13() -> str:
    seg = "QN=20261122080000000;ST=31;CN=2011;PW=123456;MN=MN0001;Flag=5;CP=&&DataTime=20261399000000;a21026-Rtd=1.0&&"
    return f"##{len(seg):04d}{seg}{crc16(seg.encode()):04X}\r\n"


async def stored(influxdb: Any, db: str, n: int) -> list[dict[str, Any]]:
    q = "SELECT * FROM cems_reading"
    rows: list[dict[str, Any]] = await asyncio.to_thread(
        wait_until, lambda: (r := influxdb.query(db, q)) and len(r) >= n and r
    )
    return rows


async def test_poison_messages_are_dead_lettered_and_ingestion_goes_on(
    running: Running, mosquitto: Any, influxdb: Any, influx_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = decode_message

    def buggy(topic: str, payload: bytes, registry: Registry, **kw: Any) -> Any:
        if b"BUG" in payload:
            raise RuntimeError("a bug this message triggers")
        return real(topic, payload, registry, **kw)

    monkeypatch.setattr(cems.service.ingest, "decode_message", buggy)
    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    try:
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", reading("2026-11-22T08:00:00+08:00", 1.0))
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", reading("20261399000000", 2.0))
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hj212", hj212_month_13())
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", b'{"BUG": true}')
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", reading("2026-11-22T08:01:00+08:00", 3.0))
        got = await asyncio.to_thread(wait_until, lambda: len(dl.got) >= 3 and list(dl.got))
        letters = {json.loads(p)["reason"]: json.loads(p) for _, p in got}
        assert sorted(letters) == ["bad_data_time", "hj212_datatime", "internal_error"]
        assert letters["internal_error"]["detail"] == "RuntimeError: a bug this message triggers"
        assert letters["bad_data_time"]["topic"] == "cems/v1/MN0001/rtd"
        rows = await stored(influxdb, influx_db, 2)
        assert sorted(r["a21026_Rtd"] for r in rows) == [1.0, 3.0]
        assert not running.task.done()
        assert running.svc.stats.rejected["internal_error"] == 1
        # still running, and the poison messages were acknowledged: a later reading is stored too
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", reading("2026-11-22T08:02:00+08:00", 4.0))
        rows = await stored(influxdb, influx_db, 3)
        assert sorted(r["a21026_Rtd"] for r in rows) == [1.0, 3.0, 4.0]
        assert not running.task.done()
    finally:
        pub.close()
        dl.close()


async def test_a_too_large_payload_is_dead_lettered_small_and_later_readings_are_stored(
    running: Running, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    try:
        # 2 MB of control characters: JSON-escaped whole, the letter was ≈ 12 MB, past Mosquitto's packet limit
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", b"\x01" * 2_000_000)
        for minute in range(5):
            body = reading(f"2026-11-22T09:0{minute}:00+08:00", float(minute))
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", body)
        got = await asyncio.to_thread(wait_until, lambda: list(dl.got))
        ((topic, letter),) = got
        doc = json.loads(letter)
        assert topic == "cems/deadletter/v1/too_large" and len(letter) < 32 * 1024
        assert doc["truncated"] is True and doc["payload_bytes"] == 2_000_000
        rows = await stored(influxdb, influx_db, 5)
        assert len(rows) == 5 and not running.task.done()
    finally:
        pub.close()
        dl.close()


async def test_ill_formed_fields_and_implausible_grid_readings_are_dead_lettered_not_stored(
    running: Running, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    now = "2026-11-22T10:00:00+08:00"
    future = "2099-01-01T00:00:00+08:00"
    bad = [
        # a suffix ending in a backslash: InfluxDB refused the batch, found by bisection (slow for everyone)
        ("cems/v1/MN0001/rtd", {"data_time": now, "values": {"a21026": {"Rtd\\": 1.0}}}, "bad_field"),
        ("cems/v1/MN0001/rtd", {"data_time": now, "values": {"x99999": {"Rtd": 1e308}}}, "absurd_value"),
        ("grid/v1/G001", {"data_time": future, "values": {"a34004": {"Rtd": 1.0}}}, "future_data_time"),
        ("grid/v1/G001", {"data_time": now, "values": {"a34004": {"Rtd": 1e300}}}, "absurd_value"),
    ]  # fmt: skip
    try:
        for topic, body, _ in bad:
            await asyncio.to_thread(pub.publish, topic, json.dumps(body))
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", reading(now, 7.0))
        got = await asyncio.to_thread(wait_until, lambda: len(dl.got) >= len(bad) and list(dl.got))
        assert sorted(json.loads(p)["reason"] for _, p in got) == sorted(r for _, _, r in bad)
        rows = await stored(influxdb, influx_db, 1)
        assert [r["a21026_Rtd"] for r in rows] == [7.0]
        assert influxdb.query(influx_db, "SELECT * FROM grid_reading") == []
        assert running.svc.stats.rejected["database_rejected"] == 0
    finally:
        pub.close()
        dl.close()
