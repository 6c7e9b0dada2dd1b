"""Monthly results, live (issue 12): month validity and the steel ultra-low monthly rule per outlet, code and
Beijing month, as :func:`cems.rules.daily.month_results` computes them from the final records, but incremental
and revisable.  Pure: no I/O, no clock reads.

* **Month validity**: ≥ 25 valid days (≥ 23 in February) (HJ 75-2017, DOMAIN.md §3).
* **Monthly rule** (profiles with ``monthly_share``: steel ultra-low, 环大气〔2019〕35号): the share of the
  month's valid hours at or below the hourly limit must reach the required share (95 %).

A month's result is returned when the month closes (its last day is closed: :class:`~cems.rules.daily.OutletDaily`)
and again whenever a revised hour or day of it changes it, until the month is final: after the 10th of the
next month (修约/补遗 and documents by the 10th, DOMAIN.md §5; :func:`~cems.rules.hourly.repair_deadline` of the
month's last hour).  Hours and days are kept as bit sets (one bit per hour or day of the month), so a
revision replaces its hour's contribution and the result is the same whatever the order the data came in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Final

from cems.limits import builtin_profiles
from cems.model import BEIJING
from cems.rules.daily import (
    MIN_VALID_DAYS_FEBRUARY,
    MIN_VALID_DAYS_PER_MONTH,
    DailyRecord,
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

    __slots__ = ("cite", "days", "rule", "rule_hour", "seen", "share", "valid", "within")

    def __init__(self) -> None:
        self.seen = self.valid = self.rule = self.within = self.days = 0
        self.rule_hour = -1
        self.share: float | None = None
        self.cite = ""

    def to_json(self) -> list[Any]:
        return [self.seen, self.valid, self.rule, self.within, self.days, self.rule_hour, self.share, self.cite]

    @classmethod
    def from_json(cls, raw: list[Any]) -> _MonthCode:
        mc = cls()
        mc.seen, mc.valid, mc.rule, mc.within, mc.days, mc.rule_hour = (int(x) for x in raw[:6])
        mc.share = None if raw[6] is None else float(raw[6])
        mc.cite = str(raw[7])
        return mc


class OutletMonthly:
    """Monthly results of one outlet (see the module docstring)."""

    __slots__ = ("_closed_before", "_dirty", "_months", "_now", "_repair", "mn")

    def __init__(self, mn: str, *, repair_window: Any = REPAIR_WINDOW) -> None:
        self.mn = mn
        self._repair = repair_window
        #: (year, month) → code → its bit sets; open months and closed ones not yet final
        self._months: dict[tuple[int, int], dict[str, _MonthCode]] = {}
        self._closed_before: tuple[int, int] = (0, 0)  # every earlier month is closed
        self._dirty: set[tuple[int, int]] = set()
        self._now = _NEVER

    def _final(self, ym: tuple[int, int]) -> bool:
        return self._now >= repair_deadline(_last_hour(*ym), self._repair)

    def _code(self, ym: tuple[int, int], code: str) -> _MonthCode | None:
        if ym < self._closed_before:
            if self._final(ym):
                return None
            self._dirty.add(ym)
        month = self._months.get(ym)
        if month is None:
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
            if not h.counts_valid:
                continue
            mc.valid |= bit
            p = profiles.get(h.profile) if h.profile else None
            if p is None or p.monthly_share is None or h.limit is None or h.zs_avg is None:
                continue
            mc.rule |= bit
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

    def close(self, days_closed_before: date | None) -> list[MonthResult]:
        """Every day before ``days_closed_before`` is closed (``None``: the input has ended, close every
        month): return the months this closes and the closed months revised since last returned."""
        if days_closed_before is None:
            if self._months:
                self._closed_before = max(self._closed_before, _next(*max(self._months)))
            self._dirty.update(ym for ym in self._months)
        else:
            d = days_closed_before
            # the month of that day is closed once the day is its first (every earlier day is closed)
            before = (d.year, d.month)
            if before <= self._closed_before and not self._dirty:
                return []  # the common case (every clock tick): nothing closed, nothing revised
            if before > self._closed_before:
                self._dirty.update(ym for ym in self._months if self._closed_before <= ym < before)
                self._closed_before = before
            u = math.floor(datetime(d.year, d.month, d.day, tzinfo=BEIJING).timestamp())
            if u > self._now:
                self._now = u
        out: list[MonthResult] = []
        for ym in sorted(self._dirty):
            if ym < self._closed_before and ym in self._months:
                out += self._results(ym)
        self._dirty = {ym for ym in self._dirty if ym >= self._closed_before}
        for ym in [k for k in self._months if k < self._closed_before and self._final(k)]:
            del self._months[ym]
        return out

    def _results(self, ym: tuple[int, int]) -> list[MonthResult]:
        y, m = ym
        need = MIN_VALID_DAYS_FEBRUARY if m == 2 else MIN_VALID_DAYS_PER_MONTH
        out: list[MonthResult] = []
        for code, mc in sorted(self._months[ym].items()):
            vd = mc.days.bit_count()
            rule_h, within = mc.rule.bit_count(), mc.within.bit_count()
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
        self._closed_before = (int(cb[0]), int(cb[1]))
        self._now = int(state["now"])
        self._dirty = {(int(y), int(m)) for y, m in state["dirty"]}
        self._months = {
            (int(y), int(m)): {c: _MonthCode.from_json(raw) for c, raw in codes.items()}
            for y, m, codes in state["months"]
        }
