"""How the ingest pipeline (cems/service/ingest.py ``_run``) forms its batches, on a fake broker connection and a
fake InfluxDB: in latency mode (issue 20) what arrives while the committer is busy (writing, or waiting for the
rules of the batch before) is prepared meanwhile and goes out as one batch when it is free, a full batch goes
ahead at once, and in either mode every message is written once and acknowledged once, in arrival order, also
when the service stops with messages prepared but not handed over yet, or the database refuses a line."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cems.devtools.bench import _data
from cems.errors import InfluxWriteError
from cems.registry import parse_registry
from cems.service.ingest import PREPARE_SLICE, IngestService, IngestSettings
from cems.service.mqtt import InboundMessage, Inbox, MqttSettings
from cems.sinks.influx import InfluxConfig

N_OUTLETS = 20
REG = parse_registry(_data.registry_toml(N_OUTLETS))


class FakeConnection:
    """The broker side: an inbox the test fills, and the acknowledgements in the order given."""

    class _Settings:
        url = "mqtt://fake"

    def __init__(self) -> None:
        self.queue = Inbox(20_000)
        self.settings = self._Settings()
        self.acked: list[int] = []
        self.published: list[tuple[str, bytes | str]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def ack(self, msg: InboundMessage) -> None:
        self.acked.append(msg.mid)

    async def publish(self, topic: str, body: bytes | str, qos: int = 1) -> None:
        self.published.append((topic, body))


class FakeWriter:
    """InfluxDB: each write's lines, kept; a write waits while ``gate`` is clear."""

    def __init__(self) -> None:
        self.config = InfluxConfig(url="http://fake", db="x")
        self.writes: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()  # a write waits at the gate
        self.refuse: set[str] = set()  # outlets whose lines the database refuses (4xx)

    async def ensure_database(self) -> None:
        pass

    async def write(self, lines: list[str]) -> None:
        if not self.gate.is_set():
            self.waiting.set()
            await self.gate.wait()
        if any(line.split(",mn=", 1)[1].split(",", 1)[0] in self.refuse for line in lines):
            raise InfluxWriteError("400 partial write: field type conflict", retryable=False, status=400)
        self.writes.append(list(lines))

    async def aclose(self) -> None:
        pass


def messages(n: int) -> list[InboundMessage]:
    """``n`` real-time readings (HJ 212 and JSON), round robin over the outlets, 10 s of data time per round."""
    rng = random.Random(7)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    out = []
    for i in range(n):
        o = _data.outlet(i % N_OUTLETS)
        t = base + timedelta(seconds=10 * (i // N_OUTLETS))
        topic, payload = _data.message(o, t, rng, hj212_packet=i % 2 == 0)
        out.append(InboundMessage(topic, payload, i + 1, 1, time.time()))
    return out


def service(**kw: object) -> tuple[IngestService, FakeConnection, FakeWriter]:
    svc = IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"), IngestSettings(**kw))  # type: ignore[arg-type]
    conn, writer = FakeConnection(), FakeWriter()
    svc.conn = conn  # type: ignore[assignment]
    svc.writer = writer  # type: ignore[assignment]
    return svc, conn, writer


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run(svc: IngestService, body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        await body(stop)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20.0)


def written_mns(writer: FakeWriter) -> list[str]:
    """The outlet (``mn`` tag) of every line written, in the order written."""
    return [line.split(",mn=", 1)[1].split(",", 1)[0] for w in writer.writes for line in w]


def mns(msgs: list[InboundMessage]) -> list[str]:
    return [m.topic.split("/")[2] for m in msgs]


async def test_latency_mode_hands_what_arrived_meanwhile_over_as_one_batch() -> None:
    svc, conn, writer = service(latency_batches=True)
    msgs = messages(61)

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(msgs[0])
        await until(writer.waiting.is_set, "the first write")
        for m in msgs[1:]:  # arrive one by one while the committer is busy: prepared, not queued as batches
            conn.queue.put(m)
            await asyncio.sleep(0)
        await until(lambda: conn.queue.empty(), "the inbox drained")
        await asyncio.sleep(0.05)
        writer.gate.set()
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    assert [len(w) for w in writer.writes] == [1, 60]
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]
    assert svc.stats.batches == 2 and svc.stats.accepted == len(msgs)


async def test_latency_mode_prepares_a_backlog_a_slice_at_a_time_with_the_loop_turning_between_slices() -> None:
    """A backlog is decoded ``PREPARE_SLICE`` messages at a time, other tasks (the rules stage's reads, an alert's
    publish) running between two slices, and still goes out as one batch when the committer is free."""
    svc, conn, writer = service(latency_batches=True)
    msgs = messages(3 * PREPARE_SLICE + 17)
    sizes: list[int] = []
    turns: list[int] = []  # the other task's turns seen at each prepare
    ticks = [0]
    prepare = svc.prepare

    def recording_prepare(batch: list[InboundMessage], in_batch: set[int] | None = None) -> Any:
        sizes.append(len(batch))
        turns.append(ticks[0])
        return prepare(batch, in_batch)

    svc.prepare = recording_prepare  # type: ignore[method-assign]

    async def ticker() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(msgs[0])
        await until(writer.waiting.is_set, "the first write")
        t = asyncio.create_task(ticker())
        try:
            for m in msgs[1:]:  # a backlog arrives at once while the committer is busy
                conn.queue.put(m)
            await until(lambda: conn.queue.empty(), "the inbox drained")
            await asyncio.sleep(0.05)
            writer.gate.set()
            await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")
        finally:
            t.cancel()

    await run(svc, body)
    backlog = sizes[1:]
    assert sum(backlog) == len(msgs) - 1 and max(backlog) == PREPARE_SLICE
    assert all(b > a for a, b in itertools.pairwise(turns[1:]))  # the loop turned between slices
    assert [len(w) for w in writer.writes] == [1, len(msgs) - 1]  # one batch, as when prepared at once
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]


async def test_without_latency_mode_each_drain_is_a_batch_queued_at_once() -> None:
    svc, conn, writer = service(latency_batches=False)
    msgs = messages(4)

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(msgs[0])
        await until(writer.waiting.is_set, "the first write")
        for m in msgs[1:]:
            conn.queue.put(m)
            await until(lambda: conn.queue.empty(), "the inbox drained")
            await asyncio.sleep(0.01)
        writer.gate.set()
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    # two batches wait prepared (the queue holds two), the third message waits in the inbox behind them
    assert [len(w) for w in writer.writes] == [1, 1, 1, 1]
    assert conn.acked == [m.mid for m in msgs]


async def test_a_full_batch_goes_ahead_without_waiting_for_the_committer() -> None:
    svc, conn, writer = service(latency_batches=True, batch_max=10)
    msgs = messages(45)

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(msgs[0])
        await until(writer.waiting.is_set, "the first write")
        for m in msgs[1:]:
            conn.queue.put(m)
        await asyncio.sleep(0.05)
        writer.gate.set()
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    sizes = [len(w) for w in writer.writes]
    assert sizes[:3] == [1, 10, 10] and max(sizes) <= 10 and sum(sizes) == len(msgs)
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]


@pytest.mark.parametrize("latency", [True, False])
async def test_a_stream_is_written_and_acknowledged_once_in_arrival_order(latency: bool) -> None:
    svc, conn, writer = service(latency_batches=latency, batch_max=50)
    msgs = messages(400)
    slow = writer.write

    async def write(lines: list[str]) -> None:  # a database that takes its time
        await asyncio.sleep(0.002 + 0.0001 * len(lines))
        await slow(lines)

    writer.write = write  # type: ignore[method-assign]

    async def body(stop: asyncio.Event) -> None:
        for i, m in enumerate(msgs):
            conn.queue.put(m)
            if i % 7 == 0:
                await asyncio.sleep(0.001)
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]
    assert all(len(w) <= 50 for w in writer.writes)
    assert svc.stats.accepted == len(msgs) and not svc.stats.rejected


async def test_stopping_writes_and_acknowledges_what_was_prepared_but_not_handed_over() -> None:
    svc, conn, writer = service(latency_batches=True)
    msgs = messages(30)

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(msgs[0])
        await until(writer.waiting.is_set, "the first write")
        for m in msgs[1:]:
            conn.queue.put(m)
        await until(lambda: conn.queue.empty(), "the inbox drained (prepared, held for the committer)")
        await asyncio.sleep(0.02)
        stop.set()
        await asyncio.sleep(0.02)
        writer.gate.set()

    await run(svc, body)
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]


def gated_rules(svc: IngestService) -> tuple[asyncio.Event, list[int]]:
    """Make the rules stage wait while the returned gate is clear; the sizes of the batches it judged."""
    gate, judged = asyncio.Event(), []
    gate.set()
    rules = svc.rules_stage

    async def rules_stage(p: Any, stop: asyncio.Event | None) -> None:
        await gate.wait()
        judged.append(len(p.good))
        await rules(p, stop)

    svc.rules_stage = rules_stage  # type: ignore[method-assign]
    return gate, judged


@pytest.mark.parametrize("latency", [True, False])
async def test_what_arrives_while_the_committer_waits_for_the_rules_goes_out_as_one_batch_after_them(
    latency: bool,
) -> None:
    svc, conn, writer = service(latency_batches=latency)
    gate, judged = gated_rules(svc)
    msgs = messages(12)

    async def body(stop: asyncio.Event) -> None:
        gate.clear()
        conn.queue.put(msgs[0])
        await until(lambda: len(writer.writes) == 1, "the first write")
        for m in msgs[1:]:  # one by one, while the first batch's rules wait
            conn.queue.put(m)
            await asyncio.sleep(0.01)
        assert conn.acked == []  # nothing judged yet: nothing acknowledged
        assert len(writer.writes) == 2  # the second batch is written, its rules wait for the first's
        gate.set()
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    assert written_mns(writer) == mns(msgs)
    assert conn.acked == [m.mid for m in msgs]
    if latency:
        assert judged == [1, 1, 10]
    else:  # one batch per message: two queued, a third waiting to be queued; the rest in the inbox, drained after
        assert judged == [1, 1, 1, 1, 1, 7]


async def test_a_line_refused_in_a_batch_formed_while_the_rules_waited_is_dead_lettered_the_others_stored() -> None:
    svc, conn, writer = service(latency_batches=True)
    gate, judged = gated_rules(svc)
    msgs = messages(9)
    bad = mns(msgs)[4]
    writer.refuse = {bad}

    async def body(stop: asyncio.Event) -> None:
        gate.clear()
        conn.queue.put(msgs[0])
        await until(lambda: len(writer.writes) == 1, "the first write")
        for m in msgs[1:]:
            conn.queue.put(m)
            await asyncio.sleep(0.01)
        gate.set()
        await until(lambda: len(conn.acked) == len(msgs), "every acknowledgement")

    await run(svc, body)
    assert written_mns(writer) == [mn for mn in mns(msgs) if mn != bad]
    assert sorted(conn.acked) == [m.mid for m in msgs]
    assert [t for t, _ in conn.published] == ["cems/deadletter/v1/database_rejected"]
    assert judged == [1, 1, 6] and svc.stats.rejected == {"database_rejected": 1}
    assert svc.stats.accepted == len(msgs) - 1


async def test_an_identical_message_prepared_later_for_the_same_batch_is_a_duplicate() -> None:
    svc, conn, writer = service(latency_batches=True)
    first, second = messages(2)
    again = InboundMessage(second.topic, second.payload, 3, 1, time.time())

    async def body(stop: asyncio.Event) -> None:
        writer.gate.clear()
        conn.queue.put(first)
        await until(writer.waiting.is_set, "the first write")
        for m in (second, again):  # prepared one after the other, handed over together
            conn.queue.put(m)
            await until(lambda: conn.queue.empty(), "the inbox drained")
            await asyncio.sleep(0.01)
        writer.gate.set()
        await until(lambda: len(conn.acked) == 3, "every acknowledgement")

    await run(svc, body)
    assert [len(w) for w in writer.writes] == [1, 1]
    assert [t for t, _ in conn.published] == ["cems/deadletter/v1/duplicate"]
    assert sorted(conn.acked) == [1, 2, 3]


async def test_a_failing_committer_ends_the_service_while_batches_wait_for_it() -> None:
    """The committer fails while the batch queue is full and the next batch waits to be handed over: the
    service ends with the committer's error (it used to wait forever on the full queue) and acknowledges
    nothing of what was not committed."""
    svc, conn, _writer = service(latency_batches=False, batch_max=10)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def broken(p: Any, stop: asyncio.Event | None) -> bool:
        entered.set()
        await gate.wait()
        raise RuntimeError("the committer broke")

    svc.write_stage = broken  # type: ignore[method-assign]
    msgs = messages(40)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    for m in msgs[:10]:
        conn.queue.put(m)
    await asyncio.wait_for(entered.wait(), 5.0)
    for m in msgs[10:]:  # three batches of 10: two fill the queue (maxsize 2), the third waits to be handed over
        conn.queue.put(m)
    await until(lambda: conn.queue.empty(), "the inbox drained")
    await asyncio.sleep(0.05)
    gate.set()
    try:
        with pytest.raises(RuntimeError, match="the committer broke"):
            await asyncio.wait_for(task, 5.0)
    finally:
        stop.set()
    assert conn.acked == []
