"""Monthly results, live (issue 12): month validity and the steel ultra-low monthly rule per outlet, code and
Beijing month, as :func:`cems.rules.daily.month_results` computes them from the final records, but incremental
and revisable.  Pure: no I/O, no clock reads.

* **Month validity**: ≥ 25 valid days (≥ 23 in February) (HJ 75-2017, DOMAIN.md §3).
* **Monthly rule** (profiles with ``monthly_share``: steel ultra-low, 环大气〔2019〕35号): the share of the
  month's valid hours at or below the hourly limit must reach the required share (95 %).
* **Marks** (issue 14): valid hours marked "not judged" (:meth:`cems.rules.marks.MarkLedger.exempting`, through
  :attr:`OutletMonthly.exempt`) are left out of the monthly rule's hours, within the limit or not — MEE
  公告2022年第21号: data marked as not judged are not used to judge exceedances — as they are out of the daily
  judgement (:mod:`cems.rules.daily`). The marks are applied when a month's result is computed, so a mark (or a
  withdrawal) over a closed month revises it until the month is final (:meth:`OutletMonthly.remark`).

A month's result is returned when the month closes (its last day is closed: :class:`~cems.rules.daily.OutletDaily`)
and again whenever a revised hour or day of it changes it, until the month is final: after the 10th of the
next month (修约/补遗 and documents by the 10th, DOMAIN.md §5; :func:`~cems.rules.hourly.repair_deadline` of the
month's last hour).  Hours and days are kept as bit sets (one bit per hour or day of the month), so a
revision replaces its hour's contribution and the result is the same whatever the order the data came in.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any, Final

from cems.limits import builtin_profiles
from cems.model import BEIJING
from cems.rules.daily import (
    MIN_VALID_DAYS_FEBRUARY,
    MIN_VALID_DAYS_PER_MONTH,
    DailyRecord,
    Exempt,
    MonthResult,
)
from cems.rules.hourly import REPAIR_WINDOW, HourlyRecord, repair_deadline

_NEVER: Final = -(1 << 62)


def _month_of(t: datetime) -> tuple[int, int]:
    b = t.astimezone(BEIJING)
    return b.year, b.month


def _month_start(y: int, m: int) -> datetime:
    return datetime(y, m, 1, tzinfo=BEIJING)


def _next(y: int, m: int) -> tuple[int, int]:
    return (y + 1, 1) if m == 12 else (y, m + 1)


def _last_hour(y: int, m: int) -> int:
    """Start (epoch s) of the month's last hour."""
    return math.floor(_month_start(*_next(y, m)).timestamp()) - 3600


class _MonthCode:
    """One code in one month: bit sets of its hours (received, valid, judged under a monthly rule, within the
    limit) and of its valid days; the rule's share and citation of the latest rule hour."""

    __slots__ = ("cite", "days", "rule", "rule_hour", "seen", "share", "valid", "within", "zs")

    def __init__(self) -> None:
        self.seen = self.valid = self.rule = self.within = self.days = 0
        self.rule_hour = -1
        self.share: float | None = None
        self.cite = ""
        #: The corrected hourly mean of each rule hour (NaN elsewhere), for the marks' ``judged_above``; made for
        #: the first rule hour only (steel outlets), 744 doubles.
        self.zs: array[float] | None = None

    def set_zs(self, i: int, value: float | None) -> None:
        if self.zs is None:
            if value is None:
                return
            self.zs = array("d", [math.nan]) * _MONTH_HOURS
        self.zs[i] = math.nan if value is None else value

    def zs_at(self, i: int) -> float | None:
        v = math.nan if self.zs is None else self.zs[i]
        return None if math.isnan(v) else v

    def to_json(self) -> list[Any]:
        out: list[Any] = [
            self.seen,
            self.valid,
            self.rule,
            self.within,
            self.days,
            self.rule_hour,
            self.share,
            self.cite,
        ]
        if self.zs is not None:
            out.append({str(i): v for i, v in enumerate(self.zs) if not math.isnan(v)})
        return out

    @classmethod
    def from_json(cls, raw: list[Any]) -> _MonthCode:
        mc = cls()
        mc.seen, mc.valid, mc.rule, mc.within, mc.days, mc.rule_hour = (int(x) for x in raw[:6])
        mc.share = None if raw[6] is None else float(raw[6])
        mc.cite = str(raw[7])
        if len(raw) > 8:  # states saved before marks applied to the monthly rule have no values (not exempted)
            for i, v in raw[8].items():
                mc.set_zs(int(i), float(v))
        return mc


#: Hours in the longest month.
_MONTH_HOURS: Final = 31 * 24


#: The shared empty set of months to judge again (most outlets have none most of the time).
_NO_MONTHS: Final[frozenset[tuple[int, int]]] = frozenset()
#: The shared empty months of an outlet without hourly records yet (replaced by its own dict when first
#: written; memory, issue 20).
_NO_CODES: Final[dict[tuple[int, int], dict[str, _MonthCode]]] = {}
#: One (year, month) tuple per month for every outlet's ``_closed_before`` (memory, issue 20: 56 bytes each).
_MONTHS: dict[tuple[int, int], tuple[int, int]] = {}


def _shared_month(ym: tuple[int, int]) -> tuple[int, int]:
    """``ym``, or the equal tuple already kept (bounded)."""
    t = _MONTHS.get(ym)
    if t is None:
        t = ym
        if len(_MONTHS) < 4096:
            _MONTHS[ym] = t
    return t


class OutletMonthly:
    """Monthly results of one outlet (see the module docstring)."""

    __slots__ = ("_closed_before", "_dirty", "_months", "_now", "_repair", "exempt", "mn")

    def __init__(self, mn: str, *, repair_window: Any = REPAIR_WINDOW) -> None:
        self.mn = mn
        #: Whether marks exempt an hour from judgement (set by the engine; None: no marks).
        self.exempt: Exempt | None = None
        self._repair = repair_window
        #: (year, month) → code → its bit sets; open months and closed ones not yet final
        self._months: dict[tuple[int, int], dict[str, _MonthCode]] = _NO_CODES
        self._closed_before: tuple[int, int] = (0, 0)  # every earlier month is closed
        self._dirty: set[tuple[int, int]] | frozenset[tuple[int, int]] = _NO_MONTHS
        self._now = _NEVER

    def _final(self, ym: tuple[int, int]) -> bool:
        return self._now >= repair_deadline(_last_hour(*ym), self._repair)

    def _revise(self, ym: tuple[int, int]) -> None:
        """A closed month to judge again (the set made when first needed: memory, issue 20)."""
        if isinstance(self._dirty, set):
            self._dirty.add(ym)
        else:
            self._dirty = {ym}

    def _code(self, ym: tuple[int, int], code: str) -> _MonthCode | None:
        if ym < self._closed_before:
            if self._final(ym):
                return None
            self._revise(ym)
        month = self._months.get(ym)
        if month is None:
            if self._months is _NO_CODES:
                self._months = {}
            month = self._months[ym] = {}
        mc = month.get(code)
        if mc is None:
            mc = month[code] = _MonthCode()
        return mc

    def on_hours(self, records: Iterable[HourlyRecord]) -> None:
        """Hourly records, first or revised (any order)."""
        profiles = builtin_profiles()
        for h in records:
            ts = math.floor(h.hour_start.timestamp())
            if ts + 3600 > self._now:
                self._now = ts + 3600
            ym = _month_of(h.hour_start)
            mc = self._code(ym, h.pollutant)
            if mc is None:
                continue
            i = (ts - math.floor(_month_start(*ym).timestamp())) // 3600
            bit = 1 << i
            mc.seen |= bit
            mc.valid &= ~bit
            mc.rule &= ~bit
            mc.within &= ~bit
            if mc.zs is not None:
                mc.set_zs(i, None)
            if not h.counts_valid:
                continue
            mc.valid |= bit
            p = profiles.get(h.profile) if h.profile else None
            if p is None or p.monthly_share is None or h.limit is None or h.zs_avg is None:
                continue
            mc.rule |= bit
            mc.set_zs(i, h.zs_avg)
            if h.zs_avg <= h.limit:
                mc.within |= bit
            if i >= mc.rule_hour:
                mc.rule_hour, mc.share, mc.cite = i, p.monthly_share, p.monthly_citation

    def on_days(self, days: Iterable[DailyRecord]) -> None:
        """Daily records, first or revised."""
        for d in days:
            ym = (d.day.year, d.day.month)
            mc = self._code(ym, d.pollutant)
            if mc is None:
                continue
            bit = 1 << (d.day.day - 1)
            mc.days = mc.days | bit if d.valid else mc.days & ~bit

    def remark(self, start: datetime, end: datetime) -> None:
        """Marks over ``[start, end)`` changed (issue 14): the closed months they touch are judged again (returned
        by the next :meth:`close`) until final; open months are judged with the marks when they close."""
        ym, last = _month_of(start), _month_of(end - timedelta(microseconds=1))
        while ym <= last:
            if ym < self._closed_before and ym in self._months and not self._final(ym):
                self._revise(ym)
            ym = _next(*ym)

    def _marked(self, ym: tuple[int, int]) -> int:
        """The month's hours (bits) that marks exempt from judgement: the hours of its rule hours whose marks
        say "not judged", given the hour's corrected means (``judged_above``)."""
        if self.exempt is None:
            return 0
        codes = self._months[ym]
        rule = 0
        for mc in codes.values():
            rule |= mc.rule
        if not rule:
            return 0
        base = math.floor(_month_start(*ym).timestamp())
        mask = 0
        while rule:
            low = rule & -rule
            i = low.bit_length() - 1
            rule ^= low
            raw = {c: mc.zs_at(i) for c, mc in codes.items() if mc.rule & low}
            if self.exempt(self.mn, base + i * 3600, raw) is not None:
                mask |= low
        return mask

    def close(self, days_closed_before: date | None) -> list[MonthResult]:
        """Every day before ``days_closed_before`` is closed (``None``: the input has ended, close every
        month): return the months this closes and the closed months revised since last returned."""
        if days_closed_before is None:
            if self._months:
                self._closed_before = max(self._closed_before, _next(*max(self._months)))
            self._dirty = set(self._dirty) | set(self._months)
        else:
            d = days_closed_before
            # the month of that day is closed once the day is its first (every earlier day is closed)
            before = (d.year, d.month)
            if before <= self._closed_before and not self._dirty:
                return []  # the common case (every clock tick): nothing closed, nothing revised
            if before > self._closed_before:
                self._dirty = set(self._dirty) | {ym for ym in self._months if self._closed_before <= ym < before}
                self._closed_before = _shared_month(before)
            u = math.floor(datetime(d.year, d.month, d.day, tzinfo=BEIJING).timestamp())
            if u > self._now:
                self._now = u
        out: list[MonthResult] = []
        for ym in sorted(self._dirty):
            if ym < self._closed_before and ym in self._months:
                out += self._results(ym)
        self._dirty = {ym for ym in self._dirty if ym >= self._closed_before} or _NO_MONTHS
        for ym in [k for k in self._months if k < self._closed_before and self._final(k)]:
            del self._months[ym]
        return out

    def _results(self, ym: tuple[int, int]) -> list[MonthResult]:
        y, m = ym
        need = MIN_VALID_DAYS_FEBRUARY if m == 2 else MIN_VALID_DAYS_PER_MONTH
        out: list[MonthResult] = []
        marked = self._marked(ym)
        for code, mc in sorted(self._months[ym].items()):
            vd = mc.days.bit_count()
            rule_h, within = (mc.rule & ~marked).bit_count(), (mc.within & ~marked).bit_count()
            req = mc.share if rule_h else None
            ratio = within / rule_h if rule_h else None
            out.append(
                MonthResult(
                    mn=self.mn,
                    pollutant=code,
                    month=f"{y:04d}-{m:02d}",
                    valid_days=vd,
                    days_needed=need,
                    month_valid=vd >= need,
                    valid_hours=mc.valid.bit_count(),
                    rule_hours=rule_h,
                    hours_within_limit=within,
                    share_within_limit=ratio,
                    share_required=req,
                    meets_monthly_rule=None if req is None or ratio is None else ratio >= req,
                    citation=mc.cite if rule_h else "",
                    marked_hours=(mc.rule & marked).bit_count(),
                )
            )
        return out

    # -- persistence (bounded: the open month and the closed one until the 10th)

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "monthly",
            "mn": self.mn,
            "closed_before": list(self._closed_before),
            "now": self._now,
            "dirty": sorted(list(ym) for ym in self._dirty) if self._dirty else [],
            "months": [[y, m, {c: mc.to_json() for c, mc in codes.items()}] for (y, m), codes in self._months.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1 or state.get("kind") != "monthly" or state.get("mn") != self.mn:
            raise ValueError(f"not a version-1 monthly state of outlet {self.mn!r}")
        cb = state["closed_before"]
        self._closed_before = _shared_month((int(cb[0]), int(cb[1])))
        self._now = int(state["now"])
        self._dirty = {(int(y), int(m)) for y, m in state["dirty"]} or _NO_MONTHS
        self._months = {
            (int(y), int(m)): {c: _MonthCode.from_json(raw) for c, raw in codes.items()}
            for y, m, codes in state["months"]
        } or _NO_CODES
