"""When ``cems run``'s wall clock has closed what a live test asks about (tests that run the real service).

``cems run`` decides an hour at the first clock tick (every :data:`TICK`) after its end plus the lateness
(:data:`LATENESS`), or when the outlet's data time passes that; a Beijing day is closed once its last hour is.
A test that picks "yesterday" or "the last hours" from the wall clock must leave that much time after the end
of what it picked, or it fails when started in the first minutes of an hour or of a Beijing day."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

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


def probe_outlet(district: str, mn: str = "MN9999") -> str:
    """A registry's enterprise with one outlet ``mn`` in ``district``, for :func:`wait_for_a_tick`."""
    return (
        f'[[enterprise]]\nid = "E{mn}"\nname = "时钟探针"\ndistrict = "{district}"\n'
        f'[[enterprise.outlet]]\nmn = "{mn}"\nname = "探针"\nprofile = "coal_power_ultra_low"\npassword = "123456"\n'
    )


def wait_for_a_tick(
    publish: Callable[[str, str], None],
    query: Callable[[str], list[dict[str, Any]]],
    wait_until: Callable[[Callable[[], Any], float], Any],
    *,
    mn: str = "MN9999",
    prefix: str = "cems/v1",
) -> None:
    """Return just after a tick of ``cems run``'s clock: the next one is about :data:`TICK` away.

    A minute record of outlet ``mn`` (:func:`probe_outlet`, no data before) two hours ago: data time leaves its
    hour open (the outlet's watermark is the record's own time), and the first tick after it closes the hour,
    writing its ``cems_hourly`` point. Also a barrier: readings published before the probe have been judged when
    it returns (batches are judged in arrival order, and the probe's hour is closed by a tick after its own)."""
    t = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    values = {"a21026": {"Avg": 10.0, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}}
    publish(f"{prefix}/{mn}/min", json.dumps({"data_time": t.isoformat(), "values": values}))
    q = f"SELECT * FROM cems_hourly WHERE \"mn\" = '{mn}'"
    wait_until(lambda: bool(query(q)), 30)
