"""``cems demo`` shows each alert as a line a person can read: names, pollutant, value against the limit."""

from __future__ import annotations

import json

from registries import one_outlet  # tests/registries.py

from cems.devtools.demo import format_alert
from cems.registry import parse_registry


def test_alert_line_names_enterprise_outlet_pollutant_and_limit() -> None:
    reg = parse_registry(one_outlet())
    info = reg.outlets()[0]
    body = {
        "event_id": "e1",
        "type": "hourly_exceedance",
        "update": "opened",
        "mn": info.outlet.mn,
        "enterprise": info.enterprise.id,
        "pollutant": "a21026",
        "start": "2026-11-30T14:00:00+08:00",
        "peak": 52.26,
        "limit": 35.0,
        "ref_o2": 6.0,
        "hours": 1,
    }
    line = format_alert("cems/alerts/v1/x/y/hourly_exceedance", json.dumps(body).encode(), reg)
    assert line is not None
    assert "2026-11-30 14:00 小时超标开始" in line
    assert info.enterprise.name in line and info.outlet.name in line and info.outlet.mn in line
    assert "二氧化硫  折算 52.3 mg/m³ > 限值 35 @ 6% O2" in line
    assert format_alert("t", json.dumps({**body, "update": "updated"}).encode(), reg) is None
    assert format_alert("t", b'{"request_id": "r", "result": "acknowledged"}', reg) is None
    assert format_alert("t", b"not json", reg) is None


def test_a_grid_hotspot_alert_names_the_sensor_its_value_and_the_neighbours_median() -> None:
    reg = parse_registry(one_outlet())
    body = {
        "event_id": "e2",
        "type": "grid_hotspot",
        "update": "opened",
        "mn": "G130602001",
        "enterprise": "grid",
        "pollutant": "pm25",
        "start": "2026-11-30T09:00:00+08:00",
        "peak": 112.4,
        "limit": 67.5,
        "hours": 3,
        "evidence": {"hours": [{"median": 45.0, "neighbours": {"G2": 44.0, "G3": 45.0, "G4": 47.0}}]},
    }
    line = format_alert("cems/alerts/v1/130602/grid/grid_hotspot", json.dumps(body).encode(), reg)
    assert line == (
        "  ▶ 2026-11-30 09:00 网格热点（明显高于周边）开始  网格站 G130602001  PM2.5  112.4 µg/m³ ≥ 热点阈值 67.5"
        "（周边 3 站中位数 45.0）  3 h"
    )
