"""The ingest service through the real Mosquitto and InfluxDB: publish → point in InfluxDB; bad input →
dead letter while the service keeps running."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from registries import one_outlet  # tests/registries.py

from cems.registry import Registry, parse_registry
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

REGISTRY = one_outlet(
    enterprise='sector = "power"\n',
    tail='[[grid_sensor]]\nid = "G001"\ndistrict = "130602"\ntownship = "先锋街道"\n',
)


class Mqtt:
    """A plain paho client for tests: publish QoS 1 and wait; collect messages of subscribed topics."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}")
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c.on_message = lambda _c, _u, m: self._add(m)
        self.c.connect(host, int(port))
        self.c.loop_start()

    def _add(self, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((m.topic, bytes(m.payload)))

    def subscribe(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)[0]
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_until(pred: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY)


@pytest.fixture
async def service(registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str) -> AsyncIterator[IngestService]:
    svc = IngestService(
        registry,
        MqttSettings(url=mosquitto.url, client_id=f"cems-test-{uuid.uuid4().hex[:6]}"),
        InfluxConfig(url=influxdb.url, db=influx_db),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected)
    await asyncio.sleep(0.3)  # subscriptions acknowledged
    yield svc
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_json_reading_lands_in_influxdb_with_tags_fields_and_data_time(
    service: IngestService, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    payload = {
        "schema": "cems.reading/1",
        "data_time": "2026-11-22T08:00:30+08:00",
        "qn": "20261122080030123",
        "values": {"a21026": {"Rtd": 12.5, "ZsRtd": 15.1, "Flag": "N"}, "a19001": {"Rtd": 8.2, "Flag": "N"}},
    }
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", json.dumps(payload))
    q = "SELECT * FROM cems_reading"
    rows = await asyncio.to_thread(wait_until, lambda: influxdb.query(influx_db, q, epoch="s"))
    pub.close()
    assert len(rows) == 1
    row = rows[0]
    # the data's own time (08:00:30 Beijing = 00:00:30 UTC), never the arrival time
    assert row["time"] == 1795305630
    assert (row["mn"], row["stream"], row["enterprise"], row["district"]) == ("MN0001", "rtd", "E001", "130602")
    assert row["a21026_Rtd"] == 12.5 and row["a21026_ZsRtd"] == 15.1 and row["a21026_Flag"] == "N"
    assert row["a19001_Rtd"] == 8.2 and row["qn"] == "20261122080030123"


async def test_bad_payloads_go_to_dead_letter_and_good_ones_beside_them_are_stored(
    service: IngestService, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    good = {"data_time": "2026-11-22T09:00:00+08:00", "values": {"a21026": {"Avg": 20.0, "Flag": "N"}}}
    bad = [
        ("cems/v1/MN0001/rtd", b"{not json", "malformed_json"),
        (
            "cems/v1/MN0001/rtd",
            b'{"data_time":"2026-11-22T09:00:00+08:00","values":{"a21026":{"Rtd":"x"}}}',
            "bad_field",
        ),
        ("cems/v1/UNKNOWN/rtd", json.dumps(good).encode(), "unknown_mn"),
        ("cems/v1/MN0001/rtd", json.dumps({**good, "mn": "OTHER"}).encode(), "mn_mismatch"),
        (
            "cems/v1/MN0001/rtd",
            b'{"data_time":"2026-11-22T09:00:00+08:00","values":{"a21026":{"Rtd":-50.0}}}',
            "negative_value",
        ),
        (
            "cems/v1/MN0001/rtd",
            b'{"data_time":"2099-01-01T00:00:00+08:00","values":{"a21026":{"Rtd":1.0}}}',
            "future_data_time",
        ),
        ("cems/v1/MN0001/weekly", json.dumps(good).encode(), "bad_topic"),
    ]
    for topic, body, _ in bad[:3]:
        await asyncio.to_thread(pub.publish, topic, body)
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hour", json.dumps(good))
    for topic, body, _ in bad[3:]:
        await asyncio.to_thread(pub.publish, topic, body)
    got = await asyncio.to_thread(wait_until, lambda: len(dl.got) >= len(bad) and list(dl.got))
    reasons = sorted(json.loads(p)["reason"] for _, p in got)
    assert reasons == sorted(r for _, _, r in bad)
    first = json.loads(got[0][1])
    assert first["detail"] and first["topic"].startswith("cems/v1/")
    assert service.stats.rejected["malformed_json"] == 1
    rows = await asyncio.to_thread(wait_until, lambda: influxdb.query(influx_db, "SELECT * FROM cems_reading"))
    assert [(r["stream"], r["a21026_Avg"]) for r in rows] == [("hour", 20.0)]
    # still running: a later good message is stored too
    later = {"data_time": "2026-11-22T10:00:00+08:00", "values": {"a21026": {"Avg": 21.0, "Flag": "N"}}}
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hour", json.dumps(later))
    await asyncio.to_thread(wait_until, lambda: len(influxdb.query(influx_db, "SELECT * FROM cems_reading")) == 2)
    pub.close()
    dl.close()


async def test_grid_sensor_reading_is_stored(
    service: IngestService, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    body = {"data_time": "2026-11-22T08:01:00+08:00", "values": {"a34004": {"Rtd": 35.0}, "a34002": {"Rtd": 60.0}}}
    await asyncio.to_thread(pub.publish, "grid/v1/G001", json.dumps(body))
    rows = await asyncio.to_thread(wait_until, lambda: influxdb.query(influx_db, "SELECT * FROM grid_reading"))
    pub.close()
    assert rows[0]["sensor"] == "G001" and rows[0]["township"] == "先锋街道" and rows[0]["a34004_Rtd"] == 35.0


async def test_message_is_redelivered_when_ingester_stops_before_it_is_durable(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    """Persistent session: readings published while the ingester is away are ingested when it returns."""
    cid = f"cems-persist-{uuid.uuid4().hex[:6]}"

    async def run_for(seconds: float) -> IngestService:
        svc = IngestService(
            registry, MqttSettings(url=mosquitto.url, client_id=cid), InfluxConfig(url=influxdb.url, db=influx_db)
        )
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 30)
        return svc

    await run_for(1.0)  # creates the persistent session and its subscriptions
    pub = Mqtt(mosquitto.url)
    for minute in range(5):
        body = {"data_time": f"2026-11-22T08:0{minute}:00+08:00", "values": {"a21026": {"Rtd": 10.0 + minute}}}
        await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", json.dumps(body))
    pub.close()
    svc = await run_for(3.0)
    assert svc.stats.accepted == 5
    rows = influxdb.query(influx_db, "SELECT a21026_Rtd FROM cems_reading")
    assert sorted(r["a21026_Rtd"] for r in rows) == [10.0, 11.0, 12.0, 13.0, 14.0]


async def test_raw_hj212_packets_are_ingested_and_checked(
    service: IngestService, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    from cems.protocol.hj212 import encode

    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")

    def packet(mn: str = "MN0001", pw: str = "123456", minute: int = 0) -> str:
        return encode(
            cn="2051",
            qn=f"20261122080{minute}00000",
            st="31",
            pw=pw,
            mn=mn,
            flag=5,
            data_time=f"202611220{8}{minute:02d}00",
            values={
                "a21026": {"Min": 10.0, "Avg": 12.0, "Max": 14.0, "Flag": "N"},
                "a19001": {"Avg": 7.5, "Flag": "N"},
            },
        )

    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hj212", packet())
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hj212", packet(pw="wrong", minute=1))
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hj212", packet(mn="MN0002", minute=2))
    bad_crc = packet(minute=3).replace("\r\n", "")[:-4] + "0000"
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/hj212", bad_crc)
    got = await asyncio.to_thread(wait_until, lambda: len(dl.got) >= 3 and list(dl.got))
    assert sorted(json.loads(p)["reason"] for _, p in got) == ["bad_password", "hj212_crc", "mn_mismatch"]
    rows = await asyncio.to_thread(
        wait_until, lambda: influxdb.query(influx_db, "SELECT * FROM cems_reading", epoch="s")
    )
    pub.close()
    dl.close()
    assert len(rows) == 1
    r = rows[0]
    assert (r["stream"], r["a21026_Avg"], r["a21026_Flag"], r["a19001_Avg"]) == ("min", 12.0, "N", 7.5)
    assert r["time"] == 1795305600  # DataTime 2026-11-22 08:00 Beijing


async def test_identical_resent_message_is_a_counted_duplicate(
    service: IngestService, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    pub = Mqtt(mosquitto.url)
    dl = Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    body = json.dumps({"data_time": "2026-11-22T11:00:00+08:00", "values": {"a21026": {"Rtd": 5.0}}})
    corrected = json.dumps({"data_time": "2026-11-22T11:00:00+08:00", "values": {"a21026": {"Rtd": 6.0}}})
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", body)
    await asyncio.to_thread(wait_until, lambda: service.stats.accepted == 1)
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", body)  # a DAS resending: duplicate
    await asyncio.to_thread(pub.publish, "cems/v1/MN0001/rtd", corrected)  # same key, new content: a revision
    got = await asyncio.to_thread(wait_until, lambda: list(dl.got))
    await asyncio.to_thread(wait_until, lambda: service.stats.accepted == 2)
    pub.close()
    dl.close()
    assert [json.loads(p)["reason"] for _, p in got] == ["duplicate"]
    assert service.stats.rejected["duplicate"] == 1
    rows = influxdb.query(influx_db, "SELECT a21026_Rtd FROM cems_reading")
    assert [r["a21026_Rtd"] for r in rows] == [6.0]  # one point per key; the revision overwrote it
