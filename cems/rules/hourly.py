"""Hourly validity and averaging (HJ 75-2017 / HJ 76-2017; HJ 212 appendix D; DOMAIN.md §3).

:class:`OutletHourly` is an incremental per-outlet aggregator.  Feed it the outlet's :class:`Reading`s of
any stream in data-time order; it returns an :class:`HourlyRecord` per pollutant code for every hour it
closes.  No I/O, no clock: the caller says when time has passed (:meth:`OutletHourly.flush`).

Rules, per code and Beijing hour (UTC+8 has no DST and a whole-hour offset, so Beijing hours are aligned
with UTC hours; ``hour_start`` is reported with the +08:00 offset):

* Source precedence: the DAS's own hourly record (HJ 212 CN=2061) wins for its hour; otherwise the hour is
  computed from minute records (CN=2051), otherwise from real-time values (CN=2011).
* Only flag N (or no flag) is valid for averages (HJ 212 data flags, DOMAIN.md §2/§3), with one exception
  (issue 12 item 8, a decision, documented in docs/influxdb.md): **T** (over the analyser's range, 超测上限)
  means the true value is *at least* the value sent (the analyser saturated), so an hour must not escape
  judgement because of it.  With ``over_range_valid`` (registry ``[city] over_range_valid``, default true)
  T values are valid sub-values taken at face value as lower bounds; the hour is flagged **T**, is valid, and
  its corrected mean is a lower bound: above the limit, the true mean is too, so it is an exceedance (HJ
  76-2017).  T on O2 gives no valid correction (an O2 beyond the range, typically 25 %, is beyond air).
  **S** (manual value, 手工输入) and **B** (analyser–logger communication failure) are not valid: they are not
  the analyser's measurement (HJ 212-2017 data flags: only N is valid for averages), and data marked invalid
  are not used to judge exceedances (MEE 公告2022年第21号 《污染物排放自动监测设备标记规则》, DOMAIN.md §9).
  Their hours count as received, not valid (the 90 % rule); a repair (修约) replaces them through the DAS.
* The cadence of real-time and minute data is inferred from the hour's own data, not assumed (issue 12
  item 6, :func:`cems.rules.cadence.hour_cadence`): the lower median of the gaps between the code's data
  times in the hour, robust to strays; the registry's ``rtd_interval_s`` (real-time) or the last minute
  period seen is only the hint for an hour with fewer than three values.
* A minute mean is valid with ≥ 12 valid instantaneous values (HJ 75-2017).  The 12 are the analyser's
  instantaneous samples (one per ≤ 5 s); CN=2011 real-time values are a sub-sample of them at the DAS's
  real-time interval.  When fewer than 12 real-time values per minute are expected (``60 // cadence``),
  every expected value must be there: ``need = min(12, max(1, 60 // cadence))`` (or a fixed
  ``min_rtd_per_minute``).  A real-time interval longer than a minute (a DAS sending every 90 s, say) leaves
  minutes without any value, so such values are counted like minute records: each valid value covers its
  interval (up to the next value), and the covered minutes are the valid minutes — otherwise any interval
  over 80 s could never reach 45 minutes.
* An hourly mean is valid with ≥ 45 valid minutes (HJ 75-2017).  Minute records (CN=2051) may have a
  period of 1–10 min (HJ 212 ``MinInterval``): each counts for its period (the inferred cadence, rounded to
  whole minutes), up to the next record.
* A minute/hour is flagged N when ≥ 75 % of its sub-values are N, otherwise D (HJ 212 appendix D).  A
  real-time minute counts as an N sub-value of the hour only when it is valid (N and ≥ ``need`` values).
  The hour's share is taken over its 60 minutes (a minute without data is not N): 75 % of 60 is the 45
  minutes of HJ 75-2017, so a computed hour's flag and validity never contradict each other.
* The corrected (折算) hourly value is computed from the hourly mean of C and the hourly mean of O2 with
  the outlet's reference O2 at that hour (:mod:`cems.rules.o2`); a DAS ``-ZsAvg`` is used only when it agrees
  with the formula, otherwise the computed value is used and ``note`` says so.  The O2 mean is taken from
  flag-N O2 data only.  No concentration hour is valid without a valid corrected value (issue 12 item 2):
  when the O2 hour is missing, not valid, flagged, ≥ 21 % or above the dilution cut-off (``max_o2``, registry
  ``city.o2_max`` / ``outlet.o2_max``, :data:`cems.rules.o2.DEFAULT_MAX_O2`), the hour is not valid
  (flag D, ``o2_invalid``; it counts as received, not valid, for the 90 % rule) and the corrected value, when
  the formula still gives one, is reported for information only.
* An exceedance (超标) is a valid hour (flag N, or T: a lower bound) whose corrected mean is above the limit
  (HJ 76-2017).  Hours flagged F/M/D/C/S/B are never exceedances.

Event time (issue 12 item 1).  An hour is *emitted* (its records are returned, provisional) when the
outlet's watermark passes its end plus ``lateness``: the watermark is the newest time known for the outlet,
its newest data time (:meth:`OutletHourly.feed`) or, live, the wall clock (:meth:`OutletHourly.advance`);
replay ends with :meth:`OutletHourly.flush`.  ``lateness`` (default 5 min) only delays the first emission
(a DAS sends the CN=2061 record of 08:00–09:00 after real-time data of 09:00).  An emitted hour stays
revisable until its repair deadline (:func:`repair_deadline`: 10 days after its end, and no later than the
end of the 10th of the next month, DOMAIN.md §5): data for it revise it and the records are emitted again
(:meth:`OutletHourly.revisions`; same keys, so the stored points are rewritten).  Hence the records are the
same whatever the arrival order, live and in replay.  Memory is bounded: an emitted hour keeps its
sub-values in memory for ``hold`` (default 3 h) after its end; then they go, exactly (:func:`pack_hour`), to
an :class:`HourArchive` (live: the ingester's SQLite state; replay: a temporary file; :mod:`cems.hour_archive`)
and only the fact that it had data is kept in memory (a few spans).  Late data for such an hour bring it
back from the archive and revise it exactly up to the repair deadline — an hour is rebuilt from all its
sub-values, because a summary cannot be: a re-sent value replaces the earlier one of the same second, and
the inferred cadence needs every data time.  Late data for an hour that had no data at all (a link outage,
back-filled: 补传) start it afresh.  Without an archive, or when the archive lost the hour, late data for an
hour that had data and left memory cannot be merged exactly and are counted (``late_unrevised``); data
after the repair deadline are counted (``late_beyond_window``).  The caller keeps the raw data either way (the sinks
store it unaltered).  Counters: ``late_readings`` (merged into an emitted hour), ``late_unrevised``,
``late_beyond_window``.

Which clock says the deadline has passed.  Here: the outlet's watermark (its newest data time, or the clock given
to :meth:`OutletHourly.advance`), and only for an hour already emitted.  That alone left a gap: the hours of an
outlet that never had one emitted (a new outlet) are open, so its back-fill older than the window counted until
the first clock advance after its first reading.  Live, the engine therefore refuses such data before any rule:
:class:`cems.engine.ComplianceEngine` (and :class:`cems.rules.grid.GridEngine`) are given the service's clock
with every batch (``on_readings(..., now=)``, the clock of the ticks; passed in, never read here), and a
reading of an hour before :func:`final_before` of that clock is counted ``late_beyond_window`` and changes no
figure, whatever the clock advances before or between the readings.  ``cems replay`` gives no clock (files carry
no arrival time): data are taken as arrived in time, the watermark standing for the clock (docs/events.md).
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from operator import sub as _sub
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeAlias

from cems.model import BEIJING, FLOW, O2, Reading, Stream, beijing_ts
from cems.registry import Outlet
from cems.rules._shared import SharedSettings, shared_hour
from cems.rules.cadence import STREAM_HINT_S, hour_cadence
from cems.rules.limits import LimitSchedule
from cems.rules.o2 import DEFAULT_MAX_O2, DEFAULT_ZS_ABS_TOL, O2_AIR, correct, zs_agrees

#: The streams as module constants: ``Stream.RTD`` (an enum class attribute) costs ≈ 950 instructions a look-up,
#: a module global ≈ 40 (callgrind; several per reading, issue 20)
_S_RTD: Final = Stream.RTD
_S_HOUR: Final = Stream.HOUR
_S_DAY: Final = Stream.DAY

#: Thresholds of HJ 75-2017 (DOMAIN.md §3).
MIN_VALUES_PER_MINUTE: Final = 12
MIN_VALID_MINUTES_PER_HOUR: Final = 45
N_FLAG_SHARE: Final = 0.75

#: Default time an hour stays open after its end for late data of that hour (see module docstring).
DEFAULT_LATENESS: Final = timedelta(minutes=5)
#: Default time an emitted (provisional) hour keeps its sub-values in memory after its end, so that late data
#: of an hour that already had data revise it exactly (the DAS's CN=2061 record, sent after the hour; data
#: back-filled after a short link outage).  Bounded memory: see the module docstring.
DEFAULT_HOLD: Final = timedelta(hours=3)
#: The repair window (修约/补遗 within 10 days; DOMAIN.md §5, §9): data of an hour arriving later than this
#: after the hour's end, or after the 10th of the next month, no longer move any figure.
REPAIR_WINDOW: Final = timedelta(days=10)
#: A month's figures are final after this day of the next month (documents due by the 10th, DOMAIN.md §5).
MONTH_FINAL_DAY: Final = 10

SOURCE_DAS: Final = "das_2061"
SOURCE_MINUTES: Final = "minutes"
SOURCE_REALTIME: Final = "realtime"

_N_FLAGS: Final = frozenset({None, "N", "n"})
_T_FLAGS: Final = frozenset({"T", "t"})
#: Flags of a valid hour: N, or T when over-range values entered it as lower bounds (see the module docstring).
VALID_HOUR_FLAGS: Final = frozenset({"N", "T"})

#: Sub-value states: not valid; valid (flag N or none); valid lower bound (flag T, over the analyser's range).
_BAD: Final = 0
_OK: Final = 1
_LOWER_BOUND: Final = 2
_NAN: Final = float("nan")
_NEVER: Final = -(1 << 62)

#: The code lists of hours (:class:`_HourAcc`, :class:`cems.rules.quality._HourStats`) as shared tuples: the
#: outlets of a city send a handful of code sequences, so every hour of every outlet refers to one of a few
#: tuples instead of keeping a list of its own (memory, issue 20: ≈ 120 bytes an hour and stream).  Bounded: a
#: DAS sending ever new codes gets tuples of its own once the table is full.
_CODE_TUPLES: dict[tuple[tuple[str, ...], str], tuple[str, ...]] = {}
_CODE_TUPLES_MAX: Final = 4096


def with_code(codes: tuple[str, ...], code: str) -> tuple[str, ...]:
    """``codes + (code,)``, shared with every other hour that has the same codes in the same order."""
    key = (codes, code)
    t = _CODE_TUPLES.get(key)
    if t is None:
        t = (*codes, code)
        if len(_CODE_TUPLES) < _CODE_TUPLES_MAX:
            _CODE_TUPLES[key] = t
    return t


# ---------------------------------------------------------------------------------------------- units

#: Unit the standard uses for each non-concentration code (HJ 212-2017 appendix B; DOMAIN.md §2).
#: Every other code is a concentration in mg/m³.
CANONICAL_UNIT: Final[dict[str, str]] = {
    FLOW: "m3/s",
    "a01011": "m/s",  # velocity
    "a01012": "degC",  # temperature
    "a01013": "kPa",  # pressure
    "a01014": "%",  # humidity
    O2: "%",
}

#: Accepted unit spellings (normalised: lower case, ³→3, µ/μ→u, ℃/°c→degc) → (canonical unit, factor).
UNIT_TABLE: Final[dict[str, tuple[str, float]]] = {
    "m3/s": ("m3/s", 1.0),
    "m3/min": ("m3/s", 1.0 / 60.0),
    "m3/h": ("m3/s", 1.0 / 3600.0),
    "kpa": ("kPa", 1.0),
    "pa": ("kPa", 1e-3),
    "hpa": ("kPa", 0.1),
    "mpa": ("kPa", 1000.0),
    "mg/m3": ("mg/m3", 1.0),
    "ug/m3": ("mg/m3", 1e-3),
    "g/m3": ("mg/m3", 1000.0),
    "%": ("%", 1.0),
    "m/s": ("m/s", 1.0),
    "degc": ("degC", 1.0),
}

#: Molar volume at the standard state of the standards (273.15 K, 101.325 kPa), L/mol.
MOLAR_VOLUME_L: Final = 22.414
#: Molar masses (g/mol) for ppm → mg/m³ (mg/m³ = ppm × M / 22.414).  NOx is expressed as NO2 (DOMAIN.md §3).
PPM_MOLAR_MASS: Final[dict[str, float]] = {
    "a21026": 64.066,  # SO2
    "a21002": 46.006,  # NOx as NO2
    "a21003": 30.006,  # NO
    "a21004": 46.006,  # NO2
    "a21005": 28.010,  # CO
}


def _norm_unit(unit: str) -> str:
    u = unit.strip().lower().replace("³", "3").replace("µ", "u").replace("μ", "u")
    return u.replace("℃", "degc").replace("°c", "degc").replace(" ", "")


def is_concentration(code: str) -> bool:
    """Codes whose values are concentrations (corrected to reference O2 and compared with limits)."""
    return code not in CANONICAL_UNIT and not code.startswith(("a00", "a01"))


def unit_factor(code: str, unit: str) -> float:
    """Factor that turns a value of ``code`` sent in ``unit`` into the standard's unit.

    Raises ``ValueError`` for an unknown unit or one of the wrong kind (e.g. ``m3/h`` for SO2).
    """
    u = _norm_unit(unit)
    want = CANONICAL_UNIT.get(code, "mg/m3")
    if u == "ppm":
        mass = PPM_MOLAR_MASS.get(code)
        if mass is None:
            raise ValueError(f"{code}: no molar mass to convert ppm to mg/m3")
        return mass / MOLAR_VOLUME_L
    entry = UNIT_TABLE.get(u)
    if entry is None:
        raise ValueError(f"{code}: unknown unit {unit!r} (known: {', '.join(sorted(UNIT_TABLE))}, ppm)")
    if entry[0] != want:
        raise ValueError(f"{code}: unit {unit!r} is {entry[0]}, but {code} is measured in {want}")
    return entry[1]


#: The factors of an outlet without conversions (most of them): one shared, read-only mapping.
_NO_FACTORS: Final[Mapping[str, float]] = MappingProxyType({})


def unit_factors(outlet: Outlet) -> Mapping[str, float]:
    """Conversion factors of an outlet (``outlet.units``); codes with factor 1 are left out."""
    out: dict[str, float] = {}
    for code, unit in outlet.units.items():
        f = unit_factor(code, unit)
        if f != 1.0:
            out[code] = f
    return out or _NO_FACTORS  # memory: one shared empty mapping, not one dict per outlet


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class HourlyRecord:
    """The hourly result of one pollutant code of one outlet.

    ``hour_start``: aware, Beijing time, aligned on the hour.  ``avg``/``o2_avg``: hourly means in the
    standard's units.  ``zs_avg``: corrected to ``ref_o2`` (``zs_source`` "computed" or "das"; ``None`` when
    no valid correction exists or the code is not a concentration).  ``das_zs_avg``: what the DAS sent.
    ``valid``: the hour meets the validity rules; ``flag``: "N", "D" or the DAS's flag.  ``source``:
    "das_2061", "minutes" or "realtime".  ``valid_minutes``: ``None`` for a DAS record.  ``note``: why a
    corrected value is missing or why the DAS's value was not used.
    """

    mn: str
    pollutant: str
    hour_start: datetime
    avg: float | None
    o2_avg: float | None
    zs_avg: float | None
    das_zs_avg: float | None
    zs_source: str | None
    valid: bool
    flag: str
    source: str
    valid_minutes: int | None
    limit: float | None
    ref_o2: float | None
    profile: str | None
    exceeds: bool
    note: str = ""
    #: The code's own data were valid but no valid corrected value exists (O2 missing, not valid, ≥ 21 % or
    #: above the dilution cut-off), so the hour is not valid (issue 12 item 2).
    o2_invalid: bool = False

    @property
    def hour_end(self) -> datetime:
        return self.hour_start + timedelta(hours=1)

    @property
    def counts_valid(self) -> bool:
        """Valid for the 有效率 of the transmission rule (DOMAIN.md §5): a valid hour (flag N, or T)."""
        return self.valid and self.flag in VALID_HOUR_FLAGS

    def to_json(self) -> dict[str, Any]:
        return {
            "mn": self.mn,
            "pollutant": self.pollutant,
            "hour_start": self.hour_start.astimezone(BEIJING).isoformat(),
            "avg": self.avg,
            "o2_avg": self.o2_avg,
            "zs_avg": self.zs_avg,
            "das_zs_avg": self.das_zs_avg,
            "zs_source": self.zs_source,
            "valid": self.valid,
            "flag": self.flag,
            "source": self.source,
            "valid_minutes": self.valid_minutes,
            "limit": self.limit,
            "ref_o2": self.ref_o2,
            "profile": self.profile,
            "exceeds": self.exceeds,
            "note": self.note,
            "o2_invalid": self.o2_invalid,
        }


def repair_deadline(hour: int, window: timedelta = REPAIR_WINDOW) -> int:
    """When the hour starting at ``hour`` (epoch s) becomes final (epoch s): ``window`` after its end, and no
    later than the end of the ``MONTH_FINAL_DAY``-th of the next Beijing month (DOMAIN.md §5, §9)."""
    key = (hour, window)
    d = _deadlines.get(key)
    if d is None:
        if len(_deadlines) >= _DEADLINES_KEPT:
            _deadlines.clear()
        d = _deadlines[key] = _repair_deadline(hour, window)
    return d


#: :func:`repair_deadline` remembered (CPU, issue 20: the aggregators ask for the same few hours at every
#: reading or hour closed, ≈ 2 µs a computation); cleared when full.
_deadlines: dict[tuple[int, timedelta], int] = {}
_DEADLINES_KEPT: Final = 1 << 14


def _repair_deadline(hour: int, window: timedelta) -> int:
    d = datetime.fromtimestamp(hour, BEIJING)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    month_final = datetime(y, m, MONTH_FINAL_DAY, tzinfo=BEIJING) + timedelta(days=1)
    return min(hour + 3600 + int(window.total_seconds()), math.floor(month_final.timestamp()))


def final_before(now: int, window: timedelta = REPAIR_WINDOW) -> int:
    """The first hour (epoch s) whose :func:`repair_deadline` is after ``now`` (epoch s): every hour starting
    before it is final at ``now`` (the deadline grows with the hour and is at most its end plus ``window``)."""
    h = now - 3600 - int(window.total_seconds())
    h -= h % 3600
    while repair_deadline(h + 3600, window) <= now:
        h += 3600
    return h + 3600


def beijing_hour(t: datetime) -> datetime:
    """The start of the Beijing hour containing ``t`` (naive = Beijing time)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=BEIJING)
    ts = math.floor(t.timestamp())
    return datetime.fromtimestamp(ts - ts % 3600, BEIJING)


# ---------------------------------------------------------------------------------------------- aggregator

# (value, state) of one sub-value; value is NaN for a flagged code sent without a number.
_Sub = tuple[float, int]  # (value, _BAD | _OK | _LOWER_BOUND)
# (avg, valid, flag, source, valid_minutes, das_zs)
_HourValue = tuple[float | None, bool, str, str, int | None, float | None]

#: The DAS records of the hours that have none (most): one shared mapping, never written
#: (:meth:`_HourAcc.das_writable` gives the hour its own dict first).
_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})
#: A stream's log of one hour (see :class:`_HourAcc`): (key, value) pairs of float64, the key
#: ``code index << 18 | second << 2 | state`` (an integer below 2⁵³: exact as a float).
_Log: TypeAlias = "array[float]"
#: Shift of the code index in a log key; the second takes the 16 bits below the state's 2 (as in :func:`pack_hour`).
_CODE_SHIFT: Final = 18
_SEC_LIMIT: Final = 1 << 16


def _grouped(codes: tuple[str, ...] | None, log: _Log | None) -> dict[str, dict[int, _Sub]]:
    """code → second → (value, state) of a stream's log: codes in order of first arrival, seconds in order
    of first arrival, a re-sent second's value replacing the earlier one (what a dict per code kept)."""
    if codes is None or log is None:
        return {}
    ds: list[dict[int, _Sub]] = [{} for _ in codes]
    it = iter(log)
    for k, v in zip(it, it):  # noqa: B905 (pairs by construction)
        key = int(k)
        ds[key >> _CODE_SHIFT][key >> 2 & 0xFFFF] = (v, key & 3)
    return dict(zip(codes, ds, strict=True))


class _HourAcc:
    """One hour of one outlet in memory: the DAS's hourly records and the real-time and minute sub-values.

    Memory (issue 20): a stream's sub-values are a log in arrival order, one ``array("d")`` of (key, value)
    pairs, the key packing the code's index, the second and the state (:data:`_CODE_SHIFT`), 16 bytes a
    sub-value, with the hour's codes (a tuple shared by the hours with the same codes, :func:`with_code`),
    instead of a dict per code of (value, state) tuples (≈ 100 bytes a sub-value, and ≈ 300 for a code with
    one value).  (Before: two arrays, the (index, second, state) triples as 32-bit integers and the values,
    20 bytes a sub-value and one array object more.)  :attr:`rtd` and :attr:`mins` group a log back into
    those dicts (:func:`_grouped`) when the hour is built, packed or saved."""

    __slots__ = ("das", "hour", "mins_codes", "mins_log", "rtd_codes", "rtd_log")

    def __init__(self) -> None:
        self.hour = 0  # start (epoch s), set by :meth:`_OpenHours.put`
        self.das: Mapping[str, tuple[float | None, float | None, str]] = _NOTHING
        self.rtd_codes: tuple[str, ...] | None = None
        self.rtd_log: _Log | None = None
        self.mins_codes: tuple[str, ...] | None = None
        self.mins_log: _Log | None = None

    def das_writable(self) -> dict[str, tuple[float | None, float | None, str]]:
        das = self.das
        if das is _NOTHING:
            das = self.das = {}
        assert isinstance(das, dict)
        return das

    def log(self, kind: str) -> tuple[tuple[str, ...], _Log]:
        """The codes and the log of stream ``kind`` ("rtd" or "mins"), made on first use."""
        if kind == "rtd":
            if self.rtd_codes is None or self.rtd_log is None:
                self.rtd_codes, self.rtd_log = (), array("d")
            return self.rtd_codes, self.rtd_log
        if self.mins_codes is None or self.mins_log is None:
            self.mins_codes, self.mins_log = (), array("d")
        return self.mins_codes, self.mins_log

    def new_code(self, kind: str, codes: tuple[str, ...], code: str) -> tuple[str, ...]:
        """Stream ``kind``'s codes ``codes`` with ``code`` added (returned, and kept)."""
        codes = with_code(codes, code)
        if kind == "rtd":
            self.rtd_codes = codes
        else:
            self.mins_codes = codes
        return codes

    def add(self, kind: str, code: str, sec: int, v: float, ok: int) -> None:
        if not 0 <= sec < _SEC_LIMIT or not 0 <= ok <= 3:
            raise ValueError(f"second {sec} or state {ok} out of range")
        codes, log = self.log(kind)
        try:
            i = codes.index(code)
        except ValueError:
            i = len(codes)
            self.new_code(kind, codes, code)
        log.append(i << _CODE_SHIFT | sec << 2 | ok)
        log.append(v)

    @property
    def rtd(self) -> dict[str, dict[int, _Sub]]:
        return _grouped(self.rtd_codes, self.rtd_log)

    @property
    def mins(self) -> dict[str, dict[int, _Sub]]:
        return _grouped(self.mins_codes, self.mins_log)


class _OpenHours(list[_HourAcc]):
    """An outlet's hours in memory, ascending by hour (each :class:`_HourAcc` knows its own): a list, not a dict
    by hour (memory, issue 20: a dict of one to five hours is ≈ 220–350 bytes, the list ≈ 90–120).  A handful of
    hours, looked up from the newest."""

    __slots__ = ()

    def get(self, hour: int) -> _HourAcc | None:
        for acc in reversed(self):
            h = acc.hour
            if h == hour:
                return acc
            if h < hour:
                return None
        return None

    def put(self, hour: int, acc: _HourAcc) -> _HourAcc:
        """Keep ``acc`` as hour ``hour`` (replacing the hour's former one)."""
        acc.hour = hour
        for i in range(len(self) - 1, -1, -1):
            h = self[i].hour
            if h == hour:
                self[i] = acc
                return acc
            if h < hour:
                self.insert(i + 1, acc)
                return acc
        self.insert(0, acc)
        return acc

    def take(self, hour: int) -> _HourAcc:
        """Remove hour ``hour`` (which is here) and return it."""
        for i in range(len(self) - 1, -1, -1):
            if self[i].hour == hour:
                return self.pop(i)
        raise KeyError(hour)

    def hours(self) -> list[int]:
        """The hours, ascending."""
        return [acc.hour for acc in self]


def _subs_json(d: dict[str, dict[int, _Sub]]) -> dict[str, list[list[Any]]]:
    """An open hour's sub-values of one stream as :meth:`OutletHourly.snapshot` writes them."""
    return {
        code: [[s, None if math.isnan(v) else v, ok] for s, (v, ok) in sorted(vals.items())] for code, vals in d.items()
    }


class HourArchive(Protocol):
    """Where an outlet's emitted hours go when they leave memory, until their repair deadline (late data of
    such an hour are merged exactly: :meth:`OutletHourly.feed`).  Live: the ingester's SQLite state (written
    with the next commit); replay: a temporary SQLite file (the newest hours kept unpacked in memory, bounded).
    Keys: outlet MN and hour start (epoch s); values: :func:`pack_hour` bytes."""

    def put(self, mn: str, hour: int, data: bytes) -> None: ...

    def put_hour(self, mn: str, hour: int, acc: _HourAcc) -> None:
        """Keep hour ``acc`` (no longer referenced by the aggregator): as ``put(mn, hour, pack_hour(acc))``, the
        packing left to the archive (replay packs only what it must write to disk)."""
        ...

    def get(self, mn: str, hour: int) -> bytes | None: ...


_BIG_ENDIAN: Final = sys.byteorder == "big"  # packed hours are little-endian
#: Format byte of :func:`pack_hour` (a zlib-compressed JSON header, then the arrays).
_PACK_VERSION: Final = 1


def pack_hour(acc: _HourAcc) -> bytes:
    """An hour's sub-values as compact bytes: exact (float64 values, every second kept, flags), so that
    :func:`unpack_hour` gives the same hour back.  Layout: version byte, then zlib of a JSON header (DAS
    records; per stream and code, the number of sub-values) followed by the seconds (uint16), values (float64,
    NaN for a flagged code sent without a number) and states (uint8) of each code in header order."""
    head: dict[str, Any] = {"d": {c: list(v) for c, v in acc.das.items()}, "m": [], "r": []}
    body = bytearray()
    for key, subs in (("m", acc.mins), ("r", acc.rtd)):
        codes = head[key]
        for code, d in subs.items():
            secs = sorted(d)
            codes.append([code, len(secs)])
            a_secs = array("H", secs)
            vs, oks = zip(*map(d.__getitem__, secs), strict=True) if secs else ((), ())
            a_vals = array("d", vs)
            if _BIG_ENDIAN:
                a_secs.byteswap()
                a_vals.byteswap()
            body += a_secs.tobytes()
            body += a_vals.tobytes()
            body += bytes(oks)
    raw = json.dumps(head, separators=(",", ":")).encode()
    return bytes([_PACK_VERSION]) + zlib.compress(len(raw).to_bytes(4, "little") + raw + bytes(body), 1)


def unpack_hour(data: bytes) -> _HourAcc:
    """The hour that :func:`pack_hour` packed."""
    if not data or data[0] != _PACK_VERSION:
        raise ValueError("not a packed hour of a known version")
    raw = zlib.decompress(data[1:])
    n = int.from_bytes(raw[:4], "little")
    head = json.loads(raw[4 : 4 + n])
    pos = 4 + n
    acc = _HourAcc()
    if head["d"]:
        acc.das = {c: (a, z, str(f)) for c, (a, z, f) in head["d"].items()}
    for key, kind in (("m", "mins"), ("r", "rtd")):
        for code, k in head[key]:
            secs = array("H")
            secs.frombytes(raw[pos : pos + 2 * k])
            pos += 2 * k
            vs = array("d")
            vs.frombytes(raw[pos : pos + 8 * k])
            pos += 8 * k
            oks = raw[pos : pos + k]
            pos += k
            if not k:
                continue
            if _BIG_ENDIAN:
                secs.byteswap()
                vs.byteswap()
            # the log as :meth:`_HourAcc.add` made it, one code after the other (CPU: in bulk)
            codes, log = acc.log(kind)
            base = len(codes) << _CODE_SHIFT
            acc.new_code(kind, codes, code)
            pairs: list[float] = [0.0] * (2 * k)
            pairs[0::2] = [base | s << 2 | ok for s, ok in zip(secs, oks, strict=True)]
            pairs[1::2] = vs
            log.extend(pairs)
    return acc


def _hour_flag(valid: bool, lower_bound: bool = False) -> str:
    """The flag of a computed hour: N when ≥ 75 % of its sub-values are N, otherwise D (HJ 212 appendix D).

    The share is taken over the hour's 60 minutes, not over the minutes that happened to arrive: a minute
    with no data is not an N minute.  75 % of 60 minutes is HJ 75-2017's 45 valid minutes, so the flag and
    the validity of a computed hour always agree (issue 12 item 12: 40 minutes covered, all N, used to show
    flag N on an invalid hour).  A valid hour that over-range (T) values entered is flagged T: its mean is a
    lower bound of the true mean.
    """
    if not valid:
        return "D"
    return "T" if lower_bound else "N"


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


#: The evicted spans of an outlet that has evicted nothing (shared, never written: ``_evict`` makes its own).
_NO_SPANS: Final[list[list[int]]] = []


class _Params:
    """An aggregator's settings (see :class:`OutletHourly`), one object for every outlet that has the same."""

    __slots__ = (
        "abs_tol",
        "archive",
        "factors",
        "hold_s",
        "journaling",
        "lateness_s",
        "max_o2",
        "over_range_valid",
        "rel_tol",
        "repair",
        "schedule",
    )

    def __init__(
        self,
        lateness_s: int,
        hold_s: int,
        repair: timedelta,
        schedule: LimitSchedule,
        factors: Mapping[str, float],
        max_o2: float,
        over_range_valid: bool,
        rel_tol: float,
        abs_tol: float,
        archive: HourArchive | None,
        journaling: bool,
    ) -> None:
        self.lateness_s = lateness_s
        self.hold_s = hold_s
        self.repair = repair
        #: Limits over time: shared by the outlets with the same limit configuration (the engine's).
        self.schedule = schedule
        #: Unit factors (code → factor to the standard's unit): one shared empty mapping for most outlets.
        self.factors = factors
        self.max_o2 = max_o2
        self.over_range_valid = over_range_valid
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol
        #: Where emitted hours go when they leave memory (``None``: nowhere, late data for them are counted).
        self.archive = archive
        #: Whether ``feed`` keeps a journal (``False``: nothing is persisted, ``cems replay``).
        self.journaling = journaling


#: The settings objects, one per distinct set of values (memory, issue 20).
_params = SharedSettings(_Params)


class OutletHourly:
    """Incremental hourly aggregator of one outlet (see the module docstring for the rules).

    Drive it with ``feed(reading)`` in (roughly) data-time order and ``flush(until)``; both return the
    records of the hours they close, in hour order then code order.  ``snapshot()``/``restore()`` keep the
    open hours across a restart.
    """

    # memory (issue 20): one per outlet
    __slots__ = (
        "_closed_before",
        "_dirty",
        "_evicted",
        "_journal",
        "_min_interval",
        "_need",
        "_now",
        "_open",
        "_p",
        "_rtd_hint",
        "_touched",
        "late_beyond_window",
        "late_readings",
        "late_unrevised",
        "mn",
        "outlet",
    )

    def __init__(
        self,
        outlet: Outlet,
        *,
        lateness: timedelta = DEFAULT_LATENESS,
        schedule: LimitSchedule | None = None,
        min_rtd_per_minute: int | None = None,
        max_o2: float = DEFAULT_MAX_O2,
        zs_rel_tol: float = 0.02,
        zs_abs_tol: float = DEFAULT_ZS_ABS_TOL,
        over_range_valid: bool = True,
        journal: bool = True,
        hold: timedelta = DEFAULT_HOLD,
        repair_window: timedelta = REPAIR_WINDOW,
        archive: HourArchive | None = None,
    ) -> None:
        if lateness < timedelta(0) or hold < timedelta(0):
            raise ValueError("lateness and hold must be ≥ 0")
        self.outlet = outlet
        self.mn = outlet.mn
        if min_rtd_per_minute is not None and min_rtd_per_minute < 1:
            raise ValueError("min_rtd_per_minute must be ≥ 1")
        #: The settings, shared with the outlets that have the same (memory, issue 20).
        self._p = _params(
            int(lateness.total_seconds()),
            int(hold.total_seconds()),
            repair_window,
            schedule if schedule is not None else LimitSchedule(outlet),
            unit_factors(outlet),
            max_o2,
            over_range_valid,
            zs_rel_tol,
            zs_abs_tol,
            archive,
            journal,
        )
        #: Fixed values-per-minute rule; ``None``: from the hour's inferred real-time cadence (issue 12 item 6).
        self._need = min_rtd_per_minute
        #: Hint for the real-time cadence of an hour with too few values to infer it from.
        self._rtd_hint = outlet.rtd_interval_s
        #: Hours in memory: not yet emitted (≥ ``_closed_before``) and emitted but held (revisable exactly).
        self._open = _OpenHours()
        self._closed_before = _NEVER  # every hour starting before this (epoch s) has been emitted
        self._now = _NEVER  # the watermark before ``lateness``: newest data time or clock (epoch s)
        self._dirty: set[int] | None = None  # emitted hours revised since :meth:`revisions`
        #: emitted hours revised late → watermark of their last revision (held ``hold`` after it)
        self._touched: dict[int, int] | None = None
        #: [start, end) spans of emitted hours that had data and whose sub-values were dropped from memory
        #: (within the repair window)
        self._evicted: list[list[int]] = _NO_SPANS  # made on first use (memory: most outlets evict nothing yet)
        self._min_interval = STREAM_HINT_S[Stream.MIN]  # CN=2051 period of an hour with one record, seconds
        #: Readings merged into an already-emitted hour (the hour was revised).
        self.late_readings = 0
        #: Readings for an emitted hour that had data and can no longer be rebuilt exactly (no archive, or the
        #: archive lost it): stored by the caller, not merged.
        self.late_unrevised = 0
        #: Readings after their hour's repair deadline (final figures do not move).
        self.late_beyond_window = 0
        #: What ``feed`` added to the open hours since :meth:`take_journal` (incremental persistence):
        #: ``("s", hour, "rtd"|"mins", code, sec, value, ok)`` and ``("d", hour, code, avg, zs, flag)``;
        #: ``None`` when nothing is persisted (``cems replay``: it would only grow).
        self._journal: list[tuple[Any, ...]] | None = None  # made on first use (memory: idle outlets)

    # -- input

    def feed(self, reading: Reading) -> list[HourlyRecord]:
        """Add one reading of this outlet; return the records of the hours this closes.

        The caller rejects data times in the future (validator): a far-future data time would close every
        open hour and make the real data that follows late.
        """
        stream = reading.stream
        if stream is _S_DAY:
            return []
        if reading.mn != self.mn:
            raise ValueError(f"reading of {reading.mn!r} fed to the aggregator of {self.mn!r}")
        ts = math.floor(beijing_ts(reading.data_time))  # (naive: Beijing time; one conversion per reading)
        hour = ts - ts % 3600
        acc = self._open.get(hour)
        if hour >= self._closed_before or self._accept_late(hour, acc is not None):
            if acc is None:
                acc = self._open.get(hour)  # brought back from the archive by _accept_late
            if acc is None:
                acc = self._open.put(shared_hour(hour), _HourAcc())  # (one int object per hour, shared)
            factors = self._p.factors
            isfinite = math.isfinite
            journal = self._journal
            if journal is None and self._p.journaling:
                journal = self._journal = []
            if stream is _S_HOUR:
                das = acc.das_writable()
                for code, m in reading.measurements.items():
                    avg = _num(m.values.get("Avg"))
                    zs = _num(m.values.get("ZsAvg"))
                    if avg is None and zs is None and m.flag is None:
                        continue
                    f = factors.get(code)
                    if f is not None:
                        avg = None if avg is None else avg * f
                        zs = None if zs is None else zs * f
                    das[code] = dv = (avg, zs, "N" if m.flag is None else m.flag.upper())
                    if journal is not None:
                        journal.append(("d", hour, code, *dv))
            else:
                key = "Rtd" if stream is _S_RTD else "Avg"
                kind = "rtd" if stream is _S_RTD else "mins"
                codes, log = acc.log(kind)
                append = log.append
                over_range = self._p.over_range_valid
                sec = ts - hour
                sec_key = sec << 2  # (the second's part of the log key, see _HourAcc)
                for code, m in reading.measurements.items():
                    v = m.values.get(key)
                    flag = m.flag
                    ok = _OK if flag in _N_FLAGS else _LOWER_BOUND if over_range and flag in _T_FLAGS else _BAD
                    if v is None or not isfinite(v):
                        if ok == _OK:
                            continue  # no number and no flag: nothing was sent for this code
                        v, ok = _NAN, _BAD
                    elif factors:  # (most outlets have none: no look-up per code)
                        f = factors.get(code)
                        if f is not None:
                            v *= f
                    try:
                        i = codes.index(code)
                    except ValueError:  # the code's first sub-value of the hour
                        i = len(codes)
                        codes = acc.new_code(kind, codes, code)
                    append(i << _CODE_SHIFT | sec_key | ok)
                    append(v)
                    if journal is not None:
                        journal.append(("s", hour, kind, code, sec, v, ok))
        if ts > self._now:
            self._now = ts
        wm = ts - self._p.lateness_s
        wm -= wm % 3600
        if wm > self._closed_before:
            return self._close(wm)
        return []

    def _accept_late(self, hour: int, held: bool) -> bool:
        """A reading for an emitted hour: merge it (and mark the hour for :meth:`revisions`) or count it."""
        if self._now >= repair_deadline(hour, self._p.repair):
            self.late_beyond_window += 1
            return False
        if not held and self._was_evicted(hour) and (self._p.archive is None or not self._in_archive(hour)):
            self.late_unrevised += 1
            return False
        self.late_readings += 1
        if self._dirty is None:
            self._dirty = set()
        self._dirty.add(hour)
        return True

    def _was_evicted(self, hour: int) -> bool:
        return any(a <= hour < b for a, b in self._evicted)

    def _in_archive(self, hour: int) -> bool:
        """Bring an evicted hour back from the archive into memory (``False``: the archive lost it)."""
        assert self._p.archive is not None
        data = self._p.archive.get(self.mn, hour)
        if data is None:
            return False
        acc = self._open.put(hour, unpack_hour(data))
        journal = self._journal
        if journal is None and self._p.journaling:
            journal = self._journal = []
        if journal is not None:  # the hour is in memory again: its whole content, after a reset, for a restart
            journal.append(("x", hour))
            for code, dv in acc.das.items():
                journal.append(("d", hour, code, *dv))
            for kind, subs in (("mins", acc.mins), ("rtd", acc.rtd)):
                for code, d in subs.items():
                    journal.extend(("s", hour, kind, code, sec, v, ok) for sec, (v, ok) in d.items())
        return True

    def archived_wanted(self, reading: Reading) -> int | None:
        """The evicted hour (epoch s) that ``reading`` would revise, when it must come back from the archive
        (the live service loads it beforehand, off the event loop); else ``None``."""
        if self._p.archive is None or reading.stream is _S_DAY:
            return None
        ts = math.floor(beijing_ts(reading.data_time))  # (naive: Beijing time; one conversion per reading)
        hour = ts - ts % 3600
        if hour >= self._closed_before or self._open.get(hour) is not None or not self._was_evicted(hour):
            return None
        if max(self._now, ts) >= repair_deadline(hour, self._p.repair):
            return None
        return hour

    def revisions(self) -> list[HourlyRecord]:
        """The records of the emitted hours that late data revised since the last call (hour order)."""
        dirty = self._dirty
        if not dirty:
            return []
        self._dirty = None
        out: list[HourlyRecord] = []
        touched = self._touched
        if touched is None:
            touched = self._touched = {}
        for h in sorted(dirty):
            acc = self._open.get(h)
            if acc is not None:
                out.extend(self._build(h, acc))
                touched[h] = self._now
        self._evict()
        return out

    def advance(self, now: datetime) -> list[HourlyRecord]:
        """Live: the wall clock is ``now``; emit the hours that ended ``lateness`` before it."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=BEIJING)
        ts = math.floor(now.timestamp())
        if ts > self._now:
            self._now = ts
        wm = ts - self._p.lateness_s
        wm -= wm % 3600
        if wm > self._closed_before:
            return self._close(wm)
        self._evict()
        return []

    def _evict(self) -> None:
        """Drop from memory the sub-values of emitted hours older than ``hold`` (not revised since the last
        emission), keeping only the fact that they had data; forget spans past their repair deadline."""
        now, limit = self._now, self._now - self._p.hold_s - 3600
        dirty, touched = self._dirty, self._touched
        old = [
            h
            for h in self._open.hours()
            if h < self._closed_before
            and h <= limit
            and not (dirty and h in dirty)
            and not (touched and touched.get(h, limit) > limit + 3600)
        ]
        if old:
            spans = self._evicted
            if spans is _NO_SPANS:
                spans = self._evicted = []
            archive = self._p.archive
            for h in sorted(old):
                acc = self._open.take(h)
                if archive is not None:
                    archive.put_hour(self.mn, h, acc)
                if touched:
                    touched.pop(h, None)
                if self._was_evicted(h):
                    continue  # evicted before, brought back by late data, evicted again
                if spans and spans[-1][1] == h:
                    spans[-1][1] = h + 3600
                else:
                    spans.append([h, h + 3600])
            spans.sort()
        spans = self._evicted
        while spans and now >= repair_deadline(spans[0][1] - 3600, self._p.repair):
            spans.pop(0)
        while spans and now >= repair_deadline(spans[0][0], self._p.repair):
            spans[0][0] += 3600

    def flush(self, until: datetime | None = None) -> list[HourlyRecord]:
        """Close every hour that ended at or before ``until`` (all open hours when ``None``).

        Live: ``until`` = wall clock minus a grace period.  Replay: ``flush()`` at the end of the input.
        """
        if until is None:
            if not self._open:
                return []
            before = self._open[-1].hour + 3600
        else:
            if until.tzinfo is None:
                until = until.replace(tzinfo=BEIJING)
            ts = math.floor(until.timestamp())
            before = ts - ts % 3600
        if before <= self._closed_before:
            return []
        return self._close(before)

    @property
    def factors(self) -> Mapping[str, float]:
        """The outlet's unit conversion factors (code → factor to the standard's unit; 1 left out)."""
        return self._p.factors

    @property
    def schedule(self) -> LimitSchedule:
        """The outlet's limits over time."""
        return self._p.schedule

    @property
    def max_o2(self) -> float:
        """The outlet's dilution cut-off (% O2)."""
        return self._p.max_o2

    @property
    def open_hours(self) -> list[datetime]:
        """Hours not yet emitted."""
        return [datetime.fromtimestamp(h, BEIJING) for h in self._open.hours() if h >= self._closed_before]

    @property
    def held_hours(self) -> list[datetime]:
        """Emitted hours whose sub-values are still in memory (revisable exactly)."""
        return [datetime.fromtimestamp(h, BEIJING) for h in self._open.hours() if h < self._closed_before]

    @property
    def closed_before(self) -> datetime | None:
        """Every hour starting before this is closed (``None`` before anything was closed)."""
        if self._closed_before == _NEVER:
            return None
        return datetime.fromtimestamp(self._closed_before, BEIJING)

    # -- closing

    def _close(self, before: int) -> list[HourlyRecord]:
        old = self._closed_before
        self._closed_before = shared_hour(before)
        hours = [acc for acc in self._open if old <= acc.hour < before]
        out: list[HourlyRecord] = []
        for acc in hours:
            out.extend(self._build(acc.hour, acc))
        self._evict()
        return out

    def _infer_interval(self, secs: list[int]) -> int:
        """Period of the CN=2051 records (s): the hour's inferred cadence (median gap, robust to a stray
        record; :func:`~cems.rules.cadence.hour_cadence`), whole minutes; an hour with a single record counts
        it for one minute (HJ 212's nominal minute period).  It depends on the hour's own data only, never on
        the hours built before it, so a revision days later gives what a sorted replay gives."""
        if len(secs) < 2:
            return self._min_interval
        step = hour_cadence(secs, self._min_interval, min_gaps=1)
        return min(3600, max(60, round(step / 60) * 60))

    def _minutes_value(
        self,
        d: dict[int, _Sub],
        interval: int | None = None,
        source: str = SOURCE_MINUTES,
        secs: list[int] | None = None,
    ) -> _HourValue:
        """Minute records (or real-time values sparser than one a minute, with their ``interval``): each
        valid one covers its period up to the next; the covered minutes are the valid minutes.  ``secs``:
        ``sorted(d)`` when the caller has it."""
        if secs is None:
            secs = sorted(d)
        if interval is None:
            interval = self._infer_interval(secs)
        n_cov = 0
        wsum = 0.0
        lower_bound = False
        last = len(secs) - 1
        for i, s in enumerate(secs):
            cov = min(interval, (secs[i + 1] if i < last else 3600) - s)
            v, ok = d[s]
            if ok:
                n_cov += cov
                wsum += v * cov
                lower_bound = lower_bound or ok == _LOWER_BOUND
        valid_minutes = n_cov // 60
        valid = valid_minutes >= MIN_VALID_MINUTES_PER_HOUR
        avg = wsum / n_cov if n_cov else None
        return (avg, valid, _hour_flag(valid, lower_bound), source, valid_minutes, None)

    def _rtd_value(self, d: dict[int, _Sub]) -> _HourValue:
        # The hour's cadence: what :func:`~cems.rules.cadence.hour_cadence` gives (the lower median of the gaps
        # between distinct data times, the hint below 2 gaps), computed here on the keys (distinct already)
        # with the gaps in C (CPU, issue 20).
        secs = sorted(d)
        n_secs = len(secs)
        if n_secs < 3:
            cadence = self._rtd_hint
            gaps: list[int] | None = None
        else:
            gaps = list(map(_sub, islice(secs, 1, None), secs))
            gaps.sort()
            cadence = gaps[(n_secs - 2) // 2]
        if cadence > 60 and self._need is None:
            # sparser than one value a minute: each value covers its interval (see the module docstring)
            return self._minutes_value(d, min(cadence, 3600), SOURCE_REALTIME, secs)
        need = self._need or min(MIN_VALUES_PER_MINUTE, max(1, 60 // cadence))
        valid_minutes = 0
        wsum = 0.0
        lower_bound = False
        if need == 1 and (gaps[0] >= 60 if gaps is not None else n_secs < 2 or secs[0] // 60 != secs[1] // 60):
            # One value per minute (every gap ≥ 60 s): a minute is valid when its value is (1 valid value ≥
            # need, and 1 ≥ 75 % of 1); its mean is the value (wsum gets (0.0 + v) / 1, which is v but for
            # −0.0, and 0.0 + −0.0 == 0.0 + 0.0: the same sum).  Minutes in order of first arrival, as below.
            for v, ok in d.values():
                if ok:
                    valid_minutes += 1
                    wsum += v
                    if ok == _LOWER_BOUND:
                        lower_bound = True
        else:
            minutes: dict[int, list[Any]] = {}  # minute → [total, n valid, sum of valid, any lower bound]
            for s, (v, ok) in d.items():
                m = minutes.get(s // 60)
                if m is None:
                    if ok:
                        minutes[s // 60] = [1, 1, 0.0 + v, ok == _LOWER_BOUND]
                    else:
                        minutes[s // 60] = [1, 0, 0.0, False]
                else:
                    m[0] += 1
                    if ok:
                        m[1] += 1
                        m[2] += v
                        if ok == _LOWER_BOUND:
                            m[3] = True
            for total, n, s_, lb in minutes.values():
                # Minute valid: ≥ need valid values and flagged N (≥ 75 % of its values N).
                if n >= need and n >= N_FLAG_SHARE * total:
                    valid_minutes += 1
                    wsum += s_ / n
                    lower_bound = lower_bound or lb
        valid = valid_minutes >= MIN_VALID_MINUTES_PER_HOUR
        avg = wsum / valid_minutes if valid_minutes else None
        return (avg, valid, _hour_flag(valid, lower_bound), SOURCE_REALTIME, valid_minutes, None)

    def _hour_value(
        self, code: str, acc: _HourAcc, mins_of: dict[str, dict[int, _Sub]], rtd_of: dict[str, dict[int, _Sub]]
    ) -> _HourValue:
        das = acc.das.get(code)
        if das is not None:
            avg, zs, flag = das
            if avg is None and flag in VALID_HOUR_FLAGS:
                flag = "D"  # flagged N without a mean: nothing was measured (item 12: never "N" and invalid)
            valid = avg is not None and (flag == "N" or (flag == "T" and self._p.over_range_valid))
            return (avg, valid, flag, SOURCE_DAS, None, zs)
        mins = mins_of.get(code)
        if mins:
            return self._minutes_value(mins)
        return self._rtd_value(rtd_of[code])

    def _build(self, hour: int, acc: _HourAcc) -> list[HourlyRecord]:
        mins_of, rtd_of = acc.mins, acc.rtd
        codes = sorted(set(acc.das) | set(mins_of) | set(rtd_of))
        values = {code: self._hour_value(code, acc, mins_of, rtd_of) for code in codes}
        hour_dt = datetime.fromtimestamp(hour, BEIJING)
        o2 = values.get(O2)
        o2_avg = o2[0] if o2 is not None else None
        # A valid, flag-N O2 hour.  T (over range) does not help for O2: the correction grows with O2, and an O2
        # above an analyser's range (typically 0–25 %) is beyond air, so no valid correction exists.
        o2_ok = o2 is not None and o2[0] is not None and o2[1] and o2[2] == "N"
        # Why the hour has no usable O2 for the correction (None: it has one).
        o2_problem: str | None = None
        if o2_avg is None:
            o2_problem = "no valid O2 (a19001) mean for the hour"
        elif not o2_ok:
            assert o2 is not None
            o2_problem = f"O2 hour not valid (flag {o2[2]}, {o2[4] if o2[4] is not None else '-'} valid minutes)"
        elif not (0.0 <= o2_avg < O2_AIR and o2_avg <= self._p.max_o2):
            o2_problem = (
                f"O2 {o2_avg:.2f} % outside the correctable range (≥ 21 %, < 0 or > cut-off {self._p.max_o2:g} %)"
            )
        out: list[HourlyRecord] = []
        for code in codes:
            avg, valid, flag, source, vmin, das_zs = values[code]
            limit: float | None = None
            ref: float | None = None
            profile: str | None = None
            zs: float | None = None
            zs_source: str | None = None
            note = ""
            das_note = ""
            if is_concentration(code):
                al = self._p.schedule.at(code, hour_dt)
                if al is not None:
                    limit, ref, profile = al.limit, al.ref_o2, al.profile
                else:
                    ref = self._p.schedule.ref_o2(hour_dt)
                computed: float | None = None
                if avg is None:
                    note = "no valid mean"
                elif o2_avg is None:
                    note = "no valid O2 (a19001) mean for the hour: no corrected value"
                else:
                    computed = correct(avg, o2_avg, ref, max_o2=self._p.max_o2)
                    if computed is None:
                        note = f"O2 {o2_avg:.2f} % outside the correctable range (≥ 21 %, < 0 or > {self._p.max_o2} %)"
                    elif not o2_ok:
                        note = "O2 hour not valid: corrected value for information only, not an exceedance"
                if computed is not None:
                    if das_zs is not None and zs_agrees(das_zs, computed, self._p.rel_tol, self._p.abs_tol):
                        zs, zs_source = das_zs, "das"
                    else:
                        zs, zs_source = computed, "computed"
                        if das_zs is not None:
                            das_note = (
                                f"DAS ZsAvg {das_zs:g} disagrees with C×(21−{ref:g})/(21−O2) = {computed:.3f}: "
                                "computed value used"
                            )
                            note = (note + "; " if note else "") + das_note
            # No hour is valid without a computable corrected value (issue 12 item 2): the limits are set at
            # the reference O2 (DOMAIN.md §3/§4), so a concentration hour whose O2 is missing, not valid, ≥ 21 %
            # or above the dilution cut-off cannot be judged.  It counts as received but not valid (the 90 %
            # rule, DOMAIN.md §5) and the engine raises an ``o2_invalid`` event; the corrected value, when the
            # formula still gives one, is reported for information only.
            o2_invalid = False
            if valid and o2_problem is not None and is_concentration(code):
                valid, flag, o2_invalid = False, _hour_flag(False), True
                note = o2_problem + ": no valid corrected value, hour not valid" + (f"; {das_note}" if das_note else "")
            # HJ 76-2017: an exceedance is a valid 1-h corrected mean above the limit; flagged hours never are.
            # A T hour's corrected mean is a lower bound of the true one: above the limit, the true mean is too.
            exceeds = (
                valid and flag in VALID_HOUR_FLAGS and o2_ok and zs is not None and limit is not None and zs > limit
            )
            out.append(
                HourlyRecord(
                    mn=self.mn,
                    pollutant=code,
                    hour_start=hour_dt,
                    avg=avg,
                    o2_avg=o2_avg,
                    zs_avg=zs,
                    das_zs_avg=das_zs,
                    zs_source=zs_source,
                    valid=valid,
                    flag=flag,
                    source=source,
                    valid_minutes=vmin,
                    limit=limit,
                    ref_o2=ref,
                    profile=profile,
                    exceeds=exceeds,
                    note=note,
                    o2_invalid=o2_invalid,
                )
            )
        return out

    # -- persistence

    def take_journal(self) -> list[tuple[Any, ...]]:
        """The sub-values added since the last call (the service persists them as one row per outlet and
        commit, so a commit costs what was added, not the size of the open hours)."""
        j = self._journal
        if not j:
            return []
        self._journal = None
        return j

    @property
    def closed_before_ts(self) -> int:
        """Every hour starting before this (Unix s) has been emitted."""
        return self._closed_before

    @property
    def now_ts(self) -> int:
        """The outlet's watermark before ``lateness``: newest data time or clock (Unix s)."""
        return self._now

    @property
    def retain_from_ts(self) -> int:
        """Every hour before this (Unix s) is out of memory: its persisted sub-values can go."""
        return self._open[0].hour if self._open else self._closed_before

    def snapshot(self, *, open_hours: bool = True) -> dict[str, Any]:
        """JSON-able state (open hours and the closed-hour mark).  ``open_hours=False`` leaves the open
        hours' content out (persisted incrementally from :meth:`take_journal` instead).  (CPU, issue 20: the
        state of every changed outlet is taken at every commit, without its open hours: empty parts written
        without a comprehension or a sort.)"""
        return {
            "version": 1,
            "mn": self.mn,
            "closed_before": self._closed_before,
            "min_interval": self._min_interval,
            "late_readings": self.late_readings,
            "late_unrevised": self.late_unrevised,
            "late_beyond_window": self.late_beyond_window,
            "now": self._now,
            "evicted": [list(s) for s in self._evicted] if self._evicted else [],
            "dirty": sorted(self._dirty) if self._dirty else [],
            "touched": [[h, t] for h, t in sorted(self._touched.items())] if self._touched else [],
            #: the hours in memory (their sub-values are in ``open``, or persisted apart when left out)
            "memory": self._open.hours(),
            "open": {
                str(h): {
                    "das": {c: [a, z, f] for c, (a, z, f) in acc.das.items()},
                    "mins": _subs_json(acc.mins),
                    "rtd": _subs_json(acc.rtd),
                }
                for h, acc in ((acc.hour, acc) for acc in self._open)
            }
            if open_hours
            else {},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Replace the state with a :meth:`snapshot` (of the same outlet)."""
        if state.get("version") != 1:
            raise ValueError(f"unsupported OutletHourly state version {state.get('version')!r}")
        if state.get("mn") != self.mn:
            raise ValueError(f"state of outlet {state.get('mn')!r} restored into {self.mn!r}")
        self._closed_before = shared_hour(int(state["closed_before"]))
        self.late_readings = int(state["late_readings"])
        self.late_unrevised = int(state.get("late_unrevised", 0))
        self.late_beyond_window = int(state.get("late_beyond_window", 0))
        self._now = int(state.get("now", _NEVER))
        self._evicted = [[int(a), int(b)] for a, b in state.get("evicted", [])]
        self._dirty = {int(h) for h in state.get("dirty", [])} or None
        self._touched = {int(h): int(t) for h, t in state.get("touched", [])} or None
        self._open = _OpenHours()
        for h, raw in state["open"].items():
            acc = _HourAcc()
            if raw["das"]:
                acc.das = {c: (a, z, str(f)) for c, (a, z, f) in raw["das"].items()}
            for name in ("mins", "rtd"):
                for code, rows in raw[name].items():
                    for s, v, ok in rows:
                        acc.add(name, code, int(s), _NAN if v is None else float(v), int(ok))
            self._open.put(shared_hour(int(h)), acc)
