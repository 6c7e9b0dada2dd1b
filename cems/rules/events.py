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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cems.model import BEIJING, O2, Reading, Stream
from cems.registry import Outlet
from cems.rules.cadence import STREAM_HINT_S, RecentGaps
from cems.rules.hourly import HourlyRecord, is_concentration, unit_factors
from cems.rules.limits import LimitSchedule
from cems.rules.o2 import DEFAULT_MAX_O2, correct

HOURLY_EXCEEDANCE: Final = "hourly_exceedance"
REALTIME_WARNING: Final = "realtime_warning"
DATA_INTERRUPTION: Final = "data_interruption"
O2_INVALID: Final = "o2_invalid"

OPENED: Final = "opened"
UPDATED: Final = "updated"
CLOSED: Final = "closed"

_N_FLAGS: Final = frozenset({None, "N", "n"})
_T_FLAGS: Final = frozenset({"T", "t"})


def _ts(t: datetime) -> float:
    return (t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)).timestamp()


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
    status: str  # "open" | "closed"

    @property
    def event_id(self) -> str:
        return event_id(self.type, self.mn, self.pollutant, self.start)

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def to_json(self) -> dict[str, Any]:
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
        )

    def closed_at(self, end: datetime, hours: float | None = None) -> Event:
        return replace(self, end=end, status="closed", hours=self.hours if hours is None else hours)


@dataclass(frozen=True, slots=True)
class EventUpdate:
    """``kind``: "opened", "updated" or "closed"; ``event``: the event as it is after the update."""

    kind: str
    event: Event


def _duration_h(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() / 3600.0, 4)


def _check_version(state: dict[str, Any], kind: str, mn: str) -> None:
    if state.get("version") != 1 or state.get("kind") != kind:
        raise ValueError(f"not a version-1 {kind} state")
    if state.get("mn") != mn:
        raise ValueError(f"{kind} state of outlet {state.get('mn')!r} restored into {mn!r}")


# ---------------------------------------------------------------------------------------------- exceedance


class ExceedanceTracker:
    """``hourly_exceedance`` events of one outlet, all pollutants.

    Feed the outlet's hourly records in hour order (as :class:`~cems.rules.hourly.OutletHourly` emits them).
    A record for an hour at or before the last one seen for that pollutant is ignored (duplicate).  A gap
    (a record for h+2 after h) closes the run at h+1.  ``on_clock(until)`` closes a run whose next hour has
    ended without a record: call it with the same ``until`` given to ``OutletHourly.flush``.
    """

    # Memory (one tracker per outlet): slots, and the dicts are made on first use (``None`` = empty); most
    # outlets never have a run.
    __slots__ = ("_last", "_runs", "district", "enterprise", "mn")

    def __init__(self, mn: str, enterprise: str, district: str) -> None:
        self.mn = mn
        self.enterprise = enterprise
        self.district = district
        self._runs: dict[str, Event] | None = None
        self._last: dict[str, float] | None = None

    @property
    def open_events(self) -> list[Event]:
        runs = self._runs
        return [runs[p] for p in sorted(runs)] if runs else []

    @staticmethod
    def _next_hour(run: Event) -> float:
        """Start of the hour after the run's last hour."""
        return _ts(run.start) + 3600.0 * run.hours

    TYPE: str = HOURLY_EXCEEDANCE
    KIND: str = "exceedance"

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
        """One hour of pollutant ``p``: ``hit`` extends (or opens) the run, anything else ends it."""
        h = _ts(hour_start)
        lasts = self._last
        if lasts is None:
            lasts = self._last = {}
        last = lasts.get(p)
        if last is not None and h <= last:
            return []
        lasts[p] = h
        ups: list[EventUpdate] = []
        runs = self._runs
        run = None if runs is None else runs.get(p)
        if run is not None and h > self._next_hour(run):
            # Missing hour(s): the hour after the run's last hour has no record, so the run ends there.
            ups.append(EventUpdate(CLOSED, run.closed_at(_dt(self._next_hour(run)))))
            del runs[p]  # type: ignore[union-attr]  # run is not None: runs is a dict
            run = None
        if hit:
            if run is None:
                ev = Event(
                    type=self.TYPE,
                    mn=self.mn,
                    enterprise=self.enterprise,
                    district=self.district,
                    pollutant=p,
                    start=hour_start.astimezone(BEIJING),
                    end=None,
                    hours=1,
                    peak=zs,
                    limit=limit,
                    ref_o2=ref_o2,
                    profile=profile,
                    status="open",
                )
                if runs is None:
                    runs = self._runs = {}
                runs[p] = ev
                ups.append(EventUpdate(OPENED, ev))
            else:
                peak = run.peak if zs is None or (run.peak is not None and run.peak >= zs) else zs
                ev = replace(run, hours=run.hours + 1, peak=peak)
                runs[p] = ev  # type: ignore[index]  # run is not None: runs is a dict
                ups.append(EventUpdate(UPDATED, ev))
        elif run is not None:
            ups.append(EventUpdate(CLOSED, run.closed_at(hour_start.astimezone(BEIJING))))
            del runs[p]  # type: ignore[union-attr]  # run is not None: runs is a dict
        return ups

    def on_clock(self, until: datetime) -> list[EventUpdate]:
        """Close runs whose next hour ended at or before ``until`` without a record (a missing hour)."""
        runs = self._runs
        if not runs:
            return []
        u = _ts(until)
        ups: list[EventUpdate] = []
        for p in sorted(runs):
            run = runs[p]
            nxt = self._next_hour(run)
            if nxt + 3600.0 <= u:
                ups.append(EventUpdate(CLOSED, run.closed_at(_dt(nxt))))
                del runs[p]
                lasts = self._last
                if lasts is None:
                    lasts = self._last = {}
                lasts[p] = max(lasts.get(p, nxt), nxt)
        return ups

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": self.KIND,
            "mn": self.mn,
            "runs": {p: ev.to_json() for p, ev in sorted((self._runs or {}).items())},
            "last": dict(sorted((self._last or {}).items())),
        }

    def restore(self, state: dict[str, Any]) -> None:
        _check_version(state, self.KIND, self.mn)
        self._runs = {p: Event.from_json(d) for p, d in state["runs"].items()} or None
        self._last = {p: float(v) for p, v in state["last"].items()} or None


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

#: Unit factors of an outlet sending every code in the standard's units (most outlets): shared, read-only.
_NO_FACTORS: Final[Mapping[str, float]] = {}


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

    __slots__ = (
        "_factors",
        "_last_t",
        "_max_o2",
        "_ok_flags",
        "_schedule",
        "_states",
        "_stop_after",
        "district",
        "enterprise",
        "mn",
        "n_close",
        "n_open",
        "outlet",
    )

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
        self.n_open = n_open
        self.n_close = n_close
        self._stop_after = (
            stop_after.total_seconds() if stop_after is not None else float(outlet.interruption_threshold)
        )
        self._schedule = schedule if schedule is not None else LimitSchedule(outlet)
        self._factors: Mapping[str, float] = unit_factors(outlet) or _NO_FACTORS
        self._max_o2 = max_o2
        self._ok_flags = _N_FLAGS | _T_FLAGS if over_range_valid else _N_FLAGS
        self._last_t: float | None = None
        self._states: dict[str, _WarnState] = {}

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
            self._states[code] = _IDLE
        return ups

    def on_reading(self, reading: Reading) -> list[EventUpdate]:
        if reading.stream is not Stream.RTD:
            return []
        if reading.mn != self.mn:
            raise ValueError(f"reading of {reading.mn!r} fed to the tracker of {self.mn!r}")
        t = _ts(reading.data_time)
        if self._last_t is not None and t <= self._last_t:
            return []
        ups: list[EventUpdate] = []
        if self._last_t is not None and t - self._last_t > self._stop_after:
            ups.extend(self._stop(self._last_t))
        self._last_t = t
        dt = _dt(t)
        ms = reading.measurements
        o2m = ms.get(O2)
        o2: float | None = None
        if o2m is not None and o2m.flag in _N_FLAGS:
            o2 = o2m.values.get("Rtd")
        for code in sorted(ms):
            if not is_concentration(code):
                continue
            al = self._schedule.at(code, dt)
            if al is None:
                continue
            m = ms[code]
            zs: float | None = None
            v = m.values.get("Rtd")
            f = self._factors.get(code, 1.0)
            # T (over range) values are lower bounds: above the limit, the true value is too (issue 12 item 8).
            if m.flag in self._ok_flags and v is not None and math.isfinite(v):
                if o2 is not None:
                    zs = correct(v * f, o2, al.ref_o2, max_o2=self._max_o2)
                elif o2m is None:
                    das = m.values.get("ZsRtd")
                    zs = das * f if das is not None and math.isfinite(das) else None
            st = self._states.get(code)
            if zs is not None and zs > al.limit:
                if st is None or st is _IDLE:
                    st = self._states[code] = _WarnState()
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
                if st.above >= self.n_open:
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
                    self._states[code] = _IDLE
                    continue
                if st is _IDLE:
                    continue
                st.above = 0
                if st.event is None:
                    continue
                if st.below == 0:
                    st.below_start = t
                st.below += 1
                if st.below >= self.n_close:
                    end = _dt(st.below_start)
                    ups.append(EventUpdate(CLOSED, st.event.closed_at(end, _duration_h(st.event.start, end))))
                    self._states[code] = _IDLE
        return ups

    def on_clock(self, now: datetime) -> list[EventUpdate]:
        """Close open warnings when no real-time data came for longer than ``stop_after``."""
        if self._last_t is None or _ts(now) - self._last_t <= self._stop_after:
            return []
        return self._stop(self._last_t)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "realtime_warning",
            "mn": self.mn,
            "last_t": self._last_t,
            "states": {
                code: {
                    "above": st.above,
                    "above_start": st.above_start,
                    "above_peak": st.above_peak,
                    "below": st.below,
                    "below_start": st.below_start,
                    "event": None if st.event is None else st.event.to_json(),
                }
                for code, st in sorted(self._states.items())
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        _check_version(state, "realtime_warning", self.mn)
        last = state["last_t"]
        self._last_t = None if last is None else float(last)
        self._states = {}
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
            self._states[code] = _IDLE if st == _IDLE else st


# ---------------------------------------------------------------------------------------------- interruption


def _merged_stops(outlet: Outlet) -> Sequence[tuple[float, float]]:
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

    def __init__(self, outlet: Outlet, enterprise: str, district: str, *, threshold: timedelta | None = None) -> None:
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
        return self.outlet.rtd_interval_s if stream is Stream.RTD else STREAM_HINT_S.get(stream)

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
