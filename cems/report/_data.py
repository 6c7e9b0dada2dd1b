"""Load a report's inputs from InfluxDB (v1 ``/query``, InfluxQL): ``cems_hourly`` and ``cems_event`` as
:mod:`cems.sinks.lineprotocol` writes them; for the grid sections, ``grid_daily`` (the ranking's days, through
:mod:`cems.sinks.gridrank`) and the ``grid_hotspot`` events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cems.model import BEIJING
from cems.protocol.mark import MarkRecord
from cems.report._emergency import VIOLATIONS
from cems.report._period import Period
from cems.rules.ambient import AmbientDay
from cems.rules.daily import MonthResult
from cems.rules.emergency_tracker import WARNING_LEVEL
from cems.rules.events import HOURLY_EXCEEDANCE, Event
from cems.rules.hourly import HourlyRecord
from cems.rules.ranking import PeriodKind, RankPeriod
from cems.sinks.gridrank import load_ranking_days
from cems.sinks.influxql import quote_ident, quote_literal
from cems.sinks.lineprotocol import (
    EVENT_MEASUREMENT,
    HOURLY_MEASUREMENT,
    MARK_MEASUREMENT,
    MONTHLY_MEASUREMENT,
    present,
)

#: ``(q, epoch) -> rows`` (e.g. :func:`cems.sinks.influx.influx_query` bound to a URL and database).
Query = Callable[[str, str | None], list[dict[str, Any]]]

#: How far before the period an event may start and still overlap it (exceedance runs are hours long).
EVENT_LOOKBACK: Final = timedelta(days=92)
#: Hourly rows are fetched one day at a time (bounded answers; InfluxDB may cap rows per answer).
CHUNK: Final = timedelta(days=1)


@dataclass
class ReportInput:
    records: list[HourlyRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: MN → its first ``cems_hourly`` point before the end of the period.
    first_seen: dict[str, datetime] = field(default_factory=dict)
    #: Heavy-pollution events (issue 16): warning settings and the emergency lists' violations.
    emergency: list[Event] = field(default_factory=list)
    #: Mark records received before the end of the period (``cems_mark``, issue 14).
    marks: list[MarkRecord] = field(default_factory=list)
    #: ``cems_monthly`` results of the months the period touches.
    months: list[MonthResult] = field(default_factory=list)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


_lit = quote_literal
_HOURLY: Final = quote_ident(HOURLY_MEASUREMENT)
_EVENT: Final = quote_ident(EVENT_MEASUREMENT)
_MONTHLY: Final = quote_ident(MONTHLY_MEASUREMENT)


def _time(v: Any) -> datetime:
    return datetime.fromtimestamp(int(v), BEIJING)


def record_from_row(row: dict[str, Any]) -> HourlyRecord:
    """An :class:`HourlyRecord` with what the rate rule needs (mn, pollutant, hour, valid, flag, source,
    exceeds) from a ``cems_hourly`` row queried with ``epoch="s"``; the measured values are left out."""
    return HourlyRecord(
        mn=str(row["mn"]),
        pollutant=str(row["pollutant"]),
        hour_start=_time(row["time"]),
        avg=None,
        o2_avg=None,
        zs_avg=None,
        das_zs_avg=None,
        zs_source=None,
        valid=row.get("valid") is True,
        flag=str(row.get("flag") or ""),
        source=str(row.get("source") or ""),
        valid_minutes=None,
        limit=None,
        ref_o2=None,
        profile=None,
        exceeds=row.get("exceeds") is True,
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def event_from_row(row: dict[str, Any]) -> Event:
    """An :class:`Event` from a ``cems_event`` row (without the fields its ``unset`` names)."""
    row = present(row)
    end = row.get("end") or None
    return Event(
        type=str(row["type"]),
        mn=str(row["mn"]),
        enterprise=str(row.get("enterprise") or ""),
        district=str(row.get("district") or ""),
        pollutant=row.get("pollutant") or None,
        start=datetime.fromisoformat(str(row["start"])) if row.get("start") else _time(row["time"]),
        end=None if end is None else datetime.fromisoformat(str(end)),
        hours=float(row.get("hours") or 0.0),
        peak=_opt_float(row.get("peak")),
        limit=_opt_float(row.get("limit")),
        ref_o2=_opt_float(row.get("ref_o2")),
        profile=row.get("profile") or None,
        status=str(row.get("status") or ""),
        evidence=row.get("evidence") or None,
    )


def _opt_int(v: Any) -> int:
    return 0 if v is None else int(v)


def month_from_row(row: dict[str, Any]) -> MonthResult:
    """A :class:`MonthResult` from a ``cems_monthly`` row queried with ``epoch="s"`` (without the fields its
    ``unset`` names: a revision that left the monthly rule unjudged)."""
    row = present(row)
    t = _time(row["time"])
    meets = row.get("meets_monthly_rule")
    return MonthResult(
        mn=str(row["mn"]),
        pollutant=str(row["pollutant"]),
        month=f"{t.year:04d}-{t.month:02d}",
        valid_days=_opt_int(row.get("valid_days")),
        days_needed=_opt_int(row.get("days_needed")),
        month_valid=row.get("month_valid") is True,
        valid_hours=_opt_int(row.get("valid_hours")),
        rule_hours=_opt_int(row.get("rule_hours")),
        hours_within_limit=_opt_int(row.get("hours_within_limit")),
        share_within_limit=_opt_float(row.get("share_within_limit")),
        share_required=_opt_float(row.get("share_required")),
        meets_monthly_rule=None if meets is None else meets is True,
        citation=str(row.get("citation") or ""),
        marked_hours=_opt_int(row.get("marked_hours")),
    )


def load_months(query: Query, period: Period) -> list[MonthResult]:
    """``cems_monthly`` points of the Beijing months that the period touches."""
    first = period.start.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    q = f"SELECT * FROM {_MONTHLY} WHERE time >= {_ns(first)} AND time < {_ns(period.end)}"
    return [month_from_row(r) for r in query(q, "s")]


def load_report_input(query: Query, period: Period, factors: Sequence[str]) -> ReportInput:
    """Hourly records of the period (assessed factors, plus exceeding records of any factor), the first
    hourly point of every outlet before the end of the period, and the exceedance events overlapping it."""
    out = ReportInput()
    start, end = period.start, period.end
    fset = set(factors)
    pol = " OR ".join(f'"pollutant" = {_lit(f)}' for f in sorted(fset))
    t = start
    while t < end:
        u = min(end, t + CHUNK)
        window = f"time >= {_ns(t)} AND time < {_ns(u)}"
        if pol:
            rows = query(
                f'SELECT "valid", "flag", "exceeds" FROM {_HOURLY} WHERE {window} AND ({pol}) '
                'GROUP BY "mn", "pollutant", "source"',
                "s",
            )
            out.records.extend(record_from_row(r) for r in rows)
        rows = query(
            f'SELECT "valid", "flag", "exceeds" FROM {_HOURLY} WHERE {window} AND "exceeds" = true '
            'GROUP BY "mn", "pollutant", "source"',
            "s",
        )
        out.records.extend(record_from_row(r) for r in rows if r.get("pollutant") not in fset)
        t = u
    for r in query(f'SELECT first("valid") FROM {_HOURLY} WHERE time < {_ns(end)} GROUP BY "mn"', "s"):
        out.first_seen[str(r["mn"])] = _time(r["time"])
    rows = query(
        f'SELECT * FROM {_EVENT} WHERE "type" = {_lit(HOURLY_EXCEEDANCE)} '
        f"AND time >= {_ns(start - EVENT_LOOKBACK)} AND time < {_ns(end)}",
        "s",
    )
    for r in rows:
        ev = event_from_row(r)
        ev_end = ev.end if ev.end is not None else ev.start + timedelta(hours=ev.hours)
        if ev_end > start:
            out.events.append(ev)
    out.events.sort(key=lambda e: (e.start, e.mn, e.pollutant or ""))
    out.months = load_months(query, period)
    kinds = " OR ".join(f'"type" = {_lit(t)}' for t in (WARNING_LEVEL, *VIOLATIONS))
    # every warning setting before the end (a setting may cover the period from long before), the violations
    # overlapping the period
    for r in query(f"SELECT * FROM {_EVENT} WHERE ({kinds}) AND time < {_ns(end)}", "s"):
        ev = event_from_row(r)
        if ev.type == WARNING_LEVEL or ev.end is None or ev.end > start - EVENT_LOOKBACK:
            out.emergency.append(ev)
    out.emergency.sort(key=lambda e: (e.start, e.type, e.mn, e.pollutant or ""))
    mq = quote_ident(MARK_MEASUREMENT)
    for r in query(f"SELECT * FROM {mq} WHERE time < {_ns(end)}", "s"):
        out.marks.append(MarkRecord.from_json({k: (None if v == "" else v) for k, v in r.items()}))
    return out


#: The event type of a grid hotspot (明显高于周边; the grid pipeline raises it, docs/events.md).
GRID_HOTSPOT: Final = "grid_hotspot"
#: Hotspot runs are hours to days long: how far before the period one may start and still overlap it.
HOTSPOT_LOOKBACK: Final = timedelta(days=31)


@dataclass
class GridInput:
    """The grid sections' inputs: sensors' days of the period, the previous period and the same period last
    year (for the ranking), and the ``grid_hotspot`` events overlapping the period (retracted ones left out)."""

    days: list[AmbientDay] = field(default_factory=list)
    hotspots: list[Event] = field(default_factory=list)


def rank_period_of(period: Period) -> RankPeriod:
    """The report's period as the ranking's (same Beijing days and kind)."""
    kinds: dict[str, PeriodKind] = {"day": "day", "week": "week", "month": "month"}
    return RankPeriod(kinds.get(period.kind, "month"), period.first, period.last)


def load_grid_input(query: Query, period: Period) -> GridInput:
    """``grid_daily`` for the period's ranking and the ``grid_hotspot`` events overlapping the period. An
    event's ``mn`` is the sensor id; events without an ``hours`` field count their ``start``…``end``."""
    out = GridInput(days=load_ranking_days(query, rank_period_of(period)))
    start, end = period.start, period.end
    rows = query(
        f'SELECT * FROM {_EVENT} WHERE "type" = {_lit(GRID_HOTSPOT)} '
        f"AND time >= {_ns(start - HOTSPOT_LOOKBACK)} AND time < {_ns(end)}",
        "s",
    )
    for r in rows:
        if not r.get("mn"):
            continue
        ev = event_from_row(r)
        if ev.status == "retracted":
            continue
        ev_end = ev.end if ev.end is not None else ev.start + timedelta(hours=ev.hours)
        if ev_end > start:
            out.hotspots.append(ev)
    out.hotspots.sort(key=lambda e: (e.start, e.mn, e.pollutant or ""))
    return out


def influx_loader(url: str, db: str) -> Query:
    """A :data:`Query` on the v1 API of the InfluxDB at ``url``."""
    from cems.sinks.influx import influx_query

    def q(text: str, epoch: str | None) -> list[dict[str, Any]]:
        return influx_query(url, db, text, epoch=epoch)

    return q
