"""The pure core of the heavy-pollution response (cems.rules.emergency, issue 16)."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.limits.emergency import builtin_emergency_profiles
from cems.model import BEIJING
from cems.rules.emergency import (
    CUT,
    STOP,
    HourEvidence,
    LinePlan,
    Measure,
    StaggeredWindow,
    WarningHistory,
    WarningLevel,
    WarningPeriod,
    allowed_rate,
    cut_exceeded,
    cut_results,
    emission_rate_kg_h,
    mandated_stops,
    operation_evidence,
    suggest_level,
    sum_rates,
    treatment_off,
)


def bj(y: int, mo: int, d: int, h: int = 0) -> datetime:
    return datetime(y, mo, d, h, tzinfo=BEIJING)


def test_emission_rate_worked_example() -> None:
    # 35 mg/m³ × 100 m³/s × 3600 s/h × 1e-6 kg/mg = 12.6 kg/h (HJ 75-2017: measured C × dry standard flow)
    assert emission_rate_kg_h(35.0, 100.0) == pytest.approx(12.6)
    # the same flow sent in m³/h (360 000 m³/h = 100 m³/s): C × Q[m³/h] × 1e-6
    assert emission_rate_kg_h(35.0, 360_000 / 3600) == pytest.approx(35.0 * 360_000 * 1e-6)


@pytest.mark.parametrize(
    ("rate", "exceeded"),
    [(8.0, False), (7.99, False), (8.01, True), (8.0 + 1e-6, True)],
)
def test_cut_threshold(rate: float, exceeded: bool) -> None:
    # baseline 10 kg/h, cut 20 %: allowed 8 kg/h; at the threshold is compliant
    assert allowed_rate(10.0, 0.2) == pytest.approx(8.0)
    assert cut_exceeded(rate, 10.0, 0.2) is exceeded


@given(
    base=st.floats(0.01, 1e4),
    cut=st.sampled_from([0.05, 0.1, 0.15, 0.2, 0.3, 0.5]),
)
def test_cut_at_threshold_is_compliant(base: float, cut: float) -> None:
    a = allowed_rate(base, cut)
    assert not cut_exceeded(a, base, cut)
    assert cut_exceeded(a * 1.001 + 1e-6, base, cut)


def test_profiles_from_seeds() -> None:
    prof = builtin_emergency_profiles()
    xl = prof["xinmi_langfang"]
    assert dict(xl.cuts["blue"]) == {"a34013": 0.05, "a24088": 0.05}
    assert xl.cuts["orange"]["a21026"] == 0.20 and xl.cuts["orange"]["a24088"] == 0.15
    assert xl.cuts["red"]["a21002"] == 0.30
    assert "001" in xl.source and "004" in xl.source
    zj = prof["zhangjiakou"]
    assert "blue" not in zj.cuts and zj.cuts["red"]["a34013"] == 0.50 and "003" in zj.source


def _plan(**kw: object) -> LinePlan:
    base: dict[str, object] = {
        "enterprise": "E001",
        "id": "kiln1",
        "outlets": ("MN0001",),
        "baseline": MappingProxyType({"a21026": 10.0, "a21002": 40.0}),
        "measures": MappingProxyType(
            {
                WarningLevel.YELLOW: Measure(CUT, MappingProxyType({"a21026": 0.1, "a21002": 0.1})),
                WarningLevel.ORANGE: Measure(CUT, MappingProxyType({"a21026": 0.2, "a21002": 0.2})),
            }
        ),
        "running_codes": ("SB1",),
        "production_power": ("MN0001", "ep01"),
        "treatment_power": ("MN0001", "et01"),
        "idle_flow_m3_s": 1.0,
        "idle_power_kw": 5.0,
        "treatment_idle_power_kw": 2.0,
    }
    base.update(kw)
    return LinePlan(**base)  # type: ignore[arg-type]


def test_measure_never_relaxes() -> None:
    p = _plan()
    assert p.measure_at(WarningLevel.NONE) is None
    assert p.measure_at(WarningLevel.BLUE) is None
    assert p.measure_at(WarningLevel.YELLOW) is p.measures[WarningLevel.YELLOW]
    assert p.measure_at(WarningLevel.RED) is p.measures[WarningLevel.ORANGE]  # red without its own: orange's


def test_cut_results() -> None:
    p = _plan()
    m = p.measures[WarningLevel.ORANGE]
    res = {r.pollutant: r for r in cut_results(p, m, {"a21026": 8.0, "a21002": 32.5})}
    assert not res["a21026"].exceeded and res["a21026"].allowed_kg_h == pytest.approx(8.0)
    assert res["a21002"].exceeded and res["a21002"].baseline_kg_h == 40.0 and res["a21002"].cut == 0.2
    assert sum_rates([{"a21026": 1.0, "a21002": 2.0}, {"a21026": 3.0}]) == {"a21026": 4.0}


def test_operation_via_flow_rs_power() -> None:
    p = _plan()
    assert operation_evidence(p, HourEvidence(flow_m3_s=0.5)) == []
    assert operation_evidence(p, HourEvidence(flow_m3_s=12.0)) == [("a00000", 12.0, 1.0)]
    assert operation_evidence(p, HourEvidence(running=("SB1",))) == [("SB1-RS", 1.0, 0.0)]
    assert operation_evidence(p, HourEvidence(production_kw=350.0)) == [("ep01", 350.0, 5.0)]
    assert operation_evidence(p, HourEvidence(production_kw=5.0)) == []  # at idle: not operating


def test_treatment_off() -> None:
    p = _plan()
    assert treatment_off(p, HourEvidence(production_kw=300.0, treatment_kw=0.5))
    assert not treatment_off(p, HourEvidence(production_kw=300.0, treatment_kw=80.0))
    assert not treatment_off(p, HourEvidence(production_kw=3.0, treatment_kw=0.0))  # production idle
    assert not treatment_off(p, HourEvidence(production_kw=300.0))  # no treatment data: nothing shown
    assert not treatment_off(_plan(treatment_power=None), HourEvidence(production_kw=300.0, treatment_kw=0.0))


def test_warning_history_last_setting_wins() -> None:
    h = WarningHistory()
    h = h.with_period(WarningPeriod(WarningLevel.YELLOW, bj(2026, 12, 1, 0), bj(2026, 12, 4, 0), "op1"))
    h = h.with_period(WarningPeriod(WarningLevel.ORANGE, bj(2026, 12, 2, 0), None, "op2"))
    h = h.with_period(WarningPeriod(WarningLevel.NONE, bj(2026, 12, 3, 12), None, "op1"))
    assert h.level_at(bj(2026, 11, 30, 23)) is WarningLevel.NONE
    assert h.level_at(bj(2026, 12, 1, 5)) is WarningLevel.YELLOW
    assert h.level_at(bj(2026, 12, 2, 5)) is WarningLevel.ORANGE
    assert h.level_at(bj(2026, 12, 3, 12)) is WarningLevel.NONE  # lifted early
    assert h.setting_at(bj(2026, 12, 2, 5)).set_by == "op2"  # type: ignore[union-attr]
    w = h.warnings()
    assert [(a, b, lv) for a, b, lv, _ in w] == [
        (bj(2026, 12, 1), bj(2026, 12, 2), WarningLevel.YELLOW),
        (bj(2026, 12, 2), bj(2026, 12, 3, 12), WarningLevel.ORANGE),
    ]
    assert h.at_least(WarningLevel.YELLOW) == [(bj(2026, 12, 1), bj(2026, 12, 3, 12))]
    assert WarningHistory.from_json(h.to_json()) == h
    assert WarningLevel.parse("橙色") is WarningLevel.ORANGE
    with pytest.raises(ValueError, match="unknown warning level"):
        WarningLevel.parse("purple")
    with pytest.raises(ValueError, match="before it starts"):
        WarningPeriod(WarningLevel.RED, bj(2026, 12, 2), bj(2026, 12, 1), "op")


def test_staggered_window_across_month_boundary() -> None:
    # seed 002: Tai'erzhuang brick kilns 2021-12-22..2022-02-09
    w = StaggeredWindow(start=bj(2021, 12, 22), end=bj(2022, 2, 9), reason="砖瓦窑 错峰生产")
    p = _plan(staggered=(w,))
    assert p.staggered_at(bj(2021, 12, 21, 23), WarningLevel.NONE) is None
    assert p.staggered_at(bj(2021, 12, 31, 23), WarningLevel.NONE) is w
    assert p.staggered_at(bj(2022, 1, 1, 0), WarningLevel.NONE) is w
    assert p.staggered_at(bj(2022, 2, 9, 0), WarningLevel.NONE) is None
    stops = mandated_stops(p, WarningHistory(), bj(2021, 12, 1), bj(2022, 3, 1))
    assert [(a, b) for a, b, _ in stops] == [(bj(2021, 12, 22), bj(2022, 2, 9))]
    # December's stopped hours: 10 days (22nd..31st)
    dec = [(a, min(b, bj(2022, 1, 1))) for a, b, _ in stops if a < bj(2022, 1, 1)]
    assert sum((b - a for a, b in dec), timedelta()) == timedelta(days=10)


def test_staggered_during_warning_and_stop_measure() -> None:
    grinding = StaggeredWindow(min_level=WarningLevel.BLUE, reason="水泥粉磨 预警期间停产")
    h = WarningHistory((WarningPeriod(WarningLevel.YELLOW, bj(2026, 12, 1, 8), bj(2026, 12, 2, 8), "op"),))
    p = _plan(staggered=(grinding,))
    assert p.staggered_at(bj(2026, 12, 1, 9), h.level_at(bj(2026, 12, 1, 9))) is grinding
    assert p.staggered_at(bj(2026, 12, 2, 9), h.level_at(bj(2026, 12, 2, 9))) is None
    stops = mandated_stops(p, h, bj(2026, 12, 1), bj(2026, 12, 3))
    assert [(a, b) for a, b, _ in stops] == [(bj(2026, 12, 1, 8), bj(2026, 12, 2, 8))]
    q = _plan(measures=MappingProxyType({WarningLevel.ORANGE: Measure(STOP)}))
    assert mandated_stops(q, h, bj(2026, 12, 1), bj(2026, 12, 3)) == []  # yellow: no stop for q
    h2 = h.with_period(WarningPeriod(WarningLevel.RED, bj(2026, 12, 1, 20), bj(2026, 12, 2, 0), "op"))
    assert [(a, b) for a, b, _ in mandated_stops(q, h2, bj(2026, 12, 1), bj(2026, 12, 3))] == [
        (bj(2026, 12, 1, 20), bj(2026, 12, 2, 0))
    ]


@pytest.mark.parametrize(
    ("series", "level"),
    [
        ([150] * 100, WarningLevel.NONE),
        ([250] * 47, WarningLevel.NONE),
        ([250] * 48, WarningLevel.YELLOW),
        ([None, *[250] * 72], WarningLevel.ORANGE),
        ([250] * 96, WarningLevel.ORANGE),  # red needs ≥ 48 h above 300 too
        ([250] * 48 + [320] * 48, WarningLevel.RED),
        ([250] * 80 + [150], WarningLevel.NONE),  # the run must be the trailing one
        ([120, 500], WarningLevel.RED),
    ],
)
def test_suggest_level(series: list[int | None], level: WarningLevel) -> None:
    assert suggest_level(series)[0] is level
