"""cems.sqlite_rows.write_rows: the same table as ``executemany``, in one statement per chunk of rows."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.sqlite_rows import write_rows

_SCHEMA = "CREATE TABLE t(k INTEGER PRIMARY KEY, a TEXT, b BLOB, n INTEGER NOT NULL DEFAULT 0)"
_UPSERT = "INSERT INTO t(k, a, b) VALUES {rows} ON CONFLICT(k) DO UPDATE SET a = excluded.a, n = t.n + 1"
_REPLACE = "INSERT OR REPLACE INTO t(k, a, b) VALUES {rows}"

_rows = st.lists(
    st.tuples(st.integers(0, 12), st.one_of(st.none(), st.text(max_size=5)), st.binary(max_size=4)), max_size=40
)


def _db(seed: list[tuple[int, str | None, bytes]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(_SCHEMA)
    conn.executemany("INSERT INTO t(k, a, b) VALUES (?,?,?)", seed)
    return conn


def _table(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT * FROM t ORDER BY k").fetchall()


@settings(max_examples=150, deadline=None)
@given(seed=_rows, rows=_rows, per=st.integers(1, 9), sql=st.sampled_from([_UPSERT, _REPLACE]))
def test_the_table_is_the_one_executemany_gives(
    seed: list[tuple[int, str | None, bytes]], rows: list[tuple[int, str | None, bytes]], per: int, sql: str
) -> None:
    """Duplicate keys within a chunk and across chunks, upserts that read the row they update, any chunk size:
    the rows are applied in order, as executemany applies them."""
    seed = list({k: (k, a, b) for k, a, b in seed}.values())
    one, many = _db(seed), _db(seed)
    expected = many.executemany(sql.replace("{rows}", "(?,?,?)"), rows).rowcount
    changed = write_rows(one, sql, iter(rows), 3, per=per)  # a generator, as the state commit passes
    assert _table(one) == _table(many)
    assert changed == max(expected, 0)


def test_one_statement_per_chunk_of_rows() -> None:
    conn = _db([])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    write_rows(conn, _REPLACE, ((k, str(k), b"") for k in range(1200)), 3, per=500)
    assert len(statements) == 3  # 500 + 500 + 200, not 1 200
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1200,)


def test_the_connections_parameter_limit_bounds_a_statement() -> None:
    conn = _db([])
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 10)  # 3 rows of 3 values per statement at most
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert write_rows(conn, _REPLACE, [(k, None, b"") for k in range(7)], 3) == 7
    assert len(statements) == 3
    assert [r[0] for r in _table(conn)] == list(range(7))


def test_no_rows_no_statement() -> None:
    conn = _db([])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    assert write_rows(conn, _REPLACE, [], 3) == 0
    assert statements == []
