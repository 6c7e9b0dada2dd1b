"""Issue 20: the rate counter's counted hours (``_HourCodes``: one immutable value, run-length encoded and shared
between the counters with the same hours, or a byte an hour) against a plain dict hour → code, for random sequences
of set / set_many / drop_before / get / items / span with gaps and far backfills; the shared table stays bounded;
and the whole :class:`RateCounter` (add's rank rule, snapshot → restore, the month's prune) against a dict model."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, cast

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cems.model import BEIJING, NOX, PM, SO2
from cems.rules import transmission
from cems.rules.hourly import SOURCE_DAS, SOURCE_MINUTES, SOURCE_REALTIME, HourlyRecord
from cems.rules.transmission import _DENSE, _HEAD, _RUNS, _SLACK, RateCounter, _HourCodes, _items, month_bounds

_BASE = 1_772_323_200  # a UTC midnight

# an hour: a few hours of a few days near the base, any hour of the next weeks, or a backfill / jump months or
# years away
_near = st.tuples(st.integers(-1, 4), st.sampled_from([0, 1, 7, 16, 22, 23])).map(lambda t: t[0] * 24 + t[1])
_hours = st.one_of(
    _near,
    _near,
    _near,
    st.integers(-2 * 24, 12 * 24),
    st.integers(-3 * 24, 40 * 24),
    st.integers(-800 * 24, 800 * 24),
    st.sampled_from([-255, -256, 254, 255, 256, 510, 24 * 45]),  # (a run of 255 hours: one pair)
).map(lambda k: _BASE + 3600 * k)
_cut = st.tuples(_hours, st.sampled_from([0, 0, 1800, 3599])).map(lambda t: t[0] + t[1])
# codes: few (long runs, shared values) or any
_codes = st.one_of(st.sampled_from([3, 5, 5, 5, 4]), st.integers(0, 254))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _hours, _codes),
        st.tuples(st.just("run"), _hours, st.tuples(st.integers(1, 600), _codes)),  # hour after hour, one code
        st.tuples(st.just("many"), _hours, st.lists(st.tuples(st.integers(-30, 300), _codes), max_size=30)),
        st.tuples(st.just("drop"), _cut, st.just(0)),
        st.tuples(
            st.just("span"), _hours, st.one_of(st.sampled_from([0, 1, 2, 23, 24, 25, 48]), st.integers(-2, 24 * 70))
        ),
        st.tuples(st.just("items"), _cut, st.one_of(st.sampled_from([0, 1, 24, 25]), st.integers(0, 24 * 70))),
    ),
    min_size=3,
    max_size=40,
)


def _stored(ref: dict[int, int], lo: int, hi: int) -> bytes:
    return bytes(ref[k] + 1 if k in ref else 0 for k in range(lo, hi, 3600))


def _check(got: _HourCodes, ref: dict[int, int]) -> None:
    assert got.items() == sorted(ref.items())
    for h, c in ref.items():
        assert got.get(h) == c
    r = got._r
    if not ref:
        assert r == b""
        return
    s, n = _HEAD.unpack_from(r)
    body = r[8:]
    first, last = min(ref) // 3600, max(ref) // 3600
    assert (s, n & ~_DENSE) == (first, last - first + 1)  # from the first hour with a record to the last
    if n & _DENSE:
        assert body == _stored(ref, first * 3600, last * 3600 + 3600)
    else:  # pairs (1–255 hours, byte), equal neighbours joined, no longer than the slack allows; shared
        pairs = list(zip(body[::2], body[1::2], strict=True))
        assert all(1 <= c <= 255 for c, _ in pairs) and sum(c for c, _ in pairs) == n
        assert all(a[1] != b[1] or a[0] == 255 for a, b in pairwise(pairs))
        assert len(body) <= n + _SLACK
        assert _RUNS.get(r) is r
    for lo in (first * 3600 - 3600 * 25, first * 3600, last * 3600, last * 3600 + 3600):
        for k in (0, 1, 2, 24, 25, 49, n & ~_DENSE):
            hi = lo + 3600 * k
            assert got.span(lo, hi) == _stored(ref, lo, hi)
            assert got.items(lo, hi) == sorted((h, c) for h, c in ref.items() if lo <= h < hi)


@settings(max_examples=400, deadline=None)
@given(_ops)
@example([("set", _BASE, 0), ("set", _BASE + 3600, 0), ("drop", _BASE + 3600, 0)])  # a cut inside a run
@example([("run", _BASE, (300, 4)), ("set", _BASE + 3600 * 255, 4), ("set", _BASE + 3600 * 254, 2)])
def test_hour_codes_equal_a_dict(ops: list[tuple[str, int, object]]) -> None:
    ref: dict[int, int] = {}
    got = _HourCodes()
    twin = _HourCodes()  # the same sets one by one: the same hours, the same value (shared when encoded)
    for op, h, x in ops:
        if op == "set":
            assert isinstance(x, int)
            assert got.get(h) == ref.get(h)
            got.set(h, x)
            twin.set(h, x)
            ref[h] = x
            _check(got, ref)
        elif op == "run":
            assert isinstance(x, tuple)
            for k in range(x[0]):
                got.set(h + 3600 * k, x[1])
                twin.set(h + 3600 * k, x[1])
                ref[h + 3600 * k] = x[1]
            _check(got, ref)
        elif op == "many":
            assert isinstance(x, list)
            rows = [(h + 3600 * k, c) for k, c in x]
            got.set_many(rows)
            for hh, c in rows:
                twin.set(hh, c)
                ref[hh] = c
            _check(got, ref)
            assert twin.items() == got.items()
        elif op == "drop":
            dropped = [k for k in ref if k < h]
            assert got.drop_before(h) == len(dropped)
            assert twin.drop_before(h) == len(dropped)
            for k in dropped:
                del ref[k]
            _check(got, ref)
        elif op == "span":
            assert isinstance(x, int)
            hi = h + 3600 * x
            assert got.span(h, hi) == _stored(ref, h, hi)
        else:
            assert isinstance(x, int)
            hi = h + 3600 * x
            assert got.items(h, hi) == sorted((k, c) for k, c in ref.items() if h <= k < hi)
            assert got.items(h) == sorted((k, c) for k, c in ref.items() if h <= k)
            assert got.items(None, hi) == sorted((k, c) for k, c in ref.items() if k < hi)
        assert got.get(h) == ref.get(h - h % 3600)  # (the hour that holds h)
    _check(got, ref)
    _check(twin, ref)


def test_counters_with_the_same_hours_share_one_value_and_two_months_are_a_few_bytes() -> None:
    a, b = _HourCodes(), _HourCodes()
    for k in range(62 * 24):
        a.set(_BASE + 3600 * k, 5)
        b.set(_BASE + 3600 * k, 5)
    assert a._r is b._r
    assert len(a._r) == 8 + 2 * 6  # 1 488 hours: 5 pairs of 255 hours, one of 213
    assert sys.getsizeof(a) + sys.getsizeof(a._r) < 100  # (was 1 488 bytes and an array: ≈ 1.6 KB)
    b.set(_BASE + 3600 * 30, 4)  # one hour not valid: b's own value, a's unchanged
    assert a._r is not b._r and a.get(_BASE + 3600 * 30) == 5 and b.get(_BASE + 3600 * 30) == 4
    assert len(b._r) == 8 + 2 * 8


def test_codes_changing_every_hour_are_a_byte_an_hour() -> None:
    got = _HourCodes()
    for k in range(62 * 24):
        got.set(_BASE + 3600 * k, 3 + k % 2)
    _, n = _HEAD.unpack_from(got._r)
    assert n == 62 * 24 | _DENSE and len(got._r) == 8 + 62 * 24
    assert got.drop_before(_BASE + 31 * 24 * 3600) == 31 * 24
    assert got.items() == [(_BASE + 3600 * k, 3 + k % 2) for k in range(31 * 24, 62 * 24)]


def test_a_far_backfill_makes_no_long_array() -> None:
    got = _HourCodes()
    for k in range(62 * 24):
        got.set(_BASE + 3600 * k, 5)
    got.set(_BASE - 400 * 86400, 3)  # a backfill more than a year before
    got.set(_BASE + 800 * 86400, 3)  # and a clock years ahead
    assert len(got._r) < 8 + 2 * (62 * 24 + 1200 * 24) // 255 + 20  # zero hours as runs of 255
    got.set_many([(_BASE + 900 * 86400, 1), (_BASE - 100_000 * 86400, 1)])  # hours far apart: one by one
    assert got.get(_BASE - 400 * 86400) == 3 and got.get(_BASE + 800 * 86400) == 3 and got.get(_BASE) == 5
    assert got.get(_BASE + 900 * 86400) == 1 and got.get(_BASE - 100_000 * 86400) == 1
    assert got.drop_before(_BASE + 31 * 86400) == 2 + 31 * 24  # the backfills and a month
    assert got.drop_before(_BASE + 1000 * 86400) == 31 * 24 + 2
    assert got.items() == [] and got._r == b""


def test_the_shared_table_is_swept_of_values_no_counter_holds() -> None:
    held: list[_HourCodes] = []
    for i in range(30_000):
        c = _HourCodes()
        c.set(3600 * (400_000 + i), 5)  # every counter its own value
        c.set(3600 * (400_001 + i), 3)
        if i % 10 == 0:
            held.append(c)
        live = 2 * len(held) + 4  # (each held value; c's; the test's others)
        assert len(_RUNS) <= live + max(live // 4, transmission._RUNS_GROW) + 1
    transmission._sweep()
    assert all(_RUNS.get(c._r) is c._r for c in held)  # what is held stays shared
    assert len(held) <= len(_RUNS) <= len(held) + 50
    fresh = _HourCodes()
    fresh.set(3600 * 400_000, 5)
    fresh.set(3600 * 400_001, 3)
    assert fresh._r is held[0]._r


# -- the whole counter against a dict model: add's rank rule, restores, the month's prune


def _reg() -> object:
    from cems.registry import parse_registry

    return parse_registry(
        """
[city]
name = "T"
[[district]]
code = "D1"
name = "One"
[[enterprise]]
id = "E1"
name = "P"
district = "D1"
[[enterprise.outlet]]
mn = "M1"
name = "M1"
profile = "coal_power_ultra_low"
[[enterprise.outlet]]
mn = "M2"
name = "M2"
profile = "coal_power_ultra_low"
"""
    )


_M0 = datetime(2026, 1, 1, tzinfo=BEIJING)
_RANK = {SOURCE_DAS: 2, SOURCE_MINUTES: 1, SOURCE_REALTIME: 0}
_rec = st.tuples(
    st.sampled_from(["M1", "M2"]),
    st.sampled_from([PM, SO2, NOX, "a00000"]),
    st.one_of(st.integers(0, 24 * 75), st.integers(24 * 30, 24 * 31 + 3), st.just(24 * 31 - 1)),
    st.sampled_from(list(_RANK)),
    st.booleans(),
)
_counter_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _rec),
        st.tuples(st.just("fill"), st.tuples(_rec, st.integers(1, 100))),  # the next hours, one source, validity
        st.tuples(st.just("restore"), st.just(None)),
        st.tuples(st.just("prune"), st.sampled_from([1, 2, 3])),  # keep from the 1st of this month
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_counter_ops)
def test_rate_counter_equals_a_dict_model(ops: list[tuple[str, object]]) -> None:
    reg = _reg()
    rc = RateCounter(reg)  # type: ignore[arg-type]
    model: dict[tuple[str, str, int], int] = {}

    def add(mn: str, f: str, k: int, src: str, ok: bool) -> None:
        hour = _M0 + timedelta(hours=k)
        rc.add(HourlyRecord(
            mn=mn, pollutant=f, hour_start=hour, avg=1.0, o2_avg=6.0, zs_avg=1.0, das_zs_avg=None,
            zs_source="computed", valid=ok, flag="N", source=src, valid_minutes=None, limit=35.0,
            ref_o2=6.0, profile="coal_power_ultra_low", exceeds=False,
        ))  # fmt: skip
        if f == "a00000":
            return
        key, code = (mn, f, int(hour.timestamp())), _RANK[src] * 2 + ok
        old = model.get(key)
        if old is None or code >> 1 >= old >> 1:
            model[key] = code

    for op, x in ops:
        if op == "add":
            mn, f, k, src, ok = cast(tuple[str, str, int, str, bool], x)
            add(mn, f, k, src, ok)
        elif op == "fill":
            (mn, f, k, src, ok), n = cast(tuple[tuple[str, str, int, str, bool], int], x)
            for i in range(n):
                add(mn, f, k + i, src, ok)
        elif op == "restore":
            state = json.loads(json.dumps(rc.snapshot()))
            rc = RateCounter(reg)  # type: ignore[arg-type]
            rc.restore(state)
            assert rc.snapshot() == state
        else:
            assert isinstance(x, int)
            cut = month_bounds(2026, x)[0]
            rc.prune(cut)
            model = {k: c for k, c in model.items() if k[2] >= cut.timestamp()}
        seen = rc.snapshot()["seen"]
        assert {(mn, f, h): c for mn, by_f in seen.items() for f, rows in by_f.items() for h, c in rows} == model
    for m in (1, 2, 3):  # the two ways of counting (stored bytes, the (hour, code) pairs) agree with the model
        a, b = month_bounds(2026, m)
        days = rc.outlet_days(a, b)
        assert [(d.mn, d.day, d.expected, d.received, d.valid) for d in days] == [
            (i.outlet.mn, d, e, r, v) for i, d, e, r, v in rc.outlet_day_totals(a, b, rc.outlets_by_mn())
        ]
        for d in days:
            lo = int(datetime(d.day.year, d.day.month, d.day.day, tzinfo=BEIJING).timestamp())
            mine = [c for (mn, _, h), c in model.items() if mn == d.mn and lo <= h < lo + 86400]
            assert (d.received, d.valid) == (len(mine), sum(c & 1 for c in mine))


_row = st.tuples(
    st.sampled_from(["M1", "M2", "M9"]),  # (M9: not in the registry)
    st.sampled_from([PM, SO2, NOX, "a00000"]),
    st.one_of(st.integers(0, 6), st.integers(0, 24 * 75)).map(
        lambda k: int((_M0 + timedelta(hours=k)).timestamp()) + k % 3 * 1800  # (hours seen twice often)
    ),
    st.sampled_from([*_RANK, "other"]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_row, max_size=60), st.lists(_row, max_size=60), st.integers(1, 60))
@example(  # an hour already counted from the DAS: a computed record of it is not counted
    [("M1", SO2, int(_M0.timestamp()), SOURCE_DAS, True, False)],
    [("M1", SO2, int(_M0.timestamp()), SOURCE_MINUTES, False, False)],
    1,
)
def test_migrated_rows_count_as_add_of_each_stored_row(before: list[Any], rows: list[Any], repeat: int) -> None:
    """The migration of the rate rows of an earlier version (``migrate_rate_records``) counts as ``add`` of each
    stored row's record, hours seen twice included (the rank rule), onto a stored counter that already holds hours
    or not."""
    import sqlite3

    from cems.service.compliance._state import (
        RATE_RECORDS_SCHEMA,
        STATE_SCHEMA,
        migrate_rate_records,
        rate_record,
        restore_rate_state,
        write_rate_changes,
    )

    rows = rows + rows[:repeat]  # some rows again
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(STATE_SCHEMA)
    a = RateCounter(_reg())  # type: ignore[arg-type]
    for mn, p, h, src, ok, ex in before:
        a.add(rate_record(mn, p, h, src, ok, ex))
    write_rate_changes(conn, a.take_changes())
    conn.execute(RATE_RECORDS_SCHEMA)
    conn.executemany("INSERT OR REPLACE INTO rate_records VALUES (?,?,?,?,?,?)", rows)
    for mn, p, h, src, ok, ex in conn.execute("SELECT * FROM rate_records ORDER BY mn, pollutant, hour, source"):
        a.add(rate_record(mn, p, h, src, ok, ex))  # (as the old start-up read them)
    migrate_rate_records(conn)
    b = RateCounter(_reg())  # type: ignore[arg-type]
    restore_rate_state(conn, b)
    assert b.snapshot()["seen"] == {mn: by for mn, by in a.snapshot()["seen"].items() if any(by.values())}
    assert b._exceed == a._exceed


def test_the_month_end_load_holds_the_two_months_before_and_shares_the_common_hours() -> None:
    from cems.devtools import month_end
    from cems.devtools.bench import _data
    from cems.registry import parse_registry

    rc = RateCounter(parse_registry(_data.registry_toml(40)))
    assert month_end.load_month_end(rc, datetime(2027, 1, 1, 0, 30, tzinfo=BEIJING), "mix") == 40 * 3
    a, b = month_bounds(2026, 11)[0], month_bounds(2027, 1)[0]
    hours = [int(a.timestamp()) + 3600 * k for k in range(int((b - a).total_seconds()) // 3600)]
    mns = sorted(rc._seen)
    common = rc._seen[mns[0]][rc._fi[PM]]  # (outlet 0: computed from minutes, every hour valid)
    assert common is not None and _items(common) == [(h, 3) for h in hours]
    assert common is rc._seen[mns[2]][rc._fi[SO2]]  # shared
    odd = _items(rc._seen[mns[7]][rc._fi[PM]] or b"")  # (1 in 20 odd: outages, hours not valid)
    assert 0.8 * len(hours) < len(odd) < len(hours) and {h for h, _ in odd} <= set(hours)
    assert rc.replay_window() == (a, b)
