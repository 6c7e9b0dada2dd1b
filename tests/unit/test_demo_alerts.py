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
