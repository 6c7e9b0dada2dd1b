"""Township ranking and hotspot list against the real InfluxDB: a known ``grid_daily`` data set (November
2025, October 2025 and November 2024) and ``grid_hotspot`` events are written, ``cems grid rank --write``
stores ``grid_rank`` and ``cems report`` shows the ranking and hotspots; ranks and indices are checked against
values computed by hand."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

from cems.cli import main as cli_main
from cems.model import BEIJING
from cems.rules.events import Event
from cems.sinks.lineprotocol import event_line, point

pytestmark = pytest.mark.integration

GRID = """
[[district]]
code = "130606"
name = "莲池区"
[[grid_sensor]]
id = "A1"
district = "130602"
township = "甲街道"
[[grid_sensor]]
id = "A2"
name = "甲街道2号微站"
district = "130602"
township = "甲街道"
[[grid_sensor]]
id = "CS1"
district = "130602"
township = "甲街道"
kind = "construction_site"
[[grid_sensor]]
id = "B1"
district = "130602"
township = "乙镇"
[[grid_sensor]]
id = "E1"
district = "130602"
township = "戊镇"
[[grid_sensor]]
id = "C2"
district = "130606"
township = "丙街道"
[[grid_sensor]]
id = "N1"
district = "130606"
township = "丙街道"
kind = "national_station"
"""

POLS = ("pm25", "pm10", "so2", "no2", "co", "o3_8h", "o3")
A1 = (40.0, 80.0, 10.0, 30.0, 0.8, 100.0, 140.0)
A2 = (50.0, 100.0, 14.0, 50.0, 1.2, 120.0, 160.0)
B1 = (80.0, 150.0, 20.0, 60.0, 1.6, 90.0, 120.0)
C2 = (30.0, 60.0, 8.0, 20.0, 0.6, 80.0, 100.0)
KIND = {"CS1": "construction_site", "N1": "national_station"}
TOWN = {"A1": "甲街道", "A2": "甲街道", "CS1": "甲街道", "B1": "乙镇", "E1": "戊镇", "C2": "丙街道", "N1": "丙街道"}
DIST = {"A1": "130602", "A2": "130602", "CS1": "130602", "B1": "130602", "E1": "130602", "C2": "130606"}


def daily_line(sensor: str, day: date, values: dict[str, float]) -> str:
    """A ``grid_daily`` point as docs/influxdb.md describes it (the grid pipeline writes the same)."""
    tags = {"sensor": sensor, "district": DIST.get(sensor, "130606"), "township": TOWN[sensor]}
    tags["kind"] = KIND.get(sensor, "micro_station")
    fields: dict[str, float | int | str | bool | None] = dict(values)
    fields.update({f"{p}_hours": 24 for p in values if p != "o3_8h"})
    fields["upload_rate"] = 1.0
    t = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    return point("grid_daily", tags, fields, round(t.timestamp() * 1000))


def month_days(first: date) -> list[date]:
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return [first + timedelta(days=i) for i in range((nxt - first).days)]


def data_set() -> list[str]:
    lines: list[str] = []
    nov = month_days(date(2025, 11, 1))
    for i, d in enumerate(nov):
        lines.append(daily_line("A1", d, dict(zip(POLS, A1, strict=True))))
        lines.append(daily_line("A2", d, dict(zip(POLS, A2, strict=True))))
        lines.append(daily_line("CS1", d, {"pm10": 400.0}))
        # 乙镇: PM2.5 50 on 10 days and 95 on 20: mean (10·50 + 20·95)/30 = 80
        b = dict(zip(POLS, B1, strict=True)) | {"pm25": 50.0 if i < 10 else 95.0}
        lines.append(daily_line("B1", d, b))
        lines.append(daily_line("C2", d, dict(zip(POLS, C2, strict=True))))
        lines.append(daily_line("N1", d, dict(zip(POLS, (200.0, 300.0, 50.0, 80.0, 3.0, 200.0, 250.0), strict=True))))
        if i < 20:  # 戊镇: 20 days only
            lines.append(daily_line("E1", d, dict(zip(POLS, C2, strict=True))))
    for d in month_days(date(2025, 10, 1)):  # October: every value doubled
        for s, v in (("A1", A1), ("A2", A2), ("B1", B1), ("C2", C2)):
            lines.append(daily_line(s, d, {p: x * 2 for p, x in zip(POLS, v, strict=True)}))
    for d in month_days(date(2024, 11, 1)):  # November 2024: 甲街道 only, the same values
        for s, v in (("A1", A1), ("A2", A2)):
            lines.append(daily_line(s, d, dict(zip(POLS, v, strict=True))))
    return lines


def hotspot(sensor: str, start: datetime, hours: float, *, closed: bool = True, status: str = "") -> str:
    ev = Event(
        type="grid_hotspot",
        mn=sensor,
        enterprise="",
        district=DIST.get(sensor, "130606"),
        pollutant="pm25",
        start=start,
        end=start + timedelta(hours=hours) if closed else None,
        hours=hours,
        peak=150.0 + hours,
        limit=None,
        ref_o2=None,
        profile=None,
        status=status or ("closed" if closed else "open"),
    )
    return event_line(ev)


def hotspots() -> list[str]:
    t = datetime(2025, 11, 5, 8, tzinfo=BEIJING)
    return [
        hotspot("B1", t, 5),
        hotspot("B1", datetime(2025, 11, 30, 22, tzinfo=BEIJING), 2, closed=False),  # open: 2 h so far
        hotspot("A2", t + timedelta(days=3), 3),
        hotspot("A1", datetime(2025, 10, 31, 23, tzinfo=BEIJING), 3),  # 2 of its 3 hours in November
        hotspot("C2", t, 6, status="retracted"),  # retracted: not counted
    ]


# By hand (constant values in each month, so period means and percentiles are the daily values):
# 甲街道 = mean(A1, A2): pm25 45, pm10 90, so2 12, no2 40, co 1.0, o3_8h 110
#   index = 12/60 + 40/40 + 90/70 + 45/35 + 1.0/4 + 110/160 = 0.2 + 1 + 1.2857143 + 1.2857143 + 0.25 + 0.6875
JIA = 0.2 + 1.0 + 90 / 70 + 45 / 35 + 0.25 + 0.6875  # 4.7089286
# 乙镇 (B1, PM2.5 mean 80): 20/60 + 60/40 + 150/70 + 80/35 + 1.6/4 + 90/160
YI = 20 / 60 + 1.5 + 150 / 70 + 80 / 35 + 0.4 + 0.5625  # 7.2244048
# 丙街道 (C2; N1 is a national station, not counted): 8/60 + 20/40 + 60/70 + 30/35 + 0.6/4 + 80/160
BING = 8 / 60 + 0.5 + 60 / 70 + 30 / 35 + 0.15 + 0.5  # 2.9976190


def _load(influxdb: Any, db: str) -> None:
    influxdb.write(db, data_set(), precision="ms")
    influxdb.write(db, hotspots(), precision="ms")


def test_grid_rank_write_and_report(influxdb: Any, influx_db: str, tmp_path: Path, capsys: Any) -> None:
    _load(influxdb, influx_db)
    base = ["--influx-url", influxdb.url, "--influx-db", influx_db]
    assert cli_main(["grid", "rank", "--period", "month", "--date", "2025-11-15", "--write", "--json", *base]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    city = [(o["township"], o["rank"], o["of"]) for o in out if o["scope"] == "city"]
    assert city == [("丙街道", 1, 3), ("甲街道", 2, 3), ("乙镇", 3, 3)]
    unranked = [o for o in out if o["rank"] is None]
    assert [o["township"] for o in unranked] == ["戊镇"] and unranked[0]["incomplete"][0] == "so2: 20 < 27 days"

    # the table: the city's list, then each district's, then the unranked
    assert cli_main(["grid", "rank", "--period", "month", "--date", "2025-11-15", *base]) == 0
    table = capsys.readouterr().out
    city_part = table.split("全市")[1].split("区县 130602")[0]
    assert city_part.index("丙街道") < city_part.index("甲街道") < city_part.index("乙镇")
    assert f"{JIA:8.2f}" in city_part and "-50.0%" in city_part and "戊镇（130602）：so2: 20 < 27 days" in table

    rows = influxdb.query(influx_db, 'SELECT * FROM "grid_rank" GROUP BY *', epoch="ms")
    got = {(r["scope"], r["township"]): r for r in rows}
    assert set(got) == {
        ("city", "丙街道"),
        ("city", "甲街道"),
        ("city", "乙镇"),
        ("130602", "甲街道"),
        ("130602", "乙镇"),
        ("130606", "丙街道"),
    }
    jia = got[("city", "甲街道")]
    assert jia["time"] == int(datetime(2025, 11, 1, tzinfo=BEIJING).timestamp() * 1000)
    assert (jia["rank"], jia["of"], jia["period"], jia["district"]) == (2, 3, "month", "130602")
    assert jia["index"] == pytest.approx(JIA)
    assert (jia["pm25"], jia["pm10"], jia["sensors"], jia["sensor_ids"]) == (45.0, 90.0, 2, "A1,A2")
    # October's values were doubled → index halved: −50 %; November 2024 the same → 0
    assert jia["change_vs_previous"] == pytest.approx(-0.5)
    assert jia["change_vs_last_year"] == pytest.approx(0.0)
    assert jia["good_day_share"] == 1.0 and jia["days"] == 30
    yi = got[("130602", "乙镇")]
    assert (yi["rank"], yi["of"]) == (2, 2)
    assert yi["index"] == pytest.approx(YI)
    # HJ 633-2012 (2025): PM2.5 50 → IAQI 69, PM10 150 → 100: AQI 100, good; PM2.5 95 → 125: not good. 10 of 30
    assert yi["good_day_share"] == pytest.approx(10 / 30)
    assert "change_vs_last_year" not in yi or yi["change_vs_last_year"] is None
    assert got[("130606", "丙街道")]["index"] == pytest.approx(BING)
    assert "环办监测〔2018〕19号" in jia["basis"]

    # the report of the month: ranking section and hotspot list
    reg = tmp_path / "registry.toml"
    reg.write_text(one_outlet(tail=GRID), encoding="utf-8")
    out_dir = tmp_path / "report"
    assert cli_main(["report", "--config", str(reg), "--month", "2025-11", "--out", str(out_dir), *base]) == 0
    ranking = _csv(out_dir / "township_ranking.csv")
    assert [(r["全市排名"], r["乡镇(街道)"], r["区县"]) for r in ranking] == [
        ("1", "丙街道", "莲池区"),
        ("2", "甲街道", "竞秀区"),
        ("3", "乙镇", "竞秀区"),
        ("", "戊镇", "竞秀区"),
    ]
    assert [r["综合指数"] for r in ranking[:3]] == [f"{BING:.2f}", f"{JIA:.2f}", f"{YI:.2f}"]  # 3.00 4.71 7.22
    assert ranking[1]["环比变化率(%)"] == "-50.0" and ranking[1]["同比变化率(%)"] == "0.0"
    assert ranking[2]["优良天数比例(%)"] == "33.33"
    assert ranking[3]["备注"].startswith("数据不足")
    spots = _csv(out_dir / "grid_hotspots.csv")
    # B1: 5 h + the open event's 2 h; A2: 3 h; A1: 2 of 3 h in November; C2's retracted event is left out
    assert [(r["点位"], r["热点小时数"], r["热点次数"]) for r in spots] == [
        ("B1", "7", "2"),
        ("A2", "3", "1"),
        ("A1", "2", "1"),
    ]
    assert spots[0]["乡镇(街道)"] == "乙镇" and spots[1]["名称"] == "甲街道2号微站"
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "乡镇（街道）环境空气质量排名" in html and "网格热点点位" in html
    worst = html.split("乡镇（街道）环境空气质量排名")[1]
    assert worst.index("乙镇") < worst.index("甲街道") < worst.index("丙街道")  # worst first


def test_report_without_grid_data_says_so(influxdb: Any, influx_db: str, tmp_path: Path) -> None:
    # a city with grid sensors but no grid data yet: the sections say 无网格监测数据
    t = datetime(2025, 11, 3, 10, tzinfo=BEIJING)
    line = point(
        "cems_hourly",
        {"mn": "MN0001", "pollutant": "a21026", "enterprise": "E001", "district": "130602", "source": "das_2061"},
        {"avg": 10.0, "valid": True, "flag": "N", "exceeds": False},
        round(t.timestamp() * 1000),
    )
    influxdb.write(influx_db, [line], precision="ms")
    reg = tmp_path / "registry.toml"
    reg.write_text(one_outlet(tail=GRID), encoding="utf-8")
    out_dir = tmp_path / "r"
    argv = ["report", "--config", str(reg), "--month", "2025-11", "--out", str(out_dir)]
    assert cli_main([*argv, "--influx-url", influxdb.url, "--influx-db", influx_db]) == 0
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert html.count("无网格监测数据") == 2
    assert _csv(out_dir / "township_ranking.csv") == []
    assert cli_main(["grid", "rank", "--period", "day", "--date", "2025-11-03", "--influx-url", influxdb.url,
                     "--influx-db", influx_db]) == 1  # fmt: skip


def _csv(p: Path) -> list[dict[str, str]]:
    raw = p.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw[3:].decode("utf-8"))))
