"""The ingest service: MQTT → decode → validate → InfluxDB → compliance rules, with dead letters.

Delivery guarantee: at least once.  A message is acknowledged to the broker only after its point is
written to InfluxDB (or, for a rejected message, after its dead letter was acknowledged by the broker).
Writes are idempotent (one point per outlet, stream and data time), so redelivery after a crash is harmless.

InfluxDB outages: with a spool directory (``cems run`` default), a batch that cannot be written is appended
to a bounded, fsync'd on-disk spool (:mod:`cems.sinks.spool`) and then acknowledged; a drainer writes the
spool to InfluxDB in order when it returns, and until the spool is empty new batches queue behind it (order
is kept).  When the spool is full the service stops acknowledging (back-pressure to the broker) instead of
losing anything.  Without a spool the service retries with back-off and does not acknowledge meanwhile.

With a :class:`~cems.service.compliance.ComplianceConfig` (``cems run`` default) every durable batch also
goes through the compliance engine: hourly records and event updates are written to InfluxDB and the
engine state, events and alert outbox are committed to SQLite before the batch is acknowledged
(:mod:`cems.service.compliance`); acknowledgement commands arrive on ``{command_prefix}/ack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import operator
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cems.decode import check_packet, decode_message, hj212_text
from cems.errors import InfluxWriteError, RejectedMessage, ServiceError, SpoolFull
from cems.model import Reading, unix_time
from cems.protocol import hj212
from cems.registry import OutletInfo, Registry
from cems.registry.shard import Shard, data_subscriptions, shard_of
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.mqtt import InboundMessage, MqttConnection, MqttSettings
from cems.sinks.archive import ArchiveError, ArchiveSettings, Entry, EvidenceArchive
from cems.sinks.influx import InfluxConfig, InfluxWriter, config_query
from cems.sinks.lineprotocol import GRID_READING_MEASUREMENT, grid_reading_line, reading_line
from cems.sinks.spool import Spool
from cems.validate import DEFAULT_POLICY, ValidationPolicy, validate, validate_grid

log = logging.getLogger(__name__)

GRID_MEASUREMENT = GRID_READING_MEASUREMENT


@dataclass
class IngestStats:
    """Counters of the running service (also shown by ``cems demo`` and exported as metrics)."""

    received: int = 0
    accepted: int = 0
    values: int = 0
    #: HJ 212 values that were not finite numbers (``nan``, ``inf``): left out, the values beside them stored.
    values_dropped: int = 0
    points_written: int = 0
    batches: int = 0
    write_retries: int = 0
    writes: int = 0
    write_seconds: float = 0.0
    spooled_points: int = 0
    spool_bytes: int = 0
    #: HJ 212 split packets (PNUM/PNO) reassembled into one reading, and parts waiting for the rest.
    split_reassembled: int = 0
    split_parts_held: int = 0
    #: Lines appended to the evidence archive, and appends that failed (retried; nothing acknowledged meanwhile).
    evidence_lines: int = 0
    evidence_failures: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    last_data_time: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "values": self.values,
            "values_dropped": self.values_dropped,
            "points_written": self.points_written,
            "batches": self.batches,
            "write_retries": self.write_retries,
            "spooled_points": self.spooled_points,
            "split_reassembled": self.split_reassembled,
            "split_parts_held": self.split_parts_held,
            "evidence_lines": self.evidence_lines,
            "evidence_failures": self.evidence_failures,
            "rejected": dict(self.rejected),
        }


#: Latency mode: the messages decoded and validated between two turns of the event loop, at most (≈ 10–20 ms of
#: CPU). Before, a backlog was prepared at once: in the alert phase's trace one prepare held the loop 108 ms while
#: the alert path's read, write and publish waited behind it (docs/benchmark.md, eighth session).
PREPARE_SLICE: Final = 256


@dataclass(frozen=True, slots=True)
class IngestSettings:
    batch_max: int = 5000
    queue_size: int = 20000
    require_crc: bool = True
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    policy: ValidationPolicy = DEFAULT_POLICY
    #: Where batches wait while InfluxDB is down (None: no spool, retry without acknowledging).
    spool_dir: Path | None = None
    spool_max_bytes: int = 1 << 30
    #: Identical messages (topic and payload) seen among this many recent stored ones are duplicates.
    dedupe_window: int = 200_000
    #: HJ 212 split packets (PNUM/PNO) on ``{prefix}/{mn}/hj212``: a part waits, unacknowledged, at most this
    #: long for the rest of its (MN, QN, CN) group, and at most this many groups wait; then the group's parts
    #: are dead-lettered ``hj212_split``.
    split_timeout_s: float = 30.0
    split_max_pending: int = 1000
    #: The evidence archive of every raw message (:mod:`cems.sinks.archive`; None: not kept).
    evidence: ArchiveSettings | None = None
    #: This ingester's shard (``cems run --shard K/N``; the registry is then :func:`shard_registry`'s): a
    #: reading of another shard's outlet is rejected ``wrong_shard``, and only shard 0 takes the grid sensors.
    shard: Shard | None = None
    #: Subscribe to the data topics as the shared subscription ``$share/{share_group}/…`` (docs/scaling.md).
    share_group: str | None = None
    #: Latency mode: messages are prepared (decoded, validated) as they arrive, and what is prepared is handed
    #: to the committer as one batch when it waits for one (or once ``batch_max`` messages are prepared), so
    #: a batch holds the newest messages instead of waiting, small and stale, behind the running ones (alert
    #: latency, issue 20).  Without it each drain of the inbox is a batch of its own, queued at once.
    latency_batches: bool = True


@dataclass(slots=True)
class _Prepared:
    """A batch after the CPU stage: what to write, to acknowledge, to feed the rules, to dead-letter."""

    lines: list[str]
    good: list[InboundMessage]
    #: (reading, its outlet), or (reading, None) for a grid sensor's reading; None: nothing to judge
    items: list[tuple[Reading, OutletInfo | None] | None]
    commands: list[InboundMessage]
    rejects: list[tuple[InboundMessage, RejectedMessage]]
    fingerprints: list[int]
    #: What the evidence archive keeps of the batch (every message with its verdict); ``rejects`` up to
    #: ``archived`` are in it, later ones (refused by the database, bad commands) are archived as verdicts.
    evidence: list[Entry] = field(default_factory=list)
    archived: int = 0


def _merge(a: _Prepared, b: _Prepared) -> _Prepared:
    """``b``, prepared after ``a``, appended to it: one batch, in arrival order.  (Both are fresh from
    :meth:`IngestService.prepare`: every reject of each is in its evidence, so ``archived`` adds up.)"""
    a.lines += b.lines
    a.good += b.good
    a.items += b.items
    a.commands += b.commands
    a.rejects += b.rejects
    a.fingerprints += b.fingerprints
    a.evidence += b.evidence
    a.archived += b.archived
    return a


def _entry(msg: InboundMessage, status: str, err: RejectedMessage | None = None, *, kind: str = "msg") -> Entry:
    """The evidence archive's entry of one message and its verdict."""
    via = {"connection": msg.connection, "packet_id": msg.mid, "qos": msg.qos}
    reason, detail = (None, None) if err is None else (err.reason, err.detail)
    # (Entry(...) without the Python frame of the named tuple's __new__: one per message)
    return _new_tuple(Entry, (msg.payload, msg.received, msg.topic, status, reason, detail, kind, via, None))


_new_tuple: Final = tuple.__new__
#: A measurement's values (``Measurement.values``, field 1 of the named tuple).
_VALUES: Final = operator.itemgetter(1)


def _tune_gc() -> None:
    """The registry and the restored engine state are long-lived and hold no garbage: move them out of the
    cyclic collector's sight (``gc.freeze``), and collect the young generation less often (each message
    allocates a few hundred short-lived objects; the default threshold of 700 runs a collection every few
    messages) and the older generations less often still.  Measured with ``cems bench``: docs/benchmark.md."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: Allocations between two collections of the youngest generation (CPython's default is 700), and young
#: (then middle) collections between two of the next generation (default 10, 10): measured with ``cems bench``,
#: (50 000, 100, 100) costs ≈ 5 % less CPU per message than (50 000, 10, 10), and ≈ 25 % less than the defaults.
GC_THRESHOLDS: Final = (50_000, 100, 100)


def internal_error(where: str, exc: BaseException) -> RejectedMessage:
    """The rejection of a message whose processing raised ``exc`` (a bug): the traceback is logged here, the
    message is then dead-lettered and acknowledged like any other rejection, and ingestion goes on."""
    log.exception("internal error processing a message on %s (dead-lettered as internal_error)", where, exc_info=exc)
    return RejectedMessage("internal_error", f"{type(exc).__name__}: {exc}")


#: What a dead letter carries at most of the rejected payload (bytes) and of its detail and topic (characters):
#: a letter must stay far below the broker's packet limit (10 MiB by default), or publishing it would get the
#: ingester disconnected again and again (issue 13).
DEAD_LETTER_MAX_PAYLOAD: Final = 4096
DEAD_LETTER_MAX_TEXT: Final = 1024


def _cut(text: str) -> tuple[str, bool]:
    if len(text) <= DEAD_LETTER_MAX_TEXT:
        return text, False
    return text[:DEAD_LETTER_MAX_TEXT] + f"… ({len(text)} characters)", True


def dead_letter(topic: str, payload: bytes, received: float, err: RejectedMessage) -> str:
    """The JSON dead letter of a rejected message (docs/payload.md, "Dead letters"), bounded whatever came in:
    ``payload`` (UTF-8 text) or ``payload_hex`` holds at most the first :data:`DEAD_LETTER_MAX_PAYLOAD` bytes,
    ``detail`` and ``topic`` at most :data:`DEAD_LETTER_MAX_TEXT` characters; ``payload_bytes`` is the size
    received and ``truncated`` says whether anything was cut."""
    n = len(payload)
    head = payload[:DEAD_LETTER_MAX_PAYLOAD]
    cut = n > DEAD_LETTER_MAX_PAYLOAD
    body: dict[str, object]
    try:
        # a cut inside a multi-byte character is not an encoding error: drop its first bytes (at most 3)
        text = head.decode("utf-8", "strict") if not cut else _utf8_prefix(head)
        body = {"payload": text}
    except UnicodeDecodeError:
        body = {"payload_hex": head.hex()}
    detail, detail_cut = _cut(err.detail)
    where, topic_cut = _cut(topic)
    doc = {
        "reason": err.reason,
        "detail": detail,
        "topic": where,
        "received_at": datetime.fromtimestamp(received, UTC).isoformat(),
        **body,
        "payload_bytes": n,
        "truncated": cut or detail_cut or topic_cut,
    }
    return json.dumps(doc, ensure_ascii=False)


def _utf8_prefix(head: bytes) -> str:
    """``head`` (cut from a longer payload) as UTF-8, without a last character the cut left incomplete."""
    try:
        return head.decode("utf-8", "strict")
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(head) - 3:
            return head[: e.start].decode("utf-8", "strict")
        raise


def _lock_spool(directory: Path) -> int:
    """Hold ``directory/.lock`` (``flock``, released when the process ends): two ingesters never share a spool,
    whose order and truncation assume a single writer (docs/scaling.md: each ingester its own state and spool)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        raise ServiceError(
            f"spool {directory} is in use by another ingester: give each ingester its own --state-dir "
            "(or --spool-dir), e.g. with --shard K/N"
        ) from e
    return fd


class IngestService:
    def __init__(
        self,
        registry: Registry,
        mqtt: MqttSettings,
        influx: InfluxConfig,
        settings: IngestSettings | None = None,
        *,
        compliance: ComplianceConfig | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or IngestSettings()
        self.stats = IngestStats()
        self.writer = InfluxWriter(influx)
        t = registry.topics
        shard = self.settings.shard
        grid = shard is None or shard.index == 0
        subs = [(f, 1) for f in data_subscriptions(t, share_group=self.settings.share_group, grid=grid)]
        #: The compliance rules (``None``: readings are stored only).
        self.compliance: ComplianceRuntime | None = None
        self._command_topic: str | None = None
        if compliance is not None:
            self.compliance = ComplianceRuntime(
                registry,
                compliance,
                write=self._write_derived,
                publish=self._publish_alert,
                # the live township ranking reads grid_daily back with the writer's credentials, once the
                # spool (if any) has drained into the database
                rank_query=config_query(influx),
                rank_ready=lambda: self.spool is None or self.spool.empty(),
                # a full batch waiting: the clock holds (data it would miss are in the backlog)
                behind=lambda: self.conn.queue.qsize() >= self.settings.batch_max,
            )
            self._command_topic = self.compliance.ack_topic
            subs.append((self._command_topic, 1))
            subs.append((self.compliance.warning_topic, 1))  # heavy-pollution warning settings (issue 16)
            subs.append((self.compliance.mark_topic, 1))  # marks entered by the bureau (issue 14)
            subs.append((self.compliance.action_topic, 1))  # event actions of the duty console (issue 19)
        #: Topics whose messages are commands, not data (besides the enterprises' ``{prefix}/{mn}/mark``).
        self._commands: frozenset[str] = frozenset()
        if self.compliance is not None:
            c = self.compliance
            self._commands = frozenset({c.ack_topic, c.warning_topic, c.action_topic, c.mark_topic})
        self.conn = MqttConnection(mqtt, subs, queue_size=self.settings.queue_size)
        self.spool: Spool | None = None
        if self.settings.spool_dir is not None:
            self.spool = Spool(self.settings.spool_dir, max_bytes=self.settings.spool_max_bytes)
            self.stats.spool_bytes = self.spool.size_bytes
        self._spool_wake = asyncio.Event()
        self._grid = {g.id: g for g in registry.grid_sensor}
        #: Fingerprints of recently stored messages (insertion-ordered, bounded): a DAS resending a packet
        #: it got no reply for, or a broker redelivering one whose PUBACK was lost, is a ``duplicate``.
        #: (A set and a deque of the same fingerprints, oldest first: evicting the oldest of a plain dict with
        #: ``next(iter(d))`` walks every deleted slot before it, ≈ 18 µs per message once the window is full;
        #: an OrderedDict takes ≈ 105 bytes an entry, these two ≈ 50: issue 20, memory.)
        self._recent: set[int] = set()
        self._recent_order: deque[int] = deque()
        #: HJ 212 split packets: the parts of each incomplete (MN, QN, CN) group and the messages that carried
        #: them, held unacknowledged until the reassembled reading is durable (then acknowledged with it: the
        #: ``_companions`` of the last part's message); a group that times out or is evicted is dead-lettered.
        self._reassembler = hj212.Reassembler(
            max_pending=self.settings.split_max_pending,
            max_age_packets=1 << 62,
            ttl_s=self.settings.split_timeout_s,
            on_drop=self._split_dropped,
        )
        self._held: dict[tuple[str | None, str | None, str], list[InboundMessage]] = {}
        self._companions: dict[int, list[InboundMessage]] = {}
        self._split_rejects: list[tuple[InboundMessage, RejectedMessage]] = []
        ev = self.settings.evidence
        self.archive: EvidenceArchive | None = EvidenceArchive(ev) if ev is not None else None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then process what was received, acknowledge it, and disconnect."""
        spool_lock = _lock_spool(self.spool.dir) if self.spool is not None else None
        try:
            await self._run(stop)
        finally:
            if spool_lock is not None:
                os.close(spool_lock)

    async def _run(self, stop: asyncio.Event) -> None:
        await self._retry(self.writer.ensure_database, stop)
        if self.archive is not None:
            await asyncio.to_thread(self.archive.open)  # recovers and seals what a crash left open
        comp = self.compliance
        if comp is not None:
            await comp.open()  # restore the engine before the first message is consumed
        _tune_gc()
        drainer: asyncio.Task[None] | None = None
        if self.spool is not None:
            if not self.spool.empty():
                log.warning(
                    "spool %s holds %d bytes from before: writing them first", self.spool.dir, self.spool.size_bytes
                )
            drainer = asyncio.create_task(self._drain_spool(stop))
        try:
            await self.conn.start()
            log.info("ingesting from %s into %s", self.conn.settings.url, self.writer.config.url)
            if comp is not None:
                comp.start(stop)
            # Three-stage pipeline: the CPU work of a batch (decode, validate, line protocol), the InfluxDB write
            # of the batch before it and the rules of the one before that overlap.  Each stage takes the batches
            # in order (writes never overtake each other, so a later value of a key is written later), and a
            # batch is acknowledged only after its own rules.
            # Latency mode (``latency_batches``): what is prepared meanwhile is handed over as one batch when the
            # committer waits for one (``idle``) or when it is full, so a batch is formed as late as possible.
            prepared: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=2)
            idle = asyncio.Event()  # set while the committer waits on an empty ``prepared``

            async def committer() -> None:
                rules: asyncio.Task[None] | None = None
                try:
                    while True:
                        getter = asyncio.ensure_future(prepared.get())
                        if prepared.empty():
                            idle.set()
                        if rules is not None and not rules.done():
                            await asyncio.wait({getter, rules}, return_when=asyncio.FIRST_COMPLETED)
                        if rules is not None and rules.done():
                            rules.result()  # raises what failed in the rules stage
                            rules = None
                        p = await getter
                        idle.clear()
                        if p is None:
                            break
                        written = await self.write_stage(p, stop)
                        if rules is not None:
                            await rules  # the previous batch's rules finish first: rules and acks stay in order
                            rules = None
                        if written:
                            rules = asyncio.create_task(self.rules_stage(p, stop))
                    if rules is not None:
                        await rules
                        rules = None
                finally:
                    if rules is not None and not rules.done():  # failing or cancelled: stop the rules too
                        rules.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await rules

            ctask = asyncio.create_task(committer())

            async def hand_over(item: _Prepared | None) -> None:
                """``item`` to the committer; returns early if the committer ends (fails) meanwhile, which the
                loop then raises, instead of waiting forever on a full queue nobody takes from."""
                putter = asyncio.ensure_future(prepared.put(item))
                await asyncio.wait({putter, ctask}, return_when=asyncio.FIRST_COMPLETED)
                if not putter.done():
                    putter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await putter

            latency, batch_max = self.settings.latency_batches, self.settings.batch_max
            pending: _Prepared | None = None  # prepared, not yet handed to the committer (latency mode)
            taken = 0  # the messages it holds
            seen: set[int] = set()  # the fingerprints of its accepted messages (duplicates within a batch)
            try:
                while not stop.is_set():
                    if comp is not None:
                        comp.check()
                    if ctask.done():
                        break
                    if pending is not None and (not latency or idle.is_set() or taken >= batch_max):
                        idle.clear()  # the committer has a batch now
                        await hand_over(pending)
                        pending, taken, seen = None, 0, set()
                        continue
                    # new messages, or (latency mode, something prepared) the committer waiting for a batch
                    limit = min(batch_max - taken, PREPARE_SLICE) if latency else batch_max - taken
                    batch = await self._next_batch(stop, limit, idle if pending is not None else None)
                    if batch or self._held:  # (held split parts time out even while nothing arrives)
                        p = self.prepare(batch, seen if latency else None)
                        if batch or p.rejects:
                            pending = p if pending is None else _merge(pending, p)
                            taken += len(batch)
                        if latency and not self.conn.queue.empty():
                            # a slice at a time: what waits on the loop (the rules stage's reads and writes, an
                            # alert's publish) goes on between slices, not after a whole backlog's decoding
                            await asyncio.sleep(0)
                # graceful shutdown: what is already received is written and acknowledged
                if pending is not None and not ctask.done():
                    await hand_over(pending)
                while not self.conn.queue.empty() and not ctask.done():
                    await hand_over(self.prepare(self._drain()))
                if not ctask.done():
                    await hand_over(None)
                await ctask  # raises what failed in the committer
            finally:
                if not ctask.done():
                    ctask.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ctask
                if comp is not None:
                    stop.set()  # also on an error: the clock and the dispatcher end
                    await comp.shutdown()
                await self.conn.stop()
        finally:
            if drainer is not None:
                stop.set()
                self._spool_wake.set()
                await drainer
            await self.writer.aclose()
            if comp is not None:
                await comp.close()
            if self.archive is not None:
                await asyncio.to_thread(self.archive.close)
            if self.spool is not None:
                self.spool.close()

    async def _next_batch(
        self, stop: asyncio.Event, limit: int | None = None, idle: asyncio.Event | None = None
    ) -> list[InboundMessage]:
        """The messages waiting (at most ``limit``, default ``batch_max``); when there are none, the first to
        arrive within 1 s and those behind it, or none when ``stop`` or ``idle`` (if given) is set first."""
        q = self.conn.queue
        limit = self.settings.batch_max if limit is None else limit
        if q.empty():
            getter = asyncio.ensure_future(q.get())
            others = {asyncio.ensure_future(stop.wait())}
            if idle is not None:
                others.add(asyncio.ensure_future(idle.wait()))
            done, _ = await asyncio.wait({getter, *others}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for f in others:
                f.cancel()
            if getter not in done:
                getter.cancel()
                if getter.done() and not getter.cancelled():
                    return [getter.result(), *self._drain(limit - 1)]
                return []
            return [getter.result(), *self._drain(limit - 1)]
        return self._drain(limit)

    def _drain(self, limit: int | None = None) -> list[InboundMessage]:
        q = self.conn.queue
        n = min(q.qsize(), self.settings.batch_max if limit is None else limit)
        return [q.get_nowait() for _ in range(n)]

    # -- one batch ------------------------------------------------------------------------------------
    def prepare(self, batch: list[InboundMessage], in_batch: set[int] | None = None) -> _Prepared:
        """The CPU stage: decode, validate and build line protocol; no I/O.  ``in_batch``: the fingerprints of
        the messages already prepared for the same batch (latency mode), added to: an identical message is a
        ``duplicate`` within the whole batch."""
        now = datetime.now(UTC)
        p = _Prepared([], [], [], [], [], [])
        lines, good, items, commands, rejects, fingerprints = (
            p.lines,
            p.good,
            p.items,
            p.commands,
            p.rejects,
            p.fingerprints,
        )
        self.stats.received += len(batch)
        in_batch = set() if in_batch is None else in_batch
        if self._held:
            self._reassembler.expire(time.monotonic())
        evidence = p.evidence if self.archive is not None else None
        comp, command_topics = self.compliance, self._commands
        for msg in batch:
            topic = msg.topic
            if topic in command_topics or (comp is not None and topic.endswith("/mark") and comp.is_mark_topic(topic)):
                # acknowledgements, warning settings (issue 16), event actions (issue 19); marks (issue 14)
                commands.append(msg)
                if evidence is not None:
                    evidence.append(_entry(msg, "command"))
                continue
            fp = hash((topic, msg.payload))
            if fp in self._recent or fp in in_batch:
                rejects.append((msg, RejectedMessage("duplicate", "an identical message was already stored")))
                if evidence is not None:
                    evidence.append(_entry(msg, "rejected", rejects[-1][1]))
                continue
            try:
                if b"PNUM=" in msg.payload and topic.endswith("/hj212"):  # (rare: only split packets)
                    accepted = self._accept_part(msg, now)
                    if accepted is None:
                        if evidence is not None:
                            evidence.append(_entry(msg, "held"))
                        continue  # a part held for the rest of its packet, unacknowledged
                    line, item = accepted
                else:
                    line, item = self._accept(msg, now)
            except RejectedMessage as e:
                rejects.append((msg, e))
                if evidence is not None:
                    evidence.append(_entry(msg, "rejected", e))
                continue
            except Exception as e:  # a bug met by this message: dead-letter it and go on (never a poison message)
                rejects.append((msg, internal_error(msg.topic, e)))
                if evidence is not None:
                    evidence.append(_entry(msg, "rejected", rejects[-1][1]))
                continue
            if evidence is not None:
                evidence.append(_entry(msg, "accepted"))
            lines.append(line)
            good.append(msg)
            items.append(item)
            in_batch.add(fp)
            fingerprints.append(fp)
        if self._split_rejects:
            if evidence is not None:  # held parts of earlier batches whose packet never completed
                evidence.extend(_entry(m, "rejected", e, kind="verdict") for m, e in self._split_rejects)
            rejects.extend(self._split_rejects)
            self._split_rejects.clear()
        p.archived = len(rejects)
        self.stats.split_parts_held = sum(len(v) for v in self._held.values())
        return p

    async def write_stage(self, p: _Prepared, stop: asyncio.Event | None) -> bool:
        """Write the batch's readings durably (InfluxDB or the spool); lines the database refuses become
        ``database_rejected``.  ``False`` when stopping while the database is down: nothing of the batch is
        acknowledged, the broker redelivers it.  The evidence archive is written at the same time, and is
        durable too before this returns ``True``."""
        archived = asyncio.create_task(self._archive(p.evidence, stop)) if p.evidence else None
        try:
            bad_lines = await self._write_durable(p.lines, stop) if p.lines else {}
        except BaseException:
            if archived is not None:
                archived.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await archived
            raise
        kept = await archived if archived is not None else True
        if bad_lines is None or not kept:
            return False
        if bad_lines:
            for i in sorted(bad_lines, reverse=True):
                p.rejects.append((p.good[i], RejectedMessage("database_rejected", bad_lines[i])))
                del p.good[i]
                del p.items[i]
                del p.fingerprints[i]
        # written: the lines and evidence entries are not needed by the rules stage, where the batch may wait
        # behind the previous one's commit (issue 20, memory: ≈ 0.8 KB a message, two batches of them)
        p.lines = []
        p.evidence = []
        return True

    async def rules_stage(self, p: _Prepared, stop: asyncio.Event | None) -> None:
        """After :meth:`write_stage`: the compliance rules, then acknowledge and dead-letter."""
        good, items, commands, rejects, fingerprints = p.good, p.items, p.commands, p.rejects, p.fingerprints
        readings = [(r, info) for r, info in filter(None, items) if info is not None]
        grid = [r for r, info in filter(None, items) if info is None]
        # the decoded readings live on only in the lists given to the rules, which drop them once judged, before
        # the commit the batch may wait for (issue 20, memory: ≈ 3 KB a reading, 5 000 in a full batch)
        p.items = []
        del items
        n_data = len(good)
        if self.compliance is not None and (readings or grid or commands):
            # hourly records, events, engine state and alerts durable before the batch is acknowledged:
            # the runtime releases (acknowledges) the data messages once the state including them is
            # committed, at once or at its next group commit
            data = good
            good = []

            def release() -> None:
                for m in data:
                    self._ack(m)

            judged = self.compliance.on_batch(readings, commands, stop, release=release, grid=grid)
            del readings, grid
            bad_commands = await judged
            if bad_commands is None:
                return  # stopping before the results are durable: the broker redelivers the batch
            bad_ids = {id(m) for m, _ in bad_commands}
            good.extend(m for m in commands if id(m) not in bad_ids)
            rejects.extend(bad_commands)
        for msg in good:
            self._ack(msg)
        recent, order = self._recent, self._recent_order
        for fp in fingerprints:  # only what is durable: a message whose batch failed is not a duplicate
            if fp not in recent:
                recent.add(fp)
                order.append(fp)
        while len(order) > self.settings.dedupe_window:
            recent.discard(order.popleft())
        self.stats.accepted += n_data
        self.stats.batches += 1
        if rejects:
            if self.archive is not None and len(rejects) > p.archived:  # refused by the database, bad commands
                later = [_entry(m, "rejected", e, kind="verdict") for m, e in rejects[p.archived :]]
                if not await self._archive(later, stop):
                    return  # stopping: not acknowledged, the broker redelivers them
            await asyncio.gather(*(self._dead_letter(m, e) for m, e in rejects))

    def _accept(self, msg: InboundMessage, now: datetime) -> tuple[str, tuple[Reading, OutletInfo | None] | None]:
        d = decode_message(msg.topic, msg.payload, self.registry, require_crc=self.settings.require_crc)
        r = d.reading
        if d.grid:
            g = self._grid.get(r.mn)
            if g is None:
                raise RejectedMessage("unknown_sensor", f"grid sensor {r.mn!r} is not in the registry")
            r = validate_grid(r, now, self.settings.policy)  # the same time, name and value checks as a stack's
            if not any(m.values or m.flag is not None for m in r.measurements.values()):
                raise RejectedMessage("empty_reading", "the reading carries no values")
            self.stats.values += r.value_count
            if r.dropped:
                self.stats.values_dropped += len(r.dropped)
            return grid_reading_line(r, g), (r, None)  # no outlet: the grid engine judges it
        return self._accept_reading(r, now)

    def _accept_reading(self, r: Reading, now: datetime) -> tuple[str, tuple[Reading, OutletInfo | None] | None]:
        shard = self.settings.shard
        if shard is not None and not shard.owns(r.mn) and self.registry.outlet(r.mn) is None:
            raise RejectedMessage(
                "wrong_shard", f"outlet {r.mn!r} belongs to shard {shard_of(r.mn, shard.count)}, not {shard}"
            )
        r, info = validate(r, self.registry, now, self.settings.policy)
        self.stats.values += sum(map(len, map(_VALUES, r.measurements.values())))  # (r.value_count, in C)
        if r.dropped:
            self.stats.values_dropped += len(r.dropped)
        # (keyed by the registry's MN string, not the message's copy: 100 000 outlets, ≈ 6 MB less; issue 20)
        self.stats.last_data_time[info.outlet.mn] = unix_time(r.data_time)
        return reading_line(r, info.enterprise.id, info.district.code), (r, info)

    # -- HJ 212 split packets (PNUM/PNO) ---------------------------------------------------------------
    def _accept_part(
        self, msg: InboundMessage, now: datetime
    ) -> tuple[str, tuple[Reading, OutletInfo | None] | None] | None:
        """A packet on ``{prefix}/{mn}/hj212`` that may be one part of a split packet: ``None`` while its group
        is incomplete (the message is held, unacknowledged), else the reassembled reading's line, judged as one
        reading; the last part's message then carries the others (acknowledged with it, :meth:`_ack`)."""
        t = self.registry.topics
        rest = msg.topic[len(t.prefix) + 1 :].split("/") if msg.topic.startswith(t.prefix + "/") else []
        if len(rest) != 2 or not rest[0] or rest[1] != "hj212":
            return self._accept(msg, now)  # not a data topic of this registry: decode_message says why
        packet = hj212.decode(hj212_text(msg.payload), require_crc=self.settings.require_crc)
        if packet.pnum is None:
            return self._accept(msg, now)
        check_packet(packet, rest[0], self.registry)
        combined = self._reassembler.feed(packet, time.monotonic())
        key = (packet.mn, packet.qn, packet.cn)
        held = self._held.setdefault(key, [])
        held.append(msg)
        if combined is None:
            return None
        del self._held[key]
        if len(held) > 1:
            self._companions[id(msg)] = held[:-1]
        self.stats.split_reassembled += 1
        return self._accept_reading(hj212.to_reading(combined, tz=self.registry.tz), now)

    def _split_dropped(self, key: tuple[str | None, str | None, str], parts: list[hj212.Packet]) -> None:
        """A split packet's group timed out or was evicted: its held messages are dead-lettered and acknowledged."""
        msgs = self._held.pop(key, [])
        got = sorted(p.pno for p in parts if p.pno is not None)
        pnum = parts[0].pnum if parts else None
        detail = (
            f"split packet MN {key[0]!r} QN {key[1]!r} CN {key[2]}: parts {got} of {pnum} only, the rest did not "
            f"arrive within {self.settings.split_timeout_s:g}s (or {self.settings.split_max_pending} incomplete "
            "packets were waiting)"
        )
        self._split_rejects.extend((m, RejectedMessage("hj212_split", detail)) for m in msgs)

    async def _timed_write(self, lines: list[str]) -> None:
        t0 = time.perf_counter()
        await self.writer.write(lines)
        self.stats.writes += 1
        self.stats.write_seconds += time.perf_counter() - t0

    async def _write_durable(self, lines: list[str], stop: asyncio.Event | None) -> dict[int, str] | None:
        """Write until durable (InfluxDB, or the spool).  Returns {index: reason} of lines the database
        refused (4xx), or None when asked to stop while the database is unreachable."""
        if self.spool is not None:
            if self.spool.empty():  # otherwise queue behind what is spooled: InfluxDB gets data in order
                try:
                    await self._timed_write(lines)
                    self.stats.points_written += len(lines)
                    return {}
                except InfluxWriteError as e:
                    if not e.retryable:
                        return await self._write_bisect(lines, stop)
                    log.warning("InfluxDB write failed (%s): spooling to %s", e, self.spool.dir)
            return await self._to_spool(lines, stop)
        return await self._write_bisect(lines, stop)

    async def _to_spool(self, lines: list[str], stop: asyncio.Event | None) -> dict[int, str] | None:
        assert self.spool is not None
        while True:
            try:
                await asyncio.to_thread(self.spool.append, lines)
                break
            except SpoolFull as e:  # back-pressure: no acknowledgement until the drainer makes room
                log.error("%s: not acknowledging until InfluxDB accepts writes again", e)
                if stop is not None and stop.is_set():
                    return None
                await asyncio.sleep(1.0)
        self.stats.spooled_points += len(lines)
        self.stats.spool_bytes = self.spool.size_bytes
        self._spool_wake.set()
        return {}

    async def _drain_spool(self, stop: asyncio.Event) -> None:
        """Write the spool to InfluxDB, oldest batch first, whenever it holds something."""
        spool = self.spool
        assert spool is not None
        delay = self.settings.retry_initial_s
        while not stop.is_set():
            item = await asyncio.to_thread(spool.oldest) if not spool.empty() else None
            if item is None:
                self._spool_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._spool_wake.wait(), timeout=1.0)
                continue
            seg, batches = item
            try:
                for batch in batches:
                    refused = await self._write_bisect(batch, None, retry=False)
                    assert refused is not None
                    for i, reason in refused.items():
                        log.error("InfluxDB refused a spooled point (%s): %s", reason, batch[i][:300])
                    self.stats.points_written += len(batch) - len(refused)
            except InfluxWriteError as e:  # still down: try the segment again later (writes are idempotent)
                self.stats.write_retries += 1
                log.warning("spool drain: InfluxDB still unavailable (%s); retrying in %.1fs", e, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            delay = self.settings.retry_initial_s
            await asyncio.to_thread(spool.remove, seg)
            self.stats.spool_bytes = spool.size_bytes
            if self.stats.spool_bytes == 0:
                log.info("spool drained: InfluxDB is up to date")

    async def _write_bisect(
        self, lines: list[str], stop: asyncio.Event | None, *, retry: bool = True
    ) -> dict[int, str] | None:
        """Write (retrying while the database is unavailable, when ``retry``).  Returns {index: reason} of
        lines the database refused (4xx), or None when asked to stop while the database is unreachable."""
        refused: dict[int, str] = {}

        async def write(chunk: list[int]) -> None:
            try:
                part = [lines[i] for i in chunk]
                if retry:
                    await self._retry(lambda: self._timed_write(part), stop)
                else:
                    await self._timed_write(part)
            except InfluxWriteError as e:  # not retryable: find the refused lines by bisection
                if e.retryable:
                    raise  # (only without ``retry``) an outage, not bad data: the caller handles it
                if len(chunk) == 1:
                    refused[chunk[0]] = str(e)
                    return
                mid = len(chunk) // 2
                await write(chunk[:mid])
                await write(chunk[mid:])

        try:
            await write(list(range(len(lines))))
        except asyncio.CancelledError:
            return None
        if retry:
            self.stats.points_written += len(lines) - len(refused)
        return refused

    async def _write_derived(self, lines: list[str], stop: asyncio.Event | None) -> bool:
        """Write the compliance results durably; ``False`` when stopping while the database is down."""
        refused = await self._write_durable(lines, stop)
        if refused is None:
            return False
        for i, reason in refused.items():
            log.error("InfluxDB refused a compliance point (%s): %s", reason, lines[i][:300])
        return True

    async def _archive(self, entries: list[Entry], stop: asyncio.Event | None) -> bool:
        """Append to the evidence archive until durable; ``False`` when asked to stop while it cannot be
        written (nothing is acknowledged then: back-pressure, as with a full spool)."""
        assert self.archive is not None
        while True:
            try:
                await self.archive.append(entries)
                self.stats.evidence_lines += len(entries)
                return True
            except ArchiveError as e:
                self.stats.evidence_failures += 1
                log.error("%s: not acknowledging until the evidence archive can be written", e)
                if stop is not None and stop.is_set():
                    return False
                await asyncio.sleep(1.0)

    async def _publish_alert(self, topic: str, body: bytes) -> None:
        await self.conn.publish(topic, body, qos=1)

    async def _retry(self, op: Callable[[], object], stop: asyncio.Event | None) -> None:
        delay = self.settings.retry_initial_s
        while True:
            try:
                res = op()
                if asyncio.iscoroutine(res):
                    await res
                return
            except InfluxWriteError as e:
                if not e.retryable:
                    raise
                self.stats.write_retries += 1
                log.warning("InfluxDB write failed (%s); retrying in %.1fs", e, delay)
                if stop is not None and stop.is_set():
                    raise asyncio.CancelledError from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)

    async def _dead_letter(self, msg: InboundMessage, err: RejectedMessage) -> None:
        self.stats.rejected[err.reason] += 1
        log.info("rejected %s: %s: %s", _cut(msg.topic)[0], err.reason, _cut(err.detail)[0])
        topic = f"{self.registry.topics.deadletter_prefix}/{err.reason}"
        await self.conn.publish(topic, dead_letter(msg.topic, msg.payload, msg.received, err), qos=1)
        self._ack(msg)

    def _ack(self, msg: InboundMessage) -> None:
        """Acknowledge a message and, for the last part of a reassembled split packet, the parts before it."""
        self.conn.ack(msg)
        if self._companions:
            for m in self._companions.pop(id(msg), ()):
                self.conn.ack(m)
