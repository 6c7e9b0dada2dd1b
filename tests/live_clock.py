"""When ``cems run``'s wall clock has closed what a live test asks about (tests that run the real service).

``cems run`` decides an hour at the first clock tick (every :data:`TICK`) after its end plus the lateness
(:data:`LATENESS`), or when the outlet's data time passes that; a Beijing day is closed once its last hour is.
A test that picks "yesterday" or "the last hours" from the wall clock must leave that much time after the end
of what it picked, or it fails when started in the first minutes of an hour or of a Beijing day."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from cems.model import BEIJING
from cems.rules.hourly import DEFAULT_LATENESS
from cems.service.compliance import ComplianceConfig

#: `cems run`'s clock (ComplianceConfig's defaults)
LATENESS = DEFAULT_LATENESS
TICK = timedelta(seconds=ComplianceConfig.clock_interval_s)
#: besides a tick: the service's start, the test's own work before it looks
MARGIN = timedelta(minutes=1)


def closed_day(now: datetime) -> date:
    """The latest Beijing day whose hours ``cems run``'s clock has surely all closed at ``now`` (and at any later
    time): yesterday, or the day before in the first minutes of a day (yesterday's last hour is decided only at
    the first tick past 00:05)."""
    return (now.astimezone(BEIJING) - LATENESS - TICK - MARGIN).date() - timedelta(days=1)
