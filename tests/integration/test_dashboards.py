"""Grafana cannot run here: prove the dashboards by running every panel query (and template-variable query)
against the real InfluxDB holding realistic data (a simulated fleet, replayed through the engine), and by
checking the JSON's structure."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cems.devtools.demo import sample_registry_toml
from cems.protocol.payload import encode_payload
from cems.registry import parse_registry
from cems.replay import replay
from cems.sinks.influx import InfluxConfig
from cems.sinks.lineprotocol import point
from cems.sinks.store import store_replay
from gateways.simulator import FleetModel, SimConfig

pytestmark = pytest.mark.integration

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "dashboards").glob("*.json"))


def _queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(f"panel {p['id']} {p['title']}", t["query"]) for p in dash["panels"] for t in p["targets"]]
    out += [(f"variable {v['name']}", v["query"]) for v in dash.get("templating", {}).get("list", [])]
    return out


def _substitute(q: str) -> str:
    """What Grafana does before sending a query (with 'All' selected and a 14-day range)."""
    q = q.replace("$timeFilter", "time > now() - 14d").replace("$__interval", "10m")
    return re.sub(r"/\^\$\w+\$/", "/^.*$/", q)


def test_dashboard_json_structure() -> None:
    assert len(DASHBOARDS) >= 2
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text(encoding="utf-8"))
        assert dash["uid"] not in uids and dash["title"] and dash["schemaVersion"] >= 30
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in dash["panels"]:
            assert p["datasource"]["uid"] == "cems-influxdb" and p["type"] and p["targets"]
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p["targets"]:
                assert t["rawQuery"] is True and t["query"].lstrip().upper().startswith("SELECT")
                bounded = "$timeFilter" in t["query"] or "time > now() - " in t["query"]
                assert bounded, f"{path.name}: {p['title']} has no time bound"
    prov = Path(__file__).resolve().parents[2] / "dashboards" / "provisioning" / "datasources" / "influxdb.yml"
    assert "uid: cems-influxdb" in prov.read_text()


@pytest.fixture(scope="module")
def fleet_db(influxdb: Any) -> str:
    """Twelve hours of a simulated fleet with frequent events, ingested through the replay engine."""
    db = "dashboards_test"
    influxdb.drop_db(db)
    influxdb.create_db(db)
    registry = parse_registry(sample_registry_toml(6))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    cfg = SimConfig(exceedances_per_day=6, calibrations_per_day=6, maintenance_per_day=3, gaps_per_day=2)
    model = FleetModel(registry, seed=7, start=end - timedelta(hours=12), config=cfg)
    emissions = model.advance(end)
    plant = [e for e in emissions if e.outlet is not None]
    grid = [e for e in emissions if e.outlet is None]
    lines = [encode_payload(e.reading).decode() for e in plant]
    res = replay(registry, lines, "jsonl", keep_readings=True)
    assert res.readings == len(plant) and not res.rejected
    import asyncio

    asyncio.run(store_replay(InfluxConfig(url=influxdb.url, db=db), res))
    sensors = {g.id: g for g in registry.grid_sensor}
    grid_lines = []
    for e in grid:
        g = sensors[e.reading.mn]
        fields = {f"{c}_{s}": v for c, m in e.reading.measurements.items() for s, v in m.values.items()}
        grid_lines.append(
            point(
                "grid_reading",
                {"sensor": g.id, "district": g.district, "township": g.township},
                fields,
                round(e.reading.data_time.timestamp() * 1000),
            )
        )
    influxdb.write(db, grid_lines, precision="ms")
    return db


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_query_runs_and_returns_data(path: Path, fleet_db: str, influxdb: Any) -> None:
    dash = json.loads(path.read_text(encoding="utf-8"))
    empty = []
    for name, q in _queries(dash):
        rows = influxdb.query(fleet_db, _substitute(q))  # raises on an InfluxQL error
        if not rows:
            empty.append(name)
    assert not empty, f"{path.name}: queries with no data: {empty}"
