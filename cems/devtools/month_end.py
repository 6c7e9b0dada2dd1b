"""The rate counter's counted hours at a month's end (issue 20: ≤ 512 MB at 100 000 outlets).

``python -m cems.devtools.month_end --outlets 1000``: a :class:`~cems.rules.transmission.RateCounter` of a benchmark
registry (:mod:`cems.devtools.bench._data`), filled hour by hour as the live service counts them (every outlet's
assessed factors, an hour at a time, through the counter's hour table with :meth:`RateCounter.add`'s rank rule),
from the 1st of the previous month to the end of ``--days`` (62 by default: the live service keeps the current and
the previous month, so a month's end holds two).  Then the memory of the counted hours (the counter's tables and
values, the shared ``_RUNS`` table when there is one, swept of the values no counter holds: every object reached once,
``sys.getsizeof``; strings are the registry's) per outlet and factor (and before the sweep: the table's garbage is
at most a quarter of it or 4 096 values, much at a few outlets, little at 100 000), scaled to 100 000 outlets,
and the CPU time of filling them (µs per hour set: ``get`` and ``set`` as ``add`` does).  Profiles (``--profiles``):

* ``common``: every outlet's hours received and valid (half of them DAS records, half computed from minutes);
* ``mix``: the same, with 1 outlet in 20 odd: outages of 1–6 hours on ≈ 15 % of the days, ≈ 1 % of the hours not
  valid, each odd outlet and factor its own;
* ``distinct``: every outlet odd (no two the same);
* ``random``: each hour's code drawn at random (3 % missing, 2 % not valid, the rank drawn too: the live write's
  benchmark, :mod:`cems.devtools.rate_write`): the worst case for a run-length encoding.

``--profiles mix --serve run --config ...``: ``cems run`` whose compliance runtime holds, once started, the
counted hours of the end of the previous month (that month and the one before) of the first profile for every
registry outlet (``cems bench --rss-month-end``: the whole
service's memory at a month's end).

``--restore``: also the start-up restore of those hours from the rate rows of earlier versions (``add`` of each row's
record; ``RateCounter.add_rows`` when the checkout has it), µs per row, and, when the checkout has it, the stored
counter (``rate_runs``): rows, bytes, CPU seconds to write and to restore, and whether the restored counter is the
same.

Prints JSON, and a digest of every counter's :meth:`items` per profile: the same digest for two checkouts means
the same counted hours.  Run as a file with ``PYTHONPATH`` at another checkout to measure the code there (it uses
only ``_HourCodes`` and, in this checkout's layout, ``_get``/``_set``): the A/B of docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import random
import sys
import time
from datetime import datetime
from typing import Any

from cems.devtools.bench import _data
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules import transmission
from cems.rules.transmission import RateCounter, _HourCodes

PROFILES = ("common", "mix", "distinct", "random")


def _odd_hours(rng: random.Random, n: int, good: int) -> list[int]:
    """A month of an odd outlet's codes (-1: no record): outages and hours not valid."""
    out = [good] * n
    for d in range(0, n, 24):
        if rng.random() < 0.15:
            a = d + rng.randrange(24)
            for i in range(a, min(a + rng.randint(1, 6), n)):
                out[i] = -1
    for i in range(n):
        if out[i] >= 0 and rng.random() < 0.01:
            out[i] = good & ~1
    return out


def _random_hours(rng: random.Random, n: int) -> list[int]:
    out = []
    for _ in range(n):
        x = rng.random()
        out.append(-1 if x < 0.03 else (rng.choice((1, 2)) * 2 + (0 if x < 0.05 else 1)))
    return out


def _lists(rates: RateCounter) -> dict[str, int] | None:
    """The counter's factor → index when it keeps a list of values per outlet (this checkout), else ``None`` (a dict
    of ``_HourCodes`` per outlet: older checkouts)."""
    fi: dict[str, int] | None = getattr(rates, "_fi", None)
    return fi


def _codes_of(rates: RateCounter, mn: str, f: str) -> list[tuple[int, int]]:
    """An outlet's and factor's counted (hour, code) pairs, in either layout."""
    seen: Any = rates._seen
    fi = _lists(rates)
    if fi is None:
        return list(seen[mn][f].items())
    hc = _HourCodes()
    hc._r = seen[mn][fi[f]] or b""
    return hc.items()


def fill(rates: RateCounter, mns: list[str], profile: str, start: int, hours: int, seed: int) -> tuple[int, float]:
    """Counts every outlet's and factor's hours from ``start``; (hours set, CPU seconds)."""
    rng = random.Random(seed)
    seen: Any = rates._seen
    fi = _lists(rates)
    cols: list[tuple[Any, str | int, list[int] | int]] = []
    for k, mn in enumerate(mns):
        good = (2 if k % 2 else 1) * 2 + 1  # DAS or computed from minutes, valid
        odd = profile == "distinct" or (profile == "mix" and k % 20 == 7)
        slot: Any = {} if fi is None else [b""] * len(rates.factors)
        seen[mn] = slot
        for f in rates.factors:
            if fi is None:
                slot[f] = _HourCodes()
            key = f if fi is None else fi[f]
            if profile == "random":
                cols.append((slot, key, _random_hours(rng, hours)))
            elif odd:
                cols.append((slot, key, _odd_hours(rng, hours, good)))
            else:
                cols.append((slot, key, good))
    n = 0
    gc.collect()
    c0 = time.process_time()
    get = getattr(transmission, "_get", None)
    put = getattr(transmission, "_set", None)
    for i in range(hours):  # an hour at a time, every outlet and factor (as the hours close), add's rank rule
        h = start + 3600 * i
        for slot, key, col in cols:
            code = col if isinstance(col, int) else col[i]
            if code < 0:
                continue
            if fi is None:
                codes = slot[key]
                old = codes.get(h)
                if old is None or code >> 1 >= old >> 1:
                    codes.set(h, code)
            else:
                r = slot[key]
                old = get(r, h)  # type: ignore[misc]
                if old is None or code >> 1 >= old >> 1:
                    slot[key] = put(r, h, code)  # type: ignore[misc]
            n += 1
    return n, time.process_time() - c0


def _size(roots: list[Any]) -> int:
    """Bytes of every object reached from ``roots`` once (strings and types excluded: the registry's and the
    interpreter's)."""
    seen: set[int] = set()
    todo = list(roots)
    total = 0
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (str, type)):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        todo.extend(gc.get_referents(o))
    return total


_SOURCES = {2: "das_2061", 1: "minutes", 0: "realtime"}
_PAGES = ("page_count", "freelist_count", "page_size")


def restore(reg: Any, rates: RateCounter, mns: list[str], legacy: bool = True) -> dict[str, Any]:
    """The service's start-up (``ComplianceRuntime.start``): the counted hours as the stored ``rate_records`` rows
    (hour after hour, as written), restored into a new counter by ``add`` of each row's record and, when the
    checkout has it, by ``RateCounter.add_rows``; CPU µs per row, and whether both give the counter filled.  Then
    (``rate_runs``) the counter as it is stored now: rows, bytes, write and restore CPU seconds, and the migration
    of the rows.  ``legacy=False``: only the stored counter (no row list: at 100 000 outlets it would not fit)."""
    if not legacy:
        return _restore_runs(reg, rates, [])
    from cems.service.compliance._state import rate_record

    by_hour: dict[int, list[tuple[str, str, int, str, bool, bool]]] = {}
    for mn in mns:
        for f in rates.factors:
            for h, c in _codes_of(rates, mn, f):
                by_hour.setdefault(h, []).append((mn, f, h, _SOURCES[c >> 1], bool(c & 1), False))
    rows = [r for h in sorted(by_hour) for r in by_hour[h]]
    del by_hour
    want = rates.snapshot()
    out: dict[str, Any] = {"rows": len(rows)}
    one = RateCounter(reg)
    gc.collect()
    c0 = time.process_time()
    for row in rows:
        one.add(rate_record(*row))
    out["add_us_per_row"] = round((time.process_time() - c0) / len(rows) * 1e6, 3)
    out["add_same"] = one.snapshot()["seen"] == want["seen"]
    del one
    if hasattr(RateCounter, "add_rows"):  # (older checkouts: their start-up's restore)
        many: Any = RateCounter(reg)
        gc.collect()
        c0 = time.process_time()
        many.add_rows(rows)
        out["add_rows_us_per_row"] = round((time.process_time() - c0) / len(rows) * 1e6, 3)
        out["add_rows_same"] = many.snapshot()["seen"] == want["seen"]
    if hasattr(RateCounter, "take_changes"):
        out.update(_restore_runs(reg, rates, rows))
    return out


def _hours_of(rates: RateCounter) -> dict[tuple[str, int], tuple[int, bytes]]:
    """Each outlet and factor's counted hours: (first hour, stored byte of every hour), whatever the encoding."""
    out: dict[tuple[str, int], tuple[int, bytes]] = {}
    for mn, vals in rates._seen.items():
        for i, r in enumerate(vals):
            if r:
                out[(mn, i)] = (transmission._HEAD.unpack_from(r)[0], transmission._dense(r))
    return out


def _restore_runs(reg: Any, rates: RateCounter, rows: list[Any]) -> dict[str, Any]:
    """The stored counter itself (rate_runs): bytes and start-up CPU; with ``rows``, their migration."""
    import sqlite3

    from cems.service.compliance import _state
    from cems.service.outbox import transaction

    out: dict[str, Any] = {}
    want = _hours_of(rates)

    def used(conn: sqlite3.Connection) -> int:
        (pages,), (free,), (size,) = (conn.execute(f"PRAGMA {p}").fetchone() for p in _PAGES)
        return int((pages - free) * size)

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_state.STATE_SCHEMA)
    empty = used(conn)
    c0 = time.process_time()
    with transaction(conn):
        _state.write_rate_changes(conn, rates.take_changes(everything=True))
    out["runs_write_s"] = round(time.process_time() - c0, 3)
    out["runs_rows"] = conn.execute("SELECT count(*) FROM rate_runs").fetchone()[0]
    out["runs_db_bytes"] = used(conn) - empty
    back = RateCounter(reg)
    gc.collect()
    c0 = time.process_time()
    _state.restore_rate_state(conn, back)
    out["runs_restore_s"] = round(time.process_time() - c0, 3)
    out["runs_same"] = _hours_of(back) == want
    conn.close()
    if not rows:
        return out
    # the same hours as an earlier version stored them (a row per record), and their migration at start
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_state.STATE_SCHEMA)
    conn.execute(_state.RATE_RECORDS_SCHEMA)
    with transaction(conn):
        conn.executemany("INSERT OR REPLACE INTO rate_records VALUES (?,?,?,?,?,?)", rows)
    out["records_db_bytes"] = used(conn) - empty
    moved = RateCounter(reg)
    gc.collect()
    c0 = time.process_time()
    _state.migrate_rate_records(conn)
    _state.restore_rate_state(conn, moved)
    out["migrate_s"] = round(time.process_time() - c0, 3)
    out["migrate_same"] = _hours_of(moved) == want
    conn.close()
    return out


def measure(
    n_outlets: int, profile: str, days: int, seed: int, with_restore: bool = False, legacy: bool = True
) -> dict[str, Any]:
    reg = parse_registry(_data.registry_toml(n_outlets))
    rates = RateCounter(reg)
    mns = sorted(i.outlet.mn for i in reg.outlets())
    start = int(datetime(2026, 10, 1, tzinfo=BEIJING).timestamp())
    table = getattr(transmission, "_RUNS", None)
    if table is not None:
        table.clear()
    n, cpu = fill(rates, mns, profile, start, 24 * days, seed)
    gc.collect()
    roots = [rates._seen] + ([table] if table is not None else [])
    unswept = _size(roots)
    sweep = getattr(transmission, "_sweep", None)
    if sweep is not None:  # (the values no counter holds any more: at most a quarter more, or 4 096 of them)
        sweep()
    size = _size(roots)
    slots = n_outlets * len(rates.factors)
    h = hashlib.sha256()
    for mn in mns:
        for f in rates.factors:
            h.update(repr((mn, f, _codes_of(rates, mn, f))).encode())
    return {
        "profile": profile,
        "outlets": n_outlets,
        "factors": len(rates.factors),
        "days": days,
        "bytes_per_outlet_factor": round(size / slots, 1),
        "gb_at_100000_outlets": round(size / slots * 100_000 * len(rates.factors) / 1e9, 3),
        "unswept_bytes_per_outlet_factor": round(unswept / slots, 1),
        "shared_values": None if table is None else len(table),
        "hours_set": n,
        "us_per_hour_set": round(cpu / n * 1e6, 3),
        "digest": h.hexdigest()[:16],
        **(restore(reg, rates, mns, legacy) if with_restore else {}),
    }


def load_month_end(rates: RateCounter, now: datetime, profile: str = "mix", seed: int = 1) -> int:
    """Every registry outlet's and assessed factor's counted hours at the end of the Beijing month before ``now``'s:
    that month's and the one before (59–62 days, what the live service keeps at its last hour), as ``profile`` has
    them, loaded through ``_HourCodes._load`` (the stored bytes, in the layout of whichever checkout runs: ``cems
    bench --rss-month-end``); returns the counters made."""
    rng = random.Random(seed)
    b = now.astimezone(BEIJING)
    m = b.year * 12 + b.month - 1  # now's month; the fill: m - 2 and m - 1
    start = int(datetime((m - 2) // 12, (m - 2) % 12 + 1, 1, tzinfo=BEIJING).timestamp())
    end = int(datetime(m // 12, m % 12 + 1, 1, tzinfo=BEIJING).timestamp())
    hours = (end - start) // 3600
    d0 = start // 86400  # (UTC days: the stored bytes start at a UTC midnight)
    pad = bytes((start - d0 * 86400) // 3600)
    tail = bytes(-(len(pad) + hours) % 24)
    made = 0
    for k, info in enumerate(sorted(rates.registry.outlets(), key=lambda i: i.outlet.mn)):
        good = (2 if k % 2 else 1) * 2 + 1
        odd = profile == "distinct" or (profile == "mix" and k % 20 == 7)
        seen: Any = rates._seen
        fi = _lists(rates)
        slot: Any = seen.setdefault(info.outlet.mn, {} if fi is None else [None] * len(rates.factors))
        for f in rates.factors:
            if profile == "random":
                col = _random_hours(rng, hours)
            elif odd:
                col = _odd_hours(rng, hours, good)
            else:
                col = [good] * hours
            codes = _HourCodes()
            codes._load(d0, pad + bytes(c + 1 if c >= 0 else 0 for c in col) + tail)
            if fi is None:
                slot[f] = codes
            else:
                slot[fi[f]] = codes._r
            made += 1
    rates._min_hour = start if rates._min_hour is None else min(start, rates._min_hour)
    rates._max_hour = end - 3600 if rates._max_hour is None else max(end - 3600, rates._max_hour)
    return made


def serve(argv: list[str], profile: str, seed: int) -> int:
    """``cems`` (``argv``: ``run ...``) whose compliance runtime, once its state is restored, holds a month's end of
    counted hours (:func:`load_month_end` at the wall clock): the memory of the whole service at a month's end."""
    from cems.cli import main as cems_main
    from cems.service.compliance import _runtime

    opened = _runtime.ComplianceRuntime.open

    async def open_at_month_end(self: Any) -> None:
        await opened(self)
        t = time.perf_counter()
        n = load_month_end(self.engine.rates, datetime.now(BEIJING), profile, seed)
        gc.collect()
        took = time.perf_counter() - t
        print(f"month_end: {n} counters of {profile!r} hours loaded in {took:.1f} s", file=sys.stderr)

    _runtime.ComplianceRuntime.open = open_at_month_end  # type: ignore[method-assign]
    return cems_main(argv)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outlets", type=int, default=1000)
    ap.add_argument("--days", type=int, default=62, help="days counted from the 1st of the previous month")
    ap.add_argument("--profiles", default=",".join(PROFILES), help=f"comma-separated, of {', '.join(PROFILES)}")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--restore", action="store_true", help="also time the start-up's restore of the stored rows")
    ap.add_argument(
        "--runs-only", action="store_true", help="with --restore: only the stored counter (rate_runs), no row list"
    )
    ap.add_argument(
        "--serve",
        nargs=argparse.REMAINDER,
        default=None,
        metavar="CEMS_ARGS",
        help="run `cems CEMS_ARGS` (e.g. run --config ...) holding a month's end of the first profile's counted hours",
    )
    a = ap.parse_args(argv)
    if a.serve is not None:
        sys.exit(serve(a.serve, a.profiles.split(",")[0], a.seed))
    for p in a.profiles.split(","):
        if p not in PROFILES:
            ap.error(f"unknown profile {p!r}")
        print(json.dumps(measure(a.outlets, p, a.days, a.seed, a.restore, not a.runs_only)), flush=True)


if __name__ == "__main__":
    main()
