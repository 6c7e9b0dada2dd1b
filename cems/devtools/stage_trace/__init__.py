"""Where an alert waits in ``cems run``: wall-clock spans of the ingester's stages, and a report (issue 20, alert
latency; docs/benchmark.md, eighth session).

``install(prefix)`` wraps the stage methods named in :data:`SPANS` (the pipeline's prepare, write and rules
stages, the compliance runtime's judge, commits and serialisation, the state database's lanes, the alert
publish) with timers, adds a probe of the event loop's lag (a 5 ms sleep that wakes more than 20 ms late) and the
cyclic garbage collector's collections of 1 ms or more (``gc.gen0`` .. ``gc.gen2``), and writes the spans as JSON
to ``{prefix}.{pid}`` when the process exits. It costs a few µs a call: a tool for finding a wait, not for
measuring CPU.

Used through the ``hook`` directory's ``sitecustomize``, which installs it in every Python process started with
``CEMS_STAGE_TRACE`` set and the directory on ``PYTHONPATH`` — e.g. the ``cems run`` of ``cems bench``'s alert
phase::

    CEMS_STAGE_TRACE=/tmp/tr PYTHONPATH=$(python -m cems.devtools.stage_trace hook-dir) \\
        cems bench --skip broker,baseline,cems,database,rss,replay --alert-rate 2200 --json b.json
    python -m cems.devtools.stage_trace report /tmp/tr b.json --worst 2

The report gives each span's count, p50, p99, max and total, how long the alerts' transactions took when a
state transaction was under way and when none was, and (with the bench's JSON, whose alert details hold each
warning's send time and latency) every span that overlapped the slowest alerts, from their send to their
arrival.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import glob
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: (module, class or None for a module function, attribute) of each span.
SPANS: tuple[tuple[str, str | None, str], ...] = (
    ("cems.service.ingest", "IngestService", "prepare"),
    ("cems.service.ingest", "IngestService", "write_stage"),
    ("cems.service.ingest", "IngestService", "rules_stage"),
    ("cems.service.ingest", "IngestService", "_archive"),
    ("cems.service.ingest", "IngestService", "_write_derived"),
    ("cems.service.ingest", "IngestService", "_publish_alert"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "_judge"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "_commit"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "_flush"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "settle"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "_serialise"),
    ("cems.service.compliance._runtime", "ComplianceRuntime", "_write_aside"),
    ("cems.service.compliance._runtime", None, "commit_state"),
    ("cems.service.compliance._runtime", None, "commit_events"),
    ("cems.service.outbox", "StateDB", "call"),
    ("cems.service.outbox", "StateDB", "call_alerts"),
    ("cems.service.outbox", "StateDB", "read"),
)
LOOP_LAG = "loop_lag"
#: Label prefix of the cyclic collector's collections (``gc.gen2``: the oldest generation's, a full one).
GC_PREFIX = "gc.gen"
#: One span: label, start and end (``time.time()``, the clock of the bench's send and arrival times), and a note:
#: the ``state`` keyword of the call if it had one (``_commit``'s), a collection's thread and objects freed.
Span = tuple[str, float, float, str]


def install(prefix: str) -> list[Span]:
    """Wrap :data:`SPANS` and the service's run (the loop probe) in this process; the spans are written to
    ``{prefix}.{pid}`` at exit. Returns the list the spans go to."""
    import importlib

    spans: list[Span] = []
    for module, cls, name in SPANS:
        owner: Any = importlib.import_module(module)
        if cls is not None:
            owner = getattr(owner, cls)
        label = name if cls is None else f"{cls}.{name}"
        setattr(owner, name, _timed(getattr(owner, name), label, spans))
    from cems.service.ingest import IngestService

    run = IngestService._run

    async def probed_run(self: IngestService, stop: asyncio.Event) -> None:
        probe = asyncio.create_task(_probe_loop(spans))
        try:
            await run(self, stop)
        finally:
            probe.cancel()

    IngestService._run = probed_run  # type: ignore[method-assign]
    gc.callbacks.append(_gc_timer(spans))
    atexit.register(_dump, f"{prefix}.{os.getpid()}", spans)
    return spans


def _timed(fn: Callable[..., Any], label: str, spans: list[Span]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kw: Any) -> Any:
            t0 = time.time()
            try:
                return await fn(*args, **kw)
            finally:
                spans.append((label, t0, time.time(), repr(kw["state"]) if "state" in kw else ""))

        return timed_async

    @functools.wraps(fn)
    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.time()
        try:
            return fn(*args, **kw)
        finally:
            spans.append((label, t0, time.time(), ""))

    return timed


def _gc_timer(spans: list[Span], min_s: float = 0.001) -> Callable[[str, dict[str, int]], None]:
    """A ``gc.callbacks`` entry: each collection of the cyclic collector of at least ``min_s`` as a span
    ``gc.gen{N}`` (a pause of every thread: the collector holds the GIL), with the thread it ran in and the number
    of objects it freed."""
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.time()
        elif time.time() - started[0] >= min_s:
            note = f"{threading.current_thread().name} freed={info['collected']}"
            spans.append((f"{GC_PREFIX}{info['generation']}", started[0], time.time(), note))

    return on_gc


async def _probe_loop(spans: list[Span], step_s: float = 0.005, late_s: float = 0.02) -> None:
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(step_s)
        late = loop.time() - t - step_s
        if late > late_s:
            now = time.time()
            spans.append((LOOP_LAG, now - late, now, ""))


def _dump(path: str, spans: list[Span]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spans, f)


def load(prefix: str) -> list[Span]:
    """The spans of the process that recorded the most (the ``cems run`` among the processes traced)."""
    best: list[Span] = []
    for path in glob.glob(glob.escape(prefix) + ".*"):
        with open(path, encoding="utf-8") as f:
            got = [(str(a), float(b), float(c), str(d)) for a, b, c, d in json.load(f)]
        if len(got) > len(best):
            best = got
    return best


def _quantiles(xs: Sequence[float]) -> str:
    s = sorted(xs)
    if not s:
        return "none"
    return (
        f"n={len(s):5d} p50={s[len(s) // 2] * 1e3:7.1f} ms p99={s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3:7.1f}"
        f" ms max={s[-1] * 1e3:7.1f} ms total={sum(s):6.2f} s"
    )


def report(spans: Sequence[Span], alert: dict[str, Any] | None = None, worst: int = 3) -> str:
    """The text of the report (see the module docstring); ``alert``: ``details.alert`` of the bench's JSON."""
    out: list[str] = []
    by: dict[str, list[float]] = {}
    for label, t0, t1, _ in spans:
        by.setdefault(label, []).append(t1 - t0)
    for label in sorted(by):
        out.append(f"{label:34s} {_quantiles(by[label])}")
    states = [(t0, t1) for label, t0, t1, _ in spans if label == "commit_state"]
    during: list[float] = []
    alone: list[float] = []
    for label, t0, t1, _ in spans:
        if label == "commit_events":
            (during if any(s0 < t1 and t0 < s1 for s0, s1 in states) else alone).append(t1 - t0)
    out.append(f"alerts' transactions during a state transaction: {_quantiles(during)}")
    out.append(f"alerts' transactions with none under way:        {_quantiles(alone)}")
    if alert and alert.get("latency_timeline") and alert.get("latency_timeline_t0") is not None:
        t_first = float(alert["latency_timeline_t0"])
        for rel, lat in sorted(alert["latency_timeline"], key=lambda x: -x[1])[:worst]:
            sent = t_first + rel
            out.append(f"alert sent at +{rel:.2f} s, arrived {lat:.3f} s later; spans from its send (s):")
            for label, t0, t1, state in sorted(spans, key=lambda x: x[1]):
                if t0 < sent + lat and t1 > sent - 0.05 and (t1 - t0 >= 0.005 or label == "IngestService.rules_stage"):
                    out.append(f"  {t0 - sent:+.3f} .. {t1 - sent:+.3f} ({(t1 - t0) * 1e3:5.0f} ms) {label} {state}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.stage_trace", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("hook-dir", help="print the directory to put on PYTHONPATH (with CEMS_STAGE_TRACE set)")
    rep = sub.add_parser("report", help="the report of a traced run")
    rep.add_argument("prefix", help="CEMS_STAGE_TRACE of the run")
    rep.add_argument("bench_json", nargs="?", help="the bench's --json file (the slowest alerts' spans)")
    rep.add_argument("--worst", type=int, default=3, help="how many of the slowest alerts to show")
    a = ap.parse_args(argv)
    if a.cmd == "hook-dir":
        print(Path(__file__).with_name("hook"))
        return 0
    spans = load(a.prefix)
    if not spans:
        print(f"no spans under {a.prefix}.*", file=sys.stderr)
        return 1
    alert = None
    if a.bench_json:
        with open(a.bench_json, encoding="utf-8") as f:
            alert = json.load(f).get("details", {}).get("alert")
    print(report(spans, alert, a.worst))
    return 0


__all__ = ["GC_PREFIX", "LOOP_LAG", "SPANS", "Span", "install", "load", "main", "report"]
