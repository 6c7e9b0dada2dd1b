"""Memory of the engine per outlet, second step (issue 20, 100 000 outlets): the exceedance, ``o2_invalid`` and
marks trackers made with the first hourly record, shared code tuples, idle warning states, gap tuples and empty
containers — with snapshots and outputs as before (an unmade tracker snapshots as the tracker it would be)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from cems.decode import decode_message
from cems.devtools.bench import _data
from cems.engine import ComplianceEngine, EngineOutput
from cems.registry import parse_registry
from cems.rules import cadence, daily, events, monthly
from cems.rules.events import ExceedanceTracker, O2InvalidTracker
from cems.rules.quality import _HourStats

END = datetime(2026, 3, 2, 4, 20, tzinfo=UTC)


def _one_reading_each(n: int) -> ComplianceEngine:
    reg = parse_registry(_data.registry_toml(n))
    eng = ComplianceEngine(reg)
    for topic, payload in _data.throughput_messages(n, n, end=END):
        eng.on_reading(decode_message(topic, payload, reg).reading)
    return eng


def _dump(out: EngineOutput) -> list[str]:
    # an event restored from JSON has Beijing's offset without the zone's name: the same time
    return [repr(x).replace(", 'Asia/Shanghai')", ")") for x in (*out.hourly, *out.events, *out.daily, *out.monthly)]


def test_trackers_fed_only_by_hours_are_made_with_the_first_hour_and_snapshot_as_made() -> None:
    eng = _one_reading_each(4)
    eng.on_clock(END + timedelta(minutes=10))
    eng.on_clock(END + timedelta(minutes=20))
    for mn, oe in eng._outlets.items():
        assert not oe.judging
        snap = oe.snapshot()
        info = oe.info
        ex = ExceedanceTracker(mn, info.enterprise.id, info.district.code)
        o2 = O2InvalidTracker(mn, info.enterprise.id, info.district.code)
        for t in (ex, o2):
            t.on_clock(END + timedelta(minutes=20))
        assert snap["exceedance"] == ex.snapshot() and snap["o2_invalid"] == o2.snapshot()
        assert snap["marks"] is None
        assert not oe.judging  # a snapshot makes nothing
        oe.exceedance  # noqa: B018 (made on use)
        assert oe.judging and oe.snapshot() == snap


def test_a_restored_untouched_state_keeps_them_unmade_and_restores_older_states_as_before() -> None:
    eng = _one_reading_each(4)
    eng.on_clock(END + timedelta(minutes=20))
    for mn, oe in eng._outlets.items():
        snap = json.loads(json.dumps(oe.snapshot()))
        other = ComplianceEngine(eng.registry)
        other.restore_outlet(mn, snap)
        back = other._outlets[mn]
        assert not back.judging and back.snapshot() == snap
        # a state saved before the o2_invalid event: the trackers are made, o2_invalid fresh (as before)
        old = {k: v for k, v in snap.items() if k != "o2_invalid"}
        third = ComplianceEngine(eng.registry)
        third.restore_outlet(mn, old)
        made = third._outlets[mn]
        assert made.judging and made.snapshot()["exceedance"] == snap["exceedance"]
        info = made.info
        assert made.o2.snapshot() == O2InvalidTracker(mn, info.enterprise.id, info.district.code).snapshot()


def test_outputs_with_a_restart_before_the_first_hour_equal_an_uninterrupted_run() -> None:
    n = 6
    reg = parse_registry(_data.registry_toml(n))
    msgs = [decode_message(t, p, reg).reading for t, p in _data.throughput_messages(n, n, end=END)]
    later = [
        decode_message(t, p, reg).reading for t, p in _data.throughput_messages(n, 4 * n, end=END + timedelta(hours=2))
    ]
    runs: list[list[str]] = []
    for restart in (False, True):
        eng = ComplianceEngine(reg)
        got: list[str] = []
        for r in msgs:
            got += _dump(eng.on_reading(r))
        got += _dump(eng.on_clock(END + timedelta(minutes=20)))
        if restart:
            states = {mn: json.loads(json.dumps(oe.snapshot())) for mn, oe in eng._outlets.items()}
            eng = ComplianceEngine(reg)
            for mn, s in states.items():
                eng.restore_outlet(mn, s)
        got += _dump(eng.on_clock(END + timedelta(minutes=50)))
        for r in later:
            got += _dump(eng.on_reading(r))
        got += _dump(eng.on_clock(END + timedelta(hours=2, minutes=30)))
        got += _dump(eng.finish())
        got.append(json.dumps({mn: oe.snapshot() for mn, oe in sorted(eng._outlets.items())}, sort_keys=True))
        assert all(oe.judging for oe in eng._outlets.values())
        runs.append(got)
    assert runs[0] == runs[1]


def _reference_flatline(subs: list[tuple[str, float, float, int]]) -> dict[str, Any]:
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    mask: dict[str, int] = {}
    for code, a, b, bits in subs:
        old = lo.get(code)
        if old is None or a < old:
            lo[code] = a
        old = hi.get(code)
        if old is None or b > old:
            hi[code] = b
        mask[code] = mask.get(code, 0) | bits
    return {"lo": lo, "hi": hi, "mask": mask} if lo else {}


def test_the_flatline_summary_as_arrays_equals_the_dicts_it_was() -> None:
    rng = random.Random(3)
    for _ in range(200):
        subs = []
        for _ in range(rng.randrange(0, 30)):
            v = rng.choice([0.0, -0.0, 1.5, rng.uniform(-5, 50)])
            subs.append(
                (rng.choice(["a21026", "a34013", "a19001"]), v, v + rng.choice([0.0, 1.0]), 1 << rng.randrange(60))
            )
        st = _HourStats()
        for code, a, b, bits in subs:
            st.widen(code, a, b, bits)
        want = _reference_flatline(subs)
        got = st.to_json()
        assert json.dumps(got) == json.dumps(want)
        back = _HourStats.from_json(json.loads(json.dumps(got)))
        assert back.to_json() == got and back.codes is st.codes  # the shared code tuple


def test_idle_warning_states_gap_tuples_and_empty_containers_are_shared() -> None:
    eng = _one_reading_each(6)
    eng.on_clock(END + timedelta(minutes=20))
    oes = list(eng._outlets.values())
    states = {id(oe.warnings._states) for oe in oes}
    assert all(type(oe.warnings._states) is events._IdleStates for oe in oes) and len(states) == 1
    assert all(st is events._IDLE for st in oes[0].warnings._states.values())
    first = oes[0].hourly._open
    assert all(acc.rtd_codes is first.get(acc.hour).rtd_codes for oe in oes for acc in oe.hourly._open)  # type: ignore[union-attr]
    for oe in oes:
        assert oe.daily._days is daily._EMPTY and oe.daily._das is daily._EMPTY and oe.daily._legacy is daily._EMPTY
        assert oe.monthly._months is monthly._NO_CODES
    assert not daily._EMPTY and not monthly._NO_CODES
    g1, g2 = cadence.RecentGaps(), cadence.RecentGaps()
    for g in (g1, g2):
        for t in range(0, 30 * 12, 30):
            g.on_data(t, None)
    assert g1._gaps is g2._gaps and g1._gaps == (30,) * cadence.WINDOW
    assert all(v is events._IDLE for d in events._IDLE_STATES.values() for v in d.values())


def test_hour_summaries_in_any_arrival_order_snapshot_as_by_hour() -> None:
    reg = parse_registry(_data.registry_toml(1))
    from cems.replay import load_readings

    items = load_readings(reg, _data.replay_lines(1, 1), "hj212")[:240]  # 4 hours of 60-s data
    shuffled = list(items)
    random.Random(5).shuffle(shuffled)
    snaps = []
    for order in (items, shuffled):
        eng = ComplianceEngine(reg)
        for r, info in order:
            eng.on_reading(r, info)
        q = next(iter(eng._outlets.values())).quality
        assert [s.hour for s in q._stats] == sorted({s.hour for s in q._stats})
        snaps.append(q.snapshot())
    assert snaps[0]["stats"] == snaps[1]["stats"] and len(snaps[0]["stats"]) == 4


def test_engine_state_after_one_reading_and_a_commit_stays_smaller() -> None:
    import tracemalloc

    n = 400
    reg = parse_registry(_data.registry_toml(n))
    readings = [decode_message(t, p, reg).reading for t, p in _data.throughput_messages(n, n, end=END)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        eng = ComplianceEngine(reg)
        for r in readings:
            eng.on_reading(r)
        eng.take_changes()  # the journal goes with the service's commit
        per_outlet = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert len(eng._outlets) == n and not any(oe.judging for oe in eng._outlets.values())
    assert per_outlet < 3300  # ≈ 2.8 KB measured (CPython 3.11); ≈ 4.6 KB before issue 20's second memory step


def test_counted_hours_as_day_bytes_equal_the_dict_they_were() -> None:
    from cems.rules.transmission import _HourCodes

    rng = random.Random(11)
    base = 1_772_323_200  # a UTC midnight
    for _ in range(50):
        ref: dict[int, int] = {}
        got = _HourCodes()
        for _ in range(rng.randrange(0, 200)):
            h = base + 3600 * rng.randrange(-100, 1500)
            code = rng.randrange(0, 6)
            old = ref.get(h)
            assert got.get(h) == old
            if old is None or code >> 1 >= old >> 1:
                ref[h] = code
                got.set(h, code)
        assert got.items() == sorted(ref.items())
        cut = base + 3600 * rng.randrange(-100, 1500) + rng.choice([0, 1800])
        dropped = [h for h in ref if h < cut]
        assert got.drop_before(cut) == len(dropped)
        for h in dropped:
            del ref[h]
        assert got.items() == sorted(ref.items())
