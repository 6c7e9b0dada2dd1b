"""Real-time cadence inferred, not assumed (issue 12 item 6): minute coverage and interruption thresholds
follow the data's own cadence, robust to stray records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.engine import ComplianceEngine
from cems.model import BEIJING, SO2, Measurement, Reading, Stream
from cems.registry import Outlet, parse_registry
from cems.rules.cadence import WINDOW, RecentGaps, hour_cadence
from cems.rules.events import DATA_INTERRUPTION, InterruptionTracker
from cems.rules.hourly import HourlyRecord, OutletHourly

H8 = datetime(2026, 1, 1, 8, 0, tzinfo=BEIJING)
S = timedelta(seconds=1)


def outlet(**kw: Any) -> Outlet:
    base: dict[str, Any] = {"mn": "M1", "name": "unit 1", "profile": "coal_power_ultra_low"}  # rtd_interval_s 30
    base.update(kw)
    return Outlet.model_validate(base)


def reading(stream: Stream, t: datetime, key: str, v: float = 20.0) -> Reading:
    return Reading(
        "M1",
        stream,
        t,
        {"a21026": Measurement("a21026", {key: v}, "N"), "a19001": Measurement("a19001", {key: 8.0}, "N")},
    )


def so2_hour(readings: list[Reading], o: Outlet | None = None) -> HourlyRecord:
    agg = OutletHourly(o or outlet())
    out: list[HourlyRecord] = []
    for r in sorted(readings, key=lambda r: r.data_time):
        out += agg.feed(r)
    out += agg.flush()
    (rec,) = [r for r in out if r.pollutant == SO2]
    return rec


def rtd_stream(interval: int, phase: int = 0) -> list[Reading]:
    return [reading(Stream.RTD, H8 + s * S, "Rtd") for s in range(phase, 3600, interval)]


# -- minute coverage ---------------------------------------------------------------------------------------


def test_a_60_second_das_with_the_default_registry_interval_is_valid() -> None:
    """Registry default rtd_interval_s = 30; the DAS sends every 60 s: 60 valid minutes (today: 0)."""
    r = so2_hour(rtd_stream(60))
    assert (r.valid, r.valid_minutes, r.flag, r.source) == (True, 60, "N", "realtime")


def test_a_90_second_das_can_reach_45_minutes() -> None:
    """Any interval over 80 s could never reach 45 minutes (one value per minute at most)."""
    r = so2_hour(rtd_stream(90))
    assert (r.valid, r.valid_minutes, r.flag) == (True, 60, "N")
    half = [x for x in rtd_stream(90) if x.data_time < H8 + timedelta(minutes=30)]
    r = so2_hour(half)
    assert (r.valid, r.valid_minutes) == (False, 30)  # a value covers its interval, never the rest of the hour


def test_one_stray_minute_record_does_not_shrink_a_10_minute_stream() -> None:
    recs = [reading(Stream.MIN, H8 + timedelta(minutes=m), "Avg") for m in range(0, 60, 10)]
    recs.append(reading(Stream.MIN, H8 + timedelta(minutes=51), "Avg"))  # a stray CN=2051 record
    r = so2_hour(recs)
    assert (r.valid, r.valid_minutes, r.source) == (True, 60, "minutes")  # today: 7 minutes


@settings(max_examples=200, deadline=None)
@given(interval=st.integers(1, 900), data=st.data())
def test_a_complete_stream_of_any_cadence_is_valid(interval: int, data: st.DataObject) -> None:
    phase = data.draw(st.integers(0, interval - 1))
    r = so2_hour(rtd_stream(interval, phase))
    assert r.valid and r.valid_minutes is not None and r.valid_minutes >= 45 and r.flag == "N"


@settings(max_examples=200, deadline=None)
@given(period_min=st.sampled_from([1, 2, 3, 5, 10]), data=st.data())
def test_minute_streams_are_robust_to_strays(period_min: int, data: st.DataObject) -> None:
    n = 60 // period_min
    k = data.draw(st.integers(0, (n - 2) // 3))
    strays = data.draw(st.lists(st.integers(1, 3599), min_size=k, max_size=k, unique=True))
    recs = [reading(Stream.MIN, H8 + timedelta(minutes=m), "Avg") for m in range(0, 60, period_min)]
    recs += [reading(Stream.MIN, H8 + s * S, "Avg") for s in strays]
    r = so2_hour(recs)
    assert (r.valid, r.valid_minutes) == (True, 60)


@settings(max_examples=150, deadline=None)
@given(interval=st.integers(1, 600), data=st.data())
def test_realtime_streams_are_robust_to_strays(interval: int, data: st.DataObject) -> None:
    n = len(range(0, 3600, interval))
    k = data.draw(st.integers(0, max(0, (n - 2) // 3)))
    strays = data.draw(st.lists(st.integers(1, 3599), min_size=k, max_size=k, unique=True))
    recs = rtd_stream(interval) + [reading(Stream.RTD, H8 + s * S, "Rtd") for s in strays]
    r = so2_hour(recs)
    assert r.valid and r.valid_minutes is not None and r.valid_minutes >= 45


def test_hour_cadence_median_and_hint() -> None:
    assert hour_cadence([0, 600, 1200, 1800, 2400, 3000, 3060], 60) == 600
    assert hour_cadence([0, 30], 45) == 45  # too few values: the hint
    assert hour_cadence([], 30) == 30


# -- interruption thresholds ------------------------------------------------------------------------------

REG = """
[city]
name = "c"
[[district]]
code = "D"
name = "d"
[[enterprise]]
id = "E"
name = "e"
district = "D"
[[enterprise.outlet]]
mn = "M1"
name = "hourly-only DAS"
profile = "coal_power_ultra_low"
"""


def das_hour(t: datetime) -> Reading:
    return Reading(
        "M1",
        Stream.HOUR,
        t,
        {"a21026": Measurement("a21026", {"Avg": 10.0}, "N"), "a19001": Measurement("a19001", {"Avg": 8.0}, "N")},
    )


def test_a_das_sending_only_hourly_records_is_not_interrupted_every_hour() -> None:
    eng = ComplianceEngine(parse_registry(REG), journal=False)
    events = []
    for h in range(24):
        events += eng.on_reading(das_hour(H8 + timedelta(hours=h))).events
        # live: the record of hour h arrives shortly after h+1; the clock runs on until the next one
        events += eng.on_clock(H8 + timedelta(hours=h + 2, minutes=1)).events
    assert [u for u in events if u.event.type == DATA_INTERRUPTION] == []
    # three records missing: an interruption
    later = eng.on_clock(H8 + timedelta(hours=23 + 4, minutes=1)).events
    assert [u.kind for u in later if u.event.type == DATA_INTERRUPTION] == ["opened"]


def test_a_realtime_das_keeps_the_10_minute_threshold() -> None:
    t = InterruptionTracker(outlet(), "E", "D")
    for k in range(20):
        t.on_data(H8 + k * 30 * S, Stream.RTD)
    assert t.threshold_s == 600
    ups = t.on_clock(H8 + timedelta(minutes=9, seconds=30) + 19 * 30 * S)
    assert ups == []
    ups = t.on_clock(H8 + timedelta(minutes=10, seconds=30) + 19 * 30 * S)
    assert [u.kind for u in ups] == ["opened"]


def test_an_explicit_registry_threshold_is_kept() -> None:
    t = InterruptionTracker(outlet(interruption_threshold_s=900), "E", "D")
    for h in range(10):
        t.on_data(H8 + timedelta(hours=h), Stream.HOUR)
    assert t.threshold_s == 900


def test_cadence_state_is_bounded_and_restorable() -> None:
    t = InterruptionTracker(outlet(), "E", "D")
    for h in range(1000):
        t.on_data(H8 + timedelta(hours=h), Stream.HOUR)
    snap = t.snapshot()
    assert len(snap["cadence"]["gaps"]) == WINDOW
    t2 = InterruptionTracker(outlet(), "E", "D")
    t2.restore(snap)
    assert t2.threshold_s == t.threshold_s == 3 * 3600
    old = {k: v for k, v in snap.items() if k != "cadence"}  # a state saved before the cadence existed
    t3 = InterruptionTracker(outlet(), "E", "D")
    t3.restore(old)
    assert t3.threshold_s == 600
    g = RecentGaps()
    g.on_data(0, 3600)
    assert g.cadence(30) == 3600  # the finest stream seen, before enough gaps
