"""How long after a state transaction ends an alerts transaction that waited for it commits (issue 20, alert
latency; docs/benchmark.md, eighth session).

:class:`cems.service.outbox.StateDB` writes the engine state and the alerts on two connections in two threads;
SQLite lets one transaction write at a time. ``python -m cems.devtools.writer_wait`` runs ``--runs`` state
transactions of 30–150 ms (a row, then a sleep inside the transaction), starts an alerts transaction at a random
moment during each, and prints how long after the state transaction's end the alerts one committed: with the
database's writer lock (the service's way), and with ``--no-lock`` as SQLite's busy handler alone would
(its polls sleep 1, 2, 5 … 100 ms)::

    python -m cems.devtools.writer_wait --runs 40
    python -m cems.devtools.writer_wait --runs 40 --no-lock
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from cems.service.outbox import StateDB, transaction

_SCHEMA = "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, who TEXT)"


async def measure(directory: Path, runs: int, *, lock: bool = True, seed: int = 1) -> list[float]:
    """The seconds from each state transaction's end to the commit of the alerts transaction that waited."""
    db = StateDB(directory / "writer-wait.sqlite3", schema=(_SCHEMA,))
    await db.open()
    if not lock:  # (the connections' lock, as StateDB sets it: off for the comparison)
        for conn in (db._conn, db._aconn):
            conn.write_lock = None  # type: ignore[union-attr]
    rng = random.Random(seed)
    after: list[float] = []
    try:
        for _ in range(runs):
            hold = 0.03 + rng.random() * 0.12
            ended = [0.0]
            begun = threading.Event()

            def state(
                c: sqlite3.Connection, hold: float = hold, ended: list[float] = ended, begun: threading.Event = begun
            ) -> None:
                with transaction(c):
                    c.execute("INSERT INTO t(who) VALUES ('state')")
                    begun.set()
                    time.sleep(hold)
                ended[0] = time.monotonic()

            def alerts(c: sqlite3.Connection) -> float:
                with transaction(c):
                    c.execute("INSERT INTO t(who) VALUES ('alerts')")
                return time.monotonic()

            s = asyncio.ensure_future(db.call(state))
            await asyncio.to_thread(begun.wait, 10.0)
            await asyncio.sleep(rng.random() * hold * 0.9)
            committed = await db.call_alerts(alerts)
            await s
            after.append(committed - ended[0])
    finally:
        await db.close()
    return after


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.writer_wait", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--no-lock", action="store_true", help="SQLite's busy handler alone (no writer lock)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        after = sorted(asyncio.run(measure(Path(d), a.runs, lock=not a.no_lock)))
    n = len(after)
    print(
        f"{'busy handler alone' if a.no_lock else 'writer lock'}: the alerts transaction committed "
        f"p50 {after[n // 2] * 1e3:.1f} ms, p90 {after[int(n * 0.9)] * 1e3:.1f} ms, max {after[-1] * 1e3:.1f} ms "
        f"after the state transaction ended ({n} runs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
