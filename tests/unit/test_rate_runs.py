"""The transmission counter stored as it is in memory (issue 20): a value per outlet, factor and Beijing month
(``rate_runs``), the exceedance slots (``rate_exceed``) and the bounds (``rate_bounds``), written from
``RateCounter.take_changes`` and restored by ``restore_rate_state``; a state of an earlier version (a row per
hourly record in ``rate_records``) is migrated at start."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules.hourly import SOURCE_DAS, SOURCE_MINUTES, SOURCE_REALTIME
from cems.rules.transmission import RateCounter, _joined, _value_months, month_value
from cems.service.compliance._state import (
    RATE_RECORDS_SCHEMA,
    STATE_SCHEMA,
    migrate_rate_records,
    prune_rate_state,
    rate_record,
    restore_rate_state,
    write_rate_changes,
)
from cems.service.outbox import transaction

REG = parse_registry(
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="A"\nname="a"\nprofile="coal_power_ultra_low"\nrtd_interval_s=60\n'
    '[[enterprise.outlet]]\nmn="B"\nname="b"\nprofile="cement_kiln"\nrtd_interval_s=60\n'
)
#: Beijing midnight of 1 March: the hours run into April and May (month boundaries at Beijing, not UTC, midnight).
_H0 = int(datetime(2026, 3, 1, tzinfo=BEIJING).timestamp())
_record = st.tuples(
    st.sampled_from(["A", "B", "Z"]),  # (Z: not in the registry)
    st.sampled_from(["a21026", "a21002", "a34013", "a19001"]),  # (a19001: not an assessed factor)
    st.one_of(st.integers(-3, 3), st.integers(0, 24 * 70), st.integers(24 * 31 - 3, 24 * 31 + 3)).map(
        lambda k: _H0 + k * 3600
    ),
    st.sampled_from([SOURCE_DAS, SOURCE_MINUTES, SOURCE_REALTIME, "other"]),
    st.booleans(),
    st.booleans(),
)


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)  # (as StateDB's: transactions are explicit)
    conn.executescript(STATE_SCHEMA)
    return conn


def _state(rc: RateCounter) -> tuple[object, ...]:
    return (rc.snapshot(), rc._min_hour, rc._max_hour, rc.unknown)


def _hours(rc: RateCounter) -> dict[tuple[str, str], list[list[int]]]:
    """The counted hours (a factor whose hours were all pruned has none)."""
    return {(mn, f): rows for mn, by in rc.snapshot()["seen"].items() for f, rows in by.items() if rows}


def _commit(conn: sqlite3.Connection, rc: RateCounter) -> None:
    with transaction(conn):
        write_rate_changes(conn, rc.take_changes())


@settings(max_examples=150, deadline=None)
@given(st.lists(_record, max_size=120), st.lists(st.integers(0, 120), max_size=5), st.integers(1, 7))
@example(  # one outlet and factor over a Beijing month's end, of two ranks, a commit after every record
    [("A", "a21026", _H0 + (24 * 31 - 2 + k // 2) * 3600, (SOURCE_MINUTES, SOURCE_DAS)[k % 2], k % 3 > 0, k == 3)
     for k in range(8)],
    list(range(8)),
    1,
)  # fmt: skip
def test_the_counter_restored_from_its_stored_changes_is_the_counter(
    records: list[Any], commits: list[int], chunk: int
) -> None:
    """Whatever the records and wherever the commits fall, the counter restored from the rows the commits wrote
    (a chunk of ``chunk`` month values at a time) is the counter that counted them: hours, codes, exceedance
    slots, first and last hours and unknown records."""
    conn = _db()
    rc = RateCounter(REG)
    for k, row in enumerate(records):
        if k in commits:
            _commit(conn, rc)
        rc.add(rate_record(*row))
    _commit(conn, rc)
    assert not rc.take_changes()  # (nothing changed since)
    back = RateCounter(REG)
    restore_rate_state(conn, back, chunk)
    assert _state(back) == _state(rc)


@settings(max_examples=60, deadline=None)
@given(st.lists(_record, min_size=1, max_size=120), st.integers(0, 2))
def test_a_pruned_counter_and_its_pruned_rows_restore_the_same(records: list[Any], months: int) -> None:
    """The live service keeps the month of the newest hour and the one before: the counter and the stored rows
    are pruned at a month's start; the restored counter's counted hours and exceedances are the pruned ones."""
    conn = _db()
    rc = RateCounter(REG)
    for row in records:
        rc.add(rate_record(*row))
    _commit(conn, rc)
    cut = datetime(2026, 3 + months, 1, tzinfo=BEIJING)
    rc.prune(cut)
    prune_rate_state(conn, int(cut.timestamp()))
    _commit(conn, rc)
    back = RateCounter(REG)
    restore_rate_state(conn, back)
    assert _hours(back) == _hours(rc)
    assert back._exceed == rc._exceed
    assert all(m >= 202603 + months for (m,) in conn.execute("SELECT month FROM rate_runs"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-30, 24 * 70), st.integers(0, 5)), min_size=1, max_size=80))
def test_a_value_cut_into_months_joins_back_whole(codes: list[tuple[int, int]]) -> None:
    """``month_value`` cuts a value at Beijing month boundaries (no hour lost or moved); ``_joined`` of the months
    is the value."""
    from cems.rules.transmission import _items, _set_many

    r = _set_many(b"", [(_H0 + k * 3600, c) for k, c in codes])
    months = _value_months(r)
    parts = [month_value(r, m) for m in months]
    assert parts[0] and parts[-1]  # (a value's first and last hours have a record; a month between may have none)
    whole = _items(r)
    assert sorted(h for p in parts for h, _ in _items(p)) == [h for h, _ in whole]
    for m, p in zip(months, parts, strict=True):
        for h, _ in _items(p):
            d = datetime.fromtimestamp(h, BEIJING)
            assert d.year * 100 + d.month == m
    assert _items(_joined(parts)) == whole


def test_only_what_changed_is_taken() -> None:
    """A record that changes nothing (the same code again, a lower rank) is not taken again; one that does is,
    for its month only."""
    rc = RateCounter(REG)
    h = _H0 + 24 * 31 * 3600  # 1 April
    rc.add(rate_record("A", "a21026", _H0, SOURCE_DAS, True, False))
    rc.add(rate_record("A", "a21026", h, SOURCE_DAS, True, True))
    first = rc.take_changes()
    assert [(mn, f, m) for mn, f, m, _ in first.runs] == [("A", "a21026", 202603), ("A", "a21026", 202604)]
    assert [e[:3] for e in first.exceed] == [("A", "a21026", h)] and first.bounds == (_H0, h, 0)
    rc.add(rate_record("A", "a21026", h, SOURCE_DAS, True, True))  # the same again
    rc.add(rate_record("A", "a21026", h, SOURCE_MINUTES, False, False))  # a lower rank: ignored
    assert not rc.take_changes()
    rc.add(rate_record("A", "a21026", h, SOURCE_DAS, False, False))  # a revision of the hour
    again = rc.take_changes()
    assert [(mn, f, m) for mn, f, m, _ in again.runs] == [("A", "a21026", 202604)]
    assert again.exceed == [("A", "a21026", h, 4)] and again.bounds is None
    rc.add(rate_record("Z", "a21026", h, SOURCE_DAS, True, False))
    assert rc.take_changes().bounds == (_H0, h, 1)


def _rows(n: int) -> list[tuple[Any, ...]]:
    srcs = (SOURCE_DAS, SOURCE_MINUTES)
    return [
        (mn, p, _H0 + k * 3600, srcs[k % 2], k % 7 > 0, k % 11 == 0)
        for mn in ("A", "B", "Z")
        for p in ("a21026", "a21002", "a19001")
        for k in range(n)
    ]


def _counted(rc: RateCounter) -> tuple[object, ...]:
    """The counted hours and exceedances (what a migration must keep; its bounds may be wider and it counts no
    unknown records: the rows of outlets not in the registry are kept, not counted)."""
    return (_hours(rc), rc._exceed)


def _add_each(rc: RateCounter, rows: list[tuple[Any, ...]]) -> None:
    """What the start-up of the earlier version counted of its stored rows, in the table's order."""
    for row in rows:
        rc.add(rate_record(*row))


def _legacy(rows: list[tuple[Any, ...]]) -> sqlite3.Connection:
    conn = _db()
    conn.execute(RATE_RECORDS_SCHEMA)
    conn.executemany("INSERT OR REPLACE INTO rate_records VALUES (?,?,?,?,?,?)", rows)
    return conn


def test_a_state_of_an_earlier_version_is_migrated_once() -> None:
    """``rate_records`` rows (a row per hourly record) become each outlet·pollutant's month values and exceedance
    slots by the rank rule, the old table dropped, in one transaction: the restored counter is the one the old
    start-up gave (``add`` of every row's record); a second migration does nothing; version-1 rows imported later join
    the stored counter."""
    rows = _rows(24 * 40)
    conn = _legacy(rows)
    want = RateCounter(REG)
    _add_each(want, rows)
    assert migrate_rate_records(conn, chunk=7) == len(rows)
    got = RateCounter(REG)
    restore_rate_state(conn, got)
    assert _counted(got) == _counted(want) and (got._min_hour, got._max_hour) == (want._min_hour, want._max_hour)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'rate_records'").fetchone() is None
    # outlets A, B, Z (kept: not counted until the registry lists it) × a21026, a21002, a19001 × March, April
    assert conn.execute("SELECT count(*) FROM rate_runs").fetchone()[0] == 3 * 3 * 2
    assert migrate_rate_records(conn) == 0
    # version-1 rows of one more hour beside the stored counter: both kept, by the rank rule
    conn.execute(RATE_RECORDS_SCHEMA)
    late = [
        ("B", "a21026", _H0 + 24 * 45 * 3600, SOURCE_DAS, True, True),
        ("A", "a21026", _H0, SOURCE_REALTIME, False, True),  # (a lower rank than the stored DAS hour: ignored)
    ]
    conn.executemany("INSERT INTO rate_records VALUES (?,?,?,?,?,?)", late)
    assert migrate_rate_records(conn) == 2
    _add_each(want, late)
    again = RateCounter(REG)
    restore_rate_state(conn, again)
    assert _counted(again) == _counted(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(_record, max_size=150), st.integers(1, 40))
def test_the_migration_gives_the_counter_the_old_start_up_gave(rows: list[Any], chunk: int) -> None:
    """Whatever the rows (several sources of an hour, hours not on the hour, outlets not in the registry,
    pollutants not assessed) and the chunk they are read in, the migrated state restores the counted hours and
    exceedances that ``add`` of every row's record (the old start-up) counted."""
    conn = _legacy(rows)
    want = RateCounter(REG)
    _add_each(want, list(conn.execute("SELECT mn, pollutant, hour, source, valid, exceeds FROM rate_records")))
    assert migrate_rate_records(conn, chunk) == len({r[:4] for r in rows})
    got = RateCounter(REG)
    restore_rate_state(conn, got)
    assert _counted(got) == _counted(want)


def test_the_rows_of_an_outlet_not_yet_in_the_registry_survive_the_migration() -> None:
    """An outlet's rows imported before the registry lists it are kept and counted once it does (the migration
    needs no registry)."""
    conn = _legacy([("B", "a21026", _H0, SOURCE_DAS, True, False), ("A", "a21026", _H0, SOURCE_DAS, True, False)])
    only_a = parse_registry(
        '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
        '[[enterprise.outlet]]\nmn="A"\nname="a"\nprofile="coal_power_ultra_low"\nrtd_interval_s=60\n'
    )
    migrate_rate_records(conn)
    first = RateCounter(only_a)
    restore_rate_state(conn, first)
    assert set(first._seen) == {"A"}
    later = RateCounter(REG)
    restore_rate_state(conn, later)
    assert set(later._seen) == {"A", "B"}


def test_a_prune_moves_the_stored_first_hour() -> None:
    """The counter's first hour after a prune is stored with the next commit: a restart restores it."""
    conn = _db()
    rc = RateCounter(REG)
    for k in (0, 24 * 31, 24 * 62):
        rc.add(rate_record("A", "a21026", _H0 + k * 3600, SOURCE_DAS, True, False))
    _commit(conn, rc)
    cut = datetime(2026, 4, 1, tzinfo=BEIJING)
    rc.prune(cut)
    prune_rate_state(conn, int(cut.timestamp()))
    _commit(conn, rc)
    back = RateCounter(REG)
    restore_rate_state(conn, back)
    assert back._min_hour == rc._min_hour == int(cut.timestamp()) and back._max_hour == rc._max_hour


def test_an_export_of_the_earlier_version_is_imported_and_migrated(tmp_path: Any) -> None:
    """``cems state import`` of a ``cems-outlet-state/1`` file: its rate rows go to ``rate_records`` and are
    migrated at the next start; a version-2 export carries ``rate_runs`` and ``rate_exceed``."""
    from cems.service.compliance._transfer import FORMAT, export_outlets, import_outlets, stopped_state

    h = _H0 + 5 * 3600
    doc = {
        "format": "cems-outlet-state/1",
        "outlets": ["A"],
        "tables": {
            "outlet_state": [["A", "{}", 0.0]],
            "rate_records": [["A", "a21026", h, SOURCE_DAS, 1, 1], ["A", "a21026", h, SOURCE_MINUTES, 0, 0]],
        },
    }
    with stopped_state(tmp_path / "s") as conn:
        assert import_outlets(conn, doc)["rate_records"] == 2
        assert migrate_rate_records(conn) == 0  # (migrated by the import)
        rc = RateCounter(REG)
        restore_rate_state(conn, rc)
        assert rc.snapshot()["seen"] == {"A": {"a21026": [[h, 5]]}}  # (DAS, valid: rank 2 × 2 + 1)
        out = export_outlets(conn, ["A"])
    assert out["format"] == FORMAT and "rate_records" not in out["tables"]
    assert [r[:3] for r in out["tables"]["rate_runs"]] == [["A", "a21026", 202603]]
    assert out["tables"]["rate_exceed"] == [["A", "a21026", h, 5]]
    with stopped_state(tmp_path / "t") as conn:
        import_outlets(conn, out)
        back = RateCounter(REG)
        restore_rate_state(conn, back)
        assert back.snapshot()["seen"] == rc.snapshot()["seen"] and back._exceed == rc._exceed


def test_an_export_from_a_state_of_the_earlier_version_carries_its_counted_hours(tmp_path: Any) -> None:
    """``cems state export`` (or ``adopt``) on a state directory of the earlier version that no ingester has
    started since the upgrade: the rows are migrated when the state is opened, so the export carries them and
    ``--remove`` leaves none behind."""
    from cems.service.compliance._transfer import export_outlets, stopped_state

    h = _H0 + 7 * 3600
    with stopped_state(tmp_path / "old") as conn:
        conn.execute("INSERT INTO outlet_state(mn, state, updated_ts) VALUES ('A', '{}', 0)")
        conn.execute(RATE_RECORDS_SCHEMA)
        conn.execute("INSERT INTO rate_records VALUES ('A', 'a21026', ?, ?, 1, 0)", (h, SOURCE_DAS))
    with stopped_state(tmp_path / "old") as conn:
        doc = export_outlets(conn, ["A"], remove=True)
        assert conn.execute("SELECT count(*) FROM rate_runs").fetchone()[0] == 0
    assert [r[:3] for r in doc["tables"]["rate_runs"]] == [["A", "a21026", 202603]]
