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
* **Month** (:func:`month_results`): a month of a code is valid with ≥ 25 valid days (≥ 23 in February)
  (HJ 75-2017, DOMAIN.md §3).  Where the profile has a monthly rule (``monthly_share``: steel ultra-low,
  环大气〔2019〕35号, ≥ 95 % of the month's valid hours at or below the limits) the result says whether it is
  met.  That is compliance with the 2019 policy; a single hour above the limit is still an hourly exceedance
  (HJ 76-2017) of the configured limit, reported as such, but not by itself non-compliance with the policy.

Days close when an hourly record of a later day arrives, or on :meth:`OutletDaily.flush` (live: once every
hour of the day is closed; replay: at the end of the input).  Data for a closed day are not aggregated
(counted in ``late``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Final

from cems.limits import builtin_profiles
from cems.model import BEIJING, O2, Reading, Stream
from cems.registry import Outlet
from cems.rules.events import CLOSED, OPENED, Event, EventUpdate
from cems.rules.hourly import HourlyRecord, is_concentration
from cems.rules.limits import LimitSchedule, daily_limit_at
from cems.rules.o2 import DEFAULT_MAX_O2, correct

DAILY_EXCEEDANCE: Final = "daily_exceedance"
#: HJ 75-2017 (DOMAIN.md §3): a daily mean is valid with ≥ 20 valid hours; a month with ≥ 25 valid days
#: (≥ 23 in February).
MIN_VALID_HOURS_PER_DAY: Final = 20
MIN_VALID_DAYS_PER_MONTH: Final = 25
MIN_VALID_DAYS_FEBRUARY: Final = 23

SOURCE_HOURS: Final = "hours"
SOURCE_DAS_DAY: Final = "das_2031"

_BJ: Final = 8 * 3600
_DAY: Final = 86400


def _day_index(t: datetime) -> int:
    return (math.floor(t.timestamp()) + _BJ) // _DAY


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


# per code: [received hours, valid hours, sum of avg, n avg, sum of zs, n zs]
_Acc = list[float]
# DAS CN=2031 per code: (avg, zs, flag)
_Das = tuple[float | None, float | None, str]


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


class OutletDaily:
    """Daily means and daily exceedances of one outlet (see the module docstring)."""

    __slots__ = ("_closed_before", "_das", "_max_o2", "_open", "_schedule", "district", "enterprise", "late", "mn")

    def __init__(
        self,
        outlet: Outlet,
        enterprise: str,
        district: str,
        *,
        schedule: LimitSchedule | None = None,
        max_o2: float = DEFAULT_MAX_O2,
    ) -> None:
        self.mn = outlet.mn
        self.enterprise = enterprise
        self.district = district
        self._schedule = schedule if schedule is not None else LimitSchedule(outlet)
        self._max_o2 = max_o2
        self._open: dict[int, dict[str, _Acc]] = {}
        self._das: dict[int, dict[str, _Das]] = {}
        self._closed_before = -(1 << 40)  # every day with a smaller index is closed
        #: Hourly records and daily readings that arrived for a closed day (not aggregated).
        self.late = 0

    # -- input

    def on_reading(self, reading: Reading) -> None:
        """Keep a DAS daily record (CN=2031); other streams are ignored."""
        if reading.stream is not Stream.DAY:
            return
        d = _day_index(reading.data_time)
        if d < self._closed_before:
            self.late += 1
            return
        das = self._das.setdefault(d, {})
        for code, m in reading.measurements.items():
            avg, zs = _num(m.values.get("Avg")), _num(m.values.get("ZsAvg"))
            if avg is None and zs is None:
                continue
            das[code] = (avg, zs, "N" if m.flag is None else m.flag.upper())
        self._open.setdefault(d, {})

    def on_hours(self, records: Iterable[HourlyRecord]) -> list[DailyRecord]:
        """Add closed hourly records (any order within open days); returns the days this closes (those
        before the newest record's day)."""
        newest: int | None = None
        for rec in records:
            d = _day_index(rec.hour_start)
            if d < self._closed_before:
                self.late += 1
                continue
            newest = d if newest is None else max(newest, d)
            acc = self._open.setdefault(d, {}).get(rec.pollutant)
            if acc is None:
                acc = self._open[d][rec.pollutant] = [0.0] * 6
            acc[0] += 1
            if rec.counts_valid:
                acc[1] += 1
                if rec.avg is not None:
                    acc[2] += rec.avg
                    acc[3] += 1
                if rec.zs_avg is not None:
                    acc[4] += rec.zs_avg
                    acc[5] += 1
        if newest is None:
            return []
        return self._close(newest)

    def flush(self, until: datetime | None = None) -> list[DailyRecord]:
        """Close the days that ended at or before ``until`` (every open day when ``None``)."""
        if until is None:
            if not self._open:
                return []
            return self._close(max(self._open) + 1)
        return self._close(_day_index(until))

    # -- closing

    def _close(self, before: int) -> list[DailyRecord]:
        if before <= self._closed_before:
            return []
        self._closed_before = before
        out: list[DailyRecord] = []
        for d in sorted(k for k in self._open if k < before):
            out += self._build(d, self._open.pop(d), self._das.pop(d, {}))
        for d in [k for k in self._das if k < before]:
            del self._das[d]
        return out

    def _build(self, d: int, accs: Mapping[str, _Acc], das: Mapping[str, _Das]) -> list[DailyRecord]:
        start = _day_start(d)
        day = start.date()
        out: list[DailyRecord] = []
        das_o2 = das.get(O2)
        for code in sorted(set(accs) | set(das)):
            acc = accs.get(code)
            dv = das.get(code)
            das_avg, das_zs = (dv[0], dv[1]) if dv is not None else (None, None)
            conc = is_concentration(code)
            al = daily_limit_at(self._schedule.outlet, code, start) if conc else None
            ref = al.ref_o2 if al is not None else (self._schedule.ref_o2(start) if conc else None)
            note = ""
            if acc is not None:
                received, n_valid = int(acc[0]), int(acc[1])
                avg = acc[2] / acc[3] if acc[3] else None
                zs = acc[4] / acc[5] if acc[5] else None
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
                )
            )
        return out

    def exceedances(self, records: Iterable[DailyRecord]) -> list[EventUpdate]:
        """``daily_exceedance`` events (opened and closed at once: the day is over) of exceeding days."""
        ups: list[EventUpdate] = []
        for r in records:
            if not r.exceeds:
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
                peak=r.zs_avg,
                limit=r.limit,
                ref_o2=r.ref_o2,
                profile=r.profile,
                status="open",
            )
            ups += [EventUpdate(OPENED, ev), EventUpdate(CLOSED, ev.closed_at(start + timedelta(days=1)))]
        return ups

    # -- persistence (bounded: the open days, normally one or two)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "daily",
            "mn": self.mn,
            "closed_before": self._closed_before,
            "late": self.late,
            "open": {str(d): {c: list(a) for c, a in accs.items()} for d, accs in sorted(self._open.items())},
            "das": {str(d): {c: list(v) for c, v in das.items()} for d, das in sorted(self._das.items())},
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1 or state.get("kind") != "daily" or state.get("mn") != self.mn:
            raise ValueError(f"not a version-1 daily state of outlet {self.mn!r}")
        self._closed_before = int(state["closed_before"])
        self.late = int(state["late"])
        self._open = {int(d): {c: [float(x) for x in a] for c, a in accs.items()} for d, accs in state["open"].items()}
        self._das = {int(d): {c: (v[0], v[1], str(v[2])) for c, v in das.items()} for d, das in state["das"].items()}


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
