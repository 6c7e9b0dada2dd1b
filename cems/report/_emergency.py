"""The report's heavy-pollution section (issue 16): each warning in the period, the enterprises on the
emergency list, and whether the data showed them compliant, with the evidence.  Pure.

The warnings are rebuilt from the ``warning_level`` events (one per operator setting; a later setting overrides
an earlier one for the time it covers, ordered by the time it was set, which the event's ``profile`` names:
"set by … at …").  An enterprise is *not compliant* in a warning when any of its ``emergency_noncompliance``,
``emergency_stop_violation`` or ``staggered_production_violation`` events overlaps it; otherwise compliant as
far as the data show (hours without data are not judged: see ``data_interruption``).  ``treatment_off``
events are listed too (they are violations at any time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cems.registry import Registry
from cems.rules.emergency import WarningHistory, WarningLevel, WarningPeriod
from cems.rules.emergency_tracker import (
    EMERGENCY_NONCOMPLIANCE,
    EMERGENCY_STOP_VIOLATION,
    STAGGERED_PRODUCTION_VIOLATION,
    TREATMENT_OFF,
    WARNING_LEVEL,
)
from cems.rules.events import Event

#: Event types that make an enterprise not compliant during a warning.
VIOLATIONS = (EMERGENCY_NONCOMPLIANCE, EMERGENCY_STOP_VIOLATION, STAGGERED_PRODUCTION_VIOLATION, TREATMENT_OFF)
_SET_BY = re.compile(r"^set by (?P<by>.*?)(?: at (?P<at>\S+?))?(?::\s.*)?$")


@dataclass(frozen=True, slots=True)
class EmergencyEnterprise:
    enterprise_id: str
    enterprise: str
    district: str
    grade: str | None
    lines: tuple[str, ...]
    compliant: bool
    #: The violations overlapping the warning (the evidence: rate, allowed rate, cut, hours, signs).
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class WarningRow:
    level: WarningLevel
    start: datetime
    end: datetime | None
    set_by: str
    enterprises: tuple[EmergencyEnterprise, ...]

    @property
    def not_compliant(self) -> int:
        return sum(1 for e in self.enterprises if not e.compliant)


def history_from_events(events: Iterable[Event]) -> WarningHistory:
    """The warning history from ``warning_level`` events, in the order the settings were made."""
    periods: list[tuple[str, WarningPeriod]] = []
    for ev in events:
        if ev.type != WARNING_LEVEL or ev.pollutant is None:
            continue
        m = _SET_BY.match(ev.profile or "")
        by = m.group("by") if m else ""
        at = m.group("at") if m else None
        try:
            level = WarningLevel.parse(ev.pollutant)
            set_at = None if at is None else datetime.fromisoformat(at)
        except ValueError:
            continue
        key = "" if set_at is None else set_at.isoformat()
        periods.append((key or ev.start.isoformat(), WarningPeriod(level, ev.start, ev.end, by, set_at)))
    periods.sort(key=lambda kp: kp[0])
    return WarningHistory(tuple(p for _, p in periods))


def _overlaps(ev: Event, a: datetime, b: datetime | None) -> bool:
    end = ev.end if ev.end is not None else ev.start
    return (b is None or ev.start < b) and (end > a or (ev.end is None and ev.start >= a))


def warning_rows(registry: Registry, events: Sequence[Event], start: datetime, end: datetime) -> tuple[WarningRow, ...]:
    """The warnings overlapping [start, end) with every listed enterprise's verdict."""
    history = history_from_events(events)
    listed = [e for e in registry.enterprise if e.line]
    districts = {d.code: d.name for d in registry.district}
    rows: list[WarningRow] = []
    for a, b, level, p in history.warnings():
        if (b is not None and b <= start) or a >= end:
            continue
        ents = []
        for e in listed:
            evs = tuple(ev for ev in events if ev.type in VIOLATIONS and ev.enterprise == e.id and _overlaps(ev, a, b))
            ents.append(
                EmergencyEnterprise(
                    enterprise_id=e.id,
                    enterprise=e.name,
                    district=districts.get(e.district, e.district),
                    grade=e.grade,
                    lines=tuple(ln.id for ln in e.line),
                    compliant=not evs,
                    events=evs,
                )
            )
        ents.sort(key=lambda x: (x.compliant, x.enterprise_id))
        rows.append(WarningRow(level, a, b, "" if p is None else p.set_by, tuple(ents)))
    return tuple(rows)
