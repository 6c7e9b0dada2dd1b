"""Issue 12 (legal soundness II): an hour's validity, its flag and its corrected value hold together.

* item 12: ``flag`` and ``valid`` never contradict each other (HJ 212 appendix D / HJ 75-2017: the
  N share of an hour is taken over its 60 minutes, so "flag N" and "≥ 45 valid minutes" coincide).
* item 2: no hour is valid without a computable corrected value (O2 missing, flagged, ≥ 21 % or above the
  dilution cut-off): received, not valid, and an ``o2_invalid`` event.
* item 7: NOx = NO × 46/30 + NO2 when NOx itself is not sent (DOMAIN.md §3).
* item 13: supervision reasons cite the city's plan and the standards, in Chinese, not our notes.
* item 8: flag T (over the analyser's range) is a lower bound: valid and judged (configurable); S (manual
  value) and B (analyser–logger communication fault) are not valid and never exceed.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.engine import ComplianceEngine
from cems.model import BEIJING, NOX, O2, SO2, Measurement, Reading, Stream
from cems.registry import Outlet, parse_registry
from cems.rules.events import O2_INVALID
from cems.rules.hourly import HourlyRecord, OutletHourly
from cems.rules.nox import derived_nox, with_derived_nox

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


# -- item 2: no valid hour without a computable corrected value ------------------------------------------


def _hour(o2: float = 11.0, o2_flag: str | None = "N", so2_v: float = 30.0, start: datetime = H8) -> list[Reading]:
    return [minute(start + i * MIN, so2_v, o2=o2, o2_flag=o2_flag) for i in range(60)]


@pytest.mark.parametrize(
    ("o2", "o2_flag"),
    [(11.0, "C"), (11.0, "M"), (11.0, "D"), (21.0, "N"), (23.0, "N"), (20.0, "N")],
    ids=["calibrating", "maintenance", "fault", "air", "above-air", "dilution"],
)
def test_o2_not_usable_makes_the_pollutant_hour_invalid(o2: float, o2_flag: str) -> None:
    # SO2 has 60 valid N minutes; only the O2 is unusable.  Diluting with air (O2 20 %) must not turn an
    # exceedance into a valid compliant hour.
    r = so2(run(OutletHourly(outlet()), _hour(o2, o2_flag)))
    assert (r.valid, r.counts_valid, r.exceeds, r.o2_invalid) == (False, False, False, True)
    assert r.flag == "D"
    assert "O2" in r.note


def test_o2_missing_makes_the_pollutant_hour_invalid() -> None:
    rs = [reading(Stream.MIN, H8 + i * MIN, a21026=({"Avg": 30.0}, "N")) for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.o2_invalid, r.flag) == (False, True, "D")


def test_o2_hour_with_44_valid_minutes_makes_the_pollutant_hour_invalid() -> None:
    rs = [minute(H8 + i * MIN, 30.0, o2_flag="N" if i < 44 else "C") for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.o2_invalid, r.exceeds) == (False, True, False)
    assert r.zs_avg == pytest.approx(45.0)  # still reported for information


def test_flow_and_o2_records_are_not_invalidated_by_o2() -> None:
    recs = run(OutletHourly(outlet()), _hour(o2_flag="C"))
    o2 = next(r for r in recs if r.pollutant == O2)
    assert o2.o2_invalid is False and o2.flag == "D"


def test_dilution_cut_off_is_configurable() -> None:
    # O2 20 %: above the default 19.5 % cut-off; an outlet (or city) configured at 20.5 % judges it:
    # 30 × 15 / 1 = 450 > 35.
    r = so2(run(OutletHourly(outlet(o2_max=20.5), max_o2=20.5), _hour(o2=20.0)))
    assert (r.valid, r.o2_invalid, r.exceeds) == (True, False, True)
    assert r.zs_avg == pytest.approx(450.0)


REG_TOML = (
    '[city]\nname="c"\n{city}[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\n'
    'district="D"\n[[enterprise.outlet]]\nmn="M1"\nname="o"\nprofile="coal_power_ultra_low"\n{outlet}'
)


def _engine(city: str = "", outlet_: str = "") -> ComplianceEngine:
    return ComplianceEngine(parse_registry(REG_TOML.format(city=city, outlet=outlet_)), journal=False)


def test_engine_raises_an_o2_invalid_event_and_counts_the_hours_received_not_valid() -> None:
    eng = _engine()
    rs = _hour(o2=20.0) + _hour(o2=20.0, start=H8 + 60 * MIN) + _hour(start=H8 + 120 * MIN)
    out = [eng.on_reading(r) for r in rs] + [eng.finish()]
    events = [u for o in out for u in o.events if u.event.type == O2_INVALID]
    assert [u.kind for u in events] == ["opened", "updated", "closed"]
    ev = events[-1].event
    assert (ev.mn, ev.pollutant, ev.start, ev.end, ev.hours) == ("M1", O2, H8, H8 + 120 * MIN, 2)
    assert ev.peak == pytest.approx(20.0)
    assert ev.limit == 19.5
    day = eng.rates.outlet_days(H8, H8 + 180 * MIN)
    by = day[0].by_factor[SO2]
    assert (by.expected, by.received, by.valid) == (3, 3, 1)


def test_engine_takes_the_cut_off_from_the_city_and_the_outlet() -> None:
    for city, outlet_ in (("o2_max=20.5\n", ""), ("", "o2_max=20.5\n")):
        eng = _engine(city, outlet_)
        out = [eng.on_reading(r) for r in _hour(o2=20.0)] + [eng.finish()]
        recs = [h for o in out for h in o.hourly if h.pollutant == SO2]
        assert [(h.valid, h.exceeds) for h in recs] == [(True, True)]
        assert not [u for o in out for u in o.events if u.event.type == O2_INVALID]


def test_engine_o2_invalid_state_survives_a_restart() -> None:
    a = _engine()
    for r in _hour(o2=20.0):
        a.on_reading(r)
    for r in _hour(o2=20.0, start=H8 + 60 * MIN)[:10]:  # past the lateness: closes 08:00, opens the event
        a.on_reading(r)
    assert [e.type for e in a.open_events()] == [O2_INVALID]
    b = _engine()
    b.restore_outlet("M1", json.loads(json.dumps(a._outlets["M1"].snapshot())))
    assert [e.event_id for e in b.open_events()] == [e.event_id for e in a.open_events()]


# -- item 8: flags T, S, B -------------------------------------------------------------------------------


def test_saturated_analyser_hour_is_valid_and_judged() -> None:
    # SO2 analyser over its range for the whole hour, sending its full-scale 30 (true value ≥ 30):
    # 30 × 15 / 10 = 45 > 35 is a lower bound of the corrected mean → a valid hour, an exceedance.
    rs = [minute(H8 + i * MIN, 30.0, flag="T") for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.flag, r.counts_valid, r.exceeds) == (True, "T", True, True)
    assert r.zs_avg == pytest.approx(45.0)


def test_partly_saturated_hour_is_flagged_t_and_judged() -> None:
    rs = [minute(H8 + i * MIN, 30.0, flag="T" if i % 2 else "N") for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.flag, r.valid_minutes, r.exceeds) == (True, "T", 60, True)


def test_saturated_realtime_values_are_judged() -> None:
    o = outlet(rtd_interval_s=30)
    rs = [rtd(H8 + m * MIN + timedelta(seconds=30 * k), 30.0, flag="T") for m in range(60) for k in range(2)]
    r = so2(run(OutletHourly(o), rs))
    assert (r.valid, r.flag, r.exceeds) == (True, "T", True)


def test_das_hour_flagged_t_is_judged() -> None:
    rs = [reading(Stream.HOUR, H8, a21026=({"Avg": 24.0}, "T"), a19001=({"Avg": 11.0}, "N"))]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.flag, r.exceeds) == (True, "T", True)  # 24 × 15 / 10 = 36 > 35


def test_over_range_can_be_configured_invalid() -> None:
    rs = [minute(H8 + i * MIN, 30.0, flag="T") for i in range(60)]
    r = so2(run(OutletHourly(outlet(), over_range_valid=False), rs))
    assert (r.valid, r.exceeds) == (False, False)
    eng = _engine(city="over_range_valid=false\n")
    out = [eng.on_reading(x) for x in rs] + [eng.finish()]
    assert [(h.valid, h.exceeds) for o in out for h in o.hourly if h.pollutant == SO2] == [(False, False)]


def test_o2_over_range_gives_no_valid_correction() -> None:
    # O2 above the analyser's range (typically 25 %) is beyond air: no correction, hour not valid.
    r = so2(run(OutletHourly(outlet()), _hour(o2=11.0, o2_flag="T")))
    assert (r.valid, r.o2_invalid) == (False, True)


@pytest.mark.parametrize("flag", ["S", "B"])
def test_manual_and_communication_fault_hours_are_not_valid(flag: str) -> None:
    rs = [minute(H8 + i * MIN, 300.0, flag=flag) for i in range(60)]
    r = so2(run(OutletHourly(outlet()), rs))
    assert (r.valid, r.counts_valid, r.exceeds) == (False, False, False)
    das = [reading(Stream.HOUR, H8, a21026=({"Avg": 300.0}, flag), a19001=({"Avg": 11.0}, "N"))]
    r = so2(run(OutletHourly(outlet()), das))
    assert (r.valid, r.flag, r.exceeds) == (False, flag, False)


def test_saturated_realtime_values_raise_the_warning() -> None:
    eng = _engine()
    ws = []
    for k in range(4):
        t = H8 + timedelta(seconds=30 * k)
        ws += [u for u in eng.on_reading(rtd(t, 30.0, flag="T")).events if u.event.type == "realtime_warning"]
    assert [u.kind for u in ws][:1] == ["opened"]


def test_snapshot_keeps_over_range_sub_values() -> None:
    rs = [minute(H8 + i * MIN, 30.0, flag="T") for i in range(60)]
    a = OutletHourly(outlet())
    for x in rs:
        a.feed(x)
    b = OutletHourly(outlet())
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert so2(b.flush()).flag == "T"


# -- item 7: NOx from NO and NO2 ---------------------------------------------------------------------------


def _no_no2_minute(t: datetime, no: float, no2: float, flag: str | None = "N") -> Reading:
    return reading(Stream.MIN, t, a21003=({"Avg": no}, flag), a21004=({"Avg": no2}, "N"), a19001=({"Avg": 6.0}, "N"))


def test_engine_judges_nox_from_no_and_no2() -> None:
    # NO 30 + NO2 10 at the reference O2 (6 %): NOx = 30 × 46/30 + 10 = 56 > 50 (coal power ultra-low).
    eng = _engine()
    out = [eng.on_reading(_no_no2_minute(H8 + i * MIN, 30.0, 10.0)) for i in range(60)] + [eng.finish()]
    (r,) = [h for o in out for h in o.hourly if h.pollutant == NOX]
    assert r.avg == pytest.approx(56.0)
    assert (r.valid, r.flag, r.limit, r.exceeds) == (True, "N", 50.0, True)
    assert [u.event.pollutant for o in out for u in o.events if u.event.type == "hourly_exceedance"] == [NOX]


def test_sent_nox_is_never_replaced() -> None:
    r = reading(Stream.RTD, H8, a21002=({"Rtd": 1.0}, "N"), a21003=({"Rtd": 30.0}, "N"), a21004=({"Rtd": 10.0}, "N"))
    assert with_derived_nox(r, {}) is r


def test_nox_in_ppm_inputs_and_flags() -> None:
    # NO and NO2 in ppm: NO 10 ppm = 10 × 30.006/22.414 mg/m³; NO2 10 ppm = 10 × 46.006/22.414 mg/m³.
    factors = {"a21003": 30.006 / 22.414, "a21004": 46.006 / 22.414}
    m = derived_nox(Measurement("a21003", {"Rtd": 10.0}, "N"), Measurement("a21004", {"Rtd": 10.0}, None), factors)
    assert m is not None
    assert m.values["Rtd"] == pytest.approx(10 * 30.006 / 22.414 * 46 / 30 + 10 * 46.006 / 22.414)
    assert m.flag == "N"
    bad = derived_nox(Measurement("a21003", {"Rtd": 1.0}, "T"), Measurement("a21004", {"Rtd": 1.0}, "D"), {})
    assert bad is not None and bad.flag == "D"
    low = derived_nox(Measurement("a21003", {"Rtd": 1.0}, "T"), Measurement("a21004", {"Rtd": 1.0}, "N"), {})
    assert low is not None and low.flag == "T"


@settings(max_examples=100, deadline=None)
@given(no=st.floats(0, 5000), no2=st.floats(0, 5000))
def test_nox_formula_property(no: float, no2: float) -> None:
    m = derived_nox(Measurement("a21003", {"Avg": no}, "N"), Measurement("a21004", {"Avg": no2}, "N"), {})
    assert m is not None
    assert m.values["Avg"] == pytest.approx(no * 46 / 30 + no2)
    assert m.values["Avg"] >= no2


# -- item 13: reasons cite rules, in the reader's language -------------------------------------------------


def test_supervision_reasons_cite_the_plan_and_the_standards_in_chinese() -> None:
    basis = "《兰州市大气污染防治示范区建设实施方案》"  # what a bureau configures (example)
    reg = parse_registry(
        REG_TOML.format(city=f'supervision_enterprise_threshold=1\nsupervision_basis="{basis}"\n', outlet="")
    )
    eng = ComplianceEngine(reg, journal=False)
    for r in _hour(so2_v=300.0):  # one exceeding hour on a day: below 90 % and an exceeding enterprise
        eng.on_reading(r)
    eng.finish()
    (d,) = eng.rates.district_months(H8.replace(hour=0), H8.replace(hour=0) + timedelta(days=1))
    assert d.supervised and len(d.reasons) == 2
    for reason in d.reasons:
        assert "DOMAIN" not in reason and "依据：" + basis in reason
        text = reason.replace("HJ", "").replace("：E。", "：。")  # but the standards' and the enterprise's ids
        assert not any("a" <= ch.lower() <= "z" for ch in text), reason  # Chinese only
    assert "HJ 75-2017" in d.reasons[0] and "HJ 76-2017" in d.reasons[1]
