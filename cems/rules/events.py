"""Event state machines: exceedances, real-time warnings and data interruptions (DOMAIN.md §3, §5).

Deterministic (no clock reads: live time comes in through ``on_clock``), with stable ids
(:attr:`Event.event_id` = sha1 of type, MN, pollutant and start), and with ``snapshot()``/``restore()`` of
their state as JSON-able dicts so that a restarted service neither duplicates an event nor loses its close.

* ``hourly_exceedance`` (超标, HJ 76-2017: the 1-h corrected mean above the limit): a maximal run of
  consecutive hours whose :class:`~cems.rules.hourly.HourlyRecord` ``exceeds``; any other hour (compliant,
  invalid, flagged, missing) ends it.  ``end`` is the start of the first non-exceeding hour.
* ``realtime_warning`` (预警; a real-time value above the limit is an early warning, not an exceedance,
  DOMAIN.md §3): debounced, one event per episode.
* ``data_interruption`` (数据中断, DOMAIN.md §5): silence longer than the outlet's threshold outside
  declared stops.  The default threshold follows the outlet's inferred cadence (issue 12 item 6):
  ``max(10 min, 3 × cadence)``, the cadence being the median of its recent data-time gaps
  (:class:`cems.rules.cadence.RecentGaps`), so a DAS that sends only hourly records is interrupted after
  three hours without one, not every hour.
* ``o2_invalid``: a maximal run of hours in which a concentration had valid data of its own but no valid
  corrected value, because the O2 hour was missing, not valid, ≥ 21 % or above the dilution cut-off (issue 12
  item 2: such hours are not valid, so they count against the 90 % rule, and they must be seen, since
  diluting the flue gas with air would otherwise hide every exceedance).  Pollutant: ``a19001``; ``peak``: the
  highest O2 hourly mean of the run; ``limit``: the dilution cut-off (% O2).

Every method returns a list of :class:`EventUpdate` (``opened``/``updated``/``closed``) carrying an
immutable :class:`Event` snapshot.  Times in events are Beijing time (+08:00); ``end`` is exclusive.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from cems.model import BEIJING, O2, Reading, Stream, beijing_ts
from cems.registry import Outlet
from cems.rules._shared import SharedSettings
from cems.rules.cadence import STREAM_HINT_S, RecentGaps
from cems.rules.hourly import HourlyRecord, is_concentration, unit_factors
from cems.rules.limits import LimitSchedule
from cems.rules.o2 import DEFAULT_MAX_O2, correct

#: The streams as module constants: ``Stream.RTD`` (an enum class attribute) costs ≈ 950 instructions a look-up,
#: a module global ≈ 40 (callgrind; several per reading, issue 20)
_S_RTD: Final = Stream.RTD

HOURLY_EXCEEDANCE: Final = "hourly_exceedance"
REALTIME_WARNING: Final = "realtime_warning"
DATA_INTERRUPTION: Final = "data_interruption"
O2_INVALID: Final = "o2_invalid"

OPENED: Final = "opened"
UPDATED: Final = "updated"
CLOSED: Final = "closed"
#: A run reported earlier that late data made disappear (merged into an earlier run, or revised below the
#: limit): its event gets status ``retracted`` (issue 12 item 1; docs/events.md).
RETRACTED: Final = "retracted"
RETRACTED_STATUS: Final = "retracted"

_N_FLAGS: Final = frozenset({None, "N", "n"})
_T_FLAGS: Final = frozenset({"T", "t"})
#: Valid flags when over-range values count (one set shared by every tracker: a union per tracker is ≈ 230 B).
_NT_FLAGS: Final = _N_FLAGS | _T_FLAGS
#: The shared empty ``_latest_keys`` of a tracker that has judged no hour yet (a set is made on the first).
_NO_KEYS: Final[frozenset[str]] = frozenset()
_NEVER_H: Final = -(1 << 62)

#: An exceeding hour: (corrected value, limit, reference O2, profile).
_Hit = tuple[float | None, float | None, float | None, str | None]


_CONC_ORDER: dict[tuple[str, ...], tuple[str, ...]] = {}


def _conc_codes(ms: Mapping[str, Any]) -> tuple[str, ...]:
    """The concentration codes of a reading's measurements, sorted (cached per code list: a DAS sends the same
    codes in the same order reading after reading)."""
    key = tuple(ms)
    got = _CONC_ORDER.get(key)
    if got is None:
        got = tuple(c for c in sorted(ms) if is_concentration(c))
        if len(_CONC_ORDER) < 10_000:
            _CONC_ORDER[key] = got
    return got


#: Epoch seconds of a datetime, naive: Beijing time (remembered for the last aware one: per reading, CPU)
_ts: Final = beijing_ts


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, BEIJING)


def event_id(type_: str, mn: str, pollutant: str | None, start: datetime) -> str:
    """Stable id: sha1 hex[:16] of ``type|mn|pollutant|start`` (start as ISO 8601 in Beijing time)."""
    iso = start.astimezone(BEIJING).isoformat()
    return hashlib.sha1(f"{type_}|{mn}|{pollutant or ''}|{iso}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Event:
    """One event.  ``hours``: run length for exceedances; duration in hours (so far, while open) otherwise."""

    type: str
    mn: str
    enterprise: str
    district: str
    pollutant: str | None
    start: datetime
    end: datetime | None
    hours: float
    peak: float | None
    limit: float | None
    ref_o2: float | None
    profile: str | None
    status: str  # "open" | "closed" | "retracted"
    #: Changed by data that arrived after the hours concerned were decided (a late CN=2061, back-filled
    #: data): the event was opened, extended, reopened, closed or retracted late (docs/events.md).
    late: bool = False
    #: Ids of the marks, declarations or repairs (issue 14; :mod:`cems.rules.marks`) that touched the event.
    marks: tuple[str, ...] = ()
    #: What triggered a data-quality signal (issue 17, :mod:`cems.rules.quality`): the figures a person
    #: checks, in words.  ``None`` for the other event types (then left out of the JSON).
    #: What the event was judged on, beyond peak and limit: a data-quality signal's figures in words (issue
    #: 17, :mod:`cems.rules.quality`); a ``grid_hotspot``'s hours with the sensor's value, the neighbours'
    #: values and their median (issue 15, docs/events.md). ``None`` for the other types (left out of the JSON).
    evidence: str | dict[str, Any] | None = None

    @property
    def event_id(self) -> str:
        return event_id(self.type, self.mn, self.pollutant, self.start)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def to_json(self) -> dict[str, Any]:
        d = self._json()
        if self.evidence is not None:
            d["evidence"] = self.evidence
        return d

    def _json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "mn": self.mn,
            "enterprise": self.enterprise,
            "district": self.district,
            "pollutant": self.pollutant,
            "start": self.start.astimezone(BEIJING).isoformat(),
            "end": None if self.end is None else self.end.astimezone(BEIJING).isoformat(),
            "hours": self.hours,
            "peak": self.peak,
            "limit": self.limit,
            "ref_o2": self.ref_o2,
            "profile": self.profile,
            "status": self.status,
            "late": self.late,
            **({"marks": list(self.marks)} if self.marks else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        end = d.get("end")
        return cls(
            type=str(d["type"]),
            mn=str(d["mn"]),
            enterprise=str(d["enterprise"]),
            district=str(d["district"]),
            pollutant=d.get("pollutant"),
            start=datetime.fromisoformat(d["start"]),
            end=None if end is None else datetime.fromisoformat(end),
            hours=d["hours"],
            peak=d.get("peak"),
            limit=d.get("limit"),
            ref_o2=d.get("ref_o2"),
            profile=d.get("profile"),
            status=str(d["status"]),
            late=bool(d.get("late", False)),
            marks=tuple(str(m) for m in d.get("marks") or ()),
            evidence=d.get("evidence"),
        )

    def closed_at(self, end: datetime, hours: float | None = None) -> Event:
        return replace(self, end=end, status="closed", hours=self.hours if hours is None else hours)


@dataclass(frozen=True, slots=True)
class EventUpdate:
    """``kind``: "opened", "updated" or "closed"; ``event``: the event as it is after the update."""

    kind: str
    event: Event


def run_updates(prev: Event | None, ev: Event) -> list[EventUpdate]:
    """What a run recomputed as ``ev`` reports, given how it was last reported (``prev``): opened (and at once
    closed) when new or retracted before, updated or closed when it changed, nothing when only ``late`` differs.
    Shared by every tracker that recomputes its runs from their hours (exceedances, grid, data quality)."""
    if prev is None or prev.status == RETRACTED_STATUS:
        ups = [EventUpdate(OPENED, replace(ev, end=None, status="open"))]
        if ev.status == "closed":
            ups.append(EventUpdate(CLOSED, ev))
        return ups
    if replace(prev, late=ev.late) != ev:
        return [EventUpdate(CLOSED if ev.status == "closed" else UPDATED, ev)]
    return []


def retract_missing(old: Mapping[int, Event], new: dict[int, Event]) -> list[EventUpdate]:
    """Runs of ``old`` (by start) that the recomputation ``new`` no longer has: retracted (late data undid
    them; kept, never deleted) and carried into ``new``."""
    ups: list[EventUpdate] = []
    for start, prev in old.items():
        if start not in new:
            if prev.status != RETRACTED_STATUS:
                gone = replace(prev, status=RETRACTED_STATUS, late=True)
                ups.append(EventUpdate(RETRACTED, gone))
                new[start] = gone
            else:
                new[start] = prev
    return ups


def _duration_h(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / 3600.0, 4)


def _check_version(state: dict[str, Any], kind: str, mn: str) -> None:
    if state.get("version") != 1 or state.get("kind") != kind:
        raise ValueError(f"not a version-1 {kind} state")
    if state.get("mn") != mn:
        raise ValueError(f"{kind} state of outlet {state.get('mn')!r} restored into {mn!r}")


# ---------------------------------------------------------------------------------------------- exceedance


class ExceedanceTracker:
    """``hourly_exceedance`` events of one outlet, all pollutants, in event time (issue 12 item 1).

    Feed the outlet's hourly records with :meth:`on_hour`, in any order: a record for an hour already seen
    replaces it (a revision: a late CN=2061, back-filled data).  The runs are recomputed from the exceeding
    hours, so the events are the same whatever the order of the records: a run is a maximal sequence of
    consecutive exceeding hours; any other hour (compliant, invalid, flagged, missing) ends it.  A run is
    closed once the hour after it is *decided*: a record came for a later hour (records are emitted in hour
    order) or ``on_clock(until)`` says that hour has ended (call it with the ``until`` given to
    ``OutletHourly.flush``).  Updates caused by a record that arrived after its hour was emitted (a second
    record of the pollutant's hour, a record after a later hour's or after ``on_clock`` ended the hour; the
    other pollutants of the same hour are on time) are marked ``late``: a run
    extended or reopened, a new run, or a run that no longer exists (``retracted``: merged into an earlier
    run, or its hours revised below the limit) — each reported once, never duplicated.  :meth:`prune`
    forgets what can no longer change (before the repair window).
    """

    # Memory (one tracker per outlet): slots, and the dicts are made on first use (``None`` = empty); most
    # outlets never have a run.  Only exceeding hours are kept.
    __slots__ = ("_clock", "_decided", "_events", "_hits", "_latest", "_latest_keys", "district", "enterprise", "mn")

    TYPE: str = HOURLY_EXCEEDANCE
    KIND: str = "exceedance"

    def __init__(self, mn: str, enterprise: str, district: str) -> None:
        self.mn = mn
        self.enterprise = enterprise
        self.district = district
        #: pollutant → hour (epoch s) → (corrected value, limit, reference O2, profile) of exceeding hours
        self._hits: dict[str, dict[int, _Hit]] | None = None
        #: pollutant → run start (epoch s) → the event as last reported (open, closed or retracted)
        self._events: dict[str, dict[int, Event]] | None = None
        #: every hour starting before this (epoch s) is decided (has had its record, or has ended)
        self._decided = _NEVER_H
        #: every hour starting before this (epoch s) has ended by ``on_clock``
        self._clock = _NEVER_H
        #: the latest hour (epoch s) with a record, and the pollutants that had a record of it: records of one
        #: hour are emitted together, so the second pollutant of an hour is not late, a second record of a
        #: pollutant's hour (a revision) is
        self._latest = _NEVER_H
        self._latest_keys: set[str] | frozenset[str] = _NO_KEYS

    @property
    def open_events(self) -> list[Event]:
        evs = self._events
        if not evs:
            return []
        return [ev for p in sorted(evs) for _, ev in sorted(evs[p].items()) if ev.status == "open"]

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    def on_hour(self, rec: HourlyRecord) -> list[EventUpdate]:
        if rec.mn != self.mn:
            raise ValueError(f"record of {rec.mn!r} fed to the tracker of {self.mn!r}")
        return self._step(rec.pollutant, rec.hour_start, rec.exceeds, rec.zs_avg, rec.limit, rec.ref_o2, rec.profile)

    def _step(
        self,
        p: str,
        hour_start: datetime,
        hit: bool,
        zs: float | None,
        limit: float | None,
        ref_o2: float | None,
        profile: str | None,
    ) -> list[EventUpdate]:
        """The record of one hour of pollutant ``p`` (first or revised)."""
        h = int(_ts(hour_start))
        latest = self._latest
        # late = changed by data that arrived after the hour was emitted: the clock ended the hour, a later hour
        # was emitted, or this pollutant already had its record of the hour (issue 12 follow-up)
        late = h < self._clock or h < latest or (h == latest and p in self._latest_keys)
        if h > latest:
            self._latest, self._latest_keys = h, {p}
        elif h == latest:
            keys = self._latest_keys
            if isinstance(keys, set):
                keys.add(p)
            else:
                self._latest_keys = {p}
        hits = self._hits
        by_p = None if hits is None else hits.get(p)
        if hit:
            if hits is None:
                hits = self._hits = {}
            if by_p is None:
                by_p = hits[p] = {}
            by_p[h] = (zs, limit, ref_o2, profile)
        elif by_p is not None:
            by_p.pop(h, None)
        self._decided = max(self._decided, h + 3600)
        if not hit and not late and by_p is None and not (self._events and self._events.get(p)):
            return []  # the common case: a compliant hour of a pollutant without runs
        return self._recompute(p, late)

    def _recompute(self, p: str, late: bool) -> list[EventUpdate]:
        by_p = (self._hits or {}).get(p) or {}
        runs: list[list[Any]] = []  # [start, end, peak, first hit]
        for h in sorted(by_p):
            zs = by_p[h][0]
            if runs and runs[-1][1] == h:
                run = runs[-1]
                run[1] = h + 3600
                if zs is not None and (run[2] is None or zs > run[2]):
                    run[2] = zs
            else:
                runs.append([h, h + 3600, zs, by_p[h]])
        events = self._events
        old = {} if events is None else events.get(p, {})
        new: dict[int, Event] = {}
        ups: list[EventUpdate] = []
        for start, end, peak, first in runs:
            closed = end < self._decided
            s = _dt(start)
            prev = old.get(start)
            ev = Event(
                type=self.TYPE,
                mn=self.mn,
                enterprise=self.enterprise,
                district=self.district,
                pollutant=p,
                start=s,
                end=_dt(end) if closed else None,
                hours=(end - start) // 3600,
                peak=peak,
                limit=first[1],
                ref_o2=first[2],
                profile=first[3],
                status="closed" if closed else "open",
                late=late or (prev is not None and prev.late),
            )
            new[start] = ev
            ups += run_updates(prev, ev)
        ups += retract_missing(old, new)
        if new:
            if events is None:
                events = self._events = {}
            events[p] = new
        elif events is not None:
            events.pop(p, None)
            if not events:
                self._events = None
        ups.sort(key=lambda u: u.event.start)
        return ups

    def on_clock(self, until: datetime) -> list[EventUpdate]:
        """Hours that ended at or before ``until`` are decided: close runs whose next hour is one of them."""
        u = math.floor(_ts(until))
        decided = u - u % 3600
        self._clock = max(self._clock, decided)
        if decided <= self._decided:
            return []
        self._decided = decided
        events = self._events
        if not events:
            return []
        ups: list[EventUpdate] = []
        for p in sorted(events):
            if any(ev.status == "open" for ev in events[p].values()):
                ups.extend(self._recompute(p, False))
        return ups

    def prune(self, before: datetime) -> None:
        """Forget runs that ended before ``before`` (final: outside the repair window)."""
        b = _ts(before)
        events, hits = self._events, self._hits
        if events:
            for p in list(events):
                by_start = events[p]
                for start, ev in list(by_start.items()):
                    if ev.status == RETRACTED_STATUS:
                        # its hours now belong to another run (merged) or are no longer hits (revised): keep
                        # them; forget the record once it starts before ``before`` (it may have no end)
                        if start < b:
                            del by_start[start]
                        continue
                    if ev.status != "open" and (ev.end is None or _ts(ev.end) < b):
                        del by_start[start]
                        if hits and p in hits:
                            last = start + int(ev.hours) * 3600
                            for h in [h for h in hits[p] if start <= h < last]:
                                del hits[p][h]
                if not by_start:
                    del events[p]
            if not events:
                self._events = None
        if hits:
            for p in list(hits):
                if not hits[p]:
                    del hits[p]
            if not hits:
                self._hits = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 2,
            "kind": self.KIND,
            "mn": self.mn,
            "hits": {p: [[h, *v] for h, v in sorted(d.items())] for p, d in sorted(self._hits.items())}
            if self._hits
            else {},
            "events": {p: [ev.to_json() for _, ev in sorted(d.items())] for p, d in sorted(self._events.items())}
            if self._events
            else {},
            "decided": self._decided,
            "clock": self._clock,
            "latest": self._latest,
            "latest_keys": sorted(self._latest_keys) if self._latest_keys else [],
        }

    @classmethod
    def untouched_snapshot(cls, mn: str, until: datetime | None) -> dict[str, Any]:
        """The :meth:`snapshot` of a tracker of ``mn`` that never had a record, after ``on_clock(until)``
        (``None``: never clocked), built without the tracker (the state commit of an outlet whose trackers are
        not made yet, issue 20: every reading's outlet before its first hour closes)."""
        decided = _NEVER_H
        if until is not None:
            u = math.floor(_ts(until))
            decided = max(decided, u - u % 3600)
        return {
            "version": 2,
            "kind": cls.KIND,
            "mn": mn,
            "hits": {},
            "events": {},
            "decided": decided,
            "clock": decided,
            "latest": _NEVER_H,
            "latest_keys": [],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.KIND or state.get("version") not in (1, 2):
            raise ValueError(f"not a version-1 or -2 {self.KIND} state")
        if state.get("mn") != self.mn:
            raise ValueError(f"{self.KIND} state of outlet {state.get('mn')!r} restored into {self.mn!r}")
        if state["version"] == 1:  # before event time: open runs and the last hour seen per pollutant
            self._hits, self._events = None, None
            self._decided = max((int(v) + 3600 for v in state["last"].values()), default=_NEVER_H)
            self._clock, self._latest, self._latest_keys = self._decided, _NEVER_H, _NO_KEYS
            for p, d in state["runs"].items():
                ev = Event.from_json(d)
                s = int(_ts(ev.start))
                for i in range(int(ev.hours)):
                    hit = (ev.peak if i == 0 else None, ev.limit, ev.ref_o2, ev.profile)
                    (self._hits or self._set_hits()).setdefault(p, {})[s + 3600 * i] = hit
                (self._events or self._set_events()).setdefault(p, {})[s] = ev
            return
        self._hits = {
            p: {int(r[0]): (r[1], r[2], r[3], r[4]) for r in rows} for p, rows in state["hits"].items()
        } or None
        self._events = {
            p: {int(_ts(ev.start)): ev for ev in map(Event.from_json, rows)} for p, rows in state["events"].items()
        } or None
        self._decided = int(state["decided"])
        # saved before the follow-up of issue 12: every decided hour is taken as ended (conservative: late)
        self._clock = int(state.get("clock", self._decided))
        self._latest = int(state.get("latest", _NEVER_H))
        keys = state.get("latest_keys")
        self._latest_keys = set(keys) if keys else _NO_KEYS

    def _set_hits(self) -> dict[str, dict[int, _Hit]]:
        self._hits = {}
        return self._hits

    def _set_events(self) -> dict[str, dict[int, Event]]:
        self._events = {}
        return self._events


class O2InvalidTracker(ExceedanceTracker):
    """``o2_invalid`` events of one outlet (see the module docstring), one per run of hours.

    Feed it the outlet's hourly records as :class:`~cems.rules.hourly.OutletHourly` emits them (hour order,
    all codes of an hour together) with :meth:`on_records`; an hour is in the run when any of its records
    has ``o2_invalid``.  ``on_clock`` as for exceedances.
    """

    __slots__ = ("max_o2",)

    TYPE = O2_INVALID
    KIND = "o2_invalid"

    def __init__(self, mn: str, enterprise: str, district: str, *, max_o2: float = DEFAULT_MAX_O2) -> None:
        super().__init__(mn, enterprise, district)
        self.max_o2 = max_o2

    def on_hour(self, rec: HourlyRecord) -> list[EventUpdate]:
        return self.on_records([rec])

    def on_records(self, records: Sequence[HourlyRecord]) -> list[EventUpdate]:
        ups: list[EventUpdate] = []
        i, n = 0, len(records)
        while i < n:
            start = records[i].hour_start
            j = i
            hit = False
            o2: float | None = None
            while j < n and records[j].hour_start == start:
                r = records[j]
                if r.mn != self.mn:
                    raise ValueError(f"record of {r.mn!r} fed to the tracker of {self.mn!r}")
                if r.o2_invalid:
                    hit, o2 = True, r.o2_avg
                j += 1
            ups.extend(self._step(O2, start, hit, o2, self.max_o2, None, None))
            i = j
        return ups

    def on_o2_hour(self, hour_start: datetime, hit: bool, o2: float | None) -> list[EventUpdate]:
        """One hour judged again (marks, issue 14: :meth:`cems.rules.marks.OutletMarks.refresh_o2`)."""
        return self._step(O2, hour_start, hit, o2, self.max_o2, None, None)


# ---------------------------------------------------------------------------------------------- warnings


@dataclass(slots=True)
class _WarnState:
    above: int = 0
    above_start: float = 0.0
    above_peak: float = 0.0
    below: int = 0
    below_start: float = 0.0
    event: Event | None = None


#: The state of a pollutant that is not above its limit and has no event (what a new ``_WarnState()`` is):
#: shared by every outlet and pollutant in that state (memory: one tracker per outlet), so it is never
#: mutated: a pollutant that goes above its limit gets its own ``_WarnState`` first.
_IDLE: Final = _WarnState()
#: Its state as :meth:`RealtimeWarningTracker.snapshot` writes it (copied per snapshot).
_IDLE_JSON: Final[dict[str, Any]] = {
    "above": 0, "above_start": 0.0, "above_peak": 0.0, "below": 0, "below_start": 0.0, "event": None
}  # fmt: skip

#: Unit factors of an outlet sending every code in the standard's units (most outlets): shared, read-only.
_NO_FACTORS: Final[Mapping[str, float]] = {}


class _IdleStates(dict[str, _WarnState]):
    """Code → :data:`_IDLE` for every code, shared by the trackers whose pollutants are all idle (most, most of
    the time; memory, issue 20: ≈ 180 bytes an outlet): never written, a tracker writes its own copy.  Made in
    code order (:meth:`RealtimeWarningTracker.snapshot` writes them in it without sorting)."""

    __slots__ = ()


#: The shared :class:`_IdleStates` by their codes (bounded: a handful of code sets per city).
_IDLE_STATES: dict[frozenset[str], _IdleStates] = {}


def _idle_states(codes: Iterable[str]) -> dict[str, _WarnState]:
    """The shared states of ``codes``, all idle."""
    key = frozenset(codes)
    d = _IDLE_STATES.get(key)
    if d is None:
        d = _IdleStates((c, _IDLE) for c in sorted(key))
        if len(_IDLE_STATES) < 4096:
            _IDLE_STATES[key] = d
    return d


def _shared_if_idle(states: dict[str, _WarnState]) -> dict[str, _WarnState]:
    """``states``, or the shared equal states when every code is idle."""
    if type(states) is dict and all(st is _IDLE for st in states.values()):
        return _idle_states(states)
    return states


class _WarnParams:
    """A real-time warning tracker's settings, one object for every outlet that has the same."""

    __slots__ = ("factors", "max_o2", "n_close", "n_open", "ok_flags", "schedule", "stop_after")

    def __init__(
        self,
        n_open: int,
        n_close: int,
        stop_after: float,
        schedule: LimitSchedule,
        factors: Mapping[str, float],
        max_o2: float,
        ok_flags: frozenset[str | None],
    ) -> None:
        self.n_open = n_open
        self.n_close = n_close
        self.stop_after = stop_after
        self.schedule = schedule
        self.factors = factors
        self.max_o2 = max_o2
        self.ok_flags = ok_flags


#: The settings objects, one per distinct set of values (memory, issue 20).
_warn_params = SharedSettings(_WarnParams)


class RealtimeWarningTracker:
    """``realtime_warning`` (预警) events of one outlet, from real-time (CN=2011) readings.

    Per pollutant with a limit: the real-time value is corrected with the O2 of the same reading and the
    outlet's reference O2 (the DAS's ``-ZsRtd`` is used only when the reading has no O2 at all).  An event
    opens when ``n_open`` consecutive corrected values exceed the limit (start = the first of them) and closes
    when ``n_close`` consecutive values are not above it (end = the first of them).  A value that is flagged
    (not N; T, over range, is a lower bound and is judged unless ``over_range_valid`` is false), missing its
    number or not correctable counts as not above.  When data stops for longer than
    ``stop_after`` (default: the outlet's interruption threshold) the event closes at the last value's time
    plus ``rtd_interval_s`` and the debounce starts again.  Readings at or before the last one are ignored.
    """

    __slots__ = ("_last_t", "_p", "_states", "district", "enterprise", "mn", "outlet")

    def __init__(
        self,
        outlet: Outlet,
        enterprise: str,
        district: str,
        *,
        n_open: int = 3,
        n_close: int = 3,
        stop_after: timedelta | None = None,
        schedule: LimitSchedule | None = None,
        max_o2: float = DEFAULT_MAX_O2,
        over_range_valid: bool = True,
    ) -> None:
        if n_open < 1 or n_close < 1:
            raise ValueError("n_open and n_close must be ≥ 1")
        self.outlet = outlet
        self.mn = outlet.mn
        self.enterprise = enterprise
        self.district = district
        #: The settings, shared with the outlets that have the same (memory, issue 20).
        self._p = _warn_params(
            n_open,
            n_close,
            stop_after.total_seconds() if stop_after is not None else float(outlet.interruption_threshold),
            schedule if schedule is not None else LimitSchedule(outlet),
            unit_factors(outlet) or _NO_FACTORS,
            max_o2,
            _NT_FLAGS if over_range_valid else _N_FLAGS,
        )
        self._last_t: float | None = None
        #: code → its state; shared (:class:`_IdleStates`, never written) while every code is idle
        self._states: dict[str, _WarnState] = _idle_states(())

    @property
    def n_open(self) -> int:
        return self._p.n_open

    @property
    def n_close(self) -> int:
        return self._p.n_close

    @property
    def open_events(self) -> list[Event]:
        return [s.event for _, s in sorted(self._states.items()) if s.event is not None]

    def _stop(self, last_t: float) -> list[EventUpdate]:
        ups: list[EventUpdate] = []
        end = _dt(last_t + self.outlet.rtd_interval_s)
        for code in sorted(self._states):
            st = self._states[code]
            if st.event is not None:
                ups.append(EventUpdate(CLOSED, st.event.closed_at(end, _duration_h(st.event.start, end))))
        self._states = _idle_states(self._states)  # every code idle
        return ups

    def on_reading(self, reading: Reading) -> list[EventUpdate]:
        if reading.stream is not _S_RTD:
            return []
        if reading.mn != self.mn:
            raise ValueError(f"reading of {reading.mn!r} fed to the tracker of {self.mn!r}")
        t = _ts(reading.data_time)
        if self._last_t is not None and t <= self._last_t:
            return []
        ups: list[EventUpdate] = []
        if self._last_t is not None and t - self._last_t > self._p.stop_after:
            ups.extend(self._stop(self._last_t))
        self._last_t = t
        # the limits and the durations need an aware time, not Beijing's zone: the reading's own when aware
        dt = reading.data_time if reading.data_time.tzinfo is not None else _dt(t)
        ms = reading.measurements
        o2m = ms.get(O2)
        factors = self._p.factors  # (most outlets have none: no look-up per code)
        o2: float | None = None
        if o2m is not None and o2m.flag in _N_FLAGS:
            o2 = o2m.values.get("Rtd")
        for code in _conc_codes(ms):
            al = self._p.schedule.at(code, dt)
            if al is None:
                continue
            m = ms[code]
            zs: float | None = None
            v = m.values.get("Rtd")
            f = factors.get(code, 1.0) if factors else 1.0
            # T (over range) values are lower bounds: above the limit, the true value is too (issue 12 item 8).
            if m.flag in self._p.ok_flags and v is not None and math.isfinite(v):
                if o2 is not None:
                    zs = correct(v * f, o2, al.ref_o2, max_o2=self._p.max_o2)
                elif o2m is None:
                    das = m.values.get("ZsRtd")
                    zs = das * f if das is not None and math.isfinite(das) else None
            st = self._states.get(code)
            if zs is not None and zs > al.limit:
                if st is None or st is _IDLE:
                    states = self._states
                    if type(states) is _IdleStates:  # shared: write a copy
                        states = self._states = dict(states)
                    st = states[code] = _WarnState()
                st.below = 0
                if st.event is not None:
                    if st.event.peak is None or zs > st.event.peak:
                        st.event = replace(st.event, peak=zs, hours=_duration_h(st.event.start, dt))
                        ups.append(EventUpdate(UPDATED, st.event))
                    continue
                if st.above == 0:
                    st.above_start, st.above_peak = t, zs
                else:
                    st.above_peak = max(st.above_peak, zs)
                st.above += 1
                if st.above >= self._p.n_open:
                    start = _dt(st.above_start)
                    st.event = Event(
                        type=REALTIME_WARNING,
                        mn=self.mn,
                        enterprise=self.enterprise,
                        district=self.district,
                        pollutant=code,
                        start=start,
                        end=None,
                        hours=_duration_h(start, dt),
                        peak=st.above_peak,
                        limit=al.limit,
                        ref_o2=al.ref_o2,
                        profile=al.profile,
                        status="open",
                    )
                    st.above = 0
                    ups.append(EventUpdate(OPENED, st.event))
            else:
                if st is None:
                    states = self._states
                    if type(states) is _IdleStates:
                        self._states = _idle_states((*states, code))
                    else:
                        states[code] = _IDLE
                    continue
                if st is _IDLE:
                    continue
                st.above = 0
                if st.event is None:
                    continue
                if st.below == 0:
                    st.below_start = t
                st.below += 1
                if st.below >= self._p.n_close:
                    end = _dt(st.below_start)
                    ups.append(EventUpdate(CLOSED, st.event.closed_at(end, _duration_h(st.event.start, end))))
                    self._states[code] = _IDLE  # (its own dict: the code was not idle)
                    self._states = _shared_if_idle(self._states)
        return ups

    def on_clock(self, now: datetime) -> list[EventUpdate]:
        """Close open warnings when no real-time data came for longer than ``stop_after``."""
        if self._last_t is None or _ts(now) - self._last_t <= self._p.stop_after:
            return []
        return self._stop(self._last_t)

    def snapshot(self) -> dict[str, Any]:
        states = self._states
        return {
            "version": 1,
            "kind": "realtime_warning",
            "mn": self.mn,
            "last_t": self._last_t,
            # every code idle, the shared states (most outlets; made in code order): no sorting, no test per code
            "states": {code: _IDLE_JSON.copy() for code in states}
            if type(states) is _IdleStates
            else {
                code: _IDLE_JSON.copy()
                if st is _IDLE
                else {
                    "above": st.above,
                    "above_start": st.above_start,
                    "above_peak": st.above_peak,
                    "below": st.below,
                    "below_start": st.below_start,
                    "event": None if st.event is None else st.event.to_json(),
                }
                for code, st in sorted(states.items())
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        _check_version(state, "realtime_warning", self.mn)
        last = state["last_t"]
        self._last_t = None if last is None else float(last)
        states: dict[str, _WarnState] = {}
        for code, d in state["states"].items():
            ev = d["event"]
            st = _WarnState(
                above=int(d["above"]),
                above_start=float(d["above_start"]),
                above_peak=float(d["above_peak"]),
                below=int(d["below"]),
                below_start=float(d["below_start"]),
                event=None if ev is None else Event.from_json(ev),
            )
            states[code] = _IDLE if st == _IDLE else st
        self._states = _shared_if_idle(states)


# ---------------------------------------------------------------------------------------------- interruption


class _Span(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...


class SilenceSource(Protocol):
    """What :class:`InterruptionTracker` reads of its source: an :class:`~cems.registry.Outlet`, or a grid
    sensor (:mod:`cems.rules.grid`), which has no declared stops."""

    @property
    def mn(self) -> str: ...
    @property
    def rtd_interval_s(self) -> int: ...
    @property
    def interruption_threshold_s(self) -> int | None: ...
    @property
    def stop(self) -> Sequence[_Span]: ...


def _merged_stops(outlet: SilenceSource) -> Sequence[tuple[float, float]]:
    if not outlet.stop:
        return ()  # most outlets: no list per outlet
    spans = sorted((s.start.timestamp(), s.end.timestamp()) for s in outlet.stop)
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class InterruptionTracker:
    """``data_interruption`` (数据中断, DOMAIN.md §5) events of one outlet.

    Silence = the time between two data times of the outlet (any stream).  Silence inside a declared stop
    (停产/停运, ``outlet.stop``) is not an interruption, so a silent span is cut into its parts outside stops;
    each part longer than the threshold is an event from the part's start (the last data time, or the end of
    a stop) to its end (the first data time after it, or the start of a stop).  Threshold: ``threshold``, else
    the registry's ``interruption_threshold_s``, else ``max(600 s, 3 × cadence)`` with the cadence inferred
    from the outlet's recent data (median gap; before three gaps, the finest stream seen: ``rtd_interval_s``
    for real-time data, 60 s minute, 3600 s hourly records).

    * ``on_data(t)``: a data time.  Closes an open event at ``t``; in replay (no clock), opens and closes in
      one call the events of the silence that just ended.  Data times at or before the last one are ignored.
    * ``on_clock(now)``: live; opens an event as soon as the silence outside stops exceeds the threshold, and
      closes it at the start of a declared stop.

    Before the first data time nothing is known and nothing is reported.
    """

    __slots__ = ("_cadence", "_closed_until", "_fixed_s", "_last", "_open", "_stops", "district", "enterprise",
                 "mn", "outlet")  # fmt: skip

    def __init__(
        self, outlet: SilenceSource, enterprise: str, district: str, *, threshold: timedelta | None = None
    ) -> None:
        self.outlet = outlet
        self.mn = outlet.mn
        self.enterprise = enterprise
        self.district = district
        fixed = outlet.interruption_threshold_s if threshold is None else threshold.total_seconds()
        self._fixed_s: float | None = None if fixed is None else float(fixed)
        self._cadence = RecentGaps()
        self._stops = _merged_stops(outlet)
        self._last: float | None = None
        self._closed_until: float | None = None  # silence before this is accounted for
        self._open: Event | None = None

    @property
    def open_event(self) -> Event | None:
        return self._open

    def set_marked_stops(self, spans: Sequence[tuple[float, float]]) -> None:
        """Stops documented by marks or stop declarations (issue 14: types that remove hours from the expected
        count), besides the registry's: silence inside them is no interruption either.  An open interruption
        that a new stop covers closes at its next ``on_clock``/``on_data``, as for a declared stop."""
        out: list[tuple[float, float]] = []
        for a, b in sorted([*_merged_stops(self.outlet), *spans]):
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        self._stops = out

    @property
    def threshold_s(self) -> float:
        """Seconds of silence (outside stops) that make an interruption (see the class docstring)."""
        if self._fixed_s is not None:
            return self._fixed_s
        return float(max(600, 3 * self._cadence.cadence(self.outlet.rtd_interval_s)))

    @property
    def last_data(self) -> datetime | None:
        return None if self._last is None else _dt(self._last)

    def _segments(self, a: float, b: float) -> list[tuple[float, float]]:
        """Parts of (a, b) outside declared stops."""
        out: list[tuple[float, float]] = []
        cur = a
        for s, e in self._stops:
            if e <= cur:
                continue
            if s >= b:
                break
            if s > cur:
                out.append((cur, s))
            cur = max(cur, e)
            if cur >= b:
                break
        if cur < b:
            out.append((cur, b))
        return out

    def _new(self, start: float, now: float) -> Event:
        s = _dt(start)
        return Event(
            type=DATA_INTERRUPTION,
            mn=self.mn,
            enterprise=self.enterprise,
            district=self.district,
            pollutant=None,
            start=s,
            end=None,
            hours=_duration_h(s, _dt(now)),
            peak=None,
            limit=None,
            ref_o2=None,
            profile=None,
            status="open",
        )

    def _advance(self, to: float, data: bool) -> list[EventUpdate]:
        assert self._last is not None
        base = self._last if self._closed_until is None else max(self._last, self._closed_until)
        if self._open is None and to - base <= (600.0 if self._fixed_s is None else self._fixed_s):
            # nothing open and no silence can reach the threshold (≥ 600 s unless fixed): the segments are
            # parts of (base, to), so none opens an event (the common case, on every reading)
            return []
        segments = self._segments(base, to)
        ups: list[EventUpdate] = []
        if self._open is not None and all(abs(s - _ts(self._open.start)) > 1e-3 for s, _ in segments):
            # The open event's silence is no longer outside stops (a stop was declared over it): close it.
            end = _dt(max(_ts(self._open.start), min(to, base)))
            ups.append(EventUpdate(CLOSED, self._open.closed_at(end, _duration_h(self._open.start, end))))
            self._open = None
        for s, e in segments:
            ended = e < to or data  # cut by the start of a stop, or by data
            if self._open is not None and abs(s - _ts(self._open.start)) <= 1e-3:
                if ended:
                    end = _dt(e)
                    ups.append(EventUpdate(CLOSED, self._open.closed_at(end, _duration_h(self._open.start, end))))
                    self._open = None
                    self._closed_until = e
            elif e - s > self.threshold_s:
                ev = self._new(s, e)
                ups.append(EventUpdate(OPENED, ev))
                if ended:
                    end = _dt(e)
                    ups.append(EventUpdate(CLOSED, ev.closed_at(end, _duration_h(ev.start, end))))
                    self._closed_until = e
                else:
                    self._open = ev
        return ups

    def on_data(self, t: datetime, stream: Stream | None = None) -> list[EventUpdate]:
        """A data time (``stream``: its stream, the cadence's hint before enough gaps are known)."""
        ts = _ts(t)
        if self._last is None:
            self._last = ts
            self._cadence.on_data(ts, self._hint(stream))
            return []
        if ts <= self._last:
            return []
        ups = self._advance(ts, data=True)  # judged with the cadence known before this gap
        self._cadence.on_data(ts, self._hint(stream))
        if self._open is not None:  # defensive: data always ends the silence
            end = _dt(ts)
            ups.append(EventUpdate(CLOSED, self._open.closed_at(end, _duration_h(self._open.start, end))))
            self._open = None
        self._last = ts
        self._closed_until = None
        return ups

    def _hint(self, stream: Stream | None) -> int | None:
        if stream is None:
            return None
        return self.outlet.rtd_interval_s if stream is _S_RTD else STREAM_HINT_S.get(stream)

    def on_clock(self, now: datetime) -> list[EventUpdate]:
        ts = _ts(now)
        if self._last is None or ts <= self._last:
            return []
        return self._advance(ts, data=False)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "interruption",
            "mn": self.mn,
            "last": self._last,
            "closed_until": self._closed_until,
            "open": None if self._open is None else self._open.to_json(),
            "cadence": self._cadence.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        _check_version(state, "interruption", self.mn)
        self._last = None if state["last"] is None else float(state["last"])
        cu = state["closed_until"]
        self._closed_until = None if cu is None else float(cu)
        self._open = None if state["open"] is None else Event.from_json(state["open"])
        self._cadence.restore(state.get("cadence"))  # absent from states saved before issue 12 item 6
