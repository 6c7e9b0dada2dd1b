"""Data transmission effective rate (数据传输有效率) and district supervision (DOMAIN.md §5).

* 传输有效率 = 传输率 × 有效率; 传输率 = received ÷ expected hourly records; 有效率 = valid (flag N) ÷
  received.  Counted on hourly records per outlet and assessed factor (``city.assessed_factors``;
  particulate, SO2, NOx by default), per hour in Beijing time.  The effective rate equals valid ÷ expected,
  so it is also defined (0) when nothing was received.
* Hours in a declared stop (停产/停运) are removed from the expected count (and what arrived for them is not
  counted either).  A partly stopped hour is removed when less than 45 minutes of it are outside the stop:
  such an hour cannot reach the 45 valid minutes of HJ 75-2017, so it cannot be expected.
* Duplicates and late arrivals count once (one slot per outlet, factor and hour).  When several records
  arrive for a slot, a DAS CN=2061 record outranks a computed one (the precedence of the hourly rules);
  among records of the same rank the last one wins (a repair, 修约, replaces the original).
* Aggregates (per day, month, district) sum the counts first, then divide; no expected hours → ``None``.
* A district is put under listed supervision (挂牌督办) for a month when its effective rate is below
  ``city.transmission_rate_target`` (90 %), or when ``city.supervision_enterprise_threshold`` or more
  (含, inclusive) distinct enterprises of the district had an hourly exceedance that month (seeds 000, 001,
  003, 004).  Month and day boundaries are Beijing time.

Assessed period of an outlet (issue 12 item 4): the registry decides it, never the data.  Expected hours
start at the start of the window asked for (a calendar day or month: live ``cems_rate``, ``cems report``) or
at Beijing midnight of ``outlet.since``, whichever is later; only documented stops (``outlet.stop``) remove
hours.  An outlet that is silent for most of a month, or never reported at all, is therefore counted from the
1st of the month (or its ``since``) and shows what it really transmitted: the rate is assessed per calendar
month (DOMAIN.md §5, published monthly by the national pollution-source monitoring centre), so the first
record of an outlet is no evidence that it was not due before.  An outlet monitored from a later date must
say so with ``since``.  Replay (:meth:`RateCounter.replay_window`) counts whole months to date: from the 1st
of the first month present in the input to the end of the last day present.
"""

from __future__ import annotations

import math
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Final, Protocol

from cems.model import BEIJING
from cems.registry import City, Outlet, OutletInfo, Registry
from cems.rules.hourly import SOURCE_DAS, SOURCE_MINUTES, HourlyRecord

_BJ_OFFSET: Final = 8 * 3600
_DAY: Final = 86400
#: Minutes of an hour that must lie outside a stop for the hour to be expected (HJ 75-2017, 45 minutes).
MIN_EXPECTED_MINUTES: Final = 45

_RANK: Final[dict[str, int]] = {SOURCE_DAS: 2, SOURCE_MINUTES: 1}

#: How the figures behind a supervision reason are counted, citing the standards (DOMAIN.md §3, §5).
RATE_RULE_ZH: Final = (
    "传输有效率 = 传输率 × 有效率，按小时记录计；有效小时均值须有不少于 45 分钟的有效数据（HJ 75-2017）"
)
EXCEEDANCE_RULE_ZH: Final = "超标指小时折算均值超过排放限值（HJ 76-2017）"


class RateOverlay(Protocol):
    """Marks, declarations and repairs over the counted hours (issue 14; :class:`cems.rules.marks.MarkLedger`):
    applied when the rates are computed, so they count the same whatever arrived first."""

    def rate_effects(self, mn: str, lo: int, hi: int) -> Mapping[int, str]: ...

    def repairs(self, mn: str) -> Mapping[tuple[str, int], object]: ...

    def all_repairs(self) -> list[tuple[str, str, int]]: ...

    def judged_exceeds(self, mn: str, pollutant: str, hour: int, exceeds: bool) -> bool: ...


def _ts(t: datetime) -> int:
    return math.floor((t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)).timestamp())


#: ``bytes.translate`` table of a stored byte (code + 1; 0: no record) to 1 when its hour counts valid (code odd).
_VALID_BYTE: Final = bytes(1 if c and (c - 1) & 1 else 0 for c in range(256))


#: An :class:`_HourCodes` value: ``_HEAD`` (the first stored hour, ``h // 3600``; the hours covered, ``_DENSE`` set
#: when the body is one stored byte an hour) and the body: pairs (hours 1–255, stored byte), run-length encoded, or
#: the bytes themselves.  The first and last hours covered have a record.
_HEAD: Final = struct.Struct("<iI")
_DENSE: Final = 1 << 31
#: A body is run-length encoded while its pairs take at most a byte for four hours and this many bytes (more: codes
#: that change every few hours, a byte an hour, and :meth:`_HourCodes.span` a slice, not a decoding).
_SLACK: Final = 32
#: ``_FILL[v][:c]``: ``c`` (≤ 255) bytes ``v``.
_FILL: Final = tuple(bytes((v,)) * 255 for v in range(256))
_PAIR1: Final = tuple(bytes((1, v)) for v in range(256))
_RUN_RE: Final = re.compile(rb"(.)\1*", re.S)

#: The run-length encoded values in use, each once (issue 20): the outlets and factors with the same counted hours
#: (at a month's end most of a city: every hour received and valid) share one ``bytes``.  Swept of the values no
#: counter holds any more whenever it grew by a quarter or ``_RUNS_GROW`` entries since the last sweep.
_RUNS: Final[dict[bytes, bytes]] = {}
_RUNS_GROW: Final = 4096
_runs_sweep_at = _RUNS_GROW
#: References to a value held by nobody but ``_RUNS``, as :func:`_sweep` counts them: key and value, the
#: comprehension's name, ``sys.getrefcount``'s argument.
_UNHELD: Final = 4


def _intern(b: bytes) -> bytes:
    got = _RUNS.setdefault(b, b)
    if got is b and len(_RUNS) > _runs_sweep_at:
        _sweep()
    return got


def _sweep() -> None:
    """Forget the values of ``_RUNS`` no counter holds (CPython's reference counts)."""
    global _runs_sweep_at
    held = {k: k for k in _RUNS if sys.getrefcount(k) > _UNHELD}
    _RUNS.clear()  # (a dict does not shrink when entries are deleted: rebuilt)
    _RUNS.update(held)
    del held
    _runs_sweep_at = len(_RUNS) + max(len(_RUNS) // 4, _RUNS_GROW)


#: The live write's spans of run-length encoded values (one value, one window: the same bytes for every counter that
#: shares the value; a few dozen kept).
_SPANS: Final[dict[tuple[bytes, int, int], bytes]] = {}


def _encode(s: int, runs: Iterable[tuple[int, int]], intern: bool = True) -> bytes:
    """The value of the hours from ``s`` (hour number) given as runs (hours ≥ 0, stored byte): zero runs at both
    ends dropped, equal neighbours joined; run-length encoded (interned unless ``intern`` is false: a value made
    outside the event loop's thread, :func:`month_value`) unless that is longer than ``_SLACK`` and a byte for four
    hours."""
    merged: list[list[int]] = []
    for c, v in runs:
        if not c:
            continue
        if merged and merged[-1][1] == v:
            merged[-1][0] += c
        elif v or merged:
            merged.append([c, v])
        else:
            s += c  # (leading hours of no record)
    if merged and not merged[-1][1]:
        merged.pop()
    if not merged:
        return b""
    n = 0
    body = bytearray()
    for c, v in merged:
        n += c
        while c > 255:
            body += bytes((255, v))
            c -= 255
        body += bytes((c, v))
    if len(body) > n // 4 + _SLACK:
        return _HEAD.pack(s, n | _DENSE) + b"".join(_FILL[v] * (c // 255) + _FILL[v][: c % 255] for c, v in merged)
    value = _HEAD.pack(s, n) + body
    return _intern(value) if intern else value


def _runs_of(r: bytes) -> tuple[int, int, list[tuple[int, int]]]:
    """A value's first hour, hours covered and runs (hours, stored byte)."""
    s, n = _HEAD.unpack_from(r)
    if n & _DENSE:
        return s, n ^ _DENSE, [(m.end() - m.start(), r[m.start()]) for m in _RUN_RE.finditer(r, 8)]
    return s, n, list(zip(r[8::2], r[9::2], strict=True))


def _from_dense(s: int, raw: bytes | bytearray, intern: bool = True) -> bytes:
    """The value of the stored bytes of the hours from ``s`` (hour number) (``intern``: as :func:`_encode`)."""
    t = raw.lstrip(b"\0")
    s += len(raw) - len(t)
    t = bytes(t.rstrip(b"\0"))
    n = len(t)
    if n > 1:  # the number of runs (1 + neighbours that differ) first: codes changing every few hours stay bytes
        x = int.from_bytes(t[:-1], "little") ^ int.from_bytes(t[1:], "little")
        if 2 * (n - x.to_bytes(n - 1, "little").count(0)) > n // 4 + _SLACK:
            return _HEAD.pack(s, n | _DENSE) + t
    return _encode(s, [(m.end() - m.start(), t[m.start()]) for m in _RUN_RE.finditer(t)], intern)


def _dense(r: bytes) -> bytes:
    """A value's stored byte of every hour it covers."""
    if _HEAD.unpack_from(r)[1] & _DENSE:
        return r[8:]
    return b"".join([_FILL[v][:c] for c, v in zip(r[8::2], r[9::2], strict=True)])


def _get(r: bytes, h: int) -> int | None:
    """The code of the hour that holds ``h`` in value ``r`` (``None``: no record)."""
    if not r:
        return None
    s, n = _HEAD.unpack_from(r)
    i = h // 3600 - s
    if n & _DENSE:
        if 0 <= i < n ^ _DENSE:
            c = r[8 + i]
            return c - 1 if c else None
        return None
    if not 0 <= i < n:
        return None
    if i >= n >> 1:  # (from the end: the newest hours are those asked for)
        pos = n
        for k in range(len(r) - 2, 7, -2):
            pos -= r[k]
            if i >= pos:
                c = r[k + 1]
                break
    else:
        pos = 0
        for k in range(8, len(r), 2):
            pos += r[k]
            if i < pos:
                c = r[k + 1]
                break
    return c - 1 if c else None


def _set(r: bytes, h: int, code: int) -> bytes:
    """Value ``r`` with hour ``h``'s code set."""
    if h % 3600 or not 0 <= code < 255:
        raise ValueError(f"not an hour start or a code: {h}, {code}")
    v = code + 1
    if not r:
        return _intern(_HEAD.pack(h // 3600, 1) + _PAIR1[v])
    s, n = _HEAD.unpack_from(r)
    i = h // 3600 - s
    if n & _DENSE:
        n ^= _DENSE
        if 0 <= i < n:
            return r if r[8 + i] == v else r[: 8 + i] + _FILL[v][:1] + r[9 + i :]
        if i >= n:
            return _HEAD.pack(s, (i + 1) | _DENSE) + r[8:] + bytes(i - n) + _FILL[v][:1]
        return _encode(s + i, [(1, v), (-i - 1, 0), *_runs_of(r)[2]])
    if i == n:  # the next hour (the live case)
        if r[-1] == v and r[-2] < 255:
            return _intern(_HEAD.pack(s, n + 1) + r[8:-2] + bytes((r[-2] + 1, v)))
        if len(r) - 6 <= (n + 1) // 4 + _SLACK:
            return _intern(_HEAD.pack(s, n + 1) + r[8:] + _PAIR1[v])
    elif i == n - 1 and r[-1] == v:
        return r
    runs = _runs_of(r)[2]
    if i >= n:
        runs += [(i - n, 0), (1, v)]
    elif i < 0:
        runs[:0] = [(1, v), (-i - 1, 0)]
        s += i
    else:
        pos = 0
        for k, (c, old) in enumerate(runs):
            if i < pos + c:
                if old == v:
                    return r
                a = i - pos
                runs[k : k + 1] = [(a, old), (1, v), (c - a - 1, old)]
                break
            pos += c
    return _encode(s, runs)


def _set_many(r: bytes, rows: Iterable[tuple[int, int]]) -> bytes:
    """``_set`` of every (hour, code) in order (a later code of an hour replaces an earlier one), with one
    new value (:meth:`RateCounter.restore`, :meth:`RateCounter.restore_runs`)."""
    rows = list(rows)
    if not rows:
        return r
    for h, code in rows:
        if h % 3600 or not 0 <= code < 255:
            raise ValueError(f"not an hour start or a code: {h}, {code}")
    hours = [h // 3600 for h, _ in rows]
    lo, hi = min(hours), max(hours) + 1
    if r:
        s, n = _HEAD.unpack_from(r)
        n &= ~_DENSE
        lo, hi = min(lo, s), max(hi, s + n)
    if hi - lo > 16 * len(rows) + 100_000:  # (hours years apart: no array that long)
        for h, code in rows:
            r = _set(r, h, code)
        return r
    dense = bytearray(hi - lo)
    if r:
        dense[s - lo : s - lo + n] = _dense(r)
    for hh, (_, code) in zip(hours, rows, strict=True):
        dense[hh - lo] = code + 1
    return _from_dense(lo, dense)


def _items(r: bytes, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
    """(hour, code) ascending; only the hours that start in [lo, hi) when given."""
    if not r:
        return []
    s, n = _HEAD.unpack_from(r)
    dense = n & _DENSE
    n &= ~_DENSE
    a = 0 if lo is None else max(0, -(-lo // 3600) - s)  # the hours [a, z) from s
    z = n if hi is None else min(n, -(-hi // 3600) - s)
    if a >= z:
        return []
    base = s * 3600
    out: list[tuple[int, int]] = []
    if dense:
        return [(base + 3600 * k, c - 1) for k, c in enumerate(r[8 + a : 8 + z], a) if c]
    pos = 0
    for k in range(8, len(r), 2):
        c, v = r[k], r[k + 1]
        if v and pos + c > a:
            out += [(base + 3600 * j, v - 1) for j in range(max(pos, a), min(pos + c, z))]
        pos += c
        if pos >= z:
            break
    return out


def _span(r: bytes, lo: int, hi: int) -> bytes:
    """The stored byte (code + 1, 0: no record) of every hour in [lo, hi), hour starts (issue 20: the live
    ``cems_rate`` write counts these bytes instead of making an (hour, code) pair per counted hour)."""
    n = (hi - lo) // 3600
    if n <= 0:
        return b""
    if not r:
        return bytes(n)
    s, m = _HEAD.unpack_from(r)
    a = lo // 3600 - s  # r's hour a is hour lo
    if m & _DENSE:
        m ^= _DENSE
        if a >= 0 and a + n <= m:
            return r[8 + a : 8 + a + n]
        i, j = max(a, 0), min(a + n, m)
        return bytes(n) if i >= j else bytes(i - a) + r[8 + i : 8 + j] + bytes(a + n - j)
    key = (r, lo, hi)
    got = _SPANS.get(key)
    if got is None:
        i, j = max(a, 0), min(a + n, m)
        got = bytes(n) if i >= j else bytes(i - a) + _dense(r)[i:j] + bytes(a + n - j)
        if len(_SPANS) >= 64:
            _SPANS.clear()
        _SPANS[key] = got
    return got


def _drop_before(r: bytes, cut: int) -> tuple[bytes, int]:
    """Value ``r`` without the hours before ``cut``, and how many there were."""
    if not r:
        return r, 0
    s, n = _HEAD.unpack_from(r)
    n &= ~_DENSE
    k = min(max(-(-cut // 3600) - s, 0), n)  # hours before the cut
    if not k:
        return r, 0
    body = _dense(r)
    return _from_dense(s + k, body[k:]), k - body.count(0, 0, k)


@lru_cache(maxsize=64)
def _month_hours(month: int) -> tuple[int, int]:
    """The hour numbers (epoch hours) [first, end) of Beijing month ``month`` (YYYYMM)."""
    y, m = divmod(month, 100)
    if not 1 <= m <= 12:
        raise ValueError(f"not a month YYYYMM: {month}")
    a = datetime(y, m, 1, tzinfo=BEIJING)
    b = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=BEIJING)
    return int(a.timestamp()) // 3600, int(b.timestamp()) // 3600


@lru_cache(maxsize=1024)
def _month_of_day(day: int) -> int:
    """The Beijing month (YYYYMM) of a Beijing day index."""
    d = _day_date(day)
    return d.year * 100 + d.month


def _value_months(r: bytes) -> list[int]:
    """The Beijing months (YYYYMM) value ``r`` has hours in, ascending."""
    if not r:
        return []
    s, n = _HEAD.unpack_from(r)
    n &= ~_DENSE
    first, last = _month_of_day(_day_index(s * 3600)), _month_of_day(_day_index((s + n - 1) * 3600))
    out = [first]
    while out[-1] < last:
        y, m = divmod(out[-1], 100)
        out.append(y * 100 + m + 1 if m < 12 else (y + 1) * 100 + 1)
    return out


def month_value(r: bytes, month: int) -> bytes:
    """The hours of Beijing month ``month`` (YYYYMM) of value ``r`` as a value of their own (``b""``: none with a
    record): what the state database keeps per outlet, factor and month (``rate_runs``).  Pure and not interned:
    safe in the database thread while the counter goes on in the loop's."""
    if not r:
        return b""
    a, b = _month_hours(month)
    s, _n, runs = _runs_of(r)
    out: list[tuple[int, int]] = []
    pos = s
    for c, v in runs:
        lo, hi = max(pos, a), min(pos + c, b)
        if hi > lo:
            out.append((hi - lo, v))
        pos += c
        if pos >= b:
            break
    return _encode(max(s, a), out, intern=False) if out else b""


def value_items(r: bytes) -> list[tuple[int, int]]:
    """(hour start epoch, code) of a stored value, ascending."""
    return _items(r)


def month_values(codes: Mapping[int, int]) -> list[tuple[int, bytes]]:
    """The month values (YYYYMM, :func:`month_value`) of an outlet·factor's codes (hour start epoch → code), not
    interned: what the migration of an earlier version's rows writes (``migrate_rate_records``)."""
    by_month: dict[int, dict[int, int]] = {}
    for h, code in codes.items():
        if h % 3600 or not 0 <= code < 255:
            raise ValueError(f"not an hour start or a code: {h}, {code}")
        by_month.setdefault(_month_of_day(_day_index(h)), {})[h // 3600] = code
    out: list[tuple[int, bytes]] = []
    for month in sorted(by_month):
        hours = by_month[month]
        a = min(hours)
        dense = bytearray(max(hours) + 1 - a)
        for k, code in hours.items():
            dense[k - a] = code + 1
        out.append((month, _from_dense(a, dense, intern=False)))
    return out


def rank_rows(
    rows: Iterable[tuple[int, str, Any, Any]], codes: dict[int, int], exceed: dict[int, int]
) -> tuple[int, int] | None:
    """One outlet·pollutant's stored rows of an earlier version (hour epoch, source, valid, exceeds), in order, by
    :meth:`RateCounter.add`'s rank rule: into ``codes`` (hour start → ``rank * 2 + valid``: a code replaces one of
    the same or a lower rank) and ``exceed`` (hour start → ``rank * 2 + exceeds``, for hours that ever exceeded).
    Returns the first and last hour (``None``: no row)."""
    lo = hi = None
    for hour, source, valid, exceeds in rows:
        h = int(hour)
        h -= h % 3600
        lo = h if lo is None or h < lo else lo
        hi = h if hi is None or h > hi else hi
        rank = _RANK.get(source, 0)
        eold = exceed.get(h)
        if (eold is not None or exceeds) and (eold is None or rank >= eold >> 1):
            exceed[h] = rank * 2 + (1 if exceeds else 0)
        code = rank * 2 + (1 if valid else 0)
        old = codes.get(h)
        if old is None or code >> 1 >= old >> 1:
            codes[h] = code
    return None if lo is None or hi is None else (lo, hi)


def _joined(parts: Sequence[bytes]) -> bytes:
    """One value of the hours of ``parts`` (values of disjoint spans, ascending: the months of ``rate_runs``)."""
    parts = [p for p in parts if p]
    if len(parts) == 1:
        return _intern(parts[0]) if not _HEAD.unpack_from(parts[0])[1] & _DENSE else parts[0]
    runs: list[tuple[int, int]] = []
    start = pos = 0
    for k, p in enumerate(parts):
        s, n, rs = _runs_of(p)
        if k == 0:
            start = pos = s
        elif s < pos:
            raise ValueError("overlapping month values")
        runs.append((s - pos, 0))
        runs += rs
        pos = s + n
    return _encode(start, runs) if runs else b""


@dataclass(frozen=True, slots=True)
class RateChanges:
    """What changed in a :class:`RateCounter` since its last :meth:`~RateCounter.take_changes` (issue 20: the state
    database keeps the counter as it is in memory, per outlet, factor and Beijing month, not a row per record).

    ``runs``: (MN, factor, month YYYYMM, the factor's whole value): the month's part is cut from it by
    :func:`month_value` where it is written (values are immutable: taking them is taking references).
    ``exceed``: (MN, pollutant, hour epoch, ``rank * 2 + exceeds``; ``None``: forgotten).  ``bounds``: first and
    last hour counted and the records of unknown outlets, when any of them changed."""

    runs: list[tuple[str, str, int, bytes]]
    exceed: list[tuple[str, str, int, int | None]]
    bounds: tuple[int | None, int | None, int] | None

    def __bool__(self) -> bool:
        return bool(self.runs or self.exceed or self.bounds is not None)

    def month_rows(self) -> Iterator[tuple[str, str, int, bytes]]:
        """(MN, factor, month, the month's value; ``b""``: no hour of it counted any more)."""
        for mn, f, month, r in self.runs:
            yield mn, f, month, month_value(r, month)


class _HourCodes:
    """One outlet's and factor's counted hours: hour (epoch s) → ``rank * 2 + valid``.

    Memory (issue 20): kept for the current and the previous month.  A dict entry per hour was ≈ 1.4 KB an outlet
    and factor a day; a ``bytearray(24)`` per UTC day ≈ 150 B; one ``bytearray`` of 24 bytes a day ≈ 1.6 KB for two
    months (≈ 0.49 GB at a month's end at 100 000 outlets).  Now one immutable value (``_r``: a ``bytes``, see
    ``_HEAD``): the stored bytes (each code + 1, 0: no record) of the hours from the first to the last one with a
    record, run-length encoded, and interned (``_RUNS``), so that the counters with the same hours (most of a
    city: every hour received and valid) share one object; when encoding would take more than a byte for four hours
    (codes that change every few hours), the bytes themselves, not interned.  A change makes a new value.
    :meth:`items` gives what the dict held (ascending by hour; every reader sums or sorts)."""

    __slots__ = ("_r",)

    def __init__(self) -> None:
        self._r = b""

    def _load(self, d0: int, raw: bytes | bytearray) -> None:
        """Replace everything by the stored bytes of the UTC days from ``d0`` (benchmarks: filled the same as
        :meth:`set` would)."""
        if len(raw) % 24:
            raise ValueError("not whole days")
        self._r = _from_dense(d0 * 24, raw)

    def get(self, h: int) -> int | None:
        return _get(self._r, h)

    def set(self, h: int, code: int) -> None:
        self._r = _set(self._r, h, code)

    def set_many(self, rows: Iterable[tuple[int, int]]) -> None:
        """:meth:`set` of every (hour, code) in order, with one new value."""
        self._r = _set_many(self._r, rows)

    def items(self, lo: int | None = None, hi: int | None = None) -> list[tuple[int, int]]:
        """(hour, code) ascending; only the hours that start in [lo, hi) when given."""
        return _items(self._r, lo, hi)

    def span(self, lo: int, hi: int) -> bytes:
        """The stored byte (code + 1, 0: no record) of every hour in [lo, hi), hour starts."""
        return _span(self._r, lo, hi)

    def drop_before(self, cut: int) -> int:
        """Forget the hours before ``cut``; how many there were."""
        self._r, n = _drop_before(self._r, cut)
        return n


def _day_index(ts: int) -> int:
    """Beijing calendar day number of an epoch second."""
    return (ts + _BJ_OFFSET) // _DAY


def _day_date(index: int) -> date:
    return datetime.fromtimestamp(index * _DAY - _BJ_OFFSET, BEIJING).date()


def _midnight(d: date) -> int:
    return math.floor(datetime.combine(d, time(0), BEIJING).timestamp())


class _Rates:
    __slots__ = ()
    expected: int
    received: int
    valid: int

    @property
    def transmission_rate(self) -> float | None:
        """传输率 = received ÷ expected."""
        return self.received / self.expected if self.expected else None

    @property
    def validity_rate(self) -> float | None:
        """有效率 = valid ÷ received."""
        return self.valid / self.received if self.received else None

    @property
    def effective_rate(self) -> float | None:
        """传输有效率 = 传输率 × 有效率 (= valid ÷ expected)."""
        return self.valid / self.expected if self.expected else None

    def rates_json(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "received": self.received,
            "valid": self.valid,
            "transmission_rate": self.transmission_rate,
            "validity_rate": self.validity_rate,
            "effective_rate": self.effective_rate,
        }


@dataclass(frozen=True, slots=True)
class RateCounts(_Rates):
    expected: int = 0
    received: int = 0
    valid: int = 0

    def __add__(self, other: RateCounts) -> RateCounts:
        return RateCounts(self.expected + other.expected, self.received + other.received, self.valid + other.valid)


@dataclass(frozen=True, slots=True)
class OutletDayRate(_Rates):
    """One outlet, one Beijing calendar day, all assessed factors summed (``by_factor`` per factor)."""

    mn: str
    enterprise: str
    district: str
    day: date
    expected: int
    received: int
    valid: int
    by_factor: dict[str, RateCounts] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mn": self.mn,
            "enterprise": self.enterprise,
            "district": self.district,
            "date": self.day.isoformat(),
            **self.rates_json(),
            "by_factor": {f: c.rates_json() for f, c in sorted(self.by_factor.items())},
        }


@dataclass(frozen=True, slots=True)
class OutletMonthRate(_Rates):
    """One outlet, one Beijing calendar month (every monitored source must reach ≥ 90 %, DOMAIN.md §5)."""

    mn: str
    enterprise: str
    district: str
    month: str  # "YYYY-MM"
    expected: int
    received: int
    valid: int
    meets_target: bool | None

    def to_json(self) -> dict[str, Any]:
        return {
            "mn": self.mn,
            "enterprise": self.enterprise,
            "district": self.district,
            "month": self.month,
            **self.rates_json(),
            "meets_target": self.meets_target,
        }


@dataclass(frozen=True, slots=True)
class DistrictMonthRate(_Rates):
    """One district, one Beijing calendar month, with the supervision (挂牌督办) decision and its reasons."""

    district: str
    month: str  # "YYYY-MM"
    expected: int
    received: int
    valid: int
    outlets: int
    exceeding_enterprises: tuple[str, ...]
    supervised: bool
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "district": self.district,
            "month": self.month,
            **self.rates_json(),
            "outlets": self.outlets,
            "enterprises_exceeding": len(self.exceeding_enterprises),
            "exceeding_enterprises": list(self.exceeding_enterprises),
            "supervision": self.supervised,
            "reasons": list(self.reasons),
        }


def district_month(
    city: City, district: str, month: str, counts: RateCounts, outlets: int, enterprises: Iterable[str]
) -> DistrictMonthRate:
    """One district's month from its counts and its exceeding enterprises, with the supervision (挂牌督办)
    decision: the effective transmission rate below the city's target, or at least the city's threshold of
    enterprises with an exceeding hourly mean in the month.  :meth:`RateCounter.district_months` and the merge
    of several ingesters' parts (:mod:`cems.rules.district_parts`) both decide here."""
    c = counts
    ents = tuple(sorted(set(enterprises)))
    target = city.transmission_rate_target
    threshold = city.supervision_enterprise_threshold
    reasons: list[str] = []
    eff = c.effective_rate
    # Reasons are read by the bureau: Chinese, citing the rule itself (the city's plan, the
    # standard), not our notes (issue 12 item 13).
    basis = city.supervision_basis
    if eff is not None and eff < target:
        reasons.append(
            f"传输有效率 {eff:.2%} 低于考核目标 {target:.0%}"
            f"（应收小时记录 {c.expected} 条，有效 {c.valid} 条）。"
            f"依据：{basis}；{RATE_RULE_ZH}"
        )
    if len(ents) >= threshold:
        reasons.append(
            f"当月 {len(ents)} 家企业小时均值超标（阈值 {threshold} 家，含）：{'、'.join(ents)}。"
            f"依据：{basis}；{EXCEEDANCE_RULE_ZH}"
        )
    return DistrictMonthRate(
        district, month, c.expected, c.received, c.valid, outlets, ents, bool(reasons), tuple(reasons)
    )


def _month_key(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _months(start: int, end: int) -> list[str]:
    """Month keys of the Beijing days in [start, end)."""
    if end <= start:
        return []
    first = _day_date(_day_index(start))
    last = _day_date(_day_index(end - 1))
    out: list[str] = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


@lru_cache(maxsize=64)
def _segments(lo: int, hi: int, by_month: bool) -> tuple[tuple[int, int, int], ...]:
    """The Beijing days (``by_month``: months) of the hours [lo, hi) (hour starts): (first day index, first hour,
    end hour), the hours counted from ``lo`` (cached: every outlet of a write has the same window, bar ``since``)."""
    out: list[tuple[int, int, int]] = []
    d = _day_index(lo)
    month = ""
    while True:
        d0 = d * _DAY - _BJ_OFFSET
        if d0 >= hi:
            return tuple(out)
        i, j = (max(lo, d0) - lo) // 3600, (min(hi, d0 + _DAY) - lo) // 3600
        if by_month:
            m = _month_key(_day_date(d))
            if out and m == month:
                out[-1] = (out[-1][0], out[-1][1], j)
                d += 1
                continue
            month = m
        out.append((d, i, j))
        d += 1


class RateCounter:
    """Counts hourly records for the 90 % rule and decides district supervision.

    ``add(record)`` every hourly record (any outlet, any code: only assessed factors are counted, and any
    exceeding record marks its enterprise for the month).  Reports: :meth:`outlet_days`,
    :meth:`outlet_months`, :meth:`district_months` over a ``[start, end)`` window.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        factors: Sequence[str] | None = None,
    ) -> None:
        self.registry = registry
        self.city = registry.city
        self.factors: tuple[str, ...] = tuple(factors if factors is not None else registry.city.assessed_factors)
        self._factor_set = frozenset(self.factors)
        #: factor → its index in an outlet's list of ``_seen`` (its first in ``factors``)
        self._fi: dict[str, int] = {}
        for i, f in enumerate(self.factors):
            self._fi.setdefault(f, i)
        # mn → per factor (``_fi``) the value of its counted hours, hour → rank * 2 + valid (``_get``, ``_set``;
        # None: no record of the factor yet).  Issue 20: a list of values, not a dict of ``_HourCodes`` objects
        # (≈ 75 B less an outlet and factor at a month's end, when most values are shared)
        self._seen: dict[str, list[bytes | None]] = {}
        self._min_hour: int | None = None
        self._max_hour: int | None = None
        # (mn, pollutant, hour epoch) → rank * 2 + exceeds, for every slot that ever had an exceeding record:
        # a revision (a late CN=2061, back-filled data; issue 12 item 1) can turn the hour compliant again
        self._exceed: dict[tuple[str, str, int], int] = {}
        #: Records of outlets not in the registry (ignored).
        self.unknown = 0
        self._by_mn: tuple[Registry, list[OutletInfo]] | None = None  # (registry, its outlets by MN)
        #: Marks and repairs (issue 14): hours removed, counted valid or not valid, repaired hours, marked
        #: exceedances (``None``: none).
        self.overlay: RateOverlay | None = None
        # what changed since take_changes(): (mn, factor index, month YYYYMM), exceedance slots, the bounds
        self._dirty: set[tuple[str, int, int]] = set()
        self._exceed_dirty: set[tuple[str, str, int]] = set()
        self._bounds_dirty = False

    # -- input

    def add(self, rec: HourlyRecord) -> None:
        info = self.registry.outlet(rec.mn)
        if info is None:
            self.unknown += 1
            self._bounds_dirty = True
            return
        h = _ts(rec.hour_start)
        h -= h % 3600
        mn = rec.mn
        if self._min_hour is None or h < self._min_hour:
            self._min_hour = h
            self._bounds_dirty = True
        if self._max_hour is None or h > self._max_hour:
            self._max_hour = h
            self._bounds_dirty = True
        rank = _RANK.get(rec.source, 0)
        ekey = (mn, rec.pollutant, h)
        eold = self._exceed.get(ekey)
        if (eold is not None or rec.exceeds) and (eold is None or rank >= eold >> 1):
            code = rank * 2 + (1 if rec.exceeds else 0)
            if code != eold:
                self._exceed[ekey] = code
                self._exceed_dirty.add(ekey)
        if rec.pollutant not in self._factor_set:
            return
        vals = self._seen.get(mn)
        if vals is None:
            vals = self._seen[mn] = [None] * len(self.factors)
        i = self._fi[rec.pollutant]
        r = vals[i] or b""
        code = rank * 2 + (1 if rec.counts_valid else 0)
        old = _get(r, h)
        if old is None or code >> 1 >= old >> 1:
            new = _set(r, h, code)
            if new is not r and new != r:
                vals[i] = new
                self._dirty.add((mn, i, _month_of_day(_day_index(h))))

    # -- the state database (issue 20: the counter as it is in memory, per outlet, factor and Beijing month)

    def take_changes(self, everything: bool = False) -> RateChanges:
        """What changed since the last call (``everything``: the whole counter, e.g. to write it afresh), and start
        counting changes anew.  Cheap under the engine lock: the values are immutable, taken by reference; their
        months are cut where they are written (:meth:`RateChanges.month_rows`)."""
        if everything:
            dirty = {
                (mn, i, month)
                for mn, vals in self._seen.items()
                for i, r in enumerate(vals)
                if r
                for month in _value_months(r)
            }
            ekeys: set[tuple[str, str, int]] = set(self._exceed)
        else:
            dirty, ekeys = self._dirty, self._exceed_dirty
        self._dirty, self._exceed_dirty = set(), set()
        factors = self.factors
        seen = self._seen
        runs = []
        for mn, i, month in sorted(dirty):
            vals = seen.get(mn)
            runs.append((mn, factors[i], month, (vals[i] or b"") if vals is not None else b""))
        get = self._exceed.get
        exceed = [(mn, p, h, get((mn, p, h))) for mn, p, h in sorted(ekeys)]
        bounds = (self._min_hour, self._max_hour, self.unknown) if everything or self._bounds_dirty else None
        self._bounds_dirty = False
        return RateChanges(runs, exceed, bounds)

    def restore_runs(self, rows: Iterable[tuple[str, str, int, bytes]]) -> int:
        """Load stored month values (MN, factor, month YYYYMM, :func:`month_value`), each outlet and factor's
        months together and ascending (the table's key order); outlets not in the registry and factors not
        counted are left out.  The first and last hours counted widen to the hours loaded.  Returns the
        outlet·factor values loaded."""
        outlet = self.registry.outlet
        fi = self._fi
        n = 0
        key: tuple[str, str] | None = None
        parts: list[bytes] = []

        def flush() -> None:
            nonlocal n
            if key is None or not parts:
                return
            mn, f = key
            i = fi.get(f)
            if i is None or outlet(mn) is None:
                return
            value = _joined(parts)
            if not value:
                return
            vals = self._seen.get(mn)
            if vals is None:
                vals = self._seen[mn] = [None] * len(self.factors)
            old = vals[i]
            vals[i] = _set_many(old, _items(value)) if old else value
            s, m = _HEAD.unpack_from(value)
            self._widen(s * 3600, (s + (m & ~_DENSE) - 1) * 3600)
            n += 1

        for mn, f, _month, r in rows:
            if (mn, f) != key:
                flush()
                key, parts = (mn, f), []
            parts.append(bytes(r))
        flush()
        return n

    def restore_exceed(self, rows: Iterable[tuple[str, str, int, int]]) -> None:
        """Load stored exceedance slots (MN, pollutant, hour epoch, ``rank * 2 + exceeds``) of known outlets."""
        outlet = self.registry.outlet
        for mn, p, h, code in rows:
            if outlet(mn) is not None:
                self._exceed[(mn, p, int(h))] = int(code)
                self._widen(int(h), int(h))

    def restore_bounds(self, min_hour: int | None, max_hour: int | None, unknown: int) -> None:
        """Load the stored first and last hours counted (widened by what is loaded) and unknown records."""
        if min_hour is not None:
            self._widen(int(min_hour), int(max_hour if max_hour is not None else min_hour))
        self.unknown += int(unknown)

    def _widen(self, lo: int, hi: int) -> None:
        if self._min_hour is None or lo < self._min_hour:
            self._min_hour = lo
        if self._max_hour is None or hi > self._max_hour:
            self._max_hour = hi

    def newest_hour(self) -> datetime | None:
        """Start of the newest hour counted (``None`` before any)."""
        return None if self._max_hour is None else datetime.fromtimestamp(self._max_hour, BEIJING)

    def prune(self, before: datetime) -> int:
        """Forget counted hours before ``before`` (the live service keeps the current and previous month;
        older figures are in InfluxDB's ``cems_rate``).  Returns how many hour slots were dropped."""
        for res in self.prune_stepwise(before):
            if res is not None:
                return res
        raise AssertionError("prune_stepwise ends with its result")  # pragma: no cover

    def prune_stepwise(self, before: datetime, step: int = 1000) -> Iterator[int | None]:
        """:meth:`prune` a few outlets at a time: ``None`` after every ``step`` outlets, then how many hour slots
        were dropped (last).  The live write (issue 20) lets its event loop run at each ``None`` (a month's turn
        drops a month of every outlet); the outlets are those counted when it began, the exceedances dropped at
        the end.  A record older than the cut that arrives meanwhile may stay until the next month's turn."""
        cut = _ts(before)
        if self._min_hour is not None and self._min_hour >= cut:
            yield 0  # nothing before the cut (every counted hour and exceedance is at or after _min_hour)
            return
        dropped = 0
        for n, vals in enumerate(list(self._seen.values()), 1):
            for i, r in enumerate(vals):
                if r:
                    vals[i], k = _drop_before(r, cut)
                    dropped += k
            if n % step == 0:
                yield None
        for key in [k for k in self._exceed if k[2] < cut]:
            del self._exceed[key]
        if self._min_hour is not None and self._min_hour < cut:
            self._min_hour = int(cut)
            self._bounds_dirty = True
        yield dropped

    def add_all(self, records: Iterable[HourlyRecord]) -> None:
        for rec in records:
            self.add(rec)

    def replay_window(self) -> tuple[datetime, datetime] | None:
        """The months to date of the input (``None`` if no record): from Beijing midnight of the 1st of the
        month of the first record to the end of the Beijing day of the last record.  The rate is assessed per
        calendar month (DOMAIN.md §5): days of the month before the input's first record are expected too."""
        if self._min_hour is None or self._max_hour is None:
            return None
        first = _day_date(_day_index(self._min_hour))
        b = (_day_index(self._max_hour) + 1) * _DAY - _BJ_OFFSET
        return month_bounds(first.year, first.month)[0], datetime.fromtimestamp(b, BEIJING)

    # -- counting

    @staticmethod
    def _outlet_start(o: Outlet, start: int) -> int:
        """Start of the assessed period of ``o`` in a window starting at ``start``: the later of the window
        start and Beijing midnight of ``outlet.since`` (never the outlet's first record: issue 12 item 4)."""
        return start if o.since is None else max(start, _midnight(o.since))

    @staticmethod
    def _stopped_hours(o: Outlet, lo: int, hi: int) -> set[int]:
        """Hours in [lo, hi) with less than 45 minutes outside declared stops."""
        spans: list[tuple[int, int]] = []
        for a, b in sorted((_ts(s.start), _ts(s.end)) for s in o.stop):
            if spans and a <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], b))
            else:
                spans.append((a, b))
        covered: dict[int, int] = {}
        for a0, b0 in spans:
            a, b = max(a0, lo), min(b0, hi)
            if b <= a:
                continue
            h = a - a % 3600
            while h < b:
                ov = min(b, h + 3600) - max(a, h)
                if ov > 0:
                    covered[h] = covered.get(h, 0) + ov
                h += 3600
        return {h for h, sec in covered.items() if 3600 - sec < MIN_EXPECTED_MINUTES * 60}

    def _outlet_counts(self, info: OutletInfo, start: int, end: int) -> dict[int, dict[str, list[int]]]:
        """day index → factor → [expected, received, valid] (empty when the window ends before ``since``)."""
        o = info.outlet
        lo = self._outlet_start(o, start)
        lo += -lo % 3600
        hi = end - end % 3600
        if hi <= lo:
            return {}
        stopped = self._stopped_hours(o, lo, hi)
        overlay = self.overlay
        effects = {} if overlay is None else overlay.rate_effects(o.mn, lo, hi)
        if effects:
            stopped |= {h for h, e in effects.items() if e == "removed"}
        days: dict[int, dict[str, list[int]]] = {}
        d = _day_index(lo)
        while True:
            d0 = d * _DAY - _BJ_OFFSET
            if d0 >= hi:
                break
            a, b = max(lo, d0), min(hi, d0 + _DAY)
            n = (b - a) // 3600 - sum(1 for h in stopped if a <= h < b)
            days[d] = {f: [n, 0, 0] for f in self.factors}
            d += 1
        seen = self._seen.get(o.mn)
        repairs = {} if overlay is None else overlay.repairs(o.mn)
        for f in self.factors:
            counted = seen[self._fi[f]] if seen is not None else None
            rows = _items(counted, lo, hi) if counted else []
            if effects or repairs:  # marks: valid / not valid; a repair (修约) makes the hour received and valid
                slots = dict(rows)
                for h, e in effects.items():
                    if e == "valid":
                        slots[h] = slots.get(h, 0) | 1
                    elif e == "invalid" and h in slots:
                        slots[h] &= ~1
                for p, h in repairs:
                    if p == f:
                        slots[h] = slots.get(h, 0) | 1
                rows = list(slots.items())
            for h, code in rows:
                if lo <= h < hi and h not in stopped:
                    c = days[_day_index(h)][f]
                    c[1] += 1
                    c[2] += code & 1
        return days

    def _totals(self, info: OutletInfo, start: int, end: int, *, by_month: bool) -> list[tuple[int, int, int, int]]:
        """An outlet's counts summed over its factors, per Beijing day (``by_month``: per Beijing month) in
        [start, end): (first day index, expected, received, valid), ascending; the same integers as summed from
        :meth:`_outlet_counts`.  Issue 20: when no mark or repair touches the outlet (the common case), each factor's
        hours are counted from its stored bytes, a day or a month at once (``bytes.count``), instead of an (hour,
        code) pair and a dict update per counted hour; stopped hours are zeroed in a copy."""
        o = info.outlet
        lo = start if o.since is None else max(start, _midnight(o.since))  # (_outlet_start)
        lo += -lo % 3600
        hi = end - end % 3600
        if hi <= lo:
            return []
        overlay = self.overlay
        if len(self._factor_set) != len(self.factors) or (
            overlay is not None and (overlay.rate_effects(o.mn, lo, hi) or overlay.repairs(o.mn))
        ):
            return self._summed(self._outlet_counts(info, start, end), by_month=by_month)
        segs = _segments(lo, hi, by_month)
        nf = len(self.factors)
        seen = self._seen.get(o.mn)
        spans: list[bytes | bytearray] = [_span(r, lo, hi) for r in seen if r is not None] if seen else []
        stopped = sorted((h - lo) // 3600 for h in self._stopped_hours(o, lo, hi)) if o.stop else []
        cut: bytearray | None = None
        if stopped:  # a stopped hour is neither expected nor counted: its byte is 0 (no record)
            cut = bytearray(len(spans[0]) if spans else (hi - lo) // 3600)
            copies = [bytearray(x) for x in spans]
            for k in stopped:
                cut[k] = 1
                for c in copies:
                    c[k] = 0
            spans = [*copies]
        out: list[tuple[int, int, int, int]] = []
        if len(segs) == 1 and cut is None and spans:  # (a day, a month, as the live write asks): all at once
            key, i, j = segs[0]
            allb = b"".join(spans)
            n = j - i
            return [(key, n * nf, n * len(spans) - allb.count(0), allb.translate(_VALID_BYTE).count(1))]
        valids = [x.translate(_VALID_BYTE) for x in spans]
        for key, i, j in segs:
            n = j - i
            received = n * len(spans) - sum(x.count(0, i, j) for x in spans)
            valid = sum(v.count(1, i, j) for v in valids)
            out.append((key, (n - (0 if cut is None else cut.count(1, i, j))) * nf, received, valid))
        return out

    @staticmethod
    def _summed(days: dict[int, dict[str, list[int]]], *, by_month: bool) -> list[tuple[int, int, int, int]]:
        """:meth:`_outlet_counts` summed over the factors, per day or per month (as :meth:`_totals`)."""
        out: list[tuple[int, int, int, int]] = []
        month = ""
        for d in sorted(days):
            by = days[d].values()
            e, r, v = sum(x[0] for x in by), sum(x[1] for x in by), sum(x[2] for x in by)
            if by_month:
                m = _month_key(_day_date(d))
                if out and m == month:
                    k, e0, r0, v0 = out[-1]
                    out[-1] = (k, e0 + e, r0 + r, v0 + v)
                    continue
                month = m
            out.append((d, e, r, v))
        return out

    def outlet_day_totals(
        self, start: datetime, end: datetime, outlets: Sequence[OutletInfo]
    ) -> list[tuple[OutletInfo, date, int, int, int]]:
        """:meth:`outlet_days` without the per-factor counts (what the live ``cems_rate`` write needs): (outlet,
        Beijing day, expected, received, valid) in the same order, with the same figures (issue 20)."""
        a, b = _ts(start), _ts(end)
        dates: dict[int, date] = {}
        out: list[tuple[OutletInfo, date, int, int, int]] = []
        for info in outlets:
            for d, e, r, v in self._totals(info, a, b, by_month=False):
                day = dates.get(d)
                if day is None:
                    day = dates[d] = _day_date(d)
                out.append((info, day, e, r, v))
        return out

    def _window(self, start: datetime | None, end: datetime | None) -> tuple[int, int] | None:
        if start is None or end is None:
            w = self.replay_window()
            if w is None:
                return None
            start = w[0] if start is None else start
            end = w[1] if end is None else end
        return _ts(start), _ts(end)

    def outlet_days(
        self, start: datetime | None = None, end: datetime | None = None, outlets: Sequence[OutletInfo] | None = None
    ) -> list[OutletDayRate]:
        """Per outlet per Beijing day in [start, end) (default: :meth:`replay_window`).  ``outlets``: only these
        (in the order given; default every outlet of the registry, by MN): the live ``cems_rate`` write takes them
        a slice at a time (:meth:`outlets_by_mn`), so that a city's day rates and lines are never all alive at once
        (issue 20, memory)."""
        win = self._window(start, end)
        if win is None:
            return []
        out: list[OutletDayRate] = []
        for info in self.outlets_by_mn() if outlets is None else outlets:
            days = self._outlet_counts(info, *win)
            if not days:
                continue
            for d in sorted(days):
                by = {f: RateCounts(*c) for f, c in days[d].items()}
                tot = sum(by.values(), RateCounts())
                out.append(
                    OutletDayRate(
                        info.outlet.mn,
                        info.enterprise.id,
                        info.district.code,
                        _day_date(d),
                        tot.expected,
                        tot.received,
                        tot.valid,
                        by,
                    )
                )
        return out

    def outlets_by_mn(self) -> list[OutletInfo]:
        """The registry's outlets in the order of :meth:`outlet_days` (sorted once per registry: ≈ 0.1 s at 100 000
        outlets, a block of the live write's loop, issue 20; a registry does not change, a new one replaces it)."""
        if self._by_mn is None or self._by_mn[0] is not self.registry:
            self._by_mn = (self.registry, sorted(self.registry.outlets(), key=lambda i: i.outlet.mn))
        return list(self._by_mn[1])

    @staticmethod
    def _month_counts(days: dict[int, dict[str, list[int]]]) -> dict[str, RateCounts]:
        """An outlet's :meth:`_outlet_counts` summed over its factors and the days of each month: month → counts."""
        out: dict[str, RateCounts] = {}
        for d, by in days.items():
            month = _month_key(_day_date(d))
            c = RateCounts(*(sum(x[i] for x in by.values()) for i in range(3)))
            out[month] = out.get(month, RateCounts()) + c
        return out

    def _monthly(self, win: tuple[int, int]) -> dict[tuple[str, str], RateCounts]:
        """(mn, month) → counts."""
        out: dict[tuple[str, str], RateCounts] = {}
        for info in self.registry.outlets():
            for month, c in self._month_counts(self._outlet_counts(info, *win)).items():
                out[(info.outlet.mn, month)] = c
        return out

    def outlet_months(self, start: datetime | None = None, end: datetime | None = None) -> list[OutletMonthRate]:
        win = self._window(start, end)
        if win is None:
            return []
        monthly = self._monthly(win)
        target = self.city.transmission_rate_target
        out: list[OutletMonthRate] = []
        for (mn, month), c in sorted(monthly.items()):
            info = self.registry.outlet(mn)
            assert info is not None
            eff = c.effective_rate
            out.append(
                OutletMonthRate(
                    mn,
                    info.enterprise.id,
                    info.district.code,
                    month,
                    c.expected,
                    c.received,
                    c.valid,
                    None if eff is None else eff >= target,
                )
            )
        return out

    def district_months(self, start: datetime | None = None, end: datetime | None = None) -> list[DistrictMonthRate]:
        """Per registry district per Beijing month in [start, end), with the supervision decision."""
        for res in self.district_months_stepwise(start, end):
            if res is not None:
                return res
        raise AssertionError("district_months_stepwise ends with its result")  # pragma: no cover

    def district_months_stepwise(
        self, start: datetime | None = None, end: datetime | None = None, step: int = 1000
    ) -> Iterator[list[DistrictMonthRate] | None]:
        """:meth:`district_months` a few outlets at a time: ``None`` after every ``step`` outlets counted, every
        ``step`` exceeding hours looked at and every district month decided, then the result (last).  The live
        write (issue 20) lets its event loop run at each ``None``: the outlets are those of the registry when it
        began, each counted at once; the exceeding hours those counted when the outlets were done."""
        win = self._window(start, end)
        if win is None:
            yield []
            return
        # summed outlet by outlet (the same integer sums as over :meth:`_monthly`, without its entry per outlet and
        # month: ≈ 0.5 KB an outlet, issue 20, memory)
        agg: dict[tuple[str, str], list[int]] = {}
        outlets: dict[tuple[str, str], int] = {}
        months: dict[int, str] = {}
        for n, info in enumerate(list(self.registry.outlets()), 1):
            dist = info.district.code
            for d, e, r, v in self._totals(info, *win, by_month=True):
                month = months.get(d)
                if month is None:
                    month = months[d] = _month_key(_day_date(d))
                key = (dist, month)
                c = agg.get(key)
                if c is None:
                    agg[key] = [e, r, v]
                    outlets[key] = 1
                else:
                    c[0] += e
                    c[1] += r
                    c[2] += v
                    outlets[key] += 1
            if n % step == 0:
                yield None
        exceeding: dict[tuple[str, str], set[str]] = {}
        overlay = self.overlay
        wanted = set(_months(*win))
        by_day: dict[int, str] = {}
        # a copy of the table (a list of its items was ≈ 0.1 s at 137 000 hours, issue 20): what add() changes
        # meanwhile is not looked at
        for n, ((mn, p, h), code) in enumerate(self._exceed.copy().items(), 1):
            if n % step == 0:
                yield None
            d = _day_index(h)
            month = by_day.get(d)
            if month is None:
                month = by_day[d] = _month_key(_day_date(d))
            if month not in wanted:
                continue  # (a month outside the window: not reported)
            ex_info = self.registry.outlet(mn)
            if code & 1 and ex_info is not None:
                if overlay is not None and not overlay.judged_exceeds(mn, p, h, True):
                    continue  # marked (not judged), or repaired below the limit (issue 14)
                exceeding.setdefault((ex_info.district.code, month), set()).add(ex_info.enterprise.id)
        for mn, p, h in [] if overlay is None else overlay.all_repairs():
            ex_info = self.registry.outlet(mn)
            if ex_info is not None and overlay is not None and overlay.judged_exceeds(mn, p, h, False):
                key = (ex_info.district.code, _month_key(_day_date(_day_index(h))))
                exceeding.setdefault(key, set()).add(ex_info.enterprise.id)
        out: list[DistrictMonthRate] = []
        for month in _months(*win):
            for dist in sorted(d.code for d in self.registry.district):
                key = (dist, month)
                c = agg.get(key)
                counts = RateCounts() if c is None else RateCounts(*c)
                out.append(district_month(self.city, dist, month, counts, outlets.get(key, 0), exceeding.get(key, ())))
                yield None  # (a district's enterprises sorted and listed in its reasons: ≈ 6 ms at 12 500 of them)
        yield out

    # -- persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "rate_counter",
            "seen": {
                mn: {f: [[h, c] for h, c in _items(vals[i] or b"")] for f, i in self._fi.items() if vals[i] is not None}
                for mn, vals in sorted(self._seen.items())
            },
            "min_hour": self._min_hour,
            "max_hour": self._max_hour,
            "exceed": [[mn, p, h, c] for (mn, p, h), c in sorted(self._exceed.items())],
            "unknown": self.unknown,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1 or state.get("kind") != "rate_counter":
            raise ValueError("not a version-1 rate_counter state")
        self._seen = {}
        for mn, by_f in state["seen"].items():
            vals = self._seen[mn] = [None] * len(self.factors)
            for f, rows in by_f.items():
                i = self._fi.get(f)
                if i is not None:  # (a factor this counter does not count: left out)
                    vals[i] = _set_many(b"", ((int(h), int(c)) for h, c in rows))
        self._min_hour = state["min_hour"]
        self._max_hour = state["max_hour"]
        # (states before event time kept [district, month, enterprises]: not restorable per hour, left out)
        self._exceed = {(str(e[0]), str(e[1]), int(e[2])): int(e[3]) for e in state["exceed"] if len(e) == 4}
        self.unknown = int(state["unknown"])


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """[start, end) of a Beijing calendar month."""
    a = datetime(year, month, 1, tzinfo=BEIJING)
    b = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=BEIJING)
    return a, b


def day_bounds(d: date) -> tuple[datetime, datetime]:
    """[start, end) of a Beijing calendar day."""
    a = datetime.combine(d, time(0), BEIJING)
    return a, a + timedelta(days=1)
