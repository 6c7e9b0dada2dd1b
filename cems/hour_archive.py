"""Archives of emitted hours (:class:`cems.rules.hourly.HourArchive`): where an outlet's hours go when they leave
memory — and its closed days' hourly slots (key ``MN#daily``, :class:`cems.rules.daily.OutletDaily`) — until
their repair deadline, so that late data (a DAS back-filling a day-old outage, a CN=2061 sent a
day late) revise them exactly, live and in replay, with bounded memory (issue 12; docs/events.md).

* :class:`TempHourArchive` (``cems replay``): a private temporary SQLite file, read and written in place.
* :class:`PendingHourArchive` (``cems run``): hours evicted since the last commit are kept here until the
  commit writes them to the ingester's SQLite state (``hour_archive``, one transaction with the engine state);
  archived hours that a batch will revise are loaded beforehand, off the event loop
  (:meth:`cems.engine.ComplianceEngine.archived_wanted`), and handed over with :meth:`PendingHourArchive.loaded`.
"""

from __future__ import annotations

import sqlite3
from typing import Final

ARCHIVE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS hour_archive(
    mn TEXT NOT NULL, hour INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(mn, hour)
) WITHOUT ROWID;
"""


class TempHourArchive:
    """Emitted hours in a private temporary SQLite database (deleted when closed; SQLite keeps a small page
    cache in memory and the rest on disk, so memory stays bounded whatever the input's length)."""

    def __init__(self) -> None:
        self._conn: sqlite3.Connection | None = None
        self.puts = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect("")  # "" = a private temporary on-disk database
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.executescript(ARCHIVE_SCHEMA)
            self._conn = conn
        return self._conn

    def put(self, mn: str, hour: int, data: bytes) -> None:
        self.puts += 1
        self._db().execute("INSERT OR REPLACE INTO hour_archive VALUES (?,?,?)", (mn, hour, data))

    def get(self, mn: str, hour: int) -> bytes | None:
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT data FROM hour_archive WHERE mn = ? AND hour = ?", (mn, hour)).fetchone()
        return None if row is None else bytes(row[0])

    def size_bytes(self) -> int:
        """Bytes of archived data (for the benchmark)."""
        if self._conn is None:
            return 0
        (n,) = self._conn.execute("SELECT COALESCE(SUM(LENGTH(data)), 0) FROM hour_archive").fetchone()
        return int(n)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PendingHourArchive:
    """The live side of the ingester's ``hour_archive`` table (see the module docstring)."""

    def __init__(self) -> None:
        #: evicted since the last commit: (MN, hour) → packed hour, written by the next commit
        self.pending: dict[tuple[str, int], bytes] = {}
        #: loaded from SQLite for the batch being judged
        self._loaded: dict[tuple[str, int], bytes] = {}

    def put(self, mn: str, hour: int, data: bytes) -> None:
        self.pending[(mn, hour)] = data
        self._loaded.pop((mn, hour), None)

    def get(self, mn: str, hour: int) -> bytes | None:
        key = (mn, hour)
        data = self.pending.get(key)
        if data is not None:
            return data
        return self._loaded.get(key)

    def loaded(self, rows: dict[tuple[str, int], bytes]) -> None:
        """Archived hours read from SQLite for the next batch."""
        self._loaded = dict(rows) if rows else {}

    def missing(self, keys: set[tuple[str, int]]) -> list[tuple[str, int]]:
        """Of ``keys``, those not pending (to read from SQLite)."""
        return sorted(k for k in keys if k not in self.pending)

    def take(self) -> dict[tuple[str, int], bytes]:
        """What the next commit writes (and forgets here)."""
        out, self.pending = self.pending, {}
        return out


def read_archived(conn: sqlite3.Connection, keys: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    out: dict[tuple[str, int], bytes] = {}
    for mn, hour in keys:
        row = conn.execute("SELECT data FROM hour_archive WHERE mn = ? AND hour = ?", (mn, hour)).fetchone()
        if row is not None:
            out[(mn, hour)] = bytes(row[0])
    return out


def write_archived(conn: sqlite3.Connection, rows: dict[tuple[str, int], bytes]) -> None:
    """Inside the caller's transaction."""
    if rows:
        conn.executemany(
            "INSERT OR REPLACE INTO hour_archive VALUES (?,?,?)", [(mn, h, d) for (mn, h), d in rows.items()]
        )


def prune_archived(conn: sqlite3.Connection, before: int) -> int:
    """Forget archived hours starting before ``before`` (epoch s: past their repair deadline); inside the caller's
    transaction.  Returns how many went."""
    return conn.execute("DELETE FROM hour_archive WHERE hour < ?", (before,)).rowcount
