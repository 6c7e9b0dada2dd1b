"""``cems replay --workers N``: the replay of :mod:`cems.replay` over N processes, partitioned by outlet, with
the same results as one process, record for record and in the same order.

Each worker reads the whole input itself but decodes only the lines of its own outlets: it finds a line's
MN without decoding it (the ``MN=`` field of an HJ 212 packet, the MN level of an MQTT topic, the ``"mn"``
key of a JSON reading) and its owner: the registry's outlets are dealt out by MN to the least loaded worker
(an MN not in the registry, whose lines are rejected, by its CRC-32 as :func:`cems.registry.shard.shard_of`).
Outlets that are judged together stay together: the outlets and meters of a production line on the emergency
lists (issue 16) go as one, and every grid sensor (issue 15: the neighbour evidence of hotspots compares
sensors) goes to worker 0.  A chunk with as many ``MN=`` fields as lines (a recording of HJ 212 packets) is
dealt out by those fields, read with one regular expression; every worker deals a chunk out alike, so each
line is decoded by one worker, and a decoded reading whose MN (or grid sensor) is not the decoding worker's
makes the replay run in one process.  Otherwise a line goes by its own form, and a line whose MN cannot be
read so cheaply (two ``MN=`` fields, an escaped JSON key, …) is decoded by every worker and kept by its owner.

**The reorder buffer is the one-process buffer, exactly.**  Which readings the buffer of ``window`` readings
releases, and when, depends on the data times of every accepted reading, not only of a worker's own.  So the
workers read the input in lockstep, 4 096 lines at a time: each sends the others the (line, data time) of the
readings it accepted in a chunk (a few bytes per line, through a queue, a couple of chunks ahead) and runs
the whole buffer over every worker's keys, judging only its own readings as they come out.  Each outlet thus
gets its readings in the order, grouping and lateness of the one-process replay, and marks are applied at the
same points of the data.  The figures that span outlets — transmission rates (the replay window runs from the
input's first hour to its last, over every outlet) and the district figures (挂牌督办) — are computed once,
by the parent, from the workers' rate counters merged.  The parent's other work is small: unpickling the
workers' records (pickled as their class called with their fields: cheaper to load than the dataclasses'
own state), concatenating and sorting them, summing the counters.

A worker that fails (an exception, a signal) ends the replay with an error and nothing written.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import re
import tempfile
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import compress, groupby, islice, repeat
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Final, NoReturn

from cems.engine import ComplianceEngine, merge_parts
from cems.errors import RejectedMessage, ServiceError
from cems.hour_archive import TempHourArchive
from cems.model import BEIJING, Reading, beijing_ts
from cems.protocol.mark import MarkRecord
from cems.registry import OutletInfo, Registry
from cems.replay import (
    DEFAULT_WINDOW,
    Format,
    ReplayResult,
    Results,
    _check,
    _GridReplay,
    _mark_order,
    _values_of,
    replay,
    sort_results,
)
from cems.rules.daily import DailyRecord, MonthResult
from cems.rules.emergency import WarningHistory
from cems.rules.emergency_tracker import line_plans
from cems.rules.grid import GridEngine
from cems.rules.hourly import DEFAULT_HOLD, HourlyRecord

log = logging.getLogger(__name__)

#: Lines read, decoded and exchanged at a time (as :func:`cems.replay._chunked` decodes them).
CHUNK: Final = 4096
#: Chunks a worker decodes ahead of the one it judges, so that a short stall of another worker does not
#: stop it (each holds its decoded readings: ≈ 2–3 KB each).
LAG: Final = 4
#: Seconds a worker waits for the others' keys before checking that its parent is still there.
_POLL_S: Final = 5.0
#: Exit code of a worker that found a line whose MN it read differently from the decoder.
_MISROUTED: Final = 3
_AMBIGUOUS: Final = -1
_JSON_MN = re.compile(rb'"mn"\s*:\s*"([A-Za-z0-9_.\-]+)"')
_CLEAN_MN = re.compile(rb"[A-Za-z0-9_.\-]+")
#: An HJ 212 packet's MN field (``[^;]`` rather than ``[^;\n]``: a faster scan; an MN with a line end in it is
#: not the registry's, and its line is routed alone).
_MN = re.compile(rb"MN=([^;]*);")


class Router:
    """The worker that decodes each line: the owner of its MN (:meth:`owner`), or every worker (``-1``)."""

    def __init__(self, registry: Registry, fmt: Format, workers: int) -> None:
        self.workers = workers
        self.fmt = fmt
        t = registry.topics
        self.prefix = (t.prefix + "/").encode()
        self.grid_prefix = (t.grid_prefix + "/").encode()
        self.owners = _owners(registry, workers)

    def owner_of(self, mn: bytes) -> int:
        w = self.owners.get(mn)
        return w if w is not None else zlib.crc32(mn) % self.workers  # not in the registry: rejected

    def owner(self, s: bytes) -> int:
        """``s``: a line as read.  The branches of :func:`cems.replay._decode_line`; a line with white space in
        front, or blank, is every worker's to decode (and see)."""
        fmt = self.fmt
        if fmt == "hj212" or (fmt == "auto" and s.startswith(b"##")):
            if s.count(b"MN=") != 1:
                return _AMBIGUOUS
            i = s.find(b"MN=") + 3
            j = s.find(b";", i)
            mn = s[i:j]
            if j < 0 or not (mn.isalnum() or _CLEAN_MN.fullmatch(mn)):
                return _AMBIGUOUS
            return self.owner_of(mn)
        if fmt == "auto":
            if s.startswith(self.prefix):  # cems/v1/{mn}/{stream}: the decoder takes the MN from the topic
                rest = s.partition(b" ")[0][len(self.prefix) :].split(b"/")
                return self.owner_of(rest[0]) if len(rest) == 2 and rest[0] else 0  # else: bad_topic
            if s.startswith(self.grid_prefix):
                return 0
        if s.count(b'"mn"') != 1:
            return _AMBIGUOUS
        m = _JSON_MN.search(s)
        return _AMBIGUOUS if m is None else self.owner_of(m.group(1))


def _owners(registry: Registry, workers: int) -> dict[bytes, int]:
    """The worker of every registry outlet, the outlets being dealt out by MN to the least loaded worker
    (grid sensors count for worker 0), so that each gets about as many; the outlets and meters of
    production lines on the emergency lists that share an MN, transitively, go together."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for p in line_plans(registry):
        mns = list(p.outlets) + [m[0] for m in (p.production_power, p.treatment_power) if m is not None]
        for mn in mns:
            a, b = find(mns[0]), find(mn)
            if a != b:
                parent[max(a, b)] = min(a, b)
    units: dict[str, list[str]] = {}
    for info in sorted(registry.outlets(), key=lambda i: i.outlet.mn):
        mn = info.outlet.mn
        units.setdefault(find(mn) if mn in parent else mn, []).append(mn)
    for mn in parent:  # meters of a line that are not outlets of the registry
        root = find(mn)
        if mn not in units.get(root, ()):
            units.setdefault(root, []).append(mn)
    load = [0] * workers
    load[0] = len(registry.grid_sensor)
    out: dict[bytes, int] = {}
    for root in sorted(units):
        w = min(range(workers), key=load.__getitem__)
        for mn in units[root]:
            out[mn.encode("utf-8")] = w
        load[w] += len(units[root])
    return out


@dataclass
class _Job:
    """What every worker gets (inherited through fork)."""

    registry: Registry
    path: str
    fmt: Format
    workers: int
    window: int
    hold: timedelta
    warnings: WarningHistory | None
    marks: list[MarkRecord]
    keep: bool
    progress: Callable[[Iterable[bytes], int], Iterable[bytes]] | None
    outdir: str
    inboxes: list[Any]


@dataclass
class _Part:
    """A worker's results."""

    res: ReplayResult
    rates: dict[str, Any]
    #: (release order, MN, reading) of the accepted readings when kept (``--store``).
    kept: list[tuple[tuple[int, int], Reading]] = field(default_factory=list)


def replay_parallel(
    registry: Registry,
    path: str | Path,
    fmt: Format = "auto",
    *,
    workers: int,
    keep_readings: bool = False,
    window: int = DEFAULT_WINDOW,
    hold: timedelta = DEFAULT_HOLD,
    warnings: WarningHistory | None = None,
    marks: Iterable[MarkRecord] = (),
    progress: Callable[[Iterable[bytes], int], Iterable[bytes]] | None = None,
) -> ReplayResult:
    """:func:`cems.replay.replay` of the file ``path`` over ``workers`` processes (module docstring): the same
    result.  ``progress`` wraps worker 0's lines (e.g. to print how much of the file it has read).  Raises
    :class:`~cems.errors.ServiceError` when a worker fails."""
    if window < 1:
        raise ValueError("window must be ≥ 1")
    if workers < 1:
        raise ValueError("workers must be ≥ 1")
    marks = sorted(marks, key=_mark_order)
    if workers == 1:
        return _replay_file(registry, path, fmt, keep_readings, window, hold, warnings, marks)
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="cems-replay-") as outdir:
        job = _Job(
            registry,
            str(path),
            fmt,
            workers,
            window,
            hold,
            warnings,
            marks,
            keep_readings,
            progress,
            outdir,
            [ctx.Queue() for _ in range(workers)],
        )
        procs = [
            ctx.Process(target=_worker, args=(job, w), name=f"cems-replay-{w}", daemon=True) for w in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            failed = _wait(procs)
        finally:
            for p in procs:  # on failure, or an interrupt of the parent
                if p.exitcode is None:
                    p.terminate()
                p.join()
        if failed is not None:
            w, code = failed
            if code == _MISROUTED:
                log.warning("replay: a line's MN was read differently from its decoded one: replaying in one process")
                return _replay_file(registry, path, fmt, keep_readings, window, hold, warnings, marks)
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise ServiceError(f"replay worker {w + 1} of {workers} failed ({how}); no output written")
        parts: list[_Part] = []
        for w in range(workers):
            with open(os.path.join(outdir, f"part-{w}.pickle"), "rb") as f:
                parts.append(pickle.load(f))
    return _merge(registry, parts, hold, warnings, marks)


def _replay_file(
    registry: Registry,
    path: str | Path,
    fmt: Format,
    keep: bool,
    window: int,
    hold: timedelta,
    warnings: WarningHistory | None,
    marks: list[MarkRecord],
) -> ReplayResult:
    with open(path, encoding="utf-8", errors="replace") as f:
        return replay(registry, f, fmt, keep_readings=keep, window=window, hold=hold, warnings=warnings, marks=marks)


def _wait(procs: list[Any]) -> tuple[int, int] | None:
    """Wait for every worker; the first that fails (worker, exit code), or ``None``."""
    left = {p.sentinel: w for w, p in enumerate(procs)}
    while left:
        for s in multiprocessing.connection.wait(list(left)):
            w = left.pop(s)
            procs[w].join()
            code = procs[w].exitcode
            if code != 0:
                return w, code
    return None


def _merge(
    registry: Registry, parts: list[_Part], hold: timedelta, warnings: WarningHistory | None, marks: list[MarkRecord]
) -> ReplayResult:
    res = ReplayResult()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        rejected: Counter[str] = Counter()
        rates: dict[str, Any] = {"version": 1, "kind": "rate_counter", "seen": {}, "exceed": [], "unknown": 0}
        lo: list[int] = []
        hi: list[int] = []
        kept: list[tuple[tuple[int, int], Reading]] = []
        for part in parts:
            p = part.res
            res.lines += p.lines
            res.readings += p.readings
            res.values += p.values
            res.values_dropped += p.values_dropped
            rejected.update(p.rejected)
            res.late_readings += p.late_readings
            res.late_unrevised += p.late_unrevised
            res.late_beyond_window += p.late_beyond_window
            res.rules_errors += p.rules_errors
            res.grid_readings += p.grid_readings
            res.hourly += p.hourly
            res.events += p.events
            res.daily += p.daily
            res.months += p.months
            res.grid_hourly += p.grid_hourly
            res.grid_daily += p.grid_daily
            res.grid_accepted += p.grid_accepted
            kept += part.kept
            r = part.rates
            rates["seen"].update(r["seen"])
            rates["exceed"] += r["exceed"]
            rates["unknown"] += r["unknown"]
            if r["min_hour"] is not None:
                lo.append(r["min_hour"])
                hi.append(r["max_hour"])
        res.rejected = rejected
        sort_results(res)  # stable: records of one outlet come from one worker, in the one-process order
        rates["min_hour"] = min(lo, default=None)
        rates["max_hour"] = max(hi, default=None)
        if kept:
            kept.sort(key=lambda k: k[0])
            outlet = registry.outlet
            for _, reading in kept:
                info = outlet(reading.mn)
                assert info is not None
                res.accepted.append((reading, info))
        # the figures over every outlet, once: the same engine set-up (mandated stops, marks) as one process
        engine = ComplianceEngine(registry, journal=False, hold=hold, warnings=warnings)
        if warnings is not None:
            engine.set_warnings(warnings, list(warnings.periods))
        for m in marks:
            if registry.outlet(m.mn) is not None:
                engine.marks.add(m)
        engine.rates.restore(rates)
        res.outlet_days = engine.rates.outlet_days()
        res.district_months = engine.rates.district_months()
        res.marks = list(marks)
        res.registry_sensors = list(registry.grid_sensor)
    finally:
        if gc_was:
            gc.freeze()
            gc.enable()
    return res


def _worker(job: _Job, w: int) -> None:
    gc.disable()  # as cems.replay._no_gc: long-lived results, no cycles; the process ends after
    part = _Worker(job, w).run()
    tmp = os.path.join(job.outdir, f"part-{w}.tmp")
    with open(tmp, "wb") as f:
        pickler = pickle.Pickler(f, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = _RECORDS
        pickler.dump(part)
    os.replace(tmp, os.path.join(job.outdir, f"part-{w}.pickle"))


def _by_fields(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    """Pickle a frozen dataclass's instances as the class called with its fields: unpickled ≈ 2.5× faster
    than by the dataclass's ``__setstate__`` (which looks its fields up and sets them one by one), and the
    parent unpickles every worker's records."""
    fs = dataclasses.fields(cls)
    assert all(f.init for f in fs) and not hasattr(cls, "__post_init__"), cls
    get = attrgetter(*(f.name for f in fs))

    def reduce(obj: Any) -> tuple[type, tuple[Any, ...]]:
        return cls, get(obj)

    return reduce


#: How a worker pickles the records of its results (:func:`_by_fields`).
_RECORDS: Final[dict[type, Any]] = {cls: _by_fields(cls) for cls in (HourlyRecord, DailyRecord, MonthResult)}


#: A reorder-buffer entry: (data time, line number); this worker's readings wait in ``_Worker.mine``.
_Entry = tuple[float, int]


class _Worker:
    def __init__(self, job: _Job, w: int) -> None:
        self.job = job
        self.w = w
        self.res = ReplayResult()
        self.results = Results()
        self.router = Router(job.registry, job.fmt, job.workers)
        self.fmt_hj212 = job.fmt in ("auto", "hj212")
        self.owner_cache: dict[str, int] = {}
        self.all_sensors = frozenset(g.id for g in job.registry.grid_sensor)
        self.inbox = job.inboxes[w]
        self.stash: dict[int, list[tuple[bytes, bytes]]] = {}
        self.ppid = os.getppid()
        #: the reorder buffer: a heap of data times, the line numbers of the readings of each, their number
        self.heap: list[float] = []
        self.groups: dict[float, list[int]] = {}
        self.size = 0
        #: line number → this worker's accepted reading (and its outlet) while in the buffer
        self.mine: dict[int, tuple[Reading, OutletInfo]] = {}
        self.runs = 0
        self.n_readings = 0
        self.n_values = 0
        self.kept: list[tuple[tuple[int, int], Reading]] = []
        owner = self.router.owner_of
        self.pending = [m for m in job.marks if owner(m.mn.encode("utf-8")) == w]
        self.pending.reverse()  # popped from the end, oldest first
        self.pending_ts = [_ts(m.received_at) for m in self.pending]

    def run(self) -> _Part:
        job, res = self.job, self.res
        archive = TempHourArchive()
        self.engine = engine = ComplianceEngine(
            job.registry, journal=False, hold=job.hold, archive=archive, warnings=job.warnings
        )
        take = self.results.take
        if job.warnings is not None:
            out = engine.set_warnings(job.warnings, list(job.warnings.periods))
            if self.w == 0:  # the city's warning_level events: once
                take(out)
        self.grid = (
            _GridReplay(GridEngine(job.registry, hold=job.hold), job.window, self.results.events, res, job.keep)
            if self.w == 0
            else None
        )
        backlog: list[tuple[int, list[_Entry]]] = []
        with open(job.path, "rb") as f:
            for c, (first, chunk, joined) in enumerate(self._chunks(f)):
                own = self._decode(first, chunk, joined)
                keys_i = array("q", [e[1] for e in own]).tobytes()
                keys_t = array("d", [e[0] for e in own]).tobytes()
                for p, box in enumerate(job.inboxes):
                    if p != self.w:
                        box.put((c, keys_i, keys_t))
                backlog.append((c, own))
                if len(backlog) > LAG:
                    self._judge(*backlog.pop(0))
        for c, own in backlog:
            self._judge(c, own)
        while self.heap:
            self._release()
        res.readings += self.n_readings
        res.values += self.n_values
        take(engine.finish())
        while self.pending:
            self.pending_ts.pop()
            take(engine.on_mark(self.pending.pop()))
        if self.grid is not None:
            self.grid.finish()
        self.results.into(res)
        late = engine.late_counts()
        res.late_readings += late["late_readings"]
        res.late_unrevised += late["late_unrevised"]
        res.late_beyond_window += late["late_beyond_window"]
        archive.close()
        return _Part(res, engine.rates.snapshot(), self.kept)

    def _chunks(self, f: BinaryIO) -> Iterator[tuple[int, list[bytes], bytes]]:
        """The input, ``CHUNK`` lines at a time, as (number of the first line, the lines as read, the lines
        joined); lines as
        text mode splits them (``\\r\\n``, ``\\r`` and ``\\n`` end a line)."""
        raw: Iterable[bytes] = f
        if self.w == 0 and self.job.progress is not None:
            raw = self.job.progress(f, os.fstat(f.fileno()).st_size)
        it = iter(raw)
        idx = 0
        while block := list(islice(it, CHUNK)):
            joined = b"".join(block)
            if b"\r" in joined:
                out: list[bytes] = []
                for line in block:
                    if b"\r" in line and line.find(b"\r") != len(line) - 2:  # not just a CRLF at the end
                        pieces = line.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
                        out += pieces[:-1] if pieces[-1] == b"" else pieces
                    else:
                        out.append(line)
                block, joined = out, b""  # (no fast routing of such a chunk)
            yield idx, block, joined
            idx += len(block)

    def _decode(self, first: int, lines: list[bytes], joined: bytes) -> list[_Entry]:
        """Decode and validate this worker's lines of a chunk: its accepted outlet readings, in line order
        (grid readings go to the grid engine; rejections are counted)."""
        w, res, registry, fmt, sensors = self.w, self.res, self.job.registry, self.job.fmt, self.all_sensors
        owner_cache, mine = self.owner_cache, self.mine
        rejected = res.rejected
        own: list[_Entry] = []
        n = 0
        for j, o in self._mine(lines, joined):
            s = lines[j]
            idx = first + j
            text = s.decode("utf-8", "replace").strip()
            if not text:
                continue
            if o == _AMBIGUOUS:
                self._decode_any(idx, text, own)
                continue
            n += 1
            try:
                r, info = _check(text, registry, fmt, sensors)
                if r.dropped:
                    res.values_dropped += len(r.dropped)
                if info is None:
                    if self.grid is None:  # a grid sensor's reading is worker 0's: routed wrong (see _mine)
                        self._misrouted(idx, r.mn)
                    self.grid.add(r)
                    continue
            except RejectedMessage as e:
                rejected[e.reason] += 1
                continue
            except Exception:  # a bug met by this line: as one process, count it and go on
                log.exception("internal error on input line %d (counted as internal_error)", idx + 1)
                rejected["internal_error"] += 1
                continue
            if owner_cache.get(r.mn) != w and self._owner_of(r.mn) != w:
                self._misrouted(idx, r.mn)
            ts = beijing_ts(r.data_time)  # (remembered: the trackers convert it again)
            own.append((ts, idx))
            mine[idx] = (r, info)
        res.lines += n
        return own

    def _misrouted(self, idx: int, mn: str) -> NoReturn:
        """The MN read cheaply was wrong: the parent replays in one process."""
        log.warning("replay worker %d: line %d: decoded MN %r is not the one read", self.w + 1, idx + 1, mn)
        raise SystemExit(_MISROUTED)

    def _mine(self, lines: list[bytes], joined: bytes) -> list[tuple[int, int]]:
        """The lines of a chunk this worker decodes, (position, :meth:`Router.owner`): its own, and those every
        worker decodes (``-1``).

        A chunk with as many ``MN=`` fields as lines (HJ 212 packets, the usual recording) is read with one
        regular expression: the MNs in line order, each line going to the owner of its MN.  Whatever the chunk
        holds, every worker deals its lines out alike, so each line is decoded by one worker, and each decoded
        reading's MN is checked against the worker (:meth:`_decode`): a line given the wrong MN (one with two
        ``MN=`` next to one with none, a topic whose MN is not the packet's, a grid sensor's packet) makes the
        replay run in one process.  An MN read that is not the registry's (or holds a line end) is routed as
        its line alone (:meth:`Router.owner`)."""
        w, router = self.w, self.router
        n = len(lines)
        if self.fmt_hj212 and joined:
            mns = _MN.findall(joined)
            if len(mns) == n:
                owners = list(map(router.owners.get, mns))
                if None not in owners:  # (and so no -1)
                    return list(zip(compress(range(n), map(w.__eq__, owners)), repeat(w)))
                owner = router.owner
                out = []
                for j, o in enumerate(owners):
                    if o is None:
                        o = owner(lines[j])
                    if o in (w, _AMBIGUOUS):
                        out.append((j, o))
                return out
        owner = router.owner
        return [(j, o) for j, s in enumerate(lines) if (o := owner(s)) == w or o == _AMBIGUOUS]

    def _owner_of(self, mn: str) -> int:
        """:meth:`Router.owner_of` of a decoded MN (cached)."""
        w = self.owner_cache.get(mn)
        if w is None:
            w = self.owner_cache[mn] = self.router.owner_of(mn.encode("utf-8"))
        return w

    def _decode_any(self, idx: int, text: str, own: list[_Entry]) -> None:
        """A line every worker decodes: counted (and its rejection) by worker 0, kept by the owner of its MN."""
        w, res = self.w, self.res
        if w == 0:
            res.lines += 1
        try:
            r, info = _check(text, self.job.registry, self.job.fmt, self.all_sensors)
        except RejectedMessage as e:
            if w == 0:
                res.rejected[e.reason] += 1
            return
        except Exception:
            if w == 0:
                log.exception("internal error on input line %d (counted as internal_error)", idx + 1)
                res.rejected["internal_error"] += 1
            return
        if info is None:  # a grid sensor's: worker 0's
            if w == 0:
                res.values_dropped += len(r.dropped)
                assert self.grid is not None
                self.grid.add(r)
            return
        if self.router.owner_of(r.mn.encode("utf-8")) == w:
            res.values_dropped += len(r.dropped)
            ts = beijing_ts(r.data_time)  # (remembered: the trackers convert it again)
            own.append((ts, idx))
            self.mine[idx] = (r, info)

    def _keys(self, c: int) -> list[tuple[bytes, bytes]]:
        """The other workers' keys of chunk ``c``."""
        got = self.stash.pop(c, [])
        want = self.job.workers - 1
        while len(got) < want:
            try:
                k, keys_i, keys_t = self.inbox.get(timeout=_POLL_S)
            except queue.Empty:
                if os.getppid() != self.ppid:
                    raise SystemExit("replay worker: the parent has gone") from None
                continue
            if k == c:
                got.append((keys_i, keys_t))
            else:
                self.stash.setdefault(k, []).append((keys_i, keys_t))
        return got

    def _judge(self, c: int, own: list[_Entry]) -> None:
        """Push chunk ``c``'s accepted readings of every worker into the reorder buffer, in line order,
        releasing as the one-process buffer does (:func:`cems.replay._in_order`: when it holds more than
        ``window`` readings, every reading of the earliest data time, in line order).  The buffer is a heap of
        data times with the line numbers of each: equal times come out together anyway."""
        entries: list[_Entry] = list(own)
        for keys_i, keys_t in self._keys(c):
            ii, tt = array("q"), array("d")
            ii.frombytes(keys_i)
            tt.frombytes(keys_t)
            entries += zip(tt, ii, strict=True)
        entries.sort(key=_line_of)  # (merging sorted runs)
        heap, groups, window, push, release = self.heap, self.groups, self.job.window, heapq.heappush, self._release
        size = self.size  # ≤ window between entries
        # Consecutive entries of one data time (the outlets' readings of a minute) are put in together, up to
        # the one that makes the buffer overflow: the buffer's states at every release are those of putting
        # them in one by one.
        for ts, same in groupby(entries, key=_time_of):
            idxs = list(map(_line_of, same))
            n = len(idxs)
            if size + n <= window:
                g = groups.get(ts)
                if g is None:
                    groups[ts] = idxs
                    push(heap, ts)
                else:
                    g += idxs
                size += n
                continue
            pos = 0
            while pos < n:
                part = idxs[pos : pos + window - size + 1]  # up to the first reading over the window
                g = groups.get(ts)  # (again: a release may have taken this time's group)
                if g is None:
                    groups[ts] = part
                    push(heap, ts)
                else:
                    g += part
                size += len(part)
                pos += len(part)
                if size > window:
                    size -= release()
        self.size = size

    def _release(self) -> int:
        """One run of readings of equal data time out of the buffer; this worker's judged, after the marks
        received by then.  Returns the number of readings (of every worker) released."""
        t = heapq.heappop(self.heap)
        run = self.groups.pop(t)
        take_mine = self.mine.pop
        mine = [(idx, *x) for idx in run if (x := take_mine(idx, None)) is not None]
        n_run = self.runs
        self.runs += 1
        pending, pending_ts, engine, take = self.pending, self.pending_ts, self.engine, self.results.take
        while pending and pending_ts[-1] <= t:
            pending_ts.pop()
            take(engine.on_mark(pending.pop()))
        if mine:
            self._judge_run(n_run, mine)
        return len(run)

    def _judge_run(self, n_run: int, mine: list[tuple[int, Reading, OutletInfo]]) -> None:
        items = [(r, info) for _, r, info in mine]
        group = items if len(items) == 1 else merge_parts(items)
        if self.job.keep:
            first: dict[tuple[str, str], int] = {}
            for idx, r, _ in mine:
                first.setdefault((r.mn, r.stream.value), idx)
            for reading, _ in group:
                self.kept.append(((n_run, first[(reading.mn, reading.stream.value)]), reading))
        on_reading, take = self.engine.on_reading, self.results.take
        self.n_readings += len(group)
        for reading, info in group:
            self.n_values += sum(map(len, map(_values_of, reading.measurements.values())))
            try:
                out = on_reading(reading, info)
            except Exception:  # a bug in the rules: as one process, counted and left unjudged
                log.exception("the rules failed on the reading of %s at %s", reading.mn, reading.data_time)
                self.res.rules_errors += 1
                continue
            take(out)


_time_of: Final = itemgetter(0)
_line_of: Final = itemgetter(1)


def _ts(t: Any) -> float:
    return float(t.timestamp() if t.tzinfo is not None else t.replace(tzinfo=BEIJING).timestamp())
