"""Township ranking (cems/rules/ranking.py) on small examples computed by hand: township daily values,
composite index (环办监测〔2018〕19号, GB 3095-2012 grade II), good days (HJ 633), completeness, ties,
baselines, and properties (input order does not matter)."""

from __future__ import annotations

import itertools
import random
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.rules.ambient import AmbientDay
from cems.rules.ranking import (
    BASIS,
    RankPeriod,
    periods_closed_by,
    rank_figures,
    rank_period,
    township_days,
    township_figures,
)

DAY = date(2026, 11, 20)  # a Friday; HJ 633-2026 in force


def ad(
    sensor: str,
    district: str,
    township: str,
    day: date,
    kind: str = "micro_station",
    **means: float | None,
) -> AmbientDay:
    hours = {k: 24 for k, v in means.items() if v is not None and k != "o3_8h"}
    return AmbientDay(sensor, district, township, kind, day, means, hours, None, None, (), 1.0)


def full(
    sensor: str,
    district: str,
    township: str,
    day: date,
    values: tuple[float, float, float, float, float, float, float],
    kind: str = "micro_station",
) -> AmbientDay:
    """values: pm25, pm10, so2, no2, co, o3_8h, o3 (1-h max)."""
    pm25, pm10, so2, no2, co, o3_8h, o3 = values
    return ad(sensor, district, township, day, kind, pm25=pm25, pm10=pm10, so2=so2, no2=no2, co=co, o3_8h=o3_8h, o3=o3)


A1 = (40.0, 80.0, 10.0, 30.0, 0.8, 100.0, 140.0)
A2 = (50.0, 100.0, 14.0, 50.0, 1.2, 120.0, 160.0)
B1 = (80.0, 150.0, 20.0, 60.0, 1.6, 90.0, 120.0)
C2 = (30.0, 60.0, 8.0, 20.0, 0.6, 80.0, 100.0)


def example_day(day: date = DAY, scale: float = 1.0) -> list[AmbientDay]:
    """Two districts, four townships. Township 甲 (130602): A1, A2 (micro) and a construction-site PM10
    monitor; 乙 (130602): B1; 丙 (130606): C2 and a national station; 丁 (130606): PM only."""

    def sc(v: tuple[float, ...]) -> tuple[float, float, float, float, float, float, float]:
        a, b, c, d, e, f, g = (x * scale for x in v)
        return (a, b, c, d, e, f, g)

    return [
        full("A1", "130602", "甲", day, sc(A1)),
        full("A2", "130602", "甲", day, sc(A2)),
        ad("CS1", "130602", "甲", day, "construction_site", pm10=400.0),
        full("B1", "130602", "乙", day, sc(B1)),
        full("C2", "130606", "丙", day, sc(C2)),
        full("N1", "130606", "丙", day, (200.0, 300.0, 50.0, 80.0, 3.0, 200.0, 250.0), kind="national_station"),
        ad("D1", "130606", "丁", day, pm25=20.0, pm10=40.0),
    ]


# ------------------------------------------------------------------------------------------- worked example


def test_worked_example_one_day() -> None:
    r = rank_period(example_day(), RankPeriod.containing("day", DAY))
    assert r is not None
    by = {e.figures.township: e for e in r.city}
    # 甲 = mean of A1 and A2 (the construction-site monitor's PM10 400 does not enter):
    #   pm25 (40+50)/2 = 45, pm10 (80+100)/2 = 90, so2 12, no2 40, co 1.0, o3_8h 110, o3 1-h 150
    #   index = 12/60 + 40/40 + 90/70 + 45/35 + 1.0/4 + 110/160
    #         = 0.2 + 1.0 + 1.2857143 + 1.2857143 + 0.25 + 0.6875 = 4.7089286
    jia = by["甲"].figures
    assert (jia.pm25, jia.pm10) == (45.0, 90.0)
    assert jia.index == pytest.approx(0.2 + 1.0 + 90 / 70 + 45 / 35 + 0.25 + 0.6875)
    assert jia.index == pytest.approx(4.7089286, abs=1e-7)
    assert jia.sensors == ("A1", "A2")
    # 乙 = B1: 20/60 + 60/40 + 150/70 + 80/35 + 1.6/4 + 90/160
    #        = 0.3333333 + 1.5 + 2.1428571 + 2.2857143 + 0.4 + 0.5625 = 7.2244048
    assert by["乙"].figures.index == pytest.approx(7.2244048, abs=1e-7)
    # 丙 = C2 only (the national station N1, PM2.5 200, is not counted):
    #   8/60 + 20/40 + 60/70 + 30/35 + 0.6/4 + 80/160 = 0.1333333 + 0.5 + 0.8571429 + 0.8571429 + 0.15 + 0.5
    #   = 2.9976190
    assert by["丙"].figures.index == pytest.approx(2.9976190, abs=1e-7)
    assert by["丙"].figures.sensors == ("C2",)
    # city: 丙 2.998 < 甲 4.709 < 乙 7.224
    assert [(e.figures.township, e.rank, e.of) for e in r.city] == [("丙", 1, 3), ("甲", 2, 3), ("乙", 3, 3)]
    assert [(e.figures.township, e.rank, e.of) for e in r.districts["130602"]] == [("甲", 1, 2), ("乙", 2, 2)]
    assert [(e.figures.township, e.rank, e.of) for e in r.districts["130606"]] == [("丙", 1, 1)]
    # 丁 measures PM only: no SO2, NO2, CO, O3 day → not ranked, with the reason
    (ding,) = r.unranked
    assert ding.township == "丁" and ding.index is None
    assert "so2: 0 < 1 days" in ding.incomplete and ding.pm25 == 20.0
    assert [e.figures.township for e in r.worst(2)] == ["乙", "甲"]
    assert r.basis == BASIS and r.kinds == ("micro_station",)


def test_township_daily_aqi_from_township_means() -> None:
    tds = {t.township: t for t in township_days(example_day())}
    # 甲 (HJ 633-2026, 24-h): PM2.5 45 → (100−50)/(60−35)·(45−35)+50 = 70; PM10 90 → 50/70·40+50 = 78.57 → 79;
    # SO2 12 → 12; NO2 40 → 50; CO 1.0 → 25; O3 8-h 110 → 50/60·10+50 = 58.3 → 59; O3 1-h 150 → 46.9 → 47
    # AQI 79 (良), primary PM10
    jia = tds["甲"]
    assert (jia.aqi, jia.level, jia.primary, jia.good) == (79, 2, ("pm10",), True)
    assert jia.sensors["pm10"] == ("A1", "A2") and jia.standard == "HJ 633-2026"
    # 乙: PM2.5 80 → 50/55·20+100 = 118.2 → 119 (轻度污染): not a good day
    assert (tds["乙"].aqi, tds["乙"].good) == (119, False)
    # 丁: PM only, IAQI ≤ 100 → AQI not computable (DOMAIN.md §6): not an assessed day
    assert tds["丁"].aqi is None and tds["丁"].good is None
    r = rank_period(example_day(), RankPeriod.containing("day", DAY))
    assert r is not None
    by = {e.figures.township: e.figures for e in r.city}
    assert (by["甲"].aqi_days, by["甲"].good_days, by["甲"].good_day_share) == (1, 1, 1.0)
    assert by["乙"].good_day_share == 0.0
    assert r.unranked[0].good_day_share is None


def test_a_week_with_percentiles_and_good_days() -> None:
    monday = date(2026, 11, 16)
    co = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 2.0]
    o3 = [100.0, 110.0, 120.0, 130.0, 140.0, 150.0, 160.0]
    days = []
    for i in range(7):
        pm25 = 80.0 if i == 6 else 35.0
        v = (pm25, 70.0, 60.0, 40.0, co[i], o3[i], o3[i])
        days.append(full("W1", "130602", "周", monday + timedelta(days=i), v))
    r = rank_period(days, RankPeriod.containing("week", date(2026, 11, 19)))
    assert r is not None
    (e,) = r.city
    f = e.figures
    # PM2.5 mean (6·35 + 80)/7 = 290/7 = 41.428571 → /35 = 1.1836735; PM10 70/70 = 1; SO2 60/60 = 1; NO2 40/40 = 1
    # CO P95 (HJ 663): k = 1 + 6·0.95 = 6.7 → 1.0 + 0.7·(2.0 − 1.0) = 1.7 → /4 = 0.425
    # O3 P90: k = 1 + 6·0.9 = 6.4 → 150 + 0.4·10 = 154 → /160 = 0.9625
    assert f.concentrations["co"] == pytest.approx(1.7)
    assert f.concentrations["o3"] == pytest.approx(154.0)
    assert f.pm25 == pytest.approx(290 / 7)
    assert f.index == pytest.approx(290 / 7 / 35 + 3 + 0.425 + 0.9625)
    # Sunday: PM2.5 80 → IAQI 119: 6 good days of 7
    assert (f.aqi_days, f.good_days) == (7, 6)
    assert f.days == {p: 7 for p in ("so2", "no2", "pm10", "pm25", "co", "o3")}


def test_a_week_needs_six_days_and_a_month_27() -> None:
    monday = date(2026, 11, 16)
    five = [full("W1", "130602", "周", monday + timedelta(days=i), C2) for i in range(5)]
    six = [*five, full("W1", "130602", "周", monday + timedelta(days=5), C2)]
    week = RankPeriod.containing("week", monday)
    r5 = rank_period(five, week)
    assert r5 is not None and r5.city == () and "pm25: 5 < 6 days" in r5.unranked[0].incomplete
    r6 = rank_period(six, week)
    assert r6 is not None and len(r6.city) == 1
    # in progress: on Friday (5 days over) 4 of the 5 days suffice (6 − the 2 days not yet over)
    assert week.required_days(until=monday + timedelta(days=4)) == 4
    r_live = rank_period(five[:4], week, until=monday + timedelta(days=4))
    assert r_live is not None and len(r_live.city) == 1
    nov = RankPeriod.containing("month", DAY)
    assert (nov.min_days, RankPeriod.containing("month", date(2026, 2, 3)).min_days) == (27, 25)
    month_days = [full("M", "130602", "月", d, C2) for d in nov.days[:26]]
    rm = rank_period(month_days, nov)
    assert rm is not None and rm.city == () and rm.unranked[0].incomplete[0].endswith("26 < 27 days")
    rm = rank_period([*month_days, full("M", "130602", "月", nov.days[29], C2)], nov)
    assert rm is not None and len(rm.city) == 1


def test_missing_pollutants_rank_on_the_pollutants_chosen() -> None:
    # a PM-only grid: index = PM2.5/35 + PM10/70, every township on the same two pollutants
    r = rank_period(example_day(), RankPeriod.containing("day", DAY), pollutants=("pm25", "pm10"))
    assert r is not None and r.unranked == ()
    idx = {e.figures.township: e.figures.index for e in r.city}
    # 丁: 20/35 + 40/70 = 0.5714286 + 0.5714286 = 1.1428571; 丙: 30/35 + 60/70 = 1.7142857
    assert idx["丁"] == pytest.approx(40 / 35)
    assert idx["丙"] == pytest.approx(60 / 35)
    assert [e.figures.township for e in r.city] == ["丁", "丙", "甲", "乙"]
    assert "仅计pm25,pm10" in r.basis
    with pytest.raises(ValueError):
        township_figures([], RankPeriod.containing("day", DAY), pollutants=("pm1",))


def test_kinds_can_include_national_stations() -> None:
    r = rank_period(example_day(), RankPeriod.containing("day", DAY), kinds={"micro_station", "national_station"})
    assert r is not None
    bing = next(e.figures for e in r.city if e.figures.township == "丙")
    assert bing.pm25 == (30.0 + 200.0) / 2 and bing.sensors == ("C2", "N1")


def test_ties_share_the_better_rank_on_the_published_index() -> None:
    days = [
        ad("X", "130602", "x", DAY, pm25=35.0),  # 1.0
        ad("Y", "130602", "y", DAY, pm25=35.1),  # 1.002857 → published 1.00: tie with x
        ad("Z", "130606", "z", DAY, pm25=70.0),  # 2.0
        ad("V", "130606", "v", DAY, pm25=17.5),  # 0.5
    ]
    r = rank_period(days, RankPeriod.containing("day", DAY), pollutants=("pm25",))
    assert r is not None
    assert [(e.figures.township, e.rank) for e in r.city] == [("v", 1), ("x", 2), ("y", 2), ("z", 4)]
    assert [(e.figures.township, e.rank) for e in r.districts["130602"]] == [("x", 1), ("y", 1)]


def test_change_against_previous_day_and_last_year() -> None:
    prev = example_day(DAY - timedelta(days=1), scale=2.0)  # every value doubled the day before
    last_year = [d for d in example_day(date(2025, 11, 20)) if d.township == "甲"]  # 甲 only
    r = rank_period([*prev, *last_year, *example_day()], RankPeriod.containing("day", DAY))
    assert r is not None
    jia = next(e for e in r.city if e.figures.township == "甲")
    # index doubles with the values: previous 9.4178571 → (4.7089286 − 9.4178571) / 9.4178571 = −0.5 (improved)
    assert jia.previous_index == pytest.approx(2 * jia.index)
    assert jia.change_vs_previous == pytest.approx(-0.5)
    # same values a year before: change 0
    assert jia.change_vs_last_year == pytest.approx(0.0)
    yi = next(e for e in r.city if e.figures.township == "乙")
    assert yi.change_vs_previous == pytest.approx(-0.5) and yi.change_vs_last_year is None
    assert r.previous == RankPeriod.containing("day", DAY - timedelta(days=1))
    assert r.last_year == RankPeriod.containing("day", date(2025, 11, 20))


def test_same_township_name_in_two_districts_is_two_townships() -> None:
    days = [ad("P", "130602", "城关镇", DAY, pm25=35.0), ad("Q", "130606", "城关镇", DAY, pm25=70.0)]
    prev = [ad("P", "130602", "城关镇", DAY - timedelta(days=1), pm25=70.0)]
    r = rank_period([*days, *prev], RankPeriod.containing("day", DAY), pollutants=("pm25",))
    assert r is not None
    assert [(e.figures.district, e.rank, e.change_vs_previous) for e in r.city] == [
        ("130602", 1, -0.5),
        ("130606", 2, None),
    ]


def test_a_repeated_sensor_day_counts_once() -> None:
    day1 = ad("P", "130602", "t", DAY, pm25=70.0)
    day2 = ad("P", "130602", "t", DAY, pm25=35.0)  # a revision of the same day
    (td,) = township_days([day1, day2, ad("Q", "130602", "t", DAY, pm25=None)])
    assert td.values == {"pm25": 35.0} and td.sensors == {"pm25": ("P",)}


# ------------------------------------------------------------------------------------------------ periods


def test_periods() -> None:
    w = RankPeriod.containing("week", date(2026, 11, 20))
    assert (w.first, w.last, w.key) == (date(2026, 11, 16), date(2026, 11, 22), "2026-W47")
    assert w.previous().key == "2026-W46" and w.last_year() == RankPeriod.containing("week", date(2025, 11, 17))
    assert RankPeriod.containing("week", date(2026, 12, 31)).last_year() is None  # 2026-W53; 2025 has 52 weeks
    m = RankPeriod.containing("month", date(2026, 1, 15))
    ly = m.last_year()
    assert (m.key, m.previous().key, ly.key if ly else None) == ("2026-01", "2025-12", "2025-01")
    assert RankPeriod.containing("day", date(2028, 2, 29)).last_year() is None
    assert [p.kind for p in periods_closed_by(date(2026, 11, 20))] == ["day"]
    assert [p.kind for p in periods_closed_by(date(2026, 11, 22))] == ["day", "week"]
    assert [p.kind for p in periods_closed_by(date(2026, 11, 30))] == ["day", "month"]
    assert [p.kind for p in periods_closed_by(date(2026, 5, 31))] == ["day", "week", "month"]
    with pytest.raises(ValueError):
        RankPeriod.containing("year", DAY)
    assert rank_period([], w) is None
    with pytest.raises(ValueError):
        rank_figures([])


# --------------------------------------------------------------------------------------------- properties

_value = st.floats(min_value=1.0, max_value=300.0, allow_nan=False)


@st.composite
def _grid(draw: st.DrawFn) -> list[AmbientDay]:
    n = draw(st.integers(min_value=1, max_value=8))
    out: list[AmbientDay] = []
    for i in range(n):
        district = draw(st.sampled_from(["130602", "130606"]))
        township = draw(st.sampled_from(["t1", "t2", "t3", "t4"]))
        for d in range(draw(st.integers(min_value=1, max_value=3))):
            out.append(ad(f"S{i}", district, township, DAY - timedelta(days=d), pm25=draw(_value), pm10=draw(_value)))
    return out


def _summary(r: object) -> list[tuple[str, int, int, str, str, float | None]]:
    from cems.rules.ranking import Ranking

    assert isinstance(r, Ranking)
    return [(e.scope, e.rank, e.of, e.figures.district, e.figures.township, e.change_vs_previous) for e in r.entries()]


@settings(max_examples=60, deadline=None)
@given(_grid(), st.randoms(use_true_random=False))
def test_ranking_does_not_depend_on_input_order(days: list[AmbientDay], rnd: random.Random) -> None:
    period = RankPeriod.containing("day", DAY)
    a = rank_period(days, period, pollutants=("pm25", "pm10"))
    shuffled = list(days)
    rnd.shuffle(shuffled)
    b = rank_period(shuffled, period, pollutants=("pm25", "pm10"))
    assert (a is None) == (b is None)
    if a is not None:
        assert _summary(a) == _summary(b)


@settings(max_examples=60, deadline=None)
@given(_grid())
def test_ranks_follow_the_index(days: list[AmbientDay]) -> None:
    r = rank_period(days, RankPeriod.containing("day", DAY), pollutants=("pm25", "pm10"))
    if r is None:
        return
    for entries in (r.city, *r.districts.values()):
        assert all(e.of == len(entries) for e in entries)
        for pos, (a, b) in enumerate(itertools.pairwise(entries), start=1):
            assert round(a.index, 2) <= round(b.index, 2)
            assert a.rank <= pos and b.rank <= pos + 1
            assert (a.rank == b.rank) == (round(a.index, 2) == round(b.index, 2))
    assert {e.figures.key for e in r.city} == {k for d in r.districts.values() for k in (e.figures.key for e in d)}
