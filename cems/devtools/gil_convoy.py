"""A SQLite write in a worker thread while the event loop is busy: how long it takes (issue 20, alert latency and
state commits; docs/benchmark.md "GIL convoy").

The ingester writes its state in database threads (:class:`cems.service.outbox.StateDB`) while its event loop
decodes and judges. Python's ``sqlite3`` lets the GIL go around each statement step, so a thread writing N rows
with ``executemany`` takes the GIL back N times; when the loop thread runs Python without blocking, each time
can wait for the interpreter's switch interval. This driver writes ``--rows`` rows (``executemany``, or
statements of ``--per-statement`` rows each) into a WAL database with ``synchronous=FULL`` from a thread of
the default executor while the loop spins (``asyncio.sleep(0)`` and a scan of a list, as a loop that always has
work), and prints the write's wall seconds per run::

    python -m cems.devtools.gil_convoy --runs 4
    python -m cems.devtools.gil_convoy --runs 4 --switch-interval 0.001 --per-statement 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE r(mn TEXT, p TEXT, m INTEGER, v BLOB, PRIMARY KEY(mn, p, m)) WITHOUT ROWID")
    return conn


def _write(conn: sqlite3.Connection, rows: list[tuple[str, str, int, bytes]], per: int) -> float:
    t = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    if per <= 1:
        conn.executemany("INSERT OR REPLACE INTO r VALUES (?,?,?,?)", rows)
    else:
        for i in range(0, len(rows), per):
            part = rows[i : i + per]
            sql = "INSERT OR REPLACE INTO r VALUES " + ",".join(["(?,?,?,?)"] * len(part))
            conn.execute(sql, [x for row in part for x in row])
    conn.execute("COMMIT")
    return time.perf_counter() - t


async def _one(path: Path, rows: list[tuple[str, str, int, bytes]], per: int, busy: bool) -> tuple[float, int]:
    conn = _connect(path)
    try:
        work = ["cems_rate,x=1 y=2"] * 3000
        fut = asyncio.get_running_loop().run_in_executor(None, _write, conn, rows, per)
        turns = 0
        while not fut.done():
            if busy:
                await asyncio.sleep(0)
                turns += sum(1 for line in work if line.startswith("cems_rate,")) > 0
            else:
                await asyncio.sleep(0.001)
        return await fut, turns
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.gil_convoy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--per-statement", type=int, default=1, help="rows per INSERT (1: executemany)")
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s)")
    ap.add_argument("--idle", action="store_true", help="the loop sleeps 1 ms a turn instead of spinning")
    a = ap.parse_args(argv)
    if a.switch_interval is not None:
        sys.setswitchinterval(a.switch_interval)
    rows = [(f"MN{i:05d}", "a21026", 202611, os.urandom(40)) for i in range(a.rows)]
    with tempfile.TemporaryDirectory() as d:
        for k in range(a.runs):
            s, turns = asyncio.run(_one(Path(d) / f"s{k}.db", rows, a.per_statement, not a.idle))
            print(f"run {k + 1}: {a.rows} rows in {s:.3f} s ({turns} loop turns)", flush=True)


if __name__ == "__main__":
    main()
