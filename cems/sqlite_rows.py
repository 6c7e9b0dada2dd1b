"""Many rows in few SQLite statements, for the writes made in database threads beside the event loop.

Python's :mod:`sqlite3` lets the GIL go while SQLite steps a statement and takes it back after each step.
``executemany`` steps once per row, so a thread writing N rows takes the GIL back N times; while the event loop
thread runs Python (a backlog: decoding, judging), each of those can wait for the interpreter's switch interval
or longer (*GIL convoy*, docs/benchmark.md). Measured (2 000 engine-state rows of 2 KB, WAL, ``synchronous=FULL``,
the main thread running Python meanwhile): ``executemany`` 0.4–5.4 s, the same rows as statements of 500 rows
45–58 ms; with the main thread idle, 8–11 ms and 6 ms. :func:`write_rows` binds a chunk of rows to one
multi-row ``VALUES`` statement: one step (one GIL hand-back) per chunk, not per row.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

#: Rows per statement: bounded memory (a chunk of rows and its parameters at a time) and well under SQLite's
#: bound-parameter limit (32 766 since SQLite 3.32; :func:`write_rows` also checks the connection's own).
ROWS_PER_STATEMENT: Final = 500


@functools.lru_cache(maxsize=256)
def _statement(sql: str, width: int, n: int) -> str:
    row = "(" + ",".join("?" * width) + ")"
    return sql.replace("{rows}", ",".join([row] * n))


def write_rows(
    conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]], width: int, per: int = ROWS_PER_STATEMENT
) -> int:
    """Run ``sql`` once per chunk of up to ``per`` rows (of ``width`` values each), its ``{rows}`` replaced by
    that many ``(?,…)`` groups, e.g. ``"INSERT INTO t(a, b) VALUES {rows}"`` or an upsert
    (``… VALUES {rows} ON CONFLICT(a) DO UPDATE SET b = excluded.b``): the same rows written as ``executemany``
    would write them, in order. ``rows`` may be a generator (taken a chunk at a time). Returns the rows changed
    (the sum of the statements' ``rowcount``)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    per = max(1, min(per, limit))
    changed = 0
    it = iter(rows)
    while chunk := list(itertools.islice(it, per)):
        changed += conn.execute(_statement(sql, width, len(chunk)), [v for r in chunk for v in r]).rowcount
    return changed
