"""Event state machines: hourly exceedances, real-time warnings, data interruptions."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.model import BEIJING, O2, SO2, Measurement, Reading, Stream
from cems.registry import Outlet
from cems.rules.events import (
    _IDLE,
    _IDLE_JSON,
    CLOSED,
    OPENED,
    Event,
    EventUpdate,
    ExceedanceTracker,
    InterruptionTracker,
    RealtimeWarningTracker,
    _dt,
    _duration_h,
    _idle_states,
    _IdleStates,
    _ts,
    event_id,
)
from cems.rules.hourly import HourlyRecord

H0 = datetime(2026, 1, 1, 0, 0, tzinfo=BEIJING)
H = timedelta(hours=1)
KEYS = {
    "event_id", "type", "mn", "enterprise", "district", "pollutant", "start", "end",
    "hours", "peak", "limit", "ref_o2", "profile", "status", "late",
}  # fmt: skip


def outlet(**kw: Any) -> Outlet:
    base: dict[str, Any] = {"mn": "M1", "name": "unit 1", "profile": "coal_power_ultra_low"}
    base.update(kw)
    return Outlet.model_validate(base)


def rec(hour: int, zs: float, *, valid: bool = True, flag: str = "N", limit: float = 35.0) -> HourlyRecord:
    return HourlyRecord(
        mn="M1", pollutant=SO2, hour_start=H0 + hour * H, avg=zs, o2_avg=6.0, zs_avg=zs, das_zs_avg=None,
        zs_source="computed", valid=valid, flag=flag, source="minutes", valid_minutes=60 if valid else 10,
        limit=limit, ref_o2=6.0, profile="coal_power_ultra_low",
        exceeds=valid and flag == "N" and zs > limit,
    )  # fmt: skip


def kinds(ups: list[EventUpdate]) -> list[str]:
    return [u.kind for u in ups]


def feed(tr: ExceedanceTracker, recs: list[HourlyRecord]) -> list[EventUpdate]:
    return [u for r in recs for u in tr.on_hour(r)]


# -- hourly exceedance ------------------------------------------------------------------------------


def test_run_of_consecutive_exceeding_hours() -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    ups = feed(tr, [rec(0, 20), rec(1, 40), rec(2, 50), rec(3, 36), rec(4, 35)])
    assert kinds(ups) == ["opened", "updated", "updated", "closed"]
    ev = ups[-1].event
    assert (ev.start, ev.end, ev.hours, ev.peak, ev.status) == (H0 + H, H0 + 4 * H, 3, 50, "closed")
    j = ev.to_json()
    assert set(j) == KEYS
    assert j["start"] == "2026-01-01T01:00:00+08:00" and j["end"] == "2026-01-01T04:00:00+08:00"
    assert (j["type"], j["enterprise"], j["district"], j["limit"], j["ref_o2"]) == (
        "hourly_exceedance", "E1", "D1", 35.0, 6.0,
    )  # fmt: skip
    expected_id = hashlib.sha1(b"hourly_exceedance|M1|a21026|2026-01-01T01:00:00+08:00").hexdigest()[:16]
    assert j["event_id"] == expected_id == ups[0].event.event_id  # stable from open to close
    assert ups[0].event.to_json()["end"] is None and ups[0].event.status == "open"


@pytest.mark.parametrize(
    "breaker",
    [rec(2, 90, flag="D"), rec(2, 90, flag="F"), rec(2, 90, flag="C"), rec(2, 90, valid=False), rec(2, 30)],
    ids=["fault", "stopped", "calibration", "invalid", "compliant"],
)
def test_any_non_exceeding_hour_ends_the_run(breaker: HourlyRecord) -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    ups = feed(tr, [rec(0, 40), rec(1, 40), breaker, rec(3, 40)])
    assert kinds(ups) == ["opened", "updated", "closed", "opened"]
    assert (ups[2].event.end, ups[2].event.hours) == (H0 + 2 * H, 2)
    assert ups[3].event.start == H0 + 3 * H


def test_missing_hour_ends_the_run() -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    ups = feed(tr, [rec(0, 40), rec(2, 41)])  # hour 1 missing
    assert kinds(ups) == ["opened", "closed", "opened"]
    assert (ups[1].event.end, ups[1].event.hours) == (H0 + H, 1)


def test_on_clock_closes_after_a_missing_hour_and_late_records_revise() -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    assert kinds(feed(tr, [rec(5, 40)])) == ["opened"]
    assert tr.on_hour(rec(5, 40)) == []  # the same record again: nothing changes
    ups = tr.on_hour(rec(5, 99))  # a revision of hour 5 (e.g. the DAS's CN=2061): the peak moves
    assert kinds(ups) == ["updated"] and ups[0].event.peak == 99
    assert tr.on_clock(H0 + 6 * H + timedelta(minutes=59)) == []  # hour 6 not over yet
    ups = tr.on_clock(H0 + 7 * H)  # hour 6 ended without a record
    assert kinds(ups) == ["closed"] and ups[0].event.end == H0 + 6 * H
    # A late record for hour 6 (event time, issue 12 item 1) reopens the run (hour 7 is not over yet):
    # reported once, marked late, the same event id.
    ups = tr.on_hour(rec(6, 40))
    assert kinds(ups) == ["updated"] and ups[0].event.status == "open" and ups[0].event.late
    assert ups[0].event.hours == 2
    assert ups[0].event.event_id == event_id("hourly_exceedance", "M1", "a21026", H0 + 5 * H)
    assert tr.on_hour(rec(6, 40)) == []
    ups = tr.on_clock(H0 + 8 * H)
    assert kinds(ups) == ["closed"] and ups[0].event.end == H0 + 7 * H and tr.open_events == []


def test_late_hour_merges_runs_and_retracts_the_later_one() -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    ups = feed(tr, [rec(0, 40), rec(2, 41), rec(3, 10)])  # hour 1 missing: two runs
    assert kinds(ups) == ["opened", "closed", "opened", "closed"]
    ups = tr.on_hour(rec(1, 50))  # hour 1 arrives late, exceeding: one run 0-3
    assert kinds(ups) == ["closed", "retracted"]
    merged, gone = ups[0].event, ups[1].event
    assert (merged.start, merged.end, merged.hours, merged.peak, merged.late) == (H0, H0 + 3 * H, 3, 50, True)
    assert gone.start == H0 + 2 * H and gone.status == "retracted"
    ups = tr.on_hour(rec(1, 10))  # revised again, compliant: the two runs come back
    assert kinds(ups) == ["closed", "opened", "closed"]
    assert [u.event.start for u in ups] == [H0, H0 + 2 * H, H0 + 2 * H]


def test_utc_hours_give_beijing_times() -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    r = rec(0, 40)
    r_utc = HourlyRecord(
        **{**{f: getattr(r, f) for f in r.__dataclass_fields__}, "hour_start": datetime(2025, 12, 31, 16, tzinfo=UTC)}
    )
    ups = tr.on_hour(r_utc)
    assert ups[0].event.to_json()["start"] == "2026-01-01T00:00:00+08:00"


hour_kind = st.sampled_from(["exceed", "ok", "flagged", "invalid", "missing"])


def _records(pattern: list[str]) -> list[HourlyRecord]:
    out = []
    for i, k in enumerate(pattern):
        if k == "exceed":
            out.append(rec(i, 40.0 + i))
        elif k == "ok":
            out.append(rec(i, 10.0))
        elif k == "flagged":
            out.append(rec(i, 90.0, flag="M"))
        elif k == "invalid":
            out.append(rec(i, 90.0, valid=False))
    return out


@settings(max_examples=200)
@given(pattern=st.lists(hour_kind, max_size=40))
def test_runs_partition_exceeding_hours_exactly(pattern: list[str]) -> None:
    tr = ExceedanceTracker("M1", "E1", "D1")
    ups = feed(tr, _records(pattern)) + tr.on_clock(H0 + (len(pattern) + 2) * H)
    closed = [u.event for u in ups if u.kind == "closed"]
    assert tr.open_events == []
    covered: list[int] = []
    for ev in closed:
        assert ev.end is not None
        first, last = int((ev.start - H0) / H), int((ev.end - H0) / H)
        assert ev.hours == last - first
        covered += range(first, last)
        # Maximal: the hours before and after the run are not exceeding.
        assert first == 0 or pattern[first - 1] != "exceed"
        assert last >= len(pattern) or pattern[last] != "exceed"
        assert ev.peak == max(40.0 + i for i in range(first, last))
    assert sorted(covered) == [i for i, k in enumerate(pattern) if k == "exceed"]
    assert len(covered) == len(set(covered))
    # One "opened" per event, same ids.
    assert [u.event.event_id for u in ups if u.kind == "opened"] == [e.event_id for e in closed]


@settings(max_examples=100)
@given(pattern=st.lists(hour_kind, max_size=30), cut=st.integers(0, 30))
def test_exceedance_snapshot_restore_gives_the_same_future(pattern: list[str], cut: int) -> None:
    recs = _records(pattern)
    cut = min(cut, len(recs))
    a = ExceedanceTracker("M1", "E1", "D1")
    feed(a, recs[:cut])
    b = ExceedanceTracker("M1", "E1", "D1")
    b.restore(json.loads(json.dumps(a.snapshot())))
    end = H0 + (len(pattern) + 2) * H
    assert feed(b, recs[cut:]) + b.on_clock(end) == feed(a, recs[cut:]) + a.on_clock(end)


# -- real-time warnings -------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=BEIJING)
S = timedelta(seconds=30)


def rt(i: int, so2: float, flag: str | None = "N", o2: float = 6.0) -> Reading:
    ms = {SO2: Measurement(SO2, {"Rtd": so2}, flag), O2: Measurement(O2, {"Rtd": o2}, "N")}
    return Reading("M1", Stream.RTD, T0 + i * S, ms)


def warn_feed(tr: RealtimeWarningTracker, values: list[float | tuple[float, str]]) -> list[EventUpdate]:
    out = []
    for i, v in enumerate(values):
        r = rt(i, v[0], v[1]) if isinstance(v, tuple) else rt(i, v)
        out += tr.on_reading(r)
    return out


def test_warning_is_debounced_one_event_per_episode() -> None:
    tr = RealtimeWarningTracker(outlet(), "E1", "D1")  # SO2 35 at 6 %; O2 6 % → corrected = value
    ups = warn_feed(tr, [40, 40, 30, 40, 41, 42, 30, 30, 45, 30, 30, 30, 30])
    assert kinds(ups) == ["opened", "updated", "closed"]  # "updated" when the peak rises (45)
    op, up, cl = (u.event for u in ups)
    assert up.peak == 45 and up.status == "open"
    # Opens on the third consecutive value above (#3, #4, #5), starting at #3; peak so far 42.
    assert (op.type, op.start, op.peak, op.status) == ("realtime_warning", T0 + 3 * S, 42, "open")
    # #6, #7 below, #8 above resets; #9, #10, #11 below → ends at #9; peak 45.
    assert (cl.end, cl.peak, cl.status, cl.event_id) == (T0 + 9 * S, 45, "closed", op.event_id)
    assert cl.hours == pytest.approx(6 * 30 / 3600, abs=1e-4)


def test_warning_uses_the_o2_correction_and_ignores_flagged_values() -> None:
    tr = RealtimeWarningTracker(outlet(), "E1", "D1")
    # 24 at 11 % O2 → 24 × 15 / 10 = 36 > 35: three of them open a warning.
    ups = [u for i in range(3) for u in tr.on_reading(rt(i, 24.0, o2=11.0))]
    assert kinds(ups) == ["opened"] and ups[0].event.peak == pytest.approx(36.0)
    tr2 = RealtimeWarningTracker(outlet(), "E1", "D1")
    assert warn_feed(tr2, [(90.0, "C"), (90.0, "C"), (90.0, "C"), 90.0, 90.0]) == []


def test_warning_closes_when_data_stops() -> None:
    tr = RealtimeWarningTracker(outlet(), "E1", "D1", stop_after=timedelta(minutes=10))
    warn_feed(tr, [50, 50, 50])
    last = T0 + 2 * S
    assert tr.on_clock(last + timedelta(minutes=10)) == []
    ups = tr.on_clock(last + timedelta(minutes=10, seconds=1))
    assert kinds(ups) == ["closed"] and ups[0].event.end == last + S  # last value + rtd interval
    assert tr.on_clock(last + timedelta(hours=1)) == []
    # Replay (no clock): a reading after the gap closes the episode first.
    tr2 = RealtimeWarningTracker(outlet(), "E1", "D1", stop_after=timedelta(minutes=10))
    warn_feed(tr2, [50, 50, 50])
    ups = tr2.on_reading(rt(100, 50))  # 50 min later
    assert kinds(ups) == ["closed"] and ups[0].event.end == last + S


def test_warning_snapshot_of_an_idle_pollutant_is_the_idle_state() -> None:
    """The snapshot writes the shared idle state from a constant (speed): it must be that state's fields, and
    a restored idle pollutant must snapshot the same."""
    assert asdict(_IDLE) == _IDLE_JSON
    tr = RealtimeWarningTracker(outlet(), "E1", "D1")
    warn_feed(tr, [10, 10])  # SO2 below its limit: idle
    snap = tr.snapshot()
    assert snap["states"][SO2] == asdict(_IDLE)
    snap["states"][SO2]["above"] = 99  # a copy per snapshot: the constant is never handed out
    assert tr.snapshot()["states"][SO2]["above"] == 0 and _IDLE_JSON["above"] == 0
    b = RealtimeWarningTracker(outlet(), "E1", "D1")
    b.restore(json.loads(json.dumps(tr.snapshot())))
    assert b.snapshot() == tr.snapshot()


def test_warning_snapshot_of_idle_codes_is_in_code_order() -> None:
    """The snapshot writes the shared idle states in their own order, unsorted (speed): they are made sorted, so
    the stored text is the same as sorting gave (whatever order the codes came in)."""
    codes = [f"a{n:05d}" for n in (34013, 21026, 21002, 5002, 24088, 21005, 34000, 21003, 21004, 24087)]
    assert list(_idle_states(codes)) == sorted(codes)
    tr = RealtimeWarningTracker(outlet(), "E1", "D1")
    state = {
        "version": 1, "kind": "realtime_warning", "mn": "M1", "last_t": None,
        "states": {c: dict(_IDLE_JSON) for c in reversed(sorted(codes))},
    }  # fmt: skip
    tr.restore(state)
    assert type(tr._states) is _IdleStates
    assert list(tr.snapshot()["states"]) == sorted(codes)


def test_warning_snapshot_restore() -> None:
    values: list[float | tuple[float, str]] = [40, 40, 30, 40, 41, 42, 30, 30, 45, 30, 30, 30, 30, 50, 50, 50]
    for cut in range(len(values)):
        a = RealtimeWarningTracker(outlet(), "E1", "D1")
        for i in range(cut):
            a.on_reading(rt(i, float(values[i])))  # type: ignore[arg-type]
        b = RealtimeWarningTracker(outlet(), "E1", "D1")
        b.restore(json.loads(json.dumps(a.snapshot())))
        ra = [u for i in range(cut, len(values)) for u in a.on_reading(rt(i, float(values[i])))]  # type: ignore[arg-type]
        rb = [u for i in range(cut, len(values)) for u in b.on_reading(rt(i, float(values[i])))]  # type: ignore[arg-type]
        assert ra == rb


# -- data interruption ------------------------------------------------------------------------------

M = timedelta(minutes=1)


def test_interruption_replay_and_live_give_the_same_event() -> None:
    o = outlet()  # threshold max(600 s, 3 × 30 s) = 600 s
    replay = InterruptionTracker(o, "E1", "D1")
    ups = [u for t in (T0, T0 + M, T0 + 2 * M, T0 + 12 * M + timedelta(seconds=1)) for u in replay.on_data(t)]
    assert kinds(ups) == ["opened", "closed"]
    ev = ups[-1].event
    assert (ev.start, ev.end, ev.pollutant, ev.type) == (
        T0 + 2 * M,
        T0 + 12 * M + timedelta(seconds=1),
        None,
        "data_interruption",
    )
    assert set(ev.to_json()) == KEYS

    live = InterruptionTracker(o, "E1", "D1")
    for t in (T0, T0 + M, T0 + 2 * M):
        assert live.on_data(t) == []
    assert live.on_clock(T0 + 12 * M) == []  # exactly 600 s: not longer than the threshold
    opened = live.on_clock(T0 + 12 * M + timedelta(seconds=1))
    assert kinds(opened) == ["opened"] and opened[0].event.start == T0 + 2 * M
    assert live.on_clock(T0 + 20 * M) == []  # still open: no duplicate
    closed = live.on_data(T0 + 12 * M + timedelta(seconds=1))
    assert kinds(closed) == ["closed"]
    assert closed[0].event.to_json() == ev.to_json()


def test_gap_equal_to_threshold_is_not_an_interruption() -> None:
    tr = InterruptionTracker(outlet(), "E1", "D1")
    tr.on_data(T0)
    assert tr.on_data(T0 + 10 * M) == []
    assert tr.on_data(T0 + 5 * M) == []  # out of order: ignored


def test_silence_inside_a_declared_stop_is_not_an_interruption() -> None:
    stop = {"from": datetime(2026, 1, 1, 10, 0), "to": datetime(2026, 1, 1, 18, 0)}  # naive = Beijing
    o = outlet(stop=[stop])
    tr = InterruptionTracker(o, "E1", "D1")
    tr.on_data(datetime(2026, 1, 1, 9, 59, 30, tzinfo=BEIJING))
    assert tr.on_clock(datetime(2026, 1, 1, 15, 0, tzinfo=BEIJING)) == []
    assert tr.on_data(datetime(2026, 1, 1, 18, 0, 20, tzinfo=BEIJING)) == []
    # Data resumes only at 20:00 after a stop ending at 18:00: interrupted from 18:00 to 20:00.
    tr2 = InterruptionTracker(o, "E1", "D1")
    tr2.on_data(datetime(2026, 1, 1, 9, 59, 30, tzinfo=BEIJING))
    ups = tr2.on_data(datetime(2026, 1, 1, 20, 0, tzinfo=BEIJING))
    assert kinds(ups) == ["opened", "closed"]
    assert (ups[1].event.start.hour, ups[1].event.end.hour, ups[1].event.hours) == (18, 20, 2.0)  # type: ignore[union-attr]


def test_live_interruption_cut_by_a_stop() -> None:
    o = outlet(stop=[{"from": datetime(2026, 1, 1, 10, 0), "to": datetime(2026, 1, 1, 18, 0)}])
    tr = InterruptionTracker(o, "E1", "D1")
    tr.on_data(datetime(2026, 1, 1, 9, 0, tzinfo=BEIJING))
    ups = tr.on_clock(datetime(2026, 1, 1, 9, 11, tzinfo=BEIJING))
    assert kinds(ups) == ["opened"] and ups[0].event.start.hour == 9
    ups = tr.on_clock(datetime(2026, 1, 1, 12, 0, tzinfo=BEIJING))
    assert kinds(ups) == ["closed"] and ups[0].event.end == datetime(2026, 1, 1, 10, 0, tzinfo=BEIJING)
    assert tr.on_clock(datetime(2026, 1, 1, 18, 5, tzinfo=BEIJING)) == []
    ups = tr.on_clock(datetime(2026, 1, 1, 18, 10, 1, tzinfo=BEIJING))
    assert kinds(ups) == ["opened"] and ups[0].event.start == datetime(2026, 1, 1, 18, 0, tzinfo=BEIJING)
    ups = tr.on_data(datetime(2026, 1, 1, 18, 30, tzinfo=BEIJING))
    assert kinds(ups) == ["closed"] and ups[0].event.end == datetime(2026, 1, 1, 18, 30, tzinfo=BEIJING)
    assert tr.open_event is None


def test_interruption_snapshot_restore_never_duplicates_nor_loses_the_close() -> None:
    o = outlet()
    a = InterruptionTracker(o, "E1", "D1")
    a.on_data(T0)
    opened = a.on_clock(T0 + 11 * M)
    assert kinds(opened) == ["opened"]
    b = InterruptionTracker(o, "E1", "D1")
    b.restore(json.loads(json.dumps(a.snapshot())))
    assert b.on_clock(T0 + 12 * M) == []  # not opened again after the restart
    closed = b.on_data(T0 + 30 * M)
    assert kinds(closed) == ["closed"] and closed[0].event.event_id == opened[0].event.event_id
    assert Event.from_json(closed[0].event.to_json()) == closed[0].event


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 40), min_size=1, max_size=25),
    stop_from=st.integers(0, 300),
    stop_len=st.integers(1, 120),
)
def test_interruption_live_equals_replay_and_respects_stops(gaps: list[int], stop_from: int, stop_len: int) -> None:
    """Data every ``gap`` minutes, one declared stop: every event is longer than the 10-min threshold,
    lies outside the stop, and the live tracker (clock every minute) closes exactly the replay's events."""
    t0 = datetime(2026, 3, 1, tzinfo=BEIJING)
    s0, s1 = t0 + stop_from * M, t0 + (stop_from + stop_len) * M
    o = outlet(stop=[{"from": s0, "to": s1}])
    times = [t0]
    for g in gaps:
        times.append(times[-1] + g * M)
    # a fixed 10-min threshold (the default follows the data's cadence: tests/unit/test_cadence.py)
    replay = InterruptionTracker(o, "E1", "D1", threshold=timedelta(minutes=10))
    rep = [u for t in times for u in replay.on_data(t)]
    live = InterruptionTracker(o, "E1", "D1", threshold=timedelta(minutes=10))
    liv: list[EventUpdate] = list(live.on_data(times[0]))
    for prev, t in pairwise(times):
        c = prev + M
        while c < t:  # the live clock ticks every minute
            liv += live.on_clock(c)
            c += M
        liv += live.on_data(t)
    closed_rep = [u.event for u in rep if u.kind == "closed"]
    closed_live = [u.event for u in liv if u.kind == "closed"]
    assert [e.to_json() for e in closed_live] == [e.to_json() for e in closed_rep]
    assert sum(u.kind == "opened" for u in liv) == len(closed_live)  # every opened event was closed once
    for e in closed_rep:
        assert e.end is not None and e.end - e.start > timedelta(minutes=10)
        assert e.end <= s0 or e.start >= s1  # never inside the stop
    # Every silence outside the stop longer than 10 min is reported.
    silent = sum(
        1 for a, b in pairwise(times) for x, y in ((a, min(b, s0)), (max(a, s1), b)) if y - x > timedelta(minutes=10)
    )
    assert len(closed_rep) == silent


def test_pollutants_of_the_same_hour_are_not_late() -> None:
    """SO2 and NOx exceed in the same hour, their records emitted together: neither is late (issue 12
    follow-up: the second pollutant of an hour was taken for late data).  A revision of either, or a record of
    the hour after the clock decided it, is late."""
    nox = "a21002"
    tr = ExceedanceTracker("M1", "E1", "D1")
    so2_rec = rec(0, 40)
    nox_rec = replace(rec(0, 120, limit=50.0), pollutant=nox)
    ups = [*tr.on_hour(so2_rec), *tr.on_hour(nox_rec)]
    assert [(u.kind, u.event.pollutant, u.event.late) for u in ups] == [
        ("opened", SO2, False),
        ("opened", nox, False),
    ]
    ups = tr.on_hour(replace(nox_rec, zs_avg=130.0))  # a revision of the NOx hour: late
    assert [(u.kind, u.event.peak, u.event.late) for u in ups] == [("updated", 130.0, True)]
    assert tr.on_clock(H0 + 2 * H) != []  # hour 1 ended without a record: both runs close
    co = "a21005"
    ups = tr.on_hour(replace(rec(0, 90, limit=50.0), pollutant=co))  # CO of hour 0 after the hour was decided
    assert [(u.kind, u.event.late) for u in ups] == [("opened", True), ("closed", True)]
    # after a restart the same holds
    tr2 = ExceedanceTracker("M1", "E1", "D1")
    tr2.restore(json.loads(json.dumps(tr.snapshot())))
    ups = [*tr2.on_hour(rec(2, 40)), *tr2.on_hour(replace(rec(2, 120, limit=50.0), pollutant=nox))]
    assert [(u.kind, u.event.late) for u in ups] == [("opened", False), ("opened", False)]


class _NoFastPath(InterruptionTracker):
    """The interruption tracker as it was before the fast path of ``_advance`` (issue 20 speed): the
    reference the faster one must equal."""

    def _advance(self, to: float, data: bool) -> list[EventUpdate]:
        assert self._last is not None
        base = self._last if self._closed_until is None else max(self._last, self._closed_until)
        segments = self._segments(base, to)
        ups: list[EventUpdate] = []
        if self._open is not None and all(abs(s - _ts(self._open.start)) > 1e-3 for s, _ in segments):
            end = _dt(max(_ts(self._open.start), min(to, base)))
            ups.append(EventUpdate(CLOSED, self._open.closed_at(end, _duration_h(self._open.start, end))))
            self._open = None
        for s, e in segments:
            ended = e < to or data
            if self._open is not None and abs(s - _ts(self._open.start)) <= 1e-3:
                if ended:
                    end = _dt(e)
                    ups.append(EventUpdate(CLOSED, self._open.closed_at(end, _duration_h(self._open.start, end))))
                    self._open = None
                    self._closed_until = e
            elif e - s > self.threshold_s:
                ev = self._new(s, e)
                ups.append(EventUpdate(OPENED, ev))
                if ended:
                    end = _dt(e)
                    ups.append(EventUpdate(CLOSED, ev.closed_at(end, _duration_h(ev.start, end))))
                    self._closed_until = e
                else:
                    self._open = ev
        return ups


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(-60, 2400), st.sampled_from(list(Stream))), max_size=40),
    st.sampled_from([None, timedelta(minutes=5), timedelta(minutes=30)]),
    st.booleans(),
)
def test_interruption_fast_path_equals_the_full_judgement(
    steps: list[tuple[bool, int, Stream]], threshold: timedelta | None, stopped: bool
) -> None:
    """Data and clock ticks with any gaps (below, at and above the threshold; fixed or from the cadence),
    with and without a declared stop: the same updates and the same state as without the fast path."""
    stop = [{"from": datetime(2026, 1, 1, 8, 20), "to": datetime(2026, 1, 1, 8, 50)}] if stopped else []
    o = outlet(stop=stop)
    fast = InterruptionTracker(o, "E1", "D1", threshold=threshold)
    slow = _NoFastPath(o, "E1", "D1", threshold=threshold)
    t = T0
    for is_clock, gap, stream in steps:
        t += timedelta(seconds=gap)
        if is_clock:
            assert fast.on_clock(t) == slow.on_clock(t)
        else:
            assert fast.on_data(t, stream) == slow.on_data(t, stream)
        assert fast.snapshot() == slow.snapshot()


def test_warning_values_are_converted_to_the_standard_units() -> None:
    """An outlet sending SO2 in g/m³: 0.1 g/m³ is 100 mg/m³, above the 35 mg/m³ limit (the look-up of the unit
    factor is skipped only for outlets without units)."""
    tr = RealtimeWarningTracker(outlet(units={SO2: "g/m3"}), "E1", "D1")
    assert "opened" in kinds(warn_feed(tr, [0.1, 0.1, 0.1]))
    assert kinds(warn_feed(RealtimeWarningTracker(outlet(), "E1", "D1"), [0.1, 0.1, 0.1])) == []
