"""Daily values, daily limits and monthly results (issue 12 item 9).  Pure: no I/O, no clock reads.

* **Daily mean** (per outlet, code and Beijing calendar day): computed from the day's valid hourly records
  (flag N, or T: :attr:`HourlyRecord.counts_valid`); the corrected daily mean is the mean of the valid hours'
  corrected (折算) means.  A day is valid with **≥ 20 valid hours** (HJ 75-2017, DOMAIN.md §3).
  The DAS's own daily record (HJ 212 CN=2031, ``DataTime`` = the day's start) is kept for reference
  (``das_avg``/``das_zs_avg``) and used only for a code of which no hourly record at all was received that day
  (a DAS that sends daily records only): the platform's hours are what it judged, a DAS's daily figure cannot
  override them.  Such a day is valid when flagged N with a corrected value (``-ZsAvg``, else ``-Avg``
  corrected with the record's O2).
* **Daily exceedance** (``daily_exceedance``): a valid day whose corrected daily mean is above the 24-h limit
  of the active profile (``daily_limits`` in ``cems/limits/profiles.toml``, e.g. GB 18485-2014 表4 for waste
  incineration).  One event per outlet, code and day (start = Beijing midnight, end = the next one).
* **Marks** (issue 14): valid hours marked "not judged" (:meth:`cems.rules.marks.MarkLedger.exempting`, through
  :attr:`OutletDaily.exempt`) are left out of the day's judgement — MEE 公告2022年第21号: data marked as not
  judged are not used to judge exceedances — so the day is judged on the corrected mean of its other valid
  hours, and only when ≥ 20 of them remain (HJ 75-2017); the daily record keeps the measured mean.  A mark
  over a closed day (:meth:`OutletDaily.remark`) rebuilds it; a ``daily_exceedance`` it takes away is closed
  as ``marked`` (never deleted), a withdrawal opens it again.
* **Month** (:func:`month_results`): a month of a code is valid with ≥ 25 valid days (≥ 23 in February)
  (HJ 75-2017, DOMAIN.md §3).  Where the profile has a monthly rule (``monthly_share``: steel ultra-low,
  环大气〔2019〕35号, ≥ 95 % of the month's valid hours at or below the limits) the result says whether it is
  met.  That is compliance with the 2019 policy; a single hour above the limit is still an hourly exceedance
  (HJ 76-2017) of the configured limit, reported as such, but not by itself non-compliance with the policy.

Days close when an hourly record of a later day arrives, or on :meth:`OutletDaily.flush` (live: once every
hour of the day is closed; replay: at the end of the input).  A closed day stays revisable until the repair
deadline of its last hour (10 days, and the 10th of the next month: DOMAIN.md §5): an hour revised by late
data (issue 12) rebuilds the day — the same ``cems_daily`` key, so the stored point is rewritten — and its
``daily_exceedance`` (opened, updated or retracted late, each change once).  The day is rebuilt from its
hours' slots in hour order, so its figures are those of a sorted replay whatever the order the hours came
in.  Data for a day past its deadline are not aggregated (counted in ``late``).
"""

from __future__ import annotations

import base64
import json
import math
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Final

from cems.limits import builtin_profiles
from cems.model import BEIJING, O2, Reading, Stream, unix_time
from cems.registry import Outlet
from cems.rules.events import CLOSED, OPENED, RETRACTED, RETRACTED_STATUS, UPDATED, Event, EventUpdate
from cems.rules.hourly import REPAIR_WINDOW, HourArchive, HourlyRecord, is_concentration, repair_deadline
from cems.rules.limits import LimitSchedule, daily_limit_at
from cems.rules.marks import MARKED
from cems.rules.o2 import DEFAULT_MAX_O2, correct

#: The streams as module constants: ``Stream.RTD`` (an enum class attribute) costs ≈ 950 instructions a look-up,
#: a module global ≈ 40 (callgrind; several per reading, issue 20)
_S_DAY: Final = Stream.DAY

DAILY_EXCEEDANCE: Final = "daily_exceedance"
#: HJ 75-2017 (DOMAIN.md §3): a daily mean is valid with ≥ 20 valid hours; a month with ≥ 25 valid days
#: (≥ 23 in February).
MIN_VALID_HOURS_PER_DAY: Final = 20
MIN_VALID_DAYS_PER_MONTH: Final = 25
MIN_VALID_DAYS_FEBRUARY: Final = 23

SOURCE_HOURS: Final = "hours"
SOURCE_DAS_DAY: Final = "das_2031"

#: Whether marks exempt an outlet's (MN) hour (epoch s) from exceedance judgement, given the hour's corrected means
#: by code (for ``judged_above``): the id of the exempting mark, or ``None``
#: (:meth:`cems.rules.marks.MarkLedger.exempting`).  One callable serves every outlet.
Exempt = Callable[[str, int, Mapping[str, float | None]], str | None]

_BJ: Final = 8 * 3600
_DAY: Final = 86400


def _day_index(t: datetime) -> int:
    return (math.floor(unix_time(t)) + _BJ) // _DAY  # (t.timestamp(), remembered: per reading, CPU)


def _day_start(index: int) -> datetime:
    return datetime.fromtimestamp(index * _DAY - _BJ, BEIJING)


@dataclass(frozen=True, slots=True)
class DailyRecord:
    """The daily result of one code of one outlet (``day``: the Beijing calendar day)."""

    mn: str
    pollutant: str
    day: date
    avg: float | None
    zs_avg: float | None
    das_avg: float | None
    das_zs_avg: float | None
    received_hours: int
    valid_hours: int
    valid: bool
    source: str
    limit: float | None
    ref_o2: float | None
    profile: str | None
    exceeds: bool
    note: str = ""
    #: Valid hours of the day marked "not judged" (issue 14, MEE 公告2022年第21号), left out of the daily
    #: judgement, and the ids of the marks that did so; ``judged_zs_avg``: the corrected mean of the other valid
    #: hours, which ``exceeds`` judges (``None``: not judged, < 20 of them); ``measured_exceeds``: whether the
    #: day would exceed without the marks.
    marked_hours: int = 0
    marks: tuple[str, ...] = ()
    judged_zs_avg: float | None = None
    measured_exceeds: bool = False

    @property
    def day_start(self) -> datetime:
        return datetime.combine(self.day, time(0), BEIJING)

    def to_json(self) -> dict[str, Any]:
        return {
            "mn": self.mn,
            "pollutant": self.pollutant,
            "date": self.day.isoformat(),
            "avg": self.avg,
            "zs_avg": self.zs_avg,
            "das_avg": self.das_avg,
            "das_zs_avg": self.das_zs_avg,
            "received_hours": self.received_hours,
            "valid_hours": self.valid_hours,
            "valid": self.valid,
            "source": self.source,
            "limit": self.limit,
            "ref_o2": self.ref_o2,
            "profile": self.profile,
            "exceeds": self.exceeds,
            "note": self.note,
        }


# DAS CN=2031 per code: (avg, zs, flag)
_Das = tuple[float | None, float | None, str]
_NAN: Final = float("nan")


class _DayCode:
    """The hours of one code in one day: which were received and valid (24-bit masks), and the valid hours'
    means and corrected means (NaN: none), by hour of the day.  A revised hour replaces its slot, so the day
    is rebuilt the same whatever the order its hours came in (sums are taken in hour order).  Persisted as
    base64 of the 48 little-endian float64 values, encoded once per change (the engine state of a changed
    outlet is written at every commit: docs/benchmark.md)."""

    __slots__ = ("_enc", "received", "valid", "values")

    def __init__(self) -> None:
        self.received = 0
        self.valid = 0
        self.values = array("d", [_NAN]) * 48  # avg[0..23], zs[0..23]
        self._enc: str | None = None

    def set(self, i: int, rec: HourlyRecord) -> None:
        self._enc = None
        bit = 1 << i
        self.received |= bit
        if rec.counts_valid:
            self.valid |= bit
            self.values[i] = _NAN if rec.avg is None else rec.avg
            self.values[24 + i] = _NAN if rec.zs_avg is None else rec.zs_avg
        else:
            self.valid &= ~bit
            self.values[i] = self.values[24 + i] = _NAN

    def sums(self, exclude: int = 0) -> tuple[int, int, float, int, float, int]:
        """received hours, valid hours, sum of avg, n avg, sum of zs, n zs (hour order); ``exclude``: a mask
        of hours left out of the valid ones (marked hours, issue 14)."""
        v = self.values
        sa = sz = 0.0
        na = nz = 0
        valid = self.valid & ~exclude
        for i in range(24):
            if valid >> i & 1:
                a, z = v[i], v[24 + i]
                if a == a:
                    sa += a
                    na += 1
                if z == z:
                    sz += z
                    nz += 1
        return self.received.bit_count(), valid.bit_count(), sa, na, sz, nz

    def to_json(self) -> list[Any]:
        if self._enc is None:
            a = array("d", self.values)
            if sys.byteorder == "big":
                a.byteswap()
            self._enc = base64.b64encode(a.tobytes()).decode("ascii")
        return [self.received, self.valid, self._enc]

    @classmethod
    def from_json(cls, raw: list[Any]) -> _DayCode:
        dc = cls()
        dc.received, dc.valid = int(raw[0]), int(raw[1])
        a = array("d")
        a.frombytes(base64.b64decode(raw[2]))
        if sys.byteorder == "big":
            a.byteswap()
        if len(a) != 48:
            raise ValueError("a day's slots must hold 48 values")
        dc.values = a
        return dc


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


#: The shared empty set of days (an outlet's sets of days are made when first written: memory, issue 20).
_NO_DAYS: Final[frozenset[int]] = frozenset()
#: The shared read-only empty ``_reported`` of an outlet that has reported no closed day yet.
_NO_REPORTS: Any = MappingProxyType({})
#: The shared empty ``_days``, ``_das`` and ``_legacy`` of an outlet without any (memory, issue 20: 64 bytes
#: each; most outlets never have DAS daily records or a state of version 1): never written, each is replaced
#: by a dict of its own when first written (``_writable``).
_EMPTY: Final[dict[Any, Any]] = {}


def _with(days: set[int] | frozenset[int], d: int) -> set[int]:
    """``days`` with ``d`` added: the set itself, or a new one in place of the shared empty set."""
    if isinstance(days, set):
        days.add(d)
        return days
    return {d}


class OutletDaily:
    """Daily means and daily exceedances of one outlet (see the module docstring).

    A closed day stays revisable until the repair deadline of its last hour (:func:`repair_deadline`): a late
    hourly record (a revision) or a late CN=2031 rebuilds it and it is returned again (same key), and
    :meth:`exceedances` turns the change into late event updates (opened, updated or retracted; never
    duplicated).  Memory: per day of the window and code, two 24-bit masks and 48 floats.
    """

    __slots__ = (
        "_archive",
        "_closed_before",
        "_das",
        "_days",
        "_dirty",
        "_late_days",
        "_legacy",
        "_max_o2",
        "_now",
        "_repair",
        "_reported",
        "_schedule",
        "_stored",
        "district",
        "enterprise",
        "exempt",
        "late",
        "mn",
    )

    def __init__(
        self,
        outlet: Outlet,
        enterprise: str,
        district: str,
        *,
        schedule: LimitSchedule | None = None,
        max_o2: float = DEFAULT_MAX_O2,
        repair_window: timedelta = REPAIR_WINDOW,
        archive: HourArchive | None = None,
    ) -> None:
        self.mn = outlet.mn
        #: Where closed days wait for revisions until their deadline (``None``: in memory); key ``MN#daily``
        #: and the start of the day's last hour (so that the archive's deadline pruning applies to it).
        self._archive = archive
        #: closed days (inside the window) whose slots are in the archive, not in memory
        self._stored: set[int] | frozenset[int] = _NO_DAYS
        self.enterprise = enterprise
        self.district = district
        self._schedule = schedule if schedule is not None else LimitSchedule(outlet)
        self._max_o2 = max_o2
        self._repair = repair_window
        #: day → code → its hours; open days, and closed days inside the repair window (with an archive: only
        #: while a revision of them is being built)
        self._days: dict[int, dict[str, _DayCode]] = _EMPTY
        #: sums of days restored from a state saved before per-hour slots (version 1): day → code → sums
        self._legacy: dict[int, dict[str, list[float]]] = _EMPTY
        self._das: dict[int, dict[str, _Das]] = _EMPTY
        self._closed_before = -(1 << 40)  # every day with a smaller index is closed
        #: closed days revised since they were last returned
        self._dirty: set[int] | frozenset[int] = _NO_DAYS
        #: closed days revised by late data, not yet through :meth:`exceedances` (their updates are late)
        self._late_days: set[int] | frozenset[int] = _NO_DAYS
        #: closed days inside the window → code → corrected mean of an exceeding day, None otherwise (what
        #: :meth:`exceedances` last reported)
        self._reported: dict[int, dict[str, float | None]] = _NO_REPORTS
        self._now = -(1 << 62)  # newest hour end seen (epoch s)
        #: Hourly records and daily readings that arrived for a day past its repair deadline (not aggregated).
        self.late = 0
        #: Marks (issue 14): which hours are not judged for exceedance (the engine sets it; ``None``: no marks).
        self.exempt: Exempt | None = None

    @property
    def _archive_name(self) -> str:
        """The key of this outlet's closed days in the archive (``MN#daily``)."""
        return f"{self.mn}#daily"

    @property
    def closed_before_day(self) -> date | None:
        """Every day before this is closed (``None``: none yet)."""
        if self._closed_before < -(1 << 39):
            return None
        return _day_start(self._closed_before).date()

    def _final(self, d: int) -> bool:
        """The day's last hour is past its repair deadline: nothing moves it any more."""
        return self._now >= repair_deadline((d + 1) * _DAY - _BJ - 3600, self._repair)

    # -- input

    def on_reading(self, reading: Reading) -> None:
        """Keep a DAS daily record (CN=2031); other streams are ignored."""
        if reading.stream is not _S_DAY:
            return
        d = _day_index(reading.data_time)
        if d < self._closed_before:
            if self._final(d) or not self._load(d):
                self.late += 1
                return
            self._dirty = _with(self._dirty, d)
            self._late_days = _with(self._late_days, d)
        das = self._writable("_das").setdefault(d, {})
        for code, m in reading.measurements.items():
            avg, zs = _num(m.values.get("Avg")), _num(m.values.get("ZsAvg"))
            if avg is None and zs is None:
                continue
            das[code] = (avg, zs, "N" if m.flag is None else m.flag.upper())
        self._writable("_days").setdefault(d, {})

    def on_hours(self, records: Iterable[HourlyRecord]) -> list[DailyRecord]:
        """Add hourly records (first or revised, any order); returns the days this closes (those before the
        newest record's day) and the closed days it revised."""
        newest: int | None = None
        for rec in records:
            ts = math.floor(rec.hour_start.timestamp())
            if ts + 3600 > self._now:
                self._now = ts + 3600
            d = (ts + _BJ) // _DAY
            if d < self._closed_before:
                if self._final(d) or not self._load(d):
                    self.late += 1
                    continue
                self._dirty = _with(self._dirty, d)
                self._late_days = _with(self._late_days, d)
            else:
                newest = d if newest is None else max(newest, d)
            day = self._days.get(d)
            if day is None:
                day = self._writable("_days")[d] = {}
            dc = day.get(rec.pollutant)
            if dc is None:
                dc = day[rec.pollutant] = _DayCode()
            dc.set((ts + _BJ) % _DAY // 3600, rec)
        return self._close(newest) if newest is not None else self._revised()

    def flush(self, until: datetime | None = None) -> list[DailyRecord]:
        """Close the days that ended at or before ``until`` (every open day when ``None``), and return the
        closed days revised since they were last returned."""
        if until is None:
            open_days = [d for d in self._days if d >= self._closed_before]
            if not open_days:
                return self._revised()
            return self._close(max(open_days) + 1)
        u = math.floor(until.timestamp())
        if u > self._now:
            self._now = u
        return self._close(_day_index(until))

    # -- closing

    def _revised(self) -> list[DailyRecord]:
        out: list[DailyRecord] = []
        for d in sorted(self._dirty):
            if d in self._days:
                out += self._build(d)
                if self._archive is not None and d < self._closed_before and not self._final(d):
                    self._store(d)
        self._dirty = _NO_DAYS
        self._prune()
        return out

    # -- closed days in the archive

    def _archive_key(self, d: int) -> int:
        return (d + 1) * _DAY - _BJ - 3600  # the start of the day's last hour

    def _store(self, d: int) -> None:
        """Move a closed day's slots (and its DAS record) from memory to the archive."""
        assert self._archive is not None
        head = {
            "c": {c: dc.to_json() for c, dc in self._days.pop(d).items()},
            "d": {c: list(v) for c, v in self._das.pop(d, {}).items()},
            "l": self._legacy.pop(d, {}),
        }
        self._archive.put(self._archive_name, self._archive_key(d), zlib.compress(json.dumps(head).encode(), 1))
        self._stored = _with(self._stored, d)

    def _load(self, d: int) -> bool:
        """A closed day in memory for a revision: ``True`` when it is (or never had data: it starts empty);
        ``False`` when its archived slots were lost."""
        if d in self._days or d not in self._stored:
            return True
        assert self._archive is not None
        data = self._archive.get(self._archive_name, self._archive_key(d))
        if data is None:
            return False
        head = json.loads(zlib.decompress(data))
        self._writable("_days")[d] = {c: _DayCode.from_json(raw) for c, raw in head["c"].items()}
        if head["d"]:
            self._writable("_das")[d] = {c: (v[0], v[1], str(v[2])) for c, v in head["d"].items()}
        if head["l"]:
            self._writable("_legacy")[d] = {c: [float(x) for x in a] for c, a in head["l"].items()}
        return True

    def _writable(self, name: str) -> dict[Any, Any]:
        """The dict ``name`` (``_days``, ``_das`` or ``_legacy``), made the outlet's own if it is the shared
        :data:`_EMPTY`."""
        d: dict[Any, Any] = getattr(self, name)
        if d is _EMPTY:
            d = {}
            setattr(self, name, d)
        return d

    def archived_wanted(self, reading: Reading) -> tuple[str, int] | None:
        """The archive key of the closed day that ``reading`` may revise, when its slots are archived (the
        live service loads it beforehand, off the event loop); else ``None``."""
        if self._archive is None:
            return None
        d = _day_index(reading.data_time)
        if d >= self._closed_before or d in self._days or d not in self._stored or self._final(d):
            return None
        return self._archive_name, self._archive_key(d)

    def _close(self, before: int) -> list[DailyRecord]:
        if before <= self._closed_before:
            return self._revised()
        old = self._closed_before
        self._closed_before = before
        for d in sorted(k for k in self._days if old <= k < before):
            self._dirty = _with(self._dirty, d)
        return self._revised()

    def _prune(self) -> None:
        """Forget closed days past their repair deadline (bounded memory: the window's days)."""
        for d in [k for k in self._days if k < self._closed_before and self._final(k)]:
            del self._days[d]
            self._das.pop(d, None)
            self._legacy.pop(d, None)
        for d in [k for k in self._reported if self._final(k)]:
            del self._reported[d]
        if self._stored:
            self._stored = {d for d in self._stored if not self._final(d)} or _NO_DAYS
        if self._late_days:
            self._late_days = {d for d in self._late_days if not self._final(d)} or _NO_DAYS
        for d in [k for k in self._das if k < self._closed_before and k not in self._days]:
            del self._das[d]

    def _build(self, d: int) -> list[DailyRecord]:
        accs = self._days.get(d, {})
        legacy = self._legacy.get(d, {})
        das: Mapping[str, _Das] = self._das.get(d, {})
        start = _day_start(d)
        day = start.date()
        out: list[DailyRecord] = []
        das_o2 = das.get(O2)
        exempt = self._exempt_hours(d, accs)
        for code in sorted(set(accs) | set(legacy) | set(das)):
            dc = accs.get(code)
            lg = legacy.get(code)
            dv = das.get(code)
            das_avg, das_zs = (dv[0], dv[1]) if dv is not None else (None, None)
            conc = is_concentration(code)
            al = daily_limit_at(self._schedule.outlet, code, start) if conc else None
            ref = al.ref_o2 if al is not None else (self._schedule.ref_o2(start) if conc else None)
            note = ""
            if dc is not None or lg is not None:
                sums = list(dc.sums()) if dc is not None else [0, 0, 0.0, 0, 0.0, 0]
                if lg is not None:
                    sums = [a + b for a, b in zip(sums, lg, strict=True)]
                received, n_valid = int(sums[0]), int(sums[1])
                avg = sums[2] / sums[3] if sums[3] else None
                zs = sums[4] / sums[5] if sums[5] else None
                valid = n_valid >= MIN_VALID_HOURS_PER_DAY and (zs is not None or not conc)
                source = SOURCE_HOURS
                if not valid:
                    note = f"{n_valid} valid hours (< {MIN_VALID_HOURS_PER_DAY}, HJ 75-2017): day not valid"
            else:
                assert dv is not None
                received, n_valid, source = 0, 0, SOURCE_DAS_DAY
                avg, zs = das_avg, das_zs
                if zs is None and conc and avg is not None and ref is not None and das_o2 is not None:
                    o2 = das_o2[0]
                    zs = None if o2 is None or das_o2[2] != "N" else correct(avg, o2, ref, max_o2=self._max_o2)
                valid = dv[2] == "N" and avg is not None and (zs is not None or not conc)
                note = "DAS daily record (CN=2031): no hourly record of this code was received for the day"
            exceeds = valid and zs is not None and al is not None and zs > al.limit
            measured, judged_zs, n_marked = exceeds, zs, 0
            ids: tuple[str, ...] = ()
            mask = sum(1 << i for i in exempt) & dc.valid if dc is not None and conc else 0
            if mask:  # marked hours are left out of the day's judgement (MEE 公告2022年第21号)
                assert dc is not None
                n_marked = mask.bit_count()
                ids = tuple(sorted({exempt[i] for i in range(24) if mask >> i & 1}))
                _, n_judged, _, _, sj, nj = dc.sums(mask)
                judged_zs = sj / nj if nj and n_judged >= MIN_VALID_HOURS_PER_DAY else None
                exceeds = valid and judged_zs is not None and al is not None and judged_zs > al.limit
                judged = (
                    f"judged on the other {n_judged} valid hours" if judged_zs is not None
                    else f"{n_judged} other valid hours (< {MIN_VALID_HOURS_PER_DAY}, HJ 75-2017): not judged"
                )  # fmt: skip
                note = "; ".join(
                    x for x in (note, f"{n_marked} hours marked not judged (MEE 公告2022年第21号), {judged}") if x
                )
            out.append(
                DailyRecord(
                    mn=self.mn,
                    pollutant=code,
                    day=day,
                    avg=avg,
                    zs_avg=zs if conc else None,
                    das_avg=das_avg,
                    das_zs_avg=das_zs,
                    received_hours=received,
                    valid_hours=n_valid,
                    valid=valid,
                    source=source,
                    limit=al.limit if al is not None else None,
                    ref_o2=ref,
                    profile=al.profile if al is not None else None,
                    exceeds=exceeds,
                    note=note,
                    marked_hours=n_marked,
                    marks=ids,
                    judged_zs_avg=judged_zs if conc else None,
                    measured_exceeds=measured,
                )
            )
        return out

    def _exempt_hours(self, d: int, accs: Mapping[str, _DayCode]) -> dict[int, str]:
        """Hour of the day → the id of the mark that exempts it from exceedance judgement (issue 14)."""
        if self.exempt is None or not accs:
            return {}
        base = d * _DAY - _BJ
        out: dict[int, str] = {}
        received = 0
        for dc in accs.values():
            received |= dc.valid
        for i in range(24):
            if received >> i & 1:
                raw = {c: _num(dc.values[24 + i]) for c, dc in accs.items() if dc.valid >> i & 1}
                rid = self.exempt(self.mn, base + i * 3600, raw)
                if rid is not None:
                    out[i] = rid
        return out

    def _closed_days(self, start: datetime, end: datetime) -> range:
        """The closed days that ``[start, end)`` touches."""
        return range(_day_index(start), min(_day_index(end - timedelta(microseconds=1)) + 1, self._closed_before))

    def archived_days(self, start: datetime, end: datetime) -> set[tuple[str, int]]:
        """The archive keys of the closed days over ``[start, end)`` whose slots are archived (the live service
        loads them, off the event loop, before a mark over them is applied: :meth:`remark`)."""
        if self._archive is None:
            return set()
        return {
            (self._archive_name, self._archive_key(d))
            for d in self._closed_days(start, end)
            if d in self._stored and d not in self._days and not self._final(d)
        }

    def remark(self, start: datetime, end: datetime) -> list[DailyRecord]:
        """Marks over ``[start, end)`` changed (issue 14): the closed days they touch (inside the repair window)
        are rebuilt and returned; open days are judged with the marks when they close."""
        for d in self._closed_days(start, end):
            if self._final(d) or (d not in self._days and not (d in self._stored and self._load(d))):
                continue
            self._dirty = _with(self._dirty, d)
        return self._revised()

    def exceedances(self, records: Iterable[DailyRecord]) -> list[EventUpdate]:
        """``daily_exceedance`` events of these day records (first or revised): an exceeding day is opened
        and closed at once (the day is over); a revision opens one late, updates its peak, or retracts it
        (``retracted``, late) when the day no longer exceeds.  Each change is reported once."""
        ups: list[EventUpdate] = []
        # late = a revision of a day already reported, or a day rebuilt by late data: decided once per day, so
        # the other codes of the same day are not taken for late (issue 12 follow-up)
        late_of: dict[int, bool] = {}
        for r in records:
            d = _day_index(r.day_start)
            reported = self._reported.get(d)
            late = late_of.get(d)
            if late is None:
                late = late_of[d] = reported is not None or d in self._late_days
                if d in self._late_days:
                    self._late_days = (self._late_days - {d}) or _NO_DAYS
            prev = reported.get(r.pollutant) if reported is not None else None
            if reported is None and not self._final(d):
                if self._reported is _NO_REPORTS:
                    self._reported = {}
                reported = self._reported[d] = {}
            peak = (r.judged_zs_avg if r.marked_hours else r.zs_avg) if r.exceeds else prev
            if reported is not None:
                reported[r.pollutant] = peak if r.exceeds else None
            if not r.exceeds and prev is None:
                continue
            start = r.day_start
            ev = Event(
                type=DAILY_EXCEEDANCE,
                mn=self.mn,
                enterprise=self.enterprise,
                district=self.district,
                pollutant=r.pollutant,
                start=start,
                end=None,
                hours=24,
                peak=peak,
                limit=r.limit,
                ref_o2=r.ref_o2,
                profile=r.profile,
                status="open",
                late=late,
                marks=r.marks,
            )
            closed = ev.closed_at(start + timedelta(days=1))
            if not r.exceeds and r.measured_exceeds and r.marked_hours:  # marks took it away: closed as marked
                ups.append(EventUpdate(MARKED, replace(closed, status=MARKED)))
            elif not r.exceeds:
                ups.append(EventUpdate(RETRACTED, replace(closed, status=RETRACTED_STATUS)))
            elif prev is None:
                ups += [EventUpdate(OPENED, ev), EventUpdate(CLOSED, closed)]
            elif prev != peak:
                ups.append(EventUpdate(UPDATED, closed))
        return ups

    # -- persistence (bounded: the days of the repair window)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 2,
            "kind": "daily",
            "mn": self.mn,
            "closed_before": self._closed_before,
            "late": self.late,
            "now": self._now,
            # (empty containers skipped without sorting: the state of every changed outlet is taken at every
            # commit, docs/benchmark.md)
            "days": {str(d): {c: dc.to_json() for c, dc in day.items()} for d, day in sorted(self._days.items())}
            if self._days
            else {},
            "legacy": {str(d): {c: list(a) for c, a in x.items()} for d, x in sorted(self._legacy.items())}
            if self._legacy
            else {},
            "das": {str(d): {c: list(v) for c, v in das.items()} for d, das in sorted(self._das.items())}
            if self._das
            else {},
            "dirty": sorted(self._dirty) if self._dirty else [],
            "late_days": sorted(self._late_days) if self._late_days else [],
            "reported": {str(d): dict(r) for d, r in sorted(self._reported.items())} if self._reported else {},
            "stored": sorted(self._stored) if self._stored else [],
        }

    def restore(self, state: dict[str, Any]) -> None:
        version = state.get("version")
        if version not in (1, 2) or state.get("kind") != "daily" or state.get("mn") != self.mn:
            raise ValueError(f"not a version-1 or -2 daily state of outlet {self.mn!r}")
        self._closed_before = int(state["closed_before"])
        self.late = int(state["late"])
        self._das = {int(d): {c: (v[0], v[1], str(v[2])) for c, v in das.items()} for d, das in state["das"].items()}
        if version == 1:  # open days as sums (no per-hour slots): kept as such, added to the day's hours
            self._legacy = {
                int(d): {c: [float(x) for x in a] for c, a in accs.items()} for d, accs in state["open"].items()
            }
            self._days = {d: {} for d in self._legacy}
            for d in self._das:
                self._days.setdefault(d, {})
            self._dirty, self._late_days, self._reported, self._now = _NO_DAYS, _NO_DAYS, {}, -(1 << 62)
            self._stored = _NO_DAYS
            self._days, self._legacy, self._das = self._days or _EMPTY, self._legacy or _EMPTY, self._das or _EMPTY
            return
        self._now = int(state["now"])
        self._days = {
            int(d): {c: _DayCode.from_json(raw) for c, raw in day.items()} for d, day in state["days"].items()
        }
        self._legacy = {
            int(d): {c: [float(x) for x in a] for c, a in x.items()} for d, x in state.get("legacy", {}).items()
        }
        self._dirty = {int(d) for d in state.get("dirty", [])} or _NO_DAYS
        self._late_days = {int(d) for d in state.get("late_days", [])} or _NO_DAYS
        self._reported = {int(d): dict(r) for d, r in state.get("reported", {}).items()}
        self._stored = {int(d) for d in state.get("stored", [])} or _NO_DAYS
        self._days, self._legacy, self._das = self._days or _EMPTY, self._legacy or _EMPTY, self._das or _EMPTY


# ---------------------------------------------------------------------------------------------- month


@dataclass(frozen=True, slots=True)
class MonthResult:
    """One outlet, code and Beijing month: month validity and, where the profile has one, the monthly rule."""

    mn: str
    pollutant: str
    month: str  # "YYYY-MM"
    valid_days: int
    days_needed: int
    month_valid: bool
    valid_hours: int
    #: Valid hours judged under a monthly rule, and of them those at or below the hourly limit.
    rule_hours: int
    hours_within_limit: int
    share_within_limit: float | None
    share_required: float | None
    #: ``None``: no monthly rule for this profile, or no valid hour to judge.
    meets_monthly_rule: bool | None
    citation: str
    #: Valid hours under the monthly rule that marks left out of it ("not judged", MEE 公告2022年第21号;
    #: :mod:`cems.rules.monthly`): not in ``rule_hours``.
    marked_hours: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mn": self.mn,
            "pollutant": self.pollutant,
            "month": self.month,
            "valid_days": self.valid_days,
            "days_needed": self.days_needed,
            "month_valid": self.month_valid,
            "valid_hours": self.valid_hours,
            "rule_hours": self.rule_hours,
            "hours_within_limit": self.hours_within_limit,
            "share_within_limit": self.share_within_limit,
            "share_required": self.share_required,
            "meets_monthly_rule": self.meets_monthly_rule,
            "citation": self.citation,
            "marked_hours": self.marked_hours,
        }


def _month(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def month_results(hourly: Iterable[HourlyRecord], daily: Iterable[DailyRecord]) -> list[MonthResult]:
    """Per outlet, code and month present in ``hourly``/``daily``: month validity (≥ 25 valid days, ≥ 23 in
    February) and the profile's monthly rule (share of valid hours at or below the hourly limit)."""
    profiles = builtin_profiles()
    days: dict[tuple[str, str, str], int] = {}
    febs: dict[tuple[str, str, str], bool] = {}
    for r in daily:
        key = (r.mn, r.pollutant, _month(r.day))
        days[key] = days.get(key, 0) + (1 if r.valid else 0)
        febs[key] = r.day.month == 2
    hours: dict[tuple[str, str, str], list[int]] = {}  # [valid hours, rule hours, within limit]
    share: dict[tuple[str, str, str], tuple[float, str]] = {}
    for h in hourly:
        d = h.hour_start.astimezone(BEIJING).date()
        key = (h.mn, h.pollutant, _month(d))
        febs[key] = d.month == 2
        c = hours.setdefault(key, [0, 0, 0])
        if not h.counts_valid:
            continue
        c[0] += 1
        p = profiles.get(h.profile) if h.profile else None
        if p is None or p.monthly_share is None or h.limit is None or h.zs_avg is None:
            continue
        c[1] += 1
        c[2] += 1 if h.zs_avg <= h.limit else 0
        share[key] = (p.monthly_share, p.monthly_citation)
    out: list[MonthResult] = []
    for key in sorted(set(days) | set(hours)):
        mn, code, month = key
        need = MIN_VALID_DAYS_FEBRUARY if febs.get(key) else MIN_VALID_DAYS_PER_MONTH
        vd = days.get(key, 0)
        valid_h, rule_h, within = hours.get(key, [0, 0, 0])
        req, cite = share.get(key, (None, ""))
        ratio = within / rule_h if rule_h else None
        out.append(
            MonthResult(
                mn=mn,
                pollutant=code,
                month=month,
                valid_days=vd,
                days_needed=need,
                month_valid=vd >= need,
                valid_hours=valid_h,
                rule_hours=rule_h,
                hours_within_limit=within,
                share_within_limit=ratio,
                share_required=req,
                meets_monthly_rule=None if req is None or ratio is None else ratio >= req,
                citation=cite,
            )
        )
    return out
