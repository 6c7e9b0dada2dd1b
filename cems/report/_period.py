"""Report periods: a Beijing calendar month, ISO week or day, as a ``[start, end)`` window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from cems.errors import CemsError
from cems.model import BEIJING

_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Period:
    """``kind``: "month", "week" or "day"; ``key``: "2026-11", "2026-W47" or "2026-11-20"."""

    kind: str
    key: str
    first: date  # first Beijing day
    last: date  # last Beijing day (inclusive)

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), BEIJING)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), BEIJING)

    @property
    def days(self) -> list[date]:
        n = (self.last - self.first).days + 1
        return [self.first + timedelta(days=i) for i in range(n)]

    @property
    def label(self) -> str:
        """Chinese label for titles: 2026年11月, 2026年第47周（11月16日—11月22日）, 2026年11月20日."""
        if self.kind == "month":
            return f"{self.first.year}年{self.first.month}月"
        if self.kind == "week":
            y, w, _ = self.first.isocalendar()
            return f"{y}年第{w}周（{self.first.month}月{self.first.day}日—{self.last.month}月{self.last.day}日）"
        return f"{self.first.year}年{self.first.month}月{self.first.day}日"

    @classmethod
    def month(cls, text: str) -> Period:
        m = _MONTH_RE.match(text.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise CemsError(f"--month {text!r}: expected YYYY-MM")
        y, mo = int(m.group(1)), int(m.group(2))
        first = date(y, mo, 1)
        nxt = date(y + (mo == 12), mo % 12 + 1, 1)
        return cls("month", f"{y:04d}-{mo:02d}", first, nxt - timedelta(days=1))

    @classmethod
    def week(cls, text: str) -> Period:
        m = _WEEK_RE.match(text.strip())
        if not m:
            raise CemsError(f"--week {text!r}: expected an ISO week YYYY-Www, e.g. 2026-W47")
        y, w = int(m.group(1)), int(m.group(2))
        try:
            first = date.fromisocalendar(y, w, 1)
        except ValueError as e:
            raise CemsError(f"--week {text!r}: {e}") from None
        return cls("week", f"{y:04d}-W{w:02d}", first, first + timedelta(days=6))

    @classmethod
    def day(cls, text: str) -> Period:
        try:
            d = date.fromisoformat(text.strip())
        except ValueError:
            raise CemsError(f"--day {text!r}: expected YYYY-MM-DD") from None
        return cls("day", d.isoformat(), d, d)
