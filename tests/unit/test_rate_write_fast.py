"""The live ``cems_rate`` write at national scale (issue 20: at 100 000 outlets it blocked the event loop for
18–37 s an hour, and no alert went out meanwhile).  The outlets' day rates and the district months are now counted
from each factor's stored hour bytes (:meth:`RateCounter._totals`) and the lines made without a
:class:`OutletDayRate` or :func:`point` per outlet: these check that the lines are byte for byte those of the
general path (:meth:`RateCounter.outlet_days`, ``_outlet_counts`` and ``_month_counts``, with stops, ``since``,
marks and repairs) and that the write gives the event loop back between slices of outlets, without the runtime's
lock, so that a batch is judged and committed while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cems.devtools.bench import _data
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.rules.hourly import SOURCE_DAS, SOURCE_MINUTES, HourlyRecord
from cems.rules.transmission import (
    DistrictMonthRate,
    OutletDayRate,
    RateCounter,
    RateCounts,
    _day_date,
    _day_index,
    _month_key,
    _ts,
    district_month,
)
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.compliance import _runtime as runtime_mod
from cems.sinks.lineprotocol import (
    RATE_MEASUREMENT,
    _ms,
    district_month_rate_line,
    outlet_day_line,
    outlet_day_rate_line,
    point,
)

BASE = datetime(2026, 1, 25, tzinfo=BEIJING)
FACTORS = ("a34013", "a21026", "a21002", "a00000")  # three assessed, one not
SOURCES = (SOURCE_DAS, SOURCE_MINUTES, "realtime")


def old_outlet_day_rate_line(r: OutletDayRate) -> str:
    """:func:`outlet_day_rate_line` as it was (through :func:`point`)."""
    tags = {"level": "outlet", "mn": r.mn, "enterprise": r.enterprise, "district": r.district}
    fields: dict[str, float | int | str | bool | None] = {
        "expected": r.expected,
        "received": r.received,
        "valid": r.valid,
        "transmission_rate": r.transmission_rate,
        "validity_rate": r.validity_rate,
        "effective_rate": r.effective_rate,
    }
    return point(RATE_MEASUREMENT, tags, fields, _ms(datetime.combine(r.day, datetime.min.time(), BEIJING)))


def old_district_months(rc: RateCounter, start: datetime, end: datetime) -> list[DistrictMonthRate]:
    """``district_months`` as it was: each outlet's ``_outlet_counts`` through ``_month_counts``, every exceeding
    hour looked at, in the districts and months of the new result."""
    win = (_ts(start), _ts(end))
    agg: dict[tuple[str, str], RateCounts] = {}
    outlets: dict[tuple[str, str], int] = {}
    for info in rc.registry.outlets():
        for month, c in rc._month_counts(rc._outlet_counts(info, *win)).items():
            key = (info.district.code, month)
            agg[key] = agg.get(key, RateCounts()) + c
            outlets[key] = outlets.get(key, 0) + 1
    exceeding: dict[tuple[str, str], set[str]] = {}
    overlay = rc.overlay
    for (mn, p, h), code in rc._exceed.items():
        ex_info = rc.registry.outlet(mn)
        if code & 1 and ex_info is not None:
            if overlay is not None and not overlay.judged_exceeds(mn, p, h, True):
                continue
            key = (ex_info.district.code, _month_key(_day_date(_day_index(h))))
            exceeding.setdefault(key, set()).add(ex_info.enterprise.id)
    for mn, p, h in [] if overlay is None else overlay.all_repairs():
        ex_info = rc.registry.outlet(mn)
        if ex_info is not None and overlay is not None and overlay.judged_exceeds(mn, p, h, False):
            key = (ex_info.district.code, _month_key(_day_date(_day_index(h))))
            exceeding.setdefault(key, set()).add(ex_info.enterprise.id)
    keys = [(r.district, r.month) for r in rc.district_months(start, end)]
    return [
        district_month(rc.city, d, m, agg.get((d, m), RateCounts()), outlets.get((d, m), 0), exceeding.get((d, m), ()))
        for d, m in keys
    ]


class Overlay:
    """Marks and repairs (:class:`cems.rules.transmission.RateOverlay`) of chosen hours."""

    def __init__(self, effects: dict[str, dict[int, str]], repairs: dict[str, dict[tuple[str, int], object]]) -> None:
        self.effects = effects
        self._repairs = repairs

    def rate_effects(self, mn: str, lo: int, hi: int) -> Mapping[int, str]:
        return {h: e for h, e in self.effects.get(mn, {}).items() if lo <= h < hi}

    def repairs(self, mn: str) -> Mapping[tuple[str, int], object]:
        return self._repairs.get(mn, {})

    def all_repairs(self) -> list[tuple[str, str, int]]:
        return [(mn, p, h) for mn, by in self._repairs.items() for (p, h) in by]

    def judged_exceeds(self, mn: str, pollutant: str, hour: int, exceeds: bool) -> bool:
        return exceeds


def registry_text(outlets: list[tuple[str, date | None, tuple[int, int] | None]]) -> str:
    """Outlets (district, since, stop as hours from BASE and minutes long) of enterprises E0… (one per outlet)."""
    out = ['[city]\nname = "c"\nassessed_factors = ["a34013", "a21026", "a21002"]\n']
    out += [f'[[district]]\ncode = "{d}"\nname = "{d}"\n' for d in ("D1", "D2", "D 3")]
    for i, (dist, since, stop) in enumerate(outlets):
        out.append(f'[[enterprise]]\nid = "E{i}"\nname = "e"\ndistrict = "{dist}"\n')
        out.append(f'[[enterprise.outlet]]\nmn = "M{i}"\nname = "o"\nprofile = "coal_power_ultra_low"\n')
        if since is not None:
            out.append(f"since = {since.isoformat()}\n")
        if stop is not None:
            a = BASE + timedelta(hours=stop[0])
            b = a + timedelta(minutes=stop[1])
            a_, b_ = a.replace(tzinfo=None).isoformat(), b.replace(tzinfo=None).isoformat()
            out.append(f"stop = [{{ from = {a_}, to = {b_} }}]\n")
    return "".join(out)


HOURS = 24 * 14  # from BASE (Jan 25): over the turn of the month

outlet_st = st.tuples(
    st.sampled_from(("D1", "D2", "D 3")),
    st.one_of(st.none(), st.dates(date(2026, 1, 20), date(2026, 2, 12))),
    st.one_of(st.none(), st.tuples(st.integers(-24, HOURS), st.integers(1, 60 * 30))),
)
record_st = st.tuples(
    st.integers(0, 5),  # outlet (beyond the registry: unknown)
    st.sampled_from(FACTORS),
    st.integers(-48, HOURS + 24),  # hour from BASE
    st.sampled_from(SOURCES),
    st.booleans(),
    st.integers(0, 50),  # exceeds when 0
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    outlets=st.lists(outlet_st, min_size=1, max_size=5),
    records=st.lists(record_st, max_size=400),
    full=st.lists(st.tuples(st.integers(0, 5), st.integers(0, HOURS // 24)), max_size=6),
    marks=st.lists(
        st.tuples(st.integers(0, 5), st.integers(-24, HOURS), st.sampled_from(("removed", "valid", "invalid", "rep"))),
        max_size=6,
    ),
    window=st.tuples(st.integers(-30 * 3600, HOURS * 3600), st.integers(0, HOURS * 3600)),
)
def test_the_live_lines_are_the_general_paths(
    outlets: list[tuple[str, date | None, tuple[int, int] | None]],
    records: list[tuple[int, str, int, str, bool, int]],
    full: list[tuple[int, int]],
    marks: list[tuple[int, int, str]],
    window: tuple[int, int],
) -> None:
    reg = parse_registry(registry_text(outlets))
    rc = RateCounter(reg)
    h0 = _ts(BASE)

    def add(i: int, f: str, hour: int, source: str, valid: bool, exceeds: bool) -> None:
        rc.add(
            HourlyRecord(
                f"M{i}", f, datetime.fromtimestamp(h0 + 3600 * hour, BEIJING), 1.0, None, None, None, None, valid,
                "N", source, None, None, None, None, exceeds,
            )
        )  # fmt: skip

    for i, day in full:  # whole days of all factors, as live
        for hour in range(24 * day, 24 * day + 24):
            for f in FACTORS:
                add(i, f, hour, SOURCE_DAS, True, False)
    for i, f, hour, source, valid, ex in records:
        add(i, f, hour, source, valid, ex == 0)
    effects: dict[str, dict[int, str]] = {}
    repairs: dict[str, dict[tuple[str, int], object]] = {}
    for i, hour, kind in marks:
        if kind == "rep":
            repairs.setdefault(f"M{i}", {})[(FACTORS[hour % 3], h0 + 3600 * hour)] = object()
        else:
            effects.setdefault(f"M{i}", {})[h0 + 3600 * hour] = kind
    if marks:
        rc.overlay = Overlay(effects, repairs)
    start = BASE + timedelta(seconds=window[0])
    end = start + timedelta(seconds=window[1])
    by_mn = rc.outlets_by_mn()

    old = [old_outlet_day_rate_line(r) for r in rc.outlet_days(start, end, by_mn)]
    new = [
        outlet_day_line(o.outlet.mn, o.enterprise.id, o.district.code, day, e, r, v)
        for o, day, e, r, v in rc.outlet_day_totals(start, end, by_mn)
    ]
    assert new == old
    assert [outlet_day_rate_line(r) for r in rc.outlet_days(start, end, by_mn)] == old

    months = rc.district_months(start, end)
    assert [district_month_rate_line(r) for r in months] == [
        district_month_rate_line(r) for r in old_district_months(rc, start, end)
    ]
    steps = list(rc.district_months_stepwise(start, end, 2))
    assert steps[-1] == months and all(s is None for s in steps[:-1])
    assert len(steps) - 1 == len(by_mn) // 2 + len(rc._exceed) // 2 + len(months)


def test_the_fast_path_is_taken_and_counts_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without stops or marks the counts come from the stored bytes (not the general path) and are right."""
    reg = parse_registry(registry_text([("D1", None, None), ("D2", None, None)]))
    rc = RateCounter(reg)
    for hour in range(24):
        for f in FACTORS[:3]:
            if hour != 5:
                rc.add(
                    HourlyRecord(
                        "M0", f, BASE + timedelta(hours=hour), 1.0, None, None, None, None, hour != 7, "N",
                        SOURCE_DAS, None, None, None, None, False,
                    )
                )  # fmt: skip

    def boom(*a: Any) -> Any:
        raise AssertionError("the general path")

    monkeypatch.setattr(rc, "_outlet_counts", boom)
    got = [
        (o.outlet.mn, d, e, r, v)
        for o, d, e, r, v in rc.outlet_day_totals(BASE, BASE + timedelta(days=1), reg.outlets())
    ]
    assert got == [("M0", BASE.date(), 72, 69, 66), ("M1", BASE.date(), 72, 0, 0)]
    by = {
        m.district: (m.expected, m.received, m.valid, m.outlets)
        for m in rc.district_months(BASE, BASE + timedelta(days=1))
    }
    assert by == {"D1": (72, 69, 66, 1), "D2": (72, 0, 0, 1), "D 3": (0, 0, 0, 0)}
    assert _month_key(_day_date(_day_index(_ts(BASE)))) == "2026-01"
    # a window of parts of days over the turn of the month: one segment a day, one a month
    for h in range(24 * 5, 24 * 9):
        for f in FACTORS[:3]:
            rc.add(
                HourlyRecord(
                    "M1", f, BASE + timedelta(hours=h), 1.0, None, None, None, None, h % 5 != 0, "N",
                    SOURCE_MINUTES, None, None, None, None, False,
                )
            )  # fmt: skip
    a, b = BASE + timedelta(days=6, hours=5), BASE + timedelta(days=8, hours=3)
    days = [(d, e, r, v) for o, d, e, r, v in rc.outlet_day_totals(a, b, reg.outlets()) if o.outlet.mn == "M1"]
    assert days == [(date(2026, 1, 31), 57, 57, 45), (date(2026, 2, 1), 72, 72, 57), (date(2026, 2, 2), 9, 9, 9)]
    months = {(m.district, m.month): (m.expected, m.received, m.valid) for m in rc.district_months(a, b)}
    assert months[("D2", "2026-01")] == (57, 57, 45) and months[("D2", "2026-02")] == (81, 81, 66)


@settings(max_examples=200, deadline=None)
@given(
    mn=st.text(max_size=6),
    enterprise=st.text(max_size=6),
    district=st.text(max_size=6),
    day=st.dates(date(1999, 1, 1), date(2100, 1, 1)),
    counts=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
)
def test_outlet_day_line_is_the_point_of_the_rate(
    mn: str, enterprise: str, district: str, day: date, counts: tuple[int, int, int]
) -> None:
    r = OutletDayRate(mn, enterprise, district, day, *counts)
    assert outlet_day_line(mn, enterprise, district, day, *counts) == old_outlet_day_rate_line(r)


# -- the runtime: slices, the loop and the lock


async def test_the_rate_write_lets_a_batch_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 100 outlets (the loop running after each), writes of 300: a batch that arrives while the rates are
    written is judged and committed before the write ends (the lock is free and the loop turns between slices); the
    points are those of the general path, in order."""
    monkeypatch.setattr(runtime_mod, "RATE_SLICE_OUTLETS", 100)
    monkeypatch.setattr(runtime_mod, "RATE_SLICE_S", 0.0)  # the loop runs after every slice
    monkeypatch.setattr(runtime_mod, "RATE_WRITE_OUTLETS", 300)
    reg = parse_registry(_data.registry_toml(1000))
    day = datetime(2026, 11, 3, tzinfo=BEIJING)
    now = [day + timedelta(hours=14, minutes=10)]
    lines: list[str] = []

    released: list[int] = []  # the rate lines written when the batch was acknowledged
    let_go = asyncio.Event()

    async def write(batch: list[str], stop: asyncio.Event | None) -> bool:
        lines.extend(batch)
        if batch[0].startswith("cems_rate,") and rate_lines() >= 600:
            # the rate write goes no further until the batch is committed (it would wait forever for a lock held by
            # the rate write, or a loop that never turns)
            await asyncio.wait_for(let_go.wait(), 20.0)
        return True

    def rate_lines() -> int:
        return sum(1 for ln in lines if ln.startswith("cems_rate,"))

    def release() -> None:
        released.append(rate_lines())
        let_go.set()

    async def publish(topic: str, body: bytes) -> None:
        return None

    rt = ComplianceRuntime(
        reg,
        ComplianceConfig(state_dir=tmp_path, clock=lambda: now[0], rates_interval_s=0.0, commit_interval_s=0.0),
        write=write,
        publish=publish,
    )
    await rt.open()
    try:
        rates = rt.engine.rates
        for k, info in enumerate(reg.outlets()):
            for hour in range(14 - k % 3):
                for f in rates.factors:
                    rates.add(
                        HourlyRecord(
                            info.outlet.mn, f, day + timedelta(hours=hour), 1.0, None, None, None, None, hour != k % 7,
                            "N", SOURCE_DAS, None, None, None, None, False,
                        )
                    )  # fmt: skip
        # (as a counter restored at start: its hours already stored, nothing for the batch's commit to write; the
        # loop below spins, and 3 000 rows written one by one against it wait ≈ 5 ms each for the GIL)
        rates.take_changes()
        first = reg.outlets()[0]
        reading = Reading(first.outlet.mn, Stream.MIN, now[0] - timedelta(minutes=5), {
            "a21026": Measurement("a21026", {"Avg": 10.0}, "N"), "a19001": Measurement("a19001", {"Avg": 8.0}, "N"),
        })  # fmt: skip
        seen: list[tuple[int, bool]] = []  # (rate lines written, lock held) at each turn of the loop
        batch_done: list[int] = []

        async def other() -> None:
            while True:
                await asyncio.sleep(0)
                seen.append((rate_lines(), rt.lock.locked()))
                if not batch_done and rate_lines() > 0:
                    await rt.on_batch([(reading, first)], [], None, release=release)
                    batch_done.append(rate_lines())

        task = asyncio.create_task(other())
        assert await rt.tick()
        task.cancel()
        total = rate_lines()
        assert total == 1000 + 4  # a day of every outlet, the month of the four districts
        # the loop turned between the slices, the lock free
        assert sum(1 for n, held in seen if n < total and not held) >= 1000 // 100
        assert batch_done and len(released) == 1 and 0 < released[0] < total  # judged and committed meanwhile

        start, end = day, now[0] - rt.config.lateness
        end = end.replace(minute=0)
        want = [old_outlet_day_rate_line(r) for r in rates.outlet_days(start, end)]
        want += [district_month_rate_line(r) for r in old_district_months(rates, day.replace(day=1), end)]
        assert [ln for ln in lines if ln.startswith("cems_rate,")] == want
    finally:
        await rt.close()


def test_prune_stepwise_is_prune() -> None:
    """A month's turn drops a month of every outlet: a few outlets at a time (the loop runs between), the same
    state and count as :meth:`RateCounter.prune`; nothing older than the cut: 0 at once."""
    reg = parse_registry(registry_text([("D1", None, None), ("D2", None, None), ("D1", None, None)]))
    twins = (RateCounter(reg), RateCounter(reg))
    for rc in twins:
        for i in range(3):
            for hour in range(-24 * 3, 24 * 10, 5):  # Jan 22 to Feb 4
                for f in FACTORS:
                    rc.add(
                        HourlyRecord(
                            f"M{i}", f, BASE + timedelta(hours=hour), 1.0, None, None, None, None, True, "N",
                            SOURCE_DAS, None, None, None, None, hour % 7 == 0,
                        )
                    )  # fmt: skip
    cut = datetime(2026, 2, 1, tzinfo=BEIJING)
    n = twins[0].prune(cut)
    steps = list(twins[1].prune_stepwise(cut, 2))
    assert n > 0 and steps == [None, n]
    assert twins[0].snapshot() == twins[1].snapshot()
    assert min(h for _, _, h, _ in twins[1].snapshot()["exceed"]) >= _ts(cut)
    assert list(twins[1].prune_stepwise(cut, 1)) == [0]


async def test_the_rate_write_counts_to_the_time_its_tick_closed_hours_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write runs after the tick's commit, outside the lock, and the clock may move on meanwhile: it counts to
    the tick's time, not to a later clock reading whose newly ended hours the engine has not closed (they would
    count as expected and not received, a figure too low until the next write)."""
    reg = parse_registry(_data.registry_toml(3))
    day = datetime(2026, 11, 3, tzinfo=BEIJING)
    now = [day + timedelta(hours=14, minutes=10)]
    lines: list[str] = []

    async def write(batch: list[str], stop: asyncio.Event | None) -> bool:
        lines.extend(batch)
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    rt = ComplianceRuntime(
        reg,
        ComplianceConfig(state_dir=tmp_path, clock=lambda: now[0], rates_interval_s=0.0),
        write=write,
        publish=publish,
    )
    await rt.open()
    try:
        tick_time = now[0]
        real = rt.engine.on_clock

        def on_clock(t: datetime) -> Any:
            out = real(t)
            now[0] += timedelta(hours=3)  # the clock moves on between the tick's close and its rate write
            return out

        monkeypatch.setattr(rt.engine, "on_clock", on_clock)
        assert await rt.tick()
    finally:
        await rt.close()
    outlet_lines = [ln for ln in lines if ln.startswith("cems_rate,") and ",level=outlet," in ln]
    assert len(outlet_lines) == 3
    cap = (tick_time - rt.config.lateness).replace(minute=0, second=0, microsecond=0)
    expected = int((cap - day).total_seconds()) // 3600 * len(rt.engine.rates.factors)  # hours × assessed factors
    assert all(f" expected={expected}i," in ln for ln in outlet_lines), outlet_lines


async def test_a_held_clock_counts_the_rates_to_the_last_time_it_closed_hours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a backlog holds the clock (it closes no hour), the live rates count to the last tick that closed
    hours: the hours ended since are not closed, and counting them as expected and not received would show
    figures too low until the backlog is judged."""
    reg = parse_registry(_data.registry_toml(3))
    day = datetime(2026, 11, 3, tzinfo=BEIJING)
    now = [day + timedelta(hours=14, minutes=10)]
    lines: list[str] = []

    async def write(batch: list[str], stop: asyncio.Event | None) -> bool:
        lines.extend(batch)
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    rt = ComplianceRuntime(
        reg,
        ComplianceConfig(state_dir=tmp_path, clock=lambda: now[0], rates_interval_s=0.0),
        write=write,
        publish=publish,
    )
    await rt.open()
    try:
        assert await rt.tick()  # closes hours to 14:10 and writes the rates
        first = len(lines)
        monkeypatch.setattr(rt, "_clock_holds", lambda: True)  # a backlog from now on
        now[0] += timedelta(hours=3)
        assert await rt.tick()
        assert rt.stats.clock_held == 1
    finally:
        await rt.close()
    outlet_lines = [ln for ln in lines if ln.startswith("cems_rate,") and ",level=outlet," in ln]
    assert first > 0 and len(outlet_lines) >= 3
    cap = (day + timedelta(hours=14, minutes=10) - rt.config.lateness).replace(minute=0, second=0, microsecond=0)
    expected = int((cap - day).total_seconds()) // 3600 * len(rt.engine.rates.factors)
    assert all(f" expected={expected}i," in ln for ln in outlet_lines), outlet_lines
