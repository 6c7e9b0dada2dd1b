"""District figures with two ingesters over one city (issue 20 item 4): each ``--shard K/2`` ingester writes
its part (``level=district_shard``); ``cems districts`` merges them and decides 挂牌督办 once, equal to what
``cems report`` computes from every outlet's ``cems_hourly`` — a decision neither part could take alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import many_outlets  # tests/registries.py
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.registry.shard import Shard, outlet_topic, shard_of, shard_registry
from cems.report import Period, influx_loader, load_report
from cems.rules.district_parts import PART_LEVEL, merge_parts, part_from_row
from cems.service.compliance import ComplianceConfig, ack_event
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

#: 挂牌督办 from two enterprises with an exceeding hour (the default is 5): enterprise E001's outlet MN0001 on
#: one shard and an outlet of E002 on the other, so that each part alone has one enterprise (below it).
CITY = 'supervision_enterprise_threshold = 2\nsupervision_basis = "测试市挂牌督办办法"\n'


async def test_two_shards_parts_merge_to_the_reports_district_figures(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    text = many_outlets(5, city=CITY)
    whole = parse_registry(text)
    other = next(i.outlet.mn for i in whole.outlets() if shard_of(i.outlet.mn, 2) != shard_of("MN0001", 2))
    exceeding = {"MN0001", other}
    day = (datetime.now(BEIJING) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    clock = {"t": day + timedelta(hours=12, minutes=30)}
    influx = InfluxConfig(url=influxdb.url, db=influx_db)
    shards = [Shard(0, 2), Shard(1, 2)]
    services = [
        IngestService(
            shard_registry(whole, s),
            MqttSettings(url=mosquitto.url, client_id=f"cems-dist-{s.index}-{uuid.uuid4().hex[:6]}"),
            influx,
            IngestSettings(spool_dir=tmp_path / f"s{s.index}" / "spool", shard=s),
            compliance=ComplianceConfig(
                state_dir=tmp_path / f"s{s.index}",
                clock=lambda: clock["t"],
                clock_interval_s=0.2,
                rates_interval_s=0.0,
                shard=s,
            ),
        )
        for s in shards
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(svc.run(stop)) for svc in services]
    await asyncio.to_thread(wait_until, lambda: all(svc.conn.connected for svc in services))
    await asyncio.sleep(0.3)
    pub = Mqtt(mosquitto.url)
    n = 0
    try:
        for info in whole.outlets():
            mn = info.outlet.mn
            for m in range(120):  # 08:00–10:00; the exceeding outlets far above 35 mg/m³ in the second hour
                so2 = 8.0 + (300.0 if mn in exceeding and m >= 60 else 0.0)
                doc = {
                    "data_time": (day + timedelta(hours=8, minutes=m)).isoformat(),
                    "values": {"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}},
                }
                await asyncio.to_thread(pub.publish, outlet_topic("cems/v1", mn, "min", 2), json.dumps(doc))
                n += 1
        await asyncio.to_thread(wait_until, lambda: sum(s.stats.accepted for s in services) == n, 60)
        # the report below is computed once, from cems_hourly: wait until every outlet's two hours are stored
        # (accepted counts a reading before its hour is judged; on a loaded machine the report could miss hours
        # and then never equal the parts' merge)
        t0, t1 = (int((day + timedelta(hours=h)).timestamp()) for h in (8, 10))
        hq = f"SELECT * FROM cems_hourly WHERE \"pollutant\" = 'a21026' AND time >= {t0}s AND time < {t1}s"
        hours = len(whole.outlets()) * 2
        await asyncio.to_thread(wait_until, lambda: len(influxdb.query(influx_db, hq)) == hours, 60)
        period = Period.month(f"{day.year:04d}-{day.month:02d}")
        report = await asyncio.to_thread(
            load_report, whole, period, influx_loader(influxdb.url, influx_db), now=clock["t"]
        )
        expected = [mr for row in report.districts for mr in row.months]
        assert len(expected) == 1 and expected[0].supervised
        assert expected[0].exceeding_enterprises == ("E001", "E002")  # the 2-enterprise rule, across shards
        q = f'SELECT * FROM cems_rate WHERE "level" = \'{PART_LEVEL}\' GROUP BY "district", "shard"'

        def merged() -> Any:
            parts = [part_from_row(r) for r in influxdb.query(influx_db, q, epoch="s")]
            if len(parts) != 2:
                return None
            return (parts, merge_parts(whole.city, parts)) if merge_parts(whole.city, parts) == expected else None

        parts, _ = await asyncio.to_thread(wait_until, merged, 30)
        # an acknowledgement reaches both ingesters: the owner of the event answers, the other stays silent
        eq = f"SELECT * FROM cems_event WHERE \"type\" = 'hourly_exceedance' AND \"mn\" = '{other}'"
        (ev, *_) = await asyncio.to_thread(wait_until, lambda: influxdb.query(influx_db, eq), 30)
        dl = Mqtt(mosquitto.url)
        dl.subscribe("cems/deadletter/v1/#")
        reply = await ack_event(MqttSettings(url=mosquitto.url), whole.topics, ev["event_id"], "值班员", confirm_s=20)
        assert reply is not None and reply["result"] == "acknowledged", reply
        owner, bystander = (services[1], services[0]) if shard_of(other, 2) == 1 else (services[0], services[1])
        assert owner.compliance is not None and bystander.compliance is not None
        by = bystander.compliance
        await asyncio.to_thread(wait_until, lambda: by.stats.other_shard_commands == 1)
        assert owner.compliance.stats.acks == 1 and owner.compliance.stats.other_shard_commands == 0
        await asyncio.sleep(0.5)
        assert not dl.got  # no unknown_event dead letter from the other shard
        dl.close()
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    # each part alone: one exceeding enterprise, below the threshold of 2; the sum of the outlets is the city's
    assert sorted(len(p.enterprises) for p in parts) == [1, 1]
    assert sum(p.outlets for p in parts) == len(whole.outlets())
    # nothing written under the district's own key by a sharded ingester
    assert not influxdb.query(influx_db, "SELECT * FROM cems_rate WHERE \"level\" = 'district'")
    # the aggregator: `cems districts` prints the merged figure and, with --write, stores it as level=district
    reg_file = tmp_path / "registry.toml"
    reg_file.write_text(text, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "cems", "districts", "--config", str(reg_file), "--month", period.key,
         "--influx-url", influxdb.url, "--influx-db", influx_db, "--write"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    (doc,) = [json.loads(line) for line in out.splitlines()]
    assert doc == expected[0].to_json()
    (row,) = influxdb.query(influx_db, "SELECT * FROM cems_rate WHERE \"level\" = 'district'")
    assert (row["expected"], row["valid"], row["supervision"]) == (expected[0].expected, expected[0].valid, True)
    assert "2 家企业小时均值超标" in row["reasons"]
