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
from typing import TYPE_CHECKING, Final

from cems.rules.hourly import pack_hour
from cems.sqlite_rows import write_rows

if TYPE_CHECKING:
    from cems.rules.hourly import _HourAcc

ARCHIVE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS hour_archive(
    mn TEXT NOT NULL, hour INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY(mn, hour)
) WITHOUT ROWID;
"""


#: How much :class:`TempHourArchive` keeps in memory unpacked, in sub-values (≈ 16 bytes each in an hour's log)
#: plus :data:`_HELD_OVERHEAD` an hour: ≈ 16 MB.
HELD_SUBVALUES: Final = 1 << 20
#: An hour's own cost in :data:`HELD_SUBVALUES` units (its objects, ≈ 200 bytes, whatever its sub-values).
_HELD_OVERHEAD: Final = 12


class TempHourArchive:
    """Emitted hours in a private temporary SQLite database (deleted when closed; SQLite keeps a small page
    cache in memory and the rest on disk, so memory stays bounded whatever the input's length).

    CPU (issue 20): the hours given by :meth:`put_hour` are first kept as they are, unpacked, up to
    ``held`` sub-values (:data:`HELD_SUBVALUES`); beyond, the oldest kept are packed (:func:`pack_hour`) and
    written to the file.  Most hours are never read back (late data are rare), so most are never packed.
    :meth:`get` packs a kept hour: what it returns is what the file would give."""

    def __init__(self, held: int = HELD_SUBVALUES) -> None:
        self._conn: sqlite3.Connection | None = None
        self.puts = 0
        #: (MN, hour) → hour not yet packed, oldest first, and its cost (sub-values + overhead)
        self._held: dict[tuple[str, int], tuple[_HourAcc, int]] = {}
        self._held_cost = 0
        self._held_max = held

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
        held = self._held.pop((mn, hour), None)
        if held is not None:
            self._held_cost -= held[1]
        self._write(mn, hour, data)

    def _write(self, mn: str, hour: int, data: bytes) -> None:
        self._db().execute("INSERT OR REPLACE INTO hour_archive VALUES (?,?,?)", (mn, hour, data))

    def put_hour(self, mn: str, hour: int, acc: _HourAcc) -> None:
        self.puts += 1
        key = (mn, hour)
        held = self._held
        old = held.pop(key, None)  # (re-inserted: the newest)
        if old is not None:
            self._held_cost -= old[1]
        rtd, mins = acc.rtd_log, acc.mins_log
        cost = _HELD_OVERHEAD + ((len(rtd) if rtd is not None else 0) + (len(mins) if mins is not None else 0)) // 2
        held[key] = (acc, cost)
        self._held_cost += cost
        while self._held_cost > self._held_max and held:
            (k_mn, k_hour), (k_acc, k_cost) = next(iter(held.items()))
            del held[(k_mn, k_hour)]
            self._held_cost -= k_cost
            self._write(k_mn, k_hour, pack_hour(k_acc))

    def get(self, mn: str, hour: int) -> bytes | None:
        held = self._held.get((mn, hour))
        if held is not None:
            return pack_hour(held[0])
        if self._conn is None:
            return None
        row = self._conn.execute("SELECT data FROM hour_archive WHERE mn = ? AND hour = ?", (mn, hour)).fetchone()
        return None if row is None else bytes(row[0])

    def size_bytes(self) -> int:
        """Bytes of archived data, packed (for the benchmark)."""
        held = sum(len(pack_hour(acc)) for acc, _ in self._held.values())
        if self._conn is None:
            return held
        rows = self._conn.execute("SELECT mn, hour, LENGTH(data) FROM hour_archive")
        return held + sum(int(n) for mn, hour, n in rows if (mn, hour) not in self._held)  # (a kept hour is newer)

    def close(self) -> None:
        self._held = {}
        self._held_cost = 0
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

    def put_hour(self, mn: str, hour: int, acc: _HourAcc) -> None:
        self.put(mn, hour, pack_hour(acc))  # (the next commit writes the bytes)

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
        write_rows(
            conn, "INSERT OR REPLACE INTO hour_archive VALUES {rows}", [(mn, h, d) for (mn, h), d in rows.items()], 3
        )


def prune_archived(conn: sqlite3.Connection, before: int) -> int:
    """Forget archived hours starting before ``before`` (epoch s: past their repair deadline); inside the caller's
    transaction.  Returns how many went."""
    return conn.execute("DELETE FROM hour_archive WHERE hour < ?", (before,)).rowcount
