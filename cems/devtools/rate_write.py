"""Benchmark of the live ``cems_rate`` write at N outlets (issue 20: it blocked the event loop for 18–37 s an hour).

``python -m cems.devtools.rate_write --outlets 100000 --day 1``: a benchmark registry
(:mod:`cems.devtools.bench._data`) and a :class:`~cems.service.compliance.ComplianceRuntime` whose rate counter
holds the hourly counts of every outlet and assessed factor from the 1st of a month to ``--day`` 14:00 (97 % of the
hours received, 98 % of them valid, 0.4 % of the SO2 hours exceeding); then one forced rate write (the outlets' day
rates and the district month), its lines counted (not sent).  Prints JSON: the CPU time of the write, the longest
time the event loop was blocked during it (a task that only yields measures the gaps between its turns: wall clock
and the loop thread's CPU), the number of loop turns, the lines and their digest.

Run as a file with ``PYTHONPATH`` at another checkout to time the code there (the counter is filled through its
stored bytes, the same in both): the A/B of docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import resource
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cems.devtools.bench import _data
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules.transmission import _HourCodes
from cems.service.compliance import ComplianceConfig, ComplianceRuntime

_DAY = 86400


def _code_table() -> bytes:
    """A random byte → the stored byte of an hour (code + 1; 0: no record): ≈ 3 % missing, ≈ 2 % not valid, half
    of the records from the DAS (rank 2), half computed from minutes (rank 1)."""
    out = bytearray(256)
    for b in range(256):
        if b >= 8:
            rank = 2 if b & 1 else 1
            out[b] = rank * 2 + (0 if b < 13 else 1) + 1
    return bytes(out)


def fill(rt: ComplianceRuntime, month: datetime, now: datetime, seed: int) -> None:
    """Hourly codes of every outlet and factor in [month, now) (the stored bytes, code + 1 per hour, as
    ``RateCounter.add`` stores them), and an exceeding SO2 hour for ≈ 0.4 % of the hours."""
    rates: Any = rt.engine.rates
    rng = random.Random(seed)
    table = _code_table()
    lo, hi = int(month.timestamp()), int(now.timestamp())
    days = range(lo // _DAY, (hi - 1) // _DAY + 1)
    for info in rt.registry.outlets():
        mn = info.outlet.mn
        by_f: dict[str, Any] = {}
        for f in rates.factors:
            codes = _HourCodes()
            old_days = getattr(codes, "_days", None)  # (an older checkout's counter: a bytearray per UTC day)
            run = bytearray()
            for d in days:
                raw = rng.randbytes(24)
                day = bytearray(raw.translate(table))
                for i in range(24):
                    h = d * _DAY + 3600 * i
                    if not lo <= h < hi:
                        day[i] = 0
                    elif raw[i] == 255 and f == "a21026":
                        rates._exceed[(mn, f, h)] = (day[i] - 1) | 1
                run += day
                if old_days is not None:
                    old_days[d] = day
            if old_days is None:
                codes._load(days[0], run)
            by_f[f] = codes
        fi = getattr(rates, "_fi", None)  # (this checkout: a list of values per outlet)
        rates._seen[mn] = by_f if fi is None else [by_f[f]._r if f in by_f else None for f in rates.factors]
    rates._min_hour, rates._max_hour = lo, hi - 3600


class _Sink:
    """The write: lines hashed and counted, not kept (the write's own memory is what the peak RSS shows)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.hash = hashlib.sha256()

    async def write(self, chunk: list[str], stop: asyncio.Event | None) -> bool:
        self.n += len(chunk)
        self.hash.update("".join(ln + "\n" for ln in chunk).encode())
        return True


async def measure(rt: ComplianceRuntime) -> dict[str, Any]:
    gaps = [0.0, 0.0]  # wall, CPU of the loop's thread
    turns = [0]
    done = asyncio.Event()

    async def watch() -> None:
        t, c = time.perf_counter(), time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0)
            n, nc = time.perf_counter(), time.thread_time()
            gaps[0] = max(gaps[0], n - t)
            gaps[1] = max(gaps[1], nc - c)
            turns[0] += 1
            t, c = n, nc

    w = asyncio.create_task(watch())
    await asyncio.sleep(0)
    c0, t0 = time.process_time(), time.perf_counter()
    ok = await rt._write_rates(None, force=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    done.set()
    await w
    return {
        "ok": ok,
        "cpu_s": cpu,
        "wall_s": wall,
        "longest_block_s": gaps[0],
        "longest_block_cpu_s": gaps[1],
        "loop_turns": turns[0],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outlets", type=int, default=100_000)
    ap.add_argument("--day", type=int, default=1, help="day of the month of the write (at 14:00 Beijing)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args(argv)
    t = time.perf_counter()
    reg = parse_registry(_data.registry_toml(a.outlets))
    month = datetime(2026, 11, 1, tzinfo=BEIJING)
    now = month + timedelta(days=a.day - 1, hours=14)
    sink = _Sink()

    async def publish(topic: str, body: bytes) -> None:
        pass

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ComplianceConfig(state_dir=Path(tmp), clock=lambda: now + timedelta(minutes=10))
        rt = ComplianceRuntime(reg, cfg, write=sink.write, publish=publish)
        fill(rt, month, now, a.seed)
        setup = time.perf_counter() - t
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        runs = []
        for _ in range(a.repeat):
            sink.reset()
            rt._rates_due = None  # the day of the newest hour over is due again
            runs.append(asyncio.run(measure(rt)))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "outlets": a.outlets,
                "day": a.day,
                "setup_s": round(setup, 1),
                "runs": runs,
                "lines": sink.n,
                "digest": sink.hash.hexdigest()[:16],
                "peak_rss_mb_before": rss0 // 1024,
                "peak_rss_mb_after": rss1 // 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
