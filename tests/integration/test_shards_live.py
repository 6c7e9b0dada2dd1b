"""Several ingesters on one broker (issue 20): ``--shard K/N`` topic sharding and ``$share`` shared subscriptions,
through the real Mosquitto and InfluxDB; every outlet's hourly records equal a single-process replay."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import many_outlets  # tests/registries.py
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.errors import ServiceError
from cems.model import BEIJING
from cems.registry import Registry, parse_registry
from cems.registry.shard import Shard, outlet_topic, shard_of, shard_registry
from cems.replay import replay
from cems.service.compliance import ComplianceConfig
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

N_OUTLETS = 6


def minute_data(reg: Registry, day: datetime, hours: int = 2) -> Iterator[tuple[str, str, str]]:
    """(mn, stream, JSON payload): every minute of ``hours`` hours from 08:00 for every outlet, SO2 differing
    per outlet and minute (one outlet above its 35 mg/m³ limit in the second hour)."""
    for k, info in enumerate(sorted(reg.outlets(), key=lambda i: i.outlet.mn)):
        for m in range(60 * hours):
            t = day + timedelta(hours=8, minutes=m)
            so2 = 5.0 + k + (m % 7) + (60.0 if k == 2 and m >= 60 else 0.0)
            doc = {
                "data_time": t.isoformat(),
                "values": {"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}},
            }
            yield info.outlet.mn, "min", json.dumps(doc)


def hourly_from_influx(influxdb: Any, db: str) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    rows = influxdb.query(db, "SELECT * FROM cems_hourly", epoch="s")
    return {(r["mn"], r["pollutant"], r["time"]): (round(r["avg"], 6), r["valid"], r["exceeds"]) for r in rows}


def hourly_from_replay(reg: Registry, data: list[tuple[str, str, str]]) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    res = replay(reg, (f"{reg.topics.prefix}/{mn}/{s} {p}" for mn, s, p in data))
    assert res.readings == len(data)
    return {
        (h.mn, h.pollutant, int(h.hour_start.timestamp())): (
            round(h.avg, 6) if h.avg is not None else None,
            h.valid,
            h.exceeds,
        )
        for h in res.hourly
    }


def _service(reg: Registry, url: str, influx: InfluxConfig, state: Path, clock: Any, **settings: Any) -> IngestService:
    return IngestService(
        reg,
        MqttSettings(url=url, client_id=f"cems-{state.name}-{uuid.uuid4().hex[:6]}"),
        influx,
        IngestSettings(spool_dir=state / "spool", **settings),
        compliance=ComplianceConfig(state_dir=state, clock=clock, clock_interval_s=0.2, rates_interval_s=0.0),
    )


async def test_two_shards_each_take_their_outlets_and_equal_one_replay(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    whole = parse_registry(many_outlets(N_OUTLETS - 1))
    shards = [Shard(k, 2) for k in range(2)]
    assert {shard_of(i.outlet.mn, 2) for i in whole.outlets()} == {0, 1}  # both shards have outlets
    day = (datetime.now(BEIJING) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = {"t": day + timedelta(hours=12)}  # both hours are over (and past the lateness)
    influx = InfluxConfig(url=influxdb.url, db=influx_db)
    services = [
        _service(shard_registry(whole, s), mosquitto.url, influx, tmp_path / f"s{s.index}", lambda: clock["t"], shard=s)
        for s in shards
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(svc.run(stop)) for svc in services]
    await asyncio.to_thread(wait_until, lambda: all(svc.conn.connected for svc in services))
    await asyncio.sleep(0.3)
    data = list(minute_data(whole, day))
    pub, dl = Mqtt(mosquitto.url), Mqtt(mosquitto.url)
    dl.subscribe("cems/deadletter/v1/#")
    try:
        for mn, stream, payload in data:
            await asyncio.to_thread(pub.publish, outlet_topic(whole.topics.prefix, mn, stream, 2), payload)
        # a gateway that computed the wrong shard: the outlet's reading reaches shard 0's topic
        stray = next(i.outlet.mn for i in whole.outlets() if shard_of(i.outlet.mn, 2) == 1)
        await asyncio.to_thread(pub.publish, f"cems/v1/s0/{stray}/min", data[0][2])
        await asyncio.to_thread(wait_until, lambda: sum(s.stats.accepted for s in services) == len(data), 60)
        await asyncio.to_thread(wait_until, lambda: services[0].stats.rejected["wrong_shard"] == 1)
        expected = hourly_from_replay(whole, data)
        assert len(expected) == N_OUTLETS * 2 * 2  # 6 outlets × 2 hours × (SO2, O2)
        got = await asyncio.to_thread(
            wait_until, lambda: (h := hourly_from_influx(influxdb, influx_db)) == expected and h, 30
        )
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert any(v[2] for v in got.values())  # the exceeding outlet's hour is in it
    for s, svc in zip(shards, services, strict=True):
        mine = [i.outlet.mn for i in whole.outlets() if s.owns(i.outlet.mn)]
        assert svc.stats.accepted == 120 * len(mine)  # its own outlets only, each once
    (_topic, body) = wait_until(lambda: [m for m in dl.got if m[0].endswith("/wrong_shard")])[0]
    dl.close()
    assert json.loads(body)["topic"] == f"cems/v1/s0/{stray}/min"


async def test_shared_subscription_gives_each_message_to_one_member(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    """``$share/{group}/…`` on Mosquitto (round robin): every message is taken by exactly one of two members.
    (Mosquitto has no per-topic hashing: the outlet affinity the rules need comes from EMQX ``hash_topic``
    or from ``--shard``; here only the delivery of the group is checked, with --no-rules ingesters.)"""
    reg = parse_registry(many_outlets(N_OUTLETS - 1))
    group = f"g{uuid.uuid4().hex[:6]}"
    influx = InfluxConfig(url=influxdb.url, db=influx_db)
    services = [
        IngestService(
            reg,
            MqttSettings(url=mosquitto.url, client_id=f"cems-share-{k}-{uuid.uuid4().hex[:6]}"),
            influx,
            IngestSettings(spool_dir=tmp_path / f"m{k}" / "spool", share_group=group),
        )
        for k in range(2)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(svc.run(stop)) for svc in services]
    await asyncio.to_thread(wait_until, lambda: all(svc.conn.connected for svc in services))
    await asyncio.sleep(0.3)
    day = (datetime.now(BEIJING) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    data = list(minute_data(reg, day, hours=1))
    pub = Mqtt(mosquitto.url)
    try:
        for mn, stream, payload in data:
            await asyncio.to_thread(pub.publish, outlet_topic(reg.topics.prefix, mn, stream), payload)
        await asyncio.to_thread(wait_until, lambda: sum(s.stats.received for s in services) >= len(data), 60)
        await asyncio.sleep(0.5)
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert [s.stats.received for s in services] == [s.stats.accepted for s in services]
    assert sum(s.stats.accepted for s in services) == len(data)  # once each, not once per member
    assert all(s.stats.accepted > 0 for s in services)  # both members took a part
    (row,) = influxdb.query(influx_db, "SELECT count(a21026_Avg) FROM cems_reading")
    assert row["count"] == len(data)


async def test_two_ingesters_on_one_spool_are_refused(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    reg = parse_registry(many_outlets(1))
    influx = InfluxConfig(url=influxdb.url, db=influx_db)
    a, b = (
        IngestService(
            reg,
            MqttSettings(url=mosquitto.url, client_id=f"cems-lock-{k}-{uuid.uuid4().hex[:6]}"),
            influx,
            IngestSettings(spool_dir=tmp_path / "spool"),
        )
        for k in range(2)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    await asyncio.to_thread(wait_until, lambda: a.conn.connected)
    with pytest.raises(ServiceError, match="in use by another ingester"):
        await b.run(asyncio.Event())
    stop.set()
    await asyncio.wait_for(task, 30)
