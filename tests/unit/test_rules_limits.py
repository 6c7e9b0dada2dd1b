"""Applied limits (DOMAIN.md §4): stricter wins (从严), date-dependent limits, reference O2."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cems.model import BEIJING, NOX, PM, SO2
from cems.registry import Outlet
from cems.rules.limits import LimitSchedule, active_profile, limit_at, ref_o2_at


def outlet(**kw: Any) -> Outlet:
    base: dict[str, Any] = {"mn": "M1", "name": "unit 1", "profile": "coal_power_ultra_low"}
    base.update(kw)
    return Outlet.model_validate(base)


T = datetime(2026, 1, 1, 8, 0, tzinfo=BEIJING)


def test_profile_values_and_citation() -> None:
    o = outlet()
    al = limit_at(o, SO2, T)
    assert al is not None
    # 燃煤电厂超低排放: SO2 35, NOx 50, PM 10 at 6 % O2 (发改能源〔2014〕2093号).
    assert (al.limit, al.ref_o2, al.profile, al.source) == (35.0, 6.0, "coal_power_ultra_low", "profile")
    assert "2093" in al.citation
    assert limit_at(o, NOX, T).limit == 50.0  # type: ignore[union-attr]
    assert limit_at(o, PM, T).limit == 10.0  # type: ignore[union-attr]
    assert limit_at(o, "a21005", T) is None  # CO: no limit in this profile


def test_gas_turbine_reference_o2() -> None:
    al = limit_at(outlet(profile="gas_turbine_ultra_low"), PM, T)
    assert al is not None and (al.limit, al.ref_o2) == (5.0, 15.0)


def test_stricter_permit_wins_laxer_permit_does_not() -> None:
    al = limit_at(outlet(limits={SO2: 30.0, NOX: 80.0}), SO2, T)
    assert al is not None and (al.limit, al.source) == (30.0, "permit")
    al = limit_at(outlet(limits={SO2: 30.0, NOX: 80.0}), NOX, T)
    assert al is not None and (al.limit, al.source) == (50.0, "profile")
    # A permit value for a code the profile has no limit for applies alone.
    al = limit_at(outlet(limits={"a21005": 100.0}), "a21005", T)
    assert al is not None and al.limit == 100.0


def test_limit_change_at_beijing_midnight() -> None:
    # Retrofitted to ultra-low on 2024-07-01 (a registry date = Beijing midnight).
    o = outlet(
        profile="thermal_power_special", limit_change=[{"from": date(2024, 7, 1), "profile": "coal_power_ultra_low"}]
    )
    before = datetime(2024, 6, 30, 23, 59, 59, tzinfo=BEIJING)
    at = datetime(2024, 7, 1, 0, 0, tzinfo=BEIJING)
    assert limit_at(o, SO2, before).limit == 50.0  # type: ignore[union-attr]  # GB 13223-2011 表2
    assert limit_at(o, SO2, at).limit == 35.0  # type: ignore[union-attr]
    # The same instants given in UTC: 2024-06-30T16:00Z is Beijing midnight.
    assert limit_at(o, SO2, datetime(2024, 6, 30, 15, 59, 59, tzinfo=UTC)).limit == 50.0  # type: ignore[union-attr]
    assert limit_at(o, SO2, datetime(2024, 6, 30, 16, 0, tzinfo=UTC)).limit == 35.0  # type: ignore[union-attr]
    assert active_profile(o, before).name == "thermal_power_special"
    sched = LimitSchedule(o)  # the cache must not leak a value across the change date
    assert [sched.at(SO2, t).limit for t in (before, at, before)] == [50.0, 35.0, 50.0]  # type: ignore[union-attr]
    assert active_profile(o, at).name == "coal_power_ultra_low"


def test_dated_permit_values_newer_replaces_older_and_stricter_still_wins() -> None:
    o = outlet(
        limits={NOX: 45.0},
        limit_change=[
            {"from": date(2024, 6, 1), "limits": {SO2: 30.0}},
            {"from": date(2024, 1, 1), "limits": {SO2: 20.0}},  # registry order is not trusted
        ],
    )
    assert limit_at(o, SO2, datetime(2023, 12, 31, tzinfo=BEIJING)).limit == 35.0  # type: ignore[union-attr]
    al = limit_at(o, SO2, datetime(2024, 3, 1, tzinfo=BEIJING))
    assert al is not None and (al.limit, al.source) == (20.0, "limit_change")
    # The June permit (30) replaces the January one (20); 30 < 35 still wins over the profile.
    assert limit_at(o, SO2, datetime(2024, 7, 1, tzinfo=BEIJING)).limit == 30.0  # type: ignore[union-attr]
    # The permit NOx (45) is stricter than the profile's 50 throughout.
    assert limit_at(o, NOX, datetime(2024, 7, 1, tzinfo=BEIJING)).limit == 45.0  # type: ignore[union-attr]


def test_reference_o2_precedence() -> None:
    assert ref_o2_at(outlet(), T) == 6.0  # profile
    o = outlet(ref_o2=8.0, limit_change=[{"from": date(2026, 2, 1), "ref_o2": 9.0}])
    assert ref_o2_at(o, T) == 8.0  # outlet
    assert ref_o2_at(o, datetime(2026, 2, 1, tzinfo=BEIJING)) == 9.0  # latest change
    assert limit_at(o, SO2, datetime(2026, 2, 1, tzinfo=BEIJING)).ref_o2 == 9.0  # type: ignore[union-attr]
    # A change to a profile with another reference O2 takes that profile's value (no explicit ref_o2).
    o2 = outlet(limit_change=[{"from": date(2026, 2, 1), "profile": "gas_turbine_ultra_low"}])
    assert ref_o2_at(o2, datetime(2026, 2, 1, tzinfo=BEIJING)) == 15.0


def test_an_explicit_reference_o2_belongs_to_its_profile_period() -> None:
    """Issue 12 item 10, 煤改气: a coal boiler read at an explicit 9 % switches to the gas profile (3.5 %) on a
    date; from then on NOx 160 at 3.5 % is judged at 3.5 % (today the old 9 % stays: ≈ 114 → no exceedance)."""
    switch = datetime(2026, 6, 1, tzinfo=BEIJING)
    o = outlet(
        profile="boiler_coal_special",
        ref_o2=9.0,
        limit_change=[{"from": date(2026, 6, 1), "profile": "boiler_gas_special", "reason": "煤改气"}],
    )
    assert ref_o2_at(o, switch - timedelta(hours=1)) == 9.0
    assert ref_o2_at(o, switch) == 3.5
    al = limit_at(o, NOX, switch)
    assert al is not None and (al.limit, al.ref_o2, al.profile) == (150.0, 3.5, "boiler_gas_special")
    assert LimitSchedule(o).ref_o2(switch) == 3.5
    # an explicit ref_o2 on the change itself is kept, and a later change giving only ref_o2 sets it
    o = outlet(
        ref_o2=7.0,
        limit_change=[
            {"from": date(2026, 6, 1), "profile": "boiler_gas_special", "ref_o2": 3.0},
            {"from": date(2026, 8, 1), "ref_o2": 4.0},
            {"from": date(2026, 9, 1), "profile": "boiler_coal_special"},
        ],
    )
    assert [ref_o2_at(o, datetime(2026, m, 2, tzinfo=BEIJING)) for m in (5, 6, 8, 9)] == [7.0, 3.0, 4.0, 9.0]


@given(
    permit=st.none() | st.floats(1, 100),
    change=st.none() | st.floats(1, 100),
    offset_h=st.integers(-48, 48),
)
def test_strictest_of_all_candidates(permit: float | None, change: float | None, offset_h: int) -> None:
    cut = datetime(2025, 5, 1, tzinfo=BEIJING)
    o = outlet(
        limits={} if permit is None else {SO2: permit},
        limit_change=[] if change is None else [{"from": cut, "limits": {SO2: change}}],
    )
    t = cut + timedelta(hours=offset_h)
    candidates = (
        [35.0] + ([permit] if permit is not None else []) + ([change] if change is not None and t >= cut else [])
    )
    al = limit_at(o, SO2, t)
    assert al is not None and al.limit == min(candidates)
    assert LimitSchedule(o).at(SO2, t) == al


@given(st.lists(st.integers(-3 * 24, 3 * 24), min_size=1, max_size=12), st.sampled_from([SO2, NOX, PM, "a99999"]))
def test_ref_and_limit_is_the_limit_and_reference_o2_at_any_time(offsets_h: list[int], code: str) -> None:
    """The quality rules' cached (reference O2, limit) equals the limit's (else the outlet's reference O2 and
    no limit), on both sides of a change of profile and reference O2, in any order of look-ups."""
    cut = date(2026, 3, 1)
    o = outlet(
        profile="thermal_power_special",
        limit_change=[{"from": cut, "profile": "gas_turbine_ultra_low"}, {"from": date(2026, 3, 2), "ref_o2": 9.0}],
    )
    sched = LimitSchedule(o)
    base = datetime(2026, 3, 1, 0, 0, tzinfo=BEIJING)
    seen = set()
    for h in offsets_h:
        t = base + timedelta(hours=h)
        al = limit_at(o, code, t)
        want = (ref_o2_at(o, t), None) if al is None else (al.ref_o2, al.limit)
        assert sched.ref_and_limit(code, t) == want
        seen.add(want)
    if code == "a99999":
        assert all(limit is None for _, limit in seen)
