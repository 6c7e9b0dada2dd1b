"""``grid_rank`` line protocol, the ``grid_daily`` reader and rank-and-write with injected (fake) query and
write functions, and the report's grid sections with and without grid data."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.report import Period, build_grid_section, build_report, render_html
from cems.report._csv import GRID_CSV_FILES, township_ranking_csv
from cems.rules.ranking import RankPeriod, rank_period
from cems.sinks.gridrank import ambient_day_from_row, rank_and_write, rank_closed_day
from cems.sinks.lineprotocol import grid_rank_lines

DAY = date(2026, 11, 22)  # a Sunday: closes the day and ISO week 47
VALUES = {"pm25": 45.0, "pm10": 90.0, "so2": 12.0, "no2": 40.0, "co": 1.0, "o3_8h": 110.0, "o3": 150.0}


def _row(sensor: str, township: str, day: date, scale: float = 1.0, **extra: Any) -> dict[str, Any]:
    t = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    return {
        "time": int(t.timestamp()),
        "sensor": sensor,
        "district": "130602",
        "township": township,
        "kind": "micro_station",
        **{k: v * scale for k, v in VALUES.items()},
        "pm25_hours": 23,
        "aqi": 79,
        "level": 2,
        "primary": "pm10",
        "upload_rate": 0.95,
        **extra,
    }


def test_ambient_day_from_a_grid_daily_row() -> None:
    d = ambient_day_from_row(_row("G1", "甲", DAY, so2=None))
    assert d is not None
    assert (d.sensor, d.township, d.kind, d.day) == ("G1", "甲", "micro_station", DAY)
    assert "so2" not in d.means and d.means["o3_8h"] == 110.0 and d.hours == {"pm25": 23}
    assert (d.aqi, d.level, d.primary, d.upload_rate) == (79, 2, ("pm10",), 0.95)
    assert ambient_day_from_row({"time": 0}) is None


class FakeInflux:
    """Answers grid_daily queries from rows, by the query's time window; records writes."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[str] = []
        self.written: list[str] = []

    def query(self, q: str, epoch: str | None) -> list[dict[str, Any]]:
        assert epoch == "s" and '"grid_daily"' in q
        self.queries.append(q)
        lo = int(q.split("time >= ")[1].split()[0]) // 10**9
        hi = int(q.split("time < ")[1].split()[0]) // 10**9
        return [r for r in self.rows if lo <= r["time"] < hi]

    def write(self, lines: list[str]) -> None:
        self.written.extend(lines)

    async def awrite(self, lines: list[str]) -> None:
        self.written.extend(lines)


def test_rank_and_write_reads_three_windows_and_writes_grid_rank() -> None:
    rows = [_row("G1", "甲", DAY), _row("G2", "乙", DAY, scale=2.0), _row("G1", "甲", DAY - timedelta(days=1), 2.0)]
    fake = FakeInflux(rows)
    r = rank_and_write(fake.query, fake.write, RankPeriod.containing("day", DAY))
    assert r is not None
    assert len(fake.queries) == 3  # the day, the day before, the same day last year
    assert len(fake.written) == 4  # city: 甲, 乙; district 130602: 甲, 乙
    jia = next(line for line in fake.written if "scope=city" in line and "township=甲" in line)
    assert jia.startswith("grid_rank,district=130602,period=day,scope=city,township=甲 ")
    assert "rank=1i," in jia and "of=2i," in jia and "change_vs_previous=-0.5," in jia
    assert 'sensor_ids="G1"' in jia and "sensors=1i" in jia and "change_vs_last_year" not in jia
    assert jia.endswith(f" {int(datetime(2026, 11, 22, tzinfo=BEIJING).timestamp() * 1000)}")
    empty = FakeInflux([])
    assert rank_and_write(empty.query, empty.write, RankPeriod.containing("day", DAY)) is None
    assert empty.written == []


def test_rank_closed_day_ranks_the_day_and_the_week_it_ends() -> None:
    rows = [_row("G1", "甲", DAY - timedelta(days=i)) for i in range(7)]
    fake = FakeInflux(rows)
    done = asyncio.run(rank_closed_day(fake.query, fake.awrite, DAY))
    assert [r.period.kind for r in done] == ["day", "week"]
    assert sum("period=week" in line for line in fake.written) == 2  # city and district
    assert grid_rank_lines(done[1]) == [line for line in fake.written if "period=week" in line]


def _registry(grid: bool) -> Any:
    tail = '[[grid_sensor]]\nid = "G1"\nname = "一号微站"\ndistrict = "130602"\ntownship = "甲"\n' if grid else ""
    return parse_registry(one_outlet(tail=tail))


def test_report_grid_sections() -> None:
    period = Period.day(DAY.isoformat())
    rp = RankPeriod.containing("day", DAY)
    days = [d for r in (_row("G1", "甲", DAY), _row("G2", "乙", DAY, 2.0)) if (d := ambient_day_from_row(r))]
    section = build_grid_section(_registry(True), rp, days, [])
    report = build_report(_registry(True), period, [], [], grid=section)
    html = render_html(report)
    assert "乡镇（街道）环境空气质量排名" in html and "本期无网格热点" in html
    assert township_ranking_csv(report).splitlines()[1].startswith("1,2,130602,竞秀区,甲,")
    ranking = rank_period(days, rp)
    assert ranking is not None and section.ranking == ranking
    # grid sensors, no data: the sections say so
    empty = build_report(_registry(True), period, [], [], grid=build_grid_section(_registry(True), rp, [], []))
    assert render_html(empty).count("无网格监测数据") == 2
    # no grid at all: no section, no grid CSVs
    plain = build_report(_registry(False), period, [], [])
    assert plain.grid is None and "乡镇（街道）环境空气质量排名" not in render_html(plain)
    assert set(GRID_CSV_FILES) == {"township_ranking.csv", "grid_hotspots.csv"}


GRID_ONLY = (
    'timezone = "Asia/Shanghai"\n[city]\nname = "测试市"\n[[district]]\ncode = "130602"\nname = "竞秀区"\n'
    '[[grid_sensor]]\nid = "G1"\ndistrict = "130602"\ntownship = "甲"\n'
    '[[grid_sensor]]\nid = "G2"\ndistrict = "130602"\ntownship = "乙"\n'
)


def test_load_report_of_a_grid_only_city() -> None:
    from cems.report import load_report

    fake = FakeInflux([_row("G1", "甲", DAY), _row("G2", "乙", DAY, 2.0)])
    other: list[str] = []

    def query(q: str, epoch: str | None) -> list[dict[str, Any]]:
        if '"grid_daily"' in q:
            return fake.query(q, epoch)
        other.append(q)
        return []

    report = load_report(parse_registry(GRID_ONLY), Period.day(DAY.isoformat()), query)
    assert report.grid is not None and [r.township for r in report.grid.city] == ["甲", "乙"]
    assert any("grid_hotspot" in q for q in other)
    # without grid sensors nothing of the grid is queried
    asked: list[str] = []

    def record(q: str, epoch: str | None) -> list[dict[str, Any]]:
        asked.append(q)
        return []

    with pytest.raises(CemsError, match="no hourly records"):  # no hourly data: the report refuses, as before
        load_report(_registry(False), Period.day(DAY.isoformat()), record)
    assert asked and not any("grid" in q for q in asked)
