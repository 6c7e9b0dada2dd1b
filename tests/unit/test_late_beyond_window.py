"""Data past their hour's repair deadline at the service's clock change no figure, whatever the clock ticks before
or between them (DOMAIN.md §5; docs/events.md "Late data").  ``cems run`` gives the engines its clock with every
batch (``on_readings(..., now=...)``, the clock its ticks use); before, a new outlet's back-fill older than the
window counted until the first tick after its first reading, and was dropped after it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_event_time import (  # same directory (pytest prepend import mode)
    JUDGED,
    MIN,
    REG,
    SO2,
    das_hour,
    decoded,
    minute,
)
from test_grid_engine import PM25, grid_registry, reading, sensor

from cems.engine import ComplianceEngine, EngineOutput
from cems.hour_archive import TempHourArchive
from cems.model import BEIJING, Stream
from cems.rules.grid import GridEngine, GridOutput
from cems.rules.hourly import final_before, repair_deadline

#: the service's clock when the back-fill arrives (a new outlet: no data before)
NOW = datetime(2026, 5, 20, 10, 0, 30, tzinfo=BEIJING)
HOUR = timedelta(hours=1)
#: the first hour still inside the repair window at NOW: 09:00 of 10 May (deadline 20 May 10:00:00 ≤ NOW) is not
FIRST_OPEN = datetime(2026, 5, 10, 10, 0, tzinfo=BEIJING)


def _backfill(first: datetime, hours: int) -> list[str]:
    """Minute records of ``hours`` hours from ``first``, in data-time order (an exceedance in every third hour)."""
    return [minute(first + k * HOUR + i * MIN, 50.0 if k % 3 == 0 else 20.0) for k in range(hours) for i in range(60)]


def _live(lines: list[str], ticks: list[int], batch: int) -> tuple[dict[Any, Any], list[Any], dict[str, int]]:
    """The back-fill arriving in batches of ``batch`` lines, 1 s apart from NOW, as ``cems run`` judges them (the
    clock with each batch); a clock tick before the batches whose index is in ``ticks``.  Returns the hourly and
    daily records as the stores keep them (last point of a key wins), the judged events and the late counts."""
    eng = ComplianceEngine(REG, archive=TempHourArchive())  # live: the state's archive (exact late revisions)
    hourly: dict[Any, Any] = {}
    events: dict[str, Any] = {}
    daily: dict[Any, Any] = {}

    def take(out: EngineOutput) -> None:
        for r in out.hourly:
            hourly[(r.pollutant, r.hour_start)] = r
        for d in out.daily:
            daily[(d.pollutant, d.day)] = d
        for u in out.events:
            events[u.event.event_id] = u.event

    t = NOW
    for j, i in enumerate(range(0, len(lines), batch)):
        if j in ticks:
            take(eng.on_clock(t))
        take(eng.on_readings([decoded(line) for line in lines[i : i + batch]], now=t))
        t += timedelta(seconds=1)
    take(eng.on_clock(t + 10 * MIN))  # every hour of the back-fill decided
    # the judgement events (data interruptions and real-time warnings are arrival-time signals: docs/events.md)
    evs = sorted((e.type, e.pollutant, e.start, e.end, e.status) for e in events.values() if e.type in JUDGED)
    return {**hourly, **{("day", k): v for k, v in daily.items()}}, evs, eng.late_counts()


def test_final_before_is_the_first_hour_whose_deadline_is_after_the_clock() -> None:
    ts = int(NOW.timestamp())
    h = final_before(ts)
    assert h == int(FIRST_OPEN.timestamp())
    assert repair_deadline(h - 3600) <= ts < repair_deadline(h)
    # the 10th of the next month binds a longer window: hours of May are final after 10 June (end of the day)
    june_11 = int(datetime(2026, 6, 11, 0, 0, tzinfo=BEIJING).timestamp())
    assert final_before(june_11, timedelta(days=40)) == int(datetime(2026, 6, 1, tzinfo=BEIJING).timestamp())
    # a second before, only the hours whose 40 days have run: to 1 May 22:00 (deadline 10 June 23:00)
    may_1_23h = datetime(2026, 5, 1, 23, tzinfo=BEIJING)
    assert final_before(june_11 - 1, timedelta(days=40)) == int(may_1_23h.timestamp())


@settings(max_examples=20, deadline=None)
@given(ticks=st.sets(st.integers(0, 12), max_size=6), batch=st.sampled_from([60, 97, 240]))
def test_a_backfill_across_the_window_gives_the_same_figures_whatever_the_ticks(ticks: set[int], batch: int) -> None:
    """A new outlet back-fills 4 hours past the window and 4 inside it: the first are counted and give no record,
    event or day; the others are judged; the same whether a tick came before the first batch, between batches or
    not at all."""
    lines = _backfill(FIRST_OPEN - 4 * HOUR, 8)
    hourly, events, late = _live(lines, sorted(ticks), batch)
    ref = _live(lines, [], batch)
    # the figures and what is beyond the window (``late_readings``, merged into hours a tick emitted, may differ)
    assert (hourly, events, late["late_beyond_window"]) == (ref[0], ref[1], ref[2]["late_beyond_window"])
    assert late["late_beyond_window"] == 4 * 60
    hours = sorted({k[1] for k in hourly if k[0] == SO2})
    assert hours == [FIRST_OPEN + k * HOUR for k in range(4)]
    assert all(hourly[(SO2, h)].valid for h in hours)
    exceeded = [h for h in hours if hourly[(SO2, h)].exceeds]
    assert exceeded == [FIRST_OPEN + 2 * HOUR]  # k = 6 of the back-fill; k = 0 and 3 were past the window
    assert all(e[2] >= FIRST_OPEN for e in events)


def test_a_daily_record_counts_by_its_days_last_hour() -> None:
    """A DAS daily record (CN=2031) of 10 May: its day's last hour (23:00) is inside the window at NOW, so it
    passes to the daily rules; one of 9 May is refused (counted) before any rule."""
    eng = ComplianceEngine(REG)
    eng.on_readings([decoded(das_hour(datetime(2026, 5, 1, 8, tzinfo=BEIJING), 20.0, 20.0))], now=NOW)
    assert eng.late_counts()["late_beyond_window"] == 1

    def day(d: datetime) -> Any:
        r, info = decoded(das_hour(d, 20.0, 20.0))
        return replace(r, stream=Stream.DAY), info

    eng.on_readings([day(datetime(2026, 5, 9, tzinfo=BEIJING))], now=NOW)
    assert eng.late_counts()["late_beyond_window"] == 2
    eng.on_readings([day(datetime(2026, 5, 10, tzinfo=BEIJING))], now=NOW)
    assert eng.late_counts()["late_beyond_window"] == 2


def test_replay_without_a_clock_takes_the_data_as_arrived_in_time() -> None:
    """No clock given (``cems replay`` of files without arrival times): the back-fill of a new outlet is judged
    whole; the outlet's own newest data time stands for the clock."""
    eng = ComplianceEngine(REG)
    out = eng.on_readings([decoded(line) for line in _backfill(FIRST_OPEN - 4 * HOUR, 8)])
    out.extend(eng.finish())
    assert len({r.hour_start for r in out.hourly if r.pollutant == SO2}) == 8
    assert eng.late_counts()["late_beyond_window"] == 0


def _grid_live(ticks: list[int]) -> tuple[list[Any], int]:
    """A new grid sensor back-fills 3 hours past the window and 3 inside it, one batch an hour of data."""
    eng = GridEngine(grid_registry(sensor("G1"), sensor("G2")))
    out = GridOutput()
    t = NOW
    for k in range(6):
        if k in ticks:
            out.extend(eng.on_clock(t))
        first = FIRST_OPEN + (k - 3) * HOUR
        batch = [reading("G1", first + i * 5 * MIN, {PM25: 40.0 + k}) for i in range(12)]
        out.extend(eng.on_readings(batch, now=t))
        t += timedelta(seconds=1)
    out.extend(eng.on_clock(t + 10 * MIN))
    hours = {(h.sensor, h.hour_start): h for h in out.hourly}  # last version of a key wins
    return sorted(((s, h, v.values[0].mean) for (s, h), v in hours.items()), key=str), eng.late_beyond_window


@settings(max_examples=15, deadline=None)
@given(ticks=st.sets(st.integers(0, 5), max_size=4))
def test_the_grid_engine_refuses_data_past_the_window_whatever_the_ticks(ticks: set[int]) -> None:
    got = _grid_live(sorted(ticks))
    assert got == _grid_live([])
    hours, late = got
    assert late == 3 * 12
    assert [h for _, h, _ in hours] == [FIRST_OPEN + k * HOUR for k in range(3)]
