"""Issue 12 (legal soundness II): an hour's validity, its flag and its corrected value hold together.

* item 12: ``flag`` and ``valid`` never contradict each other (HJ 212 appendix D / HJ 75-2017: the
  N share of an hour is taken over its 60 minutes, so "flag N" and "≥ 45 valid minutes" coincide).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.model import BEIJING, SO2, Measurement, Reading, Stream
from cems.registry import Outlet
from cems.rules.hourly import HourlyRecord, OutletHourly

H8 = datetime(2026, 1, 1, 8, 0, tzinfo=BEIJING)
MIN = timedelta(minutes=1)
#: Flags whose hours are valid (T: over range, the value is a lower bound; see cems/rules/hourly.py).
VALID_HOUR_FLAGS = {"N", "T"}


def outlet(**kw: Any) -> Outlet:
    base: dict[str, Any] = {"mn": "M1", "name": "unit 1", "profile": "coal_power_ultra_low"}  # SO2 35 @ 6 %
    base.update(kw)
    return Outlet.model_validate(base)


def reading(stream: Stream, t: datetime, **codes: tuple[dict[str, float], str | None]) -> Reading:
    return Reading("M1", stream, t, {c: Measurement(c, v, f) for c, (v, f) in codes.items()})


def minute(t: datetime, so2: float, o2: float = 11.0, flag: str | None = "N", o2_flag: str | None = "N") -> Reading:
    return reading(Stream.MIN, t, a21026=({"Avg": so2}, flag), a19001=({"Avg": o2}, o2_flag))


def rtd(t: datetime, so2: float, o2: float = 11.0, flag: str | None = "N", o2_flag: str | None = "N") -> Reading:
    return reading(Stream.RTD, t, a21026=({"Rtd": so2}, flag), a19001=({"Rtd": o2}, o2_flag))


def run(agg: OutletHourly, readings: list[Reading]) -> list[HourlyRecord]:
    out: list[HourlyRecord] = []
    for r in readings:
        out.extend(agg.feed(r))
    out.extend(agg.flush())
    return out


def so2(records: list[HourlyRecord]) -> HourlyRecord:
    (r,) = [r for r in records if r.pollutant == SO2]
    return r


def consistent(r: HourlyRecord) -> bool:
    """flag N ⇒ valid, and valid ⇒ a valid flag."""
    return (r.flag != "N" or r.valid) and (not r.valid or r.flag in VALID_HOUR_FLAGS)


# -- item 12: flag and valid agree ---------------------------------------------------------------------


def test_40_minutes_covered_is_not_flag_n() -> None:
    # 40 N minutes and nothing else: 40 < 45 valid minutes → invalid, so it cannot be flagged N.
    r = so2(run(OutletHourly(outlet()), [minute(H8 + i * MIN, 20.0) for i in range(40)]))
    assert (r.valid, r.valid_minutes) == (False, 40)
    assert r.flag == "D"
    assert r.counts_valid is False


def test_44_of_45_realtime_minutes_is_not_flag_n() -> None:
    o = outlet(rtd_interval_s=30)
    rs = [rtd(H8 + m * MIN + timedelta(seconds=30 * k), 20.0) for m in range(44) for k in range(2)]
    rs += [rtd(H8 + 44 * MIN, 20.0)]  # the 45th minute has 1 of the 2 expected values
    r = so2(run(OutletHourly(o), rs))
    assert (r.valid, r.valid_minutes, r.flag) == (False, 44, "D")


def test_das_record_flag_n_without_a_mean_is_not_flag_n() -> None:
    rs = [reading(Stream.HOUR, H8, a21026=({}, "N"), a19001=({"Avg": 11.0}, "N"))]
    r = so2(run(OutletHourly(outlet()), rs))
    assert r.valid is False and r.flag != "N"


_F = str | None
_FLAGS = st.sampled_from(["N", "N", "N", "N", None, "C", "D", "F", "M", "S", "B", "T"])


@settings(max_examples=150, deadline=None)
@given(
    slots=st.lists(st.tuples(st.integers(0, 59), _FLAGS, _FLAGS), min_size=1, max_size=80),
    o2=st.sampled_from([3.0, 11.0, 19.0, 20.0, 21.0, 25.0]),
)
def test_minute_hours_flag_and_valid_never_contradict(slots: list[tuple[int, _F, _F]], o2: float) -> None:
    rs = [minute(H8 + m * MIN, 30.0, o2=o2, flag=f, o2_flag=g) for m, f, g in sorted(slots, key=lambda s: s[0])]
    for r in run(OutletHourly(outlet()), rs):
        assert consistent(r), r
        assert not r.exceeds or r.valid


@settings(max_examples=100, deadline=None)
@given(
    per_minute=st.lists(st.lists(_FLAGS, max_size=3), min_size=1, max_size=60),
    o2_flag=_FLAGS,
)
def test_realtime_hours_flag_and_valid_never_contradict(per_minute: list[list[_F]], o2_flag: _F) -> None:
    o = outlet(rtd_interval_s=30)
    rs = [
        rtd(H8 + m * MIN + timedelta(seconds=20 * k), 30.0, flag=f, o2_flag=o2_flag)
        for m, flags in enumerate(per_minute)
        for k, f in enumerate(flags)
    ]
    for r in run(OutletHourly(o), rs):
        assert consistent(r), r


@settings(max_examples=60, deadline=None)
@given(flag=_FLAGS, avg=st.one_of(st.none(), st.floats(0, 500)), o2_flag=_FLAGS)
def test_das_hours_flag_and_valid_never_contradict(flag: str | None, avg: float | None, o2_flag: str | None) -> None:
    v = {} if avg is None else {"Avg": avg}
    rs = [reading(Stream.HOUR, H8, a21026=(v, flag), a19001=({"Avg": 11.0}, o2_flag))]
    for r in run(OutletHourly(outlet()), rs):
        assert consistent(r), r
