"""AQI per HJ 633-2026 and HJ 633-2012 (DOMAIN.md §6): breakpoints, ceiling rounding, missing pollutants,
the off-scale rules, levels and primary pollutants."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.rules.aqi import BREAKPOINTS, IAQI_LEVELS, LEVELS, aqi, iaqi, level_of, standard_for

ALL = [(std, key) for std in ("2026", "2012") for key in BREAKPOINTS[std]]
SIX_LOW = {"so2": "5", "no2": "10", "co": "0.3", "o3": "20", "pm10": "20", "pm25": "10"}


@pytest.mark.parametrize(("standard", "key"), ALL)
def test_every_breakpoint_gives_exactly_its_level(standard: str, key: str) -> None:
    for bp, level in zip(BREAKPOINTS[standard][key], IAQI_LEVELS, strict=False):  # type: ignore[index]
        assert iaqi(str(bp), key, standard).iaqi == level, (key, bp)  # type: ignore[arg-type]


@pytest.mark.parametrize(("standard", "key"), ALL)
def test_just_above_a_breakpoint_rounds_up(standard: str, key: str) -> None:
    table = BREAKPOINTS[standard][key]  # type: ignore[index]
    for bp, level in zip(table[:-1], IAQI_LEVELS, strict=False):
        above = Fraction(bp) + Fraction(1, 1000)
        assert iaqi(above, key, standard).iaqi == level + 1, (key, bp)  # type: ignore[arg-type]


def test_worked_examples() -> None:
    # PM2.5 80 µg/m³: 2026 (60..115 → 100..150): 50/55 × 20 + 100 = 118.2 → 119; 2012 (75..115): 106.25 → 107
    assert iaqi("80", "pm25_24h", "2026").iaqi == 119
    assert iaqi("80", "pm25_24h", "2012").iaqi == 107
    # PM10 120: 2026 breakpoint (IAQI 100); 2012 (50..150 → 50..100): 85
    assert iaqi("120", "pm10_24h", "2026").iaqi == 100
    assert iaqi("120", "pm10_24h", "2012").iaqi == 85
    # CO 1-h 0.8 mg/m³: 50/5 × 0.8 = 8
    assert iaqi("0.8", "co_1h").iaqi == 8
    # float input is read as its decimal text: 35.0 is exactly the PM2.5 breakpoint
    assert iaqi(35.0, "pm25_24h").iaqi == 50


def test_off_scale_rules() -> None:
    assert iaqi("801", "so2_1h", "2026").iaqi == 200
    assert iaqi("801", "so2_1h", "2012").iaqi is None  # 2012: the 24-h sub-index is to be used
    assert iaqi("801", "o3_8h", "2026").iaqi == 300
    assert iaqi("801", "o3_8h", "2012").iaqi is None  # 2012: the 1-h sub-index is used
    assert iaqi("700", "pm25_24h").iaqi == 500 and iaqi("700", "pm25_24h").beyond_scale
    with pytest.raises(ValueError, match="negative"):
        iaqi("-1", "pm25_24h")
    with pytest.raises(ValueError, match="not a concentration"):
        iaqi("nan", "pm25_24h")


def test_missing_pollutant_gives_na_unless_already_above_100() -> None:
    partial = {k: v for k, v in SIX_LOW.items() if k != "o3"}
    assert aqi(partial).aqi is None and aqi(partial).missing == ["o3"]
    polluted = {**partial, "pm25": "80"}
    r = aqi(polluted)
    assert (r.aqi, r.level, r.category, r.primary) == (119, 3, "轻度污染", ["pm25"])
    # exactly 100 without O3: not known to be polluted
    assert aqi({**partial, "pm10": "120"}).aqi is None
    # 2012: SO2 1-h above 800 has no sub-index, so SO2 is missing; the others decide only above 100
    r12 = aqi({**SIX_LOW, "so2": "900"}, standard="2012")
    assert r12.aqi is None and r12.iaqi["so2"] is None and r12.missing == ["so2"]
    assert aqi({**SIX_LOW, "so2": "900"}, standard="2026").aqi == 200


def test_daily_o3_uses_the_8h_mean_and_2012_falls_back_to_the_1h_value() -> None:
    day = {**SIX_LOW, "o3": "850", "o3_1h": "900"}
    assert aqi(day, period="24h", standard="2026").iaqi["o3"] == 300
    r = aqi(day, period="24h", standard="2012")
    assert r.iaqi["o3"] is None and r.iaqi["o3_1h"] is not None and r.aqi == r.iaqi["o3_1h"]
    assert r.primary == ["o3_1h"]


def test_levels_primary_and_colours() -> None:
    assert [level_of(v) for v in (0, 50, 51, 100, 101, 150, 151, 200, 201, 300, 301, 500)] == [
        1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
    ]  # fmt: skip
    assert LEVELS[5] == ("重度污染", (153, 0, 76))
    good = aqi(SIX_LOW)
    assert good.level == 1 and good.primary == []  # no primary pollutant at AQI <= 50
    tie = aqi({**SIX_LOW, "pm25": "60", "pm10": "120"}, period="24h")  # both IAQI 100
    assert tie.aqi == 100 and tie.primary == ["pm10", "pm25"]
    with pytest.raises(ValueError, match="unknown pollutant"):
        aqi({"pm1": "3"})


def test_standard_by_date() -> None:
    assert standard_for(date(2026, 2, 28)) == "2012" and standard_for(date(2026, 3, 1)) == "2026"


@given(st.sampled_from(ALL), st.fractions(min_value=0, max_value=5000), st.fractions(min_value=0, max_value=5000))
def test_iaqi_is_monotonic_and_bounded(case: tuple[str, str], a: Fraction, b: Fraction) -> None:
    standard, key = case
    lo, hi = sorted((a, b))
    s_lo, s_hi = iaqi(lo, key, standard), iaqi(hi, key, standard)  # type: ignore[arg-type]
    if s_lo.iaqi is not None and s_hi.iaqi is not None:
        assert 0 <= s_lo.iaqi <= s_hi.iaqi <= 500


def test_cems_aqi_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cems", "aqi", "--standard", "2026", "--period", "1h",
         "pm25=80", "pm10=120", "so2=10", "no2=40", "co=0.8", "o3=100"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    assert doc["aqi"] == 119 and doc["level"] == 3 and doc["category"] == "轻度污染"
    assert doc["primary"] == ["pm25"] and doc["iaqi"]["pm10"] == 100
    na = subprocess.run(
        [sys.executable, "-m", "cems", "aqi", "--period", "24h", "--date", "2025-12-01", "pm25=10"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert json.loads(na)["aqi"] is None and json.loads(na)["standard"] == "HJ 633-2012"
