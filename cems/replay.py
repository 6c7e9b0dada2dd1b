"""``cems replay``: the live compliance engine run offline over recorded data — no broker, no database.

Input: one record per line, either HJ 212 packets (``##…``), JSON readings (schema ``cems.reading/1``
with ``mn`` and ``stream`` present; docs/payload.md), or an MQTT message as received: its topic, a space, its
payload (``grid/v1/G001 {"data_time": …, "values": …}``, ``grid/v1/G001 ##…`` for an HJ 212 ST=22 packet,
``cems/v1/MN0001/rtd {…}``), decoded exactly as ``cems run`` decodes it.  Grid-sensor readings go to the
grid engine (:mod:`cems.rules.grid`) through their own reorder buffer.  Records are decoded and validated
against the registry (unknown MN, password, values) as they are read and fed to the same
:class:`cems.engine.ComplianceEngine` as the live service.  Deterministic: no wall clock is read.  The input
carries no arrival times, so its data are taken as arrived in time: ``cems run`` refuses data whose hour is
past its repair deadline at its clock (``late_beyond_window``), replay only data older than the window behind
the outlet's own newest data time (docs/events.md, "Late data").

Streaming, in bounded memory (issue 13 item 13): the input is never loaded whole.  Readings pass through a
reorder buffer of ``window`` readings (default :data:`DEFAULT_WINDOW`) that releases them in data-time order
(equal times in file order); a reading older than what the buffer already released is fed late, and the
engine's event time (issue 12 item 1) gives the same result for data late by less than its hold (3 h) —
so the order of the file does not matter within that.  Memory: the buffer, the engine's per-outlet state and
the results (one record per outlet, code and hour; events; rates), not the input's size.
"""

from __future__ import annotations

import gc
import heapq
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import islice
from operator import attrgetter
from typing import Any, Final, Literal

from cems.decode import decode_hj212, decode_hj212_text, decode_message
from cems.engine import ComplianceEngine, EngineOutput, merge_parts
from cems.errors import RejectedMessage
from cems.hour_archive import TempHourArchive
from cems.model import Reading, Stream, beijing_ts
from cems.protocol.mark import MarkRecord
from cems.protocol.payload import decode_payload
from cems.registry import GridSensor, OutletInfo, Registry
from cems.rules import DistrictMonthRate, Event, HourlyRecord, OutletDayRate
from cems.rules.ambient import AmbientDay
from cems.rules.daily import DailyRecord, MonthResult
from cems.rules.emergency import WarningHistory
from cems.rules.events import RETRACTED_STATUS
from cems.rules.grid import GridEngine, GridHour, GridOutput
from cems.rules.hourly import DEFAULT_HOLD
from cems.validate import check_values

log = logging.getLogger(__name__)

Format = Literal["auto", "hj212", "jsonl"]

#: Readings held by the reorder buffer (≈ 2–3 KB each decoded: ≈ 60 MB; docs/benchmark.md).
DEFAULT_WINDOW: Final = 20_000
_STREAMS = {s.value: s for s in Stream}
_values_of = attrgetter("values")


@dataclass
class ReplayResult:
    lines: int = 0
    readings: int = 0
    values: int = 0
    #: HJ 212 values that were not finite numbers (``nan``, ``inf``): left out, the values beside them kept.
    values_dropped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    hourly: list[HourlyRecord] = field(default_factory=list)
    #: Final state of every event (closed, or still open at the end of the input), by start time.
    events: list[Event] = field(default_factory=list)
    outlet_days: list[OutletDayRate] = field(default_factory=list)
    district_months: list[DistrictMonthRate] = field(default_factory=list)
    #: Daily means per outlet, code and Beijing day (issue 12 item 9), by day.
    daily: list[DailyRecord] = field(default_factory=list)
    #: Month validity and monthly rules (steel ultra-low ≥ 95 %) per outlet, code and month.
    months: list[MonthResult] = field(default_factory=list)
    #: The accepted readings in data-time order (kept only when asked, e.g. for ``--store``).
    accepted: list[tuple[Reading, OutletInfo]] = field(default_factory=list)
    #: Readings that came after their hour was emitted (:meth:`cems.engine.ComplianceEngine.late_counts`).
    late_readings: int = 0
    late_unrevised: int = 0
    late_beyond_window: int = 0
    #: Readings on which the rules raised an unexpected error (logged; not judged), as ``cems run`` counts them.
    rules_errors: int = 0
    #: The marks, declarations, repairs and withdrawals applied (``--marks``, issue 14), in the order received.
    marks: list[MarkRecord] = field(default_factory=list)
    #: Grid sensors (issue 15): accepted readings, hours (final version), days; their events are in ``events``.
    grid_readings: int = 0
    grid_hourly: list[GridHour] = field(default_factory=list)
    grid_daily: list[AmbientDay] = field(default_factory=list)
    #: The accepted grid readings in data-time order (kept only when asked, e.g. for ``--store``).
    grid_accepted: list[Reading] = field(default_factory=list)
    #: The registry's grid sensors (what ``--store`` tags their points with).
    registry_sensors: list[GridSensor] = field(default_factory=list)


#: (reading, its outlet when already looked up, grid: a grid sensor's reading)
_Decoded = tuple[Reading, OutletInfo | None, bool]


def _decode_line(text: str, registry: Registry, fmt: Format) -> _Decoded:
    """One stripped, non-blank line → (reading, its outlet when already looked up, grid)."""
    if fmt == "hj212" or (fmt == "auto" and text.startswith("##")):
        if text.isascii():  # the UTF-8 bytes decode as ASCII to the same text: skip the round trip
            return (*decode_hj212_text(text, None, registry), False)
        return decode_hj212(text.encode("utf-8", "replace"), None, registry), None, False
    t = registry.topics
    if fmt == "auto" and text.startswith((t.grid_prefix + "/", t.prefix + "/")):
        topic, _, payload = text.partition(" ")
        d = decode_message(topic, payload.strip().encode("utf-8"), registry)
        return d.reading, None, d.grid
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RejectedMessage("malformed_json", f"line is neither an HJ 212 packet nor JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RejectedMessage("bad_field", "a JSON line must be an object")
    mn, stream = doc.get("mn"), _STREAMS.get(str(doc.get("stream")))
    if not isinstance(mn, str) or stream is None:
        raise RejectedMessage("bad_field", "a recorded JSON reading needs 'mn' and 'stream' (rtd|min|hour|day)")
    return decode_payload(text.encode("utf-8"), mn=mn, stream=stream, tz=registry.tz), None, False


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: replay builds hundreds of thousands of long-lived objects (and no
    reference cycles), which would otherwise make it rescan everything again and again (~25 % of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # Everything allocated meanwhile is in the youngest generation: the first collection after
            # re-enabling would scan it all (~1 M objects for a month, ~13 % of the replay time). The
            # objects are long-lived results without cycles: move them out of the collector's sight.
            gc.freeze()
            gc.enable()


def load_readings(
    registry: Registry, lines: Iterable[str], fmt: Format = "auto", result: ReplayResult | None = None
) -> list[tuple[Reading, OutletInfo]]:
    """Decode and validate every line; rejected lines are counted by reason in ``result``."""
    res = result if result is not None else ReplayResult()
    with _no_gc():
        return _load(registry, lines, fmt, res)


def _load(registry: Registry, lines: Iterable[str], fmt: Format, res: ReplayResult) -> list[tuple[Reading, OutletInfo]]:
    out = list(_accepted(registry, lines, fmt, res))
    out.sort(key=_data_time)
    return out


def _data_time(item: tuple[Reading, OutletInfo]) -> datetime:
    return item[0].data_time


def _check(text: str, registry: Registry, fmt: Format, sensors: Container[str]) -> tuple[Reading, OutletInfo | None]:
    """One stripped, non-blank line decoded and validated → (reading, its outlet), or (reading, ``None``) for a
    grid sensor's reading (of one of ``sensors``).  Raises :class:`RejectedMessage`."""
    r, info, is_grid = _decode_line(text, registry, fmt)
    if is_grid:
        if r.mn not in sensors:
            raise RejectedMessage("unknown_sensor", f"grid sensor {r.mn!r} is not in the registry")
        r = check_values(r)
        if not any(m.values or m.flag is not None for m in r.measurements.values()):
            raise RejectedMessage("empty_reading", "the reading carries no values")
        return r, None
    if info is None:
        info = registry.outlet(r.mn)
        if info is None:
            raise RejectedMessage("unknown_mn", f"MN {r.mn!r} is not in the registry")
    return check_values(r), info


def _accepted(
    registry: Registry,
    lines: Iterable[str],
    fmt: Format,
    res: ReplayResult,
    grid: Callable[[Reading], None] | None = None,
) -> Iterator[tuple[Reading, OutletInfo]]:
    """Decode and validate line by line (rejected lines are counted by reason in ``res``); grid readings go
    to ``grid`` (without it they are rejected ``unknown_sensor``)."""
    sensors = frozenset(g.id for g in registry.grid_sensor) if grid is not None else frozenset()
    rejected = res.rejected
    n = 0
    try:
        for line in lines:
            text = line.strip()
            if not text:
                continue
            n += 1
            try:
                r, info = _check(text, registry, fmt, sensors)
                if r.dropped:
                    res.values_dropped += len(r.dropped)
                if info is None:
                    assert grid is not None
                    grid(r)
                    continue
            except RejectedMessage as e:
                rejected[e.reason] += 1
                continue
            except Exception:  # a bug met by this line: count it, log the traceback, go on with the next line
                log.exception("internal error on input line %d (counted as internal_error)", n)
                rejected["internal_error"] += 1
                continue
            yield r, info
    finally:
        res.lines += n


def _chunked(items: Iterator[tuple[Reading, OutletInfo]], size: int = 4096) -> Iterator[tuple[Reading, OutletInfo]]:
    """The same items, decoded ``size`` at a time: decoding a run of lines, then judging a run of readings,
    is ≈ 25 % faster than alternating line by line (measured: docs/benchmark.md)."""
    while chunk := list(islice(items, size)):
        yield from chunk


def _in_order(items: Iterable[tuple[Reading, OutletInfo]], window: int) -> Iterator[list[tuple[Reading, OutletInfo]]]:
    """Runs of readings of equal data time, in data-time order within a buffer of ``window`` readings (equal
    times in input order); each run merged (:func:`~cems.engine.merge_parts`).

    The buffer is a FIFO of the readings that came in order (each at or after the one before it: most of them)
    and a heap of the others, keyed (data time, input position); the smaller of the two heads goes first, so
    the readings leave in the order one heap would give them, without a heap operation for in-order data."""
    heap: list[tuple[float, int, Reading, OutletInfo]] = []
    fifo: deque[tuple[float, int, Reading, OutletInfo]] = deque()
    push, pop, popleft, append = heapq.heappush, heapq.heappop, fifo.popleft, fifo.append

    def smallest() -> tuple[float, int, Reading, OutletInfo]:
        if heap and (not fifo or heap[0] < fifo[0]):  # keys (time, position) are unique: no Reading compared
            return pop(heap)
        return popleft()

    def next_time() -> float | None:
        if heap:
            return fifo[0][0] if fifo and fifo[0] < heap[0] else heap[0][0]
        return fifo[0][0] if fifo else None

    def run(first: tuple[float, int, Reading, OutletInfo]) -> list[tuple[Reading, OutletInfo]]:
        t, _, r, info = first
        out = [(r, info)]
        while next_time() == t:
            _, _, r, info = smallest()
            out.append((r, info))
        return merge_parts(out)

    for seq, (r, info) in enumerate(items):
        ts = beijing_ts(r.data_time)  # (remembered: the trackers convert it again)
        if not fifo or ts >= fifo[-1][0]:
            append((ts, seq, r, info))
        else:
            push(heap, (ts, seq, r, info))
        if len(fifo) + len(heap) <= window:
            continue
        # release the oldest (inline: once per reading), with the readings of the same time when there are any
        if heap:
            first = pop(heap) if not fifo or heap[0] < fifo[0] else popleft()
            nt = next_time()
        else:
            first = popleft()
            nt = fifo[0][0] if fifo else None
        if nt != first[0]:
            yield [(first[2], first[3])]
        else:
            yield run(first)
    while heap or fifo:
        yield run(smallest())


def replay(
    registry: Registry,
    lines: Iterable[str],
    fmt: Format = "auto",
    *,
    keep_readings: bool = False,
    window: int = DEFAULT_WINDOW,
    hold: timedelta = DEFAULT_HOLD,
    warnings: WarningHistory | None = None,
    marks: Iterable[MarkRecord] = (),
) -> ReplayResult:
    """Run the compliance engine over recorded data, streaming (module docstring), and return hourly records
    (the final version of each: late data revise them), events (final state; retracted ones left out) and
    rates.  ``keep_readings`` keeps every accepted reading (for ``--store``): memory then grows with the
    input.  ``warnings``: the city's heavy-pollution warning history (``cems replay --warnings``, issue 16):
    its settings become ``warning_level`` events and the emergency lists are judged under it, as live.

    ``marks``: stored mark records (``cems marks list --json``; issue 14), each applied as the live ingester
    applied it: when the data reach the time it was received (the input's data time standing for the clock),
    the rest after the input has ended — so an exceedance the monitoring room saw before it was marked is
    closed as ``marked`` here too, and a mark received before the data keeps it from opening.  The records'
    decisions (accepted; a late declaration without effect) are taken as stored."""
    if window < 1:
        raise ValueError("window must be ≥ 1")
    res = ReplayResult()
    with _no_gc():
        archive = TempHourArchive()  # hours out of memory, until their repair deadline (exact late revisions)
        engine = ComplianceEngine(registry, journal=False, hold=hold, archive=archive, warnings=warnings)
        results = Results()
        take = results.take
        events = results.events
        if warnings is not None:
            take(engine.set_warnings(warnings, list(warnings.periods)))
        on_reading = engine.on_reading
        n_values = 0
        n_readings = 0
        kept = res.accepted
        pending = sorted(marks, key=_mark_order)
        res.marks = list(pending)
        pending.reverse()  # popped from the end, oldest first

        grid = _GridReplay(GridEngine(registry, hold=hold), window, events, res, keep_readings)
        res.registry_sensors = list(registry.grid_sensor)
        for group in _in_order(_chunked(_accepted(registry, lines, fmt, res, grid.add)), window):
            while pending and pending[-1].received_at <= group[0][0].data_time:
                take(engine.on_mark(pending.pop()))
            for reading, info in group:
                n_readings += 1
                if keep_readings:
                    kept.append((reading, info))
                n_values += sum(map(len, map(_values_of, reading.measurements.values())))
                try:
                    out = on_reading(reading, info)
                except Exception:  # a bug in the rules: as live, the reading is counted and left unjudged
                    log.exception("the rules failed on the reading of %s at %s", reading.mn, reading.data_time)
                    res.rules_errors += 1
                    continue
                take(out)
        res.readings += n_readings
        res.values += n_values
        take(engine.finish())
        while pending:
            take(engine.on_mark(pending.pop()))
        grid.finish()
        results.into(res)
        res.outlet_days = engine.rates.outlet_days()
        res.district_months = engine.rates.district_months()
        late = engine.late_counts()
        res.late_readings += late["late_readings"]
        res.late_unrevised += late["late_unrevised"]
        res.late_beyond_window += late["late_beyond_window"]
        archive.close()
    return res


def _hourly_key(h: HourlyRecord) -> tuple[str, str, datetime, bool]:
    """A repair's record (source ``repair``) stands beside the original, as in ``cems_hourly``."""
    return (h.mn, h.pollutant, h.hour_start, h.source == "repair")


def _mark_order(m: MarkRecord) -> tuple[datetime, str]:
    return (m.received_at, m.record_id)


class Results:
    """The final version of every hourly record, daily and monthly result and event of a replay, as the
    engine's outputs come (:meth:`take`); :meth:`into` puts them, in the output order, into a result."""

    def __init__(self) -> None:
        self.hourly: dict[tuple[str, str, datetime, bool], HourlyRecord] = {}
        self.daily: dict[tuple[str, str, date], DailyRecord] = {}
        self.months: dict[tuple[str, str, str], MonthResult] = {}
        self.events: dict[str, Event] = {}

    def take(self, out: EngineOutput) -> None:
        hourly, daily, months, events = self.hourly, self.daily, self.months, self.events
        for h in out.hourly:
            hourly[_hourly_key(h)] = h
        for d in out.daily:
            daily[(d.mn, d.pollutant, d.day)] = d
        for mr in out.monthly:
            months[(mr.mn, mr.pollutant, mr.month)] = mr
        for u in out.events:
            events[u.event.event_id] = u.event

    def into(self, res: ReplayResult) -> None:
        """The results in the output order (:func:`sort_results`), retracted events left out."""
        res.events = [e for e in self.events.values() if e.status != RETRACTED_STATUS]
        res.hourly = list(self.hourly.values())
        res.daily = list(self.daily.values())
        res.months = list(self.months.values())  # the engine's monthly results (live: cems_monthly), final
        sort_results(res)


def sort_results(res: ReplayResult) -> None:
    """Sort a result's records into the output order (stable: equal keys keep the order they came in)."""
    res.events.sort(key=lambda e: (e.start, e.mn, e.type, e.pollutant or ""))
    res.hourly.sort(key=lambda h: (h.hour_start, h.mn, h.pollutant))
    res.daily.sort(key=lambda d: (d.day, d.mn, d.pollutant))
    res.months.sort(key=lambda m: (m.mn, m.pollutant, m.month))


def load_marks(lines: Iterable[str]) -> list[MarkRecord]:
    """Mark records, one JSON object per line (``cems marks list --json``).  Raises ValueError naming the line."""
    out: list[MarkRecord] = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(MarkRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"marks line {n}: not a mark record ({e})") from None
    return out


class _GridReplay:
    """The grid side of a replay: a reorder buffer of ``window`` readings in front of the grid engine, and the
    final version of every hour, day and event."""

    def __init__(
        self, engine: GridEngine, window: int, events: dict[str, Event], res: ReplayResult, keep: bool
    ) -> None:
        self.engine = engine
        self.window = window
        self.events = events
        self.res = res
        self.keep = keep
        self.heap: list[tuple[float, int, Reading]] = []
        self.seq = 0
        self.hourly: dict[tuple[str, datetime], GridHour] = {}
        self.daily: dict[tuple[str, date], AmbientDay] = {}

    def add(self, r: Reading) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (r.data_time.timestamp(), self.seq, r))
        if len(self.heap) > self.window:
            self._feed(heapq.heappop(self.heap)[2])

    def _feed(self, r: Reading) -> None:
        self.res.grid_readings += 1
        self.res.readings += 1
        self.res.values += sum(len(m.values) for m in r.measurements.values())
        if self.keep:
            self.res.grid_accepted.append(r)
        try:
            out = self.engine.on_reading(r)
        except Exception:  # a bug in the rules: as live, the reading is counted and left unjudged
            log.exception("the grid rules failed on the reading of %s at %s", r.mn, r.data_time)
            self.res.rules_errors += 1
            return
        self._take(out)

    def _take(self, out: GridOutput) -> None:
        for h in out.hourly:
            self.hourly[(h.sensor, h.hour_start)] = h
        for d in out.daily:
            self.daily[(d.sensor, d.day)] = d
        for u in out.events:
            self.events[u.event.event_id] = u.event

    def finish(self) -> None:
        while self.heap:
            self._feed(heapq.heappop(self.heap)[2])
        self._take(self.engine.finish())
        self.res.grid_hourly = sorted(self.hourly.values(), key=lambda h: (h.hour_start, h.sensor))
        self.res.grid_daily = sorted(self.daily.values(), key=lambda d: (d.day, d.sensor))
        late = self.engine.late_counts()
        self.res.late_readings += late["late_readings"]
        self.res.late_unrevised += late["late_unrevised"]
        self.res.late_beyond_window += late["late_beyond_window"]


def json_lines(objs: Iterable[dict[str, Any]]) -> Iterator[str]:
    for o in objs:
        yield json.dumps(o, ensure_ascii=False, sort_keys=False) + "\n"
