"""Revisions rewrite every field in InfluxDB 1.x (issue 12 follow-up): InfluxDB merges the fields of points
with the same key, so a revised point that left out a field now empty kept the old value.  Each revisable
measurement is written, then revised with fields that became empty, against the real InfluxDB 1.6: the stale
value is gone (a string field reads ``""``; a numeric or boolean one is named in ``unset`` and the readers
drop it)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import pytest

from cems.model import BEIJING, SO2
from cems.report._data import event_from_row, month_from_row
from cems.rules.ambient import AmbientHour
from cems.rules.daily import DailyRecord, MonthResult
from cems.rules.events import Event
from cems.rules.grid import GridHour
from cems.rules.hourly import HourlyRecord
from cems.sinks.lineprotocol import (
    daily_line,
    event_line,
    grid_hourly_line,
    hourly_line,
    monthly_line,
    present,
)

pytestmark = pytest.mark.integration

H8 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)


def _one(influxdb: Any, db: str, measurement: str) -> dict[str, Any]:
    (row,) = influxdb.query(db, f'SELECT * FROM "{measurement}"', epoch="s")
    return dict(row)


def test_a_revision_clears_the_fields_that_became_empty(influxdb: Any, influx_db: str) -> None:
    db = influx_db
    hour = HourlyRecord(
        mn="MN1", pollutant=SO2, hour_start=H8, avg=40.0, o2_avg=6.0, zs_avg=40.0, das_zs_avg=39.0,
        zs_source="computed", valid=True, flag="N", source="minutes", valid_minutes=60, limit=35.0, ref_o2=6.0,
        profile="coal_power_ultra_low", exceeds=True, note="checked",
    )  # fmt: skip
    # back-filled O2 minutes above the dilution cut-off: no corrected value any more, the hour not valid
    hour2 = replace(hour, o2_avg=20.0, zs_avg=None, das_zs_avg=None, valid=False, exceeds=False, o2_invalid=True)
    hour2 = replace(hour2, note="")
    day = DailyRecord(
        mn="MN1", pollutant=SO2, day=date(2026, 5, 1), avg=30.0, zs_avg=31.0, das_avg=None, das_zs_avg=None,
        received_hours=24, valid_hours=22, valid=True, source="hours", limit=35.0, ref_o2=6.0,
        profile="coal_power_ultra_low", exceeds=False, note="n",
    )  # fmt: skip
    day2 = replace(day, zs_avg=None, avg=None, valid_hours=19, valid=False, note="")
    month = MonthResult(
        mn="MN1", pollutant=SO2, month="2026-05", valid_days=25, days_needed=25, month_valid=True,
        valid_hours=600, rule_hours=600, hours_within_limit=590, share_within_limit=590 / 600,
        share_required=0.95, meets_monthly_rule=True, citation="环大气〔2019〕35号",
    )  # fmt: skip
    month2 = replace(month, rule_hours=0, hours_within_limit=0, share_within_limit=None, meets_monthly_rule=None)
    month2 = replace(month2, citation="")
    ev = Event(
        type="hourly_exceedance", mn="MN1", enterprise="E1", district="D1", pollutant=SO2, start=H8,
        end=H8.replace(hour=10), hours=2, peak=50.0, limit=35.0, ref_o2=6.0, profile="coal_power_ultra_low",
        status="closed", marks=("m1",), evidence="x",
    )  # fmt: skip
    ev2 = replace(ev, marks=(), evidence=None, peak=None, late=True)
    pm = AmbientHour(sensor="G1", pollutant="pm25", hour_start=H8, mean=60.0, minutes=50, valid=True)
    gh = GridHour(
        sensor="G1", district="D1", township="T1", kind="township", hour_start=H8, values=(pm,), aqi=82,
        level=2, category="良", primary=("pm25",), standard="HJ 633-2012",
    )  # fmt: skip
    gh2 = replace(gh, values=(replace(pm, mean=None, valid=False, minutes=20),), aqi=None, level=None)
    gh2 = replace(gh2, category=None, primary=())
    influxdb.write(
        db,
        [
            hourly_line(hour, "E1", "D1"),
            daily_line(day, "E1", "D1"),
            monthly_line(month, "E1", "D1"),
            event_line(ev),
            grid_hourly_line(gh),
        ],
        precision="ms",
    )
    first = _one(influxdb, db, "cems_hourly")
    assert first["zs_avg"] == 40.0 and first["note"] == "checked" and first["unset"] == ""
    influxdb.write(
        db,
        [
            hourly_line(hour2, "E1", "D1"),
            daily_line(day2, "E1", "D1"),
            monthly_line(month2, "E1", "D1"),
            event_line(ev2),
            grid_hourly_line(gh2),
        ],
        precision="ms",
    )

    h = _one(influxdb, db, "cems_hourly")
    assert h["note"] == "" and h["valid"] is False and h["o2_invalid"] is True
    assert set(h["unset"].split(",")) == {"zs_avg", "das_zs_avg"}
    assert "zs_avg" not in present(h) and "das_zs_avg" not in present(h) and present(h)["o2_avg"] == 20.0

    d = _one(influxdb, db, "cems_daily")
    assert d["note"] == "" and d["valid"] is False and d["valid_hours"] == 19
    assert {"avg", "zs_avg"} <= set(d["unset"].split(","))
    assert "zs_avg" not in present(d) and "avg" not in present(d)

    m = _one(influxdb, db, "cems_monthly")
    assert m["citation"] == ""
    assert month_from_row(m).meets_monthly_rule is None and month_from_row(m).share_within_limit is None
    assert month_from_row(m).rule_hours == 0

    e = _one(influxdb, db, "cems_event")
    assert e["marks"] == "" and e["evidence"] == "" and e["late"] is True
    back = event_from_row(e)
    assert back.peak is None and back.evidence is None and back.limit == 35.0

    g = _one(influxdb, db, "grid_hourly")
    assert g["category"] == "" and g["primary"] == "" and g["pm25_valid"] is False
    assert {"aqi", "level", "pm25"} == set(g["unset"].split(","))
    assert not {"aqi", "level", "pm25"} & set(present(g))
