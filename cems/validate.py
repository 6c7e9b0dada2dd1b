"""Validation stage: is a decoded reading acceptable?  Pure functions; raise RejectedMessage with a reason.

Checks (each with its own reason code, counted and sent to the dead-letter topic by the service):
``unknown_mn``, ``empty_reading``, ``future_data_time``, ``stale_data_time``, ``not_finite``,
``negative_value``, ``absurd_value``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cems.errors import RejectedMessage
from cems.model import Reading
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
) -> OutletInfo:
    """Check a reading; return its outlet (with enterprise and district) or raise RejectedMessage."""
    info = registry.outlet(reading.mn)
    if info is None:
        raise RejectedMessage("unknown_mn", f"MN {reading.mn!r} is not in the registry")
    if not any(m.values or m.flag is not None for m in reading.measurements.values()):
        raise RejectedMessage("empty_reading", "the reading carries no pollutant values")
    if reading.data_time > now + policy.max_future:
        raise RejectedMessage(
            "future_data_time",
            f"data time {reading.data_time.isoformat()} is more than {policy.max_future} ahead of {now.isoformat()}",
        )
    if reading.data_time < now - policy.max_age:
        raise RejectedMessage(
            "stale_data_time", f"data time {reading.data_time.isoformat()} is older than {policy.max_age.days} days"
        )
    check_values(reading)
    return info


def check_values(reading: Reading) -> None:
    """Reject NaN/Inf, negative or absurd concentrations."""
    isfinite = math.isfinite
    ranged = _RANGED_SUFFIXES
    for code, m in reading.measurements.items():
        rng = _range(code)
        if rng is None:
            for suffix, v in m.values.items():
                if not isfinite(v):
                    raise RejectedMessage("not_finite", f"{code}-{suffix}={v} is not a finite number")
            continue
        lo, hi = rng
        for suffix, v in m.values.items():
            if not isfinite(v):
                raise RejectedMessage("not_finite", f"{code}-{suffix}={v} is not a finite number")
            if suffix not in ranged:
                continue
            if v < lo:
                raise RejectedMessage("negative_value", f"{code}-{suffix}={v} is below {lo}")
            if v > hi:
                raise RejectedMessage("absurd_value", f"{code}-{suffix}={v} is above {hi}")
