"""Incremental persistence of the engine (open hours' sub-values, rate records): a restore from SQLite at
any point gives the same results as an engine that never stopped."""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cems.engine import ComplianceEngine
from cems.hour_archive import PendingHourArchive, read_archived
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.rules import DEFAULT_HOLD
from cems.rules.hourly import SOURCE_DAS, SOURCE_MINUTES, SOURCE_REALTIME
from cems.rules.transmission import RateCounter
from cems.service.compliance._state import (
    RATE_RECORDS_SCHEMA,
    RATE_ROWS_SQL,
    RATE_RUNS_SQL,
    STATE_SCHEMA,
    commit_state,
    encode_state,
    load_state,
    migrate_rate_records,
    rate_record,
    restore_rate_state,
    with_open_hours,
)

REG = parse_registry(
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="A"\nname="a"\nprofile="coal_power_ultra_low"\nrtd_interval_s=60\n'
    '[[enterprise.outlet]]\nmn="B"\nname="b"\nprofile="cement_kiln"\nrtd_interval_s=60\n'
)
T0 = datetime(2026, 4, 1, 7, 50, tzinfo=BEIJING)


def readings(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        for mn in ("A", "B"):
            t = T0 + timedelta(minutes=i)
            so2 = 50.0 if 20 <= i < 100 else 10.0
            flag = "M" if i % 17 == 0 else "N"
            out.append(Reading(mn, Stream.MIN, t, {
                "a21026": Measurement("a21026", {"Avg": so2 + i % 3}, flag),
                "a19001": Measurement("a19001", {"Avg": 8.0}, "N"),
                "a34013": Measurement("a34013", {"Avg": float("nan") if i == 5 else 2.0}, "N"),
            }))  # fmt: skip
    return out


def run(engine: ComplianceEngine, rs: list[Reading]) -> list[object]:
    got: list[object] = []
    for r in rs:
        out = engine.on_reading(r)
        got += [h.to_json() for h in out.hourly] + [u.event.to_json() for u in out.events]
    return got


def persist(engine: ComplianceEngine, conn: sqlite3.Connection, hourly: list[object]) -> None:
    commit_state(conn, engine.take_changes(), engine.rates.take_changes(), [], [], 0.0)


def restored(conn: sqlite3.Connection, archive: PendingHourArchive | None = None) -> ComplianceEngine:
    e = ComplianceEngine(REG, archive=archive)
    stored = load_state(conn)
    for mn, raw in stored.outlets:
        state = json.loads(raw)
        with_open_hours(state, stored.subs.get(mn, []), stored.das.get(mn, []))
        e.restore_outlet(mn, state)
    restore_rate_state(conn, e.rates)  # (as ComplianceRuntime.open)
    return e


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 299), min_size=1, max_size=4, unique=True))
def test_restore_at_any_cut_points_gives_the_same_results(cuts: list[int]) -> None:
    rs = readings(150)
    reference = ComplianceEngine(REG)
    expected = run(reference, rs)
    conn = sqlite3.connect(":memory:")
    conn.executescript(STATE_SCHEMA)
    engine = ComplianceEngine(REG)
    got: list[object] = []
    prev = 0
    for cut in [*sorted(cuts), len(rs)]:
        part = run(engine, rs[prev:cut])
        got += part
        persist(engine, conn, part)
        engine = restored(conn)  # "crash" and restart from the database
        prev = cut
    assert got == expected
    assert [d.to_json() for d in engine.rates.outlet_days()] == [d.to_json() for d in reference.rates.outlet_days()]
    # sub-values of hours out of memory were deleted: only the open hour and the held ones (DEFAULT_HOLD) remain
    hours = {h for (h,) in conn.execute("SELECT DISTINCT last_hour FROM hour_log")}
    assert len(hours) <= 2 + DEFAULT_HOLD // timedelta(hours=1)


def test_state_of_the_per_value_layout_is_migrated_into_the_journal() -> None:
    """A state directory written before ``hour_log`` (one row per sub-value) restores the same open hour."""
    rs = readings(30)  # 07:50 to 08:19: the 08:00 hour is open
    reference = ComplianceEngine(REG)
    run(reference, rs)
    conn = sqlite3.connect(":memory:")
    conn.executescript(STATE_SCHEMA)
    conn.executescript(
        "CREATE TABLE hour_subs(mn TEXT, hour INTEGER, kind TEXT, code TEXT, sec INTEGER, v REAL, ok INTEGER);"
        "CREATE TABLE hour_das(mn TEXT, hour INTEGER, code TEXT, avg REAL, zs REAL, flag TEXT);"
    )
    engine = ComplianceEngine(REG)
    run(engine, rs)
    changes = engine.take_changes()
    for mn, (state, journal, _) in changes.items():
        conn.execute("INSERT INTO outlet_state VALUES (?,?,0)", (mn, json.dumps(state())))
        for e in journal:
            if e[0] == "s":
                v = None if e[5] != e[5] else e[5]
                conn.execute("INSERT INTO hour_subs VALUES (?,?,?,?,?,?,?)", (mn, *e[1:5], v, int(e[6])))
            else:
                conn.execute("INSERT INTO hour_das VALUES (?,?,?,?,?,?)", (mn, *e[1:]))
    conn.commit()
    e2 = restored(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "hour_subs" not in tables and "hour_das" not in tables
    tail = readings(90)[60:]  # closes the 08:00 hour in both engines
    assert run(e2, tail) == run(reference, tail) != []
    assert conn.execute("SELECT count(*) FROM hour_log").fetchone()[0] == 2


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(1, 299), max_size=4), block=st.integers(1, 90))
def test_restore_with_late_data_gives_the_same_results(cuts: list[int], block: int) -> None:
    """Readings arrive late (each block of ``block`` minutes reversed): held hours and their revisions survive
    a restart (event time, issue 12 item 1)."""
    rs = readings(150)
    late = [r for i in range(0, len(rs), 2 * block) for r in reversed(rs[i : i + 2 * block])]
    reference = ComplianceEngine(REG)
    expected = run(reference, late)
    conn = sqlite3.connect(":memory:")
    conn.executescript(STATE_SCHEMA)
    engine = ComplianceEngine(REG)
    got: list[object] = []
    prev = 0
    for cut in [*sorted(cuts), len(late)]:
        part = run(engine, late[prev:cut])
        got += part
        persist(engine, conn, part)
        engine = restored(conn)
        prev = cut
    assert got == expected
    assert engine.late_counts() == reference.late_counts()


def _live_step(engine: ComplianceEngine, archive: PendingHourArchive, conn: sqlite3.Connection, r: Reading) -> Any:
    """What the runtime does for a batch: bring back the archived hours it revises, then feed it."""
    items = [(r, REG.outlet(r.mn))]
    want = engine.archived_wanted(items)  # type: ignore[arg-type]
    if want:
        archive.loaded(read_archived(conn, archive.missing(want)))
    return engine.on_readings(items)  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.integers(1, 1199), max_size=4))
def test_an_archived_hour_revised_late_survives_restarts(cuts: list[int]) -> None:
    """Half of hour 07:00's minutes are back-filled 9 hours late (its sub-values are in the SQLite archive by
    then); restarts anywhere, also while the revised hour is back in memory, give the final records of a
    sorted replay, and nothing is left unrevised."""
    rs = readings(600)
    backfill = [r for r in rs if r.data_time < T0 + timedelta(minutes=40) and r.data_time.minute % 2]
    late = [r for r in rs if r not in backfill] + backfill
    reference = ComplianceEngine(REG)
    want: dict[tuple[str, str, str], object] = {}
    for r in rs:
        for h in reference.on_reading(r).hourly:
            want[(h.mn, h.pollutant, h.hour_start.isoformat())] = h.to_json()
    for h in reference.finish().hourly:
        want[(h.mn, h.pollutant, h.hour_start.isoformat())] = h.to_json()
    conn = sqlite3.connect(":memory:")
    conn.executescript(STATE_SCHEMA)

    def fresh() -> tuple[ComplianceEngine, PendingHourArchive]:
        a = PendingHourArchive()
        return restored(conn, a), a

    engine, archive = fresh()
    got: dict[tuple[str, str, str], object] = {}
    prev = 0
    for cut in [*sorted(c for c in cuts if c < len(late)), len(late)]:
        part = []
        for r in late[prev:cut]:
            part += [h.to_json() for h in _live_step(engine, archive, conn, r).hourly]
        for h in part:
            assert isinstance(h, dict)
            got[(h["mn"], h["pollutant"], h["hour_start"])] = h
        commit_state(conn, engine.take_changes(), None, [], [], 0.0, archived=archive.take())
        engine, archive = fresh()
        prev = cut
    for h in engine.finish().hourly:
        got[(h.mn, h.pollutant, h.hour_start.isoformat())] = h.to_json()
    assert got == want
    assert engine.late_counts()["late_unrevised"] == 0


# -- the state's JSON encoding (msgspec since issue 20's speed work): the same data as the standard encoder
# wrote, and state directories written by the standard encoder (NaN in the journal) still restore


def _non_finite(obj: Any, path: str = "") -> list[str]:
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite(v, f"{path}/{k}")]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in _non_finite(v, f"{path}/{i}")]
    return []


_VALUE = st.one_of(
    st.floats(-50, 500, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 0.0, 1e300]),
)


@st.composite
def _readings(draw: st.DrawFn) -> list[Reading]:
    out = []
    for _ in range(draw(st.integers(1, 40))):
        stream = draw(st.sampled_from([Stream.RTD, Stream.MIN, Stream.HOUR]))
        key = {Stream.RTD: "Rtd", Stream.MIN: "Avg", Stream.HOUR: "Avg"}[stream]
        t = T0 + timedelta(seconds=draw(st.integers(0, 3 * 3600)))
        if stream is Stream.HOUR:
            t = t.replace(minute=0, second=0)
        ms = {}
        for code in draw(st.lists(st.sampled_from(["a21026", "a19001", "a34013", "a21002", "a00000", "a01012"]))):
            vals = {key: draw(_VALUE), "Zs" + key: draw(_VALUE), "Min": draw(_VALUE), "Max": draw(_VALUE)}
            ms[code] = Measurement(code, vals, draw(st.sampled_from(["N", "M", "T", "D", None])))
        out.append(Reading(draw(st.sampled_from(["A", "B"])), stream, t, ms))
    return out


@settings(max_examples=60, deadline=None)
@given(_readings())
def test_engine_states_hold_only_finite_floats_and_encode_as_the_standard_encoder(rs: list[Reading]) -> None:
    """msgspec writes a non-finite float as ``null`` (``json`` wrote ``NaN``): the snapshots must hold none,
    whatever the readings (non-finite values, any flag, stream and order), and decode to what ``json`` gave."""
    engine = ComplianceEngine(REG)
    for r in rs:
        engine.on_reading(r)
    engine.on_clock(T0 + timedelta(hours=5))
    for mn, (state, journal, _) in engine.take_changes().items():
        s = state()
        assert _non_finite(s) == [], mn
        assert json.loads(encode_state(s)) == json.loads(json.dumps(s))
        full = engine._outlets[mn].snapshot()  # with the open hours (cems replay's checkpoints, moves)
        assert _non_finite(full) == []
        assert json.loads(encode_state(full)) == json.loads(json.dumps(full))
        # the journal keeps NaN for a flagged code sent without a number: written as null
        decoded = json.loads(encode_state(journal))
        assert [e[:5] for e in decoded] == [list(e[:5]) for e in json.loads(json.dumps(journal))]


def test_a_state_directory_written_by_the_standard_encoder_restores_the_same() -> None:
    """Rows written before msgspec (``json``: spaces, NaN in the journal) load and give the same results."""
    rs = readings(150)
    # a flagged code sent without a number: NaN in the journal
    rs.insert(10, Reading("A", Stream.MIN, T0 + timedelta(minutes=5), {"a34013": Measurement("a34013", {}, "D")}))
    reference = ComplianceEngine(REG)
    expected_tail = run(reference, rs)[len(run(ComplianceEngine(REG), rs[:60])) :]
    old = sqlite3.connect(":memory:")
    old.executescript(STATE_SCHEMA)
    engine = ComplianceEngine(REG)
    run(engine, rs[:60])
    nan_rows = 0
    for mn, (state, journal, _) in engine.take_changes().items():
        old.execute("INSERT INTO outlet_state VALUES (?,?,0)", (mn, json.dumps(state())))
        text = json.dumps(journal)
        nan_rows += "NaN" in text
        old.execute(
            "INSERT INTO hour_log(mn, last_hour, entries) VALUES (?,?,?)", (mn, max(e[1] for e in journal), text)
        )
    assert nan_rows > 0  # the old rows do hold NaN
    e2 = restored(old)
    assert run(e2, rs[60:]) == expected_tail != []
    # and the same cut written by the new encoder restores the same
    new = sqlite3.connect(":memory:")
    new.executescript(STATE_SCHEMA)
    engine = ComplianceEngine(REG)
    persist(engine, new, run(engine, rs[:60]))
    assert "NaN" not in "".join(e for (e,) in new.execute("SELECT entries FROM hour_log"))
    assert len(load_state(new).subs["A"]) == len(load_state(old).subs["A"])
    assert run(restored(new), rs[60:]) == expected_tail


_H0 = int(datetime(2026, 3, 1, tzinfo=BEIJING).timestamp())
_rate_row = st.tuples(
    st.sampled_from(["A", "B", "Z"]),  # (Z: not in the registry)
    st.sampled_from(["a21026", "a21002", "a34013", "a19001"]),  # (a19001: not an assessed factor)
    st.one_of(st.integers(0, 5), st.integers(0, 24 * 62)).map(lambda k: _H0 + k * 3600 + k % 2 * 1800),
    st.sampled_from([SOURCE_DAS, SOURCE_MINUTES, SOURCE_REALTIME, "other", "older"]),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(_rate_row, max_size=150), st.integers(1, 40))
@example(  # one outlet and factor's hours of two ranks, a chunk boundary between every row
    [
        ("A", "a21026", _H0 + k // 2 * 3600, (SOURCE_DAS, SOURCE_MINUTES)[k % 2], k % 3 > 0, k % 5 == 0)
        for k in range(9)
    ],
    1,
)
def test_the_rate_rows_migrated_in_chunks_give_the_counter_of_one_list(rows: list[Any], chunk: int) -> None:
    """A state of an earlier version (a row per hourly record in ``rate_records``) migrated a chunk at a time
    (``migrate_rate_records``) restores the counter the old start-up's single list of every stored row gave: the
    same counted hours (an outlet and factor's rows cut by a chunk boundary or not) and exceedances; its first and
    last hours are those of every row (outlets not in the registry too: their rows are kept)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(STATE_SCHEMA)
    conn.execute(RATE_RECORDS_SCHEMA)
    conn.executemany("INSERT OR REPLACE INTO rate_records VALUES (?,?,?,?,?,?)", rows)
    old, new = RateCounter(REG), RateCounter(REG)
    stored = list(conn.execute("SELECT mn, pollutant, hour, source, valid, exceeds FROM rate_records"))
    for row in stored:  # (the old start-up: add of each stored row's record)
        old.add(rate_record(*row))
    assert migrate_rate_records(conn, chunk) == len(set(r[:4] for r in rows))
    restore_rate_state(conn, new)
    assert new.snapshot()["seen"] == old.snapshot()["seen"] and new._exceed == old._exceed
    hours = [int(r[2]) - int(r[2]) % 3600 for r in stored]
    assert (new._min_hour, new._max_hour) == ((min(hours), max(hours)) if hours else (None, None))


def test_the_rate_rows_are_read_in_key_order_without_a_sort() -> None:
    """The restore's ``ORDER BY`` is the WITHOUT ROWID table's key order: SQLite walks it, no sort of the rows
    (at a month's end ≈ 450 M rows at 100 000 outlets, issue 20)."""
    conn = sqlite3.connect(":memory:")
    conn.executescript(STATE_SCHEMA)
    conn.execute(RATE_RECORDS_SCHEMA)
    plan = [str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + RATE_ROWS_SQL)]
    assert plan and all("TEMP B-TREE" not in d for d in plan), plan
    assert any("rate_records" in d for d in plan), plan
    plan = [str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + RATE_RUNS_SQL)]
    assert plan and all("TEMP B-TREE" not in d for d in plan), plan
    assert any("rate_runs" in d for d in plan), plan
