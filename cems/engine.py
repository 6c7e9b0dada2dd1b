"""The compliance engine: the rules of :mod:`cems.rules` composed per outlet.  Pure (no I/O, no clock reads).

The live service and ``cems replay`` drive the same engine, so they give the same results for the same
data, whatever their arrival order (event time, issue 12 item 1).  Feed accepted readings with
:meth:`ComplianceEngine.on_reading` / :meth:`on_readings`; advance time with :meth:`on_clock` (live: the wall
clock; replay: not used) and :meth:`finish` (replay: end of input).  Each call returns what changed: hourly
records (first emitted, or revised by late data: the same keys, so a store rewrites them) and event updates
(late ones marked ``late``).  Per outlet an hour is provisional until its repair deadline
(:func:`cems.rules.hourly.repair_deadline`); the module docstring of :mod:`cems.rules.hourly` says what is
kept in memory and what late data beyond it count as.  Live, the service gives its clock with every batch
(``on_readings(..., now=)``): a reading of an hour past its repair deadline at that clock is counted
(``late_beyond_window``) and fed to no rule, whatever the clock ticks before it (a new outlet's back-fill too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from cems.model import BEIJING, Reading, Stream, beijing_ts
from cems.protocol.mark import ACCEPTED, WITHDRAWAL, MarkRecord
from cems.registry import OutletInfo, Quality, Registry
from cems.rules import (
    DEFAULT_HOLD,
    DEFAULT_LATENESS,
    REPAIR_WINDOW,
    Event,
    EventUpdate,
    ExceedanceTracker,
    HourlyRecord,
    InterruptionTracker,
    LimitSchedule,
    O2InvalidTracker,
    OutletHourly,
    RateCounter,
    RealtimeWarningTracker,
    limit_key,
)
from cems.rules.daily import DailyRecord, MonthResult, OutletDaily
from cems.rules.emergency import WarningHistory, WarningPeriod
from cems.rules.emergency_tracker import EmergencyMonitor, with_mandated_stops
from cems.rules.events import _NEVER_H
from cems.rules.hourly import HourArchive, final_before
from cems.rules.marks import MarkLedger, OutletMarks, repair_record
from cems.rules.monthly import OutletMonthly
from cems.rules.nox import with_derived_nox
from cems.rules.quality import QualityTracker

STATE_VERSION = 1
_NO_CLOCK = -(1 << 62)
_S_DAY = Stream.DAY  # (a module global: cheaper than the enum attribute, issue 20)
_DAY_S = 86400
_BJ_S = 8 * 3600  # Beijing time: UTC+8, no DST


@dataclass
class EngineOutput:
    """What one engine call produced."""

    hourly: list[HourlyRecord] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)
    #: Closed days (daily means, issue 12 item 9), first or revised.
    daily: list[DailyRecord] = field(default_factory=list)
    #: Closed months (month validity, monthly rules), first or revised until final (:mod:`cems.rules.monthly`).
    monthly: list[MonthResult] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.hourly.extend(other.hourly)
        self.events.extend(other.events)
        self.daily.extend(other.daily)
        self.monthly.extend(other.monthly)

    def __bool__(self) -> bool:
        return bool(self.hourly or self.events or self.daily or self.monthly)


class _OutletEngine:
    """The rules of one outlet.

    Memory (issue 20): the trackers that only hourly records feed (exceedances, ``o2_invalid``, marks) are
    made with the outlet's first closed hour (or mark), not with its first reading: an outlet that has not
    closed an hour yet (100 000 outlets after a start, each with a reading) does without the three objects
    (≈ 350 bytes).  Until then the only thing they would have been given is the clock (``on_clock``, which
    without records only moves their decided hour forward): the latest such time is kept (``_until``) and
    given to them when they are made, so they are what they would have been; a snapshot shows them as such
    (same bytes as before), and a restored state in which they are untouched keeps them unmade."""

    __slots__ = (
        "_exceedance",
        "_marks",
        "_o2",
        "_until",
        "daily",
        "hourly",
        "info",
        "interruption",
        "monthly",
        "quality",
        "warnings",
    )

    def __init__(
        self,
        info: OutletInfo,
        lateness: timedelta,
        schedule: LimitSchedule,
        journal: bool,
        max_o2: float,
        over_range_valid: bool,
        hold: timedelta = DEFAULT_HOLD,
        archive: HourArchive | None = None,
        quality: Quality | None = None,
    ) -> None:
        o, e, d = info.outlet, info.enterprise.id, info.district.code
        self.info = info
        t_ok = over_range_valid
        self.hourly = OutletHourly(
            o,
            lateness=lateness,
            schedule=schedule,
            journal=journal,
            max_o2=max_o2,
            over_range_valid=t_ok,
            hold=hold,
            archive=archive,
        )
        self._exceedance: ExceedanceTracker | None = None  # made with the first hourly record (see above)
        self._o2: O2InvalidTracker | None = None
        self._marks: OutletMarks | None = None
        #: The latest time given to ``on_clock`` while the three above were not made (``None``: none).
        self._until: datetime | None = None
        self.warnings = RealtimeWarningTracker(o, e, d, schedule=schedule, max_o2=max_o2, over_range_valid=t_ok)
        self.interruption = InterruptionTracker(o, e, d)
        self.daily = OutletDaily(o, e, d, schedule=schedule, max_o2=max_o2, archive=archive)
        self.monthly = OutletMonthly(o.mn)
        self.quality = QualityTracker(o, e, d, quality=quality, schedule=schedule, max_o2=max_o2, hold=hold)

    def _new_judging(self) -> tuple[ExceedanceTracker, O2InvalidTracker, OutletMarks]:
        """The exceedance, ``o2_invalid`` and marks trackers as they are before the first hourly record."""
        o, e, d = self.info.outlet, self.info.enterprise.id, self.info.district.code
        ex = ExceedanceTracker(o.mn, e, d)
        o2 = O2InvalidTracker(o.mn, e, d, max_o2=self.hourly.max_o2)
        if self._until is not None:  # without records, on_clock only moves the decided hour: no events
            ex.on_clock(self._until)
            o2.on_clock(self._until)
        return ex, o2, OutletMarks(o.mn, e, d, self.hourly.schedule, o.normal_flow)

    def _judging(self) -> tuple[ExceedanceTracker, O2InvalidTracker, OutletMarks]:
        ex, o2, marks = self._exceedance, self._o2, self._marks
        if ex is None or o2 is None or marks is None:
            ex, o2, marks = self._exceedance, self._o2, self._marks = self._new_judging()
            self._until = None
        return ex, o2, marks

    @property
    def judging(self) -> bool:
        """Whether the exceedance, ``o2_invalid`` and marks trackers are made."""
        return self._exceedance is not None

    @property
    def exceedance(self) -> ExceedanceTracker:
        return self._exceedance or self._judging()[0]

    @property
    def o2(self) -> O2InvalidTracker:
        return self._o2 or self._judging()[1]

    @property
    def marks(self) -> OutletMarks:
        return self._marks or self._judging()[2]

    def clock_unjudged(self, decided: datetime) -> None:
        """``on_clock(decided)`` for the trackers not made yet (kept for when they are)."""
        if self._until is None or decided > self._until:
            self._until = decided

    def snapshot(self, *, open_hours: bool = True) -> dict[str, Any]:
        ex, o2, marks = self._exceedance, self._o2, self._marks
        if ex is not None and o2 is not None and marks is not None:
            ex_s, o2_s, marks_s = ex.snapshot(), o2.snapshot(), marks.snapshot()
        else:  # the states of the trackers _new_judging would make, without making them (issue 20: CPU)
            mn = self.info.outlet.mn
            ex_s = ExceedanceTracker.untouched_snapshot(mn, self._until)
            o2_s = O2InvalidTracker.untouched_snapshot(mn, self._until)
            marks_s = None  # (OutletMarks.snapshot of a tracker without marks or raw hours)
        return {
            "hourly": self.hourly.snapshot(open_hours=open_hours),
            "exceedance": ex_s,
            "o2_invalid": o2_s,
            "warnings": self.warnings.snapshot(),
            "interruption": self.interruption.snapshot(),
            "daily": self.daily.snapshot(),
            "marks": marks_s,
            "monthly": self.monthly.snapshot(),
            "quality": self.quality.snapshot(),
        }

    def restore(self, s: dict[str, Any]) -> None:
        self.hourly.restore(s["hourly"])
        until = self._untouched(s) if self._exceedance is None else False
        if until is False:
            self.exceedance.restore(s["exceedance"])
            if "o2_invalid" in s:  # absent from states saved before the o2_invalid event existed
                self.o2.restore(s["o2_invalid"])
            self.marks.restore(s.get("marks"))  # absent from states saved before marks (issue 14)
        else:  # the three trackers stay unmade, as they were when the state was saved
            self._until = until
        self.warnings.restore(s["warnings"])
        self.interruption.restore(s["interruption"])
        if "daily" in s:  # absent from states saved before daily values existed
            self.daily.restore(s["daily"])
        if "monthly" in s:  # absent from states saved before live monthly results
            self.monthly.restore(s["monthly"])
        if "quality" in s:  # absent from states saved before the data-quality signals existed
            self.quality.restore(s["quality"])

    def _untouched(self, s: dict[str, Any]) -> datetime | Literal[False] | None:
        """The ``_until`` that gives the exceedance, ``o2_invalid`` and marks states of ``s`` when they are
        those of trackers that never had a record or a mark (``None``: never clocked either); ``False`` when
        they are not (the trackers are made and restored)."""
        if s.get("marks") or "o2_invalid" not in s:
            return False
        mn, decided = self.info.outlet.mn, None
        for state, kind in ((s["exceedance"], ExceedanceTracker.KIND), (s["o2_invalid"], O2InvalidTracker.KIND)):
            if (
                state.get("version") != 2
                or state.get("kind") != kind
                or state.get("mn") != mn
                or state.get("hits")
                or state.get("events")
                or state.get("latest_keys")
                or state.get("latest") != _NEVER_H
                or state.get("clock") != state.get("decided")
                or (decided is not None and state.get("decided") != decided)
                or not isinstance(state.get("decided"), int)
            ):
                return False
            decided = state["decided"]
        if decided == _NEVER_H:
            return None
        assert decided is not None
        if decided % 3600:
            return False
        return datetime.fromtimestamp(decided, BEIJING)


def _data_ts(item: tuple[Reading, OutletInfo]) -> float:
    """A batch item's sort key: its data time as epoch seconds (the order of the datetimes, for the aware data
    times of readings; a naive one is Beijing time)."""
    return beijing_ts(item[0].data_time)


def merge_parts(items: list[tuple[Reading, OutletInfo]]) -> list[tuple[Reading, OutletInfo]]:
    """Merge readings of one record that arrived in parts (HJ 212 split packets, PNUM/PNO, or a DAS sending
    one code per message): same outlet, stream and data time → one reading with all codes, so the rules see
    O2 and the pollutants together.  ``items`` must be sorted by data time; the order is kept."""
    out: list[tuple[Reading, OutletInfo]] = []
    i, n = 0, len(items)
    # (CPU, issue 20: the data times as epoch seconds, remembered per datetime object; two aware datetimes of
    # different tzinfo objects, HJ 212's and JSON's, compare in ≈ 7 500 instructions; the stream as the enum,
    # whose .value costs ≈ 1 800)
    while i < n:
        j = i + 1
        t = beijing_ts(items[i][0].data_time)
        while j < n and beijing_ts(items[j][0].data_time) == t:
            j += 1
        if j == i + 1:
            out.append(items[i])
        else:
            run: dict[tuple[str, Stream], tuple[Reading, OutletInfo]] = {}
            for r, info in items[i:j]:
                key = (r.mn, r.stream)
                prev = run.get(key)
                if prev is None:
                    run[key] = (r, info)
                else:
                    merged = {**prev[0].measurements, **r.measurements}
                    run[key] = (replace(prev[0], measurements=merged), info)
            out.extend(run.values())
        i = j
    return out


class ComplianceEngine:
    """Hourly records, exceedances, O2-invalid hours, real-time warnings, data interruptions and transmission
    counts."""

    def __init__(
        self,
        registry: Registry,
        *,
        lateness: timedelta = DEFAULT_LATENESS,
        journal: bool = True,
        hold: timedelta = DEFAULT_HOLD,
        warnings: WarningHistory | None = None,
        archive: HourArchive | None = None,
    ) -> None:
        """``warnings``: the city's heavy-pollution warning history (issue 16; live: updated with
        :meth:`set_warnings`).
        ``journal``: keep what each reading adds to the open hours for :meth:`take_changes` (the live
        service persists it); ``cems replay`` persists nothing and turns it off.  ``hold``: how long an
        emitted hour keeps its sub-values in memory after its end (:mod:`cems.rules.hourly`).  ``archive``: where
        they go then, until the repair deadline, so that late data still revise the hour exactly (``None``:
        nowhere; such late data are counted ``late_unrevised``)."""
        self.registry = registry
        self.archive = archive
        self.lateness = lateness
        self.hold = hold
        self.journal = journal
        #: The heavy-pollution checks of the emergency lists (issue 16, :mod:`cems.rules.emergency_tracker`).
        self.emergency = EmergencyMonitor(registry, warnings)
        #: The registry with the mandated stops (错峰 windows, stop measures during warnings) added to the
        #: declared stops: their hours are not expected (90 % rule) and their silence is no interruption.
        self._stopped = self._with_stops(registry)
        self.rates = RateCounter(self._stopped)
        #: Marks, stop declarations and repairs of every outlet (issue 14), applied downstream of the hourly
        #: records: to the exceedance judgement (:meth:`on_mark`) and to the rates (the counter's overlay).
        self.marks = MarkLedger(registry)
        self.rates.overlay = self.marks
        #: Which mark exempts an outlet's hour from judgement: one callable shared by every outlet's daily and
        #: monthly rules (a ``partial`` per outlet was ≈ 200 B of it, issue 20).
        self._exempt = partial(_exempting, self.marks)
        self._outlets: dict[str, _OutletEngine] = {}
        #: One limit schedule per distinct limit configuration (:func:`~cems.rules.limits.limit_key`), shared
        #: by the outlets that have it (memory: a schedule and its cached limits per outlet add up).
        self._schedules: dict[Hashable, LimitSchedule] = {}
        #: Outlets whose state changed since :meth:`take_changes` was last called (incremental persistence).
        self._dirty: set[str] = set()
        #: Told, before a call changes any outlet's state, which outlets it may change (``None``: any): the
        #: service's copy-on-write of the states a commit took (:meth:`take_changes`) and serialises after
        #: letting the engine go (issue 20, alert latency). Every public call that changes an outlet's state
        #: calls it first; ``None``: nobody to tell.
        self.before_change: Callable[[Collection[str] | None], None] | None = None
        #: The service's clock as last given (:meth:`on_clock`, or ``now`` with a batch; epoch s): data of an hour
        #: whose repair deadline it has reached are refused before any rule (see :meth:`_beyond_window`).  Never
        #: given in ``cems replay`` (no wall clock: the data time stands for it, per outlet, in the rules).
        self._clock = _NO_CLOCK
        #: Every hour starting before this (epoch s) is past its repair deadline at ``_clock``.
        self._final_before = _NO_CLOCK

    def _set_clock(self, now: datetime) -> None:
        """The service's clock is ``now`` (it never goes back: an hour once final stays final)."""
        ts = math.floor(beijing_ts(now))
        if ts <= self._clock:
            return
        self._clock = ts
        self._final_before = final_before(ts)

    def _beyond_window(self, reading: Reading) -> bool:
        """Whether ``reading``'s hour (a daily record's: its day's last hour, as :mod:`cems.rules.daily` takes it)
        is past its repair deadline at the service's clock: it then changes no figure (DOMAIN.md §5)."""
        if self._clock == _NO_CLOCK:
            return False
        ts = math.floor(beijing_ts(reading.data_time))
        if reading.stream is _S_DAY:
            ts += _DAY_S - (ts + _BJ_S) % _DAY_S - 3600  # the day's last hour (Beijing day)
        return ts - ts % 3600 < self._final_before

    def _with_stops(self, registry: Registry) -> Registry:
        if not self.emergency.active:
            return registry
        return with_mandated_stops(registry, self.emergency.history, self.emergency.plans)

    def set_warnings(self, history: WarningHistory, new: list[WarningPeriod] | None = None) -> EngineOutput:
        """A new warning history (an operator set a level, issue 16): ``warning_level`` events for ``new``,
        the kept hours of the emergency lists judged again, and the mandated stops recomputed for the 90 % rule
        (data interruptions keep the stops they were created with until a restart)."""
        if self.before_change is not None:
            self.before_change(None)
        out = EngineOutput()
        out.events.extend(self.emergency.set_history(history, new or []))
        if self.emergency.active:
            self._stopped = self._with_stops(self.registry)
            self.rates.registry = self._stopped
        return out

    def _outlet(self, info: OutletInfo) -> _OutletEngine:
        oe = self._outlets.get(info.outlet.mn)
        if oe is None:
            if self._stopped is not self.registry:  # the outlet with its mandated stops (issue 16)
                info = self._stopped.outlet(info.outlet.mn) or info
            o = info.outlet
            key = limit_key(o)
            schedule = self._schedules.get(key)
            if schedule is None:
                schedule = self._schedules[key] = LimitSchedule(o)
            max_o2 = o.o2_max if o.o2_max is not None else self.registry.city.o2_max
            t_ok = self.registry.city.over_range_valid
            oe = self._outlets[o.mn] = _OutletEngine(
                info,
                self.lateness,
                schedule,
                self.journal,
                max_o2,
                t_ok,
                self.hold,
                self.archive,
                self.registry.city.quality,
            )
            oe.daily.exempt = self._exempt  # marked hours out of daily judgement
            oe.monthly.exempt = self._exempt  # and out of the monthly rule
        return oe

    def _hours(self, oe: _OutletEngine, records: list[HourlyRecord], out: EngineOutput) -> None:
        ledger = self.marks
        for rec in records:
            out.hourly.append(rec)
            self.rates.add(rec)
            ups = oe.exceedance.on_hour(oe.marks.judge(rec, ledger))
            if ups:
                out.events.extend(oe.marks.tag(ups, ledger))
        if records:
            em = self.emergency
            o2recs = oe.marks.judge_o2(records, ledger)  # hours marks exempt are no o2_invalid (issue 14)
            if em.power:  # power meters (kW) are not concentrations: no O2 correction, no o2_invalid
                out.events.extend(oe.o2.on_records([r for r in o2recs if not em.is_power_code(r.mn, r.pollutant)]))
            else:
                out.events.extend(oe.o2.on_records(o2recs))
            if em.active:
                out.events.extend(em.on_records(records))
            sus = ledger.catalog.suspicious
            if oe.marks.observe(records, sus.flow_share, sus.o2_below) and ledger.active(oe.info.outlet.mn):
                out.events.extend(oe.marks.mark_events(ledger))
            oe.monthly.on_hours(records)
            out.events.extend(oe.quality.on_hours(records))
            self._days(oe, oe.daily.on_hours(records), out)
            # runs that ended before the repair window can no longer change: forget them (bounded memory)
            cut = oe.hourly.now_ts - int(REPAIR_WINDOW.total_seconds()) - 3600
            if oe.exceedance.has_events or oe.o2.has_events:
                b = datetime.fromtimestamp(cut, BEIJING)
                oe.exceedance.prune(b)
                oe.o2.prune(b)
            oe.marks.prune(cut)
            oe.quality.prune(datetime.fromtimestamp(cut, BEIJING))

    @staticmethod
    def _days(oe: _OutletEngine, days: list[DailyRecord], out: EngineOutput) -> None:
        if days:
            out.daily.extend(days)
            out.events.extend(oe.daily.exceedances(days))
            oe.monthly.on_days(days)
        out.monthly.extend(oe.monthly.close(oe.daily.closed_before_day))

    def _feed(self, reading: Reading, info: OutletInfo | None, out: EngineOutput, revise: bool) -> _OutletEngine | None:
        info = info or self.registry.outlet(reading.mn)
        if info is None:
            return None
        oe = self._outlets.get(info.outlet.mn) or self._outlet(info)
        self._dirty.add(reading.mn)
        if self._beyond_window(reading):
            # past its repair deadline at the service's clock: stored by the caller, counted, judged by no rule
            oe.hourly.late_beyond_window += 1
            return None
        reading = with_derived_nox(reading, oe.hourly.factors)  # NOx = NO × 46/30 + NO2 when NOx is not sent
        ups = oe.interruption.on_data(reading.data_time, reading.stream)
        if ups:
            out.events.extend(ups)
        if self.emergency.active:
            self.emergency.on_reading(reading)
        oe.daily.on_reading(reading)
        oe.quality.on_reading(reading)
        records = oe.hourly.feed(reading)
        if records:
            self._hours(oe, records, out)
        if revise:
            records = oe.hourly.revisions()
            if records:
                self._hours(oe, records, out)
        ups = oe.warnings.on_reading(reading)
        if ups:
            out.events.extend(ups)
        return oe

    def on_reading(
        self, reading: Reading, info: OutletInfo | None = None, *, now: datetime | None = None
    ) -> EngineOutput:
        """Feed one accepted reading (any order: late data revise the hours they belong to).  ``now``: live, the
        service's clock when it judges the reading (the clock of :meth:`on_clock`): a reading whose hour is past
        its repair deadline then is counted (``late_beyond_window``) and changes nothing."""
        if self.before_change is not None:
            self.before_change((reading.mn,))
        out = EngineOutput()
        if now is not None:
            self._set_clock(now)
        self._feed(reading, info, out, True)
        return out

    def on_readings(self, items: list[tuple[Reading, OutletInfo]], *, now: datetime | None = None) -> EngineOutput:
        """Feed a batch (sorted by data time here); hours revised by late data are rebuilt once per batch.
        ``now``: as for :meth:`on_reading`."""
        if self.before_change is not None:
            self.before_change({r.mn for r, _ in items})
        out = EngineOutput()
        if now is not None:
            self._set_clock(now)
        touched: dict[str, _OutletEngine] = {}
        for reading, info in merge_parts(sorted(items, key=_data_ts)):
            oe = self._feed(reading, info, out, False)
            if oe is not None:
                touched[reading.mn] = oe
        for oe in touched.values():
            records = oe.hourly.revisions()
            if records:
                self._hours(oe, records, out)
        return out

    def on_mark(self, rec: MarkRecord) -> EngineOutput:
        """A mark, stop declaration, repair or withdrawal, accepted (:meth:`cems.rules.marks.MarkLedger.check`)
        and stored by the caller: exceedances revised (runs the marks remove are closed as ``marked``), a
        repair's hourly record (source ``repair``), ``mark_cap_exceeded`` / ``mark_suspicious``.  The rates
        follow through the counter's overlay.  A record already known changes nothing."""
        if self.before_change is not None:
            self.before_change((rec.mn,))
        out = EngineOutput()
        info = self.registry.outlet(rec.mn)
        if info is None:
            return out
        oe = self._outlet(info)
        target = self.marks.get(rec.mn, rec.target) if rec.kind == WITHDRAWAL and rec.target else None
        if not self.marks.add(rec):
            return out
        self._dirty.add(rec.mn)
        repair = rec if rec.kind == "repair" else target if target is not None and target.kind == "repair" else None
        if repair is not None and repair.status == ACCEPTED:
            out.hourly.append(repair_record(repair, oe.marks.schedule, withdrawn=rec.kind == WITHDRAWAL))
        out.events.extend(oe.marks.refresh(self.marks, oe.exceedance))
        out.events.extend(oe.marks.refresh_o2(self.marks, oe.o2))
        span = target if target is not None else rec
        oe.monthly.remark(span.start, span.end)  # closed months judged again (returned by _days' close)
        self._days(oe, oe.daily.remark(span.start, span.end), out)  # daily exceedances over marked hours
        out.events.extend(oe.marks.mark_events(self.marks))
        oe.interruption.set_marked_stops(self.marks.stop_spans(rec.mn))
        return out

    def mark_archived_wanted(self, rec: MarkRecord) -> set[tuple[str, int]]:
        """The archive keys of the closed days a mark (or the record a withdrawal takes back) touches, to load
        before :meth:`on_mark` (live: off the event loop), so that their daily judgement is revised."""
        oe = self._outlets.get(rec.mn)
        if oe is None:
            return set()
        target = self.marks.get(rec.mn, rec.target) if rec.kind == WITHDRAWAL and rec.target else None
        span = target if target is not None else rec
        return oe.daily.archived_days(span.start, span.end)

    def load_marks(self, records: list[MarkRecord]) -> None:
        """Restart: the stored records back into the ledger (their effects on judgement are in the restored
        outlet states; the stops they document are given to the interruption trackers again)."""
        if self.before_change is not None:
            self.before_change(None)
        self.marks.load(records)
        for mn in {r.mn for r in records}:
            info = self.registry.outlet(mn)
            if info is not None:
                self._outlet(info).interruption.set_marked_stops(self.marks.stop_spans(mn))

    def archived_wanted(self, items: list[tuple[Reading, OutletInfo]]) -> set[tuple[str, int]]:
        """(MN, hour) of the evicted hours that these readings revise, to load from the archive before
        feeding them (live: the archive is read off the event loop; :class:`cems.rules.hourly.HourArchive`)."""
        want: set[tuple[str, int]] = set()
        if self.archive is None:
            return want
        for reading, _ in items:
            oe = self._outlets.get(reading.mn)
            if oe is not None and not self._beyond_window(reading):
                h = oe.hourly.archived_wanted(reading)
                if h is not None:
                    want.add((reading.mn, h))
                day = oe.daily.archived_wanted(reading)  # a closed day this reading may revise
                if day is not None:
                    want.add(day)
        return want

    @property
    def changed_outlets(self) -> int:
        """How many outlets changed since :meth:`take_changes` was last called (the next commit's size, issue 20)."""
        return len(self._dirty)

    def late_counts(self) -> dict[str, int]:
        """Readings that arrived after their hour was emitted, over every outlet: merged (``late_readings``),
        not merged because the hour had left memory (``late_unrevised``), after the repair deadline
        (``late_beyond_window``)."""
        c = {"late_readings": 0, "late_unrevised": 0, "late_beyond_window": 0}
        for oe in self._outlets.values():
            h = oe.hourly
            c["late_readings"] += h.late_readings
            c["late_unrevised"] += h.late_unrevised
            c["late_beyond_window"] += h.late_beyond_window
        return c

    def on_clock(self, now: datetime) -> EngineOutput:
        """Live: emit hours that ended ``lateness`` before ``now``, detect silence and stale warnings."""
        if self.before_change is not None:
            self.before_change(None)
        out = EngineOutput()
        self._set_clock(now)
        decided = now - self.lateness
        events = out.events
        for mn, oe in self._outlets.items():
            before = len(out.hourly) + len(events) + len(out.daily) + len(out.monthly)
            records = oe.hourly.advance(now)
            if records:
                self._hours(oe, records, out)
            closed = oe.hourly.closed_before
            if closed is not None:  # a day closes once all its hours are closed
                self._days(oe, oe.daily.flush(closed), out)
            if oe.judging:
                ups = oe.exceedance.on_clock(decided)
                if ups:
                    events.extend(oe.marks.tag(ups, self.marks))
                ups = oe.o2.on_clock(decided)
                if ups:
                    events.extend(ups)
            else:
                oe.clock_unjudged(decided)
            for ups in (
                oe.quality.on_clock(decided),
                oe.interruption.on_clock(now),
                oe.warnings.on_clock(now),
            ):
                if ups:
                    events.extend(ups)
            if len(out.hourly) + len(events) + len(out.daily) + len(out.monthly) != before:
                self._dirty.add(mn)
        if self.emergency.active:
            out.events.extend(self.emergency.on_clock(now - self.lateness))
        return out

    def finish(self) -> EngineOutput:
        """Replay: the input has ended; close every open hour (events still running stay open)."""
        if self.before_change is not None:
            self.before_change(None)
        out = EngineOutput()
        for oe in self._outlets.values():
            self._hours(oe, oe.hourly.flush(), out)
            self._days(oe, oe.daily.flush(), out)
            out.monthly.extend(oe.monthly.close(None))
        return out

    def open_events(self) -> list[Event]:
        evs: list[Event] = []
        for oe in self._outlets.values():
            if oe.judging:
                evs += oe.exceedance.open_events + oe.o2.open_events
            evs += oe.warnings.open_events
            if oe.judging:
                evs += oe.marks.open_events
            evs += oe.quality.open_events
            ev = oe.interruption.open_event
            if ev is not None:
                evs.append(ev)
        return evs + self.emergency.open_events

    # -- persistence ------------------------------------------------------------------------------------
    def take_changes(self) -> dict[str, tuple[Callable[[], dict[str, Any]], list[tuple[Any, ...]], int]]:
        """Incremental persistence: per outlet changed since the last call, a function giving its state
        without the open hours' sub-values (called at commit time, while the engine is not being fed, so
        that a commit of many outlets never holds all their states at once), the sub-values added
        (``OutletHourly.take_journal``), and the closed-hour mark (persisted sub-values of hours before it
        can be deleted)."""
        out: dict[str, tuple[Callable[[], dict[str, Any]], list[tuple[Any, ...]], int]] = {}
        em = self.emergency
        for mn in self._dirty | em.take_dirty():
            oe = self._outlets.get(mn)
            if oe is not None:
                snap = partial(oe.snapshot, open_hours=False)
                if em.watches(mn):  # the outlet's part of the emergency checks (issue 16) in the same row
                    snap = partial(_with_emergency, snap, em, mn)
                out[mn] = (snap, oe.hourly.take_journal(), oe.hourly.retain_from_ts)
        self._dirty.clear()
        return out

    def restore_outlet(self, mn: str, state: dict[str, Any]) -> None:
        if self.before_change is not None:
            self.before_change((mn,))
        info = self.registry.outlet(mn)
        if info is not None:
            self._outlet(info).restore(state)
            em = state.get("emergency")
            if em is not None and self.emergency.watches(mn):
                self.emergency.restore_outlet(mn, em)


def _exempting(ledger: MarkLedger, mn: str, hour: int, raw: Mapping[str, float | None]) -> str | None:
    """The id of the mark that exempts ``mn``'s ``hour`` from exceedance judgement (issue 14), or ``None``."""
    if not ledger.active(mn):
        return None
    rec = ledger.exempting(mn, hour, raw)
    return None if rec is None else rec.record_id


def _with_emergency(snap: Callable[[], dict[str, Any]], em: EmergencyMonitor, mn: str) -> dict[str, Any]:
    return {**snap(), "emergency": em.snapshot_outlet(mn)}
