"""The grid engine (issue 15): hours and days with the ambient validity rules, hotspots against the neighbours,
the construction-site PM10 alarm, silent sensors, event time (any arrival order within the lateness gives
the in-order result) and the state across a restart."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import Registry, parse_registry
from cems.rules.events import DATA_INTERRUPTION, RETRACTED_STATUS, Event
from cems.rules.grid import GRID_HOTSPOT, GRID_PM10_ALARM, GridEngine, GridOutput, haversine_km, neighbourhoods

DAY = datetime(2026, 11, 20, tzinfo=BEIJING)
PM25, PM10, O3, NO2 = "a34004", "a34002", "a05024", "a21004"


def sensor(sid: str, *, lat: float | None = None, lon: float | None = None, township: str = "先锋街道",
           kind: str = "micro_station", interval_s: int = 300) -> str:  # fmt: skip
    pos = "" if lat is None or lon is None else f"lat = {lat}\nlon = {lon}\n"
    return (
        f'[[grid_sensor]]\nid = "{sid}"\ndistrict = "130602"\ntownship = "{township}"\n{pos}'
        f'kind = "{kind}"\ninterval_s = {interval_s}\n'
    )


def grid_registry(*sensors: str, grid: str = "") -> Registry:
    return parse_registry(one_outlet(tail="".join(sensors) + grid))


#: Four micro-stations ≈ 1 km apart (G1 … G4), a fifth 50 km away, a construction site.
FOUR = [sensor(f"G{i}", lat=38.87 + 0.008 * i, lon=115.46) for i in range(1, 5)]
FAR = sensor("G9", lat=39.32, lon=115.46, township="远郊镇")
SITE = sensor("C1", lat=38.88, lon=115.47, kind="construction_site")
RULES = "[grid.hotspot]\nratio = 1.5\nfloor = 20.0\nhours = 2\nmin_neighbours = 2\nradius_km = 3.0\n"


def reading(sid: str, t: datetime, values: dict[str, float], stream: Stream = Stream.RTD, flag: str = "N") -> Reading:
    key = "Rtd" if stream is Stream.RTD else "Avg"
    return Reading(sid, stream, t, {c: Measurement(c, {key: v}, flag) for c, v in values.items()})


def series(sid: str, start: datetime, hours: int, values: Any, every_s: int = 300) -> list[Reading]:
    """A reading every ``every_s`` for ``hours`` hours; ``values(t)`` gives the values at t."""
    times = [start + timedelta(seconds=every_s * i) for i in range(hours * 3600 // every_s)]
    return [reading(sid, t, values(t)) for t in times]


def run(engine: GridEngine, readings: list[Reading], *, finish: bool = True) -> GridOutput:
    out = GridOutput()
    for r in readings:
        out.extend(engine.on_reading(r))
    if finish:
        out.extend(engine.finish())
    return out


def final(out: GridOutput) -> tuple[dict[Any, Any], dict[Any, Any], dict[str, Event]]:
    """The last version of each hour, day and event (as stored: same keys overwrite)."""
    hours = {(h.sensor, h.hour_start): h.to_json() for h in out.hourly}
    days = {(d.sensor, d.day): d for d in out.daily}
    events = {u.event.event_id: u.event for u in out.events}
    return hours, days, {k: e for k, e in events.items() if e.status != RETRACTED_STATUS}


# ------------------------------------------------------------------------------------------------ validity


def test_an_hour_is_valid_with_45_minutes_and_not_with_40() -> None:
    eng = GridEngine(grid_registry(sensor("G1", interval_s=300)))
    # hour 0: nine 5-minute readings (45 minutes); hour 1: eight (40 minutes)
    rs = [reading("G1", DAY + timedelta(minutes=5 * i), {PM25: 40.0 + i}) for i in range(9)]
    rs += [reading("G1", DAY + timedelta(hours=1, minutes=5 * i), {PM25: 40.0}) for i in range(8)]
    hours, _, _ = final(run(eng, rs))
    h0 = hours[("G1", DAY)]["values"]["pm25"]
    h1 = hours[("G1", DAY + timedelta(hours=1))]["values"]["pm25"]
    assert (h0["minutes"], h0["valid"], h0["mean"]) == (45, True, 44.0)
    assert (h1["minutes"], h1["valid"]) == (40, False)


def test_flagged_values_and_duplicates_do_not_count() -> None:
    eng = GridEngine(grid_registry(sensor("G1", interval_s=60)))
    rs = [reading("G1", DAY + timedelta(minutes=i), {PM25: 30.0}) for i in range(50)]
    rs += [reading("G1", DAY + timedelta(minutes=i), {PM25: 30.0}) for i in range(10)]  # redelivered
    rs += [reading("G1", DAY + timedelta(minutes=50 + i), {PM25: 500.0}, flag="D") for i in range(10)]
    h = final(run(eng, rs))[0][("G1", DAY)]["values"]["pm25"]
    assert (h["minutes"], h["mean"], h["valid"]) == (50, 30.0, True)


def test_a_stations_own_hourly_record_wins_for_its_hour() -> None:
    eng = GridEngine(grid_registry(sensor("G1")))
    rs = [reading("G1", DAY + timedelta(minutes=5 * i), {PM25: 40.0}) for i in range(4)]  # 20 minutes: not valid
    rs.append(reading("G1", DAY, {PM25: 52.0}, Stream.HOUR))  # CN=2061 of 00:00-01:00
    h = final(run(eng, rs))[0][("G1", DAY)]
    assert h["values"]["pm25"] == {"mean": 52.0, "minutes": 60, "valid": True}


def test_hourly_aqi_level_and_primary_of_a_record() -> None:
    eng = GridEngine(grid_registry(sensor("G1")))
    vals = {PM25: 80.0, PM10: 100.0, "a21026": 10.0, NO2: 30.0, "a21005": 0.8, O3: 60.0}
    h = final(run(eng, series("G1", DAY, 1, lambda t: vals)))[0][("G1", DAY)]
    # HJ 633-2026: PM2.5 80 on the 24-h breakpoints (60 → 100, 115 → 150): ⌈100 + 50 × 20/55⌉ = 119
    assert (h["aqi"], h["level"], h["category"], h["primary"], h["standard"]) == (
        119, 3, "轻度污染", ["pm25"], "HJ 633-2026"
    )  # fmt: skip


def test_a_day_needs_20_valid_hours() -> None:
    eng = GridEngine(grid_registry(sensor("G1")))
    twenty = series("G1", DAY, 20, lambda t: {PM25: 30.0})
    nineteen = series("G1", DAY + timedelta(days=1), 19, lambda t: {PM25: 30.0})
    _, days, _ = final(run(eng, twenty + nineteen))
    d0, d1 = days[("G1", DAY.date())], days[("G1", (DAY + timedelta(days=1)).date())]
    assert (d0.means["pm25"], d0.hours["pm25"], d0.upload_rate) == (30.0, 20, 20 / 24)
    assert (d1.means["pm25"], d1.hours["pm25"], d1.aqi) == (None, 19, None)


def _o3_day(missing: set[int]) -> GridOutput:
    eng = GridEngine(grid_registry(sensor("G1")))
    rs = [r for r in series("G1", DAY, 24, lambda t: {O3: 50.0 + 10 * t.hour}) if r.data_time.hour not in missing]
    return run(eng, rs)


def test_o3_daily_maximum_8h_with_6_of_8_hours_and_14_windows() -> None:
    d = final(_o3_day(set()))[1][("G1", DAY.date())]
    # every hour valid: the last window (16:00-23:00) has the highest mean: 50 + 10 × 19.5 = 245
    assert d.means["o3_8h"] == 245.0
    assert d.means["o3"] == 280.0  # the 1-h maximum (23:00)
    # hours 16 and 17 missing: the window 16-23 keeps 6 of 8 hours, still valid: mean of 18..23
    d = final(_o3_day({16, 17}))[1][("G1", DAY.date())]
    assert d.means["o3_8h"] == sum(50.0 + 10 * h for h in range(18, 24)) / 6
    # hours 16, 17, 18 missing: the windows ending 18 … 23 keep 5 of 8 hours (not valid): 11 of 17 windows
    d = final(_o3_day({16, 17, 18}))[1][("G1", DAY.date())]
    assert d.means["o3_8h"] is None and d.means["o3"] == 280.0


def test_o3_daily_maximum_needs_14_valid_windows() -> None:
    # hours 0-5 missing: the windows ending 7 … 10 keep 2 … 5 hours (not valid): 13 of 17 → no daily max
    d = final(_o3_day(set(range(6))))[1][("G1", DAY.date())]
    assert d.means["o3_8h"] is None
    # hours 0-4 missing: the windows ending 7, 8, 9 are not valid, exactly 14 are: a daily maximum
    d = final(_o3_day(set(range(5))))[1][("G1", DAY.date())]
    assert d.means["o3_8h"] == 245.0


# ------------------------------------------------------------------------------------------------ hotspots


def test_neighbours_within_the_radius_or_else_the_same_township() -> None:
    reg = grid_registry(*FOUR, FAR, sensor("N1", township="先锋街道"), sensor("N2", township="先锋街道"))
    nb = neighbourhoods(reg.grid_sensor, 3.0, ["micro_station"])
    assert nb["G1"] == ("G2", "G3", "G4", "N1", "N2")  # G4 is ≈ 2.7 km away; N1/N2 have no coordinates
    assert nb["G9"] == ()  # 50 km away, another township
    assert nb["N1"] == ("G1", "G2", "G3", "G4", "N2")
    assert 49 < haversine_km(38.87, 115.46, 39.32, 115.46) < 51


def _hotspot_run(g1: float, others: float = 40.0, hours: int = 5) -> GridOutput:
    eng = GridEngine(grid_registry(*FOUR, grid=RULES))
    rs: list[Reading] = []
    for sid in ("G1", "G2", "G3", "G4"):
        rs += series(sid, DAY, hours, lambda t, s=sid: {PM25: g1 if s == "G1" and 1 <= t.hour <= 2 else others})
    return run(eng, sorted(rs, key=lambda r: r.data_time))


def test_a_real_excess_over_the_neighbours_raises_a_hotspot_with_the_evidence() -> None:
    _, _, events = final(_hotspot_run(g1=90.0))
    (ev,) = [e for e in events.values() if e.type == GRID_HOTSPOT]
    assert (ev.mn, ev.pollutant, ev.start, ev.end, ev.hours, ev.status) == (
        "G1", "pm25", DAY + timedelta(hours=1), DAY + timedelta(hours=3), 2, "closed"
    )  # fmt: skip
    assert (ev.peak, ev.limit, ev.enterprise, ev.district) == (90.0, 60.0, "grid", "130602")
    assert isinstance(ev.evidence, dict)
    first = ev.evidence["hours"][0]
    assert first == {
        "hour": (DAY + timedelta(hours=1)).isoformat(),
        "value": 90.0,
        "median": 40.0,
        "threshold": 60.0,
        "neighbours": {"G2": 40.0, "G3": 40.0, "G4": 40.0},
    }
    assert json.loads(json.dumps(ev.to_json()))["evidence"] == ev.evidence


def test_no_hotspot_without_a_real_excess_nor_under_the_floor() -> None:
    assert not final(_hotspot_run(g1=55.0))[2]  # 1.4 × the median: under the ratio
    # low concentrations: 3 × the median (12 vs 4) but only 8 µg/m³ above it: under the floor (20)
    assert not final(_hotspot_run(g1=12.0, others=4.0))[2]
    # a single hour above is not a run of 2 hours
    eng = GridEngine(grid_registry(*FOUR, grid=RULES))
    rs: list[Reading] = []
    for sid in ("G1", "G2", "G3", "G4"):
        rs += series(sid, DAY, 4, lambda t, s=sid: {PM25: 90.0 if s == "G1" and t.hour == 1 else 40.0})
    assert not final(run(eng, sorted(rs, key=lambda r: r.data_time)))[2]


def test_a_hotspot_needs_enough_neighbours_with_valid_values() -> None:
    eng = GridEngine(grid_registry(*FOUR, grid=RULES))
    rs: list[Reading] = []
    for sid in ("G1", "G2"):  # G3, G4 silent: one neighbour only (min_neighbours = 2)
        rs += series(sid, DAY, 4, lambda t, s=sid: {PM25: 90.0 if s == "G1" else 40.0})
    assert not [e for e in final(run(eng, sorted(rs, key=lambda r: r.data_time)))[2].values() if e.type == GRID_HOTSPOT]


# ------------------------------------------------------------------------------------------------ alarm, silence


def test_construction_site_pm10_alarm_above_the_limit() -> None:
    eng = GridEngine(grid_registry(SITE, grid="[grid.construction]\npm10_limit = 150.0\nhours = 1\n"))
    rs = series("C1", DAY, 5, lambda t: {PM10: 180.0 if t.hour in (1, 2) else (150.0 if t.hour == 3 else 90.0)})
    (ev,) = final(run(eng, rs))[2].values()
    assert (ev.type, ev.pollutant, ev.start, ev.end, ev.peak, ev.limit) == (
        GRID_PM10_ALARM, "pm10", DAY + timedelta(hours=1), DAY + timedelta(hours=3), 180.0, 150.0
    )  # fmt: skip


def test_a_silent_sensor_raises_and_closes_a_data_interruption() -> None:
    reg = grid_registry(sensor("G1", interval_s=60), grid="[grid]\ninterruption_threshold_s = 900\n")
    eng = GridEngine(reg)
    rs = [reading("G1", DAY + timedelta(minutes=i), {PM25: 30.0}) for i in range(30)]
    out = run(eng, rs, finish=False)
    # live: the clock runs on with no data; the silence opens once past 15 min (+ the 5-min lateness)
    ups = eng.on_clock(DAY + timedelta(minutes=29 + 15 + 5, seconds=30)).events
    assert [u.kind for u in ups] == ["opened"] and ups[0].event.type == DATA_INTERRUPTION
    assert ups[0].event.start == DAY + timedelta(minutes=29) and ups[0].event.mn == "G1"
    out.extend(eng.on_reading(reading("G1", DAY + timedelta(hours=1), {PM25: 30.0})))
    out.extend(eng.on_clock(DAY + timedelta(hours=1, minutes=6)))
    ev = [u.event for u in out.events if u.event.type == DATA_INTERRUPTION][-1]
    assert (ev.status, ev.start, ev.end) == ("closed", DAY + timedelta(minutes=29), DAY + timedelta(hours=1))
    # replay of the same data (no clock): the same event, opened and closed at the next data time
    again = final(run(GridEngine(reg), [*rs, reading("G1", DAY + timedelta(hours=1), {PM25: 30.0})]))[2]
    assert [e.to_json() for e in again.values() if e.type == DATA_INTERRUPTION] == [ev.to_json()]


# ------------------------------------------------------------------------------------------------ event time


def _scenario() -> tuple[Registry, list[Reading]]:
    """Five sensors over 26 hours: a hotspot, a construction-site alarm, a silent spell, O3."""
    reg = grid_registry(*FOUR, SITE, grid="[grid]\ninterruption_threshold_s = 900\n" + RULES)
    rs: list[Reading] = []
    for sid in ("G1", "G2", "G3", "G4", "C1"):

        def vals(t: datetime, s: str = sid) -> dict[str, float]:
            base = 35.0 + 5 * (t.hour % 3) + int(s[1])
            pm25 = base * (2.2 if s == "G2" and 5 <= t.hour <= 8 else 1.0)
            pm10 = 200.0 if s == "C1" and t.hour in (3, 4) else 1.8 * pm25
            return {PM25: pm25, PM10: pm10, O3: 40.0 + 6 * t.hour, NO2: 20.0 + t.minute / 10}

        rs += [r for r in series(sid, DAY, 26, vals) if not (sid == "G3" and 10 <= r.data_time.hour < 12)]
    rs.sort(key=lambda r: r.data_time)
    return reg, rs


def _shuffled_within(rs: list[Reading], lateness_s: int, seed: int) -> list[Reading]:
    """Arrival order: each reading delayed by a random 0 … lateness_s − 1 seconds after its data time."""
    rng = random.Random(seed)
    delayed = [(r.data_time.timestamp() + rng.uniform(0, lateness_s - 1), i, r) for i, r in enumerate(rs)]
    return [r for _, _, r in sorted(delayed)]


def test_the_scenario_raises_each_kind_of_event() -> None:
    reg, rs = _scenario()
    _, days, events = final(run(GridEngine(reg), rs))
    kinds = sorted((e.type, e.mn) for e in events.values())
    assert (GRID_HOTSPOT, "G2") in kinds and (GRID_PM10_ALARM, "C1") in kinds and (DATA_INTERRUPTION, "G3") in kinds
    assert days[("G1", DAY.date())].means["o3_8h"] is not None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000), st.integers(1, 300))
def test_any_arrival_order_within_the_lateness_gives_the_in_order_result(seed: int, lateness_s: int) -> None:
    reg, rs = _scenario()
    expected = final(run(GridEngine(reg), rs))
    got = final(run(GridEngine(reg), _shuffled_within(rs, lateness_s, seed)))
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert {k: e.to_json() for k, e in got[2].items()} == {k: e.to_json() for k, e in expected[2].items()}


def test_late_data_within_the_hold_revise_the_hour_and_the_hotspot() -> None:
    reg = grid_registry(*FOUR, grid=RULES)
    eng = GridEngine(reg)
    rs: list[Reading] = []
    for sid in ("G1", "G2", "G3", "G4"):
        rs += series(sid, DAY, 5, lambda t, s=sid: {PM25: 90.0 if s == "G1" and 1 <= t.hour <= 2 else 40.0})
    rs.sort(key=lambda r: r.data_time)
    late = [r for r in rs if r.mn == "G1" and r.data_time.hour == 2]  # G1's hour 2 arrives 2 hours late
    first = run(eng, [r for r in rs if r not in late], finish=False)
    assert not [u for u in first.events if u.event.type == GRID_HOTSPOT]
    out = eng.on_readings(late)
    h2 = [h for h in out.hourly if h.sensor == "G1" and h.hour_start == DAY + timedelta(hours=2)]
    assert h2 and h2[-1].values[0].mean == 90.0
    (ev,) = {u.event.event_id: u.event for u in out.events if u.event.type == GRID_HOTSPOT}.values()
    assert (ev.start, ev.end, ev.status, ev.late) == (
        DAY + timedelta(hours=1),
        DAY + timedelta(hours=3),
        "closed",
        True,
    )
    assert eng.late_readings == len(late)


def test_state_survives_a_restart() -> None:
    reg, rs = _scenario()
    expected = final(run(GridEngine(reg), rs))
    eng = GridEngine(reg)
    out = GridOutput()
    stored: dict[str, Any] = {}  # the grid_state rows, as the commits leave them (None: deleted)
    half = len(rs) // 2
    for i in range(0, half, 97):
        out.extend(run(eng, rs[i : min(i + 97, half)], finish=False))
        for key, row in json.loads(json.dumps(eng.take_changes())).items():
            if row is None:
                stored.pop(key, None)
            else:
                stored[key] = row
    again = GridEngine(reg)
    again.restore(stored)
    out.extend(run(again, rs[len(rs) // 2 :]))
    got = final(out)
    assert got[0] == expected[0] and got[1] == expected[1]
    assert {k: e.to_json() for k, e in got[2].items()} == {k: e.to_json() for k, e in expected[2].items()}


def test_a_backfill_of_an_hour_without_data_is_built_afresh_and_later_data_are_counted() -> None:
    reg = grid_registry(sensor("G1"), sensor("G2"))
    eng = GridEngine(reg)
    live = series("G2", DAY, 10, lambda t: {PM25: 40.0})
    run(eng, live, finish=False)
    # G1 back-fills its hour 03:00 (no data before, older than the 3-hour hold) in the batch that also moves
    # the watermark past another hour
    backfill = series("G1", DAY + timedelta(hours=3), 1, lambda t: {PM25: 55.0})
    out = eng.on_readings([*backfill, reading("G2", DAY + timedelta(hours=11, minutes=6), {PM25: 40.0})])
    (h3,) = [h for h in out.hourly if h.sensor == "G1"]
    assert (h3.hour_start, h3.values[0].mean, h3.values[0].valid) == (DAY + timedelta(hours=3), 55.0, True)
    assert eng.late_readings == 12
    # once the next hour is decided, that hour leaves memory: one more reading of it is stored by the service
    # but not merged
    eng.on_reading(reading("G2", DAY + timedelta(hours=12, minutes=6), {PM25: 40.0}))
    out = eng.on_reading(reading("G1", DAY + timedelta(hours=3, minutes=2), {PM25: 500.0}))
    assert eng.late_unrevised == 1 and not out.hourly
    # after the repair deadline (10 days, DOMAIN.md §5) nothing moves
    eng.on_reading(reading("G2", DAY + timedelta(days=12), {PM25: 40.0}))
    out = eng.on_reading(reading("G1", DAY + timedelta(hours=5), {PM25: 500.0}))
    assert eng.late_beyond_window == 1 and not out.hourly
