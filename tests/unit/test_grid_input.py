"""Grid input (issue 15): HJ 212 ST=22 packets on ``grid/v1/{id}``, and ``cems replay`` of recorded MQTT messages
(``TOPIC PAYLOAD`` lines) through the grid engine, as ``cems run`` takes them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

from cems.decode import decode_message
from cems.errors import RejectedMessage
from cems.model import BEIJING, Stream
from cems.protocol import hj212
from cems.registry import parse_registry
from cems.replay import replay
from cems.rules.grid import GRID_HOTSPOT
from cems.sinks.lineprotocol import event_line, grid_daily_line, grid_hourly_line

H0 = datetime(2026, 11, 20, 8, tzinfo=BEIJING)
SENSORS = (
    '[[grid_sensor]]\nid = "G001"\ndistrict = "130602"\ntownship = "先锋街道"\npassword = "654321"\ninterval_s = 300\n'
    '[[grid_sensor]]\nid = "G002"\ndistrict = "130602"\ntownship = "先锋街道"\ninterval_s = 300\n'
    '[[grid_sensor]]\nid = "G003"\ndistrict = "130602"\ntownship = "先锋街道"\ninterval_s = 300\n'
    '[[grid_sensor]]\nid = "C001"\ndistrict = "130602"\ntownship = "先锋街道"\nkind = "construction_site"\n'
)
REG = parse_registry(one_outlet(tail=SENSORS + "[grid.hotspot]\nhours = 1\n"))


def packet(mn: str, t: datetime, values: dict[str, float], *, st: str = "22", cn: str = "2011", pw: str = "654321",
           flag: int = 5) -> str:  # fmt: skip
    suffix = "Rtd" if cn == "2011" else "Avg"
    obj: dict[str, Any] = {
        "qn": t.strftime("%Y%m%d%H%M%S000"),
        "st": st,
        "cn": cn,
        "pw": pw,
        "mn": mn,
        "flag": flag,
        "data_time": t.isoformat(),
        "values": {code: {suffix: v, "Flag": "N"} for code, v in values.items()},
    }
    return hj212.encode_json(obj, crlf=True)


def test_an_st22_packet_on_a_grid_topic_is_a_grid_reading() -> None:
    text = packet("G001", H0, {"a34004": 35.0, "a34002": 70.0, "a05024": 80.0})
    d = decode_message("grid/v1/G001", text.encode(), REG)
    assert d.grid and d.reading.mn == "G001" and d.reading.stream is Stream.RTD
    assert {c: m.values["Rtd"] for c, m in d.reading.measurements.items()} == {
        "a34004": 35.0, "a34002": 70.0, "a05024": 80.0
    }  # fmt: skip
    hour = decode_message("grid/v1/G001", packet("G001", H0, {"a34004": 35.0}, cn="2061").encode(), REG)
    assert hour.reading.stream is Stream.HOUR


@pytest.mark.parametrize(
    ("topic", "text", "reason"),
    [
        ("grid/v1/G001", packet("G001", H0, {"a34004": 35.0}, st="31"), "hj212_field"),  # a stack's packet
        ("grid/v1/G002", packet("G001", H0, {"a34004": 35.0}), "mn_mismatch"),
        ("grid/v1/G001", packet("G001", H0, {"a34004": 35.0}, pw="123456"), "bad_password"),
        ("grid/v1/G404", packet("G404", H0, {"a34004": 35.0}), "unknown_sensor"),
        ("grid/v1/C001", packet("C001", H0, {"a34002": 35.0}, st="31"), "hj212_field"),
    ],
)
def test_an_ambient_packet_that_cannot_be_a_grid_reading_is_rejected(topic: str, text: str, reason: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        decode_message(topic, text.encode(), REG)
    assert e.value.reason == reason


def test_a_construction_site_may_send_st39_construction_dust() -> None:
    d = decode_message("grid/v1/C001", packet("C001", H0, {"a34002": 180.0}, st="39").encode(), REG)
    assert d.grid and d.reading.measurements["a34002"].values["Rtd"] == 180.0


def test_a_2005_packet_has_its_codes_renamed() -> None:
    # HJ/T 212-2005 (Flag version 0): code 02 is SO2, a21026 in HJ 212-2017 (cems/protocol/hj212_2005_codes.toml)
    d = decode_message("grid/v1/G002", packet("G002", H0, {"02": 12.0}, flag=0, pw="x").encode(), REG)
    assert "a21026" in d.reading.measurements


def _lines() -> list[str]:
    """Three hours of three sensors: G001 by HJ 212 ST=22 packets, G002/G003 by JSON; G001 a hotspot in hour 1."""
    out: list[str] = []
    for i in range(36):
        t = H0 + timedelta(minutes=5 * i)
        hot = 1 <= i // 12 < 2
        out.append("grid/v1/G001 " + packet("G001", t, {"a34004": 95.0 if hot else 40.0}).strip())
        for sid in ("G002", "G003"):
            body = {"data_time": t.isoformat(), "values": {"a34004": {"Rtd": 40.0, "Flag": "N"}}}
            out.append(f"grid/v1/{sid} {json.dumps(body)}")
    out.append('grid/v1/G404 {"data_time": "2026-11-20T08:00:00+08:00", "values": {"a34004": {"Rtd": 1.0}}}')
    return out


def test_replay_takes_recorded_grid_messages() -> None:
    res = replay(REG, _lines())
    assert res.rejected == {"unknown_sensor": 1}
    assert res.grid_readings == 108
    assert [(h.sensor, h.hour_start.hour) for h in res.grid_hourly][:3] == [("G001", 8), ("G002", 8), ("G003", 8)]
    g1 = [h for h in res.grid_hourly if h.sensor == "G001"]
    assert [h.values[0].mean for h in g1] == [40.0, 95.0, 40.0] and all(h.values[0].valid for h in g1)
    (ev,) = [e for e in res.events if e.type == GRID_HOTSPOT]
    # still open: the hour after it (10:00) is the input's last, not decided (it ends after the last data time)
    assert (ev.mn, ev.start, ev.hours, ev.peak, ev.status) == ("G001", H0 + timedelta(hours=1), 1, 95.0, "open")
    assert isinstance(ev.evidence, dict) and ev.evidence["hours"][0]["neighbours"] == {"G002": 40.0, "G003": 40.0}
    # the points as cems run writes them
    line = grid_hourly_line(g1[1])
    assert line.startswith("grid_hourly,district=130602,kind=micro_station,sensor=G001,township=先锋街道 pm25=95.0,")
    assert "pm25_minutes=60i,pm25_valid=true" in line
    assert '"neighbours":{"G002":40.0,"G003":40.0}' in event_line(ev).replace("\\", "")
    (day,) = [d for d in res.grid_daily if d.sensor == "G001"]
    assert (day.means["pm25"], day.hours["pm25"], day.upload_rate) == (None, 3, 3 / 24)  # 3 hours: no daily mean
    assert "pm25_hours=3i" in grid_daily_line(day) and "upload_rate=0.125" in grid_daily_line(day)
