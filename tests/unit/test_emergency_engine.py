"""The emergency checks inside the engine (issue 16): cuts, stops, treatment off, 错峰 windows and the 90 % rule,
the same whatever the arrival order, and kept across a restart."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta

import pytest
from registries import emergency_line, one_outlet  # tests/registries.py

from cems.engine import ComplianceEngine
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import Registry, parse_registry
from cems.rules import Event
from cems.rules.emergency import WarningHistory, WarningLevel, WarningPeriod
from cems.rules.transmission import month_bounds
from cems.service.compliance._state import encode_state

T0 = datetime(2026, 12, 1, 0, tzinfo=BEIJING)


def reg(line: str = "", staggered: str = "") -> Registry:
    return parse_registry(one_outlet(enterprise=emergency_line(line=line, staggered=staggered)))


def hour(
    h: datetime,
    so2: float = 20.0,
    flow: float = 100.0,
    *,
    rs: float | None = None,
    prod: float | None = None,
    treat: float | None = None,
) -> Reading:
    """A DAS hourly record (CN=2061): SO2 (mg/m³), O2 6 %, flow (m³/s), optionally SB1-RS and line power (kW)."""
    ms = {
        "a21026": Measurement("a21026", {"Avg": so2}, "N"),
        "a19001": Measurement("a19001", {"Avg": 6.0}, "N"),
        "a00000": Measurement("a00000", {"Avg": flow}, "N"),
    }
    if rs is not None:
        ms["SB1"] = Measurement("SB1", {"RS": rs})
    if prod is not None:
        ms["ep01"] = Measurement("ep01", {"Avg": prod}, "N")
    if treat is not None:
        ms["et01"] = Measurement("et01", {"Avg": treat}, "N")
    return Reading("MN0001", Stream.HOUR, h, ms)


def run(
    r: Registry, readings: list[Reading], history: WarningHistory | None = None
) -> tuple[list[Event], ComplianceEngine]:
    eng = ComplianceEngine(r, warnings=history)
    final: dict[str, Event] = {}
    for rd in readings:
        for u in eng.on_reading(rd).events:
            final[u.event.event_id] = u.event
    for u in eng.finish().events:
        final[u.event.event_id] = u.event
    evs = sorted((e for e in final.values() if e.status != "retracted"), key=lambda e: (e.type, e.start))
    return evs, eng


def orange(start: datetime = T0 + timedelta(hours=8), hours: int = 4) -> WarningHistory:
    return WarningHistory((WarningPeriod(WarningLevel.ORANGE, start, start + timedelta(hours=hours), "duty-officer"),))


EMERGENCY_TYPES = {
    "emergency_noncompliance",
    "emergency_stop_violation",
    "treatment_off",
    "staggered_production_violation",
}


def of(evs: list[Event], type_: str) -> list[Event]:
    return [e for e in evs if e.type == type_]


def test_cut_noncompliance_run_with_evidence() -> None:
    # baseline SO2 10 kg/h, orange cut 20 % → allowed 8 kg/h; 25 mg/m³ × 100 m³/s = 9 kg/h, 20 → 7.2 kg/h
    r = reg(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n")
    so2 = {7: 25.0, 8: 25.0, 9: 25.0, 10: 20.0, 11: 25.0, 12: 25.0}
    data = [hour(T0 + timedelta(hours=h), so2.get(h, 25.0)) for h in range(6, 14)]
    evs, _ = run(r, data, orange())
    nc = of(evs, "emergency_noncompliance")
    assert [(e.start.hour, e.hours, e.pollutant) for e in nc] == [(8, 2, "a21026"), (11, 1, "a21026")]
    e = nc[0]
    assert e.peak == pytest.approx(9.0) and e.limit == pytest.approx(8.0)
    assert e.enterprise == "E001" and e.mn == "MN0001" and e.status == "closed"
    assert e.profile is not None and "orange" in e.profile and "20%" in e.profile and "baseline 10" in e.profile


@pytest.mark.parametrize(("so2", "violates"), [(22.222222222222, False), (22.0, False), (22.3, True)])
def test_cut_at_just_below_and_above(so2: float, violates: bool) -> None:
    # allowed 8 kg/h = 22.2222… mg/m³ × 100 m³/s × 3600 × 1e-6
    r = reg(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n")
    t = T0 + timedelta(hours=9)
    evs, _ = run(r, [hour(t, so2), hour(t + timedelta(hours=1), 1.0)], orange())
    assert bool(of(evs, "emergency_noncompliance")) is violates


def test_profile_cuts_and_flow_in_m3_per_h() -> None:
    # xinmi_langfang orange: SO2 ≥ 20 %; the outlet sends flow in m³/h (360 000 m³/h = 100 m³/s)
    r = parse_registry(
        one_outlet(
            enterprise=emergency_line(),
            outlet='units = { a00000 = "m3/h" }\n',
            tail='[emergency]\nprofile = "xinmi_langfang"\n',
        )
    )
    t = T0 + timedelta(hours=9)
    evs, _ = run(r, [hour(t, 25.0, 360_000.0), hour(t + timedelta(hours=1), 1.0, 360_000.0)], orange())
    nc = of(evs, "emergency_noncompliance")
    assert len(nc) == 1 and nc[0].peak == pytest.approx(9.0) and "xinmi_langfang" in (nc[0].profile or "")


@pytest.mark.parametrize(
    ("kw", "sign"),
    [({"flow": 12.0}, "a00000"), ({"flow": 0.5, "rs": 1.0}, "SB1-RS"), ({"flow": 0.5, "prod": 350.0}, "ep01")],
)
def test_stop_violation_via_flow_rs_power(kw: dict[str, float], sign: str) -> None:
    r = reg(line='measure = { orange = "stop" }\n')
    t = T0 + timedelta(hours=9)
    idle = hour(t + timedelta(hours=1), 0.0, 0.5, rs=0.0, prod=1.0)
    evs, _ = run(r, [hour(t, 20.0, **kw), idle], orange())
    sv = of(evs, "emergency_stop_violation")
    assert len(sv) == 1 and sv[0].pollutant == "kiln1" and sv[0].hours == 1
    assert sign in (sv[0].profile or "")
    assert not of(evs, "emergency_noncompliance")


def test_stopped_line_is_compliant() -> None:
    r = reg(line='measure = { orange = "stop" }\n')
    t = T0 + timedelta(hours=9)
    evs, _ = run(r, [hour(t, 0.0, 0.2, rs=0.0, prod=2.0), hour(t + timedelta(hours=1), 0.0, 0.2)], orange())
    assert not of(evs, "emergency_stop_violation")


def test_treatment_off_at_any_time() -> None:
    r = reg()
    t = T0 + timedelta(hours=2)  # no warning
    data = [hour(t, prod=300.0, treat=0.5), hour(t + timedelta(hours=1), prod=300.0, treat=80.0)]
    evs, _ = run(r, data)
    off = of(evs, "treatment_off")
    assert len(off) == 1 and off[0].start == t and off[0].hours == 1 and off[0].peak == 300.0
    assert "et01 0.5 kW" in (off[0].profile or "")
    assert not of(evs, "o2_invalid")  # power meters are not concentrations


def test_staggered_window_across_month_boundary_and_90_percent_rule() -> None:
    # window 2026-11-25 .. 2026-12-05: the outlet is silent in it except one operating hour on 2026-12-02
    r = reg(staggered='[[enterprise.line.staggered]]\nfrom = 2026-11-25\nto = 2026-12-05\nreason = "熟料 错峰"\n')
    before = [hour(datetime(2026, 11, 1, tzinfo=BEIJING) + timedelta(hours=h), 5.0, 0.2) for h in range(24 * 24)]
    op = datetime(2026, 12, 2, 10, tzinfo=BEIJING)
    after = [hour(datetime(2026, 12, 5, tzinfo=BEIJING) + timedelta(hours=h), 5.0, 50.0) for h in range(24 * 26)]
    evs, eng = run(r, [*before, hour(op, 5.0, 50.0), *after])
    sp = of(evs, "staggered_production_violation")
    assert [(e.start, e.hours) for e in sp] == [(op, 1)]
    assert "熟料 错峰" in (sp[0].profile or "")
    assert not of(evs, "data_interruption")  # silence in a mandated stop is not an interruption
    nov = {m.mn: m for m in eng.rates.outlet_months(*month_bounds(2026, 11))}["MN0001"]
    dec = {m.mn: m for m in eng.rates.outlet_months(*month_bounds(2026, 12))}["MN0001"]
    # 3 assessed factors (PM, SO2, NOx; only SO2 sent).  November: 30 days, 6 stopped (25th..30th) → 24 days
    # expected; December: 1st..4th stopped (the operating hour inside the stop is not counted either)
    assert nov.expected == 3 * 24 * 24 and nov.received == 24 * 24
    assert dec.expected == 3 * 27 * 24 and dec.received == 26 * 24


def test_warning_stop_removes_expected_hours() -> None:
    r = reg(staggered='[[enterprise.line.staggered]]\nwarning_at_least = "yellow"\n')
    data = [hour(T0 + timedelta(hours=h), 5.0, 50.0) for h in range(24) if not 8 <= h < 12]
    _, eng = run(r, data, orange())
    day = {d.mn: d for d in eng.rates.outlet_days(T0, T0 + timedelta(days=1))}["MN0001"]
    so2 = day.by_factor["a21026"]  # the 4 hours of the orange warning are not expected
    assert (so2.expected, so2.received) == (20, 20) and day.expected == 3 * 20


def test_order_independent_and_warning_set_late() -> None:
    r = reg(line='measure = { orange = { cut = { a21026 = 0.2 } }, red = "stop" }\n')
    data = [
        hour(T0 + timedelta(hours=h), 25.0 if h % 3 else 10.0, 100.0, rs=1.0, prod=200.0, treat=0.0) for h in range(24)
    ]
    ref, _ = run(r, data, orange(hours=10))
    shuffled = data[:]
    random.Random(7).shuffle(shuffled)
    got, _ = run(r, shuffled, orange(hours=10))

    def key(evs: list[Event]) -> list[tuple[str, datetime, float, str | None]]:
        return [(e.type, e.start, e.hours, e.pollutant) for e in evs if e.type in EMERGENCY_TYPES]

    assert key(got) == key(ref) and of(ref, "emergency_noncompliance") and of(ref, "treatment_off")
    # live: the warning set by the operator after the data arrived judges the kept hours again (late)
    eng = ComplianceEngine(r)
    for rd in data:
        eng.on_reading(rd)
    ups = eng.set_warnings(orange(hours=10), list(orange(hours=10).periods)).events
    assert ups[0].event.type == "warning_level" and ups[0].event.pollutant == "orange"
    nc = {u.event.start for u in ups if u.event.type == "emergency_noncompliance"}
    assert nc and all(u.event.late for u in ups if u.event.type == "emergency_noncompliance")
    assert nc == {e.start for e in of(ref, "emergency_noncompliance")}


def test_state_survives_restart() -> None:
    r = reg(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n")
    h = orange()
    a = ComplianceEngine(r, warnings=h)
    for i in range(6, 11):
        a.on_reading(hour(T0 + timedelta(hours=i), 25.0))
    # through the JSON the service stores (cems.service.compliance._state.encode_state) and reads back
    states = {mn: json.loads(encode_state(fn())) for mn, (fn, _, _) in a.take_changes().items()}
    assert "emergency" in states["MN0001"]
    b = ComplianceEngine(r, warnings=h)
    for mn, s in states.items():
        b.restore_outlet(mn, s)
    assert [e.start for e in b.emergency.open_events] == [e.start for e in a.emergency.open_events]
    assert b.emergency.open_events and b.emergency.open_events[0].type == "emergency_noncompliance"


def test_prune_keeps_the_hours_of_a_run_merged_into_another() -> None:
    """A run retracted because late data merged it into an earlier one (its event still open: no end) used to
    be forgotten by ``prune`` together with its hours, which belonged to the merged run (found with issue 16's
    out-of-order test; the same tracker serves hourly_exceedance)."""
    from cems.rules import ExceedanceTracker, HourlyRecord

    def rec(h: int, zs: float = 80.0) -> HourlyRecord:
        t = T0 + timedelta(hours=h)
        return HourlyRecord("MN0001", "a21026", t, zs, 6.0, zs, None, "computed", True, "N",
                            "das_2061", None, 35.0, 6.0, "coal_power_ultra_low", zs > 35.0)  # fmt: skip

    tr = ExceedanceTracker("MN0001", "E001", "130602")
    for h in (5, 3, 4):  # 5 opens a run, 3 another; 4 merges them: the run from 5 is retracted
        tr.on_hour(rec(h))
    tr.prune(T0)  # nothing ended before T0 (the repair window): nothing to forget
    assert [(e.start.hour, e.hours) for e in tr.open_events] == [(3, 3)]
    ups = tr.on_hour(rec(6, 10.0))  # a compliant hour closes the run: 3 hours (03:00-06:00), not 2
    assert [(u.kind, u.event.start.hour, u.event.hours) for u in ups] == [("closed", 3, 3)]


def test_on_time_hours_are_not_late_with_several_pollutants() -> None:
    # baseline SO2 and NOx: both judged per hour; the second must not be taken for late data
    r = reg(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n")
    evs, _ = run(r, [hour(T0 + timedelta(hours=h), 25.0 if h in (8, 9) else 5.0) for h in range(6, 13)], orange())
    nc = of(evs, "emergency_noncompliance")
    assert [(e.start.hour, e.hours, e.late) for e in nc] == [(8, 2, False)]
