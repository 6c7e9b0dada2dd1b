"""Validation stage: is a decoded reading acceptable?  Pure functions; raise RejectedMessage with a reason.

Message checks (each with its own reason code, counted and sent to the dead-letter topic by the service):
``unknown_mn``, ``empty_reading``, ``future_data_time``, ``stale_data_time``, ``bad_field`` (a pollutant code or
suffix outside the grammar, more than :data:`MAX_FIELDS` values).

Value checks are per value (issue 12 item 3: one bad auxiliary value never rejects a reading): a value that is
not finite (``not_finite``), below its code's range (``negative_value``) or above it, or of a magnitude above
:data:`MAX_MAGNITUDE` (``absurd_value``) is left out of the reading, named in :attr:`Reading.dropped` (counted
as ``values_dropped``, stored as the point's ``dropped`` field) and the values beside it are judged.  Only a
reading of which *no* value is left is rejected, with the reason of its first bad value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from cems.errors import RejectedMessage
from cems.model import Measurement, Reading
from cems.model import unix_time as unix_time  # (moved to cems.model, where the rules share its cache)
from cems.registry import OutletInfo, Registry

#: Plausible physical ranges by code prefix (unit as in HJ 212 appendix B; generous on purpose: the
#: aim is to reject garbage, not to judge the plant).  Codes not listed are only checked for finiteness.
#: Concentrations (mg/m³ or µg/m³) and O2 cannot be negative; analyser zero drift below -5 is a fault.
_RANGES: Final[list[tuple[str, float, float]]] = [
    ("a19001", -1.0, 25.0),  # O2, % (21 % is air; a bit over for sensor error)
    ("a00000", 0.0, 1e8),  # flue-gas flow (m³/s or m³/h per outlet units)
    ("a01011", -1.0, 200.0),  # velocity, m/s
    ("a01012", -60.0, 1500.0),  # temperature, ℃
    ("a01014", -1.0, 100.0),  # humidity, %
    ("a2", -5.0, 1e6),  # gaseous pollutants a20…/a21…/a24…/a25…, mg/m³
    ("a3", -5.0, 1e6),  # particulates a34…, mg/m³ (µg/m³ ambient)
    ("a05", -5.0, 1e6),  # O3 (ambient), µg/m³
]
#: Suffixes that are concentrations/averages (ranges apply); ``Cou`` (cumulative) and states are not.
_RANGED_SUFFIXES: Final = frozenset({"Rtd", "Min", "Avg", "Max", "ZsRtd", "ZsMin", "ZsAvg", "ZsMax"})


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    #: Data time more than this ahead of the wall clock is rejected (DAS clock skew allowance).
    max_future: timedelta = timedelta(minutes=10)
    #: Data time older than this is rejected (DAS backlog uploads and 10-day manual repair fit well inside).
    max_age: timedelta = timedelta(days=400)


DEFAULT_POLICY: Final = ValidationPolicy()


def _range(code: str) -> tuple[float, float] | None:
    try:
        return _RANGE_CACHE[code]
    except KeyError:
        pass
    rng: tuple[float, float] | None = None
    for prefix, lo, hi in _RANGES:
        if code.startswith(prefix):
            rng = (lo, hi)
            break
    if len(_RANGE_CACHE) < _RANGE_CACHE_MAX:
        _RANGE_CACHE[code] = rng
    return rng


#: ``_range`` by code (hot path: every value of every reading); bounded against floods of odd codes.
_RANGE_CACHE: dict[str, tuple[float, float] | None] = {}
_RANGE_CACHE_MAX: Final = 4096


def validate(
    reading: Reading, registry: Registry, now: datetime, policy: ValidationPolicy = DEFAULT_POLICY
) -> tuple[Reading, OutletInfo]:
    """Check a reading; return it without its invalid values (:func:`check_values`) and its outlet (with
    enterprise and district), or raise RejectedMessage."""
    info = registry.outlet(reading.mn)
    if info is None:
        raise RejectedMessage("unknown_mn", f"MN {reading.mn!r} is not in the registry")
    for m in reading.measurements.values():
        if m.values or m.flag is not None:
            break
    else:
        raise RejectedMessage("empty_reading", "the reading carries no pollutant values")
    check_time(reading, now, policy)
    return check_values(reading), info


def validate_grid(reading: Reading, now: datetime, policy: ValidationPolicy = DEFAULT_POLICY) -> Reading:
    """The checks of :func:`validate` that do not need the outlet, for a grid micro-station's reading: data
    time, field names and values (the sensor itself is looked up by the service).  Returns the reading without
    its invalid values."""
    check_time(reading, now, policy)
    return check_values(reading)


def check_time(reading: Reading, now: datetime, policy: ValidationPolicy = DEFAULT_POLICY) -> None:
    """Reject a data time too far ahead of ``now`` (clock skew allowance) or too old."""
    latest, earliest = _bounds(now, policy)
    t = unix_time(reading.data_time)  # (one conversion, then two float comparisons: exact to the microsecond)
    if t > latest:
        raise RejectedMessage(
            "future_data_time",
            f"data time {reading.data_time.isoformat()} is more than {policy.max_future} ahead of {now.isoformat()}",
        )
    if t < earliest:
        raise RejectedMessage(
            "stale_data_time", f"data time {reading.data_time.isoformat()} is older than {policy.max_age.days} days"
        )


def _bounds(now: datetime, policy: ValidationPolicy) -> tuple[float, float]:
    """(latest, earliest) data time accepted at ``now``, as Unix times: the same for every reading of a batch
    (one ``now``), so remembered for the last ``now`` and policy."""
    global _last_bounds
    last = _last_bounds  # (one tuple, read and replaced whole: safe across threads)
    if last[0] is now and last[1] is policy:
        return last[2], last[3]
    latest, earliest = (now + policy.max_future).timestamp(), (now - policy.max_age).timestamp()
    _last_bounds = (now, policy, latest, earliest)
    return latest, earliest


_last_bounds: tuple[datetime | None, ValidationPolicy | None, float, float] = (None, None, 0.0, 0.0)


#: Most values (numbers and flags: the fields of one point) a reading may carry.  An HJ 212 data segment
#: (≤ 1024 bytes) holds fewer than 100; the bound keeps a flood of invented keys out of the database.
MAX_FIELDS: Final = 200
#: Largest magnitude of any value, whatever its code and suffix (a lifetime ``Cou`` of a large stack's flow
#: is ≈ 10¹¹ m³): beyond it a value is garbage (``1e308`` overflows every sum to infinity).
MAX_MAGNITUDE: Final = 1e12
#: Pollutant codes: HJ 212-2017/2025 (``a21026``, ``w01018``, ``a34013``), HJ/T 212-2005 (``01``, ``011``,
#: ``S01``, ``B02``) and the vendor codes real packets carry (``LA``, ``SB1``, ``ua19004``, ``pms_rules``):
#: ASCII letters, digits and ``_``, nothing InfluxDB line protocol or InfluxQL must escape.
CODE_GRAMMAR: Final = re.compile(r"[A-Za-z0-9_]{1,24}")
#: Suffixes: HJ 212's (``Rtd``, ``Min``, ``Avg``, ``Max``, ``ZsRtd``…``ZsMax``, ``ZsCou``, ``Cou``, ``RS``,
#: ``RT``, ``ValidNum``, ``TotalNum``; text ``Flag``, ``EFlag``, ``SampleTime``, ``Info``) and vendors' (``td``):
#: an ASCII letter, then letters and digits.  ``_`` is left out: ``{code}_{suffix}`` stays one reading.
SUFFIX_GRAMMAR: Final = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}")


def _name_ok(name: str, grammar: re.Pattern[str], known: set[str]) -> bool:
    if grammar.fullmatch(name) is None:
        return False
    if len(known) < _KNOWN_MAX:
        known.add(name)
    return True


#: Names already checked (hot path: every value of every reading); bounded against floods of invented names.
_KNOWN_SUFFIXES: set[str] = set()
_KNOWN_MAX: Final = 4096


_CodeSpec = tuple[float, float, tuple[float, float] | None]
#: Good pollutant codes → (lowest, highest, range): the range of :func:`_range` (``None``: none), its bounds
#: (± :data:`MAX_MAGNITUDE` without one).  Bounded against floods of invented names.
_CODES: dict[str, _CodeSpec] = {}


def _code_spec(code: str) -> _CodeSpec:
    """The :data:`_CODES` entry of ``code`` (remembered while there is room), or ``bad_field``."""
    if CODE_GRAMMAR.fullmatch(code) is None:
        raise RejectedMessage("bad_field", f"pollutant code {_show(code)} is not letters, digits and '_' (1-24)")
    rng = _range(code)
    spec: _CodeSpec = (rng[0], rng[1], rng) if rng is not None else (-MAX_MAGNITUDE, MAX_MAGNITUDE, None)
    if len(_CODES) < _KNOWN_MAX:
        _CODES[code] = spec
    return spec


def check_values(reading: Reading) -> Reading:
    """Reject ill-formed field names and too many fields (``bad_field``: the message); return the reading
    without its NaN/Inf, negative or absurd values (each named in :attr:`Reading.dropped`), or the reading
    itself when every value is good.  Raises the first bad value's reason when no value is left."""
    ranged = _RANGED_SUFFIXES
    codes, suffixes = _CODES, _KNOWN_SUFFIXES
    big = MAX_MAGNITUDE
    n = 0
    bad: list[tuple[str, str, RejectedMessage]] | None = None
    for code, m in reading.measurements.items():
        spec = codes.get(code)  # (one look-up: the name is good, and its range)
        if spec is None:
            spec = _code_spec(code)
        lo, hi, rng = spec
        values = m.values
        n += len(values) + (m.flag is not None)
        if not suffixes.issuperset(values):  # (rare: a suffix not checked before)
            for suffix in values:
                if suffix not in suffixes and not _name_ok(suffix, SUFFIX_GRAMMAR, suffixes):
                    raise RejectedMessage("bad_field", f"{_show(code)}: suffix {_show(suffix)} is not a field suffix")
        for suffix, v in values.items():
            if -big <= v <= big and (suffix not in ranged or lo <= v <= hi):
                continue
            if bad is None:
                bad = []
            bad.append((code, suffix, _value_problem(code, suffix, v, rng, big)))
    if n > MAX_FIELDS:
        raise RejectedMessage("bad_field", f"the reading carries {n} values and flags, more than {MAX_FIELDS}")
    if bad is None:
        return reading
    return _without(reading, bad)


def _value_problem(code: str, suffix: str, v: float, rng: tuple[float, float] | None, big: float) -> RejectedMessage:
    if not math.isfinite(v):
        return RejectedMessage("not_finite", f"{code}-{suffix}={v} is not a finite number")
    if suffix not in _RANGED_SUFFIXES or rng is None:
        return RejectedMessage("absurd_value", f"{code}-{suffix}={v} has a magnitude above {big:g}")
    if v < rng[0]:
        return RejectedMessage("negative_value", f"{code}-{suffix}={v} is below {rng[0]}")
    return RejectedMessage("absurd_value", f"{code}-{suffix}={v} is above {rng[1]}")


def _without(reading: Reading, bad: list[tuple[str, str, RejectedMessage]]) -> Reading:
    """``reading`` without the ``bad`` values (the slow path: only readings with a bad value get here)."""
    drop: dict[str, set[str]] = {}
    for code, suffix, _ in bad:
        drop.setdefault(code, set()).add(suffix)
    measurements: dict[str, Measurement] = {}
    for code, m in reading.measurements.items():
        gone = drop.get(code)
        if gone is None:
            measurements[code] = m
        else:
            measurements[code] = m._replace(values={s: v for s, v in m.values.items() if s not in gone})
    if not any(m.values for m in measurements.values()):
        raise bad[0][2]  # nothing of the reading is left to judge: the message is garbage
    return replace(reading, measurements=measurements, dropped=reading.dropped + tuple(f"{c}-{s}" for c, s, _ in bad))


def _show(name: str) -> str:
    return repr(name if len(name) <= 40 else name[:40] + "...")
