"""The alert path (issue 20 item 5, alert latency): an event update and its alerts are committed in a small
transaction before the engine state (``commit_events`` then ``commit_state``); a crash between the two
loses nothing and alerts nothing twice (the readings are redelivered and their updates suppressed); the
outbox dispatcher delivers rows committed during a pass at once, and reads on its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import TWO_OUTLETS, minute_packet  # tests/registries.py

import cems.service.compliance._runtime as runtime_mod
from cems.cli import build_parser
from cems.cli.run import compliance_config
from cems.config import Env
from cems.errors import ConfigError, ServiceError
from cems.model import BEIJING, Reading
from cems.registry import OutletInfo, parse_registry
from cems.replay import load_readings
from cems.service.compliance import ComplianceConfig, ComplianceRuntime, _state
from cems.service.outbox import (
    MQTT,
    OutboxDispatcher,
    OutboxItem,
    OutboxRow,
    StateDB,
    WebhookSettings,
    enqueue,
    transaction,
)

REG = parse_registry(TWO_OUTLETS)
H8 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)

minute = minute_packet


def so2(mn: str, i: int) -> float:
    """MN1 exceeds in hours 08-09 and 11, MN2 in hour 10: events open, update and close along the way."""
    hour = i // 60
    if mn == "MN1":
        return 80.0 if hour in (0, 1, 3) else 20.0
    return 90.0 if hour == 2 else 20.0


LINES = [minute(mn, H8 + timedelta(minutes=i), so2(mn, i)) for i in range(5 * 60) for mn in ("MN1", "MN2")]
BATCHES: list[list[tuple[Reading, OutletInfo]]] = [
    load_readings(REG, LINES[i : i + 40], "hj212") for i in range(0, len(LINES), 40)
]


def runtime(state_dir: Path, **config: Any) -> ComplianceRuntime:
    async def write(lines: list[str], stop: asyncio.Event | None) -> bool:
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    clock = lambda: H8 + timedelta(minutes=1)  # noqa: E731 - the clock closes nothing: data time does
    return ComplianceRuntime(
        REG,
        ComplianceConfig(state_dir=state_dir, clock=clock, split_commit_outlets=0, **config),
        write=write,
        publish=publish,
    )


def stored(state_dir: Path) -> dict[str, Any]:
    conn = sqlite3.connect(state_dir / "compliance.sqlite3")
    try:
        alerts = [(a, t) for a, t in conn.execute("SELECT alert_id, target FROM outbox ORDER BY id")]
        per_event: dict[str, list[tuple[str, str]]] = {}
        for e, a, t in conn.execute("SELECT event_id, alert_id, target FROM outbox ORDER BY id"):
            per_event.setdefault(e, []).append((a, t))
        events = {e: json.loads(j) for e, j in conn.execute("SELECT event_id, json FROM events")}
        states = {mn: json.loads(s) for mn, s in conn.execute("SELECT mn, state FROM outlet_state")}
    finally:
        conn.close()
    return {"alerts": alerts, "per_event": per_event, "events": events, "states": states}


async def feed(rt: ComplianceRuntime, batches: list[int], released: set[int]) -> None:
    for i in batches:
        res = await rt.on_batch(BATCHES[i], [], None, release=lambda i=i: released.add(i))  # type: ignore[misc]
        assert res == []


@pytest.mark.parametrize(
    ("config", "ahead"),
    [
        # the events and alerts of each commit ahead of its state, the state at every commit
        ({"alerts_before_state": False}, 1),
        # the alerts of batches ahead of the state (not due for an hour) until an event is updated again: then
        # that update and the state in one transaction; the process dies at the second such state commit, with
        # two events' updates ahead of it
        ({"alerts_before_state": True, "commit_interval_s": 3600.0}, 2),
        ({"alerts_before_state": True}, 1),
    ],
    ids=["state-each-commit", "state-deferred", "default"],
)
async def test_a_crash_between_the_alerts_and_the_engine_state_loses_nothing_and_alerts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], ahead: int
) -> None:
    everything = list(range(len(BATCHES)))
    ref = runtime(tmp_path / "ref", alerts_before_state=False)
    await ref.open()
    await feed(ref, everything, set())
    await ref.shutdown()
    await ref.close()
    want = stored(tmp_path / "ref")
    assert len(want["alerts"]) >= 4 and len(want["events"]) >= 2  # the data raise and close events

    # the first state commit after ``ahead`` alert commits fails (the process "dies" between the transactions)
    real_events, real_state = _state.commit_events, _state.commit_state
    armed: list[bool] = []

    def commit_events(*a: Any) -> list[OutboxItem]:
        due = real_events(*a)
        armed.append(True)
        return due

    def commit_state(*a: Any) -> None:
        if len(armed) >= ahead:
            raise sqlite3.OperationalError("disk I/O error (simulated crash)")
        real_state(*a)

    monkeypatch.setattr(runtime_mod, "commit_events", commit_events)
    monkeypatch.setattr(runtime_mod, "commit_state", commit_state)
    released: set[int] = set()
    rt = runtime(tmp_path / "crash", **config)
    await rt.open()
    with pytest.raises(sqlite3.OperationalError):
        await feed(rt, everything, released)
    await rt.close()
    assert len(armed) == ahead
    crashed = stored(tmp_path / "crash")
    assert crashed["alerts"] and crashed["alerts"] == want["alerts"][: len(crashed["alerts"])]  # alert durable
    assert len(released) < len(BATCHES)
    monkeypatch.setattr(runtime_mod, "commit_events", real_events)
    monkeypatch.setattr(runtime_mod, "commit_state", real_state)

    # restart: the broker redelivers every batch not acknowledged, then the rest follows
    rt = runtime(tmp_path / "crash", **config)
    await rt.open()
    await feed(rt, [i for i in everything if i not in released], released)
    assert rt.stats.duplicates_suppressed >= 1
    await rt.shutdown()
    await rt.close()
    got = stored(tmp_path / "crash")
    assert got["alerts"] == want["alerts"]  # every alert once, in the same order
    assert got["events"] == want["events"]
    assert got["states"] == want["states"]
    assert released == set(everything)


async def test_an_alert_leaves_before_the_state_commit_that_acknowledges_its_batch(tmp_path: Path) -> None:
    rt = runtime(tmp_path, commit_interval_s=3600.0)  # the group commit is not due while the batches come
    await rt.open()
    released: set[int] = set()
    first = None
    for i in range(len(BATCHES)):
        await feed(rt, [i], released)
        if stored(tmp_path)["alerts"]:
            first = i
            break
    assert first is not None
    assert first not in released  # its engine state is not committed yet: not acknowledged
    states_before = stored(tmp_path)["states"]
    await rt.shutdown()  # the last commit: the engine state, then the acknowledgements
    await rt.close()
    assert first in released
    assert stored(tmp_path)["states"] != states_before


async def test_rows_committed_during_a_pass_are_delivered_without_waiting_for_the_poll(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    sent: list[tuple[str, float]] = []
    first_in_flight = asyncio.Event()
    release_first = asyncio.Event()

    async def publish(topic: str, body: bytes) -> None:
        if not sent:
            first_in_flight.set()
            await release_first.wait()
        sent.append((topic, time.monotonic()))

    def add(conn: sqlite3.Connection, n: int) -> None:
        with transaction(conn):
            enqueue(conn, [OutboxRow(MQTT, f"t/{n}", f"e{n}", f"a{n}", b"{}")], time.time())

    disp = OutboxDispatcher(db, WebhookSettings(), publish=publish, poll_s=30.0)
    stop = asyncio.Event()
    await db.call(lambda c: add(c, 1))
    task = asyncio.create_task(disp.run(stop))
    try:
        await asyncio.wait_for(first_in_flight.wait(), 5.0)
        await db.call(lambda c: add(c, 2))  # committed while the first pass waits for its PUBACK
        disp.kick()
        release_first.set()
        t0 = time.monotonic()
        while len(sent) < 2 and time.monotonic() - t0 < 10.0:
            await asyncio.sleep(0.01)
        assert [t for t, _ in sent] == ["t/1", "t/2"]
        assert sent[1][1] - t0 < 5.0  # the next pass at once, not after poll_s (30 s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5.0)
        await disp.aclose()
        await db.close()


async def test_the_reading_connection_sees_what_is_committed_and_cannot_write(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    try:
        count = "SELECT count(*) FROM outbox"
        assert await db.read(lambda c: c.execute(count).fetchone()[0]) == 0

        def add(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                enqueue(conn, [OutboxRow(MQTT, "t", "e", "a", b"{}")], time.time())

        await db.call(add)
        assert await db.read(lambda c: c.execute(count).fetchone()[0]) == 1
        with pytest.raises(sqlite3.OperationalError):
            await db.read(lambda c: c.execute("DELETE FROM outbox"))
    finally:
        await db.close()
    with pytest.raises(RuntimeError):
        await db.read(lambda c: None)


async def test_a_pass_waiting_for_its_done_update_does_not_hold_back_the_next_alert(tmp_path: Path) -> None:
    """The ``done`` update of a pass goes through the database thread, possibly behind a large commit of engine
    state: rows committed meanwhile leave at once (passes overlap), and none leaves twice."""
    db = StateDB(tmp_path / "s.sqlite3")
    await db.open()
    sent: list[tuple[str, float]] = []
    first_in_flight = asyncio.Event()
    release_first = asyncio.Event()

    async def publish(topic: str, body: bytes) -> None:
        if not sent and topic == "t/1":
            first_in_flight.set()
            await release_first.wait()
        sent.append((topic, time.monotonic()))

    def add(conn: sqlite3.Connection, n: int) -> None:
        with transaction(conn):
            enqueue(conn, [OutboxRow(MQTT, f"t/{n}", f"e{n}", f"a{n}", b"{}")], time.time())

    disp = OutboxDispatcher(db, WebhookSettings(), publish=publish, poll_s=0.05)
    stop = asyncio.Event()
    await db.call(lambda c: add(c, 1))
    task = asyncio.create_task(disp.run(stop))
    try:
        await asyncio.wait_for(first_in_flight.wait(), 5.0)
        await db.call(lambda c: add(c, 2))
        blocker = asyncio.ensure_future(db.call(lambda c: time.sleep(1.5)))  # a long commit of engine state
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        disp.kick()
        release_first.set()  # row 1 is published; its done update waits behind the long commit
        while len(sent) < 2 and time.monotonic() - t0 < 10.0:
            await asyncio.sleep(0.01)
        assert sorted(t for t, _ in sent) == ["t/1", "t/2"]  # (two events: in either order)
        assert max(t for _, t in sent) - t0 < 1.0  # not after the long commit (1.5 s)
        await blocker
        await asyncio.sleep(0.3)  # passes polling meanwhile (every 0.05 s) take neither row again
        assert sorted(t for t, _ in sent) == ["t/1", "t/2"]
        pending = await db.read(lambda c: c.execute("SELECT count(*) FROM outbox WHERE status='pending'").fetchone())
        assert pending[0] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5.0)
        await disp.aclose()
        await db.close()


# --------------------------------------------------------------------------- the state commit written aside


def so2_long(mn: str, i: int) -> float:
    """20 hours in which events stay open for hours (an update at every hour's close)."""
    hour = i // 60
    if mn == "MN1":
        return 80.0 if hour <= 8 or 12 <= hour <= 15 else 20.0
    return 90.0 if 2 <= hour <= 4 or 10 <= hour <= 17 else 20.0


#: Batches of an hour of both outlets: each closes the hour before, updating the events open. With
#: ``commit_max_messages=240`` every second batch is a group commit (by count), and the batch after it updates
#: the same events while that commit may still be written aside (they must not go ahead of it).
HOURS: list[list[tuple[Reading, OutletInfo]]] = [
    load_readings(REG, [minute(mn, H8 + timedelta(minutes=h * 60 + m), so2_long(mn, h * 60 + m))
                        for m in range(60) for mn in ("MN1", "MN2")], "hj212")
    for h in range(20)
]  # fmt: skip
ASIDE_CONFIGS = {
    "each-batch": {"commit_interval_s": 0.0},
    "by-count": {"commit_interval_s": 3600.0, "commit_max_messages": 240},
}


async def feed_hours(rt: ComplianceRuntime, batches: list[int], released: set[int]) -> None:
    for i in batches:
        res = await rt.on_batch(HOURS[i], [], None, release=lambda i=i: released.add(i))  # type: ignore[misc]
        assert res == []


async def reference(state_dir: Path) -> dict[str, Any]:
    """An uninterrupted run with every commit under the lock (no aside) and no alerts ahead of the state."""
    ref = runtime(state_dir, alerts_before_state=False, state_commit_aside=False)
    await ref.open()
    await feed_hours(ref, list(range(len(HOURS))), set())
    await ref.shutdown()
    await ref.close()
    return stored(state_dir)


@pytest.mark.parametrize("config", list(ASIDE_CONFIGS.values()), ids=list(ASIDE_CONFIGS))
async def test_the_state_written_aside_gives_the_uninterrupted_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any]
) -> None:
    want = await reference(tmp_path / "ref")
    assert len(want["alerts"]) >= 4 and len(want["events"]) >= 2
    aside: list[int] = []
    real_state = _state.commit_state

    def commit_state(conn: sqlite3.Connection, changes: Any, *a: Any) -> None:
        if isinstance(changes, _state.EncodedChanges):
            aside.append(len(changes.states))
        real_state(conn, changes, *a)

    monkeypatch.setattr(runtime_mod, "commit_state", commit_state)
    released: set[int] = set()
    rt = runtime(tmp_path / "aside", **config)
    await rt.open()
    await feed_hours(rt, list(range(len(HOURS))), released)
    await rt.shutdown()
    await rt.close()
    assert len(aside) >= 10  # (the crash test below stops at each of the first nine)
    assert stored(tmp_path / "aside") == want
    assert released == set(range(len(HOURS)))


@pytest.mark.parametrize("k", range(1, 10))
@pytest.mark.parametrize("mode", ["fail", "hold", "fail-late"])
@pytest.mark.parametrize("config", list(ASIDE_CONFIGS.values()), ids=list(ASIDE_CONFIGS))
async def test_a_crash_during_the_state_commit_written_aside_loses_nothing_acknowledged_and_alerts_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], mode: str, k: int
) -> None:
    """The k-th state commit written aside fails (``fail``: raised by the next batch), or never ends (``hold``: the
    process dies while it is written, batches going on meanwhile until one waits for the database), or fails
    after the next batches went on (``fail-late``: what they queued behind it is committed after the failure;
    by count, their updates of the events it holds must not have gone ahead of it); then a restart with what the
    broker redelivers (every batch not acknowledged) and the rest gives the results of an uninterrupted run:
    nothing acknowledged lost, no alert twice nor missing, the same events and states."""
    want = await reference(tmp_path / "ref")
    real_state, real_events = _state.commit_state, _state.commit_events
    crashed = threading.Event()  # the process is dead: nothing more is committed
    holding, gate = threading.Event(), threading.Event()
    calls: list[int] = []

    def commit_state(conn: sqlite3.Connection, changes: Any, *a: Any) -> None:
        if crashed.is_set():
            raise sqlite3.OperationalError("the process is dead")
        if isinstance(changes, _state.EncodedChanges):
            calls.append(1)
            if len(calls) == k:
                if mode == "fail":
                    raise sqlite3.OperationalError("disk I/O error (simulated)")
                holding.set()
                gate.wait(30.0)  # the write never commits: the process died meanwhile, or it fails late
                raise sqlite3.OperationalError("the process is dead" if crashed.is_set() else "disk I/O error (late)")
        real_state(conn, changes, *a)

    def commit_events(*a: Any) -> list[OutboxItem]:
        if crashed.is_set():
            raise sqlite3.OperationalError("the process is dead")
        return real_events(*a)

    encoded: list[int] = []  # the commits written aside so far (taken, their write queued at once)

    class StateCapture(_state.StateCapture):
        def __init__(self, *a: Any, **kw: Any) -> None:
            encoded.append(1)
            super().__init__(*a, **kw)

    monkeypatch.setattr(runtime_mod, "commit_state", commit_state)
    monkeypatch.setattr(runtime_mod, "commit_events", commit_events)
    monkeypatch.setattr(runtime_mod, "StateCapture", StateCapture)
    released: set[int] = set()
    rt = runtime(tmp_path / "crash", **config)
    await rt.open()
    everything = list(range(len(HOURS)))
    if mode == "fail":
        with pytest.raises(sqlite3.OperationalError, match="simulated"):
            await feed_hours(rt, everything, released)
        with pytest.raises(ServiceError):
            rt.check()
    else:
        fed = 0
        while len(encoded) < k:
            await feed_hours(rt, [fed], released)
            fed += 1
        assert await asyncio.to_thread(holding.wait, 10.0)  # the k-th is being written
        # batches go on while the commit is written, until one waits for the database (or three did not)
        task: asyncio.Future[None] | None = None
        last = fed - 1
        for i in range(fed, min(fed + 3, len(HOURS))):
            last = i
            task = asyncio.ensure_future(feed_hours(rt, [i], released))
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done:
                break
        if mode == "hold":
            crashed.set()
        gate.set()
        if task is not None:
            with contextlib.suppress(sqlite3.OperationalError):  # (a batch waiting for the database may go on)
                await task
        rest = everything[last + 1 :]
        if mode == "fail-late" and rest:  # the next batch raises the error: nothing more is judged
            with pytest.raises(sqlite3.OperationalError, match="late"):
                await feed_hours(rt, rest, released)
        with pytest.raises(ServiceError):
            rt.check()
    assert len(calls) == k
    crashed.set()
    await rt.close()
    acknowledged = set(released)
    assert len(acknowledged) < len(HOURS)
    if k > 1:
        assert acknowledged  # the commits before the k-th are durable and acknowledged
    monkeypatch.setattr(runtime_mod, "commit_state", real_state)
    monkeypatch.setattr(runtime_mod, "commit_events", real_events)

    # restart: the broker redelivers every batch not acknowledged, in order
    rt = runtime(tmp_path / "crash", **config)
    await rt.open()
    await feed_hours(rt, [i for i in everything if i not in acknowledged], released)
    await rt.shutdown()
    await rt.close()
    got = stored(tmp_path / "crash")
    # every alert once, each event's in the same order; alerts of different events may come in another order
    # than uninterrupted: a batch's alerts committed ahead (on their own connection) while the state commit before
    # it was being written are durable, that commit's own alerts come again after the restart
    assert sorted(got["alerts"]) == sorted(want["alerts"])
    assert got["per_event"] == want["per_event"]
    assert got["events"] == want["events"]
    assert got["states"] == want["states"]  # what was acknowledged before the crash is in the state
    assert released == set(everything)


@pytest.mark.parametrize(
    ("args", "env", "aside"),
    [([], {}, True), (["--no-state-commit-aside"], {}, False), ([], {"CEMS_STATE_COMMIT_ASIDE": "0"}, False)],
)
def test_cems_run_writes_the_state_aside_unless_told_not_to(
    tmp_path: Path, args: list[str], env: dict[str, str], aside: bool
) -> None:
    e = Env({"CEMS_STATE_DIR": str(tmp_path), **env})
    a = build_parser(e).parse_args(["run", "--config", "r.toml", *args])
    config = compliance_config(a, e)
    assert config is not None and config.state_commit_aside is aside


def test_a_bad_state_commit_aside_setting_is_a_config_error(tmp_path: Path) -> None:
    e = Env({"CEMS_STATE_DIR": str(tmp_path), "CEMS_STATE_COMMIT_ASIDE": "yes"})
    with pytest.raises(ConfigError, match="CEMS_STATE_COMMIT_ASIDE"):
        compliance_config(build_parser(e).parse_args(["run", "--config", "r.toml"]), e)


async def test_a_restart_restores_the_counted_hours_from_the_stored_rate_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open`` restores the transmission counter from ``rate_runs`` a chunk at a time in the database thread
    (issue 20): after a restart the counter is the one the runtime held when it stopped (chunks of 1 row: an
    outlet and factor's months fall in several chunks)."""
    rt = runtime(tmp_path)
    await rt.open()
    await feed(rt, list(range(len(BATCHES))), set())
    want = rt.engine.rates.snapshot()
    await rt.shutdown()
    await rt.close()
    assert any(want["seen"].values())
    chunks: list[int] = []
    real = _state.restore_rate_state

    def restore(conn: sqlite3.Connection, rates: Any, chunk: int = 0) -> int:
        n = real(conn, rates, 1)
        chunks.append(n)
        return n

    monkeypatch.setattr(runtime_mod, "restore_rate_state", restore)
    with sqlite3.connect(tmp_path / _state.DB_FILE) as conn:
        months = conn.execute("SELECT count(DISTINCT month), count(*) FROM rate_runs").fetchone()
    again = runtime(tmp_path)
    await again.open()
    assert again.engine.rates.snapshot() == want
    assert chunks == [months[1]] and months[1] > 1
    await again.close()


async def test_a_state_commit_serialised_after_the_lock_holds_each_outlet_as_it_was_when_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, alert latency: a state commit written aside takes the changed outlets under the engine lock and
    serialises them after letting it go, one outlet a slice here; the batches judged meanwhile change the same
    outlets. Copy on write: every commit still writes each outlet's state as it was when the commit took it
    (the text an eager serialisation gave at that moment), and the run ends with the states of an uninterrupted
    reference run."""
    taken: list[_state.EncodedChanges] = []  # each commit's states serialised at once, when taken
    written: list[_state.EncodedChanges] = []  # what each commit wrote

    class StateCapture(_state.StateCapture):
        def __init__(self, changes: Any, eager: Any = ()) -> None:
            taken.append(_state.encode_changes(changes))
            super().__init__(changes, eager)

    real_state = _state.commit_state

    def commit_state(conn: sqlite3.Connection, changes: Any, *a: Any) -> None:
        if isinstance(changes, _state.EncodedChanges):
            written.append(changes)
        real_state(conn, changes, *a)

    monkeypatch.setattr(runtime_mod, "StateCapture", StateCapture)
    monkeypatch.setattr(runtime_mod, "commit_state", commit_state)
    monkeypatch.setattr(runtime_mod, "CAPTURE_SLICE_OUTLETS", 1)
    rt = runtime(tmp_path / "cow", commit_interval_s=0.0)  # a state commit with every batch
    await rt.open()
    overlapped = 0
    for batch in BATCHES:
        await rt.on_batch(batch, [], None, release=lambda: None)
        # the next batch is judged before the loop ran the serialisation: it changes outlets still to serialise
        aside = rt._aside
        overlapped += aside is not None and not aside.done()
    await rt.shutdown()
    await rt.close()
    assert overlapped >= len(BATCHES) // 2, overlapped
    assert len(written) == len(taken) >= len(BATCHES) // 2
    for got, want in zip(written, taken, strict=True):
        assert got.states == want.states
        assert got.journals == want.journals and got.closed_before == want.closed_before
    ref = runtime(tmp_path / "ref", state_commit_aside=False)
    await ref.open()
    await feed(ref, list(range(len(BATCHES))), set())
    await ref.shutdown()
    await ref.close()
    assert stored(tmp_path / "cow") == stored(tmp_path / "ref")


async def test_an_alert_of_a_due_commit_leaves_while_the_state_commit_before_it_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, alert latency (measured in `cems bench`: a due state commit waited up to 0.5 s in ``settle`` for the
    one before it, written aside, before its alerts were committed). A batch whose state commit is due while the
    previous one is still being written commits its alerts (events not in that commit) ahead of both: they are
    durable while the earlier write is held, and the run ends with the results of a run without any of this."""

    def exceeding(i: int) -> float:  # each outlet's hour 0 exceeds
        return 80.0 if i < 60 else 20.0

    first = [minute("MN1", H8 + timedelta(minutes=i), exceeding(i)) for i in range(80)]
    first += [minute("MN2", H8 + timedelta(minutes=i), exceeding(i)) for i in range(60)]
    later = [minute(mn, H8 + timedelta(minutes=i), 20.0) for i in range(80, 150) for mn in ("MN1", "MN2")]
    batches = [
        load_readings(REG, first, "hj212"),  # closes MN1's hour 0: MN1's event opens; its state commit is held
        load_readings(REG, [minute("MN2", H8 + timedelta(minutes=i), 20.0) for i in range(60, 80)], "hj212"),  # MN2's
        load_readings(REG, later, "hj212"),
    ]

    def alerted(state_dir: Path, mn: str) -> list[tuple[str, str]]:
        s = stored(state_dir)
        return [a for e, alerts in s["per_event"].items() if s["events"][e]["mn"] == mn for a in alerts]

    async def run(rt: ComplianceRuntime, hold: threading.Event | None = None) -> None:
        await rt.open()
        for i, batch in enumerate(batches):
            task = asyncio.ensure_future(rt.on_batch(batch, [], None, release=lambda: None))
            if i == 1 and hold is not None:
                # MN2's alert is durable while MN1's state commit is still held in the database thread
                for _ in range(100):
                    if alerted(rt.config.state_dir, "MN2") or task.done():
                        break
                    await asyncio.sleep(0.05)
                mn2 = alerted(rt.config.state_dir, "MN2")
                hold.set()
                assert mn2, "MN2's alert waited for MN1's state commit"
            assert await task == []
        await rt.shutdown()
        await rt.close()

    ref = runtime(tmp_path / "ref", alerts_before_state=False, state_commit_aside=False)
    await run(ref)
    want = stored(tmp_path / "ref")
    assert alerted(tmp_path / "ref", "MN1") and alerted(tmp_path / "ref", "MN2")

    gate, holding = threading.Event(), threading.Event()
    real_state = _state.commit_state

    def commit_state(conn: sqlite3.Connection, changes: Any, *a: Any) -> None:
        if isinstance(changes, _state.EncodedChanges) and not holding.is_set():
            holding.set()
            assert gate.wait(30.0)
        real_state(conn, changes, *a)

    monkeypatch.setattr(runtime_mod, "commit_state", commit_state)
    rt = runtime(tmp_path / "ahead", commit_interval_s=0.0)  # every batch's state commit is due
    await run(rt, gate)
    assert holding.is_set()
    assert stored(tmp_path / "ahead") == want
