"""The engine state commit's CPU (issue 20): ``commit_state`` with the rows the runtime knows (``stored``)
writes the same database as without (state rows updated in place, no-op journal clean-ups skipped), and
under a backlog the runtime commits, and acknowledges, by count (or at a tick when none came for a tick's
interval), never a batch before the state that holds it is committed."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from registries import TWO_OUTLETS, minute_packet  # tests/registries.py

from cems.engine import ComplianceEngine
from cems.hour_archive import PendingHourArchive
from cems.model import BEIJING, Reading
from cems.registry import OutletInfo, parse_registry
from cems.replay import load_readings
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.compliance._state import STATE_SCHEMA, StoredRows, commit_state
from cems.service.outbox import OUTBOX_SCHEMA

REG = parse_registry(TWO_OUTLETS)
H8 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)


def batches() -> list[list[tuple[Reading, OutletInfo]]]:
    """Four hours of minute data of two outlets (MN1 exceeding in its second hour) in batches of 30, a tenth
    of them held back and sent late, after their hours closed (journal rows below the closed-hour mark)."""
    rng = random.Random(7)
    lines: list[str] = []
    late: list[str] = []
    for i in range(4 * 60):
        for mn in ("MN1", "MN2"):
            line = minute_packet(mn, H8 + timedelta(minutes=i), 80.0 if mn == "MN1" and 60 <= i < 120 else 20.0)
            (late if rng.random() < 0.1 else lines).append(line)
    lines[len(lines) // 2 : len(lines) // 2] = late[: len(late) // 2]
    lines += late[len(late) // 2 :]
    return [load_readings(REG, lines[i : i + 30], "hj212") for i in range(0, len(lines), 30)]


def connect() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(OUTBOX_SCHEMA)
    conn.executescript(STATE_SCHEMA)
    return conn


def dump(conn: sqlite3.Connection) -> list[object]:
    return [
        *conn.execute("SELECT mn, state, updated_ts FROM outlet_state ORDER BY mn"),
        *conn.execute("SELECT id, mn, last_hour, entries FROM hour_log ORDER BY id"),
    ]


def test_commit_with_the_known_rows_writes_the_same_database() -> None:
    sides = []
    for _ in range(2):
        archive = PendingHourArchive()
        sides.append((ComplianceEngine(REG, archive=archive), archive, connect()))
    stored: StoredRows = {}
    deletes: list[str] = []
    sides[1][2].set_trace_callback(lambda sql: deletes.append(sql) if sql.startswith("DELETE FROM hour_log") else None)
    plain_deletes = 0
    for n, batch in enumerate(batches()):
        for k, (engine, archive, conn) in enumerate(sides):
            engine.on_readings(list(batch))
            changes = engine.take_changes()
            if k == 0:
                plain_deletes += len(changes)
            if n == 20:  # a state row gone behind the runtime's back: written again (upserted)
                conn.execute("DELETE FROM outlet_state WHERE mn = 'MN2'")
            extra = (stored,) if k == 1 else ()
            commit_state(conn, changes, None, [], [], 1000.0 + n, (), archive.take(), None, (), *extra)
        assert dump(sides[1][2]) == dump(sides[0][2]), f"after commit {n}"
    assert set(stored) == {"MN1", "MN2"}
    assert 0 < len(deletes) < plain_deletes / 4  # the clean-ups that could delete something, only


def runtime(state_dir: Path, behind: bool) -> ComplianceRuntime:
    async def write(lines: list[str], stop: asyncio.Event | None) -> bool:
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    config = ComplianceConfig(
        state_dir=state_dir,
        clock=lambda: H8 + timedelta(minutes=1),
        clock_interval_s=1.0,
        commit_interval_s=0.05,
        commit_max_messages=60,
    )
    return ComplianceRuntime(REG, config, write=write, publish=publish, behind=lambda: behind)


def stored_values(state_dir: Path) -> int:
    """How many values of the outlets' open hours the committed state holds (journal entries)."""
    conn = sqlite3.connect(state_dir / "compliance.sqlite3")
    try:
        return sum(entries.count('["s"') for (entries,) in conn.execute("SELECT entries FROM hour_log"))
    finally:
        conn.close()


async def test_under_a_backlog_the_runtime_commits_by_count_and_acknowledges_only_what_is_committed(
    tmp_path: Path,
) -> None:
    lines = [minute_packet(mn, H8 + timedelta(minutes=i), 20.0) for i in range(50) for mn in ("MN1", "MN2")]
    quiet = [load_readings(REG, lines[i : i + 20], "hj212") for i in range(0, len(lines), 20)]  # no output
    for behind in (False, True):
        rt = runtime(tmp_path / str(behind), behind)
        await rt.open()
        released: list[int] = []
        held: list[int] = []
        for n, batch in enumerate(quiet):
            # longer than the commit interval; without a backlog, longer than the longest (8× it: slow commits)
            await asyncio.sleep(0.06 if behind else 0.45)
            await rt.on_batch(batch, [], None, release=lambda n=n, r=released: r.append(n))  # type: ignore[misc]
            await rt.settle()  # the state commit written aside (state_commit_aside), if one is under way
            held.append(n + 1 - len(released))
            if behind and n == 3:  # a tick soon after a commit leaves the batch held
                assert await rt.tick()
                await rt.settle()  # (the clock's commit is written aside too)
                assert n + 1 - len(released) == 1
            if released:  # what is acknowledged is committed
                assert stored_values(tmp_path / str(behind)) >= 20 * len(released) * 2  # (2 codes a reading)
        if behind:  # by count: every third batch (60 messages), not at every interval
            assert held == [1, 2, 0, 1, 2]
            await asyncio.sleep(1.0)
            assert await rt.tick()  # ... and a tick when nothing was committed for clock_interval_s
            await rt.settle()
            assert rt.stats.clock_held == 2
        else:
            assert held == [0, 0, 0, 0, 0]
        assert sorted(released) == list(range(len(quiet)))
        assert stored_values(tmp_path / str(behind)) == 2 * len(lines)
        await rt.shutdown()
        await rt.close()


async def test_a_commit_is_due_once_enough_outlets_changed(tmp_path: Path) -> None:
    """``commit_max_outlets`` (issue 20, alert latency with many outlets): the group commit comes as soon as that
    many outlets changed, before its interval and message count, so that it stays small enough to be written
    aside; batches of one outlet alone do not make it due."""

    async def write(lines: list[str], stop: asyncio.Event | None) -> bool:
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    config = ComplianceConfig(
        state_dir=tmp_path,
        clock=lambda: H8 + timedelta(minutes=1),
        commit_interval_s=3600.0,
        commit_max_messages=10**6,
        commit_max_outlets=2,
    )
    rt = ComplianceRuntime(REG, config, write=write, publish=publish, behind=lambda: False)
    await rt.open()
    released: list[int] = []
    for n, mn in enumerate(("MN1", "MN1", "MN1", "MN2", "MN2")):
        batch = load_readings(REG, [minute_packet(mn, H8 + timedelta(minutes=n), 20.0)], "hj212")
        await rt.on_batch(batch, [], None, release=lambda n=n: released.append(n))  # type: ignore[misc]
        await rt.settle()
        if n < 3:  # one outlet changed: not due
            assert released == [] and stored_values(tmp_path) == 0
    # the fourth batch made two outlets changed: its commit holds the four batches, the fifth waits for the next
    assert released == [0, 1, 2, 3]
    assert stored_values(tmp_path) == 2 * 4
    await rt.shutdown()
    await rt.close()
    assert released == [0, 1, 2, 3, 4]
