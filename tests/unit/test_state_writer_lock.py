"""StateDB's two writing connections (the state's and the alerts'): a write transaction of one waits for the
other's on the database's writer lock, not by polling SQLite's lock (``busy_timeout``), and starts once it ends."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from cems.service.outbox import StateDB, transaction

SCHEMA = "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, who TEXT)"


async def test_an_alerts_transaction_waits_on_the_writer_lock_for_the_state_transaction_under_way(
    tmp_path: Path,
) -> None:
    db = StateDB(tmp_path / "s.sqlite3", schema=(SCHEMA,))
    await db.open()
    held, release = threading.Event(), threading.Event()
    tried: list[str] = []  # the statements the alerts' connection ran, as SQLite traces them

    def state_tx(c: sqlite3.Connection) -> None:
        with transaction(c):
            c.execute("INSERT INTO t(who) VALUES ('state')")
            held.set()
            release.wait(10.0)

    def alerts_tx(c: sqlite3.Connection) -> float:
        c.set_trace_callback(tried.append)
        try:
            with transaction(c):
                c.execute("INSERT INTO t(who) VALUES ('alerts')")
            return time.monotonic()
        finally:
            c.set_trace_callback(None)

    try:
        state = asyncio.ensure_future(db.call(state_tx))
        await asyncio.to_thread(held.wait, 10.0)
        alerts = asyncio.ensure_future(db.call_alerts(alerts_tx))
        await asyncio.sleep(0.3)
        # waiting on the lock: it has not even begun (polling SQLite's lock, it would be inside BEGIN IMMEDIATE)
        assert tried == [] and not alerts.done()
        released = time.monotonic()
        release.set()
        await state
        committed = await alerts
        assert tried[0] == "BEGIN IMMEDIATE"
        assert committed >= released
        rows = await db.read(lambda c: [w for (w,) in c.execute("SELECT who FROM t ORDER BY k")])
        assert rows == ["state", "alerts"]
    finally:
        release.set()
        await db.close()


async def test_a_failed_transaction_lets_the_lock_go(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3", schema=(SCHEMA,))
    await db.open()

    def failing(c: sqlite3.Connection) -> None:
        with transaction(c):
            c.execute("INSERT INTO t(who) VALUES ('rolled back')")
            raise RuntimeError("a bug in the middle of a commit")

    def ok(c: sqlite3.Connection) -> int:
        with transaction(c):
            c.execute("INSERT INTO t(who) VALUES ('after')")
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])

    try:
        with pytest.raises(RuntimeError, match="a bug in the middle"):
            await db.call(failing)
        assert await asyncio.wait_for(db.call_alerts(ok), 5.0) == 1
        assert await asyncio.wait_for(db.call(ok), 5.0) == 2
    finally:
        await db.close()
