"""``cems report``: periods, table building (pure), CSV and HTML rendering, and the InfluxDB loader with a
fake query function."""

from __future__ import annotations

import argparse
import csv
import io
import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cems.cli.report import add_report_arguments
from cems.config import Env
from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import Registry, parse_registry
from cems.report import (
    Period,
    build_report,
    counted_until,
    load_report,
    load_report_input,
    render_html,
    write_report,
)
from cems.report._csv import districts_csv
from cems.report._data import event_from_row, record_from_row
from cems.report._html import BINS, STOP_FILL, fit, rate_color
from cems.report._period import Period as _P
from cems.report._tables import DATA, NOT_ASSESSED, PARTIAL_STOP, STOP
from cems.rules.daily import MonthResult
from cems.rules.events import DATA_INTERRUPTION, HOURLY_EXCEEDANCE, Event
from cems.rules.hourly import SOURCE_DAS, HourlyRecord

FACTORS = ("a34013", "a21026", "a21002")

REGISTRY = """
[city]
name = "测试市"
supervision_enterprise_threshold = 1

[[district]]
code = "D1"
name = "竞秀区"
[[district]]
code = "D2"
name = "莲池区"
[[district]]
code = "D3"
name = "空区 \\"无排放口\\""

[[enterprise]]
id = "E1"
name = "示例热电<script>alert('x')</script> & Co"
district = "D1"
[[enterprise.outlet]]
mn = "M1"
name = "1#排放口"
profile = "coal_power_ultra_low"
[[enterprise.outlet]]
mn = "M2"
name = "2#排放口"
profile = "coal_power_ultra_low"

[[enterprise]]
id = "E2"
name = "华北钢铁"
district = "D2"
[[enterprise.outlet]]
mn = "M3"
name = "烧结机头"
profile = "coal_power_ultra_low"
[[enterprise.outlet.stop]]
from = 2026-11-03T12:00:00
to = 2026-11-05
reason = "检修"

[[enterprise]]
id = "E3"
name = "静默水泥"
district = "D2"
[[enterprise.outlet]]
mn = "M4"
name = "窑尾"
profile = "coal_power_ultra_low"
"""

WEEK = Period.week("2026-W45")  # 2026-11-02 (Mon) .. 2026-11-08 (Sun)


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY)


def rec(
    mn: str, pollutant: str, t: datetime, *, valid: bool = True, flag: str = "N", exceeds: bool = False
) -> HourlyRecord:
    return HourlyRecord(
        mn=mn,
        pollutant=pollutant,
        hour_start=t,
        avg=1.0,
        o2_avg=6.0,
        zs_avg=1.0,
        das_zs_avg=None,
        zs_source="computed",
        valid=valid,
        flag=flag,
        source=SOURCE_DAS,
        valid_minutes=None,
        limit=35.0,
        ref_o2=6.0,
        profile="coal_power_ultra_low",
        exceeds=exceeds,
    )


def hours(first: date, days: int, skip: Iterable[date] = ()) -> list[datetime]:
    start = datetime(first.year, first.month, first.day, tzinfo=BEIJING)
    skipped = set(skip)
    out = []
    for i in range(days * 24):
        t = start + timedelta(hours=i)
        if t.date() not in skipped:
            out.append(t)
    return out


def week_records() -> list[HourlyRecord]:
    """M1: complete; M2: days 4-6 silent (4 of 7 days); M3: complete outside its stop, one exceeding hour;
    M4: nothing at all."""
    out: list[HourlyRecord] = []
    for t in hours(WEEK.first, 7):
        out += [rec("M1", f, t) for f in FACTORS]
    for t in hours(WEEK.first, 7, skip=[date(2026, 11, d) for d in (4, 5, 6)]):
        out += [rec("M2", f, t) for f in FACTORS]
    for t in hours(WEEK.first, 7):
        out += [rec("M3", f, t, exceeds=(f == "a21026" and t.day == 6 and t.hour == 8)) for f in FACTORS]
    return out


def exceedance(mn: str, ent: str, pollutant: str, start: datetime, n: int, peak: float, limit: float) -> Event:
    return Event(
        type=HOURLY_EXCEEDANCE,
        mn=mn,
        enterprise=ent,
        district="D2",
        pollutant=pollutant,
        start=start,
        end=start + timedelta(hours=n),
        hours=n,
        peak=peak,
        limit=limit,
        ref_o2=6.0,
        profile="coal_power_ultra_low",
        status="closed",
    )


# ---------------------------------------------------------------------------------------------- periods


def test_periods() -> None:
    m = Period.month("2026-02")
    assert (m.first, m.last, len(m.days)) == (date(2026, 2, 1), date(2026, 2, 28), 28)
    assert m.start == datetime(2026, 2, 1, tzinfo=BEIJING) and m.end == datetime(2026, 3, 1, tzinfo=BEIJING)
    assert m.label == "2026年2月"
    d = Period.month("2026-12")
    assert d.end == datetime(2027, 1, 1, tzinfo=BEIJING)
    w = Period.week("2026-w01")
    assert (w.first, w.last, w.key) == (date(2025, 12, 29), date(2026, 1, 4), "2026-W01")
    assert w.label.startswith("2026年第1周")
    day = Period.day("2026-11-20")
    assert (day.start, day.end) == (datetime(2026, 11, 20, tzinfo=BEIJING), datetime(2026, 11, 21, tzinfo=BEIJING))
    for make, text in ((_P.month, "2026-13"), (_P.month, "2026/11"), (_P.week, "2026-W54"), (_P.day, "2026-11-31")):
        with pytest.raises(CemsError):
            make(text)


# ---------------------------------------------------------------------------------------------- tables


def test_districts_ranked_with_supervision_reasons(registry: Registry) -> None:
    r = build_report(registry, WEEK, week_records(), [])
    assert [d.code for d in r.districts] == ["D1", "D2", "D3"]
    d1, d2, d3 = r.districts
    # D1: M1 7/7 days, M2 4/7 days → 11/14 = 78.6 %: supervised for its rate.
    assert (d1.rank, d1.expected, d1.valid) == (1, 2 * 7 * 24 * 3, 11 * 24 * 3)
    assert d1.supervised and len(d1.reasons) == 1 and "低于考核目标 90%" in d1.reasons[0]
    # D2: M3 valid everywhere outside its stop (36 h), M4 silent: 0 of 7 days.
    m3_expected = (7 * 24 - 36) * 3
    assert d2.expected == m3_expected + 7 * 24 * 3 and d2.valid == m3_expected
    assert d2.effective_rate is not None and d1.effective_rate is not None
    assert d2.effective_rate < d1.effective_rate and d2.rank == 2
    assert d2.supervised and d2.exceeding_enterprises == ("华北钢铁",)
    assert any("当月 1 家企业小时均值超标" in x for x in d2.reasons)
    # D3 has no outlet: no rate, ranked last, not supervised.
    assert (d3.rank, d3.effective_rate, d3.supervised, d3.outlets) == (3, None, False, 0)
    assert r.summary.supervised_districts == 2 and r.summary.districts == 3


def test_ranking_is_by_effective_rate(registry: Registry) -> None:
    recs = [x for x in week_records() if x.mn != "M2" or x.hour_start.day == 2]  # D1 drops to 8/14 days
    r = build_report(registry, WEEK, recs, [])
    rates = [d.effective_rate for d in r.districts]
    assert rates[-1] is None
    known = [x for x in rates if x is not None]
    assert known == sorted(known, reverse=True)
    assert [d.rank for d in r.districts] == [1, 2, 3]


def test_outlets_below_target_worst_first_and_silent_outlet_shows_zero(registry: Registry) -> None:
    r = build_report(registry, WEEK, week_records(), [])
    assert [o.mn for o in r.below_target] == ["M4", "M2"]
    m4 = r.below_target[0]
    assert m4.silent and (m4.expected, m4.received, m4.valid, m4.effective_rate) == (7 * 24 * 3, 0, 0, 0.0)
    m2 = r.below_target[1]
    assert m2.effective_rate == pytest.approx(4 / 7) and not m2.silent
    assert {o.mn for o in r.outlets} == {"M1", "M2", "M3", "M4"}
    assert r.summary.outlets == 4 and r.summary.outlets_meeting_target == 2 and r.summary.silent_outlets == 1


def test_gap_at_the_start_of_the_period_counts_whether_or_not_the_outlet_was_seen_before(
    registry: Registry,
) -> None:
    """Issue 12 item 4: the assessed period starts at the period start (or since), never at a first record."""
    recs = [rec("M1", f, t) for t in hours(date(2026, 11, 5), 4) for f in FACTORS]  # days 5-8 only
    for first_seen in ({}, {"M1": datetime(2026, 10, 1, 9, tzinfo=BEIJING)}):
        r = build_report(registry, WEEK, recs, [], first_seen)
        m1 = next(o for o in r.outlets if o.mn == "M1")
        assert m1.effective_rate == pytest.approx(4 / 7) and m1.expected == 7 * 24 * 3


def test_heat_map_cells(registry: Registry) -> None:
    recs = [rec("M1", f, t) for t in hours(date(2026, 11, 4), 5) for f in FACTORS]
    recs += [rec("M1", "a21026", datetime(2026, 11, 5, 3, tzinfo=BEIJING), valid=False, flag="D")]
    r = build_report(registry, WEEK, recs + [x for x in week_records() if x.mn == "M3"], [])
    rows = {a.mn: a for a in r.availability}
    m1 = {c.day.day: c for c in rows["M1"].cells}
    assert [m1[d].state for d in (2, 3, 4)] == [DATA, DATA, DATA]  # assessed from the period start
    assert (m1[2].expected, m1[2].effective_rate) == (72, 0.0)
    assert m1[4].effective_rate == 1.0 and m1[5].valid == 72 - 1 and m1[5].received == 72
    m3 = {c.day.day: c for c in rows["M3"].cells}
    assert m3[3].state == PARTIAL_STOP and m3[3].expected == 12 * 3
    assert m3[4].state == STOP and m3[4].expected == 0 and m3[4].effective_rate is None
    assert m3[5].state == DATA
    assert len(rows["M3"].cells) == 7
    assert rate_color(1.0) == BINS[0][1] and rate_color(0.0) == BINS[-1][1] and rate_color(0.6) == BINS[2][1]
    page = render_html(r)
    assert page.count(f'fill="{STOP_FILL}"') == 1  # M3 on the 4th
    assert page.count('class="cell partial_stop"') == 1 and "申报停运日" in page


def test_exceedances_per_enterprise(registry: Registry) -> None:
    t0 = WEEK.start
    events = [
        exceedance("M3", "E2", "a21026", t0 + timedelta(hours=10), 3, 70.0, 35.0),
        exceedance("M3", "E2", "a21002", t0 + timedelta(hours=30), 1, 80.0, 50.0),
        exceedance("M3", "E2", "a21026", t0 - timedelta(hours=2), 5, 40.0, 35.0),  # 3 of its 5 h in the week
        exceedance("M3", "E2", "a21026", t0 - timedelta(hours=10), 2, 99.0, 35.0),  # before the week: left out
        exceedance("M1", "E1", "a34013", t0 + timedelta(days=2), 1, 12.0, 10.0),
    ]
    other = Event(DATA_INTERRUPTION, "M2", "E1", "D1", None, t0, None, 30.0, None, None, None, None, "open")
    r = build_report(registry, WEEK, week_records(), [*events, other])
    assert [(e.enterprise_id, e.events, e.hours) for e in r.exceedances] == [("E2", 3, 7.0), ("E1", 1, 1.0)]
    e2 = r.exceedances[0]
    assert e2.by_pollutant == {"a21002": (1, 1.0), "a21026": (2, 6.0)}
    assert (e2.worst_pollutant, e2.peak, e2.limit, e2.peak_ratio) == ("a21026", 70.0, 35.0, 2.0)
    assert e2.worst_outlet == "烧结机头" and e2.district == "莲池区"
    assert r.summary.exceedance_events == 4 and r.summary.exceeding_enterprises == 2
    page = render_html(r)
    assert '<td class="n">3</td><td class="n">7</td>' in page and "二氧化硫(a21026)" in page


def test_week_spanning_two_months_sums_the_months(registry: Registry) -> None:
    period = Period.week("2026-W44")  # 2026-10-26 .. 2026-11-01
    recs = [rec("M1", f, t) for t in hours(period.first, 7) for f in FACTORS]
    r = build_report(registry, period, recs, [])
    d1 = next(d for d in r.districts if d.code == "D1")
    assert [m.month for m in d1.months] == ["2026-10", "2026-11"]
    assert d1.expected == sum(m.expected for m in d1.months) == 2 * 7 * 24 * 3
    assert d1.valid == 7 * 24 * 3
    assert all(x.startswith(("2026-10: ", "2026-11: ")) for x in d1.reasons)


def test_period_in_progress_counts_only_closed_hours(registry: Registry) -> None:
    now = datetime(2026, 11, 4, 10, 3, tzinfo=BEIJING)
    until = counted_until(now)
    assert until == datetime(2026, 11, 4, 9, tzinfo=BEIJING)  # 09:00-10:00 may not be written yet
    assert counted_until(datetime(2026, 11, 4, 2, 30, tzinfo=datetime.now().astimezone().tzinfo)) is not None
    recs = [x for x in week_records() if x.hour_start < until]
    r = build_report(registry, WEEK, recs, [], until=until)
    m1 = next(o for o in r.outlets if o.mn == "M1")
    assert m1.expected == (2 * 24 + 9) * 3 and m1.effective_rate == 1.0
    assert r.end == until
    cells = {c.day.day: c for c in r.availability[0].cells}
    assert cells[4].expected == 9 * 3 and cells[5].state == NOT_ASSESSED
    assert "统计截至 2026-11-04 09:00" in render_html(r)
    with pytest.raises(CemsError, match="has not started"):
        load_report(registry, WEEK, FakeInflux([], [], []), now=datetime(2026, 11, 1, tzinfo=BEIJING))


def test_report_refuses_a_period_without_data(registry: Registry) -> None:
    """No data at all is not a 0 % month: the report refuses instead of listing every district as 挂牌督办."""
    with pytest.raises(CemsError, match="no hourly records and no events for 2026-W45"):
        load_report(registry, WEEK, FakeInflux([], [], []))


def test_report_refuses_a_period_before_monitoring_began() -> None:
    late = parse_registry(REGISTRY.replace("[[enterprise.outlet]]\n", "[[enterprise.outlet]]\nsince = 2026-12-01\n"))
    with pytest.raises(CemsError, match="ends before the registry's first outlet is monitored"):
        load_report(late, WEEK, FakeInflux([], [], []))


# ---------------------------------------------------------------------------------------------- rendering


def test_csv_files_have_a_bom_and_the_tables(registry: Registry, tmp_path: Path) -> None:
    r = build_report(registry, WEEK, week_records(), [exceedance("M3", "E2", "a21026", WEEK.start, 2, 50, 35)])
    paths = write_report(r, tmp_path / "out")
    names = [p.name for p in paths]
    assert names == [
        "report.html", "districts.csv", "outlets_below_target.csv", "exceedances.csv", "availability.csv",
        "monthly.csv", "marks.csv", "mark_caps.csv", "late_declarations.csv",
    ]  # fmt: skip
    tables: dict[str, list[dict[str, str]]] = {}
    for p in paths[1:]:
        raw = p.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf"), p.name
        tables[p.name] = list(csv.DictReader(io.StringIO(raw[3:].decode("utf-8"))))
    d = tables["districts.csv"]
    assert [(x["排名"], x["区县"], x["挂牌督办"]) for x in d] == [("1", "竞秀区", "是"), ("2", "莲池区", "是"),
                                                                ("3", '空区 "无排放口"', "否")]  # fmt: skip
    assert d[0]["传输有效率(%)"] == f"{11 / 14 * 100:.2f}" and "低于考核目标" in d[0]["督办原因"]
    assert d[2]["传输有效率(%)"] == ""
    below = tables["outlets_below_target.csv"]
    assert [(x["MN"], x["传输有效率(%)"], x["备注"]) for x in below] == [("M4", "0.00", "无任何数据"),
                                                                      ("M2", f"{4 / 7 * 100:.2f}", "")]  # fmt: skip
    exc = tables["exceedances.csv"]
    assert [(x["企业"], x["超标次数"], x["超标小时数"], x["超标倍数"]) for x in exc] == [("华北钢铁", "1", "2", "1.43")]
    av = tables["availability.csv"]
    assert len(av) == 4 * 7
    m3_4 = next(x for x in av if x["MN"] == "M3" and x["日期"] == "2026-11-04")
    assert (m3_4["状态"], m3_4["应收记录数"], m3_4["传输有效率(%)"]) == ("停运申报", "0", "")
    assert districts_csv(r).startswith("排名,")  # the BOM is added only to the file


def test_html_escapes_text_and_shows_chinese_names(registry: Registry) -> None:
    r = build_report(registry, WEEK, week_records(), [exceedance("M1", "E1", "a21026", WEEK.start, 1, 50, 35)])
    page = render_html(r)
    assert "<script>" not in page and "alert('x')" not in page
    assert "示例热电&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Co" in page
    assert "空区 &quot;无排放口&quot;" in page
    for text in (
        "测试市",
        "竞秀区",
        "莲池区",
        "华北钢铁",
        "烧结机头",
        "静默水泥",
        "挂牌督办",
        "传输有效率",
        "2026年第45周",
    ):
        assert text in page
    assert "传输有效率低于考核目标" in page and "超标企业数达到督办门槛" in page
    assert "低于考核目标 90%" in page


def test_html_is_self_contained(registry: Registry) -> None:
    page = render_html(build_report(registry, WEEK, week_records(), []))
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert '"Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif' in page
    assert "<link" not in page and "src=" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\s\"')]+", page)) <= {"http://www.w3.org/2000/svg"}
    assert page.count("<svg") == 2 and 'stroke-dasharray="6,4"' in page  # the 90 % line


def test_fit_shortens_long_labels() -> None:
    assert fit("竞秀区", 10, 100) == "竞秀区"
    short = fit("很" * 50, 10, 100)
    assert short.endswith("…") and len(short) < 50


# ---------------------------------------------------------------------------------------------- loading


class FakeInflux:
    def __init__(self, hourly: list[dict[str, Any]], events: list[dict[str, Any]], first: list[dict[str, Any]]):
        self.hourly, self.events, self.first = hourly, events, first
        self.queries: list[tuple[str, str | None]] = []

    def __call__(self, q: str, epoch: str | None) -> list[dict[str, Any]]:
        self.queries.append((q, epoch))
        lo, hi = (int(x) // 10**9 for x in re.findall(r"time >= (\d+) AND time < (\d+)", q)[0]) if "time >=" in q \
            else (0, 0)  # fmt: skip
        if "first(" in q:
            return self.first
        if "cems_event" in q:
            return [e for e in self.events if lo <= e["time"] < hi]
        rows = [h for h in self.hourly if lo <= h["time"] < hi]
        if '"exceeds" = true' in q:
            return [h for h in rows if h.get("exceeds") is True]
        return [h for h in rows if f"'{h['pollutant']}'" in q]


def test_loader_queries_and_rebuilds_records() -> None:
    t = int(datetime(2026, 11, 3, 8, tzinfo=BEIJING).timestamp())
    hourly = [
        {"time": t, "mn": "M1", "pollutant": "a21026", "source": "das_2061", "valid": True, "flag": "N",
         "exceeds": True},
        {"time": t, "mn": "M1", "pollutant": "a19001", "source": "das_2061", "valid": True, "flag": "N",
         "exceeds": False},
        {"time": t, "mn": "M1", "pollutant": "a24088", "source": "minutes", "valid": True, "flag": "N",
         "exceeds": True},
        {"time": t - 86400 * 30, "mn": "M1", "pollutant": "a21026", "source": "das_2061", "valid": True,
         "flag": "N", "exceeds": False},
    ]  # fmt: skip
    start = datetime(2026, 11, 1, 22, tzinfo=BEIJING)
    events = [
        {"time": int(start.timestamp()), "type": HOURLY_EXCEEDANCE, "mn": "M1", "enterprise": "E1",
         "district": "D1", "pollutant": "a21026", "start": start.isoformat(),
         "end": (start + timedelta(hours=3)).isoformat(), "hours": 3.0, "peak": 50.0, "limit": 35.0,
         "status": "closed", "event_id": "x"},
        {"time": int(start.timestamp()) - 7200, "type": HOURLY_EXCEEDANCE, "mn": "M1", "enterprise": "E1",
         "district": "D1", "pollutant": "a21026", "start": (start - timedelta(hours=2)).isoformat(), "end": "",
         "hours": 1.0, "peak": 50.0, "limit": 35.0, "status": "open"},
    ]  # fmt: skip
    fake = FakeInflux(hourly, events, [{"time": t - 86400 * 30, "first": True, "mn": "M1"}])
    data = load_report_input(fake, WEEK, FACTORS)
    got = sorted((r.pollutant, r.exceeds, r.source) for r in data.records)
    assert got == [("a21026", True, "das_2061"), ("a24088", True, "minutes")]  # O2 and earlier rows not loaded
    assert all(r.valid and r.flag == "N" and r.mn == "M1" for r in data.records)
    assert data.records[0].hour_start == datetime(2026, 11, 3, 8, tzinfo=BEIJING)
    assert data.first_seen == {"M1": datetime.fromtimestamp(t - 86400 * 30, BEIJING)}
    # The event starting before the week overlaps it; the open one of 1 h ended before it began.
    assert [e.start for e in data.events] == [start]
    assert all(epoch == "s" for _, epoch in fake.queries)
    assert sum(1 for q, _ in fake.queries if "cems_hourly" in q and "first(" not in q) == 2 * 7  # per day


def test_rows_to_records_and_events() -> None:
    r = record_from_row({"time": 0, "mn": "M", "pollutant": "a21026", "source": "minutes", "valid": False,
                         "flag": "D", "exceeds": None})  # fmt: skip
    assert (r.valid, r.flag, r.source, r.exceeds, r.counts_valid) == (False, "D", "minutes", False, False)
    e = event_from_row({"time": 0, "type": HOURLY_EXCEEDANCE, "mn": "M", "pollutant": None, "end": "",
                        "hours": 2.0, "status": "open"})  # fmt: skip
    assert e.end is None and e.pollutant is None and e.start == datetime.fromtimestamp(0, BEIJING)


def test_add_report_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEMS_INFLUX_URL", "http://127.0.0.1:18086")
    monkeypatch.delenv("CEMS_INFLUX_DB", raising=False)
    p = argparse.ArgumentParser()
    add_report_arguments(p, Env())
    a = p.parse_args(["--config", "r.toml", "--week", "2026-W45", "--out", "o"])
    assert (a.week, a.month, a.day, a.influx_url, a.influx_db) == (
        "2026-W45",
        None,
        None,
        "http://127.0.0.1:18086",
        "cems",
    )
    with pytest.raises(SystemExit):
        p.parse_args(["--config", "r.toml", "--week", "2026-W45", "--day", "2026-11-02", "--out", "o"])
    with pytest.raises(SystemExit):
        p.parse_args(["--config", "r.toml", "--out", "o"])


def test_monthly_results_table(registry: Registry, tmp_path: Path) -> None:
    """cems_monthly results (issue 12) as written live: one row per outlet, code and month, with the monthly
    rule's verdict and its citation; outlets not in the registry are left out."""
    sinter = MonthResult(
        "M3", "a21026", "2026-11", 26, 25, True, 700, 700, 660, 660 / 700, 0.95, False, "环大气〔2019〕35号"
    )
    coal = MonthResult("M1", "a21026", "2026-11", 20, 25, False, 500, 0, 0, None, None, None, "")
    gone = MonthResult("XX", "a21026", "2026-11", 30, 25, True, 720, 0, 0, None, None, None, "")
    r = build_report(registry, WEEK, week_records(), [], monthly=[sinter, coal, gone])
    assert [(m.result.mn, m.district) for m in r.monthly] == [("M1", "竞秀区"), ("M3", "莲池区")]
    write_report(r, tmp_path)
    raw = (tmp_path / "monthly.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw[3:].decode("utf-8"))))
    assert [(x["MN"], x["月有效"], x["月度考核"], x["达标比例(%)"]) for x in rows] == [
        ("M1", "否", "", ""), ("M3", "是", "未达标", f"{660 / 700 * 100:.2f}")
    ]  # fmt: skip
    page = render_html(r)
    assert "月度结果" in page and "未达标" in page and "环大气〔2019〕35号" in page
