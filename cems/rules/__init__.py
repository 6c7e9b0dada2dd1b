"""The pure functional core of the compliance engine: no I/O, no asyncio, no clock reads.

* :mod:`cems.rules.o2` — reference-O2 correction (折算) and the check of a DAS's corrected value.
* :mod:`cems.rules.limits` — the limit that applies to an outlet, a pollutant and a time (从严, dated changes).
* :mod:`cems.rules.hourly` — hourly validity and averaging (HJ 75-2017, HJ 212 appendix D).
* :mod:`cems.rules.cadence` — the cadence of an outlet's data, inferred from the data (issue 12 item 6).
* :mod:`cems.rules.nox` — NOx = NO × 46/30 + NO2 when the DAS sends NO and NO2 but not NOx (DOMAIN.md §3).
* :mod:`cems.rules.events` — exceedance, real-time warning, data-interruption and O2-invalid state machines.
* :mod:`cems.rules.transmission` — the 90 % data-transmission effective rate and district supervision.

Per outlet the service keeps one :class:`OutletHourly`, :class:`ExceedanceTracker`,
:class:`RealtimeWarningTracker` and :class:`InterruptionTracker`, and one :class:`RateCounter` per registry.
"""

from cems.rules.events import (
    CLOSED,
    DATA_INTERRUPTION,
    HOURLY_EXCEEDANCE,
    O2_INVALID,
    OPENED,
    REALTIME_WARNING,
    RETRACTED,
    UPDATED,
    Event,
    EventUpdate,
    ExceedanceTracker,
    InterruptionTracker,
    O2InvalidTracker,
    RealtimeWarningTracker,
    event_id,
)
from cems.rules.hourly import (
    DEFAULT_HOLD,
    DEFAULT_LATENESS,
    REPAIR_WINDOW,
    SOURCE_DAS,
    SOURCE_MINUTES,
    SOURCE_REALTIME,
    HourlyRecord,
    OutletHourly,
    beijing_hour,
    is_concentration,
    repair_deadline,
    unit_factor,
    unit_factors,
)
from cems.rules.limits import AppliedLimit, LimitSchedule, active_profile, limit_at, limit_key, ref_o2_at
from cems.rules.o2 import DEFAULT_MAX_O2, correct, zs_agrees
from cems.rules.transmission import (
    DistrictMonthRate,
    OutletDayRate,
    OutletMonthRate,
    RateCounter,
    RateCounts,
    day_bounds,
    month_bounds,
)

__all__ = [
    "CLOSED",
    "DATA_INTERRUPTION",
    "DEFAULT_HOLD",
    "DEFAULT_LATENESS",
    "DEFAULT_MAX_O2",
    "HOURLY_EXCEEDANCE",
    "O2_INVALID",
    "OPENED",
    "REALTIME_WARNING",
    "REPAIR_WINDOW",
    "RETRACTED",
    "SOURCE_DAS",
    "SOURCE_MINUTES",
    "SOURCE_REALTIME",
    "UPDATED",
    "AppliedLimit",
    "DistrictMonthRate",
    "Event",
    "EventUpdate",
    "ExceedanceTracker",
    "HourlyRecord",
    "InterruptionTracker",
    "LimitSchedule",
    "O2InvalidTracker",
    "OutletDayRate",
    "OutletHourly",
    "OutletMonthRate",
    "RateCounter",
    "RateCounts",
    "RealtimeWarningTracker",
    "active_profile",
    "beijing_hour",
    "correct",
    "day_bounds",
    "event_id",
    "is_concentration",
    "limit_at",
    "limit_key",
    "month_bounds",
    "ref_o2_at",
    "repair_deadline",
    "unit_factor",
    "unit_factors",
    "zs_agrees",
]
