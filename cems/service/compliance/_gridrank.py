"""Live township ranking (issue 15 item 3): once the ``grid_daily`` points of a closed Beijing day are
durably written, rank the day — and its ISO week / month when the day ends them — from ``grid_daily`` in
InfluxDB and write the ``grid_rank`` points (:mod:`cems.sinks.gridrank`, the same code as
``cems grid rank --write``).

The ranking runs in its own task, beside ingestion, never in its way: a batch is acknowledged as soon as its
results are durable, whatever the ranking does. The periods due are collected for ``delay_s`` first, so the
days every sensor closes in one pass (the grid engine closes a day for all sensors at once) and the revisions
that follow rank each period once. The reads run in a worker thread. While points wait in the ingester's
spool (InfluxDB down), ``grid_daily`` in the database is incomplete: ranking waits until ``ready()`` says the
spool has drained. A failed ranking (InfluxDB unreachable, a bad answer) is logged and counted
(``grid_rank_errors``) and retried after ``retry_s``, at most ``attempts`` times; ingestion goes on.

A revision of a day (late data: the grid engine emits the day again) re-ranks the day and the week and month
it belongs to when they have already ended (:func:`~cems.rules.ranking.periods_to_rank`). What is due is
durable: the runtime stores the periods :meth:`GridRankScheduler.periods_for` gives in the same SQLite
transaction as the days that make them due (``grid_rank_due``), :meth:`~GridRankScheduler.restore` takes them
back after a restart, and ``forget`` deletes a period once ranked or given up. Periods left when the ingester
stops are logged too (``cems grid rank --write`` ranks them at once; docs/report.md, "live wiring").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import date

from cems.rules.ranking import PERIOD_KINDS, RANKED_KINDS, RankPeriod, periods_to_rank
from cems.service.compliance._state import ComplianceStats
from cems.sinks.gridrank import Query, rank_from_influx
from cems.sinks.lineprotocol import grid_rank_lines

log = logging.getLogger(__name__)

#: ``write(lines, stop) -> durable`` (the ingester's durable writer: InfluxDB or its spool).
RankWrite = Callable[[list[str], asyncio.Event | None], Awaitable[bool]]


class GridRankScheduler:
    """Ranks the periods that closed or were revised, in the background (module docstring)."""

    def __init__(
        self,
        query: Query,
        write: RankWrite,
        *,
        ready: Callable[[], bool] = lambda: True,
        delay_s: float = 5.0,
        retry_s: float = 60.0,
        attempts: int = 5,
        kinds: Iterable[str] = RANKED_KINDS,
        stats: ComplianceStats | None = None,
        forget: Callable[[RankPeriod], Awaitable[None]] | None = None,
    ) -> None:
        self._query = query
        self._write = write
        self._ready = ready
        self.delay_s = delay_s
        self.retry_s = retry_s
        self.attempts = attempts
        self.kinds = frozenset(kinds)
        #: ``grid_rankings``, ``grid_rank_points``, ``grid_rank_errors``, ``grid_rank_abandoned``
        self.stats = stats if stats is not None else ComplianceStats()
        #: period → (failed attempts, monotonic time before which it is not tried)
        self._due: dict[RankPeriod, tuple[int, float]] = {}
        self._closed_through: date | None = None
        self._wake = asyncio.Event()
        #: deletes a period from the durable list once ranked or given up (None: not kept)
        self._forget = forget

    @property
    def due(self) -> list[RankPeriod]:
        return sorted(self._due, key=lambda p: (p.last, PERIOD_KINDS.index(p.kind)))

    def periods_for(self, days: Iterable[date]) -> list[RankPeriod]:
        """The periods that ``grid_daily`` points of ``days`` (closed or revised) make due (nothing changes:
        the runtime stores them with the days, then calls :meth:`days_written`)."""
        ds = set(days)
        if not ds:
            return []
        top = max(ds)
        through = top if self._closed_through is None or top > self._closed_through else self._closed_through
        return periods_to_rank(ds, through)

    def days_written(self, days: Iterable[date]) -> None:
        """The ``grid_daily`` points of ``days`` (closed or revised) are durable: rank what they close."""
        ds = set(days)
        if not ds:
            return
        due = self.periods_for(ds)
        top = max(ds)
        if self._closed_through is None or top > self._closed_through:
            self._closed_through = top
        for p in due:
            self._due[p] = (0, 0.0)  # a new revision resets the attempts
        self._wake.set()

    def restore(self, periods: Iterable[RankPeriod]) -> None:
        """Periods that were due when the ingester stopped (the durable list): ranked like new ones."""
        for p in periods:
            self._due.setdefault(p, (0, 0.0))
            if self._closed_through is None or p.last > self._closed_through:
                self._closed_through = p.last
        if self._due:
            self._wake.set()

    async def _done(self, p: RankPeriod) -> None:
        if self._forget is not None and p not in self._due:  # not due again meanwhile (a newer revision)
            try:
                await self._forget(p)
            except Exception as e:  # the period stays listed: ranked again after a restart (idempotent)
                log.warning(
                    "township ranking of %s %s: could not update the list of rankings due: %s", p.kind, p.key, e
                )

    async def run(self, stop: asyncio.Event) -> None:
        """Rank what is due until ``stop`` is set (:meth:`log_left` then says what is left)."""
        while not stop.is_set():
            if not self._due:
                self._wake.clear()
                await _wait_any(stop, self._wake, None)
                continue
            await _wait_any(stop, None, self.delay_s)  # let a pass of closing days and revisions gather
            if stop.is_set():
                break
            await self.run_once(stop)
            if self._due:  # only periods waiting for a retry or for the spool are left
                nxt = min(t for _, t in self._due.values())
                self._wake.clear()
                await _wait_any(stop, self._wake, max(1.0, min(self.retry_s, nxt - time.monotonic())))

    def log_left(self) -> None:
        """Log the periods not ranked (the ingester is stopping): ranked after the restart, or at once by
        ``cems grid rank --write``."""
        if self._due:
            log.warning(
                "township ranking not done for %s: kept, ranked when the ingester starts again (or now with "
                "`cems grid rank --write`)",
                ", ".join(f"{p.kind} {p.key}" for p in self.due),
            )

    async def run_once(self, stop: asyncio.Event | None = None) -> None:
        """Rank every period due now (oldest first)."""
        if not self._ready():
            log.info("township ranking waits: points are still in the spool")
            now = time.monotonic()
            for p, (n, _) in list(self._due.items()):
                self._due[p] = (n, now + self.retry_s)
            return
        now = time.monotonic()
        for p in [p for p in self.due if self._due[p][1] <= now]:
            n, _ = self._due.pop(p)
            try:
                ranking = await asyncio.to_thread(rank_from_influx, self._query, p, kinds=self.kinds)
                lines = grid_rank_lines(ranking) if ranking is not None else []
                if lines and not await self._write(lines, stop):
                    raise RuntimeError("stopping while InfluxDB is unreachable")
            except Exception as e:  # never stops ingestion: logged, counted, retried
                self.stats.grid_rank_errors += 1
                if p in self._due:  # revised meanwhile: already due again
                    continue
                if n + 1 >= self.attempts:
                    self.stats.grid_rank_abandoned += 1
                    log.error("township ranking of %s %s failed %d times, given up: %s", p.kind, p.key, n + 1, e)
                    await self._done(p)
                else:
                    self._due[p] = (n + 1, time.monotonic() + self.retry_s)
                    log.warning(
                        "township ranking of %s %s failed (%s): retrying in %.0f s", p.kind, p.key, e, self.retry_s
                    )
                continue
            self.stats.grid_rankings += 1
            self.stats.grid_rank_points += len(lines)
            log.info("township ranking of %s %s written (%d points)", p.kind, p.key, len(lines))
            await self._done(p)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float | None) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``timeout`` seconds."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
