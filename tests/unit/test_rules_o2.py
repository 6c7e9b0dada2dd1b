"""Reference-O2 correction (DOMAIN.md §3): C_ref = C × (21 − O2ref) / (21 − O2meas), with guards."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.rules.o2 import DEFAULT_MAX_O2, correct, zs_agrees


def test_formula_by_hand() -> None:
    # 100 mg/m³ at 11 % O2 to 6 %: 100 × 15 / 10 = 150.
    assert correct(100.0, 11.0, 6.0) == pytest.approx(150.0)
    # Gas turbine, 15 % reference: 20 at 16 % O2 → 20 × 6 / 5 = 24.
    assert correct(20.0, 16.0, 15.0) == pytest.approx(24.0)
    # O2 below the reference lowers the value: 100 × 15 / 18.
    assert correct(100.0, 3.0, 6.0) == pytest.approx(83.3333333)
    # At the reference O2 nothing changes.
    assert correct(42.0, 6.0, 6.0) == pytest.approx(42.0)


@pytest.mark.parametrize("o2", [21.0, 21.5, 25.0, -0.1, -5.0])
def test_no_combustion_or_impossible_o2_is_not_correctable(o2: float) -> None:
    assert correct(50.0, o2, 6.0) is None


def test_dilution_cutoff_is_inclusive_and_a_parameter() -> None:
    assert DEFAULT_MAX_O2 == 19.5
    # 19.5 % is still corrected: 10 × 15 / 1.5 = 100.
    assert correct(10.0, 19.5, 6.0) == pytest.approx(100.0)
    assert correct(10.0, 19.6, 6.0) is None
    assert correct(10.0, 19.6, 6.0, max_o2=20.0) == pytest.approx(10.0 * 15.0 / 1.4)
    assert correct(10.0, 20.5, 6.0, max_o2=21.0) == pytest.approx(10.0 * 15.0 / 0.5)
    assert correct(10.0, 21.0, 6.0, max_o2=30.0) is None  # 21 % is never correctable


@pytest.mark.parametrize("args", [(math.nan, 6.0, 6.0), (1.0, math.nan, 6.0), (1.0, 6.0, math.inf), (1.0, 6.0, 21.0)])
def test_non_finite_or_bad_reference(args: tuple[float, float, float]) -> None:
    assert correct(*args) is None


@given(
    c=st.floats(0, 10_000),
    o2=st.floats(0, 19.5),
    ref=st.floats(0, 20.9),
)
def test_properties(c: float, o2: float, ref: float) -> None:
    v = correct(c, o2, ref)
    assert v is not None
    assert v == pytest.approx(c * (21 - ref) / (21 - o2))
    # Linear in C, and above C exactly when the measured O2 is above the reference.
    assert correct(2 * c, o2, ref) == pytest.approx(2 * v)
    if c > 1e-3 and o2 > ref + 1e-3:
        assert v > c
    if c > 1e-3 and o2 < ref - 1e-3:
        assert v < c


def test_zs_agrees() -> None:
    assert zs_agrees(151.0, 150.0)  # 0.66 %
    assert zs_agrees(153.0, 150.0)  # 1.96 %
    assert not zs_agrees(154.0, 150.0)  # 2.6 %
    assert zs_agrees(0.05, 0.0)  # rounding near zero: absolute tolerance 0.1 mg/m³
    assert not zs_agrees(0.5, 0.0)
    assert zs_agrees(104.0, 100.0, rel_tol=0.05)
    assert not zs_agrees(math.nan, 1.0)
