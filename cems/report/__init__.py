"""``cems report``: the city office's transmission-rate and exceedance report for a month, ISO week or day.

Data: ``cems_hourly``, ``cems_event``, ``cems_mark`` and ``cems_monthly`` (monthly results, shown as written)
from InfluxDB (v1 ``/query``); counting: the same :class:`~cems.rules.transmission.RateCounter` as the service
and ``cems replay``.  Grid sections: the township ranking of the period from ``grid_daily``
(:mod:`cems.rules.ranking`, as ``cems grid rank``) and the hotspot list from the ``grid_hotspot`` events.
Output: ``report.html`` (self-contained) and CSV tables (UTF-8 with BOM) in ``--out``.

* :mod:`cems.report._period` — the report period (Beijing time).
* :mod:`cems.report._data` — loading from InfluxDB.
* :mod:`cems.report._tables` — the tables (pure).
* :mod:`cems.report._html`, :mod:`cems.report._csv` — rendering.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from pathlib import Path

from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import Registry
from cems.report._cases import CASES_CSV, CaseRow, build_cases, load_case_input
from cems.report._csv import CSV_FILES, write_csvs
from cems.report._data import (
    GridInput,
    Query,
    ReportInput,
    influx_loader,
    load_grid_input,
    load_report_input,
    rank_period_of,
)
from cems.report._html import render_html
from cems.report._period import Period
from cems.report._quality import QualityRow, QualitySection, QualitySignal, build_quality_section, load_quality_signals
from cems.report._tables import (
    AvailabilityCell,
    AvailabilityRow,
    DistrictRow,
    ExceedanceRow,
    GridSection,
    HotspotRow,
    MonthlyRow,
    OutletRow,
    RankRow,
    Report,
    Summary,
    build_grid_section,
    build_report,
)

__all__ = [
    "CASES_CSV",
    "CSV_FILES",
    "AvailabilityCell",
    "AvailabilityRow",
    "CaseRow",
    "DistrictRow",
    "ExceedanceRow",
    "GridInput",
    "GridSection",
    "HotspotRow",
    "MonthlyRow",
    "OutletRow",
    "Period",
    "QualityRow",
    "QualitySection",
    "QualitySignal",
    "Query",
    "RankRow",
    "Report",
    "ReportInput",
    "Summary",
    "build_grid_section",
    "build_quality_section",
    "build_report",
    "counted_until",
    "influx_loader",
    "load_grid_input",
    "load_grid_section",
    "load_quality_signals",
    "load_report",
    "load_report_input",
    "render_html",
    "write_report",
]

HTML_FILE = "report.html"


#: Hours are written when they close (the service keeps an hour open a few minutes for late data).
FLUSH_MARGIN = timedelta(minutes=10)


def counted_until(now: datetime) -> datetime:
    """For a period in progress: the start of the last hour that has surely been closed and written."""
    t = now.astimezone(BEIJING) - FLUSH_MARGIN
    return t.replace(minute=0, second=0, microsecond=0)


def load_report(registry: Registry, period: Period, query: Query, *, now: datetime | None = None) -> Report:
    """Load the period's data with ``query`` and build the report.  With ``now``, a period still in progress
    is counted only up to :func:`counted_until` (hours not yet due are not expected)."""
    until = None if now is None else counted_until(now)
    if until is not None and until <= period.start:
        raise CemsError(f"the period {period.key} has not started yet (data up to {until.isoformat()})")
    sinces = [i.outlet.since for i in registry.outlets()]
    first_since = None if None in sinces or not sinces else min(s for s in sinces if s is not None)
    if first_since is not None and period.last < first_since:
        raise CemsError(
            f"the period {period.key} ends before the registry's first outlet is monitored "
            f"(since {first_since.isoformat()}): there is nothing to assess"
        )
    data = load_report_input(query, period, registry.city.assessed_factors)
    grid = load_grid_section(registry, period, query, until=until)
    if not data.records and not data.events and not data.emergency and (grid is None or not grid.has_data):
        raise CemsError(
            f"no hourly records and no events for {period.key} in the database: nothing was ingested for this "
            "period (check --influx-url/--influx-db, or replay the data with `cems replay --store`); "
            "a report would show every district as 挂牌督办"
        )
    report = build_report(
        registry,
        period,
        data.records,
        data.events,
        data.first_seen,
        until=until,
        grid=grid,
        emergency_events=data.emergency,
        marks=data.marks,
        monthly=data.months,
    )
    report = dataclasses.replace(report, quality=build_quality_section(registry, load_quality_signals(query, period)))
    # the events' cases (电子督办, issue 19)
    events, actions = load_case_input(query, period.start, period.end)
    cases = build_cases(registry, events, actions, until or period.end)
    return dataclasses.replace(report, cases=cases, case_sla_hours=registry.city.ack_sla_hours)


def load_grid_section(
    registry: Registry, period: Period, query: Query, *, until: datetime | None = None
) -> GridSection | None:
    """The township ranking and hotspot list of ``period``; ``None`` (sections left out, nothing queried) when
    the registry has no grid sensor. ``until``: the counted end of a period in progress (the ranking then
    counts the days over before it)."""
    if not registry.grid_sensor:
        return None
    inp = load_grid_input(query, period)
    last_over: date | None = None
    if until is not None and until < period.end:
        last_over = until.astimezone(BEIJING).date() - timedelta(days=1)
    return build_grid_section(registry, rank_period_of(period), inp.days, inp.hotspots, until=last_over)


def write_report(report: Report, out_dir: str | Path, *, generated: datetime | None = None) -> list[Path]:
    """Write ``report.html`` and the CSV tables into ``out_dir`` (created if needed); return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / HTML_FILE
    html_path.write_text(render_html(report, generated=generated), encoding="utf-8")
    return [html_path, *write_csvs(report, out)]
