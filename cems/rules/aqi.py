"""Air quality index (AQI) per HJ 633-2026 (in force 2026-03-01) and HJ 633-2012 (DOMAIN.md §6).

Pure: concentrations in, IAQI / AQI / level / primary pollutants out.

* Individual index: IAQI_P = ⌈(IAQI_hi − IAQI_lo) / (BP_hi − BP_lo) × (C_P − BP_lo) + IAQI_lo⌉ between the
  two breakpoints around C_P, **rounded up** to an integer (HJ 633 formula (1)). Computed on exact
  fractions of the given decimal strings, so a value on a breakpoint gives exactly that breakpoint's IAQI
  (floating point would give 50.000000001 → 51).
* AQI = max IAQI over the six pollutants (SO2, NO2, CO, O3, PM10, PM2.5). A missing pollutant makes the AQI
  not computable ("NA", ``None`` here) unless the pollutants present already give more than 100: the level
  is then known to be polluted whatever the missing one would add (DOMAIN.md §6).
* Primary pollutant(s): when AQI > 50, every pollutant whose IAQI equals the AQI.
* Levels: 0–50 优 (1), 51–100 良 (2), 101–150 轻度污染 (3), 151–200 中度污染 (4), 201–300 重度污染 (5),
  > 300 严重污染 (6), with the standard's RGB colours.
* Real-time (1-h) AQI: SO2, NO2, CO, O3 on their 1-h breakpoints; PM10 and PM2.5 (which have none) use their
  1-h values on the 24-h breakpoints. Daily AQI: 24-h means; O3 by its daily maximum 8-h moving mean (and
  its daily maximum 1-h value when given).
* Off the scale: SO2 1-h above 800 µg/m³ — HJ 633-2026: IAQI 200; HJ 633-2012: no 1-h sub-index (the 24-h
  one is to be used, so with only the 1-h value SO2 counts as missing). O3 8-h above 800 µg/m³ — 2026: IAQI
  300; 2012: no 8-h sub-index (the 1-h one is used). Any other value above the last breakpoint: IAQI 500,
  marked ``beyond_scale``.

Breakpoints (µg/m³; CO mg/m³), HJ 633-2026 table 1 as quoted in DOMAIN.md §6; HJ 633-2012 differs only in
PM10 24-h (150 at IAQI 100, not 120) and PM2.5 24-h (75 at IAQI 100, not 60).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from typing import Final, Literal

Standard = Literal["2026", "2012"]
Period = Literal["1h", "24h"]

#: HJ 633-2026 takes effect on this day; data before it are indexed with HJ 633-2012.
HJ633_2026_FROM: Final = date(2026, 3, 1)

IAQI_LEVELS: Final = (0, 50, 100, 150, 200, 300, 400, 500)

#: Pollutant → its breakpoints for each averaging (``so2_1h`` etc.), HJ 633-2026.
_BP_2026: Final[dict[str, tuple[int, ...]]] = {
    "so2_24h": (0, 50, 150, 475, 800, 1600, 2100, 2620),
    "so2_1h": (0, 150, 500, 650, 800),
    "no2_24h": (0, 40, 80, 180, 280, 565, 750, 940),
    "no2_1h": (0, 100, 200, 700, 1200, 2340, 3090, 3840),
    "co_24h": (0, 2, 4, 14, 24, 36, 48, 60),
    "co_1h": (0, 5, 10, 35, 60, 90, 120, 150),
    "o3_1h": (0, 160, 200, 300, 400, 800, 1000, 1200),
    "o3_8h": (0, 100, 160, 215, 265, 800),
    "pm10_24h": (0, 50, 120, 250, 350, 420, 500, 600),
    "pm25_24h": (0, 35, 60, 115, 150, 250, 350, 500),
}
_BP_2012: Final[dict[str, tuple[int, ...]]] = {
    **_BP_2026,
    "pm10_24h": (0, 50, 150, 250, 350, 420, 500, 600),
    "pm25_24h": (0, 35, 75, 115, 150, 250, 350, 500),
}
BREAKPOINTS: Final[dict[Standard, dict[str, tuple[int, ...]]]] = {"2026": _BP_2026, "2012": _BP_2012}

#: The six pollutants of the AQI.
POLLUTANTS: Final = ("so2", "no2", "co", "o3", "pm10", "pm25")

#: Level → (category, RGB colour), HJ 633.
LEVELS: Final[dict[int, tuple[str, tuple[int, int, int]]]] = {
    1: ("优", (0, 228, 0)),
    2: ("良", (255, 255, 0)),
    3: ("轻度污染", (255, 126, 0)),
    4: ("中度污染", (255, 0, 0)),
    5: ("重度污染", (153, 0, 76)),
    6: ("严重污染", (126, 0, 35)),
}


def standard_for(day: date) -> Standard:
    """The standard in force on ``day``: HJ 633-2026 from 2026-03-01, HJ 633-2012 before."""
    return "2026" if day >= HJ633_2026_FROM else "2012"


def level_of(aqi: int) -> int:
    """AQI → level 1–6."""
    for level, upper in ((1, 50), (2, 100), (3, 150), (4, 200), (5, 300)):
        if aqi <= upper:
            return level
    return 6


@dataclass(frozen=True)
class SubIndex:
    """One pollutant's IAQI: ``key`` names the breakpoint table used (``pm25_24h``…), ``None`` when the value
    has no sub-index (e.g. HJ 633-2012 SO2 1-h above 800)."""

    iaqi: int | None
    key: str
    beyond_scale: bool = False


def iaqi(value: float | str | Fraction, key: str, standard: Standard = "2026") -> SubIndex:
    """The individual index of a concentration on the breakpoint table ``key`` (e.g. ``"so2_1h"``).

    ``value`` may be a decimal string (exact) or a number (taken as its shortest decimal repr). Raises
    ValueError for a negative or non-finite value or an unknown key.
    """
    table = BREAKPOINTS[standard].get(key)
    if table is None:
        raise ValueError(f"no breakpoints {key!r}; known: {', '.join(sorted(BREAKPOINTS[standard]))}")
    c = _exact(value)
    if c < 0:
        raise ValueError(f"{key}: a concentration cannot be negative ({value})")
    top = table[-1]
    if c > top:
        if key == "so2_1h":
            return SubIndex(200, key, True) if standard == "2026" else SubIndex(None, key, True)
        if key == "o3_8h":
            return SubIndex(300, key, True) if standard == "2026" else SubIndex(None, key, True)
        return SubIndex(500, key, True)
    for i in range(1, len(table)):
        lo, hi = table[i - 1], table[i]
        if c <= hi:
            i_lo, i_hi = IAQI_LEVELS[i - 1], IAQI_LEVELS[i]
            exact = Fraction(i_hi - i_lo, hi - lo) * (c - lo) + i_lo
            return SubIndex(math.ceil(exact), key)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class AqiResult:
    """An AQI with how it was found: the standard, the period, each pollutant's sub-index."""

    standard: Standard
    period: Period
    aqi: int | None
    level: int | None
    category: str | None
    colour: tuple[int, int, int] | None
    #: Names (as given) of the pollutants whose IAQI equals the AQI, sorted; empty when AQI ≤ 50 or unknown.
    primary: list[str]
    #: Name (as given) → IAQI (``None``: no sub-index for the value).
    iaqi: dict[str, int | None]
    #: Which of the six pollutants were missing.
    missing: list[str] = field(default_factory=list)
    beyond_scale: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "aqi": self.aqi,
            "level": self.level,
            "category": self.category,
            "colour": list(self.colour) if self.colour is not None else None,
            "primary": self.primary,
            "iaqi": self.iaqi,
            "missing": self.missing,
            "beyond_scale": self.beyond_scale,
            "standard": f"HJ 633-{self.standard}",
            "period": self.period,
        }


#: Input names → (pollutant, averaging for 1h, averaging for 24h).
_NAMES: Final[dict[str, tuple[str, str, str]]] = {
    "so2": ("so2", "so2_1h", "so2_24h"),
    "no2": ("no2", "no2_1h", "no2_24h"),
    "co": ("co", "co_1h", "co_24h"),
    "o3": ("o3", "o3_1h", "o3_8h"),  # daily: the maximum 8-h moving mean
    "o3_8h": ("o3", "o3_8h", "o3_8h"),
    "o3_1h": ("o3", "o3_1h", "o3_1h"),
    "pm10": ("pm10", "pm10_24h", "pm10_24h"),
    "pm25": ("pm25", "pm25_24h", "pm25_24h"),
    "pm2.5": ("pm25", "pm25_24h", "pm25_24h"),
}


def aqi(
    values: Mapping[str, float | str | Fraction], *, period: Period = "1h", standard: Standard = "2026"
) -> AqiResult:
    """The AQI of ``values`` (name → concentration; names: so2, no2, co, o3, o3_8h, o3_1h, pm10, pm25).

    ``period`` "1h": real-time AQI; "24h": daily AQI (``o3`` is then the daily maximum 8-h mean; give
    ``o3_1h`` too for the daily maximum 1-h value). Raises ValueError for an unknown name or a bad value.
    """
    subs: dict[str, SubIndex] = {}
    present: set[str] = set()
    for name, value in values.items():
        entry = _NAMES.get(name.lower())
        if entry is None:
            raise ValueError(f"unknown pollutant {name!r}; known: {', '.join(_NAMES)}")
        pollutant, key_1h, key_24h = entry
        sub = iaqi(value, key_1h if period == "1h" else key_24h, standard)
        subs[name] = sub
        if sub.iaqi is not None:
            present.add(pollutant)
    # HJ 633-2012: O3 8-h above 800 has no sub-index; the 1-h one stands for O3 when given.
    missing = [p for p in POLLUTANTS if p not in present]
    known = {n: s.iaqi for n, s in subs.items() if s.iaqi is not None}
    top = max(known.values(), default=None)
    result: int | None = None if top is None or (missing and top <= 100) else top
    level = level_of(result) if result is not None else None
    category, colour = LEVELS[level] if level is not None else (None, None)
    primary = sorted(n for n, v in known.items() if result is not None and result > 50 and v == result)
    return AqiResult(
        standard=standard,
        period=period,
        aqi=result,
        level=level,
        category=category,
        colour=colour,
        primary=primary,
        iaqi={n: s.iaqi for n, s in subs.items()},
        missing=missing,
        beyond_scale=sorted(n for n, s in subs.items() if s.beyond_scale),
    )


def _exact(value: float | str | Fraction) -> Fraction:
    if isinstance(value, Fraction):
        return value
    text = value if isinstance(value, str) else repr(float(value))
    try:
        f = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{value!r} is not a concentration") from None
    return f
