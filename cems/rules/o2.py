"""Reference-oxygen correction (折算) of a concentration (DOMAIN.md §3).

HJ 75-2017 / HJ 76-2017 and the emission standards (GB 13223-2011, GB 13271-2014, GB 4915-2013, ...) give
limits for dry flue gas at a reference O2 content.  A measured concentration is brought to that reference by

    C_ref = C × (21 − O2_ref) / (21 − O2_measured)          (O2 in %, dry basis)

21 % is the O2 content of air.  Pure functions, no state.
"""

from __future__ import annotations

from math import isclose, isfinite
from typing import Final

#: O2 content of dry air, % (the "21" of the correction formula).
O2_AIR: Final = 21.0

#: Default dilution cut-off, % O2 — a **documented choice, not a figure from a standard**: HJ 75-2017,
#: HJ 76-2017 and the emission standards give the correction formula but no cut-off (DOMAIN.md §3 only says to
#: guard "very high O2 (dilution)").  Configurable: registry ``[city] o2_max`` (default this value) and
#: ``outlet.o2_max``; a bureau whose local rule or permit names a figure sets it there.  Above the cut-off
#: (and at O2 ≥ 21 %) the hour has no corrected value, so it is received but not valid for the corrected
#: pollutants (it counts against the 90 % rule) and raises an ``o2_invalid`` event: diluting the flue gas
#: with air must not turn an exceedance into a valid compliant hour.  Why 19.5:
#: the relative error of the corrected value is dO2 / (21 − O2).  At 19.5 % O2 an O2 error of ±0.3 %-points
#: (the order of a CEMS O2 analyser's accuracy) already moves the corrected value by ±20 %, and the factor
#: itself is 10× for a 6 % reference.  Above it the flue gas is mostly air (stack purged, burner off, leaking
#: sampling line): the result says more about the O2 analyser than about the emission, so no corrected value
#: is produced.  The highest reference O2 in DOMAIN.md §4 is 16 % (sinter), whose normal flue gas
#: (16–18 %) stays below the cut-off.
DEFAULT_MAX_O2: Final = 19.5


def correct(c: float, o2_measured: float, o2_ref: float, *, max_o2: float = DEFAULT_MAX_O2) -> float | None:
    """The concentration ``c`` corrected to ``o2_ref`` % O2: ``C × (21 − O2ref) / (21 − O2meas)``.

    Returns ``None`` when no valid correction exists:

    * ``o2_measured ≥ 21`` (no combustion; the formula divides by zero or flips sign),
    * ``o2_measured < 0`` (impossible reading),
    * ``o2_measured > max_o2`` (dilution, see :data:`DEFAULT_MAX_O2`),
    * any input not finite, or ``o2_ref`` outside ``[0, 21)``.
    """
    # (called for every concentration of every reading: comparisons first, NaN and ±inf fail them)
    if not (0.0 <= o2_measured < O2_AIR) or o2_measured > max_o2 or not (0.0 <= o2_ref < O2_AIR):
        return None
    if not isfinite(c):
        return None
    return c * (O2_AIR - o2_ref) / (O2_AIR - o2_measured)


#: Default absolute tolerance (mg/m³) of :func:`zs_agrees`: DAS values are usually sent with 1–3 decimals;
#: near zero a relative tolerance alone would reject a DAS value that only differs by its rounding.
DEFAULT_ZS_ABS_TOL: Final = 0.1


def zs_agrees(das_zs: float, computed: float, rel_tol: float = 0.02, abs_tol: float = DEFAULT_ZS_ABS_TOL) -> bool:
    """Whether a DAS's own corrected value (``-ZsAvg``) agrees with the formula (DOMAIN.md §3: prefer the
    DAS's value "only after checking it against this formula").

    Agreement: ``|das − computed| ≤ max(rel_tol × max(|das|, |computed|), abs_tol)``.  2 % covers a DAS that
    averages instantaneous corrected values instead of correcting the hourly means, and O2 rounded to 0.1 %.
    """
    if not (isfinite(das_zs) and isfinite(computed)):
        return False
    return isclose(das_zs, computed, rel_tol=rel_tol, abs_tol=abs_tol)
