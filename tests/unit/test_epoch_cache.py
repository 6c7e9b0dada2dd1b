"""The data time's epoch seconds, remembered for the last aware datetime (issue 20, fourth session: CPU):
:func:`cems.model.unix_time` is ``timestamp()`` and :func:`cems.model.beijing_ts` reads a naive time as Beijing
time, whatever was asked before and in whichever order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cems import engine
from cems.model import BEIJING, Measurement, Reading, Stream, beijing_ts, unix_time
from cems.rules import daily, events

_AWARE = [
    datetime(2026, 12, 1, 13, 0, 9, tzinfo=BEIJING),
    datetime(2026, 12, 1, 13, 0, 9, tzinfo=UTC),  # equal wall clock, another zone: another instant
    datetime(2026, 12, 1, 5, 0, 9, 250_000, tzinfo=timezone(timedelta(hours=-3))),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=BEIJING),
]
_NAIVE = [datetime(2026, 12, 1, 13, 0, 9), datetime(2026, 12, 1, 5, 0, 9, 250_000)]


def _beijing(t: datetime) -> float:
    return (t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)).timestamp()


def test_both_functions_agree_with_timestamp_in_any_order() -> None:
    times = _AWARE + _NAIVE
    for order in itertools.permutations(range(len(times)), 3):
        for i in order:
            t = times[i]
            for _ in range(2):  # asked again: the remembered value
                assert unix_time(t) == t.timestamp()
                assert beijing_ts(t) == _beijing(t)
                assert beijing_ts(t) == _beijing(t)
                assert unix_time(t) == t.timestamp()


def test_a_naive_time_is_not_read_as_beijing_by_unix_time_after_beijing_ts() -> None:
    naive = datetime(2026, 12, 1, 13, 0, 9)
    assert beijing_ts(naive) == naive.replace(tzinfo=BEIJING).timestamp()
    assert unix_time(naive) == naive.timestamp()  # local time, as timestamp() reads it
    assert beijing_ts(naive) == naive.replace(tzinfo=BEIJING).timestamp()


def test_the_trackers_conversions_are_as_before() -> None:
    for t in _AWARE + _NAIVE:
        assert events._ts(t) == _beijing(t)
    for t in _AWARE:
        assert daily._day_index(t) == (int(t.timestamp() // 1) + 8 * 3600) // 86400


def _reading(mn: str, t: datetime, code: str, stream: Stream = Stream.RTD) -> Reading:
    return Reading(mn, stream, t, {code: Measurement(code, {"Rtd": 1.0}, "N")})


def test_a_batch_sorts_and_merges_parts_by_instant_whatever_the_datetimes_tzinfo_objects() -> None:
    plus8 = timezone(timedelta(hours=8))  # a JSON data time's "+08:00": another tzinfo object than BEIJING
    t0 = datetime(2026, 12, 1, 13, 0, 0, tzinfo=BEIJING)
    same = datetime(2026, 12, 1, 13, 0, 0, tzinfo=plus8)
    same_utc = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)
    later = datetime(2026, 12, 1, 13, 0, 0, 1, tzinfo=plus8)  # one microsecond later
    earlier = datetime(2026, 12, 1, 12, 59, 30, tzinfo=BEIJING)
    info: Any = None  # (merge_parts does not read it)
    items = [
        (_reading("A", t0, "a21026"), info),
        (_reading("B", later, "a21026"), info),
        (_reading("A", same, "a19001"), info),
        (_reading("A", earlier, "a21026"), info),
        (_reading("A", same_utc, "a21002"), info),
        (_reading("A", same, "a21026", Stream.MIN), info),
    ]
    by_datetime = sorted(items, key=lambda it: it[0].data_time)
    assert sorted(items, key=engine._data_ts) == by_datetime
    merged = engine.merge_parts(by_datetime)
    got = [(r.mn, r.stream, r.data_time, sorted(r.measurements)) for r, _ in merged]
    assert got == [
        ("A", Stream.RTD, earlier, ["a21026"]),
        ("A", Stream.RTD, t0, ["a19001", "a21002", "a21026"]),  # three parts of one record: one reading
        ("A", Stream.MIN, same, ["a21026"]),
        ("B", Stream.RTD, later, ["a21026"]),
    ]
