"""``cems warning suggest`` (issue 16): the city's hourly AQI from the stations' ``grid_hourly`` values in the real
InfluxDB, and the level the plans' criteria give for the trailing run of hours with AQI > 200."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from cems.model import BEIJING
from cems.rules.ambient import AmbientHour
from cems.rules.grid import GridHour
from cems.sinks.lineprotocol import grid_hourly_line

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 30, 12, tzinfo=BEIJING)


def hour(sensor: str, kind: str, t: datetime, pm25: float, *, valid: bool = True) -> GridHour:
    # the AQI the engine would give is not what the command reads: it recomputes the city's from the values
    values = (
        AmbientHour(sensor, "pm25", t, pm25, 60, valid),
        AmbientHour(sensor, "pm10", t, pm25 * 1.3, 60, True),
        AmbientHour(sensor, "so2", t, 10.0, 60, True),
        AmbientHour(sensor, "no2", t, 40.0, 60, True),
        AmbientHour(sensor, "co", t, 1.0, 60, True),
        AmbientHour(sensor, "o3", t, 20.0, 60, True),
    )
    return GridHour(sensor, "130602", "t1", kind, t, values, 999, 6, "严重污染", ("pm25",), "HJ 633-2026")


@pytest.fixture
def db(influxdb: object) -> Iterator[str]:
    name = f"suggest_{uuid.uuid4().hex[:8]}"
    influxdb.create_db(name)  # type: ignore[attr-defined]
    yield name
    influxdb.drop_db(name)  # type: ignore[attr-defined]


def suggest(url: str, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cems", "warning", "suggest", "--influx-url", url, "--influx-db", db, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_suggests_the_level_of_the_observed_run(influxdb: object, db: str) -> None:
    url = influxdb.url  # type: ignore[attr-defined]
    lines = []
    # 100 hours: clean, then the last 80 hours heavily polluted at the two national stations (PM2.5 200 and
    # 240 µg/m³: city mean 220 → IAQI 270 on HJ 633-2026's 24-h breakpoints 150/250 ↔ 200/300), except one hour
    # 78 hours back where neither reported: the run that counts is the last 77 hours → orange (≥ 72 h).
    for i in range(1, 101):
        t = END - timedelta(hours=i)
        polluted = i <= 80
        if i == 78:
            continue
        lines.append(grid_hourly_line(hour("N1", "national_station", t, 200.0 if polluted else 30.0)))
        lines.append(grid_hourly_line(hour("N2", "national_station", t, 240.0 if polluted else 30.0)))
        # a micro-station by a building site, far worse all along: not one of the stations the plans use
        lines.append(grid_hourly_line(hour("M1", "micro_station", t, 600.0)))
    # N2's last hour revised to no valid PM2.5 (its old value stays in InfluxDB beside `unset`): the city's
    # PM2.5 that hour is N1's alone
    lines.append(grid_hourly_line(hour("N2", "national_station", END - timedelta(hours=1), 240.0, valid=False)))
    influxdb.write(db, lines, precision="ms")  # type: ignore[attr-defined]

    r = suggest(url, db, "--at", END.isoformat(), "--hours", "100", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["level"] == "orange" and "last 77 h" in out["reason"], out["reason"]
    assert out["stations"] == 2 and len(out["hours"]) == 100
    last = out["hours"][-1]
    assert last["means"]["pm25"] == 200.0 and last["stations"] == 2 and last["aqi"] == 250
    missing = out["hours"][100 - 78]
    assert missing["aqi"] is None and missing["stations"] == 0
    assert out["hours"][-2]["means"]["pm25"] == 220.0 and out["hours"][-2]["aqi"] == 270

    # the micro-stations alone: 100 hours of PM2.5 600 (IAQI 500 at 500 µg/m³, beyond: 500) → red
    r = suggest(url, db, "--at", END.isoformat(), "--hours", "100", "--kinds", "micro_station")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("suggested level: red (AQI reached 500"), r.stdout
    assert "a suggestion only" in r.stdout

    # a window without data: a clear message and exit 1
    r = suggest(url, db, "--at", (END - timedelta(days=30)).isoformat(), "--hours", "48")
    assert r.returncode == 1 and "no grid_hourly values of national_station stations" in r.stderr

    r = suggest(url, db, "--kinds", "sattelite")
    assert r.returncode != 0 and "unknown kind(s) sattelite" in r.stderr
