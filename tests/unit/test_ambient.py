"""Ambient air from grid sensors: validity of hourly, daily and 8-hour values (GB 3095-2012 table 4, HJ 663),
hotspots, percentiles and the township ranking's composite index, on small examples computed by hand."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.model import BEIJING
from cems.rules.ambient import (
    AmbientHour,
    AmbientHourly,
    HotspotRule,
    composite_index,
    daily_mean,
    hotspot_hours,
    hotspot_runs,
    hourly_aqi,
    o3_8h_means,
    o3_daily_max_8h,
    percentile,
    rank_townships,
    upload_rate,
)

H0 = datetime(2026, 11, 20, 8, 0, tzinfo=BEIJING)


def _feed(acc: AmbientHourly, sensor: str, minutes: range, value: float = 50.0) -> None:
    for m in minutes:
        acc.add(sensor, H0 + timedelta(minutes=m), {"a34004": value, "a34002": value * 2})


def test_hourly_value_needs_45_minutes() -> None:
    acc = AmbientHourly()
    _feed(acc, "G1", range(45))
    _feed(acc, "G2", range(44))
    assert acc.close_before(H0 + timedelta(minutes=59)) == []  # the hour has not ended
    hours = {(h.sensor, h.pollutant): h for h in acc.close_before(H0 + timedelta(hours=1))}
    assert hours[("G1", "pm25")].valid and hours[("G1", "pm25")].minutes == 45
    assert hours[("G1", "pm10")].mean == pytest.approx(100.0)
    assert not hours[("G2", "pm25")].valid and hours[("G2", "pm25")].minutes == 44


def test_a_reading_covers_its_interval_and_duplicates_count_once() -> None:
    acc = AmbientHourly(interval_s={"G5": 300})
    for m in range(0, 45, 5):  # 9 readings every 5 minutes: 45 minutes covered
        acc.add("G5", H0 + timedelta(minutes=m), {"pm25": 30.0})
        acc.add("G5", H0 + timedelta(minutes=m), {"pm25": 30.0})  # a duplicate adds no minute
    (h,) = acc.close_before(H0 + timedelta(hours=1))
    assert (h.minutes, h.valid) == (45, True)


def _hour(i: int, valid: bool = True, mean: float = 10.0) -> AmbientHour:
    return AmbientHour("G1", "pm25", H0 + timedelta(hours=i), mean, 60 if valid else 30, valid)


def test_daily_mean_needs_20_valid_hours() -> None:
    assert daily_mean([_hour(i) for i in range(20)]) == pytest.approx(10.0)
    assert daily_mean([_hour(i) for i in range(19)] + [_hour(20, valid=False)]) is None


def test_o3_8h_means_need_6_hours_and_the_daily_maximum_14_windows() -> None:
    day = datetime(2026, 7, 1, tzinfo=BEIJING)
    hourly: dict[datetime, float | None] = {day + timedelta(hours=h): float(h) for h in range(24)}
    means = o3_8h_means(hourly)
    # the window ending at 07:00 holds hours 0..7: mean 3.5; at 05:00 only 6 hours (0..5): mean 2.5
    assert means[day + timedelta(hours=7)] == pytest.approx(3.5)
    assert means[day + timedelta(hours=5)] == pytest.approx(2.5)
    assert means[day + timedelta(hours=4)] is None  # 5 hours
    assert o3_daily_max_8h(date(2026, 7, 1), means) == pytest.approx(19.5)  # hours 16..23
    sparse = {k: (v if k.hour % 4 else None) for k, v in hourly.items()}  # 2 of every 8 hours missing
    assert o3_daily_max_8h(date(2026, 7, 1), o3_8h_means(sparse)) is not None
    gaps = {k: (v if k.hour < 12 else None) for k, v in hourly.items()}
    assert o3_daily_max_8h(date(2026, 7, 1), o3_8h_means(gaps)) is None  # < 14 valid 8-h means


def test_hourly_aqi_of_a_sensor() -> None:
    hours = [AmbientHour("G1", p, H0, v, 60, True) for p, v in
             (("pm25", 80.0), ("pm10", 120.0), ("so2", 10.0), ("no2", 40.0), ("co", 0.8), ("o3", 100.0))]  # fmt: skip
    doc = hourly_aqi(hours)
    assert doc["aqi"] == 119 and doc["primary"] == ["pm25"] and doc["standard"] == "HJ 633-2026"


def test_upload_rate() -> None:
    assert upload_rate(22, 24) == pytest.approx(22 / 24) and upload_rate(0, 0) == 0.0


def test_hotspot_needs_ratio_floor_and_consecutive_hours() -> None:
    rule = HotspotRule(ratio=1.5, floor=20.0, hours=3, min_neighbours=2)
    around = {"A": ["B", "C", "D"], "B": ["A", "C", "D"], "C": ["A", "B", "D"], "D": ["A", "B", "C"]}
    hot = []
    for i, a in enumerate((90.0, 95.0, 100.0, 40.0)):
        hot += hotspot_hours({"A": a, "B": 40.0, "C": 42.0, "D": 38.0}, around, H0 + timedelta(hours=i), rule)
    assert [(h.sensor, h.neighbours_median) for h in hot] == [("A", 40.0)] * 3
    assert hot[0].neighbours == {"B": 40.0, "C": 42.0, "D": 38.0}  # the evidence
    (run,) = hotspot_runs(hot, rule)
    assert len(run) == 3
    # relatively high but below the floor (a clean day): no hotspot
    assert hotspot_hours({"A": 15.0, "B": 5.0, "C": 6.0}, around, H0, rule) == []
    # two hours only: no event
    assert hotspot_runs(hot[:2], rule) == []


def test_percentile_as_hj_663() -> None:
    # n = 10, p = 90: k = 1 + 9 × 0.9 = 9.1 → x9 + 0.1 × (x10 − x9)
    assert percentile([float(v) for v in range(1, 11)], 90) == pytest.approx(9.1)
    assert percentile([5.0], 95) == 5.0


def test_composite_index_worked_example() -> None:
    daily = {
        "pm25": [35.0, 45.0],  # mean 40 / 35
        "pm10": [70.0],  # 70 / 70
        "so2": [6.0],  # 6 / 60
        "no2": [20.0],  # 20 / 40
        "co": [1.0, 2.0],  # 95th percentile: k = 1.95 → 1.95 / 4
        "o3": [100.0, 160.0],  # 90th: k = 1.9 → 154 / 160
    }
    index, shares = composite_index(daily)
    expected = 40 / 35 + 1 + 0.1 + 0.5 + 1.95 / 4 + 154 / 160
    assert index == pytest.approx(expected)
    assert shares["pm25"] == pytest.approx(40 / 35)


def test_ranking_and_improvement() -> None:
    figures = {
        ("先锋街道", "D1"): (40.0, 80.0, 4.2, 0.5),
        ("东关街道", "D1"): (30.0, 60.0, 3.1, 0.8),
        ("南关街道", "D2"): (30.0, 65.0, 3.1, 0.7),
    }
    ranks = rank_townships(figures, previous={"先锋街道": 4.0}, last_year={"东关街道": 3.1})
    assert [(r.township, r.rank) for r in ranks] == [("东关街道", 1), ("南关街道", 1), ("先锋街道", 3)]
    assert ranks[2].change_vs_previous == pytest.approx(0.05)  # 5 % worse
    assert ranks[0].change_vs_last_year == pytest.approx(0.0) and ranks[1].change_vs_previous is None


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_is_within_the_values(values: list[float], p: float) -> None:
    assert min(values) <= percentile(values, p) <= max(values)


def test_grid_sensors_in_the_registry_carry_place_kind_and_interval() -> None:
    from cems.errors import RegistryError
    from cems.registry import parse_registry

    base = '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n'
    reg = parse_registry(
        base + '[[grid_sensor]]\nid="G1"\ndistrict="D"\ntownship="先锋街道"\nlat=38.87\nlon=115.46\n'
        'kind="construction_site"\ninterval_s=300\n[[grid_sensor]]\nid="G2"\ndistrict="D"\n'
    )
    g1, g2 = reg.grid_sensor
    assert (g1.lat, g1.lon, g1.kind, g1.interval_s) == (38.87, 115.46, "construction_site", 300)
    assert (g2.kind, g2.interval_s, g2.lat) == ("micro_station", 60, None)
    from cems.rules.ambient import sensor_intervals

    acc = AmbientHourly(sensor_intervals(reg.grid_sensor))
    for m in range(0, 45, 5):
        acc.add("G1", H0 + timedelta(minutes=m), {"a34002": 80.0})
    assert acc.close_before(H0 + timedelta(hours=1))[0].valid  # nine 5-minute readings cover 45 minutes
    for bad in ("lat=91", 'kind="satellite"', "interval_s=0"):
        with pytest.raises(RegistryError):
            parse_registry(base + f'[[grid_sensor]]\nid="G1"\ndistrict="D"\n{bad}\n')
