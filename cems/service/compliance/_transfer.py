"""Moving outlets between ingesters (issue 20 item 3; docs/scaling.md "Moving an outlet between ingesters").

When an outlet changes owner (``cems run --shard K/N`` with a new N, or its data start arriving at another
shard) the new owner must go on from exactly the state the old one left: open and revisable hours, the
exceedance runs and warnings in progress, the transmission counts, the marks, and which transitions of
which events were already alerted.  All of that lives, per outlet, in the old owner's SQLite state
(:mod:`cems.service.compliance._state`), so the move is a copy of the outlet's rows:

* :func:`export_outlets` reads every row of the given outlets from a *stopped* ingester's state (and with
  ``remove`` deletes them, in the same transaction, so the old owner neither escalates nor counts them again);
* :func:`import_outlets` writes them into the new owner's state before it starts (refusing an outlet it
  already has state for: two histories of one outlet cannot be merged exactly);
* :func:`adopt_outlets` does both for every outlet a new owner owns (``cems state adopt --shard K/N``: after a
  resharding each new shard pulls its outlets from the other ingesters' stopped state directories).

The events come with their ``alerted_key``: the new owner recognises a transition the old owner already
alerted (event ids are stable: type, outlet, pollutant, start) and does not alert it again.  Alerts still
in the old owner's outbox stay there: it delivers them when it runs again.
"""

from __future__ import annotations

import base64
import fcntl
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from cems.errors import ConfigError, ServiceError
from cems.service.compliance._actions import ACTIONS_SCHEMA
from cems.service.compliance._state import (
    DB_FILE,
    RATE_RECORDS_SCHEMA,
    STATE_SCHEMA,
    _migrate_ack_note,
    migrate_rate_records,
)
from cems.service.outbox import OUTBOX_SCHEMA, StateDB, transaction

#: The export's format (``cems state export``); :func:`import_outlets` refuses any other but ``FORMAT_1``.
FORMAT: Final = "cems-outlet-state/2"
#: Exports before the transmission counter was stored per outlet, factor and month: a row per hourly record in
#: ``rate_records``, written to that table here and migrated at once (``migrate_rate_records``).
FORMAT_1: Final = "cems-outlet-state/1"
_RATE_RECORDS_1: Final = ("mn", "pollutant", "hour", "source", "valid", "exceeds")

#: Per table, the columns copied.  ``hour_archive`` also holds an outlet's closed days under ``{mn}#daily``.
_TABLES: Final[dict[str, tuple[str, ...]]] = {
    "outlet_state": ("mn", "state", "updated_ts"),
    "hour_log": ("mn", "last_hour", "entries"),
    "hour_archive": ("mn", "hour", "data"),
    "rate_runs": ("mn", "pollutant", "month", "runs"),
    "rate_exceed": ("mn", "pollutant", "hour", "code"),
    "marks": ("record_id", "mn", "kind", "received_ts", "json"),
    "events": (
        "event_id", "type", "mn", "enterprise", "district", "status", "json", "alerted_status", "alerted_key",
        "opened_at", "opened_ts", "updated_ts", "acked_by", "acked_at", "escalated_at", "ack_note",
    ),
}  # fmt: skip
_DAILY_SUFFIX: Final = "#daily"


def _where(table: str) -> str:
    if table == "hour_archive":
        return "mn = ? OR mn = ?"
    return "mn = ?"


def _args(table: str, mn: str) -> tuple[str, ...]:
    return (mn, mn + _DAILY_SUFFIX) if table == "hour_archive" else (mn,)


def _encode(v: Any) -> Any:
    return {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes | bytearray | memoryview) else v


def _decode(v: Any) -> Any:
    return base64.b64decode(v["b64"]) if isinstance(v, dict) else v


def export_outlets(conn: sqlite3.Connection, mns: Sequence[str], *, remove: bool = False) -> dict[str, Any]:
    """Every persisted row of the outlets ``mns`` (a JSON-serialisable document for :func:`import_outlets`);
    ``remove`` deletes them from ``conn`` in the same transaction.  An outlet without any state is an error
    (a wrong MN or state directory would otherwise move nothing, silently)."""
    doc: dict[str, Any] = {"format": FORMAT, "outlets": list(mns), "tables": {}}
    with transaction(conn):
        for mn in mns:
            if conn.execute("SELECT 1 FROM outlet_state WHERE mn = ?", (mn,)).fetchone() is None:
                raise ConfigError(f"outlet {mn}: no engine state in this state directory (wrong MN or directory?)")
        for table, cols in _TABLES.items():
            rows: list[list[Any]] = []
            for mn in mns:
                # the journal is replayed in id order: exported in that order, imported under new ids
                order = " ORDER BY id" if table == "hour_log" else ""
                q = f"SELECT {', '.join(cols)} FROM {table} WHERE {_where(table)}{order}"
                rows += [[_encode(v) for v in r] for r in conn.execute(q, _args(table, mn))]
                if remove:
                    conn.execute(f"DELETE FROM {table} WHERE {_where(table)}", _args(table, mn))
            doc["tables"][table] = rows
    return doc


def import_outlets(conn: sqlite3.Connection, doc: dict[str, Any]) -> dict[str, int]:
    """Write an :func:`export_outlets` document into ``conn`` (one transaction); the rows written per table.
    Refused (nothing written) when an outlet already has state here."""
    if not isinstance(doc, dict) or doc.get("format") not in (FORMAT, FORMAT_1):
        raise ConfigError(f"not an outlet state export (expected format {FORMAT!r})")
    legacy = doc["format"] == FORMAT_1
    mns: Iterable[str] = doc["outlets"]
    tables: dict[str, list[list[Any]]] = doc["tables"]
    counts: dict[str, int] = {}
    with transaction(conn):
        for mn in mns:
            for table in ("outlet_state", "hour_log", "events"):
                if conn.execute(f"SELECT 1 FROM {table} WHERE mn = ? LIMIT 1", (mn,)).fetchone() is not None:
                    raise ConfigError(
                        f"outlet {mn} already has state here ({table}): import it before the ingester first sees "
                        "the outlet's data"
                    )
        tables_cols = dict(_TABLES)
        if legacy:  # (its counted hours as they were exported: migrated at the ingester's next start)
            conn.execute(RATE_RECORDS_SCHEMA)
            tables_cols["rate_records"] = _RATE_RECORDS_1
        for table, cols in tables_cols.items():
            rows = [tuple(_decode(v) for v in r) for r in tables.get(table, [])]
            conn.executemany(
                f"INSERT INTO {table}({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                rows,
            )
            counts[table] = len(rows)
    if legacy:
        migrate_rate_records(conn)
    return counts


def outlets_in(conn: sqlite3.Connection) -> list[str]:
    """The outlets that have engine state in ``conn``."""
    return [mn for (mn,) in conn.execute("SELECT mn FROM outlet_state ORDER BY mn")]


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two exports hold the same rows (in any order)."""
    return all(sorted(map(repr, a["tables"][t])) == sorted(map(repr, b["tables"][t])) for t in _TABLES)


def adopt_outlets(
    new: sqlite3.Connection,
    olds: Sequence[tuple[str, sqlite3.Connection]],
    owns: Callable[[str], bool],
    *,
    dry_run: bool = False,
) -> list[tuple[str, str]]:
    """Move into ``new`` every outlet that ``owns`` and that has state in one of ``olds`` (name, stopped
    state), one outlet at a time: copied (:func:`export_outlets`), written here (:func:`import_outlets`),
    then deleted there. Returns the (MN, name) moved (``dry_run``: that would be moved, nothing written).

    Refused before anything moves: an outlet with state in two of ``olds`` (which history is the outlet's?),
    or here and in one of them — unless the two hold the same rows, which is what an adoption interrupted
    between the import and the delete leaves: the old copy is then deleted."""
    here = set(outlets_in(new))
    moves: list[tuple[str, str, sqlite3.Connection]] = []
    finish: list[tuple[str, str, sqlite3.Connection]] = []
    seen: dict[str, str] = {}
    for name, old in olds:
        for mn in outlets_in(old):
            if not owns(mn):
                continue
            if mn in seen:
                raise ConfigError(f"outlet {mn} has state in both {seen[mn]} and {name}: move one by hand")
            seen[mn] = name
            if mn in here:
                if not _same(export_outlets(new, [mn]), export_outlets(old, [mn])):
                    raise ConfigError(
                        f"outlet {mn} has state both here and in {name}, and they differ: two histories of one "
                        "outlet cannot be merged (export the one to keep by hand)"
                    )
                finish.append((mn, name, old))
            else:
                moves.append((mn, name, old))
    if dry_run:
        return [(mn, name) for mn, name, _ in finish + moves]
    for mn, _name, old in finish:  # an earlier adoption stopped after the import: complete it
        export_outlets(old, [mn], remove=True)
    for mn, name, old in moves:
        doc = export_outlets(old, [mn])
        import_outlets(new, doc)
        if not _same(export_outlets(old, [mn], remove=True), doc):  # pragma: no cover - the lock excludes it
            raise ServiceError(f"outlet {mn}: its state in {name} changed during the move")
    return [(mn, name) for mn, name, _ in finish + moves]


@contextmanager
def stopped_state(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite state of an ingester that is not running (its directory's lock taken, as ``cems run`` takes
    it: refused while the ingester runs); created with the ingester's schema when new."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as lf:
        try:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise ServiceError(f"state dir {state_dir} is in use by a running ingester: stop it first") from e
        conn = StateDB(state_dir / DB_FILE, (OUTBOX_SCHEMA, STATE_SCHEMA, ACTIONS_SCHEMA))._connect()
        try:
            _migrate_ack_note(conn)
            migrate_rate_records(conn)  # (an export must carry the counted hours of a state of an earlier version)
            yield conn
        finally:
            conn.close()
