"""The quality tracker's real-time ZsRtd check (``QualityTracker._zs_sub``) computes the corrected value and the
agreement inline (CPU, issue 20): what it keeps for an hour is what :func:`cems.rules.o2.correct` and
:func:`cems.rules.o2.zs_agrees` decide, for any O2, reference, value and DAS value, finite or not."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registries import one_outlet  # tests/registries.py

from cems.engine import ComplianceEngine
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.rules.o2 import correct, zs_agrees

REG = parse_registry(one_outlet())
INFO = REG.outlet("MN0001")
assert INFO is not None
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)
CONC = ("a21026", "a21002", "a34013")

values = st.one_of(
    st.floats(-50, 500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 35.0, 1e308, math.inf, -math.inf, math.nan]),
)
o2s = st.one_of(st.floats(-5, 25), st.sampled_from([0.0, 6.0, 19.5, 19.500001, 20.999, 21.0, -0.0]))


def _expected(rows: list[tuple[float, dict[str, tuple[float, float | None, str]]]], tracker: Any) -> dict[str, Any]:
    """The hour's ``zs_rt`` as the former code kept it (correct() and zs_agrees(), one code at a time)."""
    p = tracker._p
    kept: dict[str, list[Any]] = {}
    for minute, (o2, codes) in enumerate(rows):
        bit = 1 << minute
        if not math.isfinite(o2):
            continue
        for code, (rtd, das, flag) in codes.items():
            if das is None or flag != "N" or not math.isfinite(rtd):
                continue
            ref, limit = p.schedule.ref_and_limit(code, T0)
            computed = correct(rtd, o2, ref, max_o2=p.max_o2)
            if computed is None or not math.isfinite(das):
                continue
            if zs_agrees(das, computed, p.cfg.zs_rel_tol, p.cfg.zs_abs_tol) and (
                limit is None or (das > limit) == (computed > limit)
            ):
                continue
            diff = abs(das - computed)
            cur = kept.get(code)
            if cur is None:
                kept[code] = [bit, diff, das, computed]
            else:
                cur[0] |= bit
                if (diff, das, computed) > (cur[1], cur[2], cur[3]):
                    cur[1:] = [diff, das, computed]
    return kept


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            o2s,
            st.fixed_dictionaries(
                {
                    c: st.tuples(values, st.one_of(st.none(), values), st.sampled_from(["N", "N", "N", "D"]))
                    for c in CONC
                }
            ),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_the_zs_rtd_check_keeps_what_correct_and_zs_agrees_decide(
    rows: list[tuple[float, dict[str, tuple[float, float | None, str]]]],
) -> None:
    engine = ComplianceEngine(REG, journal=False)
    assert INFO is not None
    tracker = engine._outlet(INFO).quality
    for minute, (o2, codes) in enumerate(rows):
        ms = {"a19001": Measurement("a19001", {"Rtd": o2}, "N")}
        for code, (rtd, das, flag) in codes.items():
            vals = {"Rtd": rtd} if das is None else {"Rtd": rtd, "ZsRtd": das}
            ms[code] = Measurement(code, vals, flag)
        tracker.on_reading(Reading("MN0001", Stream.RTD, T0 + timedelta(minutes=minute), ms))
    got = {c: list(v) for c, v in tracker._stats[0].zs_rt.items()} if tracker._stats else {}
    want = _expected(rows, tracker)
    assert repr(got) == repr(want)  # (repr: NaN-free here, and -0.0 told apart)


def test_the_check_keeps_disagreements_and_ignores_agreements() -> None:
    """Non-vacuous: a DAS value 20 % off is kept, one that agrees is not, an O2 above the cut-off keeps none."""
    engine = ComplianceEngine(REG, journal=False)
    assert INFO is not None
    tracker = engine._outlet(INFO).quality
    ref, _ = tracker._p.schedule.ref_and_limit("a21026", T0)
    good = 10.0 * (21 - ref) / (21 - 8.0)
    for minute, o2 in enumerate([8.0, 8.0, 20.0]):
        ms = {
            "a19001": Measurement("a19001", {"Rtd": o2}, "N"),
            "a21026": Measurement("a21026", {"Rtd": 10.0, "ZsRtd": good * 1.2}, "N"),
            "a21002": Measurement("a21002", {"Rtd": 10.0, "ZsRtd": good}, "N"),
        }
        tracker.on_reading(Reading("MN0001", Stream.RTD, T0 + timedelta(minutes=minute), ms))
    zs_rt = tracker._stats[0].zs_rt
    assert set(zs_rt) == {"a21026"} and zs_rt["a21026"][0] == 0b11


def test_co2_and_facility_codes_are_checked_when_a_concentration_has_a_zs_rtd() -> None:
    """The codes checked are those the check accepted before it was given them from the reading's pass (CPU):
    a CO2 or facility code's ZsRtd is checked too, in the reading's order, when (and only when) a concentration
    of the reading has one."""
    engine = ComplianceEngine(REG, journal=False)
    assert INFO is not None
    tracker = engine._outlet(INFO).quality
    for minute, conc_zs in enumerate([True, False]):
        ms = {
            "a19001": Measurement("a19001", {"Rtd": 8.0}, "N"),
            "SB1": Measurement("SB1", {"Rtd": 5.0, "ZsRtd": 50.0, "RS": 1}, "N"),
            "a21026": Measurement("a21026", {"Rtd": 10.0, **({"ZsRtd": 100.0} if conc_zs else {})}, "N"),
            "a05001": Measurement("a05001", {"Rtd": 5.0, "ZsRtd": 50.0}, "N"),
        }
        tracker.on_reading(Reading("MN0001", Stream.RTD, T0 + timedelta(minutes=minute), ms))
    zs_rt = tracker._stats[0].zs_rt
    assert list(zs_rt) == ["SB1", "a21026", "a05001"]
    assert all(v[0] == 0b1 for v in zs_rt.values())


def test_the_check_converts_to_the_standard_units() -> None:
    """An outlet sending SO2 in g/m³: a DAS value 0.05 g/m³ (50 mg/m³) off the formula is kept, in mg/m³ (unscaled,
    0.05 would be within the absolute tolerance)."""
    reg = parse_registry(one_outlet(outlet='units = { a21026 = "g/m3" }\n'))
    info = reg.outlet("MN0001")
    assert info is not None
    tracker = ComplianceEngine(reg, journal=False)._outlet(info).quality
    ref, _ = tracker._p.schedule.ref_and_limit("a21026", T0)
    good = 0.01 * (21 - ref) / (21 - 8.0)  # g/m³
    ms = {
        "a19001": Measurement("a19001", {"Rtd": 8.0}, "N"),
        "a21026": Measurement("a21026", {"Rtd": 0.01, "ZsRtd": good + 0.05}, "N"),
    }
    tracker.on_reading(Reading("MN0001", Stream.RTD, T0, ms))
    kept = tracker._stats[0].zs_rt["a21026"]
    assert kept[1] == pytest.approx(50.0) and kept[2] == pytest.approx((good + 0.05) * 1000)
