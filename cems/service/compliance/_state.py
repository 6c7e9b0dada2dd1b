"""The ingester's durable compliance state in SQLite: schema, the events table and the functions that read
and commit engine snapshots, the rate counter, acknowledgements and escalations (one transaction per commit).

Plain functions over a ``sqlite3.Connection``; the worker thread of :class:`ComplianceRuntime` calls them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec

from cems.hour_archive import ARCHIVE_SCHEMA, prune_archived, write_archived
from cems.model import BEIJING
from cems.protocol.mark import MarkRecord
from cems.rules.events import CLOSED, HOURLY_EXCEEDANCE, UPDATED, Event
from cems.rules.hourly import HourlyRecord
from cems.rules.transmission import RateChanges, RateCounter, month_values, rank_rows, value_items
from cems.service.outbox import (
    OutboxItem,
    OutboxRow,
    enqueue,
    enqueue_due,
    transaction,
)
from cems.sqlite_rows import write_rows

ACKNOWLEDGED: Final = "acknowledged"
ESCALATED: Final = "escalated"
#: Topic suffix (in place of the event type) of escalation alerts.
ESCALATION_TOPIC: Final = "ack_escalation"
DB_FILE: Final = "compliance.sqlite3"

STATE_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS outlet_state(
    mn TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events(
    event_id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    mn TEXT NOT NULL,
    enterprise TEXT NOT NULL,
    district TEXT NOT NULL,
    status TEXT NOT NULL,
    json TEXT NOT NULL,
    alerted_status TEXT NOT NULL,
    alerted_key TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    opened_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    acked_by TEXT,
    acked_at TEXT,
    escalated_at TEXT,
    ack_note TEXT
);
CREATE INDEX IF NOT EXISTS events_unacked ON events(type, acked_at, escalated_at);
-- incremental engine state: what OutletHourly.take_journal gave since the last commit, one row per outlet
-- and commit (a JSON list of sub-values, in feed order: replayed in id order, the later value of the same
-- second wins), deleted once every hour it touches has closed; and the hourly records that the
-- transmission-rate counter has counted
CREATE TABLE IF NOT EXISTS hour_log(
    id INTEGER PRIMARY KEY, mn TEXT NOT NULL, last_hour INTEGER NOT NULL, entries TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hour_log_mn ON hour_log(mn, last_hour);
-- marks, stop declarations, repairs and withdrawals (issue 14): append-only, never updated nor deleted
CREATE TABLE IF NOT EXISTS marks(
    record_id TEXT NOT NULL, mn TEXT NOT NULL, kind TEXT NOT NULL, received_ts REAL NOT NULL, json TEXT NOT NULL,
    PRIMARY KEY(mn, record_id)
);
-- the grid engine (cems.rules.grid): per grid sensor its state ('{id}'), the readings of each held hour
-- ('{id}<TAB>{hour}') and its emitted hours ('{id}<TAB>hours'); the engine's own state under ''
CREATE TABLE IF NOT EXISTS grid_state(
    sensor TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_ts REAL NOT NULL
);
-- emitted hours out of memory, until their repair deadline (cems.hour_archive)
"""
    + ARCHIVE_SCHEMA
    + """
-- the transmission counter (cems.rules.transmission.RateCounter) as it is in memory (issue 20): per outlet,
-- assessed factor and Beijing month (YYYYMM) its counted hours, run-length encoded (transmission.month_value:
-- an hour's code is rank * 2 + valid, DAS 2061 over minute data over the rest); the exceedance slots (every
-- hour that ever had an exceeding record: a revision may make it compliant again); the first and last hour
-- counted and the records of unknown outlets ('min_hour', 'max_hour', 'unknown').  Replaced rate_records, a row
-- per hourly record (≈ 440 MB at 2 000 outlets at a month's end; migrated by migrate_rate_records)
CREATE TABLE IF NOT EXISTS rate_runs(
    mn TEXT NOT NULL, pollutant TEXT NOT NULL, month INTEGER NOT NULL, runs BLOB NOT NULL,
    PRIMARY KEY(mn, pollutant, month)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_exceed(
    mn TEXT NOT NULL, pollutant TEXT NOT NULL, hour INTEGER NOT NULL, code INTEGER NOT NULL,
    PRIMARY KEY(mn, pollutant, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate_bounds(
    name TEXT PRIMARY KEY, value INTEGER
) WITHOUT ROWID;
-- township rankings due (cems.service.compliance._gridrank): written with the grid_daily days that make them
-- due, deleted once ranked (or given up), so that a restart ranks what a stop left
CREATE TABLE IF NOT EXISTS grid_rank_due(
    kind TEXT NOT NULL, first TEXT NOT NULL, last TEXT NOT NULL,
    PRIMARY KEY(kind, first)
) WITHOUT ROWID;
"""
)


# ------------------------------------------------------------------------------------------------ events table


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    type: str
    mn: str
    enterprise: str
    district: str
    status: str
    json: dict[str, Any]
    alerted_status: str
    alerted_key: str
    opened_at: str
    opened_ts: float
    acked_by: str | None = None
    acked_at: str | None = None
    escalated_at: str | None = None
    #: The duty officer's note with the acknowledgement (处理意见).
    ack_note: str | None = None

    def ack_fields(self) -> dict[str, str | None]:
        fields = {
            "opened_at": self.opened_at,
            "acked_by": self.acked_by,
            "acked_at": self.acked_at,
            "escalated_at": self.escalated_at,
        }
        if self.ack_note is not None:
            fields["ack_note"] = self.ack_note
        return fields

    def event(self) -> Event:
        return Event.from_json(self.json)


_EVENT_COLS: Final = (
    "event_id, type, mn, enterprise, district, status, json, alerted_status, alerted_key, opened_at, opened_ts, "
    "acked_by, acked_at, escalated_at"
)
_EVENT_READ_COLS: Final = _EVENT_COLS + ", ack_note"
#: Event rows, inserted or updated (:func:`_upsert_events`, multi-row statements).
_UPSERT_EVENTS: Final = f"""INSERT INTO events({_EVENT_COLS}, updated_ts) VALUES {{rows}}
    ON CONFLICT(event_id) DO UPDATE SET status=excluded.status, json=excluded.json,
      alerted_status=excluded.alerted_status, alerted_key=excluded.alerted_key, updated_ts=excluded.updated_ts"""


def _row(t: Sequence[Any]) -> EventRow:
    return EventRow(
        event_id=t[0],
        type=t[1],
        mn=t[2],
        enterprise=t[3],
        district=t[4],
        status=t[5],
        json=json.loads(t[6]),
        alerted_status=t[7],
        alerted_key=t[8],
        opened_at=t[9],
        opened_ts=float(t[10]),
        acked_by=t[11],
        acked_at=t[12],
        escalated_at=t[13],
        ack_note=t[14] if len(t) > 14 else None,
    )


def load_events(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, EventRow]:
    out: dict[str, EventRow] = {}
    idl = list(ids)
    for i in range(0, len(idl), 500):
        chunk = idl[i : i + 500]
        q = f"SELECT {_EVENT_READ_COLS} FROM events WHERE event_id IN ({','.join('?' * len(chunk))})"
        for t in conn.execute(q, chunk):
            r = _row(t)
            out[r.event_id] = r
    return out


def all_events(conn: sqlite3.Connection) -> list[EventRow]:
    return [_row(t) for t in conn.execute(f"SELECT {_EVENT_READ_COLS} FROM events ORDER BY opened_ts, event_id")]


def transition_key(kind: str, ev_json: dict[str, Any]) -> str:
    """What makes an update a new transition: opened/closed once; each distinct (hours, peak) update; and each
    distinct late close (end, hours, peak): late data that extend, or move the peak of, an event already closed
    revise it (issue 12 follow-up), so the revision is stored and alerted once, not taken for a redelivery."""
    if kind == UPDATED:
        return f"{UPDATED}:{ev_json.get('hours')}:{ev_json.get('peak')}"
    if kind == CLOSED and ev_json.get("late"):
        return f"{CLOSED}:late:{ev_json.get('end')}:{ev_json.get('hours')}:{ev_json.get('peak')}"
    return kind


def alert_id(event_id: str, key: str) -> str:
    """Stable id of one alert (event + transition): what receivers deduplicate on."""
    return hashlib.sha1(f"{event_id}|{key}".encode()).hexdigest()[:16]


@dataclass
class ComplianceStats:
    hourly_records: int = 0
    event_updates: int = 0
    alerts: int = 0
    duplicates_suppressed: int = 0
    acks: int = 0
    escalations: int = 0
    clock_ticks: int = 0
    #: clock ticks that closed nothing because a backlog waited to be judged (``clock_hold_max_s``)
    clock_held: int = 0
    rate_points: int = 0
    #: readings merged into an hour already emitted (the hour was revised; issue 12 item 1)
    late_readings: int = 0
    #: readings for an emitted hour no longer held in memory (stored, not merged; docs/events.md)
    late_unrevised: int = 0
    #: readings after their hour's repair deadline (stored; final figures do not move)
    late_beyond_window: int = 0
    #: readings on which the rules raised an unexpected error (stored, acknowledged, not judged; logged)
    rules_errors: int = 0
    #: marks, stop declarations, repairs and withdrawals stored (issue 14)
    marks: int = 0
    #: grid hours written (``grid_hourly``, first emitted or revised) and grid days (``grid_daily``)
    grid_hourly_records: int = 0
    grid_daily_records: int = 0
    #: live township ranking (:mod:`cems.service.compliance._gridrank`): periods ranked and written, their
    #: ``grid_rank`` points, failed attempts (logged, retried) and periods given up after the last attempt
    grid_rankings: int = 0
    grid_rank_points: int = 0
    grid_rank_errors: int = 0
    grid_rank_abandoned: int = 0
    #: commands about another shard's event or outlet, left to their owner (``cems run --shard``; issue 20)
    other_shard_commands: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------- worker functions


@dataclass
class Stored:
    outlets: list[tuple[str, str]]
    subs: dict[str, list[tuple[Any, ...]]]
    das: dict[str, list[tuple[Any, ...]]]
    unacked: dict[str, float]


def load_state(conn: sqlite3.Connection) -> Stored:
    _migrate_hour_rows(conn)
    _migrate_ack_note(conn)
    outlets = [(str(mn), str(s)) for mn, s in conn.execute("SELECT mn, state FROM outlet_state")]
    subs: dict[str, list[tuple[Any, ...]]] = {}
    das: dict[str, list[tuple[Any, ...]]] = {}
    for mn, entries in conn.execute("SELECT mn, entries FROM hour_log ORDER BY id"):
        s_rows = subs.setdefault(mn, [])
        d_rows = das.setdefault(mn, [])
        for e in json.loads(entries):
            if e[0] == "s":  # ["s", hour, kind, code, sec, v, ok]; v: NaN (written before msgspec) or null
                s_rows.append((e[1], e[2], e[3], e[4], None if e[5] != e[5] else e[5], e[6]))
            elif e[0] == "d":  # ["d", hour, code, avg, zs, flag]
                d_rows.append(tuple(e[1:]))
            else:  # ["x", hour]: the hour came back from the archive; its whole content follows
                h = e[1]
                s_rows[:] = [r for r in s_rows if r[0] != h]
                d_rows[:] = [r for r in d_rows if r[0] != h]
    unacked = {
        str(eid): float(ts)
        for eid, ts in conn.execute(
            "SELECT event_id, opened_ts FROM events WHERE type = ? AND acked_at IS NULL AND escalated_at IS NULL",
            (HOURLY_EXCEEDANCE,),
        )
    }
    return Stored(outlets, subs, das, unacked)


def write_rate_changes(conn: sqlite3.Connection, changes: RateChanges) -> None:
    """Write a :meth:`RateCounter.take_changes` (inside the caller's transaction): each changed month's value (an
    empty one deletes its row), the exceedance slots and the bounds."""
    put: list[tuple[str, str, int, bytes]] = []
    gone: list[tuple[str, str, int]] = []
    for mn, f, month, value in changes.month_rows():
        if value:
            put.append((mn, f, month, value))
        else:
            gone.append((mn, f, month))
    if put:
        write_rows(conn, "INSERT OR REPLACE INTO rate_runs(mn, pollutant, month, runs) VALUES {rows}", put, 4)
    if gone:
        conn.executemany("DELETE FROM rate_runs WHERE mn = ? AND pollutant = ? AND month = ?", gone)
    if changes.exceed:
        write_rows(
            conn,
            "INSERT OR REPLACE INTO rate_exceed(mn, pollutant, hour, code) VALUES {rows}",
            (e for e in changes.exceed if e[3] is not None),
            4,
        )
        conn.executemany(
            "DELETE FROM rate_exceed WHERE mn = ? AND pollutant = ? AND hour = ?",
            [e[:3] for e in changes.exceed if e[3] is None],
        )
    if changes.bounds is not None:
        lo, hi, unknown = changes.bounds
        conn.executemany(
            "INSERT OR REPLACE INTO rate_bounds(name, value) VALUES (?,?)",
            [("min_hour", lo), ("max_hour", hi), ("unknown", unknown)],
        )


#: The stored month values in the table's key order (the WITHOUT ROWID table's own: no sort).
RATE_RUNS_SQL: Final = "SELECT mn, pollutant, month, runs FROM rate_runs ORDER BY mn, pollutant, month"
#: Month values per :func:`restore_rate_state` chunk.
RATE_RUNS_CHUNK: Final = 16_384


def restore_rate_state(conn: sqlite3.Connection, rates: RateCounter, chunk: int = RATE_RUNS_CHUNK) -> int:
    """Load the stored counter (``rate_runs``, ``rate_exceed``, ``rate_bounds``) into ``rates`` (a new one), in the
    calling (database) thread, ``chunk`` rows at a time in the table's key order (an outlet and factor's months
    together; one falling in two chunks is carried over).  Returns the month values read."""
    n = 0
    carry: list[tuple[str, str, int, bytes]] = []
    cur = conn.execute(RATE_RUNS_SQL)
    try:
        while rows := cur.fetchmany(chunk):
            n += len(rows)
            rows = carry + rows
            last = rows[-1][:2]
            k = len(rows)
            while k and rows[k - 1][:2] == last:
                k -= 1
            carry = rows[k:]
            rates.restore_runs(rows[:k])
    finally:
        cur.close()
    rates.restore_runs(carry)
    rates.restore_exceed(conn.execute("SELECT mn, pollutant, hour, code FROM rate_exceed"))
    bounds = dict(conn.execute("SELECT name, value FROM rate_bounds"))
    rates.restore_bounds(bounds.get("min_hour"), bounds.get("max_hour"), bounds.get("unknown") or 0)
    return n


#: The table of a state before ``rate_runs``: a row per hourly record (read by :func:`migrate_rate_records`).
RATE_RECORDS_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS rate_records(
    mn TEXT NOT NULL, pollutant TEXT NOT NULL, hour INTEGER NOT NULL, source TEXT NOT NULL,
    valid INTEGER NOT NULL, exceeds INTEGER NOT NULL,
    PRIMARY KEY(mn, pollutant, hour, source)
) WITHOUT ROWID"""
#: The stored rate rows of a state before ``rate_runs`` (:func:`migrate_rate_records`) in the table's key order
#: (mn, pollutant, hour, source: the WITHOUT ROWID table's own order, no sort; tests/unit/test_state_persistence.py),
#: each outlet and factor's rows together.
RATE_ROWS_SQL: Final = (
    "SELECT mn, pollutant, hour, source, valid, exceeds FROM rate_records ORDER BY mn, pollutant, hour, source"
)
#: Rows per read of the migration (:func:`migrate_rate_records`): a few MB of row tuples at most, whatever the
#: table holds (at a month's end ≈ 446 M rows at 100 000 outlets).
RATE_ROWS_CHUNK: Final = 16_384


def migrate_rate_records(conn: sqlite3.Connection, chunk: int = RATE_ROWS_CHUNK) -> int:
    """A state written before ``rate_runs`` keeps a row per hourly record in ``rate_records`` (so does a
    ``cems-outlet-state/1`` export imported): turn each outlet·pollutant's rows into its month values and
    exceedance slots by the counter's rank rule (:func:`~cems.rules.transmission.rank_rows`, merged with any it
    already has here), widen the stored first and last hour, and drop the old table, in one transaction (a crash
    leaves the old table: done again next time; the rank rule gives the same values again).  It needs no registry:
    the rows of every outlet and pollutant are kept (the restore counts those of the registry's outlets and
    assessed factors; an outlet added to the registry later is counted then).  Run at start
    (``ComplianceRuntime.open``) and on a stopped state (``cems state export/import/adopt``).  Returns the rows
    migrated (0: nothing to do)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rate_records'").fetchone() is None:
        return 0
    n = 0
    lo: int | None = None
    hi: int | None = None
    with transaction(conn):
        cur = conn.execute(RATE_ROWS_SQL)
        rows = itertools.chain.from_iterable(iter(lambda: cur.fetchmany(chunk), []))
        for (mn, p), group in itertools.groupby(rows, key=operator.itemgetter(0, 1)):
            codes: dict[int, int] = {}
            for (runs,) in conn.execute(
                "SELECT runs FROM rate_runs WHERE mn = ? AND pollutant = ? ORDER BY month", (mn, p)
            ):
                codes.update(value_items(runs))
            exceed = dict(conn.execute("SELECT hour, code FROM rate_exceed WHERE mn = ? AND pollutant = ?", (mn, p)))
            mine = [(r[2], r[3], r[4], r[5]) for r in group]
            got = rank_rows(mine, codes, exceed)
            if got is None:  # pragma: no cover - a group has a row
                continue
            n += len(mine)
            conn.executemany(
                "INSERT OR REPLACE INTO rate_runs(mn, pollutant, month, runs) VALUES (?,?,?,?)",
                [(mn, p, month, value) for month, value in month_values(codes)],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO rate_exceed(mn, pollutant, hour, code) VALUES (?,?,?,?)",
                [(mn, p, h, code) for h, code in exceed.items()],
            )
            lo = got[0] if lo is None else min(lo, got[0])
            hi = got[1] if hi is None else max(hi, got[1])
        cur.close()
        if lo is not None and hi is not None:
            bounds = dict(conn.execute("SELECT name, value FROM rate_bounds"))
            old_lo, old_hi = bounds.get("min_hour"), bounds.get("max_hour")
            conn.executemany(
                "INSERT OR REPLACE INTO rate_bounds(name, value) VALUES (?,?)",
                [
                    ("min_hour", lo if old_lo is None else min(lo, old_lo)),
                    ("max_hour", hi if old_hi is None else max(hi, old_hi)),
                    ("unknown", bounds.get("unknown") or 0),
                ],
            )
        conn.execute("DROP TABLE rate_records")
    return n


#: Grid state: compact, and without the circular-reference check (plain data; ≈ 20 % faster).
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"), check_circular=False)
#: Engine state and journal rows, encoded for every changed outlet at every commit: msgspec, ≈ 5× faster than
#: the standard encoder (docs/benchmark.md, "Issue 20 speed").  Its JSON is the same data (compact, shortest
#: round-trip floats, int keys as strings), read back with :func:`json.loads` as before; it writes a
#: non-finite float as ``null``, where ``json`` wrote ``NaN``: the engine's snapshots hold none
#: (tests/unit/test_state_persistence.py), and the journal's NaN (a flagged code sent without a number) is
#: restored from ``null`` the same (:func:`load_state`).
_STATE_JSON: Final = msgspec.json.Encoder()


def encode_state(obj: Any) -> str:
    """An engine state or journal as the JSON text stored in SQLite."""
    return _STATE_JSON.encode(obj).decode()


def _migrate_ack_note(conn: sqlite3.Connection) -> None:
    """State written before acknowledgements carried a note has no ``ack_note`` column: add it."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    if "ack_note" not in columns:
        with transaction(conn):
            conn.execute("ALTER TABLE events ADD COLUMN ack_note TEXT")


def _migrate_hour_rows(conn: sqlite3.Connection) -> None:
    """State directories of cems 0.1.0 before the journal rows: move their per-value rows into ``hour_log``."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"hour_subs", "hour_das"} <= tables:
        return
    journals: dict[str, list[tuple[Any, ...]]] = {}
    for mn, hour, kind, code, sec, v, ok in conn.execute("SELECT * FROM hour_subs ORDER BY mn, hour, sec"):
        journals.setdefault(mn, []).append(("s", hour, kind, code, sec, v, bool(ok)))
    for mn, hour, code, avg, zs, flag in conn.execute("SELECT * FROM hour_das"):
        journals.setdefault(mn, []).append(("d", hour, code, avg, zs, flag))
    with transaction(conn):
        conn.executemany("INSERT INTO hour_log(mn, last_hour, entries) VALUES (?,?,?)", _log_rows(journals.items()))
        conn.execute("DROP TABLE hour_subs")
        conn.execute("DROP TABLE hour_das")


_HOUR: Final = operator.itemgetter(1)  # a journal entry's hour


def _log_rows(journals: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> Iterator[tuple[str, int, str]]:
    """``hour_log`` rows (mn, last hour, JSON entries) of the outlets' journals (NaN is written as ``null``)."""
    for mn, journal in journals:
        if journal:
            yield mn, max(map(_HOUR, journal)), encode_state(journal)


def prune_rate_state(conn: sqlite3.Connection, before: int) -> None:
    """Forget the counted months before the Beijing month of ``before`` (the live cut is a month's start,
    as :meth:`RateCounter.prune`'s) and the exceedance slots before ``before``."""
    d = datetime.fromtimestamp(before, BEIJING)
    with transaction(conn):
        conn.execute("DELETE FROM rate_runs WHERE month < ?", (d.year * 100 + d.month,))
        conn.execute("DELETE FROM rate_exceed WHERE hour < ?", (before,))


def prune_archive(conn: sqlite3.Connection, before: int) -> None:
    """Forget archived hours starting before ``before`` (past their repair deadline)."""
    with transaction(conn):
        prune_archived(conn, before)


def rate_record(mn: str, pollutant: str, hour: int, source: str, valid: bool, exceeds: bool) -> HourlyRecord:
    """A stored rate row as the hourly record the rate counter counts (only the fields it reads)."""
    return HourlyRecord(
        mn, pollutant, datetime.fromtimestamp(hour, BEIJING), None, None, None, None, None,
        valid, "N" if valid else "D", source, None, None, None, None, exceeds,
    )  # fmt: skip


def with_open_hours(state: dict[str, Any], subs: list[tuple[Any, ...]], das: list[tuple[Any, ...]]) -> None:
    """Put the persisted sub-values back into an outlet state saved without them."""
    hourly = state["hourly"]
    closed = int(hourly["closed_before"])
    # the hours the engine held in memory (emitted hours kept for revision by late data, and open ones);
    # states saved before event time name none: the open hours are those not yet closed
    memory = {int(h) for h in hourly["memory"]} if "memory" in hourly else None
    open_: dict[str, dict[str, Any]] = {}

    def hour_of(h: int) -> dict[str, Any]:
        return open_.setdefault(str(h), {"das": {}, "mins": {}, "rtd": {}})

    def kept(h: int) -> bool:
        return h in memory if memory is not None else h >= closed

    for hour, kind, code, sec, v, ok in subs:
        if kept(hour):
            hour_of(hour)[kind].setdefault(code, []).append([sec, v, int(ok)])  # 0 / 1 / 2 (T, lower bound)
    for hour, code, avg, zs, flag in das:
        if kept(hour):
            hour_of(hour)["das"][code] = [avg, zs, flag]
    hourly["open"] = open_


def load_marks(conn: sqlite3.Connection, mn: str | None = None) -> list[MarkRecord]:
    """Every stored mark record (of ``mn``), in the order received."""
    q = "SELECT json FROM marks" + (" WHERE mn = ?" if mn is not None else "") + " ORDER BY received_ts, record_id"
    return [MarkRecord.from_json(json.loads(j)) for (j,) in conn.execute(q, () if mn is None else (mn,))]


def load_grid_state(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """The grid engine's persisted state (:meth:`cems.rules.grid.GridEngine.restore`)."""
    return {str(sensor): json.loads(state) for sensor, state in conn.execute("SELECT sensor, state FROM grid_state")}


#: Outlets' state rows, inserted or rewritten in place (an upsert; INSERT OR REPLACE would delete a row and insert
#: it again), in multi-row statements (:func:`cems.sqlite_rows.write_rows`).
_UPSERT_STATE: Final = (
    "INSERT INTO outlet_state(mn, state, updated_ts) VALUES {rows}"
    " ON CONFLICT(mn) DO UPDATE SET state = excluded.state, updated_ts = excluded.updated_ts"
)
#: ``stored`` of :func:`commit_state`: an outlet with a state row → the closed-hour mark of its last journal
#: clean-up in this process (``None``: not cleaned up yet).
StoredRows = dict[str, int | None]
_UNCLEANED: Final = object()


#: :meth:`cems.engine.ComplianceEngine.take_changes`: per changed outlet, its state (a function), journal and
#: closed-hour mark.
Changes = dict[str, tuple[Callable[[], dict[str, Any]], list[tuple[Any, ...]], int]]


@dataclass(frozen=True, slots=True)
class EncodedChanges:
    """The rows of a commit's changed outlets (and grid state), serialised ahead of their write
    (``ComplianceConfig.state_commit_aside``): taken under the engine lock, so that they hold the engine's state
    of that moment, then written by :func:`commit_state` while the engine goes on."""

    #: outlet → its state's JSON text
    states: dict[str, str]
    #: outlet → (the hour of its journal's last entry, the journal's JSON text), for the outlets with a journal
    journals: dict[str, tuple[int, str]]
    #: outlet → its closed-hour mark
    closed_before: dict[str, int]
    #: grid rows: key → JSON text (``None``: delete the row)
    grid: dict[str, str | None]


def encode_changes(changes: Changes, grid: Mapping[str, dict[str, Any] | None] | None = None) -> EncodedChanges:
    """:class:`EncodedChanges` of ``changes`` and ``grid`` (the same text :func:`commit_state` writes of them)."""
    return StateCapture(changes).encoded(encode_grid(grid or {}))


class StateCapture:
    """The states of a commit's changed outlets as they are when it takes them (:meth:`~cems.engine.ComplianceEngine
    .take_changes`), serialised after the engine is let go, a slice at a time on the event loop (issue 20, alert
    latency: serialising thousands of outlets under the engine lock held every batch behind it).

    Copy on write: :meth:`before_change` is the engine's ``before_change``: an outlet the engine is about to
    change is serialised first; :meth:`step` serialises the others. Both run on the event loop (no lock: neither
    runs while the other does), so each outlet is serialised once, to the text it had when taken. The journals
    are given away with the changes (the engine starts new ones) and the grid rows are serialised by the
    caller at once, so those are serialised as they are, by :meth:`encoded`."""

    def __init__(self, changes: Changes, eager: Iterable[str] = ()) -> None:
        self._todo: dict[str, Callable[[], dict[str, Any]]] = {mn: state for mn, (state, _, _) in changes.items()}
        self._changes = changes
        self._states: dict[str, str] = {}
        self.before_change(tuple(eager))

    @property
    def done(self) -> bool:
        """Whether every outlet is serialised."""
        return not self._todo

    def before_change(self, mns: Collection[str] | None) -> None:
        """The engine is about to change ``mns`` (``None``: any outlet): serialise those not serialised yet."""
        todo = self._todo
        if not todo:
            return
        states = self._states
        for mn in list(todo) if mns is None else mns:
            state = todo.pop(mn, None)
            if state is not None:
                states[mn] = encode_state(state())

    def step(self, n: int) -> bool:
        """Serialise up to ``n`` outlets not serialised yet; whether all are now."""
        todo, states = self._todo, self._states
        for mn in list(itertools.islice(todo, n)):
            states[mn] = encode_state(todo.pop(mn)())
        return not todo

    def encoded(self, grid: dict[str, str | None]) -> EncodedChanges:
        """The commit's rows: every outlet's state (those left serialised now), the journals, marks and ``grid``
        (already serialised)."""
        self.before_change(None)
        changes = self._changes
        return EncodedChanges(
            states=self._states,
            journals={
                mn: (max(map(_HOUR, journal)), encode_state(journal))
                for mn, (_, journal, _) in changes.items()
                if journal
            },
            closed_before={mn: closed_before for mn, (_, _, closed_before) in changes.items()},
            grid=grid,
        )


def encode_grid(grid: Mapping[str, dict[str, Any] | None]) -> dict[str, str | None]:
    """The grid rows as :class:`EncodedChanges` holds them."""
    return {k: None if v is None else _COMPACT_JSON.encode(v) for k, v in grid.items()}


def commit_state(
    conn: sqlite3.Connection,
    changes: Changes | EncodedChanges,
    rates: RateChanges | None,
    upserts: Sequence[EventRow],
    rows: Sequence[OutboxRow],
    now_ts: float,
    marks: Sequence[MarkRecord] = (),
    archived: dict[tuple[str, int], bytes] | None = None,
    grid: Mapping[str, dict[str, Any] | None] | None = None,
    rank_due: Sequence[tuple[str, str, str]] = (),
    stored: StoredRows | None = None,
) -> None:
    """One transaction: the changed outlet states, their journals (and the journal rows no longer needed),
    the hours evicted from memory into ``hour_archive`` (``archived``), the transmission counter's changes
    (``rates``), events and alerts, and the
    township rankings the grid days make due (``rank_due``: kind, first and last day).

    ``changes``: as :meth:`~cems.engine.ComplianceEngine.take_changes` gives them (serialised here, one outlet
    at a time as SQLite takes them: bounded memory), or already serialised (:func:`encode_changes`, with the
    grid rows: ``grid`` is then ``None``); the database ends up the same.

    ``stored`` (kept by the caller from one commit to the next, updated here once the transaction is
    committed; the runtime starts it with the outlets that have a state row): a journal clean-up that can delete
    nothing (the outlet's mark unchanged since its last clean-up, and no journal row written below it) is
    skipped. The database ends up the same as without it."""
    grid_rows: Iterable[tuple[str, str | None]]
    if isinstance(changes, EncodedChanges):
        enc = changes
        marks_before = enc.closed_before
        tops = {mn: top for mn, (top, _) in enc.journals.items()}
        state_text: Callable[[str], str] = enc.states.__getitem__
        log_rows: Iterable[tuple[str, int, str]] = ((mn, top, text) for mn, (top, text) in enc.journals.items())
        grid_rows = enc.grid.items()
    else:
        lazy = changes
        marks_before = {mn: closed_before for mn, (_, _, closed_before) in lazy.items()}
        # the hour of each journal's last entry: its row's last_hour, and whether the clean-up may delete it
        tops = {mn: max(map(_HOUR, journal)) for mn, (_, journal, _) in lazy.items() if journal}
        state_text = lambda mn: encode_state(lazy[mn][0]())  # noqa: E731
        # one row per outlet and commit, not one per sub-value (a commit costs a few rows, not thousands:
        # docs/benchmark.md)
        log_rows = ((mn, tops[mn], encode_state(journal)) for mn, (_, journal, _) in lazy.items() if journal)
        grid_rows = ((k, None if v is None else _COMPACT_JSON.encode(v)) for k, v in (grid or {}).items())
    closed: list[tuple[str, int]] = []
    for mn, closed_before in marks_before.items():
        if stored is None or stored.get(mn, _UNCLEANED) != closed_before or tops.get(mn, closed_before) < closed_before:
            closed.append((mn, closed_before))
    with transaction(conn):
        if marks_before:
            # a generator: states are serialised a statement's rows at a time as SQLite consumes them (bounded
            # memory); multi-row statements, not one per row: the GIL is taken back once per statement
            write_rows(conn, _UPSERT_STATE, ((mn, state_text(mn), now_ts) for mn in marks_before), 3)
            write_rows(conn, "INSERT INTO hour_log(mn, last_hour, entries) VALUES {rows}", log_rows, 3)
            if closed:
                conn.executemany("DELETE FROM hour_log WHERE mn = ? AND last_hour < ?", closed)
        if marks:  # append-only: a record id stored twice (a redelivery) keeps the first
            conn.executemany(
                "INSERT OR IGNORE INTO marks(record_id, mn, kind, received_ts, json) VALUES (?,?,?,?,?)",
                [
                    (m.record_id, m.mn, m.kind, m.received_at.timestamp(), json.dumps(m.to_json(), ensure_ascii=False))
                    for m in marks
                ],
            )
        if archived:
            write_archived(conn, archived)
        grid_list = list(grid_rows)
        if grid_list:
            write_rows(
                conn,
                "INSERT OR REPLACE INTO grid_state(sensor, state, updated_ts) VALUES {rows}",
                ((key, state, now_ts) for key, state in grid_list if state is not None),
                3,
            )
            conn.executemany("DELETE FROM grid_state WHERE sensor = ?", [(k,) for k, v in grid_list if v is None])
        if rates:
            write_rate_changes(conn, rates)
        if rank_due:
            conn.executemany("INSERT OR REPLACE INTO grid_rank_due(kind, first, last) VALUES (?,?,?)", rank_due)
        _upsert_events(conn, upserts, rows, now_ts)
    if stored is not None:  # committed: the rows exist, and the clean-ups done hold
        for mn in marks_before:
            stored.setdefault(mn, None)
        for mn, closed_before in closed:
            stored[mn] = closed_before


def commit_events(
    conn: sqlite3.Connection, upserts: Sequence[EventRow], rows: Sequence[OutboxRow], now_ts: float
) -> list[OutboxItem]:
    """One transaction: the event updates and their alerts (outbox rows), committed before the engine state
    that produced them (:func:`commit_state`, given no events then) when a commit raises alerts, so that they
    leave without waiting for the snapshots. Crash in between: the readings are not acknowledged, the broker
    redelivers them, the engine (restored from its previous state) produces the same updates again and the
    events table (``alerted_key``) suppresses them: each alert is still sent once.

    Returns the rows due at once (:func:`~cems.service.outbox.enqueue_due`), for the dispatcher to deliver."""
    with transaction(conn):
        return _upsert_events(conn, upserts, rows, now_ts, due=True)


def _upsert_events(
    conn: sqlite3.Connection,
    upserts: Sequence[EventRow],
    rows: Sequence[OutboxRow],
    now_ts: float,
    *,
    due: bool = False,
) -> list[OutboxItem]:
    """Inside the caller's transaction; ``due``: returns the rows due at once (else nothing)."""
    write_rows(
        conn,
        _UPSERT_EVENTS,
        (
            (
                r.event_id,
                r.type,
                r.mn,
                r.enterprise,
                r.district,
                r.status,
                json.dumps(r.json, ensure_ascii=False),
                r.alerted_status,
                r.alerted_key,
                r.opened_at,
                r.opened_ts,
                r.acked_by,
                r.acked_at,
                r.escalated_at,
                now_ts,
            )
            for r in upserts
        ),
        15,
    )
    if rows and due:
        return enqueue_due(conn, rows, now_ts)
    if rows:
        enqueue(conn, rows, now_ts)
    return []


def record_ack(
    conn: sqlite3.Connection,
    event_id: str,
    by: str,
    at: str,
    note: str | None,
    rows: Sequence[OutboxRow],
    now_ts: float,
) -> bool:
    with transaction(conn):
        cur = conn.execute(
            "UPDATE events SET acked_by=?, acked_at=?, ack_note=?, updated_ts=? WHERE event_id=? AND acked_at IS NULL",
            (by, at, note, now_ts, event_id),
        )
        if cur.rowcount != 1:
            return False
        enqueue(conn, rows, now_ts)
    return True


def record_escalations(
    conn: sqlite3.Connection, done: Sequence[tuple[str, str]], rows: Sequence[OutboxRow], now_ts: float
) -> None:
    with transaction(conn):
        conn.executemany(
            "UPDATE events SET escalated_at=?, updated_ts=? WHERE event_id=? AND escalated_at IS NULL",
            [(at, now_ts, eid) for eid, at in done],
        )
        enqueue(conn, rows, now_ts)


def load_rank_due(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The township rankings due when the ingester stopped (kind, first day, last day)."""
    return [(str(k), str(f), str(la)) for k, f, la in conn.execute("SELECT kind, first, last FROM grid_rank_due")]


def forget_rank_due(conn: sqlite3.Connection, kind: str, first: str) -> None:
    """A ranking done (or given up): no longer due."""
    with transaction(conn):
        conn.execute("DELETE FROM grid_rank_due WHERE kind = ? AND first = ?", (kind, first))
