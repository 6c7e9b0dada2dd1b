"""Hourly validity and averaging (HJ 75-2017 / HJ 212 appendix D; DOMAIN.md §3)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.model import BEIJING, FLOW, O2, SO2, Measurement, Reading, Stream
from cems.registry import Outlet
from cems.rules.hourly import HourlyRecord, OutletHourly, beijing_hour, unit_factor

H8 = datetime(2026, 1, 1, 8, 0, tzinfo=BEIJING)
MIN = timedelta(minutes=1)


def outlet(**kw: Any) -> Outlet:
    base: dict[str, Any] = {"mn": "M1", "name": "unit 1", "profile": "coal_power_ultra_low"}  # SO2 35 @ 6 %
    base.update(kw)
    return Outlet.model_validate(base)


def reading(stream: Stream, t: datetime, **codes: tuple[dict[str, float], str | None]) -> Reading:
    return Reading("M1", stream, t, {c: Measurement(c, v, f) for c, (v, f) in codes.items()})


def minute(t: datetime, so2: float, o2: float = 11.0, flag: str | None = "N", o2_flag: str | None = "N") -> Reading:
    return reading(Stream.MIN, t, a21026=({"Avg": so2}, flag), a19001=({"Avg": o2}, o2_flag))


def rtd(t: datetime, so2: float, o2: float = 11.0, flag: str | None = "N") -> Reading:
    return reading(Stream.RTD, t, a21026=({"Rtd": so2}, flag), a19001=({"Rtd": o2}, "N"))


def das_hour(t: datetime, so2: float, zs: float | None, o2: float = 11.0, flag: str | None = "N") -> Reading:
    v = {"Avg": so2} if zs is None else {"Avg": so2, "ZsAvg": zs}
    return reading(Stream.HOUR, t, a21026=(v, flag), a19001=({"Avg": o2}, "N"))


def run(agg: OutletHourly, readings: list[Reading]) -> list[HourlyRecord]:
    out: list[HourlyRecord] = []
    for r in readings:
        out.extend(agg.feed(r))
    out.extend(agg.flush())
    return out


def so2(records: list[HourlyRecord]) -> list[HourlyRecord]:
    return [r for r in records if r.pollutant == SO2]


# -- the 45-minute rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "valid"), [(45, True), (44, False), (60, True)])
def test_45_valid_minutes(n: int, valid: bool) -> None:
    recs = so2(run(OutletHourly(outlet()), [minute(H8 + i * MIN, 30.0) for i in range(n)]))
    assert len(recs) == 1
    r = recs[0]
    assert (r.valid, r.flag, r.valid_minutes, r.source) == (valid, "N" if valid else "D", n, "minutes")
    # 30 mg/m³ at 11 % O2 → 30 × 15 / 10 = 45 > 35: an exceedance only when the hour is valid.
    assert r.zs_avg == pytest.approx(45.0)
    assert r.exceeds is valid
    assert (r.limit, r.ref_o2, r.profile) == (35.0, 6.0, "coal_power_ultra_low")


def test_minute_records_with_a_10_minute_period() -> None:
    # HJ 212 MinInterval = 10: each CN=2051 record stands for 10 minutes.
    five = [minute(H8 + i * 10 * MIN, 20.0) for i in range(5)]  # :00..:40 → 50 minutes
    four = [minute(H8 + i * 10 * MIN, 20.0) for i in range(4)]  # :00..:30 → 40 minutes
    r5 = so2(run(OutletHourly(outlet()), five))[0]
    r4 = so2(run(OutletHourly(outlet()), four))[0]
    assert (r5.valid_minutes, r5.valid) == (50, True)
    assert (r4.valid_minutes, r4.valid) == (40, False)


def test_minute_mean_uses_only_n_minutes_and_75_percent_flag_rule() -> None:
    # 45 N minutes at 20 + 15 calibration minutes at 500: 45/60 = 75 % N → hour N, valid, mean 20.
    rs = [minute(H8 + i * MIN, 20.0) for i in range(45)]
    rs += [minute(H8 + i * MIN, 500.0, flag="C") for i in range(45, 60)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    assert (r.flag, r.valid, r.valid_minutes) == ("N", True, 45)
    assert r.avg == pytest.approx(20.0)
    # 44 N + 16 C: 73 % → D, and 44 < 45 → invalid.
    rs = [minute(H8 + i * MIN, 20.0) for i in range(44)]
    rs += [minute(H8 + i * MIN, 500.0, flag="C") for i in range(44, 60)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    assert (r.flag, r.valid, r.exceeds) == ("D", False, False)


# -- the 12-value minute rule (real-time data) ------------------------------------------------------


def _rtd_hour(per_minute: list[int], step_s: int = 5, so2_v: float = 30.0) -> list[Reading]:
    out = []
    for m, n in enumerate(per_minute):
        out += [rtd(H8 + m * MIN + timedelta(seconds=step_s * k), so2_v) for k in range(n)]
    return out


def test_12_values_per_minute_from_realtime() -> None:
    o = outlet(rtd_interval_s=5)  # 12 values a minute expected → HJ 75's 12
    r = so2(run(OutletHourly(o), _rtd_hour([12] * 45)))[0]
    assert (r.valid, r.valid_minutes, r.source, r.flag) == (True, 45, "realtime", "N")
    assert r.exceeds  # 30 → 45 > 35
    # One of the 45 minutes has only 11 values: 44 valid minutes → invalid.
    r = so2(run(OutletHourly(o), _rtd_hour([12] * 44 + [11])))[0]
    assert (r.valid, r.valid_minutes, r.exceeds) == (False, 44, False)
    assert r.flag == "D"  # 44 of the hour's 60 minutes are N: < 75 % (flag and validity agree)


def test_realtime_minute_flag_75_percent() -> None:
    o = outlet(rtd_interval_s=3)

    # Each minute: 12 N values + 4 C values = 75 % N → minute N and valid.
    def minute_vals(m: int, n_bad: int) -> list[Reading]:
        base = H8 + m * MIN
        good = [rtd(base + timedelta(seconds=3 * k), 30.0) for k in range(12)]
        bad = [rtd(base + timedelta(seconds=36 + k), 900.0, flag="C") for k in range(n_bad)]
        return good + bad

    rs = [r for m in range(45) for r in minute_vals(m, 4)]
    r = so2(run(OutletHourly(o), rs))[0]
    assert (r.valid, r.valid_minutes, r.flag) == (True, 45, "N")
    assert r.avg == pytest.approx(30.0)  # only N values are averaged
    # 12 N + 5 C = 70.6 % → every minute D → no valid minute.
    rs = [r for m in range(45) for r in minute_vals(m, 5)]
    r = so2(run(OutletHourly(o), rs))[0]
    assert (r.valid, r.valid_minutes, r.flag, r.avg) == (False, 0, "D", None)


def test_sparse_realtime_requires_every_expected_value() -> None:
    # rtd_interval 30 s: 2 values a minute expected; a minute with 1 is not valid.
    o = outlet()  # default 30 s
    rs = _rtd_hour([2] * 45, step_s=30)
    assert so2(run(OutletHourly(o), rs))[0].valid
    rs = _rtd_hour([2] * 44 + [1], step_s=30)
    assert not so2(run(OutletHourly(o), rs))[0].valid


# -- DAS hourly record and the corrected value ---------------------------------------------------------


def test_das_hourly_record_wins_and_its_zs_is_checked() -> None:
    rs = [minute(H8 + i * MIN, 10.0) for i in range(60)] + [das_hour(H8, 20.0, 30.4)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    # DAS: 20 at 11 % → formula 30.0; the DAS's 30.4 is within 2 % → used.
    assert (r.source, r.avg, r.das_zs_avg, r.zs_source, r.valid_minutes) == ("das_2061", 20.0, 30.4, "das", None)
    assert r.zs_avg == 30.4
    assert not r.exceeds  # 30.4 ≤ 35


def test_das_zs_that_disagrees_is_replaced_by_the_formula() -> None:
    r = so2(run(OutletHourly(outlet()), [das_hour(H8, 20.0, 25.0)]))[0]
    assert r.zs_source == "computed"
    assert r.zs_avg == pytest.approx(30.0)
    assert r.das_zs_avg == 25.0
    assert "disagrees" in r.note


@pytest.mark.parametrize("flag", ["F", "M", "D", "C", "S", "B"])  # T: a lower bound, judged (test_rules_validity)
def test_flagged_das_hours_are_never_exceedances(flag: str) -> None:
    r = so2(run(OutletHourly(outlet()), [das_hour(H8, 500.0, None, flag=flag)]))[0]
    assert (r.flag, r.valid, r.exceeds) == (flag, False, False)
    assert r.zs_avg == pytest.approx(750.0)  # the value is still reported


def test_das_n_hour_exceeds() -> None:
    r = so2(run(OutletHourly(outlet()), [das_hour(H8, 24.0, None)]))[0]
    # 24 × 15 / 10 = 36 > 35.
    assert (r.valid, r.flag, r.exceeds) == (True, "N", True)
    assert r.zs_avg == pytest.approx(36.0)


def test_no_corrected_value_without_valid_o2_or_with_dilution() -> None:
    rs = [minute(H8 + i * MIN, 30.0, o2_flag="C") for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    # No valid corrected value → the hour is not valid either (issue 12 item 2).
    assert not r.valid and r.o2_invalid and r.zs_avg is None and not r.exceeds and "O2" in r.note
    # SO2 valid (45 minutes) but O2 only 44 valid minutes: corrected value shown, hour not valid.
    rs = [minute(H8 + i * MIN, 30.0, o2_flag="N" if i < 44 else "C") for i in range(45)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    assert not r.valid and r.zs_avg == pytest.approx(45.0) and not r.exceeds and "O2 hour not valid" in r.note
    rs = [minute(H8 + i * MIN, 30.0, o2=20.0) for i in range(60)]  # dilution: > 19.5 %
    r = so2(run(OutletHourly(outlet()), rs))[0]
    assert r.zs_avg is None and not r.exceeds


def test_non_concentration_codes_have_no_limit() -> None:
    recs = run(OutletHourly(outlet()), [minute(H8 + i * MIN, 30.0) for i in range(60)])
    o2 = next(r for r in recs if r.pollutant == O2)
    assert (o2.avg, o2.zs_avg, o2.limit, o2.exceeds) == (11.0, None, None, False)


def test_limit_follows_the_date() -> None:
    o = outlet(
        profile="thermal_power_special", limit_change=[{"from": date(2024, 7, 1), "profile": "coal_power_ultra_low"}]
    )
    before = datetime(2024, 6, 30, 23, 0, tzinfo=BEIJING)
    rs = [das_hour(before, 26.0, None), das_hour(before + timedelta(hours=1), 26.0, None)]
    a, b = so2(run(OutletHourly(o, lateness=timedelta(0)), rs))
    # 26 × 15 / 10 = 39: below 50 (GB 13223 表2) on June 30, above 35 (ultra-low) from July 1.
    assert (a.limit, a.exceeds, b.limit, b.exceeds) == (50.0, False, 35.0, True)


# -- hour boundaries and closing ------------------------------------------------------------------------


def test_beijing_hour_boundaries_and_utc_input() -> None:
    late = datetime(2026, 1, 1, 23, 59, 59, tzinfo=BEIJING)
    nxt = datetime(2026, 1, 2, 0, 0, tzinfo=BEIJING)
    assert beijing_hour(late).isoformat() == "2026-01-01T23:00:00+08:00"
    assert beijing_hour(nxt).isoformat() == "2026-01-02T00:00:00+08:00"
    # The same instant in UTC (15:59:59Z) lands in the same Beijing hour.
    assert beijing_hour(datetime(2026, 1, 1, 15, 59, 59, tzinfo=UTC)).isoformat() == "2026-01-01T23:00:00+08:00"
    recs = so2(run(OutletHourly(outlet()), [rtd(datetime(2026, 1, 1, 15, 59, 59, tzinfo=UTC), 1.0), rtd(nxt, 1.0)]))
    assert [r.hour_start.isoformat() for r in recs] == ["2026-01-01T23:00:00+08:00", "2026-01-02T00:00:00+08:00"]
    assert all(r.hour_start.utcoffset() == timedelta(hours=8) for r in recs)


def test_hour_closes_on_later_data_after_lateness() -> None:
    agg = OutletHourly(outlet())  # default lateness 5 min
    assert agg.feed(minute(H8 + 59 * MIN, 30.0)) == []
    assert agg.feed(rtd(H8 + timedelta(minutes=64, seconds=59), 30.0)) == []  # 09:04:59: still open
    # The DAS's CN=2061 for 08:00 arrives after data of 09:00 and still wins.
    assert agg.feed(das_hour(H8, 20.0, None)) == []
    out = so2(agg.feed(rtd(H8 + timedelta(minutes=65), 30.0)))  # 09:05 closes 08:00
    assert [(r.hour_start, r.source) for r in out] == [(H8, "das_2061")]
    # Data for an emitted hour revise it (event time): counted, and the hour is rebuilt by revisions(); the
    # DAS's record still wins.
    assert agg.feed(minute(H8 + 10 * MIN, 30.0)) == []
    assert agg.late_readings == 1
    assert [(r.hour_start, r.source) for r in so2(agg.revisions())] == [(H8, "das_2061")]
    assert so2(agg.flush()) and agg.flush() == []


def test_lateness_zero_closes_on_first_data_of_a_later_hour() -> None:
    agg = OutletHourly(outlet(), lateness=timedelta(0))
    agg.feed(minute(H8, 30.0))
    assert so2(agg.feed(rtd(H8 + timedelta(hours=1), 30.0)))[0].hour_start == H8


def test_flush_until_closes_only_ended_hours_and_tolerates_disorder() -> None:
    agg = OutletHourly(outlet())
    agg.feed(minute(H8 + 5 * MIN, 30.0))
    agg.feed(minute(H8 + 70 * MIN, 30.0))  # 09:10 − 5 min lateness ≥ 09:00: closes 08:00
    agg.feed(minute(H8 + 3 * MIN, 30.0))  # late for 08:00 → merged; the revised record follows
    assert agg.late_readings == 1
    assert so2(agg.revisions())[0].valid_minutes is not None
    agg2 = OutletHourly(outlet(), lateness=timedelta(minutes=30))
    agg2.feed(minute(H8 + 5 * MIN, 30.0))
    agg2.feed(minute(H8 + 70 * MIN, 30.0))
    agg2.feed(minute(H8 + 3 * MIN, 30.0))  # within lateness: aggregated
    assert agg2.flush(H8 + timedelta(minutes=119)) and agg2.open_hours == [H8 + timedelta(hours=1)]
    assert agg2.flush(H8 + timedelta(minutes=119)) == []
    assert agg2.late_readings == 0


def test_duplicates_count_once() -> None:
    rs = [minute(H8 + i * MIN, 30.0) for i in range(44)] * 2  # 44 distinct minutes sent twice
    r = so2(run(OutletHourly(outlet()), rs))[0]
    assert (r.valid_minutes, r.valid) == (44, False)


# -- units -----------------------------------------------------------------------------------------------


def test_unit_conversions() -> None:
    o = outlet(units={FLOW: "m3/h", "a01013": "Pa", SO2: "µg/m³"})
    r = reading(
        Stream.HOUR,
        H8,
        a00000=({"Avg": 36000.0}, "N"),
        a01013=({"Avg": 101325.0}, "N"),
        a21026=({"Avg": 30000.0}, "N"),
        a19001=({"Avg": 6.0}, "N"),
    )
    recs = {x.pollutant: x for x in run(OutletHourly(o), [r])}
    assert recs[FLOW].avg == pytest.approx(10.0)  # m³/s
    assert recs["a01013"].avg == pytest.approx(101.325)  # kPa
    assert recs[SO2].avg == pytest.approx(30.0)  # mg/m³
    assert unit_factor(SO2, "ppm") == pytest.approx(64.066 / 22.414)
    with pytest.raises(ValueError, match="unknown unit"):
        unit_factor(SO2, "furlongs")
    with pytest.raises(ValueError, match="measured in"):
        OutletHourly(outlet(units={SO2: "m3/h"}))


# -- snapshot/restore and properties -----------------------------------------------------------------------


def test_snapshot_restore_gives_the_same_records() -> None:
    rs = [minute(H8 + i * MIN, 20.0 + i) for i in range(0, 50)] + [
        rtd(H8 + timedelta(minutes=62, seconds=k * 30), 5.0) for k in range(6)
    ]
    rs += [das_hour(H8 + timedelta(hours=1), 22.0, 33.0), minute(H8 + timedelta(minutes=130), 1.0)]
    whole = run(OutletHourly(outlet()), rs)
    for k in range(len(rs)):
        a = OutletHourly(outlet())
        first = [x for r in rs[:k] for x in a.feed(r)]
        b = OutletHourly(outlet())
        b.restore(json.loads(json.dumps(a.snapshot())))
        assert first + run(b, rs[k:]) == whole


@settings(max_examples=60, deadline=None)
@given(flags=st.lists(st.sampled_from(["N", "N", "N", "C", "D", "F", None]), min_size=1, max_size=60))
def test_minute_validity_property(flags: list[str | None]) -> None:
    rs = [minute(H8 + i * MIN, 10.0, flag=f) for i, f in enumerate(flags)]
    r = so2(run(OutletHourly(outlet()), rs))[0]
    n_ok = sum(1 for f in flags if f in (None, "N"))
    assert r.valid_minutes == n_ok
    assert r.valid is (n_ok >= 45)
    assert r.flag == ("N" if 4 * n_ok >= 3 * 60 else "D")  # share of the hour's 60 minutes
    assert r.exceeds is False  # 10 → 15 ≤ 35


def test_snapshot_keeps_the_revised_and_touched_hours() -> None:
    """The parts of the state that late data fill (hours to revise, hours revised) are in the snapshot (written
    apart from the empty case, CPU) and restored: the restored aggregator's snapshot is the same."""
    a = OutletHourly(outlet())
    for r in [minute(H8 + i * MIN, 20.0) for i in range(50)] + [minute(H8 + timedelta(hours=2), 20.0)]:
        a.feed(r)
    assert a.closed_before_ts > H8.timestamp()  # hour 8 emitted
    a.feed(minute(H8 + 55 * MIN, 20.0))  # late: hour 8 to revise
    dirty = a.snapshot()
    assert dirty["dirty"] == [int(H8.timestamp())]
    assert a.revisions()
    touched = a.snapshot()
    assert touched["dirty"] == [] and [h for h, _ in touched["touched"]] == [int(H8.timestamp())]
    for snap in (dirty, touched):
        b = OutletHourly(outlet())
        b.restore(json.loads(json.dumps(snap)))
        assert b.snapshot() == snap


def test_unit_conversions_of_real_time_and_minute_values() -> None:
    """Real-time and minute values are converted too (the look-up skipped only for outlets without units)."""
    o = outlet(units={SO2: "g/m3"})
    for stream, key in ((Stream.RTD, "Rtd"), (Stream.MIN, "Avg")):
        step = timedelta(seconds=30) if stream is Stream.RTD else MIN
        n = 120 if stream is Stream.RTD else 60
        rs = [reading(stream, H8 + i * step, a21026=({key: 0.03}, "N"), a19001=({key: 6.0}, "N")) for i in range(n)]
        recs = {x.pollutant: x for x in run(OutletHourly(o), rs)}
        assert recs[SO2].avg == pytest.approx(30.0), stream  # mg/m³
