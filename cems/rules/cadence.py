"""The cadence of an outlet's data, inferred from the data (issue 12 item 6).  Pure: no I/O, no clock.

A DAS's real-time (CN=2011) and minute (CN=2051) intervals are device settings (HJ 212 ``RtdInterval``,
``MinInterval``) that the registry may not know or may have wrong: with ``rtd_interval_s = 30`` assumed, a DAS
sending every 60 s had no valid minute at all.  So the cadence is inferred from the data, with the registry
value only as a hint when there is too little data to infer from:

* **within an hour** (:func:`hour_cadence`): the lower median of the gaps between consecutive distinct data
  times of one code in one hour.  It depends only on that hour's data, never on arrival order, so live and
  replay agree, and a revised hour is rebuilt the same way.  A median is robust to strays: one extra CN=2051
  record at minute 51 of a 10-minute stream adds one short gap to five regular ones and leaves the cadence at
  10 minutes (the old minimum-gap rule made it 1 minute and the hour 7 minutes long).  It stays right while
  fewer than a third of the values are extra or missing.
* **across hours** (:class:`RecentGaps`): the lower median of the last :data:`WINDOW` gaps between an outlet's
  successive data times, any stream, for the data-interruption threshold; before :data:`MIN_GAPS` gaps, the
  hint of the finest stream seen (a DAS that sends only CN=2061 records has a cadence of an hour).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import Any, Final

from cems.model import Stream

#: Gaps kept per outlet for the interruption cadence (bounded state; odd, so the median is one of them).
WINDOW: Final = 9
#: Gaps needed before the inferred cadence replaces the hint.
MIN_GAPS: Final = 3

#: Nominal period of a stream when nothing better is known, s (HJ 212: minute data every 1-10 min; hourly
#: and daily records once per period).  Real-time data: the registry's ``rtd_interval_s``.
STREAM_HINT_S: Final[dict[Stream, int]] = {Stream.MIN: 60, Stream.HOUR: 3600, Stream.DAY: 86400}


def median_low(values: Iterable[int]) -> int:
    s = sorted(values)
    return s[(len(s) - 1) // 2]


def hour_cadence(secs: Iterable[int], hint: int, *, min_gaps: int = 2) -> int:
    """Cadence (s) of one code's data in one hour from its data times (seconds within the hour): the lower
    median of the gaps between consecutive distinct times, or ``hint`` with fewer than ``min_gaps`` gaps."""
    s = sorted(set(secs))
    if len(s) < min_gaps + 1:
        return hint
    return median_low(b - a for a, b in pairwise(s))


#: The gap tuples of every outlet (memory, issue 20): a DAS sending at a steady interval has the same last
#: gaps as every other DAS with that interval, so they share one tuple.  Bounded.
_GAPS: dict[tuple[int, ...], tuple[int, ...]] = {}


def _shared_gaps(gaps: tuple[int, ...]) -> tuple[int, ...]:
    t = _GAPS.get(gaps)
    if t is None:
        t = gaps
        if len(_GAPS) < 4096:
            _GAPS[gaps] = t
    return t


class RecentGaps:
    """The last :data:`WINDOW` gaps between an outlet's successive data times (bounded: a few dozen bytes,
    usually none: the gaps are a tuple shared with the outlets that had the same), and the finest stream hint
    seen.  Feed data times in order; older or equal times are ignored."""

    __slots__ = ("_gaps", "_hint", "_last")

    def __init__(self) -> None:
        self._gaps: tuple[int, ...] = ()
        self._last: int | None = None
        self._hint: int | None = None

    def on_data(self, ts: float, hint: int | None) -> None:
        if hint is not None and (self._hint is None or hint < self._hint):
            self._hint = hint
        t = int(ts)
        last = self._last
        if last is not None and t <= last:
            return
        self._last = t
        if last is None:
            return
        gap = t - last
        if gap > 86400:  # an outage, not a cadence
            return
        gaps = self._gaps
        if len(gaps) >= WINDOW:
            if gaps.count(gap) == WINDOW:
                return  # a steady cadence: the same gaps again
            self._gaps = _shared_gaps((*gaps[1:], gap))
        else:
            self._gaps = _shared_gaps((*gaps, gap))

    def cadence(self, default: int) -> int:
        """The median of the recent gaps; before :data:`MIN_GAPS` of them, the finest stream hint seen (else
        ``default``)."""
        if len(self._gaps) >= MIN_GAPS:
            return median_low(self._gaps)
        return self._hint if self._hint is not None else default

    def snapshot(self) -> dict[str, Any]:
        return {"gaps": list(self._gaps), "last": self._last, "hint": self._hint}

    def restore(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self._gaps = _shared_gaps(tuple(int(g) for g in state.get("gaps", [])[-WINDOW:]))
        last, hint = state.get("last"), state.get("hint")
        self._last = None if last is None else int(last)
        self._hint = None if hint is None else int(hint)
