"""Issue 20: the rate counter's counted hours (``_HourCodes``: runs of consecutive UTC days, 24 bytes a day) against
a plain dict hour → code, for random sequences of set / drop_before / get / items / span with gaps and far
backfills."""

from __future__ import annotations

import sys
from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cems.rules.transmission import _DAY, _JOIN_DAYS, _HourCodes

_BASE = 1_772_323_200  # a UTC midnight

# an hour: a few hours of a few days near the base (ends of days and of runs met often), any hour of the next
# weeks, or a backfill / jump months or years away
_near = st.tuples(st.integers(-1, 4), st.sampled_from([0, 1, 7, 16, 22, 23])).map(lambda t: t[0] * 24 + t[1])
_hours = st.one_of(
    _near,
    _near,
    _near,
    st.integers(-2 * 24, 12 * 24),
    st.integers(-3 * 24, 40 * 24),
    st.integers(-800 * 24, 800 * 24),
    st.sampled_from([-24 * (_JOIN_DAYS + 1) - 1, -24 * (_JOIN_DAYS + 1), 24 * (_JOIN_DAYS + 2) - 1, 24 * 45]),
).map(lambda k: _BASE + 3600 * k)
_cut = st.tuples(_hours, st.sampled_from([0, 0, 1800, 3599])).map(lambda t: t[0] + t[1])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _hours, st.integers(0, 254)),
        st.tuples(st.just("drop"), _cut, st.just(0)),
        st.tuples(
            st.just("span"), _hours, st.one_of(st.sampled_from([0, 1, 2, 23, 24, 25, 48]), st.integers(-2, 24 * 70))
        ),
        st.tuples(st.just("items"), _cut, st.one_of(st.sampled_from([0, 1, 24, 25]), st.integers(0, 24 * 70))),
    ),
    min_size=3,
    max_size=40,
)


def _items_ref(ref: dict[int, int], lo: int | None, hi: int | None) -> list[tuple[int, int]]:
    """The old counter's ``items``: the hours of the UTC days that overlap [lo, hi)."""
    out = []
    for h, c in sorted(ref.items()):
        d0 = h - h % _DAY
        if (lo is None or d0 + _DAY > lo) and (hi is None or d0 < hi):
            out.append((h, c))
    return out


def _check(got: _HourCodes, ref: dict[int, int]) -> None:
    assert got.items() == sorted(ref.items())
    for h, c in ref.items():
        assert got.get(h) == c
    runs = got._runs()  # the runs: ascending, disjoint, more than _JOIN_DAYS apart, whole days, none all zero
    for (a0, a), (b0, _) in pairwise(runs):
        assert a0 + len(a) // 24 + _JOIN_DAYS < b0
    for _, run in runs:
        assert len(run) % 24 == 0 and any(run[:24])
    assert (got._far is None) == (len(runs) <= 1)
    edges = sorted({e for d0, run in runs for e in (d0 * _DAY, d0 * _DAY + 3600 * len(run))})
    for e in edges:  # spans and items that begin or end at, inside or beyond a run's first or last hour
        for lo in (e - 3600 * 25, e - 3600, e, e + 3600):
            for n in (0, 1, 2, 24, 25, 49):
                hi = lo + 3600 * n
                assert bytes(got.span(lo, hi)) == bytes(ref[k] + 1 if k in ref else 0 for k in range(lo, hi, 3600))
                assert got.items(lo, hi) == _items_ref(ref, lo, hi)


@settings(max_examples=400, deadline=None)
@given(_ops)
@example([("set", _BASE, 0), ("set", _BASE + 3600, 0), ("drop", _BASE + 3600, 0)])  # a cut inside a day
@example([("set", _BASE, 3), ("set", _BASE - 9 * _DAY, 1), ("set", _BASE - 3 * _DAY, 2), ("drop", _BASE - _DAY, 0)])
def test_hour_codes_equal_a_dict(ops: list[tuple[str, int, int]]) -> None:
    ref: dict[int, int] = {}
    got = _HourCodes()
    for op, h, x in ops:
        if op == "set":
            assert got.get(h) == ref.get(h)
            got.set(h, x)
            ref[h] = x
            _check(got, ref)
        elif op == "drop":
            dropped = [k for k in ref if k < h]
            assert got.drop_before(h) == len(dropped)
            for k in dropped:
                del ref[k]
            _check(got, ref)
        elif op == "span":
            hi = h + 3600 * x
            want = bytes(ref[k] + 1 if k in ref else 0 for k in range(h, hi, 3600))
            assert bytes(got.span(h, hi)) == want
        else:
            hi = h + 3600 * x
            assert got.items(h, hi) == _items_ref(ref, h, hi)
            assert got.items(h) == _items_ref(ref, h, None)
            assert got.items(None, hi) == _items_ref(ref, None, hi)
        assert got.get(h) == ref.get(h - h % 3600)  # (the hour that holds h, as before)
    _check(got, ref)


def test_a_far_backfill_makes_no_long_array() -> None:
    got = _HourCodes()
    for k in range(62 * 24):
        got.set(_BASE + 3600 * k, 5)
    got.set(_BASE - 400 * _DAY, 3)  # a backfill more than a year before
    got.set(_BASE + 800 * _DAY, 3)  # and a clock years ahead
    assert [(d0 - _BASE // _DAY, len(run)) for d0, run in got._runs()] == [(-400, 24), (0, 62 * 24), (800, 24)]
    assert got.get(_BASE - 400 * _DAY) == 3 and got.get(_BASE + 800 * _DAY) == 3 and got.get(_BASE) == 5
    assert got.drop_before(_BASE + 31 * _DAY) == 1 + 31 * 24  # the backfill and a month
    assert [(d0 - _BASE // _DAY, len(run)) for d0, run in got._runs()] == [(31, 31 * 24), (800, 24)]
    assert got.drop_before(_BASE + 900 * _DAY) == 31 * 24 + 1
    assert got.items() == [] and got._runs() == [] and got._far is None


def test_two_months_are_one_array_of_24_bytes_a_day() -> None:
    got = _HourCodes()
    for k in range(62 * 24):
        if k % 7:  # (hours missing: stored as 0)
            got.set(_BASE + 3600 * k, 3)
    assert got._far is None and len(got._b) == 62 * 24
    size = sys.getsizeof(got) + sys.getsizeof(got._b) + sys.getsizeof(got._d0)
    assert size < 62 * 24 * 1.2 + 200  # (was ≈ 62 × 150 B: a bytearray(24) and a dict entry per day)
    assert got.span(_BASE + 3600, _BASE + 3600 * 25) == got._b[1:25]  # the live write's slice of the run
