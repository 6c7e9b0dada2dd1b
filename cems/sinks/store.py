"""Backfill: write a replay's readings, hourly records, daily and monthly results, grid readings, hours and
days, events, marks and transmission rates to InfluxDB (``cems replay --store``): what the live service
writes for the same data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cems.sinks.influx import InfluxConfig, InfluxWriter
from cems.sinks.lineprotocol import (
    daily_line,
    district_month_rate_line,
    event_line,
    grid_daily_line,
    grid_hourly_line,
    grid_reading_line,
    hourly_line,
    mark_line,
    monthly_line,
    outlet_day_rate_line,
    reading_line,
)

if TYPE_CHECKING:
    from cems.replay import ReplayResult

BATCH = 5000


async def store_replay(config: InfluxConfig, res: ReplayResult) -> int:
    """Write everything; returns the number of points.  Idempotent: a second run overwrites the same points."""
    writer = InfluxWriter(config)
    try:
        await writer.ensure_database()
        lines = [reading_line(r, i.enterprise.id, i.district.code) for r, i in res.accepted]
        where = {i.outlet.mn: (i.enterprise.id, i.district.code) for _, i in res.accepted}
        for h in res.hourly:
            ent, dist = where.get(h.mn, ("", ""))
            lines.append(hourly_line(h, ent, dist))
        for d in res.daily:
            ent, dist = where.get(d.mn, ("", ""))
            lines.append(daily_line(d, ent, dist))
        for m in res.months:  # month validity and monthly rules, as the live service writes them
            ent, dist = where.get(m.mn, ("", ""))
            lines.append(monthly_line(m, ent, dist))
        sensors = {g.id: g for g in res.registry_sensors}
        lines += [grid_reading_line(r, sensors[r.mn]) for r in res.grid_accepted if r.mn in sensors]
        lines += [grid_hourly_line(h) for h in res.grid_hourly]
        lines += [grid_daily_line(d) for d in res.grid_daily]
        lines += [event_line(e) for e in res.events]
        lines += [mark_line(m, *where.get(m.mn, ("", ""))) for m in res.marks]  # issue 14: the records applied
        lines += [outlet_day_rate_line(r) for r in res.outlet_days]
        lines += [district_month_rate_line(r) for r in res.district_months]
        for i in range(0, len(lines), BATCH):
            await writer.write(lines[i : i + BATCH])
        return len(lines)
    finally:
        await writer.aclose()
