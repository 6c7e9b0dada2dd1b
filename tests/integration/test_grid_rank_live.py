"""The live township ranking through a real ``cems run`` (issue 15 item 3): a whole Beijing day of hourly
grid records (HJ 212 ST=22 CN=2061) for sensors in two townships; once the day has closed and its
``grid_daily`` points are written, the ingester writes the day's ``grid_rank`` points; data for the same day
from a sensor that had none (a revision of the day) re-rank it. Ranks and indices against values by hand."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from live_clock import closed_day  # tests/live_clock.py
from registries import one_outlet  # tests/registries.py
from test_event_time_live import _health_up
from test_grid_live import _cems_run
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)
from test_reliability import _free_port

from cems.model import BEIJING
from cems.protocol import hj212

pytestmark = pytest.mark.integration

SENSORS = """
[[district]]
code = "130606"
name = "莲池区"
[[grid_sensor]]
id = "J1"
district = "130602"
township = "甲街道"
[[grid_sensor]]
id = "J2"
district = "130602"
township = "甲街道"
[[grid_sensor]]
id = "J3"
district = "130602"
township = "甲街道"
[[grid_sensor]]
id = "Y1"
district = "130606"
township = "乙镇"
"""
# HJ 212-2017 appendix B ambient codes: PM2.5, PM10, SO2, NO2, CO (mg/m³), O3
CODES = ("a34004", "a34002", "a21026", "a21004", "a21005", "a05024")
# constant hourly values all day, so every daily mean (and O3's daily maximum 8-h mean) is the value itself
VALUES = {
    "J1": (40.0, 80.0, 10.0, 30.0, 0.8, 100.0),
    "J2": (50.0, 100.0, 14.0, 50.0, 1.2, 120.0),
    "Y1": (80.0, 150.0, 20.0, 60.0, 1.6, 90.0),
    "J3": (200.0, 400.0, 60.0, 160.0, 4.0, 300.0),  # sent later: the day is revised
}


def index(pm25: float, pm10: float, so2: float, no2: float, co: float, o3_8h: float) -> float:
    """Σ Cᵢ/Sᵢ over GB 3095-2012's annual grade-II limits (CO 24-h 4 mg/m³, O3 8-h 160 µg/m³), by hand."""
    return so2 / 60 + no2 / 40 + pm10 / 70 + pm25 / 35 + co / 4 + o3_8h / 160


def mean_of(*sensors: str) -> tuple[float, ...]:
    return tuple(sum(VALUES[s][i] for s in sensors) / len(sensors) for i in range(6))


def hour_packet(sensor: str, t: datetime) -> str:
    obj = {"qn": t.strftime("%Y%m%d%H%M%S000"), "st": "22", "cn": "2061", "pw": "123456", "mn": sensor,
           "flag": 5, "data_time": t.isoformat(),
           "values": {c: {"Avg": v, "Flag": "N"} for c, v in zip(CODES, VALUES[sensor], strict=True)}}  # fmt: skip
    return hj212.encode_json(obj, crlf=True)


def test_a_closed_day_is_ranked_live_and_re_ranked_when_revised(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    # closed already: the ingester's clock decides it (yesterday, or the day before in a day's first minutes,
    # when yesterday's last hour is not decided yet)
    day = closed_day(datetime.now(BEIJING))
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    reg = tmp_path / "registry.toml"
    reg.write_text(one_outlet(tail=SENSORS), encoding="utf-8")
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, port)
    pub = Mqtt(mosquitto.url)
    q = 'SELECT * FROM "grid_rank" WHERE "period" = \'day\' GROUP BY *'

    def ranks() -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["scope"], r["township"]): r for r in influxdb.query(influx_db, q, epoch="ms")}

    try:
        wait_until(lambda: _health_up(port), 30)
        for h in range(24):
            for sensor in ("J1", "J2", "Y1"):
                pub.publish(f"grid/v1/{sensor}", hour_packet(sensor, start + timedelta(hours=h)))
        jia, yi = index(*mean_of("J1", "J2")), index(*VALUES["Y1"])  # 4.71, 7.22

        def first_ranking() -> bool:
            got = ranks()
            return ("city", "乙镇") in got and got.get(("city", "甲街道"), {}).get("sensors") == 2

        wait_until(first_ranking, 60)
        got = ranks()
        assert set(got) == {("city", "甲街道"), ("city", "乙镇"), ("130602", "甲街道"), ("130606", "乙镇")}
        j, y = got[("city", "甲街道")], got[("city", "乙镇")]
        assert j["time"] == int(start.timestamp() * 1000)
        assert (j["rank"], j["of"], y["rank"], y["of"]) == (1, 2, 2, 2)
        assert j["index"] == pytest.approx(jia) and y["index"] == pytest.approx(yi)
        assert (j["pm25"], j["pm10"], j["sensor_ids"]) == (45.0, 90.0, "J1,J2")
        assert (got[("130606", "乙镇")]["rank"], got[("130606", "乙镇")]["of"]) == (1, 1)

        # a third 甲街道 sensor sends the same day: grid_daily of the closed day changes, the day is re-ranked
        for h in range(24):
            pub.publish("grid/v1/J3", hour_packet("J3", start + timedelta(hours=h)))
        jia3 = index(*mean_of("J1", "J2", "J3"))  # 9.57: now worse than 乙镇
        wait_until(lambda: ranks()[("city", "甲街道")]["sensors"] == 3, 60)
        got = ranks()
        j, y = got[("city", "甲街道")], got[("city", "乙镇")]
        assert (j["rank"], y["rank"], j["sensor_ids"]) == (2, 1, "J1,J2,J3")
        assert j["index"] == pytest.approx(jia3) and y["index"] == pytest.approx(yi)
        assert (got[("130602", "甲街道")]["rank"], got[("130602", "甲街道")]["of"]) == (1, 1)
    finally:
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
