"""Live compliance: the :class:`~cems.engine.ComplianceEngine` inside the ingest service.

For every durable batch of readings (and on a clock tick every few seconds) the runtime

1. feeds the engine (batches and clock ticks hold one lock, so they never interleave);
2. writes the closed hours (``cems_hourly``) and the event updates (``cems_event``) to InfluxDB, durably;
3. commits in SQLite, before the batch's MQTT messages are acknowledged, the changed per-outlet engine
   snapshots, the rate counter, the events table and the alert outbox rows (MQTT + webhooks), and lets the
   :class:`~cems.service.outbox.OutboxDispatcher` publish/POST the alerts; when the commit raises alerts
   (and holds ``split_commit_outlets`` changed outlets, 0 by default) the events and outbox rows go first in a
   small transaction of their own (on a connection of their own, ``StateDB.call_alerts``) and the alerts leave
   at once, the snapshots follow in a second (a group commit takes them under the engine lock, then serialises
   them copy-on-write and writes them aside, ``state_commit_aside``: the next batches are judged meanwhile);
4. acknowledges the batch's messages (once that second transaction is durable).

Crash safety: if the process dies before step 3 the messages are redelivered and the engine (restored from
the previous snapshot) produces the same updates again; if it dies between the two transactions of step 3
the same happens, and the updates already in the events table are suppressed; if it dies after step 3 the
engine state already contains the readings, so redelivered duplicates produce nothing.  In every case each
event transition is alerted once (the events table remembers the last transition alerted, ``alerted_key``),
and a pending alert is delivered after the restart.

Acknowledgement: ``{command_prefix}/ack`` with ``{"event_id": …, "by": …, "at": optional ISO, "note": optional
处理意见, "reply_to": optional request id}``; with ``reply_to`` the ingester answers on
``{command_prefix}/reply/{reply_to}`` once the acknowledgement is stored (``cems events ack`` waits for it).
Escalation: an ``hourly_exceedance`` not acknowledged ``city.ack_sla_hours`` after it was first alerted
raises one ``ack_escalation`` alert.  See docs/events.md.

The SQLite side lives in :mod:`cems.service.compliance._state`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, NamedTuple

from cems.config import private_dir
from cems.engine import ComplianceEngine, EngineOutput
from cems.errors import CemsError, InvalidTransition, RejectedMessage, ServiceError
from cems.hour_archive import PendingHourArchive, read_archived
from cems.model import BEIJING, Reading
from cems.protocol.mark import ACCEPTED, MarkRecord, parse_mark
from cems.registry import OutletInfo, Registry, Topics
from cems.registry.shard import Shard
from cems.rules import DEFAULT_HOLD, DEFAULT_LATENESS, REPAIR_WINDOW, day_bounds, month_bounds
from cems.rules.district_parts import part_of
from cems.rules.events import HOURLY_EXCEEDANCE, OPENED, RETRACTED_STATUS
from cems.rules.grid import GridEngine, GridOutput
from cems.rules.marks import MARK_CAP_EXCEEDED, MARK_SUSPICIOUS, MARKED
from cems.rules.ranking import RankPeriod
from cems.rules.transmission import DistrictMonthRate
from cems.service.commands import send_command
from cems.service.compliance._actions import (
    ACK,
    ACTIONS_SCHEMA,
    DISPATCH,
    ActionCommand,
    CaseState,
    action_line,
    action_ms,
    action_topic,
    apply_action,
    find_request,
    load_case,
    parse_action,
    record_action,
    record_legacy_ack,
)
from cems.service.compliance._gridrank import GridRankScheduler
from cems.service.compliance._state import (
    ACKNOWLEDGED,
    DB_FILE,
    ESCALATED,
    ESCALATION_TOPIC,
    STATE_SCHEMA,
    ComplianceStats,
    EncodedChanges,
    EventRow,
    StateCapture,
    StoredRows,
    alert_id,
    commit_events,
    commit_state,
    encode_grid,
    forget_rank_due,
    load_events,
    load_grid_state,
    load_marks,
    load_rank_due,
    load_state,
    migrate_rate_records,
    prune_archive,
    prune_rate_state,
    record_ack,
    record_escalations,
    restore_rate_state,
    transition_key,
    with_open_hours,
)
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.service.outbox import (
    MQTT,
    OUTBOX_SCHEMA,
    WEBHOOK,
    OutboxDispatcher,
    OutboxItem,
    OutboxRow,
    Publish,
    StateDB,
    WebhookSettings,
)
from cems.service.warnings import HISTORY_FILE, parse_warning, read_history, warning_topic, write_history
from cems.sinks.lineprotocol import (
    daily_line,
    district_month_rate_line,
    district_part_line,
    event_line,
    grid_daily_line,
    grid_hourly_line,
    hourly_line,
    mark_line,
    monthly_line,
    outlet_day_line,
)

log = logging.getLogger(__name__)

WriteFn = Callable[[list[str], asyncio.Event | None], Awaitable[bool]]
Clock = Callable[[], datetime]
#: ``(InfluxQL, epoch) -> rows`` (:func:`cems.sinks.influx.config_query`).
RankQuery = Callable[[str, str | None], list[dict[str, Any]]]


#: Outlets whose day rates one write of the live ``cems_rate`` carries (:meth:`ComplianceRuntime._write_rates`).
RATE_WRITE_OUTLETS: Final = 5000
#: Outlets the live ``cems_rate`` write counts at a time, and how long it may keep the event loop: it lets the loop
#: run after a slice once this much time has passed since it last did (issue 20: the whole write at 100 000 outlets
#: had blocked the loop for 18–37 s, and alerts and acknowledgements waited behind it).
RATE_SLICE_OUTLETS: Final = 100
RATE_SLICE_S: Final = 0.01
#: Outlets serialised at a time by a state commit written aside, the loop running between slices (≈ 4 ms each).
CAPTURE_SLICE_OUTLETS: Final = 64
#: A state commit of more changed outlets than this is written under the engine lock even with
#: ``ComplianceConfig.state_commit_aside`` (serialised aside, its rows would all be held in memory at once;
#: under the lock they are serialised one outlet at a time as SQLite takes them).
ASIDE_MAX_OUTLETS: Final = 4000


class _Pacer:
    """Lets the event loop run when :data:`RATE_SLICE_S` has passed since it last did."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    async def turn(self) -> None:
        if time.perf_counter() - self.t >= RATE_SLICE_S:
            await asyncio.sleep(0)
            self.t = time.perf_counter()


def _unserialised(ready: concurrent.futures.Future[EncodedChanges], _: object) -> None:
    """A state commit's serialisation ended (:meth:`ComplianceRuntime._serialise`): if it never ran (a task
    cancelled before its first step), the write queued for it must not wait for it forever."""
    if not ready.done():
        ready.set_exception(ServiceError("the state commit was not serialised (cancelled)"))


def wall_clock() -> datetime:
    return datetime.now(BEIJING)


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class ComplianceConfig:
    """How the ingest service runs the compliance rules (``cems run`` builds it from its options)."""

    #: Durable engine state, events and alert outbox (SQLite); the CLI default is ``STATE_DIR/ingester``.
    state_dir: Path
    webhooks: tuple[str, ...] = ()
    webhook_secret: bytes = field(default=b"", repr=False)
    #: The wall clock (injectable for tests): engine.on_clock, opening time of alerts, SLA, ack time.
    clock: Clock = wall_clock
    #: ``cems run --shard K/N``: the district months are this shard's parts, written as ``level=district_shard``
    #: points tagged with the shard and merged by ``cems districts`` (:mod:`cems.rules.district_parts`).
    shard: Shard | None = None
    clock_interval_s: float = 5.0
    #: Group commit: engine state is committed (and the batches acknowledged) at least this often (up to 8×
    #: it when commits are slow; while a backlog waits, ``behind()``, by count, at most a tick apart).
    commit_interval_s: float = 0.25
    #: ... and as soon as this many messages wait for it: keep it well below the broker's in-flight window
    #: (Mosquitto ``max_inflight_messages``, 20 000 in the project's configuration), or the broker stops
    #: sending while the ingester waits to commit (measured: docs/benchmark.md).
    commit_max_messages: int = 8000
    #: ... and as soon as this many outlets changed since the last one: below :data:`ASIDE_MAX_OUTLETS` by a
    #: batch's worth, so that with many outlets (a province: each outlet in a commit has one or two readings) the
    #: commit is still written aside, not under the engine lock, where batches and their alerts waited behind it
    #: (issue 20: 20 000 outlets at 3 000 msg/s, commits of ≈ 6 000 outlets held the rules up to 1.2 s;
    #: docs/benchmark.md, ninth session).  A smaller registry never reaches it.
    commit_max_outlets: int = 3000
    #: A commit that raises alerts and holds at least this many changed outlets commits the events and alerts
    #: first, in their own transaction, so that the alerts do not wait for the snapshots; a smaller one stays
    #: one transaction.  0 (every commit that raises alerts): at half the sustained rate a batch's snapshots
    #: cost more than the second fsync, and the alert leaves before them (docs/benchmark.md, "alert latency
    #: at half the sustained rate").
    split_commit_outlets: int = 0
    #: A batch whose events raise alerts while the state commit is not due yet commits only the events and
    #: alerts (a small transaction) and leaves the engine state to the next group commit, which acknowledges
    #: the batch; so an alert waits neither for the snapshots nor for the group-commit interval (alert latency,
    #: issue 20). Safe as long as each event has at most one update committed ahead of the state: an event
    #: updated again before the state commit goes into one transaction with it (see :func:`commit_events`).
    alerts_before_state: bool = True
    #: The group commit takes the changed outlets under the engine lock, queues their write in the database
    #: thread and lets the lock go; they are serialised on the loop a slice at a time (copy on write:
    #: :class:`~cems.service.compliance._state.StateCapture`), then written and fsynced aside: batches are judged,
    #: and their alerts committed, meanwhile instead of waiting (alert latency, issue 20). The batches it covers are
    #: acknowledged only once it is durable; one such commit at a time; the events of batches whose state is not
    #: durable yet count as ahead of it (as with ``alerts_before_state``). A commit of more than
    #: :data:`ASIDE_MAX_OUTLETS` changed outlets, a command's and the last one (shutdown) write under the lock as
    #: before (the clock's is written aside too). A failed write is raised by the next batch, tick or ``check()``.
    #: ``cems run --no-state-commit-aside`` (``CEMS_STATE_COMMIT_ASIDE=0``) turns it off.
    state_commit_aside: bool = True
    #: How often live transmission rates (``cems_rate``) are rewritten while hours complete.
    rates_interval_s: float = 60.0
    outbox_poll_s: float = 1.0
    webhook_timeout_s: float = 10.0
    webhook_base_delay_s: float = 2.0
    webhook_max_delay_s: float = 3600.0
    lateness: timedelta = DEFAULT_LATENESS
    #: How long an emitted hour keeps its sub-values in memory for exact revision by late data
    #: (:mod:`cems.rules.hourly`; the repair window itself is 10 days, DOMAIN.md §5).
    hold: timedelta = DEFAULT_HOLD
    #: Live township ranking (:mod:`cems.service.compliance._gridrank`): how long closing days gather before
    #: a ranking pass, and the wait before a failed ranking is tried again.
    grid_rank_delay_s: float = 5.0
    grid_rank_retry_s: float = 60.0
    #: While the ingester is behind (a backlog of received messages waits to be judged, ``behind()``), the clock
    #: closes no hour and declares no silence — the data it would miss are in the backlog, so closing early
    #: would alert on partial hours and raise false interruptions, then revise every such hour batch after
    #: batch — for at most this long in a row (then the clock closes again, so that silent outlets are not held
    #: up forever by a lasting overload). Data time still closes an outlet's hours as its readings advance.
    clock_hold_max_s: float = 1800.0

    def webhook_settings(self) -> WebhookSettings:
        return WebhookSettings(
            urls=self.webhooks,
            secret=self.webhook_secret,
            timeout_s=self.webhook_timeout_s,
            base_delay_s=self.webhook_base_delay_s,
            max_delay_s=self.webhook_max_delay_s,
        )


# ------------------------------------------------------------------------------------------------ runtime


class ComplianceRuntime:
    """The engine, its durable state, alerts, acknowledgements and escalations (one per ingest service).

    ``write(lines, stop)`` must write line protocol durably and return ``False`` only when asked to stop
    while the database is unreachable; ``publish(topic, body)`` publishes QoS 1 and waits for the PUBACK.
    ``rank_query(text, epoch)`` reads InfluxDB (InfluxQL): with it, and grid sensors in the registry, the
    township ranking follows every closed (or revised) day (:class:`GridRankScheduler`); ``rank_ready()``
    says whether what was written is in the database (not waiting in a spool). ``behind()`` says whether
    received messages wait in a backlog (the clock then holds: ``ComplianceConfig.clock_hold_max_s``).
    """

    def __init__(
        self,
        registry: Registry,
        config: ComplianceConfig,
        *,
        write: WriteFn,
        publish: Publish,
        rank_query: RankQuery | None = None,
        rank_ready: Callable[[], bool] | None = None,
        behind: Callable[[], bool] | None = None,
    ) -> None:
        if config.webhooks and not config.webhook_secret:
            raise CemsError("webhooks need a secret (CEMS_WEBHOOK_SECRET or --webhook-secret-file)")
        self.registry = registry
        self.config = config
        #: emitted hours out of memory, until their repair deadline (SQLite ``hour_archive``)
        self.archive = PendingHourArchive()
        self.engine = ComplianceEngine(registry, lateness=config.lateness, hold=config.hold, archive=self.archive)
        #: The grid sensors' engine (issue 15): fed alongside, committed in the same transaction.
        self.grid = GridEngine(registry, lateness=config.lateness, hold=config.hold)
        self.stats = ComplianceStats()
        #: The live township ranking (issue 15 item 3): after the ``grid_daily`` points of a day are durable.
        self.ranker: GridRankScheduler | None = None
        if rank_query is not None and registry.grid_sensor:
            self.ranker = GridRankScheduler(
                rank_query,
                write,
                ready=rank_ready or (lambda: True),
                delay_s=config.grid_rank_delay_s,
                retry_s=config.grid_rank_retry_s,
                stats=self.stats,
                forget=self._forget_rank,
            )
        self._behind = behind or (lambda: False)
        #: when the clock began to hold (monotonic), while the ingester is behind
        self._held_since: float | None = None
        #: the clock time of the last tick that closed hours (not held): while the clock is held the live rates
        #: count to it, not to the clock, whose ended hours the engine has not closed yet
        self._closed_at: datetime | None = None
        self.db = StateDB(config.state_dir / DB_FILE, (OUTBOX_SCHEMA, STATE_SCHEMA, ACTIONS_SCHEMA))
        self.dispatcher = OutboxDispatcher(
            self.db, config.webhook_settings(), publish=publish, poll_s=config.outbox_poll_s
        )
        self.lock = asyncio.Lock()
        self._write = write
        self._publish = publish
        self._replies: set[asyncio.Task[None]] = set()
        self._alerts_prefix = registry.topics.alerts_prefix
        self._command_prefix = registry.topics.command_prefix
        self.ack_topic = f"{registry.topics.command_prefix}/ack"
        #: Heavy-pollution warning settings (issue 16, :mod:`cems.service.warnings`), kept in ``warnings.json``.
        self.warning_topic = warning_topic(registry.topics)
        #: Marks entered by the bureau (``mn`` in the payload); enterprises publish on ``{prefix}/{mn}/mark``.
        self.mark_topic = f"{registry.topics.command_prefix}/mark"
        self._data_prefix = registry.topics.prefix + "/"
        #: Mark records accepted since the last commit (stored with it, in the same transaction).
        self._pending_marks: list[MarkRecord] = []
        #: Event actions of the duty console (issue 19, :mod:`cems.service.compliance._actions`).
        self.action_topic = action_topic(registry.topics)
        #: the time (ms) of the last ``cems_event_action`` point: two actions in one millisecond stay apart
        self._last_action_ms = 0
        #: hourly_exceedance events neither acknowledged nor escalated: event_id → opening time (epoch s)
        self._unacked: dict[str, float] = {}
        self._broken = False
        self._pending = EngineOutput()  # engine output not yet committed
        self._grid_pending = GridOutput()
        self._held: list[Callable[[], None]] = []  # acknowledgements waiting for the next commit
        self._held_messages = 0
        #: events whose update was committed ahead of the engine state (alerts_before_state) since the last state
        #: commit, and the ranking periods of those commits, stored with the next state commit
        self._ahead: set[str] = set()
        self._ahead_rank_due: list[tuple[str, str, str]] = []
        #: the state commit written aside (``state_commit_aside``) while it is under way, and its error once failed
        self._aside: asyncio.Task[None] | None = None
        self._aside_error: BaseException | None = None
        #: events committed ahead of the state since that commit began (still ahead once it is durable)
        self._ahead_next: set[str] = set()
        self._last_commit = time.monotonic()
        self._commit_every = config.commit_interval_s
        #: Beijing days whose transmission rates changed since they were last written to ``cems_rate``.
        self._rate_days: set[date] = set()
        self._rates_written = 0.0
        self._rates_due: datetime | None = None  # the newest hour end seen over by _write_rates
        self._archive_pruned_before = 0
        #: the outlets with a state row in SQLite and the mark of their last journal clean-up (commit_state)
        self._stored: StoredRows = {}
        self._lockfile: IO[str] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._rank_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Lock the state dir, open the database and restore the engine's state."""
        private_dir(self.config.state_dir)  # 0700: events, alert bodies, webhook targets
        lf = open(self.config.state_dir / "lock", "w")  # noqa: SIM115 - held for the runtime's life
        try:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            lf.close()
            raise ServiceError(f"state dir {self.config.state_dir} is in use by another ingester") from e
        self._lockfile = lf
        await self.db.open()
        stored = await self.db.call(load_state)
        try:  # the warning history first: the emergency checks and the mandated stops depend on it
            history = await asyncio.to_thread(read_history, self.config.state_dir / HISTORY_FILE)
        except CemsError as e:
            log.error("%s: starting without a warning history (the retained setting restores the last one)", e)
        else:
            self.engine.set_warnings(history)
        restored = 0
        self._stored = dict.fromkeys((mn for mn, _ in stored.outlets), None)
        for mn, raw in stored.outlets:
            try:
                state = json.loads(raw)
                with_open_hours(state, stored.subs.get(mn, []), stored.das.get(mn, []))
                self.engine.restore_outlet(mn, state)
                restored += 1
            except (ValueError, KeyError, TypeError) as e:
                log.warning("cannot restore the engine state of outlet %s (%s): starting it afresh", mn, e)
        try:
            self.grid.restore(await self.db.call(load_grid_state))
        except (ValueError, KeyError, TypeError) as e:
            log.warning("cannot restore the grid engine state (%s): starting it afresh", e)
            self.grid = GridEngine(self.registry, lateness=self.config.lateness, hold=self.config.hold)
        # a state of an earlier version (a row per hourly record) migrated first; then the stored transmission
        # counter, a chunk at a time in the database thread (the engine is not used on the loop before open() returns)
        # (issue 20: ≈ 450 M rows at a month's end at 100 000 outlets, now a value per outlet, factor and month)
        rates = self.engine.rates
        migrated = await self.db.call(migrate_rate_records)
        if migrated:
            log.info("transmission counter: %d rate records of an earlier version migrated to rate_runs", migrated)
        await self.db.call(lambda c: restore_rate_state(c, rates))
        self.engine.rates.outlets_by_mn()  # sorted once now, not on the loop at the first rate write (issue 20)
        marks = await self.db.call(load_marks)
        self.engine.load_marks(marks)  # their effects are in the restored outlet states
        if self.ranker is not None:  # township rankings due when the ingester stopped
            due = await self.db.call(load_rank_due)
            self.ranker.restore(RankPeriod.containing(kind, date.fromisoformat(first)) for kind, first, _ in due)
        unacked = stored.unacked
        self._unacked = unacked
        log.info(
            "compliance state restored from %s: %d outlets, %d unacknowledged exceedances",
            self.db.path,
            restored,
            len(unacked),
        )

    async def _forget_rank(self, p: RankPeriod) -> None:
        await self.db.call(lambda c: forget_rank_due(c, p.kind, p.first.isoformat()))

    def start(self, stop: asyncio.Event) -> None:
        """Start the clock and the outbox dispatcher (call after the MQTT connection is up)."""
        self._clock_task = asyncio.create_task(self._clock_loop(stop), name="cems-compliance-clock")
        self._dispatch_task = asyncio.create_task(self.dispatcher.run(stop), name="cems-outbox")
        if self.ranker is not None:
            self._rank_task = asyncio.create_task(self.ranker.run(stop), name="cems-grid-rank")

    async def shutdown(self) -> None:
        """After ``stop`` was set: finish the clock task, then make a last delivery pass (best effort)."""
        if self._clock_task is not None:
            with contextlib.suppress(Exception):  # already logged, and raised by check()
                await self._clock_task
            self._clock_task = None
        if not self._broken:
            async with self.lock:
                # release what is held (its acknowledgements go out before the connection closes); if the
                # database is down now, nothing is acknowledged and the broker redelivers after a restart
                with contextlib.suppress(Exception):
                    await self._flush(None)
                with contextlib.suppress(Exception):  # best effort: rewritten when the next hours complete
                    held = self._held_since is not None and self._closed_at is not None
                    await self._write_rates(None, force=True, now=self._closed_at if held else None)
        if self._rank_task is not None:
            # a ranking under way finishes (its reads are bounded by the query timeout); what is left is logged
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._rank_task, 10.0)
            self._rank_task = None
        if self.ranker is not None:
            self.ranker.log_left()
        if self._dispatch_task is not None:
            try:
                await asyncio.wait_for(self._dispatch_task, 5.0)
            except TimeoutError:
                log.warning("outbox dispatcher did not finish in time; pending alerts are kept")
            self._dispatch_task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.dispatcher.run_once(), 5.0)

    def check(self) -> None:
        """Raise the error that stopped the clock task (the service must restart from the durable state)."""
        t = self._clock_task
        if t is not None and t.done() and not t.cancelled() and t.exception() is not None:
            raise ServiceError("the compliance clock failed; restart from the durable state") from t.exception()
        if self._aside_error is not None:
            raise ServiceError("the engine state commit failed; restart from the durable state") from self._aside_error

    async def settle(self) -> None:
        """Wait for the state commit written aside (``state_commit_aside``), if one is under way; raise its error
        if it failed (then and at every later call: nothing after it is committed)."""
        task = self._aside
        if task is not None:
            await asyncio.shield(task)
            if self._aside is task:
                self._aside = None
        if self._aside_error is not None:
            raise self._aside_error

    async def close(self) -> None:
        if self._aside is not None:
            with contextlib.suppress(Exception):  # logged by _write_aside; nothing more is committed
                await self.settle()
        await self.dispatcher.aclose()
        await self.db.close()
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    # -- the batch ----------------------------------------------------------------------------------------
    async def on_batch(
        self,
        readings: list[tuple[Reading, OutletInfo]],
        commands: list[InboundMessage],
        stop: asyncio.Event | None,
        *,
        release: Callable[[], None] | None = None,
        grid: Sequence[Reading] = (),
    ) -> list[tuple[InboundMessage, RejectedMessage]] | None:
        """Process a batch whose readings are durable in InfluxDB.

        ``release`` acknowledges the batch's messages; it is called once the engine state that includes them is
        committed: at once when the batch produced hourly records or events (alert latency) — unless its events may
        go ahead of the state (``alerts_before_state``): then the events and alerts are committed at once and the
        state with the next group commit (or this batch's, if due: a due state commit waits for the one before it
        written aside, its alerts do not) —, else at the next commit, at most ``commit_interval_s`` later or after
        ``commit_max_messages`` (group commit: the per-outlet snapshots are the costly part and are taken once per
        interval, not once per batch); while ``behind()`` (a backlog), after ``commit_max_messages``, or at a clock
        tick when none came for ``clock_interval_s``: each outlet's snapshot then covers several of its readings.
        ``grid``: the batch's grid-sensor readings (the grid engine).  Returns the rejected commands, or ``None``
        when stopping before the results are durable (nothing is acknowledged).

        With ``state_commit_aside`` the group commit's write goes on after this returns; the batches it covers
        are released once it is durable, and its failure is raised here by the next batch."""
        if self._aside_error is not None:
            raise self._aside_error
        if self._broken:
            return None
        rejects: list[tuple[InboundMessage, RejectedMessage]] = []
        n_readings = len(readings)
        async with self.lock:
            if readings:
                await self._load_archived(readings)
                self._pending.extend(self._judge(readings))
            if grid:
                self._grid_pending.extend(self._judge_grid(grid))
            # judged: this frame lets the readings go before the commit below (issue 20, memory; the ingester
            # keeps no other reference to them)
            del readings, grid
            if release is not None:
                self._held.append(release)
                self._held_messages += n_readings
            if (
                self._held_messages >= self.config.commit_max_messages
                or self.engine.changed_outlets >= self.config.commit_max_outlets
            ):
                due = True
            elif self._behind():
                # a backlog: full batches follow at once, so commit by count (or at a tick, if none came)
                due = False
            else:
                due = time.monotonic() - self._last_commit >= self._commit_every
            # a due state commit waits for the one before it, still being written aside (``settle``: up to a
            # second under load, docs/benchmark.md): alerts that may go ahead leave first, not behind it
            writing = self._aside is not None and not self._aside.done()
            if not commands and (not due or writing) and self._alerts_ahead():
                # alerts now, the engine state (and the acknowledgements) at the group commit: this one if due
                out, self._pending = self._pending, EngineOutput()
                gout, self._grid_pending = self._grid_pending, GridOutput()
                if not await self._commit(out, stop, gout, state=False):
                    return None
                if due and not await self._flush(stop, aside=True):
                    return None
            elif (self._pending or self._grid_pending or commands or due) and not await self._flush(
                stop, aside=not commands
            ):
                return None
            for msg in commands:
                if self.is_mark_topic(msg.topic):
                    res = await self._mark_command(msg, stop)
                else:
                    res = await self._ack_command(msg, stop)
                if res is False:
                    return None
                if isinstance(res, RejectedMessage):
                    rejects.append((msg, res))
        return rejects

    def _alerts_ahead(self) -> bool:
        """Whether what is pending may be committed ahead of the engine state (``alerts_before_state``): it has
        event updates, and none of their events has an update committed ahead of the state already."""
        events = self._pending.events + self._grid_pending.events
        if not events or not self.config.alerts_before_state:
            return False
        ids = {u.event.event_id for u in events}
        return len(ids) == len(events) and ids.isdisjoint(self._ahead)

    def is_mark_topic(self, topic: str) -> bool:
        """``{prefix}/{mn}/mark`` (an enterprise's own channel) or ``{command_prefix}/mark`` (the bureau)."""
        if topic == self.mark_topic:
            return True
        if not topic.startswith(self._data_prefix) or not topic.endswith("/mark"):
            return False
        rest = topic[len(self._data_prefix) :].split("/")
        return len(rest) == 2 and bool(rest[0])

    async def _load_archived(self, readings: list[tuple[Reading, OutletInfo]]) -> None:
        """Bring the archived hours that late readings of this batch revise (back-filled data, a late
        CN=2061 older than the hold) from SQLite, off the event loop, before the engine is fed."""
        want = self.engine.archived_wanted(readings)
        keys = self.archive.missing(want) if want else []
        rows = await self.db.call(lambda c: read_archived(c, keys)) if keys else {}
        self.archive.loaded(rows)  # replaces what an earlier batch loaded and did not use

    def _judge(self, readings: list[tuple[Reading, OutletInfo]]) -> EngineOutput:
        """The engine's output for a batch. A bug the rules meet on one reading must not stop ingestion (the
        batch would be redelivered and fail again on every restart): the batch is then judged reading by
        reading, and a reading that still fails is logged with its traceback, counted (``rules_errors``) and
        left unjudged; it is stored in InfluxDB and acknowledged like the others. Feeding a reading twice is
        harmless: an hour keeps one value per second (the later wins).

        The engine is told the service's clock (the one its ticks use) with the batch: data of an hour whose repair
        deadline it has reached change no figure (``late_beyond_window``), whatever the ticks before them; while a
        backlog holds the clock, the clock it holds (:meth:`_judging_clock`)."""
        now = self._judging_clock()
        try:
            return self.engine.on_readings(readings, now=now)
        except Exception:
            log.exception("the rules failed on a batch of %d readings: judging them one by one", len(readings))
        out = EngineOutput()
        for item in sorted(readings, key=lambda it: it[0].data_time):
            try:
                out.extend(self.engine.on_readings([item], now=now))
            except Exception:
                self.stats.rules_errors += 1
                r = item[0]
                log.exception(
                    "the rules failed on the reading of %s at %s: stored, not judged (rules_errors)",
                    r.mn,
                    r.data_time.isoformat(),
                )
        return out

    def _judge_grid(self, readings: Sequence[Reading]) -> GridOutput:
        """The grid engine's output for a batch; as :meth:`_judge`, a reading the rules fail on is logged,
        counted (``rules_errors``) and left unjudged; the grid engine is told the service's clock too."""
        now = self._judging_clock()
        try:
            return self.grid.on_readings(readings, now=now)
        except Exception:
            log.exception("the grid rules failed on a batch of %d readings: judging them one by one", len(readings))
        out = GridOutput()
        for r in sorted(readings, key=lambda r: r.data_time):
            try:
                out.extend(self.grid.on_readings([r], now=now))
            except Exception:
                self.stats.rules_errors += 1
                log.exception("the grid rules failed on the reading of %s at %s: stored, not judged", r.mn, r.data_time)
        return out

    async def _flush(self, stop: asyncio.Event | None, *, aside: bool = False) -> bool:
        """Commit what the engine produced since the last commit, then release the held batches. ``aside``: the
        state may be written aside (``state_commit_aside``); the held batches are then released once it is
        durable (:meth:`_write_aside`)."""
        out, self._pending = self._pending, EngineOutput()
        gout, self._grid_pending = self._grid_pending, GridOutput()
        t0 = time.monotonic()
        held, self._held = self._held, []
        n_held, self._held_messages = self._held_messages, 0
        hand = _Handover(held, t0) if aside else None
        try:
            ok = await self._commit(out, stop, gout, aside=hand)
        except BaseException:
            self._held, self._held_messages = held + self._held, n_held + self._held_messages
            raise
        if not ok:
            self._held, self._held_messages = held + self._held, n_held + self._held_messages
            return False
        self._last_commit = time.monotonic()
        if hand is None or not hand.taken:  # (else written aside: released once durable, _write_aside)
            self._commit_cost(t0)
            for release in held:
                release()
        return True

    def _commit_cost(self, t0: float) -> None:
        """Adaptive group commit: the snapshots' cost grows with the outlets touched and their open hours; keep
        commits (from ``t0`` to now) to about a fifth of the time (between commit_interval_s and 8× it)."""
        cost = time.monotonic() - t0
        self._commit_every = min(max(self.config.commit_interval_s, 4 * cost), 8 * self.config.commit_interval_s)

    async def tick(self, stop: asyncio.Event | None = None) -> bool:
        """One clock pass: close hours/events that time has ended, then escalate overdue exceedances."""
        if self._aside_error is not None:
            raise self._aside_error
        if self._broken:
            return False
        # the state commit under way is waited for before the lock, not under it: batches (and their alerts) go on
        # meanwhile (issue 20, alert latency); the clock's own commit is written aside too (below)
        await self.settle()
        async with self.lock:
            now = self.config.clock()
            self.stats.clock_ticks += 1
            if self._clock_holds():
                self.stats.clock_held += 1
            else:
                self._pending.extend(self.engine.on_clock(now))
                self._grid_pending.extend(self.grid.on_clock(now))
                self._closed_at = now
            late = self.engine.late_counts()
            self.stats.late_readings = late["late_readings"]
            self.stats.late_unrevised = late["late_unrevised"]
            self.stats.late_beyond_window = late["late_beyond_window"]
            # held batches: at every tick, but under a backlog (committed by count, on_batch) only when nothing
            # was committed for a tick's interval
            held = bool(self._held) and (
                not self._behind() or time.monotonic() - self._last_commit >= self.config.clock_interval_s
            )
            if (self._pending or self._grid_pending or held) and not await self._flush(stop, aside=True):
                return False
        # without the lock (issue 20): the rate write gives the loop back between slices of outlets, and batches,
        # alerts and acknowledgements go on meanwhile
        # to the time hours were last closed with: a held clock (a backlog) closes none, and the hours it ended would
        # count as expected and not received, figures too low until the backlog is judged
        if self._closed_at is not None and not await self._write_rates(stop, locked=False, now=self._closed_at):
            return False
        async with self.lock:
            await self._prune_archive(now)
            return await self._escalate(now, stop)

    def _judging_clock(self) -> datetime:
        """The clock a batch is judged at (repair deadlines, :meth:`_judge`): the service's, except while a backlog
        holds the clock (:meth:`_clock_holds`): then the time hours were last closed with. Data that waited in the
        backlog arrived before it; judged at the present clock, a deadline passed while they waited would refuse
        them, and before this the hours of an outlet already emitted were judged at that held time too."""
        if self._held_since is not None and self._closed_at is not None:
            return self._closed_at
        return self.config.clock()

    def _clock_holds(self) -> bool:
        """Whether this tick closes nothing: the ingester is behind, for less than ``clock_hold_max_s`` in a row."""
        if not self._behind():
            self._held_since = None
            return False
        t = time.monotonic()
        if self._held_since is None:
            self._held_since = t
            log.info("a backlog of received messages: the clock closes no hour until it is judged")
        return t - self._held_since < self.config.clock_hold_max_s

    async def _prune_archive(self, now: datetime) -> None:
        """Archived hours past their repair deadline can no longer change: forget them (once an hour)."""
        before = int(now.timestamp()) - 3600 - int(REPAIR_WINDOW.total_seconds())
        before -= before % 3600
        if before > self._archive_pruned_before:
            self._archive_pruned_before = before
            await self.db.call(lambda c: prune_archive(c, before))

    async def _write_rates(
        self, stop: asyncio.Event | None, *, force: bool = False, locked: bool = True, now: datetime | None = None
    ) -> bool:
        """Live ``cems_rate``: per outlet/day and district/month for the days whose hours completed since
        the last write (at most every ``rates_interval_s``; idempotent points, so a rewrite is harmless).
        The clock alone makes hours due (issue 12 item 4): the day of the newest hour that is over is rewritten
        even when no record arrived, so a silent outlet's figure falls instead of going unwritten.

        Issue 20: the outlets are counted :data:`RATE_SLICE_OUTLETS` at a time, the loop running between slices;
        ``locked``: whether the caller holds :attr:`lock` (else it is taken only to prune SQLite).  The batches
        committed meanwhile mark their days again (:attr:`_rate_days`): a slice counted before them is rewritten
        next time.  ``now``: the clock time the caller closed hours with (a tick's): the write counts to that time,
        not to a later clock reading, whose newly ended hours the engine has not closed yet (they would count as
        expected and not received until the next write)."""
        clock = self.config.clock() if now is None else now
        due = (clock - self.config.lateness).replace(minute=0, second=0, microsecond=0)
        if self._rates_due is None or due > self._rates_due:
            self._rates_due = due
            self._rate_days.add((due - timedelta(seconds=1)).astimezone(BEIJING).date())
        if not self._rate_days or (not force and time.monotonic() - self._rates_written < self.config.rates_interval_s):
            return True
        taken, self._rate_days = self._rate_days, set()
        days = sorted(taken)
        newest = self.engine.rates.newest_hour()
        keep_from: datetime | None = None
        if newest is not None:
            first = newest.astimezone(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            keep_from = (first - timedelta(days=1)).replace(day=1)
            # days of pruned months are final (DOMAIN.md §5): late data there do not rewrite their figures
            days = [d for d in days if day_bounds(d)[0] >= keep_from]
        if not days:
            return True
        # hours not yet over (plus the lateness) are not expected yet: a day or month is counted to date
        cap = (clock - self.config.lateness).replace(minute=0, second=0, microsecond=0)
        start, end = day_bounds(days[0])[0], min(day_bounds(days[-1])[1], cap)
        rates = self.engine.rates
        pace = _Pacer()
        points = 0
        if end > start:
            # the outlets' day rates a slice at a time, each write's lines made just before it: a city's rates and
            # lines all at once were ≈ 0.45 KB an outlet (issue 20, memory); the same points, in order
            outlets = rates.outlets_by_mn()
            for i in range(0, len(outlets), RATE_WRITE_OUTLETS):
                chunk: list[str] = []
                for k in range(i, min(i + RATE_WRITE_OUTLETS, len(outlets)), RATE_SLICE_OUTLETS):
                    await pace.turn()  # the loop runs between slices (issue 20)
                    part = rates.outlet_day_totals(start, end, outlets[k : min(k + RATE_SLICE_OUTLETS, len(outlets))])
                    chunk += [
                        outlet_day_line(o.outlet.mn, o.enterprise.id, o.district.code, day, e, r, v)
                        for o, day, e, r, v in part
                    ]
                    del part
                if chunk and not await self._write(chunk, stop):
                    self._rate_days |= taken
                    return False
                points += len(chunk)
            del outlets
        lines: list[str] = []
        for y, m in sorted({(d.year, d.month) for d in days}):
            a, b = month_bounds(y, m)
            if min(b, cap) > a:
                months: list[DistrictMonthRate] = []
                for res in rates.district_months_stepwise(a, min(b, cap), RATE_SLICE_OUTLETS):
                    if res is None:
                        await pace.turn()
                    else:
                        months = res
                shard = self.config.shard
                for r in months:  # (a district month's reasons may list thousands of enterprises)
                    await pace.turn()
                    if shard is None:
                        lines.append(district_month_rate_line(r))
                    else:  # a part only: never under the district's key, where the shards would overwrite each other
                        lines.append(district_part_line(part_of(r, shard)))
        if lines and not await self._write(lines, stop):
            self._rate_days |= taken
            return False
        self._rates_written = time.monotonic()
        # keep the month of the newest counted hour and the one before in memory and in SQLite (bounded
        # state); relative to the data, not the clock, so that a backfill of old months still counts whole
        if keep_from is not None:
            dropped = 0
            for n in rates.prune_stepwise(keep_from, RATE_SLICE_OUTLETS):
                if n is None:
                    await pace.turn()  # a month's turn drops a month of every outlet
                else:
                    dropped = n
            if dropped:
                cut = int(keep_from.timestamp())
                if locked:
                    await self.db.call(lambda c: prune_rate_state(c, cut))
                else:
                    async with self.lock:
                        await self.db.call(lambda c: prune_rate_state(c, cut))
        self.stats.rate_points += points + len(lines)
        return True

    async def _clock_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.clock_interval_s)
            if stop.is_set():
                return
            try:
                await self.tick(stop)
            except Exception:
                log.exception("compliance clock tick failed")
                self._broken = True
                raise

    # -- internals ----------------------------------------------------------------------------------------
    def _alert_rows(
        self,
        row: EventRow,
        update: str,
        key: str,
        *,
        topic_type: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> list[OutboxRow]:
        aid = alert_id(row.event_id, key)
        body = {
            **row.json,
            "update": update,
            "alert_id": aid,
            "opened_at": row.opened_at,
            "acked_by": row.acked_by,
            "acked_at": row.acked_at,
            "ack_note": row.ack_note,
            "escalated_at": row.escalated_at,
            **(extra or {}),
        }
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        topic = f"{self._alerts_prefix}/{row.district}/{row.enterprise}/{topic_type or row.type}"
        rows = [OutboxRow(MQTT, topic, row.event_id, aid, data)]
        rows += [OutboxRow(WEBHOOK, url, row.event_id, aid, data) for url in self.config.webhooks]
        self.stats.alerts += 1
        return rows

    def _daily_lines(self, out: EngineOutput) -> list[str]:
        """``cems_daily`` points of the days closed or revised (issue 12 item 9), and ``cems_monthly`` points
        of the months closed or revised until final."""
        lines: list[str] = []
        for d in out.daily:
            info = self.registry.outlet(d.mn)
            ent, dist = (info.enterprise.id, info.district.code) if info is not None else ("", "")
            lines.append(daily_line(d, ent, dist))
        for m in out.monthly:
            info = self.registry.outlet(m.mn)
            ent, dist = (info.enterprise.id, info.district.code) if info is not None else ("", "")
            lines.append(monthly_line(m, ent, dist))
        return lines

    async def _commit(
        self,
        out: EngineOutput,
        stop: asyncio.Event | None,
        gout: GridOutput | None = None,
        *,
        state: bool = True,
        aside: _Handover | None = None,
    ) -> bool:
        """Write ``out``'s points to InfluxDB, then commit its events and alerts with the engine state in SQLite.
        ``state=False`` (:meth:`_alerts_ahead`): the events and alerts only; the engine state, hour archive,
        grid state, transmission counter and ranking periods wait for the next commit with ``state=True``.

        ``aside`` (the held batches' releases and when the commit began): with ``state_commit_aside``, the state
        is serialised here and written aside (:meth:`_write_aside`), which then releases the batches (``taken``)."""
        if state:
            await self.settle()  # one state commit at a time, in order (and a failed one is raised)
        now_dt = self.config.clock()
        gout = gout if gout is not None else GridOutput()
        lines: list[str] = []
        for rec in out.hourly:
            info = self.registry.outlet(rec.mn)
            ent, dist = (info.enterprise.id, info.district.code) if info is not None else ("", "")
            lines.append(hourly_line(rec, ent, dist))
        lines += self._daily_lines(out)
        lines += [grid_hourly_line(h) for h in gout.hourly]
        lines += [grid_daily_line(d) for d in gout.daily]
        events = out.events + gout.events
        upserts: dict[str, EventRow] = {}
        rows: list[OutboxRow] = []
        new_unacked: dict[str, float] = {}
        if events:
            ids = {u.event.event_id for u in events}
            # (a state commit written aside may be under way, its events not readable yet: they count as ahead
            # of the state, so only a commit with state=True, which waits for it, takes their next updates)
            known = await self.db.read(lambda c: load_events(c, ids))
            for u in events:
                ev = u.event
                eid = ev.event_id
                j = ev.to_json()
                key = transition_key(u.kind, j)
                row = known.get(eid)
                if row is not None and (
                    row.alerted_key == key
                    or (u.kind == OPENED and row.status not in (RETRACTED_STATUS, MARKED))
                    or (row.status != "open" and not ev.late and not _mark_revision(u.kind, ev))
                ):
                    # already alerted (redelivery after a crash) or stale: never alert twice; only late data
                    # (a revision, issue 12 item 1) reopen, extend or retract an event already closed
                    self.stats.duplicates_suppressed += 1
                    continue
                if row is None:
                    row = EventRow(
                        event_id=eid,
                        type=ev.type,
                        mn=ev.mn,
                        enterprise=ev.enterprise,
                        district=ev.district,
                        status=ev.status,
                        json=j,
                        alerted_status=u.kind,
                        alerted_key=key,
                        opened_at=now_dt.astimezone(BEIJING).isoformat(),
                        opened_ts=now_dt.timestamp(),
                    )
                    if ev.type == HOURLY_EXCEEDANCE:
                        new_unacked[eid] = row.opened_ts
                else:
                    row = replace(row, status=ev.status, json=j, alerted_status=u.kind, alerted_key=key)
                known[eid] = upserts[eid] = row
                lines.append(event_line(ev, **row.ack_fields()))
                rows += self._alert_rows(row, u.kind, key)
                self.stats.event_updates += 1
        marks: list[MarkRecord] = []
        if state:  # (marks are committed with the state: a mark command commits at once, never ahead of it)
            marks, self._pending_marks = self._pending_marks, []
        for m in marks:
            info = self.registry.outlet(m.mn)
            ent, dist = (info.enterprise.id, info.district.code) if info is not None else ("", "")
            lines.append(mark_line(m, ent, dist))
        if lines and not await self._write(lines, stop):
            # the engine has advanced past what is durable: refuse everything until restarted
            self._broken = True
            return False
        rank_due: list[tuple[str, str, str]] = [
            (p.kind, p.first.isoformat(), p.last.isoformat())
            for p in (self.ranker.periods_for(d.day for d in gout.daily) if self.ranker is not None else ())
        ]
        ups = list(upserts.values())
        ts = time.time()
        event_ids = {u.event.event_id for u in events}
        if not state:
            # the caller checked that each event has one update here and none committed ahead already
            if ups or rows:
                try:
                    due = await self.db.call_alerts(lambda c: commit_events(c, ups, rows, ts))
                except BaseException:
                    self._broken = True
                    raise
                self._dispatch(due, rows)
            self._ahead |= event_ids
            if self._aside is not None and not self._aside.done():  # ahead of that commit's state too
                self._ahead_next |= event_ids
            self._ahead_rank_due += rank_due
            self._committed(out, gout, new_unacked)
            return True
        changes = self.engine.take_changes()
        rate_changes = self.engine.rates.take_changes()  # (what the batches since the last state commit counted)
        archived = self.archive.take()
        grid_changes = self.grid.take_changes()
        if self._ahead_rank_due:
            rank_due = self._ahead_rank_due + rank_due
        # a crash between the two transactions is safe while each event has at most one update in them and in
        # the commits ahead of the state since the last one (the first update redelivered must be the one its
        # row remembers to be suppressed): else one transaction
        split = len(event_ids) == len(events) and event_ids.isdisjoint(self._ahead)
        if rows and len(changes) >= self.config.split_commit_outlets and split:
            # the alerts leave as soon as they and their events are durable (a small transaction), not after
            # the engine state (the large one, next): see commit_events for why a crash in between is safe
            try:
                due = await self.db.call_alerts(lambda c: commit_events(c, ups, rows, ts))
            except BaseException:
                self._broken = True
                raise
            self._dispatch(due, rows)
            ups, rows = [], []
        if (
            aside is not None
            and self.config.state_commit_aside
            and not marks
            and len(changes) <= ASIDE_MAX_OUTLETS
            and (changes or rate_changes or ups or rows or archived or grid_changes or rank_due)
        ):
            # taken now, under the lock (the engine's state of this moment), serialised after it is let go, a slice at
            # a time on the loop (copy on write: an outlet a batch changes meanwhile is serialised first), and written
            # aside in the database thread, where the write is queued now: what is queued after it stays after it
            em = self.engine.emergency
            # (an emergency line's judgement changes the state of the outlets it spans: those at once)
            capture = StateCapture(changes, eager=[mn for mn in changes if em.watches(mn)] if em.active else ())
            grid_rows = encode_grid(grid_changes)
            self.engine.before_change = capture.before_change
            ready: concurrent.futures.Future[EncodedChanges] = concurrent.futures.Future()
            stored = self._stored
            write = self.db.submit(
                lambda c: commit_state(
                    c, ready.result(), rate_changes, ups, rows, ts, (), archived, None, rank_due, stored
                )
            )
            capturing = asyncio.create_task(self._serialise(capture, grid_rows, ready), name="cems-state-serialise")
            # (a task cancelled before it ran never runs its body: the write must not wait for it forever)
            capturing.add_done_callback(partial(_unserialised, ready))
            # until it is durable, its events (and those committed ahead before it) are ahead of the durable state
            self._ahead |= event_ids
            self._ahead_next = set()
            self._ahead_rank_due = []
            aside.taken = True
            self._aside = asyncio.create_task(
                self._write_aside(write, aside.held, aside.t0, out, gout, new_unacked, bool(rows), capturing),
                name="cems-state-commit",
            )
            return True
        if changes or rate_changes or ups or rows or marks or archived or grid_changes or rank_due:
            try:
                await self.db.call(
                    lambda c: commit_state(
                        c, changes, rate_changes, ups, rows, ts, marks, archived, grid_changes, rank_due, self._stored
                    )
                )
            except BaseException:
                self._broken = True
                raise
            if rows:
                self.dispatcher.kick()
        self._ahead.clear()
        self._ahead_rank_due = []
        self._committed(out, gout, new_unacked)
        return True

    def _dispatch(self, due: list[OutboxItem], rows: list[OutboxRow]) -> None:
        """The alerts just committed: those due at once straight to the dispatcher, a pass for the others."""
        if due:
            self.dispatcher.deliver(due)
        if len(due) < len(rows):
            self.dispatcher.kick()

    async def _serialise(
        self, capture: StateCapture, grid: dict[str, str | None], ready: concurrent.futures.Future[EncodedChanges]
    ) -> None:
        """Serialise a commit's states (:class:`StateCapture`) a slice at a time, the loop running between slices,
        and hand them to the write queued for them (``ready``); a failure (or cancellation) fails the write."""
        try:
            while not capture.step(CAPTURE_SLICE_OUTLETS):
                await asyncio.sleep(0)
            ready.set_result(capture.encoded(grid))
        except BaseException as e:
            ready.set_exception(e if isinstance(e, Exception) else ServiceError("the state commit was cancelled"))
            raise
        finally:
            if self.engine.before_change == capture.before_change:
                self.engine.before_change = None

    async def _write_aside(
        self,
        write: asyncio.Future[None],
        held: list[Callable[[], None]],
        t0: float,
        out: EngineOutput,
        gout: GridOutput,
        new_unacked: dict[str, float],
        alerts: bool,
        capturing: asyncio.Task[None] | None = None,
    ) -> None:
        """The end of a state commit written aside: once it is durable, the bookkeeping and the release of the
        batches it covers; if it failed, nothing is released and the runtime refuses everything (the error is
        raised by the next batch, tick, commit or ``check()``; the broker redelivers what was not acknowledged).
        ``capturing``: its serialisation (:meth:`_serialise`), which the write waits for."""
        try:
            if capturing is not None:
                try:
                    await capturing
                except asyncio.CancelledError:
                    raise
                except BaseException:
                    with contextlib.suppress(BaseException):
                        await write  # (fails with it: nothing was written)
                    raise
            await write
        except asyncio.CancelledError:  # (the loop closing under it: nothing is released)
            self._broken = True
            raise
        except BaseException as e:
            self._broken = True
            self._aside_error = e
            log.error("the engine state commit failed: restart from the durable state", exc_info=e)
            raise
        self._ahead, self._ahead_next = self._ahead_next, set()
        self._committed(out, gout, new_unacked)
        if alerts:
            self.dispatcher.kick()
        self._last_commit = time.monotonic()
        self._commit_cost(t0)
        for release in held:
            release()

    def _committed(self, out: EngineOutput, gout: GridOutput, new_unacked: dict[str, float]) -> None:
        """Bookkeeping once ``out``'s points, events and alerts are durable."""
        self.stats.hourly_records += len(out.hourly)
        self.stats.grid_hourly_records += len(gout.hourly)
        self.stats.grid_daily_records += len(gout.daily)
        if gout.daily and self.ranker is not None:  # durable now: rank the days (in the background)
            self.ranker.days_written(d.day for d in gout.daily)
        self._rate_days.update(rec.hour_start.astimezone(BEIJING).date() for rec in out.hourly)
        self._unacked.update(new_unacked)

    async def _warning_command(self, msg: InboundMessage, stop: asyncio.Event | None) -> RejectedMessage | bool:
        """An operator's warning setting (issue 16): kept, judged, answered (:mod:`cems.service.warnings`)."""
        try:
            period, reply_to = parse_warning(msg.payload)
        except ValueError as e:
            self._reply(_reply_to(msg.payload), {"result": "bad_command", "detail": str(e)})
            return RejectedMessage("bad_command", f"warning: {e}")
        history = self.engine.emergency.history
        if period in history.periods:  # the retained copy, delivered again on every subscription
            self._reply(reply_to, {"result": "already_set", **period.to_json()})
            return True
        history = history.with_period(period)
        await asyncio.to_thread(write_history, self.config.state_dir / HISTORY_FILE, history)
        if not await self._commit(self.engine.set_warnings(history, [period]), stop):
            return False
        log.info("warning level %s from %s set by %s", period.level.label, period.start.isoformat(), period.set_by)
        self._reply(reply_to, {"result": "set", **period.to_json()})
        return True

    async def _mark_command(self, msg: InboundMessage, stop: asyncio.Event | None) -> RejectedMessage | bool:
        """A mark, stop declaration, repair or withdrawal (``cems.mark/1``, issue 14): decided against the
        registry, the mark types and the deadline; an accepted record (or a late declaration, kept without
        effect) is stored append-only in SQLite and ``cems_mark`` with the engine's revisions, then answered."""
        now = self.config.clock()
        topic_mn = None if msg.topic == self.mark_topic else msg.topic[len(self._data_prefix) :].split("/")[0]
        try:
            sub = parse_mark(msg.payload, topic_mn=topic_mn, via=msg.topic, received_at=now)
        except RejectedMessage as e:
            self._mark_reply(topic_mn or _payload_mn(msg.payload), _reply_to(msg.payload), e.reason, e.detail)
            return e
        rec = sub.record
        if self.config.shard is not None and not self.config.shard.owns(rec.mn):
            return self._other_shard(f"{rec.kind} of outlet", rec.mn)
        known = self.engine.marks.get(rec.mn, rec.record_id)
        if known is not None:  # redelivered, or sent twice with the same reply_to: stored once
            self._mark_reply(rec.mn, sub.reply_to, "duplicate", "already stored", known)
            return True
        try:
            rec = self.engine.marks.check(rec, now)
        except RejectedMessage as e:
            self._mark_reply(rec.mn, sub.reply_to, e.reason, e.detail)
            log.info("%s of %s refused: %s: %s", rec.kind, rec.mn, e.reason, e.detail)
            return e
        target = self.engine.marks.get(rec.mn, rec.target) if rec.target else None
        want = self.engine.mark_archived_wanted(rec)  # closed days whose daily judgement the mark revises
        if want:
            keys = self.archive.missing(want)
            self.archive.loaded(await self.db.call(lambda c: read_archived(c, keys)) if keys else {})
        out = self.engine.on_mark(rec)
        self._pending.extend(out)
        self._pending_marks.append(rec)
        self._rate_days.update(_days(target or rec, now))
        if not await self._flush(stop):
            return False
        self.stats.marks += 1
        log.info("%s %s of %s (%s) stored: %s", rec.kind, rec.record_id, rec.mn, rec.type, rec.status)
        self._mark_reply(rec.mn, sub.reply_to, "accepted" if rec.status == ACCEPTED else rec.status, rec.note, rec)
        return True

    def _other_shard(self, what: str, key: str) -> bool:
        """A command about another shard's event or outlet (``cems run --shard``; every ingester receives the
        commands): its owner answers it, this one stays silent — no reply, no dead letter (docs/scaling.md)."""
        self.stats.other_shard_commands += 1
        log.debug("%s %s: not of shard %s, left to its owner", what, key, self.config.shard)
        return True

    def _mark_reply(
        self, mn: str | None, request_id: str | None, result: str, detail: str, rec: MarkRecord | None = None
    ) -> None:
        """Answer on ``{command_prefix}/reply/{mn}/{request_id}``: the submitting MN may read only its own."""
        if request_id is None or not mn:
            return
        body: dict[str, Any] = {"result": result, "detail": detail}
        if rec is not None:
            body["record"] = rec.to_json()
        self._reply(f"{mn}/{request_id}", body)

    async def _ack_command(self, msg: InboundMessage, stop: asyncio.Event | None) -> RejectedMessage | bool:
        if msg.topic == self.warning_topic:
            return await self._warning_command(msg, stop)
        if msg.topic == self.action_topic:
            return await self._action_command(msg, stop)
        try:
            cmd = parse_ack(msg.payload, self.config.clock)
        except ValueError as e:
            self._reply(_reply_to(msg.payload), {"result": "bad_command", "detail": str(e)})
            return RejectedMessage("bad_command", str(e))
        event_id, by, at, note = cmd.event_id, cmd.by, cmd.at, cmd.note
        known = await self.db.call(lambda c: load_events(c, [event_id]))
        row = known.get(event_id)
        if row is None and self.config.shard is not None:
            return self._other_shard("acknowledgement", event_id)
        if row is None:
            self._reply(cmd.reply_to, {"result": "unknown_event", "event_id": event_id})
            return RejectedMessage("unknown_event", f"no event {event_id!r} to acknowledge")
        if row.acked_at is not None:
            log.info(
                "event %s already acknowledged by %s at %s; ignoring the ack of %s",
                event_id,
                row.acked_by,
                row.acked_at,
                by,
            )
            self._reply(cmd.reply_to, {"result": "already_acknowledged", **_ack_view(row)})
            return True
        bounded = bound_ack_time(at, row.opened_at, self.config.clock())
        if bounded != at:
            log.warning(
                "event %s: ack time %s outside [opened %s, now]: recorded as %s", event_id, at, row.opened_at, bounded
            )
            at = bounded
        row = replace(row, acked_by=by, acked_at=at, ack_note=note)
        if not await self._write([event_line(row.event(), **row.ack_fields())], stop):
            return False
        rows = self._alert_rows(row, ACKNOWLEDGED, ACKNOWLEDGED)
        ts = time.time()
        if await self.db.call(lambda c: record_ack(c, event_id, by, at, note, rows, ts)):
            self.stats.acks += 1
            self._unacked.pop(event_id, None)
            self.dispatcher.kick()
            log.info("event %s acknowledged by %s", event_id, by)
            await self.db.call(lambda c: record_legacy_ack(c, event_id, by, at, note))  # the action history
        self._reply(cmd.reply_to, {"result": "acknowledged", **_ack_view(row)})
        return True

    async def _action_command(self, msg: InboundMessage, stop: asyncio.Event | None) -> RejectedMessage | bool:
        """An action on an event's case (issue 19): checked against the case, written to InfluxDB, recorded
        in SQLite with its alerts, answered (:mod:`cems.service.compliance._actions`)."""
        try:
            cmd = parse_action(msg.payload)
        except ValueError as e:
            self._reply(_reply_to(msg.payload), {"result": "bad_command", "detail": str(e)})
            return RejectedMessage("bad_command", f"event action: {e}")
        if cmd.reply_to is not None:  # a redelivered command: answer as the first time
            request_id = cmd.reply_to
            done = await self.db.call(lambda c: find_request(c, request_id))
            if done is not None:
                self._reply(cmd.reply_to, {"result": "done", "duplicate": True, **done})
                return True
        known = await self.db.call(lambda c: load_events(c, [cmd.event_id]))
        row = known.get(cmd.event_id)
        if row is None and self.config.shard is not None:
            return self._other_shard(f"event action {cmd.action}", cmd.event_id)
        if row is None:
            self._reply(cmd.reply_to, {"result": "unknown_event", "event_id": cmd.event_id})
            return RejectedMessage("unknown_event", f"no event {cmd.event_id!r} to {cmd.action}")
        if cmd.dispatched_to is not None and cmd.dispatched_to not in {d.code for d in self.registry.district}:
            detail = f"no district {cmd.dispatched_to!r} in the registry"
            self._reply(cmd.reply_to, {"result": "bad_command", "detail": detail})
            return RejectedMessage("bad_command", f"event action: {detail}")
        acked = row.acked_at is not None
        case = await self.db.call(lambda c: load_case(c, cmd.event_id, acked))
        now = self.config.clock()
        at = bound_ack_time(cmd.at or now.isoformat(), row.opened_at, now)
        try:
            new = apply_action(case, cmd, at, row.district)
        except InvalidTransition as e:  # e.g. two officers on the same case: the first one stands
            self._reply(cmd.reply_to, {"result": "invalid_state", "event_id": row.event_id, **case.fields(),
                                       "detail": str(e)})  # fmt: skip
            return True
        if cmd.action == DISPATCH and new.deadline is not None and new.deadline <= at:
            detail = f"the deadline {new.deadline} is not after the dispatch ({at})"
            self._reply(cmd.reply_to, {"result": "bad_command", "detail": detail})
            return RejectedMessage("bad_command", f"event action: {detail}")
        if cmd.action == ACK:
            row = replace(row, acked_by=cmd.by, acked_at=at, ack_note=cmd.note)
        lines = [
            event_line(row.event(), **row.ack_fields(), **new.fields()),
            action_line(
                cmd,
                at,
                new,
                event_type=row.type,
                enterprise=row.enterprise,
                district=row.district,
                mn=row.mn,
                ts_ms=max(action_ms(at), self._last_action_ms + 1),
            ),
        ]
        if not await self._write(lines, stop):
            return False
        self._last_action_ms = max(action_ms(at), self._last_action_ms + 1)
        extra: dict[str, Any] = {"action": cmd.action, "action_by": cmd.by, "action_note": cmd.note, **new.fields()}
        if cmd.action == ACK:
            rows = self._alert_rows(row, ACKNOWLEDGED, ACKNOWLEDGED, extra=extra)
        else:
            rows = self._alert_rows(row, cmd.action, f"{cmd.action}:{at}", extra=extra)
        ts = time.time()
        seq = await self.db.call(lambda c: record_action(c, cmd, at, new, rows, ts))
        if cmd.action == ACK:
            self.stats.acks += 1
            self._unacked.pop(cmd.event_id, None)
        self.dispatcher.kick()
        log.info("event %s: %s by %s (case %s)", cmd.event_id, cmd.action, cmd.by, new.case_status)
        self._reply(cmd.reply_to, {"result": "done", **_action_view(cmd, at, new, seq)})
        return True

    def _reply(self, request_id: str | None, body: dict[str, Any]) -> None:
        """Answer an acknowledgement command that asked for it (QoS 1, in the background: a reply lost with
        a broken connection only makes the sender say it could not confirm; the ack itself is durable)."""
        if request_id is None:
            return
        topic = ack_result_topic(self._command_prefix, request_id)
        data = json.dumps({"request_id": request_id, **body}, ensure_ascii=False).encode("utf-8")

        async def send() -> None:
            try:
                await self._publish(topic, data)
            except Exception as e:
                log.warning("could not send the ack reply to %s: %s", topic, e)

        task = asyncio.create_task(send())
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _escalate(self, now: datetime, stop: asyncio.Event | None) -> bool:
        sla_s = self.registry.city.ack_sla_hours * 3600.0
        now_ts = now.timestamp()
        due = [eid for eid, ts in self._unacked.items() if ts + sla_s <= now_ts]
        if not due:
            return True
        known = await self.db.call(lambda c: load_events(c, due))
        at = now.astimezone(BEIJING).isoformat()
        lines: list[str] = []
        rows: list[OutboxRow] = []
        done: list[tuple[str, str]] = []
        for eid in due:
            row = known.get(eid)
            if row is None or row.acked_at is not None or row.escalated_at is not None or row.status == MARKED:
                self._unacked.pop(eid, None)
                continue
            row = replace(row, escalated_at=at)
            lines.append(event_line(row.event(), **row.ack_fields()))
            due_at = datetime.fromtimestamp(row.opened_ts + sla_s, BEIJING).isoformat()
            rows += self._alert_rows(
                row,
                ESCALATED,
                ESCALATED,
                topic_type=ESCALATION_TOPIC,
                extra={"ack_sla_hours": self.registry.city.ack_sla_hours, "ack_due_at": due_at},
            )
            done.append((eid, at))
        if lines and not await self._write(lines, stop):
            return False
        if done:
            ts = time.time()
            await self.db.call(lambda c: record_escalations(c, done, rows, ts))
            for eid, _ in done:
                self._unacked.pop(eid, None)
                log.warning("event %s not acknowledged within %g h: escalated", eid, self.registry.city.ack_sla_hours)
            self.stats.escalations += len(done)
            self.dispatcher.kick()
        return True


@dataclass
class _Handover:
    """The batches a group commit covers (their releases) and when it began; ``taken`` once its state is written
    aside (``ComplianceConfig.state_commit_aside``): the write then releases them when durable."""

    held: list[Callable[[], None]]
    t0: float
    taken: bool = False


def _mark_revision(kind: str, ev: Any) -> bool:
    """An update that marks (issue 14) make to an event already closed: a run closed as ``marked``, reopened by
    a withdrawal, revised by a repair, or a mark event."""
    return kind == MARKED or bool(ev.marks) or ev.type in (MARK_CAP_EXCEEDED, MARK_SUSPICIOUS)


def _days(rec: MarkRecord, now: datetime) -> set[date]:
    """Beijing days whose transmission rates a record may change (at most the last 40 days: older are final)."""
    a = max(rec.start, now - timedelta(days=40)).astimezone(BEIJING).date()
    b = min(rec.end, now).astimezone(BEIJING).date()
    return {a + timedelta(days=i) for i in range((b - a).days + 1)} if b >= a else set()


def _payload_mn(payload: bytes) -> str | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
        mn = json.loads(payload).get("mn")
        if isinstance(mn, str) and re.match(r"^[A-Za-z0-9_\-]{1,24}$", mn):
            return mn
    return None


def _reply_to(payload: bytes) -> str | None:
    """The ``reply_to`` of a command that could not be parsed, when it can still be read."""
    with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
        value = json.loads(payload).get("reply_to")
        if isinstance(value, str) and _REQUEST_ID.match(value):
            return value
    return None


def _action_view(cmd: ActionCommand, at: str, case: CaseState, seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": cmd.event_id,
        "action": cmd.action,
        "by": cmd.by,
        "at": at,
        "note": cmd.note,
        **case.fields(),
    }


def _ack_view(row: EventRow) -> dict[str, Any]:
    return {"event_id": row.event_id, "acked_by": row.acked_by, "acked_at": row.acked_at, "ack_note": row.ack_note}


class AckCommand(NamedTuple):
    """An acknowledgement command: who acknowledged which event when, with their note (处理意见), and the
    request id the sender waits on for the ingester's reply (``{command_prefix}/reply/{reply_to}``)."""

    event_id: str
    by: str
    at: str
    note: str | None = None
    reply_to: str | None = None


#: A request id: letters, digits, ``-`` and ``_`` (it becomes one topic level).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NOTE_MAX_CHARS: Final = 1000


#: Bidirectional-text controls (U+200E/F, U+202A-E, U+2066-9): they reorder what a terminal shows.
_BIDI: Final = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_text(text: str) -> str:
    """``text`` without control characters (C0, DEL, C1: terminal escapes, forged log lines) and bidi
    controls; tabs and line breaks become spaces; surrounding white space stripped."""
    out = []
    for ch in text:
        if ch in "\t\r\n":
            out.append(" ")
        elif unicodedata.category(ch) == "Cc" or ch in _BIDI:
            continue
        else:
            out.append(ch)
    return "".join(out).strip()


def bound_ack_time(at: str, opened_at: str, now: datetime) -> str:
    """An acknowledgement time clamped to [the event's opening, now] (ISO 8601, Beijing time): an ack cannot
    predate what it acknowledges nor come from the future; the operator's clock may be wrong, so it is
    clamped (and logged by the caller), not refused."""
    t = datetime.fromisoformat(at)
    lo = datetime.fromisoformat(opened_at)
    if lo.tzinfo is None:
        lo = lo.replace(tzinfo=BEIJING)
    t = min(max(t, lo), now)
    return t.astimezone(BEIJING).isoformat()


def parse_ack(payload: bytes, clock: Clock = wall_clock) -> AckCommand:
    """``{"event_id": …, "by": …, "at": optional ISO 8601, "note": optional, "reply_to": optional}`` →
    :class:`AckCommand` (``at`` in Beijing time). Raises ValueError saying what is wrong."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"ack command is not JSON: {e}") from e
    if not isinstance(d, dict):
        raise ValueError("ack command must be a JSON object")
    eid, by, at = d.get("event_id"), d.get("by"), d.get("at")
    note, reply_to = d.get("note"), d.get("reply_to")
    if not isinstance(eid, str) or not eid.strip():
        raise ValueError("ack command needs a non-empty string event_id")
    if isinstance(by, str):
        by = clean_text(by)
    if isinstance(note, str):
        note = clean_text(note)
    if not isinstance(by, str) or not by.strip() or len(by) > 200:
        raise ValueError("ack command needs 'by': who acknowledges (1-200 characters)")
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX_CHARS):
        raise ValueError(f"ack command 'note' must be a string of at most {NOTE_MAX_CHARS} characters")
    if reply_to is not None and (not isinstance(reply_to, str) or not _REQUEST_ID.match(reply_to)):
        raise ValueError("ack command 'reply_to' must be 1-64 letters, digits, '-' or '_'")
    if at is None:
        t = clock()
    elif isinstance(at, str):
        try:
            t = datetime.fromisoformat(at)
        except ValueError as e:
            raise ValueError(f"ack command 'at' is not ISO 8601: {at!r}") from e
        if t.tzinfo is None:
            t = t.replace(tzinfo=BEIJING)
    else:
        raise ValueError("ack command 'at' must be an ISO 8601 string")
    return AckCommand(
        eid.strip(), by.strip(), t.astimezone(BEIJING).isoformat(), (note or "").strip() or None, reply_to
    )


def ack_result_topic(command_prefix: str, request_id: str) -> str:
    """Where the ingester answers an acknowledgement command that carried ``reply_to``: beside the commands,
    not under the alerts (whose subscribers expect alerts only)."""
    return f"{command_prefix}/reply/{request_id}"


async def ack_event(
    mqtt_settings: MqttSettings,
    topics: Topics,
    event_id: str,
    by: str,
    *,
    note: str | None = None,
    at: datetime | None = None,
    timeout_s: float = 30.0,
    confirm_s: float = 0.0,
) -> dict[str, Any] | None:
    """Publish an acknowledgement command (QoS 1) and wait for the broker's PUBACK; with ``confirm_s`` > 0,
    also wait that long for the ingester's reply and return it (``{"result": "acknowledged" |
    "already_acknowledged" | "unknown_event" | "bad_command", …}``), or ``None`` when none came.

    Uses its own clean-session client id, never the ingester's persistent session.
    """
    request_id = uuid.uuid4().hex
    payload: dict[str, str] = {"event_id": event_id, "by": by}
    if note:
        payload["note"] = note
    if confirm_s > 0:
        payload["reply_to"] = request_id
    if at is not None:
        payload["at"] = (at if at.tzinfo is not None else at.replace(tzinfo=BEIJING)).isoformat()
    return await send_command(
        mqtt_settings,
        f"{topics.command_prefix}/ack",
        payload,
        client_id=f"cems-ack-{request_id[:10]}",
        reply_topic=ack_result_topic(topics.command_prefix, request_id),
        what="ack command",
        timeout_s=timeout_s,
        confirm_s=confirm_s,
    )
