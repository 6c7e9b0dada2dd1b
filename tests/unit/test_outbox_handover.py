"""Alerts handed straight to the dispatcher (issue 20, alert latency): the rows a commit finds due at once
(``enqueue_due``, in the committing transaction) are the rows a dispatcher pass would read (``due_rows``), and the
dispatcher delivers them without a pass reading them back, keeping each event's order per target."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.service.outbox import (
    MQTT,
    OUTBOX_SCHEMA,
    OutboxDispatcher,
    OutboxRow,
    StateDB,
    WebhookSettings,
    due_rows,
    enqueue_due,
    transaction,
)

#: (event, target) of each row of a batch; a batch's rows are committed together
BATCHES = st.lists(
    st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["t/1", "t/2"])), min_size=1, max_size=4),
    min_size=1,
    max_size=6,
)


def _row(event: str, target: str, n: int) -> OutboxRow:
    return OutboxRow(MQTT, target, event, f"{event}-{n}", f"{event}{n}".encode())


@settings(max_examples=150, deadline=None)
@given(batches=BATCHES, done=st.lists(st.booleans(), max_size=30))
def test_the_rows_due_at_once_are_the_new_rows_a_pass_would_read(
    batches: list[list[tuple[str, str]]], done: list[bool]
) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(OUTBOX_SCHEMA)
    n = 0
    for batch in batches:
        # some earlier rows were delivered meanwhile (the dispatcher marks them done)
        for (row_id,), d in zip(
            conn.execute("SELECT id FROM outbox WHERE status='pending' ORDER BY id").fetchall(), done, strict=False
        ):
            if d:
                conn.execute("UPDATE outbox SET status='done' WHERE id=?", (row_id,))
        (before,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        rows = [_row(e, t, n + i) for i, (e, t) in enumerate(batch)]
        n += len(rows)
        with transaction(conn):
            got = enqueue_due(conn, rows, 1000.0)
        want = [r for r in due_rows(conn, 1000.0, 10_000) if r.id > before]
        assert got == want
        # and what that means: a new row is due unless a row of its event and target is still pending before it
        pending = conn.execute("SELECT id, event_id, target FROM outbox WHERE status='pending'").fetchall()
        for r in got:
            assert not any(i < r.id and e == r.event_id and t == r.target for i, e, t in pending)
            assert r.id > before and r.attempts == 0 and r.created_ts == 1000.0


async def test_rows_handed_over_are_delivered_without_a_pass_and_in_order_per_event(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    sent: list[str] = []
    reads = 0
    reads_at: dict[str, int] = {}  # the outbox reads made before each row was published
    real_read = db.read

    async def read(fn):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await real_read(fn)

    db.read = read  # type: ignore[method-assign]

    async def publish(topic: str, body: bytes) -> None:
        sent.append(body.decode())
        reads_at[body.decode()] = reads

    disp = OutboxDispatcher(db, WebhookSettings(), publish=publish, poll_s=3600.0)  # no pass by the clock
    stop = asyncio.Event()
    task = asyncio.create_task(disp.run(stop))
    try:
        for _ in range(50):  # the first pass (nothing due) is over
            await asyncio.sleep(0.01)
        first_reads = reads
        due = await db.call_alerts(lambda c: _commit(c, [_row("a", "t/1", 1), _row("b", "t/1", 2)]))
        assert [r.alert_id for r in due] == ["a-1", "b-2"]
        disp.deliver(due)
        for _ in range(200):
            if len(sent) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(sent) == ["a1", "b2"]
        assert reads_at == {"a1": first_reads, "b2": first_reads}  # delivered without reading the outbox back

        # a second row of event c while the first is still pending: not due at once; it leaves after the first
        later = await db.call_alerts(lambda c: _commit(c, [_row("c", "t/1", 3)]))
        held = await db.call_alerts(lambda c: _commit(c, [_row("c", "t/1", 4)]))
        assert [r.alert_id for r in later] == ["c-3"] and held == []
        disp.deliver(later)
        disp.kick()  # (what the runtime does for rows not due at once)
        for _ in range(300):
            if "c4" in sent:
                break
            await asyncio.sleep(0.01)
        assert sent[-2:] == ["c3", "c4"]
    finally:
        stop.set()
        disp.kick()
        await asyncio.wait_for(task, 5.0)
        await disp.aclose()
        await db.close()


def _commit(conn: sqlite3.Connection, rows: list[OutboxRow]) -> list:  # type: ignore[type-arg]
    with transaction(conn):
        return enqueue_due(conn, rows, 1000.0)
