"""Durable alert outbox (MQTT alerts and signed webhooks) on a small SQLite database.

* :class:`StateDB`: one SQLite file (WAL, ``synchronous=FULL``) used from a single worker thread, so no
  SQLite call ever runs on the event loop and every call is serialised.  The compliance runtime keeps its
  engine snapshots and events table in the same file (:mod:`cems.service.compliance`), so an event's
  state change and the alerts it causes are committed in one transaction.
* The ``outbox`` table: one row per (alert, channel, target).  ``channel`` is ``mqtt`` (``target`` = the
  topic) or ``webhook`` (``target`` = the URL).  Rows are delivered by :class:`OutboxDispatcher`, retried
  with exponential back-off and jitter until delivered (``done``), and survive restarts.  Rows of the same
  event and target are delivered in order (a later row waits while an earlier one is pending).
* Webhooks: ``POST`` of the JSON body with ``X-Cems-Timestamp`` (Unix seconds of this attempt),
  ``X-Cems-Event-Id``, ``X-Cems-Alert-Id`` and ``X-Cems-Signature: v1=<hex HMAC-SHA256>`` over timestamp,
  ids and body (:func:`signed_payload`, :func:`sign`, :func:`verify`; docs/events.md).  Any 2xx is delivered;
  anything else (or a network error) is retried.  A row still undelivered after ``give_up_after_s`` is
  marked ``failed`` (logged) and kept for inspection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import httpx

from cems.config import private_dir, private_file
from cems.errors import WebhookError as WebhookError  # declared in cems.errors, re-exported
from cems.sqlite_rows import write_rows

log = logging.getLogger(__name__)

T = TypeVar("T")

MQTT: Final = "mqtt"
WEBHOOK: Final = "webhook"

PENDING: Final = "pending"
DONE: Final = "done"
FAILED: Final = "failed"

SIGNATURE_HEADER: Final = "X-Cems-Signature"
TIMESTAMP_HEADER: Final = "X-Cems-Timestamp"
EVENT_ID_HEADER: Final = "X-Cems-Event-Id"
ALERT_ID_HEADER: Final = "X-Cems-Alert-Id"

OUTBOX_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    event_id TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    body BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ts REAL NOT NULL,
    created_ts REAL NOT NULL,
    done_ts REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_ts);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox(channel, target, event_id, status, id);
"""


# ------------------------------------------------------------------------------------------------ database


class StateDB:
    """A SQLite database used from one dedicated worker thread (``await db.call(fn)`` runs ``fn(conn)``).

    ``await db.read(fn)`` runs a read-only ``fn(conn)`` on a second connection in its own thread: in WAL mode
    it sees every transaction committed before it starts and never waits for a transaction under way, so
    the alert path's reads (the outbox's due rows, the events an update revises) do not queue behind a
    large commit of engine state (alert latency, docs/benchmark.md).

    ``await db.call_alerts(fn)`` runs ``fn(conn)`` on a third connection, a writer of its own in its own thread:
    the small transactions of events and alerts committed ahead of the engine state (``commit_events``) go
    there, so that they do not wait in the database thread behind a state commit's serialisation and writing;
    SQLite still lets one transaction write at a time (WAL), so such a commit waits at most for the state
    transaction under way (``busy_timeout``) — issue 20, alert latency."""

    def __init__(self, path: Path, schema: Sequence[str] = (OUTBOX_SCHEMA,)) -> None:
        self.path = path
        #: taken by each write transaction of its two writing connections (:func:`transaction`)
        self._write_lock = threading.RLock()
        self._schema = tuple(schema)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._rconn: sqlite3.Connection | None = None
        self._alerts: ThreadPoolExecutor | None = None
        self._aconn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        private_dir(self.path.parent)
        private_file(self.path)  # 0600 before SQLite opens it (its -wal/-shm files get the same mode)
        # explicit transactions (see transaction())
        conn = sqlite3.connect(self.path, isolation_level=None, factory=_Connection)
        conn.write_lock = self._write_lock
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed alert/event survives a power loss
        conn.execute("PRAGMA busy_timeout=10000")
        for script in self._schema:
            conn.executescript(script)
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        """A second writing connection (the schema is made by the first)."""
        conn = sqlite3.connect(self.path, isolation_level=None, factory=_Connection)
        conn.write_lock = self._write_lock
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        return conn

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cems-state")
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cems-state-read")
        self._rconn = await loop.run_in_executor(self._reader, self._connect_reader)
        self._alerts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cems-state-alerts")
        self._aconn = await loop.run_in_executor(self._alerts, self._connect_writer)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the database thread."""
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn(conn)`` in the database thread now, behind every call queued before it and ahead of every
        call queued after it, and return its future: the caller may go on and await it later (the engine state
        commit written aside, ``ComplianceConfig.state_commit_aside``)."""
        if self._executor is None or self._conn is None:
            raise RuntimeError("StateDB is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def call_alerts(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the alerts' writing connection, in its own thread (not behind the database
        thread's queue; see the class)."""
        if self._alerts is None or self._aconn is None:
            raise RuntimeError("StateDB is not open")
        conn = self._aconn
        return await asyncio.get_running_loop().run_in_executor(self._alerts, fn, conn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only ``fn(conn)`` on the reading connection (sees what was committed before the call)."""
        if self._reader is None or self._rconn is None:
            raise RuntimeError("StateDB is not open")
        conn = self._rconn
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, conn)

    async def close(self) -> None:
        """Close the alerts' and the reading connections, then the writer (each in its own thread, after what was
        queued there), and stop their threads."""
        lanes = ((self._alerts, self._aconn), (self._reader, self._rconn), (self._executor, self._conn))
        self._alerts = self._reader = self._executor = None
        self._aconn = self._rconn = self._conn = None
        for executor, conn in lanes:
            if executor is not None:
                if conn is not None:
                    await asyncio.get_running_loop().run_in_executor(executor, conn.close)
                executor.shutdown(wait=True)


class _Connection(sqlite3.Connection):
    """A writing connection of a :class:`StateDB`: its transactions (:func:`transaction`) take the database's
    writer lock, so that a writer waiting for the other one's transaction starts the moment it ends. SQLite lets
    one transaction write at a time; a writer that finds the database locked polls it (``busy_timeout``: sleeps
    of 1, 2, 5 … 100 ms), so the alerts committed ahead of a state commit started up to that much after it ended
    (issue 20, alert latency; docs/benchmark.md, eighth session)."""

    write_lock: threading.RLock | None = None


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on an exception); on a :class:`StateDB`'s writing
    connection, holding its writer lock."""
    lock = getattr(conn, "write_lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


# ------------------------------------------------------------------------------------------------- signing


#: How old (or how far in the future) a signed timestamp a receiver should accept, seconds.
REPLAY_WINDOW_S: Final = 300.0


def signed_payload(timestamp: str, event_id: str, alert_id: str, body: bytes) -> bytes:
    """What the signature covers: ``{timestamp}\n{event_id}\n{alert_id}\n`` + the exact body bytes (header
    values cannot hold a new line, so the parts cannot be shifted into one another)."""
    return f"{timestamp}\n{event_id}\n{alert_id}\n".encode() + body


def sign(body: bytes, secret: bytes, *, timestamp: str, event_id: str, alert_id: str) -> str:
    """The ``X-Cems-Signature`` value: ``v1=`` + hex HMAC-SHA256 of :func:`signed_payload`."""
    message = signed_payload(timestamp, event_id, alert_id, body)
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(
    body: bytes,
    secret: bytes,
    signature: str,
    *,
    timestamp: str,
    event_id: str,
    alert_id: str,
    now: float,
    window_s: float = REPLAY_WINDOW_S,
) -> bool:
    """What a receiver does: the timestamp is within ``window_s`` of ``now`` (a replayed request older than
    that is refused; deduplicate on the alert id inside the window) and the signature matches (compared in
    constant time)."""
    try:
        t = int(timestamp.strip())
    except ValueError:
        return False
    if abs(now - t) > window_s:
        return False
    expected = sign(body, secret, timestamp=str(t), event_id=event_id, alert_id=alert_id)
    return hmac.compare_digest(expected, signature.strip())


def backoff_delay(
    attempt: int, *, base_s: float = 2.0, max_s: float = 3600.0, rng: random.Random | None = None
) -> float:
    """Delay before retry number ``attempt`` (1 = after the first failure): exponential with "equal jitter".

    ``d = min(max_s, base_s × 2^(attempt−1))``; the delay is uniform in ``[d/2, d]`` so that many failing
    deliveries do not retry in lock-step.
    """
    if attempt < 1:
        raise ValueError("attempt must be ≥ 1")
    d = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    r = rng.random() if rng is not None else random.random()
    return d / 2.0 + r * d / 2.0


# ------------------------------------------------------------------------------------------------ rows


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A delivery to make: ``channel`` mqtt/webhook, ``target`` topic/URL, ``body`` the exact bytes."""

    channel: str
    target: str
    event_id: str
    alert_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    channel: str
    target: str
    event_id: str
    alert_id: str
    body: bytes
    attempts: int
    created_ts: float


def enqueue(conn: sqlite3.Connection, rows: Sequence[OutboxRow], now_ts: float) -> None:
    """Insert rows (call inside the caller's transaction so they commit with the state that caused them)."""
    write_rows(
        conn,
        "INSERT INTO outbox(channel, target, event_id, alert_id, body, next_ts, created_ts) VALUES {rows}",
        [(r.channel, r.target, r.event_id, r.alert_id, r.body, now_ts, now_ts) for r in rows],
        7,
    )


#: Rows a dispatcher pass delivers at most.
DUE_LIMIT: Final = 200

_DUE_SQL: Final = """SELECT o.id, o.channel, o.target, o.event_id, o.alert_id, o.body, o.attempts, o.created_ts
           FROM outbox o
           WHERE o.status = 'pending' AND o.next_ts <= ? AND o.id > ?
             AND NOT EXISTS (SELECT 1 FROM outbox p
                             WHERE p.channel = o.channel AND p.target = o.target AND p.event_id = o.event_id
                               AND p.status = 'pending' AND p.id < o.id)
           ORDER BY o.id LIMIT ?"""


def enqueue_due(conn: sqlite3.Connection, rows: Sequence[OutboxRow], now_ts: float) -> list[OutboxItem]:
    """:func:`enqueue`, then which of the rows just inserted are due at once (no earlier row of their event and
    target pending, as :func:`due_rows` decides), read in the same transaction: the caller hands them to
    :meth:`OutboxDispatcher.deliver` once committed, without a dispatcher pass reading them back (alert latency)."""
    (before,) = conn.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
    enqueue(conn, rows, now_ts)
    return _items(conn.execute(_DUE_SQL, (now_ts, before, len(rows))))


def due_rows(conn: sqlite3.Connection, now_ts: float, limit: int = DUE_LIMIT) -> list[OutboxItem]:
    """Pending rows due now, oldest first, skipping a row while an earlier row of the same event and target
    is still pending (per-event order)."""
    return _items(conn.execute(_DUE_SQL, (now_ts, 0, limit)))


def _items(cur: sqlite3.Cursor) -> list[OutboxItem]:
    return [
        OutboxItem(int(a), str(b), str(c), str(d), str(e), bytes(f), int(g), float(h)) for a, b, c, d, e, f, g, h in cur
    ]


def pending_count(conn: sqlite3.Connection, channel: str | None = None) -> int:
    if channel is None:
        row = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE status = 'pending' AND channel = ?", (channel,)
        ).fetchone()
    return int(row[0])


@dataclass(frozen=True, slots=True)
class _Result:
    id: int
    ok: bool
    error: str = ""
    attempts: int = 0
    next_ts: float = 0.0
    failed: bool = False


def _record(conn: sqlite3.Connection, results: Sequence[_Result], now_ts: float) -> None:
    with transaction(conn):
        for r in results:
            if r.ok:
                conn.execute(
                    "UPDATE outbox SET status='done', done_ts=?, attempts=attempts+1 WHERE id=?", (now_ts, r.id)
                )
            else:
                conn.execute(
                    "UPDATE outbox SET status=?, attempts=?, next_ts=?, last_error=? WHERE id=?",
                    (FAILED if r.failed else PENDING, r.attempts, r.next_ts, r.error[:1000], r.id),
                )


def prune_done(conn: sqlite3.Connection, before_ts: float) -> int:
    """Delete delivered rows older than ``before_ts``."""
    with transaction(conn):
        cur = conn.execute("DELETE FROM outbox WHERE status='done' AND done_ts < ?", (before_ts,))
        return cur.rowcount


# --------------------------------------------------------------------------------------------- dispatcher


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Webhook delivery.  ``secret`` signs every body (never stored in the registry)."""

    urls: tuple[str, ...] = ()
    secret: bytes = b""
    timeout_s: float = 10.0
    base_delay_s: float = 2.0
    max_delay_s: float = 3600.0
    give_up_after_s: float = 7 * 86400.0
    concurrency: int = 8

    def __repr__(self) -> str:  # never print the secret
        return f"WebhookSettings(urls={self.urls!r}, secret=<{len(self.secret)} bytes>)"


Publish = Callable[[str, bytes], Awaitable[None]]


class OutboxDispatcher:
    """Delivers due outbox rows: MQTT alerts through ``publish`` (QoS 1, waits for PUBACK) and webhooks.

    ``run(stop)`` polls every ``poll_s`` or when :meth:`kick` is called.  Delivery is at least once: a row is
    marked done after the broker's PUBACK / the receiver's 2xx, so a crash in between sends it again
    (receivers deduplicate on ``X-Cems-Alert-Id``).

    Passes overlap: a pass takes the due rows that no other pass holds (``_inflight``) and delivers them in a
    task of its own, so rows committed while an earlier pass waits for its PUBACKs, or for its ``done`` update
    (the database thread, possibly behind a large commit of engine state), leave at once (alert latency).  A
    row is let go only after its outcome is committed, and a pass ignores the rows held when its read began:
    the reading connection (WAL) may not see an outcome committed during the read, never one committed
    before it.  Rows of one event and target still leave in order (``due_rows``).

    :meth:`deliver` takes rows a commit found due at once (:func:`enqueue_due`) straight into a pass of their own:
    the alert leaves without waiting for the loop to wake this task and for a read of the outbox (alert latency,
    docs/benchmark.md).
    """

    def __init__(
        self,
        db: StateDB,
        webhooks: WebhookSettings,
        *,
        publish: Publish | None = None,
        client: httpx.AsyncClient | None = None,
        poll_s: float = 1.0,
        mqtt_timeout_s: float = 60.0,
        time_fn: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.webhooks = webhooks
        self.publish = publish
        self.poll_s = poll_s
        self.mqtt_timeout_s = mqtt_timeout_s
        self._time = time_fn
        self._rng = rng or random.Random()
        self._client = client
        self._own_client = client is None
        self._kick = asyncio.Event()
        self._sem = asyncio.Semaphore(max(1, webhooks.concurrency))
        #: rows taken by a pass whose outcome is not committed yet (ids)
        self._inflight: set[int] = set()
        self._passes: set[asyncio.Task[int]] = set()
        self._running = False  # (run() is delivering: deliver() may start passes)
        self._last_prune = 0.0
        self.delivered = 0
        self.failures = 0

    def kick(self) -> None:
        """Deliver now (new rows were committed)."""
        self._kick.set()

    def deliver(self, items: Sequence[OutboxItem]) -> None:
        """Deliver these committed rows now, in a pass of their own, without a pass reading them back: the rows
        :func:`enqueue_due` found due when they were committed (no earlier row of their event and target pending
        then, nor since: a later row of it waits for theirs). Rows a pass holds already are left to it. While
        :meth:`run` is not running, only :meth:`kick`."""
        if not self._running:
            self._kick.set()
            return
        rows = [r for r in items if r.id not in self._inflight]
        if rows:
            self._inflight.update(r.id for r in rows)
            self._start_pass(rows)

    def _start_pass(self, rows: list[OutboxItem]) -> None:
        """Deliver ``rows`` (held in ``_inflight``) in a task of their own, awaited by :meth:`run` when it ends."""
        task = asyncio.create_task(self._deliver_rows(rows))
        self._passes.add(task)
        task.add_done_callback(self._pass_done)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.webhooks.timeout_s)
        return self._client

    async def run(self, stop: asyncio.Event) -> None:
        self._running = True
        try:
            while not stop.is_set():
                # cleared before the pass, not after: rows committed (and kicked) while a pass waits for its
                # PUBACKs are taken by the next pass at once, not after ``poll_s`` (alert latency)
                self._kick.clear()
                try:
                    rows = await self._take()
                except Exception:  # keep delivering whatever happens to one pass
                    log.exception("outbox pass failed")
                    rows = []
                if rows:
                    self._start_pass(rows)
                kicker = asyncio.ensure_future(self._kick.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({kicker, stopper}, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                kicker.cancel()
                stopper.cancel()
        finally:
            self._running = False
            # the passes under way end with their PUBACKs and outcomes (cancelled with this task: their rows
            # stay pending and are delivered again after a restart)
            passes = list(self._passes)
            try:
                await asyncio.gather(*passes, return_exceptions=True)
            finally:
                for t in passes:
                    t.cancel()

    def _pass_done(self, task: asyncio.Task[int]) -> None:
        self._passes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("outbox pass failed", exc_info=task.exception())

    async def run_once(self) -> int:
        """One pass over the due rows; returns how many were delivered."""
        rows = await self._take()
        return await self._deliver_rows(rows) if rows else 0

    async def _take(self) -> list[OutboxItem]:
        """The due rows that no pass holds, now held by the caller (who must pass them to _deliver_rows)."""
        now = self._time()
        held = set(self._inflight)
        rows = await self.db.read(lambda c: due_rows(c, now, DUE_LIMIT + len(held)))
        rows = [r for r in rows if r.id not in held and r.id not in self._inflight][:DUE_LIMIT]
        self._inflight.update(r.id for r in rows)
        if not rows and now - self._last_prune > 3600.0:
            self._last_prune = now
            await self.db.call(lambda c: prune_done(c, now - 7 * 86400.0))
        return rows

    async def _deliver_rows(self, rows: list[OutboxItem]) -> int:
        try:
            results = await asyncio.gather(*(self._deliver(r) for r in rows))
            done_now = self._time()
            await self.db.call(lambda c: _record(c, results, done_now))
        finally:
            self._inflight.difference_update(r.id for r in rows)
        ok = sum(1 for r in results if r.ok)
        self.delivered += ok
        self.failures += len(results) - ok
        if ok:
            self._kick.set()  # a row waiting behind a delivered one (same event and target) is due now
        return ok

    async def _deliver(self, item: OutboxItem) -> _Result:
        try:
            if item.channel == MQTT:
                if self.publish is None:
                    raise RuntimeError("no MQTT connection")
                await asyncio.wait_for(self.publish(item.target, item.body), self.mqtt_timeout_s)
            elif item.channel == WEBHOOK:
                async with self._sem:
                    await self._post(item)
            else:
                raise RuntimeError(f"unknown outbox channel {item.channel!r}")
        except Exception as e:
            attempts = item.attempts + 1
            now = self._time()
            failed = item.channel == WEBHOOK and now - item.created_ts > self.webhooks.give_up_after_s
            delay = backoff_delay(
                attempts, base_s=self.webhooks.base_delay_s, max_s=self.webhooks.max_delay_s, rng=self._rng
            )
            err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if failed:
                log.error(
                    "giving up %s delivery %d to %s after %d attempts: %s",
                    item.channel,
                    item.id,
                    item.target,
                    attempts,
                    err,
                )
            else:
                log.warning(
                    "%s delivery %d to %s failed (%s); retry %d in %.1fs",
                    item.channel,
                    item.id,
                    item.target,
                    err,
                    attempts,
                    delay,
                )
            return _Result(item.id, False, err, attempts, now + delay, failed)
        return _Result(item.id, True)

    async def _post(self, item: OutboxItem) -> None:
        timestamp = str(int(time.time()))  # of this attempt: a retry is signed afresh
        signature = sign(
            item.body, self.webhooks.secret, timestamp=timestamp, event_id=item.event_id, alert_id=item.alert_id
        )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature,
            TIMESTAMP_HEADER: timestamp,
            EVENT_ID_HEADER: item.event_id,
            ALERT_ID_HEADER: item.alert_id,
            "User-Agent": "cems-webhook/1",
        }
        r = await self._http().post(item.target, content=item.body, headers=headers)
        if not 200 <= r.status_code < 300:
            raise WebhookError(f"HTTP {r.status_code}: {r.text[:200]}")

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None
