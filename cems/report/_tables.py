"""The report's tables, built from hourly records and events: pure, no I/O.

The counting is :class:`cems.rules.transmission.RateCounter`'s (the same object the live service and
``cems replay`` use); this module only feeds it, aggregates its per-day and per-month results over the
report period, orders them and joins registry names.

Assessed period of an outlet: RateCounter's (issue 12 item 4): from the start of the period, or Beijing
midnight of the outlet's registry ``since`` if later; only declared stops remove hours.  The report does not
move the start to an outlet's first record, so it shows the same figure as the live ``cems_rate`` for the same
outlet and day.  ``first_seen`` (the outlet's first hourly record ever, e.g. ``SELECT first(...)`` in
InfluxDB) only marks outlets that never reported (``silent``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from cems.model import BEIJING, POLLUTANT_NAMES
from cems.protocol.mark import MarkRecord
from cems.registry import Outlet, Registry
from cems.report._cases import CaseRow
from cems.report._emergency import WarningRow, warning_rows
from cems.report._marks import MarksSection, marks_ledger, marks_section
from cems.report._period import Period
from cems.report._quality import QualitySection
from cems.rules.ambient import AmbientDay
from cems.rules.daily import MonthResult
from cems.rules.events import HOURLY_EXCEEDANCE, RETRACTED_STATUS, Event
from cems.rules.hourly import HourlyRecord
from cems.rules.marks import MARKED
from cems.rules.ranking import RankEntry, Ranking, RankPeriod, rank_period
from cems.rules.transmission import DistrictMonthRate, OutletDayRate, RateCounter, RateCounts

# Heat-map cell states.
DATA = "data"
STOP = "stop"  # the whole day is a declared stop: nothing expected
PARTIAL_STOP = "partial_stop"  # part of the day is a declared stop
NOT_ASSESSED = "not_assessed"  # outside the outlet's assessed period


def pollutant_label(code: str | None) -> str:
    if not code:
        return ""
    name = POLLUTANT_NAMES.get(code)
    return f"{name}({code})" if name else code


def _rates(c: RateCounts) -> tuple[float | None, float | None, float | None]:
    return c.transmission_rate, c.validity_rate, c.effective_rate


@dataclass(frozen=True, slots=True)
class DistrictRow:
    rank: int
    code: str
    name: str
    outlets: int
    expected: int
    received: int
    valid: int
    transmission_rate: float | None
    validity_rate: float | None
    effective_rate: float | None
    exceeding_enterprises: tuple[str, ...]  # enterprise names
    supervised: bool
    reasons: tuple[str, ...]
    #: RateCounter's monthly rows this row sums (one per Beijing month the period touches).
    months: tuple[DistrictMonthRate, ...]


@dataclass(frozen=True, slots=True)
class OutletRow:
    mn: str
    outlet: str
    enterprise_id: str
    enterprise: str
    district_code: str
    district: str
    expected: int
    received: int
    valid: int
    transmission_rate: float | None
    validity_rate: float | None
    effective_rate: float | None
    #: No hourly record of this outlet was ever seen (before the end of the period).
    silent: bool


@dataclass(frozen=True, slots=True)
class ExceedanceRow:
    enterprise_id: str
    enterprise: str
    district: str
    events: int
    #: Exceeding hours inside the period (runs clipped to the period).
    hours: float
    #: pollutant code → (events, hours in the period)
    by_pollutant: dict[str, tuple[int, float]]
    #: The event with the highest peak ÷ limit.
    worst_mn: str
    worst_outlet: str
    worst_pollutant: str | None
    peak: float | None
    limit: float | None

    @property
    def peak_ratio(self) -> float | None:
        if self.peak is None or not self.limit:
            return None
        return self.peak / self.limit


@dataclass(frozen=True, slots=True)
class AvailabilityCell:
    mn: str
    day: date
    state: str  # DATA, STOP, PARTIAL_STOP, NOT_ASSESSED
    expected: int
    received: int
    valid: int
    effective_rate: float | None


@dataclass(frozen=True, slots=True)
class AvailabilityRow:
    mn: str
    outlet: str
    enterprise: str
    district: str
    cells: tuple[AvailabilityCell, ...]


@dataclass(frozen=True, slots=True)
class Summary:
    outlets: int
    outlets_meeting_target: int
    outlets_below_target: int
    silent_outlets: int
    expected: int
    received: int
    valid: int
    transmission_rate: float | None
    validity_rate: float | None
    effective_rate: float | None
    districts: int
    supervised_districts: int
    exceedance_events: int
    exceeding_enterprises: int
    exceedance_hours: float


@dataclass(frozen=True, slots=True)
class HotspotRow:
    """A grid sensor's ``grid_hotspot`` events in the period: hours (runs clipped to the period), events,
    pollutants, the highest hourly value (``peak``)."""

    sensor: str
    name: str
    district_code: str
    district: str
    township: str
    hours: float
    events: int
    pollutants: tuple[str, ...]
    peak: float | None


@dataclass(frozen=True, slots=True)
class RankRow:
    """A township of the city ranking, with its district's name (the report's view of a ``RankEntry``)."""

    entry: RankEntry
    district: str

    @property
    def township(self) -> str:
        return self.entry.figures.township


@dataclass(frozen=True, slots=True)
class GridSection:
    """The report's grid sections: the township ranking of the period (``None``: no grid data) and the
    hotspot list (most hotspot hours first)."""

    ranking: Ranking | None
    city: tuple[RankRow, ...]
    hotspots: tuple[HotspotRow, ...]
    #: Names of the districts (code → name), for the unranked townships.
    district_names: dict[str, str]

    @property
    def has_data(self) -> bool:
        return self.ranking is not None or bool(self.hotspots)

    def worst(self, n: int = 10) -> list[RankRow]:
        """The ``n`` townships with the highest index, worst first."""
        return list(reversed(self.city))[:n]


def build_grid_section(
    registry: Registry,
    period: RankPeriod,
    days: Iterable[AmbientDay],
    hotspots: Iterable[Event],
    *,
    until: date | None = None,
) -> GridSection:
    """The ranking of ``period`` (:func:`cems.rules.ranking.rank_period`: grid micro-stations, six pollutants)
    from the sensors' days, and the hotspot list from the ``grid_hotspot`` events. ``until``: the last day
    over, for a period in progress."""
    names = {d.code: d.name for d in registry.district}
    ranking = rank_period(days, period, until=until)
    city = tuple(RankRow(e, names.get(e.figures.district, e.figures.district)) for e in ranking.city) if ranking else ()
    sensors = {g.id: g for g in registry.grid_sensor}
    by_sensor: dict[str, list[tuple[Event, float]]] = {}
    for ev in hotspots:
        h = _event_hours_in(ev, period.start, period.end)
        if h > 0:
            by_sensor.setdefault(ev.mn, []).append((ev, h))
    rows: list[HotspotRow] = []
    for sensor, evs in by_sensor.items():
        g = sensors.get(sensor)
        code = g.district if g is not None else evs[0][0].district
        peaks = [e.peak for e, _ in evs if e.peak is not None and math.isfinite(e.peak)]
        rows.append(
            HotspotRow(
                sensor=sensor,
                name=g.name if g is not None else "",
                district_code=code,
                district=names.get(code, code),
                township=g.township if g is not None else "",
                hours=sum(h for _, h in evs),
                events=len(evs),
                pollutants=tuple(sorted({e.pollutant for e, _ in evs if e.pollutant})),
                peak=max(peaks) if peaks else None,
            )
        )
    rows.sort(key=lambda r: (-r.hours, -r.events, r.sensor))
    return GridSection(ranking, city, tuple(rows), names)


@dataclass(frozen=True, slots=True)
class MonthlyRow:
    """One outlet, code and month of ``cems_monthly`` (issue 12): month validity (≥ 25 valid days, 23 in
    February, HJ 75-2017) and, where the profile has one, the monthly rule (steel ultra-low, 环大气〔2019〕35号)."""

    district: str
    enterprise: str
    outlet: str
    result: MonthResult


@dataclass(frozen=True, slots=True)
class Report:
    city: str
    period: Period
    #: End of the counted time: the end of the period, or ``until`` for a period in progress.
    end: datetime
    target: float
    enterprise_threshold: int
    factors: tuple[str, ...]
    summary: Summary
    districts: tuple[DistrictRow, ...]  # ranked, best effective rate first
    outlets: tuple[OutletRow, ...]  # every assessed outlet, by district, enterprise, MN
    below_target: tuple[OutletRow, ...]  # worst first
    exceedances: tuple[ExceedanceRow, ...]  # most events first
    availability: tuple[AvailabilityRow, ...]
    #: RateCounter's own per-day rows (for checks against a replay).
    outlet_days: tuple[OutletDayRate, ...]
    #: Monthly results (``cems_monthly``) of the months the period touches, by district, enterprise, MN, code.
    monthly: tuple[MonthlyRow, ...] = ()
    #: The grid sections (township ranking, hotspot list); ``None``: the registry has no grid sensor and the
    #: report leaves the sections out.
    grid: GridSection | None = None
    #: Heavy-pollution warnings of the period and the listed enterprises' verdicts (issue 16).
    warnings: tuple[WarningRow, ...] = ()
    #: Marks, declarations and repairs (issue 14): marked hours per outlet and type, caps, late declarations.
    marks: MarksSection = field(default_factory=MarksSection)
    #: The data-quality section (issue 17); ``None``: not loaded (the section is left out).
    quality: QualitySection | None = None
    #: The events' cases (电子督办, issue 19: acknowledgement within the SLA, dispatch, answer, close);
    #: ``None``: not loaded (a report built without the database).
    cases: tuple[CaseRow, ...] | None = None
    #: The city's acknowledgement SLA the cases were judged with (``[city] ack_sla_hours``).
    case_sla_hours: float = 2.0


# ---------------------------------------------------------------------------------------------- building


def _stop_seconds(o: Outlet, day: date) -> float:
    a = datetime.combine(day, time(0), BEIJING)
    b = a + timedelta(days=1)
    return sum(max(0.0, (min(b, s.end) - max(a, s.start)).total_seconds()) for s in o.stop)


def _rank_key(r: tuple[str, RateCounts]) -> tuple[int, float, str]:
    eff = r[1].effective_rate
    return (1, 0.0, r[0]) if eff is None else (0, -eff, r[0])


def _event_hours_in(ev: Event, start: datetime, end: datetime) -> float:
    a = ev.start
    b = a + timedelta(hours=float(ev.hours))
    if ev.end is not None and ev.end > b:
        b = ev.end
    sec = (min(b, end) - max(a, start)).total_seconds()
    return max(0.0, sec / 3600.0)


def build_report(
    registry: Registry,
    period: Period,
    records: Iterable[HourlyRecord],
    events: Iterable[Event],
    first_seen: Mapping[str, datetime] | None = None,
    *,
    until: datetime | None = None,
    grid: GridSection | None = None,
    emergency_events: Sequence[Event] = (),
    marks: Iterable[MarkRecord] = (),
    monthly: Iterable[MonthResult] = (),
) -> Report:
    """All the report's tables.

    ``records``: hourly records of the period (at least the assessed factors, plus every exceeding record
    of any factor: they decide the supervision by exceeding enterprises).  ``events``: events overlapping
    the period (only ``hourly_exceedance`` ones are used).  ``first_seen``: MN → time of its first hourly
    record ever (see the module docstring); records of the period are taken into account as well.
    ``until``: for a period still in progress, count only up to this time (the hours flushed so far).
    ``marks``: the mark records received up to the end of the period (issue 14; those of the year before the
    period too, for the caps): the rates count marked and repaired hours as the mark types say, exceedances
    closed as ``marked`` are left out, and the report shows them (:class:`MarksSection`).
    ``monthly``: the ``cems_monthly`` results of the months the period touches (shown as they are).
    """
    recs = list(records)
    first: dict[str, datetime] = dict(first_seen or {})
    for r in recs:
        f = first.get(r.mn)
        if f is None or r.hour_start < f:
            first[r.mn] = r.hour_start
    silent = {i.outlet.mn for i in registry.outlets() if i.outlet.mn not in first}
    reg = registry
    counter = RateCounter(reg)
    ledger = marks_ledger(reg, marks)
    counter.overlay = ledger
    counter.add_all(recs)
    start, end = period.start, period.end
    if until is not None and until < end:
        end = max(start, until)
    days = counter.outlet_days(start, end)
    months = counter.district_months(start, end)
    city = registry.city
    target = city.transmission_rate_target

    ent_names = {e.id: e.name for e in registry.enterprise}
    dist_names = {d.code: d.name for d in registry.district}

    # -- outlets
    per_outlet: dict[str, RateCounts] = {}
    per_outlet_days: dict[str, dict[date, OutletDayRate]] = {}
    for d in days:
        per_outlet[d.mn] = per_outlet.get(d.mn, RateCounts()) + RateCounts(d.expected, d.received, d.valid)
        per_outlet_days.setdefault(d.mn, {})[d.day] = d
    outlet_rows: list[OutletRow] = []
    infos = sorted(
        (i for i in reg.outlets() if i.outlet.mn in per_outlet),
        key=lambda i: (i.district.code, i.enterprise.name, i.enterprise.id, i.outlet.mn),
    )
    for info in infos:
        mn = info.outlet.mn
        c = per_outlet[mn]
        tr, vr, er = _rates(c)
        outlet_rows.append(
            OutletRow(
                mn=mn,
                outlet=info.outlet.name,
                enterprise_id=info.enterprise.id,
                enterprise=info.enterprise.name,
                district_code=info.district.code,
                district=info.district.name,
                expected=c.expected,
                received=c.received,
                valid=c.valid,
                transmission_rate=tr,
                validity_rate=vr,
                effective_rate=er,
                silent=mn in silent,
            )
        )
    below = sorted(
        (r for r in outlet_rows if r.effective_rate is not None and r.effective_rate < target),
        key=lambda r: (r.effective_rate, r.enterprise, r.mn),
    )

    # -- districts (sum RateCounter's monthly rows over the period)
    by_dist: dict[str, list[DistrictMonthRate]] = {}
    for m in months:
        by_dist.setdefault(m.district, []).append(m)
    outlets_in: dict[str, int] = {}
    for orow in outlet_rows:
        outlets_in[orow.district_code] = outlets_in.get(orow.district_code, 0) + 1
    sums = [
        (code, sum((RateCounts(m.expected, m.received, m.valid) for m in ms), RateCounts()))
        for code, ms in by_dist.items()
    ]
    dist_rows: list[DistrictRow] = []
    for rank, (code, c) in enumerate(sorted(sums, key=_rank_key), start=1):
        ms = by_dist[code]
        ents: list[str] = []
        for m in ms:
            ents.extend(e for e in m.exceeding_enterprises if e not in ents)
        reasons: list[str] = []
        for m in ms:
            reasons.extend(f"{m.month}: {r}" if len(ms) > 1 else r for r in m.reasons)
        tr, vr, er = _rates(c)
        dist_rows.append(
            DistrictRow(
                rank=rank,
                code=code,
                name=dist_names.get(code, code),
                outlets=outlets_in.get(code, 0),
                expected=c.expected,
                received=c.received,
                valid=c.valid,
                transmission_rate=tr,
                validity_rate=vr,
                effective_rate=er,
                exceeding_enterprises=tuple(ent_names.get(e, e) for e in ents),
                supervised=any(m.supervised for m in ms),
                reasons=tuple(reasons),
                months=tuple(ms),
            )
        )

    # -- exceedances per enterprise
    groups: dict[str, list[tuple[Event, float]]] = {}
    for ev in events:
        if ev.type != HOURLY_EXCEEDANCE or ev.status in (MARKED, RETRACTED_STATUS):
            continue
        h = _event_hours_in(ev, start, end)
        if h <= 0:
            continue
        groups.setdefault(ev.enterprise, []).append((ev, h))
    exc_rows: list[ExceedanceRow] = []
    for ent, evs in groups.items():
        by_p: dict[str, tuple[int, float]] = {}
        for ev, h in evs:
            n, hh = by_p.get(ev.pollutant or "", (0, 0.0))
            by_p[ev.pollutant or ""] = (n + 1, hh + h)

        def ratio(item: tuple[Event, float]) -> float:
            e = item[0]
            if e.peak is None or not e.limit or not math.isfinite(e.peak):
                return -math.inf
            return e.peak / e.limit

        worst = max(evs, key=ratio)[0]
        winfo = registry.outlet(worst.mn)
        district = dist_names.get(worst.district, worst.district)
        exc_rows.append(
            ExceedanceRow(
                enterprise_id=ent,
                enterprise=ent_names.get(ent, ent),
                district=district,
                events=len(evs),
                hours=sum(h for _, h in evs),
                by_pollutant=dict(sorted(by_p.items())),
                worst_mn=worst.mn,
                worst_outlet=winfo.outlet.name if winfo is not None else worst.mn,
                worst_pollutant=worst.pollutant,
                peak=worst.peak,
                limit=worst.limit,
            )
        )
    exc_rows.sort(key=lambda r: (-r.events, -r.hours, r.enterprise_id))

    # -- availability heat map
    avail: list[AvailabilityRow] = []
    for info in infos:
        mn = info.outlet.mn
        od = per_outlet_days.get(mn, {})
        cells: list[AvailabilityCell] = []
        for day in period.days:
            odr = od.get(day)
            if odr is None:
                cells.append(AvailabilityCell(mn, day, NOT_ASSESSED, 0, 0, 0, None))
                continue
            stopped = _stop_seconds(info.outlet, day) > 0
            state = DATA if not stopped else (STOP if odr.expected == 0 else PARTIAL_STOP)
            cells.append(AvailabilityCell(mn, day, state, odr.expected, odr.received, odr.valid, odr.effective_rate))
        avail.append(AvailabilityRow(mn, info.outlet.name, info.enterprise.name, info.district.name, tuple(cells)))

    total = sum((RateCounts(r.expected, r.received, r.valid) for r in dist_rows), RateCounts())
    tr, vr, er = _rates(total)
    summary = Summary(
        outlets=len(outlet_rows),
        outlets_meeting_target=sum(
            1 for r in outlet_rows if r.effective_rate is not None and r.effective_rate >= target
        ),
        outlets_below_target=len(below),
        silent_outlets=sum(1 for r in outlet_rows if r.silent),
        expected=total.expected,
        received=total.received,
        valid=total.valid,
        transmission_rate=tr,
        validity_rate=vr,
        effective_rate=er,
        districts=len(dist_rows),
        supervised_districts=sum(1 for r in dist_rows if r.supervised),
        exceedance_events=sum(r.events for r in exc_rows),
        exceeding_enterprises=len(exc_rows),
        exceedance_hours=sum(r.hours for r in exc_rows),
    )

    return Report(
        city=city.name,
        period=period,
        end=end,
        target=target,
        enterprise_threshold=city.supervision_enterprise_threshold,
        factors=counter.factors,
        summary=summary,
        districts=tuple(dist_rows),
        outlets=tuple(outlet_rows),
        below_target=tuple(below),
        exceedances=tuple(exc_rows),
        availability=tuple(avail),
        outlet_days=tuple(days),
        grid=grid,
        warnings=warning_rows(registry, emergency_events, period.start, end),
        marks=marks_section(reg, ledger, start, end),
        monthly=_monthly_rows(registry, monthly),
    )


def _monthly_rows(registry: Registry, months: Iterable[MonthResult]) -> tuple[MonthlyRow, ...]:
    rows: list[MonthlyRow] = []
    for mr in months:
        info = registry.outlet(mr.mn)
        if info is None:
            continue
        rows.append(MonthlyRow(info.district.name, info.enterprise.name, info.outlet.name, mr))
    rows.sort(key=lambda r: (r.district, r.enterprise, r.result.mn, r.result.month, r.result.pollutant))
    return tuple(rows)
