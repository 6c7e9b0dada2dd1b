"""One figure in three places (issue 12 item 4): for the same outlet and day, live ``cems_rate`` (written by a
real ``cems run`` ingest service), ``cems report`` (read back from the same InfluxDB) and the dashboard's
outlet panel agree; an outlet that never reported is there at 0 %."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.report import Period, influx_loader, load_report
from cems.service.compliance import ComplianceConfig
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

# MN0002 never reports and has no `since`: it is due from the start of the day like any other outlet.
REGISTRY = one_outlet(
    tail='[[enterprise.outlet]]\nmn = "MN0002"\nname = "2#机组排放口"\nprofile = "coal_power_ultra_low"\n'
    'password = "123456"\n'
)
DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "cems-compliance.json"


def _outlet_panel_query() -> str:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    # panel 11: 本月传输有效率低于 90 % 的排口 (outlets below 90 %, the month's Σ valid ÷ Σ expected)
    (q,) = [t["query"] for p in dash["panels"] if p["id"] == 11 for t in p["targets"]]
    q = q.replace("$timeFilter", "time > now() - 14d")
    return re.sub(r"/\^\$\w+\$/", "/^.*$/", q)


async def test_live_rate_report_and_dashboard_show_one_figure(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    day = (datetime.now(BEIJING) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    now = {"t": day + timedelta(hours=8)}
    registry = parse_registry(REGISTRY)
    svc = IngestService(
        registry,
        MqttSettings(url=mosquitto.url, client_id=f"cems-assess-{uuid.uuid4().hex[:6]}"),
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
    q = "SELECT * FROM cems_rate WHERE \"level\" = 'outlet'"
    try:
        # MN0001: hours 08 and 09 fully valid, hour 10 only 30 minutes (not valid, HJ 75-2017)
        for m in range(150):
            t = day + timedelta(hours=8, minutes=m)
            doc = {
                "data_time": t.isoformat(),
                "values": {"a21026": {"Avg": 10.0, "Flag": "N"}, "a19001": {"Avg": 8.0, "Flag": "N"}},
            }
            await asyncio.to_thread(pub.publish, "cems/v1/MN0001/min", json.dumps(doc))
        await asyncio.to_thread(wait_until, lambda: svc.stats.accepted == 150)
        now["t"] = day + timedelta(hours=12)  # hours up to 11:00 are over (and written)
        # rewritten as hours complete (the same points are overwritten): wait for the state at 12:00
        rows = await asyncio.to_thread(
            wait_until,
            lambda: [r for r in influxdb.query(influx_db, q, epoch="s") if r["expected"] == 33] or None,
            30,
        )
        rows = await asyncio.to_thread(
            wait_until,
            lambda: (
                [r for r in influxdb.query(influx_db, q, epoch="s") if r["expected"] == 33][1:]
                and [r for r in influxdb.query(influx_db, q, epoch="s") if r["expected"] == 33]
            ),
            30,
        )
    finally:
        pub.close()
        stop.set()
        await asyncio.wait_for(task, 30)
    live = {r["mn"]: r for r in rows}
    assert (live["MN0001"]["expected"], live["MN0001"]["received"], live["MN0001"]["valid"]) == (33, 3, 2)
    # the outlet that never reported is in the live cems_rate, due from midnight
    assert (live["MN0002"]["expected"], live["MN0002"]["received"], live["MN0002"]["valid"]) == (33, 0, 0)
    assert live["MN0002"]["effective_rate"] == 0.0

    report = await asyncio.to_thread(
        load_report, registry, Period.day(day.date().isoformat()), influx_loader(influxdb.url, influx_db), now=now["t"]
    )
    rep = {o.mn: o for o in report.outlets}
    for mn in ("MN0001", "MN0002"):
        r, o = live[mn], rep[mn]
        assert (o.expected, o.received, o.valid) == (r["expected"], r["received"], r["valid"]), mn
        assert o.effective_rate == pytest.approx(r["effective_rate"]), mn
    assert rep["MN0002"].silent

    panel = {r["mn"]: r for r in influxdb.query(influx_db, _outlet_panel_query())}
    for mn in ("MN0001", "MN0002"):
        assert panel[mn]["effective_rate"] == pytest.approx(live[mn]["effective_rate"]), mn
        assert (panel[mn]["expected"], panel[mn]["valid"]) == (live[mn]["expected"], live[mn]["valid"]), mn
