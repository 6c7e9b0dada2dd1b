"""NOx from NO and NO2 when the DAS does not send NOx itself (DOMAIN.md §3).

Limits and reports express NOx as NO2 (HJ 75-2017; DOMAIN.md §3): ``NOx = NO × 46/30 + NO2`` (46 and 30:
the molar masses of NO2 and NO, g/mol, as the standard writes them).  Codes (HJ 212-2017 appendix B,
DOMAIN.md §2): a21002 NOx (as NO2), a21003 NO, a21004 NO2.

:func:`with_derived_nox` adds an a21002 measurement to a reading that has NO and NO2 but no NOx, for every
value suffix both carry (Rtd, Min/Avg/Max and their corrected Zs… forms: the formula is linear, so it holds
for means and corrected values alike).  Units: NO and NO2 are converted with the outlet's unit factors
(ppm → mg/m³ per gas) before they are combined, and the result is expressed in the unit configured for
a21002 (mg/m³ unless ``outlet.units`` says otherwise), so downstream code converts it like a sent value.
Flag: N when both are N; otherwise the flag that invalidates (any flag but N/T), else T (a sum of lower
bounds is a lower bound).  Pure, no state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

from cems.model import NOX, Measurement, Reading

NO: Final = "a21003"
NO2: Final = "a21004"
#: NO → NO2 mass factor of the standard's formula (DOMAIN.md §3: NOx = NO × 46/30 + NO2).
NO_TO_NO2: Final = 46.0 / 30.0
#: Value suffixes combined (concentrations; ``Cou`` totals are not).
_SUFFIXES: Final = ("Rtd", "Min", "Avg", "Max", "ZsRtd", "ZsMin", "ZsAvg", "ZsMax")
_N: Final = frozenset({None, "N", "n"})


def _flag(a: str | None, b: str | None) -> str | None:
    if a in _N and b in _N:
        return None if a is None and b is None else "N"
    for f in (a, b):
        if f not in _N and f not in ("T", "t"):
            return f
    return "T"


def derived_nox(no: Measurement, no2: Measurement, factors: Mapping[str, float]) -> Measurement | None:
    """The a21002 measurement from NO and NO2 (``None`` when they share no finite value)."""
    f_no = factors.get(NO, 1.0) * NO_TO_NO2
    f_no2 = factors.get(NO2, 1.0)
    f_nox = factors.get(NOX, 1.0)
    values: dict[str, float] = {}
    for suffix in _SUFFIXES:
        a = no.values.get(suffix)
        b = no2.values.get(suffix)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            values[suffix] = (a * f_no + b * f_no2) / f_nox
    flag = _flag(no.flag, no2.flag)
    if not values and flag in _N:
        return None
    return Measurement(NOX, values, flag)


def with_derived_nox(reading: Reading, factors: Mapping[str, float]) -> Reading:
    """``reading`` with a derived a21002 when it has NO and NO2 but no NOx; otherwise ``reading`` itself."""
    ms = reading.measurements
    if NOX in ms:
        return reading
    no = ms.get(NO)
    no2 = ms.get(NO2)
    if no is None or no2 is None:
        return reading
    m = derived_nox(no, no2, factors)
    if m is None:
        return reading
    return replace(
        reading, measurements={**ms, NOX: m}, extra={**reading.extra, "derived": "a21002=a21003*46/30+a21004"}
    )
