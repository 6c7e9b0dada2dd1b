"""The grid engine: grid micro-station readings → hourly and daily values, AQI, hotspots, construction-site
PM10 alarms and data interruptions (issue 15; DOMAIN.md §6, §9).  Pure: no I/O, no clock reads; ``cems run``
and ``cems replay`` drive the same engine, so they give the same figures for the same readings whatever
their arrival order within the lateness.

**Time.**  One watermark for the whole grid: the newest data time seen (and, live, the wall clock given to
:meth:`GridEngine.on_clock`).  An hour is *decided* once the watermark has passed its end by ``lateness``
(default :data:`~cems.rules.hourly.DEFAULT_LATENESS`, 5 min, as for the stacks): every sensor's record of that
hour is then emitted, and the hotspots of that hour are judged on every sensor's value — the neighbours are
compared on the same hour, so the hour is decided for all sensors at once, not per sensor.  A reading that
arrives within the lateness therefore gives exactly the in-order result.  Later data revise: an emitted hour
keeps its readings in memory for ``hold`` (default 3 h) after its end and is rebuilt exactly; an hour that had
no data at all (a sensor back-filling after an outage) is built afresh up to its repair deadline
(:func:`~cems.rules.hourly.repair_deadline`: 10 days, and the 10th of the next month); data for an hour that
had data and left memory are counted ``late_unrevised``, data after the repair deadline
``late_beyond_window`` — by the watermark, and live by the service's clock given with each batch
(``on_readings(..., now=)``): such a reading is fed to nothing, whatever the ticks before it.  A revised hour
is emitted again (same key: the ``grid_hourly`` point is rewritten), its day is rebuilt when the day is closed,
and the hotspots of that hour are judged again (updates marked ``late``).  The emitted hourly values are kept
(compactly) until the repair deadline of their day, so a day is always rebuilt from all its hours.

**Hourly value** (GB 3095-2012 table 4): per pollutant, the mean of the valid values of the hour (flag N or
none; one value per second of data time, the later arrival wins), valid with ≥ 45 minutes covered, each
reading covering the sensor's ``interval_s`` (:func:`~cems.rules.ambient.covered_minutes`).  A station's own
hourly record (HJ 212 CN=2061, ``-Avg``) wins for its hour and pollutant (60 minutes).  Codes: HJ 212-2017
appendix B ambient codes (a34004 PM2.5, a34002 PM10, a21026 SO2, a21004 NO2, a21005 CO, a05024 O3) or the AQI
names; µg/m³, CO mg/m³.  The real-time AQI of the hour: :func:`~cems.rules.ambient.hourly_aqi` (HJ 633, the
standard by the hour's date).

**Day** (:class:`~cems.rules.ambient.AmbientDay`): closed once its last hour is decided; 24-h means with
≥ 20 valid hours, the O3 daily maximum 8-h mean (≥ 6 of 8 hours per window, ≥ 14 of the 17 windows, HJ
663-2013), the O3 1-h maximum, the daily AQI (period 24 h) and the upload rate (hours with a valid value /
24; seed 001: ≥ 90 %).  A sensor without any data in a day has no day (its silence is a
``data_interruption``).

**Events** (the stack's :class:`~cems.rules.events.Event` types, so they take the same path: ``cems_event``,
the events table, alerts, ``cems events list``/``ack``; ``mn`` = the sensor id, which the registry keeps apart
from every outlet MN; ``enterprise`` = :data:`GRID_ENTERPRISE`; ``pollutant`` = ``pm25``/``pm10``):

* ``grid_hotspot`` (明显高于周边, seed 000): per pollutant of ``[grid.hotspot] pollutants``, an hour in which
  the sensor's valid hourly value is ≥ ``ratio`` × and ≥ ``floor`` above the median of its neighbours'
  (:func:`~cems.rules.ambient.hotspot_hours`, at least ``min_neighbours`` with a valid value); ``hours``
  such hours in a row make an event (start = the first of them), which grows while the run lasts and closes
  at the start of the first hour that is not one.  ``peak``: the highest value; ``limit``: the threshold of
  that hour (max(median × ratio, median + floor)); ``evidence``: each hour's value, median, threshold and
  the neighbours' values.  Neighbours (:func:`neighbourhoods`): sensors of the compared kinds within
  ``radius_km`` (haversine on lat/lon), or in the same township when either lacks coordinates.
* ``grid_pm10_alarm``: a construction site's valid hourly PM10 above ``[grid.construction] pm10_limit`` for
  ``hours`` hours in a row (one event per run, like ``hourly_exceedance``); ``peak``/``limit`` in µg/m³.
* ``data_interruption``: :class:`~cems.rules.events.InterruptionTracker` on the sensor's data times, given in
  data-time order once the sensor's own newest data time, or the watermark, has passed them by the lateness
  (so a reading late within the lateness changes nothing, also in a back-fill); threshold
  ``[grid] interruption_threshold_s``, else max(600 s, 3 × interval_s).

Runs are recomputed from the hours whenever an hour changes, as :class:`~cems.rules.events.ExceedanceTracker`
does: the same events whatever the order; a run that late data make disappear is ``retracted``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final

from cems.model import BEIJING, Reading, Stream
from cems.registry import GridSensor, Registry
from cems.rules.ambient import (
    AMBIENT_CODES,
    HOUR_MIN_MINUTES,
    AmbientDay,
    AmbientHour,
    HotspotRule,
    covered_minutes,
    daily_mean,
    hotspot_hours,
    hourly_aqi,
    o3_8h_means,
    o3_daily_max_8h,
    upload_rate,
)
from cems.rules.aqi import LEVELS, aqi, standard_for
from cems.rules.events import (
    Event,
    EventUpdate,
    InterruptionTracker,
    retract_missing,
    run_updates,
)
from cems.rules.hourly import DEFAULT_HOLD, DEFAULT_LATENESS, REPAIR_WINDOW, final_before, repair_deadline

GRID_HOTSPOT: Final = "grid_hotspot"
GRID_PM10_ALARM: Final = "grid_pm10_alarm"
#: The ``enterprise`` of grid events (alert topic ``{alerts_prefix}/{district}/grid/{type}``).
GRID_ENTERPRISE: Final = "grid"
#: The pollutants of a grid sensor, in AQI names.
POLLUTANTS: Final = ("pm25", "pm10", "so2", "no2", "co", "o3")
_NAMES: Final = frozenset(POLLUTANTS)
_N_FLAGS: Final = frozenset({None, "N", "n"})
_NEVER: Final = -(1 << 62)
_H: Final = 3600
_DAY: Final = 86400
_BJ: Final = 8 * 3600
#: Mean Earth radius (km) for the haversine distance.
EARTH_RADIUS_KM: Final = 6371.0088

#: One emitted hour of one pollutant, compact: (mean, minutes, valid).
_Val = tuple[float | None, int, bool]


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, BEIJING)


def _day_start(h: int) -> int:
    return h - (h + _BJ) % _DAY


# ------------------------------------------------------------------------------------------------ outputs


@dataclass(frozen=True, slots=True)
class GridHour:
    """One sensor's hour: each pollutant's hourly value and the hour's real-time AQI (``grid_hourly``)."""

    sensor: str
    district: str
    township: str
    kind: str
    hour_start: datetime
    values: tuple[AmbientHour, ...]
    aqi: int | None
    level: int | None
    category: str | None
    primary: tuple[str, ...]
    standard: str

    def to_json(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "district": self.district,
            "township": self.township,
            "kind": self.kind,
            "hour_start": self.hour_start.isoformat(),
            "values": {h.pollutant: {"mean": h.mean, "minutes": h.minutes, "valid": h.valid} for h in self.values},
            "aqi": self.aqi,
            "level": self.level,
            "category": self.category,
            "primary": list(self.primary),
            "standard": self.standard,
        }


def day_to_json(d: AmbientDay) -> dict[str, Any]:
    """An :class:`AmbientDay` as JSON (``cems replay --grid-daily-out``)."""
    level = d.level
    return {
        "sensor": d.sensor,
        "district": d.district,
        "township": d.township,
        "kind": d.kind,
        "date": d.day.isoformat(),
        "means": dict(d.means),
        "hours": dict(d.hours),
        "aqi": d.aqi,
        "level": level,
        "category": category_of(level),
        "primary": list(d.primary),
        "standard": f"HJ 633-{standard_for(d.day)}",
        "upload_rate": d.upload_rate,
    }


def category_of(level: int | None) -> str | None:
    """The HJ 633 category (优 … 严重污染) of a level."""
    return None if level is None else LEVELS[level][0]


@dataclass
class GridOutput:
    """What one grid engine call produced: hours and days first emitted or revised (same keys), events."""

    hourly: list[GridHour] = field(default_factory=list)
    daily: list[AmbientDay] = field(default_factory=list)
    events: list[EventUpdate] = field(default_factory=list)

    def extend(self, other: GridOutput) -> None:
        self.hourly.extend(other.hourly)
        self.daily.extend(other.daily)
        self.events.extend(other.events)

    def __bool__(self) -> bool:
        return bool(self.hourly or self.daily or self.events)


# ------------------------------------------------------------------------------------------------ neighbours


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (km) between two WGS 84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def neighbourhoods(sensors: Sequence[GridSensor], radius_km: float, kinds: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Sensor → its neighbours among the sensors of ``kinds``: within ``radius_km`` when both have
    coordinates, else in the same (non-empty) township."""
    ks = set(kinds)
    cand = [g for g in sensors if g.kind in ks]
    out: dict[str, tuple[str, ...]] = {}
    for g in cand:
        near: list[str] = []
        for o in cand:
            if o.id == g.id:
                continue
            if g.lat is not None and g.lon is not None and o.lat is not None and o.lon is not None:
                if haversine_km(g.lat, g.lon, o.lat, o.lon) <= radius_km:
                    near.append(o.id)
            elif g.township and g.township == o.township:
                near.append(o.id)
        out[g.id] = tuple(sorted(near))
    return out


# ------------------------------------------------------------------------------------------------ runs

#: One hour of a run: (value, threshold or limit, evidence of the hour or None).
_Hit = tuple[float, float | None, dict[str, Any] | None]


class _Runs:
    """Runs of consecutive hit hours of one sensor and pollutant; a run of at least ``min_hours`` is an event
    (recomputed from the hits at every change, as :class:`~cems.rules.events.ExceedanceTracker`)."""

    __slots__ = ("district", "events", "hits", "min_hours", "pollutant", "sensor", "type")

    def __init__(self, type_: str, sensor: str, district: str, pollutant: str, min_hours: int) -> None:
        self.type = type_
        self.sensor = sensor
        self.district = district
        self.pollutant = pollutant
        self.min_hours = min_hours
        self.hits: dict[int, _Hit] = {}
        self.events: dict[int, Event] = {}

    @property
    def has_open(self) -> bool:
        return any(e.status == "open" for e in self.events.values())

    def set(self, h: int, hit: _Hit | None) -> bool:
        """Record hour ``h`` as hit (or not); True when that changed anything."""
        old = self.hits.get(h)
        if hit is None:
            if old is None:
                return False
            del self.hits[h]
            return True
        if old == hit:
            return False
        self.hits[h] = hit
        return True

    def recompute(self, decided: int, late: bool) -> list[EventUpdate]:
        runs: list[list[int]] = []
        for h in sorted(self.hits):
            if runs and runs[-1][1] == h:
                runs[-1][1] = h + _H
            else:
                runs.append([h, h + _H])
        old = self.events
        new: dict[int, Event] = {}
        ups: list[EventUpdate] = []
        for start, end in runs:
            n = (end - start) // _H
            if n < self.min_hours:
                continue
            hours = [(h, self.hits[h]) for h in range(start, end, _H)]
            _, (peak, limit, _) = max(hours, key=lambda x: (x[1][0], -x[0]))
            evidence = None
            if any(ev is not None for _, (_, _, ev) in hours):
                evidence = {"hours": [ev for _, (_, _, ev) in hours if ev is not None]}
            closed = end < decided
            prev = old.get(start)
            ev = Event(
                type=self.type,
                mn=self.sensor,
                enterprise=GRID_ENTERPRISE,
                district=self.district,
                pollutant=self.pollutant,
                start=_dt(start),
                end=_dt(end) if closed else None,
                hours=n,
                peak=peak,
                limit=limit,
                ref_o2=None,
                profile=None,
                status="closed" if closed else "open",
                late=late or (prev is not None and prev.late),
                evidence=evidence,
            )
            new[start] = ev
            ups += run_updates(prev, ev)
        ups += retract_missing(old, new)
        self.events = new
        return ups

    def prune(self, before: int) -> None:
        """Forget hits and events that ended before ``before`` (final: outside the repair window)."""
        for start, ev in list(self.events.items()):
            if ev.status != "open" and (ev.end is None or ev.end.timestamp() < before):
                del self.events[start]
        for h in [h for h in self.hits if h + _H < before and not any(s <= h for s in self.events)]:
            del self.hits[h]

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "pollutant": self.pollutant,
            "hits": [[h, *v] for h, v in sorted(self.hits.items())],
            "events": [e.to_json() for _, e in sorted(self.events.items())],
        }

    def restore(self, s: Mapping[str, Any]) -> None:
        self.hits = {int(x[0]): (float(x[1]), x[2], x[3]) for x in s["hits"]}
        self.events = {int(Event.from_json(e).start.timestamp()): Event.from_json(e) for e in s["events"]}


# ------------------------------------------------------------------------------------------------ sensor state


@dataclass(frozen=True, slots=True)
class _Silence:
    """A grid sensor as :class:`InterruptionTracker` reads it (:class:`~cems.rules.events.SilenceSource`)."""

    mn: str
    rtd_interval_s: int
    interruption_threshold_s: int | None = None
    stop: tuple[()] = ()


class _Sensor:
    __slots__ = ("changed_hours", "das", "g", "had", "hours", "hours_changed", "newest", "pending", "runs", "silence",
                 "subs")  # fmt: skip

    def __init__(self, g: GridSensor, threshold_s: int | None) -> None:
        self.g = g
        #: hour → pollutant → second of the hour → valid value (held hours: open, or emitted within the hold)
        self.subs: dict[int, dict[str, dict[int, float]]] = {}
        #: hour → pollutant → the station's own hourly value (CN=2061)
        self.das: dict[int, dict[str, float]] = {}
        #: emitted hours whose readings left memory (late data for them cannot be merged exactly)
        self.had: set[int] = set()
        #: emitted hours: pollutant → (mean, minutes, valid), kept until the repair deadline of their day
        self.hours: dict[int, dict[str, _Val]] = {}
        #: data times not yet given to the silence tracker (within the lateness of the watermark)
        self.pending: list[float] = []
        self.newest = float(_NEVER)  # the newest data time of the sensor
        threshold = threshold_s if threshold_s is not None else max(600, 3 * g.interval_s)
        self.silence = InterruptionTracker(
            _Silence(g.id, g.interval_s), GRID_ENTERPRISE, g.district, threshold=timedelta(seconds=threshold)
        )
        self.runs: dict[tuple[str, str], _Runs] = {}
        #: persistence: held hours whose readings changed (or left memory), and whether ``hours`` changed
        self.changed_hours: set[int] = set()
        self.hours_changed = False

    def run(self, type_: str, pollutant: str, min_hours: int) -> _Runs:
        r = self.runs.get((type_, pollutant))
        if r is None:
            r = self.runs[(type_, pollutant)] = _Runs(type_, self.g.id, self.g.district, pollutant, min_hours)
        return r

    def held(self, h: int) -> bool:
        return h in self.subs or h in self.das

    def build(self, h: int) -> dict[str, _Val]:
        """The hour's value per pollutant from the held readings (module docstring)."""
        out: dict[str, _Val] = {}
        subs = self.subs.get(h, {})
        das = self.das.get(h, {})
        for p in POLLUTANTS:
            if p in das:
                out[p] = (das[p], 60, True)
                continue
            vals = subs.get(p)
            if not vals:
                continue
            minutes: set[int] = set()
            for sec in vals:
                minutes.update(covered_minutes(sec, self.g.interval_s))
            mean = math.fsum(vals[s] for s in sorted(vals)) / len(vals)
            out[p] = (mean, len(minutes), len(minutes) >= HOUR_MIN_MINUTES)
        return out

    def snapshot(self) -> dict[str, Any]:
        """The sensor's state without its held readings and emitted hours (:meth:`hour_row`, :meth:`hours_row`:
        persisted apart, each only when it changed)."""
        return {
            "version": 1,
            "had": sorted(self.had),
            "pending": sorted(self.pending),
            "newest": self.newest,
            "silence": self.silence.snapshot(),
            "runs": [r.snapshot() for _, r in sorted(self.runs.items())],
        }

    def hour_row(self, h: int) -> dict[str, Any] | None:
        """The held readings of hour ``h`` (``None``: none held any more)."""
        if not self.held(h):
            return None
        subs = self.subs.get(h, {})
        return {
            "subs": {p: [[s, v] for s, v in sorted(d.items())] for p, d in subs.items()},
            "das": self.das.get(h, {}),
        }

    def hours_row(self) -> dict[str, Any]:
        return {"hours": {str(h): {p: list(v) for p, v in ps.items()} for h, ps in sorted(self.hours.items())}}

    def restore_hour(self, h: int, row: Mapping[str, Any]) -> None:
        if row["subs"]:
            self.subs[h] = {p: {int(x[0]): float(x[1]) for x in d} for p, d in row["subs"].items()}
        if row["das"]:
            self.das[h] = {p: float(v) for p, v in row["das"].items()}

    def restore_hours(self, row: Mapping[str, Any]) -> None:
        self.hours = {
            int(h): {p: (None if v[0] is None else float(v[0]), int(v[1]), bool(v[2])) for p, v in ps.items()}
            for h, ps in row["hours"].items()
        }

    def restore(self, s: Mapping[str, Any], min_hours: Mapping[str, int]) -> None:
        if s.get("version") != 1:
            raise ValueError("not a version-1 grid sensor state")
        self.had = {int(h) for h in s["had"]}
        self.pending = [float(t) for t in s["pending"]]
        self.newest = float(s["newest"])
        self.silence.restore(s["silence"])
        self.runs = {}
        for r in s["runs"]:
            run = self.run(str(r["type"]), str(r["pollutant"]), min_hours.get(str(r["type"]), 1))
            run.restore(r)


def _values(reading: Reading) -> dict[str, float]:
    """Pollutant (AQI name) → the reading's valid value (flag N or none): ``Rtd`` of real-time data, ``Avg``
    of minute and hourly records."""
    key = "Rtd" if reading.stream is Stream.RTD else "Avg"
    out: dict[str, float] = {}
    for code, m in reading.measurements.items():
        name = AMBIENT_CODES.get(code, code)
        if name not in _NAMES or m.flag not in _N_FLAGS:
            continue
        v = m.values.get(key)
        if v is not None and math.isfinite(v) and v >= 0:
            out[name] = v
    return out


# ------------------------------------------------------------------------------------------------ engine


class GridEngine:
    """Grid hours, days and events of a registry's ``[[grid_sensor]]`` (module docstring)."""

    def __init__(
        self,
        registry: Registry,
        *,
        lateness: timedelta = DEFAULT_LATENESS,
        hold: timedelta = DEFAULT_HOLD,
        repair: timedelta = REPAIR_WINDOW,
    ) -> None:
        self.registry = registry
        rules = registry.grid
        hs = rules.hotspot
        self.rule = HotspotRule(ratio=hs.ratio, floor=hs.floor, hours=hs.hours, min_neighbours=hs.min_neighbours)
        self.hotspot_pollutants = tuple(hs.pollutants)
        self.hotspot_kinds = frozenset(hs.kinds)
        self.pm10_limit = rules.construction.pm10_limit
        self.pm10_hours = rules.construction.hours
        self.threshold_s = rules.interruption_threshold_s
        self.sensors = {g.id: g for g in registry.grid_sensor}
        self.neighbours = neighbourhoods(registry.grid_sensor, hs.radius_km, hs.kinds)
        self._min_hours = {GRID_HOTSPOT: hs.hours, GRID_PM10_ALARM: self.pm10_hours}
        self._lateness = int(lateness.total_seconds())
        self._hold = int(hold.total_seconds())
        self._repair = repair
        self._state: dict[str, _Sensor] = {}
        self._wm = _NEVER  # the watermark (epoch s)
        #: The service's clock as last given (live: :meth:`on_clock`, ``now`` with a batch; never in replay) and
        #: the first hour not past its repair deadline then (epoch s): readings of earlier hours are refused.
        self._clock = _NEVER
        self._final_before = _NEVER
        self._decided = _NEVER  # hours starting before this are decided (emitted)
        self._silence_min = _NEVER  # the minute of the last silence check
        self._revised: set[tuple[str, int]] = set()
        self._dirty: set[str] = set()
        self.late_readings = 0
        self.late_unrevised = 0
        self.late_beyond_window = 0
        self._saved: dict[str, int] = {}  # the engine's own state as last given by take_changes

    # -- input --------------------------------------------------------------------------------------------
    def on_reading(self, reading: Reading) -> GridOutput:
        """Feed one accepted grid reading (any order)."""
        return self.on_readings([reading])

    def on_readings(self, readings: Iterable[Reading], *, now: datetime | None = None) -> GridOutput:
        """Feed a batch (taken in data-time order); hours revised by late data are rebuilt once.  ``now``: live,
        the service's clock when it judges the batch (the clock of :meth:`on_clock`): a reading whose hour is past
        its repair deadline then is counted (``late_beyond_window``) and changes nothing, whatever the ticks."""
        out = GridOutput()
        if now is not None:
            self._set_clock(now)
        for r in sorted(readings, key=lambda r: r.data_time):
            self._feed(r, out)
        self._revise(out)
        return out

    def on_clock(self, now: datetime) -> GridOutput:
        """Live: the wall clock moves the watermark (hours, days, silence)."""
        out = GridOutput()
        self._set_clock(now)
        self._advance(math.floor(now.timestamp()), out)
        return out

    def finish(self) -> GridOutput:
        """Replay: the input has ended; every open hour and day is emitted (events still running stay open)."""
        out = GridOutput()
        for st in self._state.values():
            for t in sorted(st.pending):
                out.events.extend(st.silence.on_data(_dt(t)))
            st.pending = []
        hours = sorted({h for st in self._state.values() for h in (*st.subs, *st.das) if h >= self._decided})
        self._emit(hours, out, late=False)
        days = sorted({_day_start(h) for h in hours})
        self._days([(sid, d) for d in days for sid in sorted(self._state)], out)
        return out

    def _set_clock(self, now: datetime) -> None:
        """The service's clock is ``now`` (it never goes back: an hour once final stays final)."""
        ts = math.floor(now.timestamp())
        if ts > self._clock:
            self._clock = ts
            self._final_before = final_before(ts, self._repair)

    def _sensor(self, sid: str) -> _Sensor | None:
        st = self._state.get(sid)
        if st is None:
            g = self.sensors.get(sid)
            if g is None:
                return None
            st = self._state[sid] = _Sensor(g, self.threshold_s)
        return st

    def _feed(self, reading: Reading, out: GridOutput) -> None:
        if reading.stream is Stream.DAY:
            return
        st = self._sensor(reading.mn)
        if st is None:
            return
        self._dirty.add(reading.mn)
        t = reading.data_time.timestamp()
        ts = math.floor(t)
        h = ts - ts % _H
        if h < self._final_before:  # past its repair deadline at the service's clock: counted, judged by no rule
            self.late_beyond_window += 1
            return
        store = True
        if h < self._decided:  # the hour is already emitted: a revision, or counted
            if self._wm >= repair_deadline(h, self._repair):
                self.late_beyond_window += 1
                store = False
            elif st.held(h) or h not in st.had:
                self.late_readings += 1
                self._revised.add((reading.mn, h))
            else:
                self.late_unrevised += 1
                store = False
        vals = _values(reading) if store else {}
        if vals:  # (a reading without a valid ambient value adds nothing to the hour; its data time still counts)
            st.changed_hours.add(h)
            if reading.stream is Stream.HOUR:
                st.das.setdefault(h, {}).update(vals)
            else:
                subs = st.subs.setdefault(h, {})
                for p, v in vals.items():
                    subs.setdefault(p, {})[ts - h] = v
        # the silence tracker takes the sensor's data times in data-time order: each waits until the sensor's
        # own newest data time (or the watermark, at the next minute) has passed it by the lateness, so that
        # readings shuffled within the lateness — also in a back-fill — give the in-order result
        st.pending.append(t)
        if t > st.newest:
            st.newest = t
        self._release(st, st.newest - self._lateness, out)
        if ts > self._wm:
            self._advance(ts, out)

    # -- time ---------------------------------------------------------------------------------------------
    def _advance(self, wm: int, out: GridOutput) -> None:
        if wm <= self._wm:
            return
        self._wm = wm
        edge = wm - self._lateness
        decided = edge - edge % _H
        if decided > self._decided:
            old = self._decided
            self._decided = decided
            hours = sorted({h for st in self._state.values() for h in (*st.subs, *st.das) if old <= h < decided})
            self._emit(hours, out, late=False)
            for st in self._state.values():
                for r in st.runs.values():
                    if r.has_open:
                        out.events.extend(r.recompute(decided, False))
            if old != _NEVER:
                first = _day_start(old)
                days = range(first, decided - _DAY + 1, _DAY)
            else:
                days = range(0)
            self._days([(sid, d) for d in days for sid in sorted(self._state) if d + _DAY > old], out)
            self._evict()
        minute = edge // 60
        if minute > self._silence_min:
            self._silence_min = minute
            now = _dt(edge)
            for sid, st in self._state.items():
                if self._release(st, edge, out):
                    self._dirty.add(sid)
                ups = st.silence.on_clock(now)
                if ups:
                    out.events.extend(ups)
                    self._dirty.add(sid)

    @staticmethod
    def _release(st: _Sensor, edge: float, out: GridOutput) -> bool:
        """Give the silence tracker, in data-time order, the sensor's data times up to ``edge``."""
        if not st.pending:
            return False
        ready = sorted(t for t in st.pending if t <= edge)
        if not ready:
            return False
        st.pending = [t for t in st.pending if t > edge]
        for t in ready:
            out.events.extend(st.silence.on_data(_dt(t)))
        return True

    def _evict(self) -> None:
        """Drop the readings of hours past the hold (keeping the fact that they had data) and what is past the
        repair deadline (bounded memory)."""
        wm = self._wm
        final: dict[int, bool] = {}  # hour → past its repair deadline (computed once per hour)

        def past(h: int) -> bool:
            v = final.get(h)
            if v is None:
                v = final[h] = wm >= repair_deadline(h, self._repair)
            return v

        for sid, st in self._state.items():
            old_hours = [h for h in (*st.subs, *st.das) if h < self._decided and h + _H + self._hold <= wm]
            for h in [h for h in old_hours if (sid, h) not in self._revised]:  # a revision is built first
                st.subs.pop(h, None)
                st.das.pop(h, None)
                st.had.add(h)
                st.changed_hours.add(h)
                self._dirty.add(sid)
            for h in [h for h in st.had if past(h)]:
                st.had.discard(h)
            for h in [h for h in st.hours if past(_day_start(h) + _DAY - _H)]:
                del st.hours[h]
                st.hours_changed = True
                self._dirty.add(sid)
            cut = wm - int(self._repair.total_seconds()) - _H
            for r in st.runs.values():
                r.prune(cut)

    def _revise(self, out: GridOutput) -> None:
        if not self._revised:
            return
        revised, self._revised = sorted(self._revised, key=lambda x: (x[1], x[0])), set()
        hours = sorted({h for _, h in revised})
        self._emit(hours, out, late=True, only={(s, h) for s, h in revised})
        days = sorted({(s, _day_start(h)) for s, h in revised if _day_start(h) + _DAY <= self._decided})
        self._days(days, out)

    # -- emitting -----------------------------------------------------------------------------------------
    def _emit(
        self, hours: Sequence[int], out: GridOutput, *, late: bool, only: set[tuple[str, int]] | None = None
    ) -> None:
        """Build and emit the records of ``hours`` (of every sensor with data, or of ``only``), then judge
        the hotspots and construction-site alarms of those hours."""
        for h in hours:
            changed: list[str] = []
            for sid in sorted(self._state):
                st = self._state[sid]
                if (only is not None and (sid, h) not in only) or not st.held(h):
                    continue
                vals = st.build(h)
                st.hours[h] = vals
                st.hours_changed = True
                out.hourly.append(self._hour_record(st.g, h, vals))
                changed.append(sid)
                self._dirty.add(sid)
                if st.g.kind == "construction_site":
                    pm10 = vals.get("pm10")
                    hit: _Hit | None = None
                    if pm10 is not None and pm10[2] and pm10[0] is not None and pm10[0] > self.pm10_limit:
                        hit = (pm10[0], self.pm10_limit, None)
                    run = st.run(GRID_PM10_ALARM, "pm10", self.pm10_hours)
                    if run.set(h, hit) or run.has_open:
                        out.events.extend(run.recompute(self._decided, late))
            if changed:
                self._hotspots(h, out, late)

    def _hour_record(self, g: GridSensor, h: int, vals: Mapping[str, _Val]) -> GridHour:
        start = _dt(h)
        hours = [AmbientHour(g.id, p, start, v[0], v[1], v[2]) for p, v in vals.items()]
        a = hourly_aqi(hours)
        primary = a.get("primary")
        level = a.get("level")
        value = a.get("aqi")
        category = a.get("category")
        return GridHour(
            sensor=g.id,
            district=g.district,
            township=g.township,
            kind=g.kind,
            hour_start=start,
            values=tuple(hours),
            aqi=value if isinstance(value, int) else None,
            level=level if isinstance(level, int) else None,
            category=category if isinstance(category, str) else None,
            primary=tuple(primary) if isinstance(primary, list) else (),
            standard=str(a.get("standard")),
        )

    def _hotspots(self, h: int, out: GridOutput, late: bool) -> None:
        start = _dt(h)
        for p in self.hotspot_pollutants:
            values: dict[str, float] = {}
            for sid, st in self._state.items():
                v = st.hours.get(h, {}).get(p)
                if st.g.kind in self.hotspot_kinds and v is not None and v[2] and v[0] is not None:
                    values[sid] = v[0]
            hits = {x.sensor: x for x in hotspot_hours(values, self.neighbours, start, self.rule)}
            for sid in sorted(self._state):
                st = self._state[sid]
                if st.g.kind not in self.hotspot_kinds:
                    continue
                x = hits.get(sid)
                hit: _Hit | None = None
                if x is not None:
                    threshold = max(x.neighbours_median * self.rule.ratio, x.neighbours_median + self.rule.floor)
                    evidence = {
                        "hour": start.isoformat(),
                        "value": x.value,
                        "median": x.neighbours_median,
                        "threshold": threshold,
                        "neighbours": dict(sorted(x.neighbours.items())),
                    }
                    hit = (x.value, threshold, evidence)
                existing = st.runs.get((GRID_HOTSPOT, p))
                if hit is None and existing is None:
                    continue
                run = existing or st.run(GRID_HOTSPOT, p, self.rule.hours)
                if run.set(h, hit) or run.has_open:
                    ups = run.recompute(self._decided, late)
                    if ups:
                        out.events.extend(ups)
                        self._dirty.add(sid)

    def _days(self, keys: Sequence[tuple[str, int]], out: GridOutput) -> None:
        for sid, d in keys:
            st = self._state.get(sid)
            if st is None:
                continue
            day = self._day(st, d)
            if day is not None:
                out.daily.append(day)

    def _day(self, st: _Sensor, d: int) -> AmbientDay | None:
        hrs = {h: st.hours[h] for h in range(d, d + _DAY, _H) if h in st.hours}
        if not hrs:
            return None
        g = st.g
        day = _dt(d).date()
        means: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for p in POLLUTANTS:
            hs = [AmbientHour(g.id, p, _dt(h), v[p][0], v[p][1], v[p][2]) for h, v in sorted(hrs.items()) if p in v]
            if not hs:
                continue
            counts[p] = sum(1 for x in hs if x.valid and x.mean is not None)
            if p == "o3":
                hourly = {x.hour_start: x.mean if x.valid else None for x in hs}
                means["o3_8h"] = o3_daily_max_8h(day, o3_8h_means(hourly))
                valid = [x.mean for x in hs if x.valid and x.mean is not None]
                means["o3"] = max(valid) if valid else None
            else:
                means[p] = daily_mean(hs)
        # the daily AQI (HJ 633): 24-h means, O3 by its daily maximum 8-h mean and its maximum 1-h value
        names = {"o3_8h": "o3_8h", "o3": "o3_1h"}
        values = {names.get(p, p): v for p, v in means.items() if v is not None}
        result = aqi(values, period="24h", standard=standard_for(day)) if values else None
        uploaded = sum(1 for v in hrs.values() if any(x[2] for x in v.values()))
        return AmbientDay(
            sensor=g.id,
            district=g.district,
            township=g.township,
            kind=g.kind,
            day=day,
            means=means,
            hours=counts,
            aqi=result.aqi if result is not None else None,
            level=result.level if result is not None else None,
            primary=tuple(result.primary) if result is not None else (),
            upload_rate=upload_rate(uploaded, 24),
        )

    # -- queries ------------------------------------------------------------------------------------------
    def open_events(self) -> list[Event]:
        evs: list[Event] = []
        for st in self._state.values():
            ev = st.silence.open_event
            if ev is not None:
                evs.append(ev)
            for r in st.runs.values():
                evs += [e for e in r.events.values() if e.status == "open"]
        return evs

    def late_counts(self) -> dict[str, int]:
        return {
            "late_readings": self.late_readings,
            "late_unrevised": self.late_unrevised,
            "late_beyond_window": self.late_beyond_window,
        }

    # -- persistence --------------------------------------------------------------------------------------
    def take_changes(self) -> dict[str, dict[str, Any] | None]:
        """What changed since the last call, as rows to store (``None``: delete the row): per sensor changed,
        ``{id}`` its state, ``{id}\t{hour}`` the readings of each held hour that changed (``None`` once they
        left memory), ``{id}\thours`` its emitted hours when they changed; ``""`` the engine's own state.  An
        hour's readings are rewritten when that hour changes, not at every commit (bounded writes)."""
        out: dict[str, dict[str, Any] | None] = {}
        for sid in sorted(self._dirty):
            st = self._state.get(sid)
            if st is None:
                continue
            out[sid] = st.snapshot()
            for h in sorted(st.changed_hours):
                out[f"{sid}\t{h}"] = st.hour_row(h)
            st.changed_hours.clear()
            if st.hours_changed:
                out[f"{sid}\thours"] = st.hours_row()
                st.hours_changed = False
        self._dirty.clear()
        glob = {
            "version": 1,
            "wm": self._wm,
            "decided": self._decided,
            "silence_min": self._silence_min,
            **self.late_counts(),
        }
        if glob != self._saved:
            out[""] = self._saved = glob
        return out

    def restore(self, states: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Restore what :meth:`take_changes` gave (unknown sensors are skipped)."""
        glob = states.get("")
        if glob:
            if glob.get("version") != 1:
                raise ValueError("not a version-1 grid engine state")
            self._wm = int(glob["wm"])
            self._decided = int(glob["decided"])
            self._silence_min = int(glob["silence_min"])
            self.late_readings = int(glob["late_readings"])
            self.late_unrevised = int(glob["late_unrevised"])
            self.late_beyond_window = int(glob["late_beyond_window"])
        for key, s in sorted(states.items()):  # "{id}" sorts before "{id}\t…"
            if key == "" or s is None:
                continue
            sid, _, part = key.partition("\t")
            st = self._sensor(sid)
            if st is None:
                continue
            if not part:
                st.restore(s, self._min_hours)
            elif part == "hours":
                st.restore_hours(s)
            else:
                st.restore_hour(int(part), s)


def grid_day(d: date) -> datetime:
    """The Beijing midnight starting ``d`` (the time of its ``grid_daily`` point)."""
    return datetime(d.year, d.month, d.day, tzinfo=BEIJING)
