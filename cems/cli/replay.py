"""``cems replay``: the compliance engine offline over recorded packets (deterministic; no broker, no
database unless ``--store``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import AnyStr, TextIO

from cems.cli._common import Formatter, add_influx_args, examples, influx_config, late_hold
from cems.config import Env
from cems.errors import ConfigError
from cems.protocol.mark import MarkRecord
from cems.registry import load_registry, missing_credentials, with_credentials
from cems.replay import json_lines, load_marks, replay
from cems.rules.grid import day_to_json
from cems.service.warnings import read_history
from cems.sinks.store import store_replay

EPILOG = examples(
    "cems replay --config registry.toml --input recorded.txt \\",
    "    --hourly-out hourly.jsonl --events-out events.jsonl \\",
    "    --rates-out rates.jsonl --districts-out districts.jsonl \\",
    "    --daily-out daily.jsonl --monthly-out monthly.jsonl",
    "cems replay --config registry.toml --input grid.txt --grid-hourly-out grid_hourly.jsonl \\",
    "    --grid-daily-out grid_daily.jsonl --events-out events.jsonl",
    "cems replay --config registry.toml --input recorded.txt --store --influx-url http://127.0.0.1:8086",
    "cems replay --config registry.toml --input recorded.txt --warnings warnings.json --events-out events.jsonl",
    "cems marks list --json > marks.jsonl && cems replay --config registry.toml --input recorded.txt \\",
    "    --marks marks.jsonl --events-out events.jsonl",
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    rp = sub.add_parser(
        "replay",
        help="run the compliance engine offline over recorded packets (deterministic; no broker, no database)",
        description="Run the same compliance engine as `cems run` over recorded data: the same packets give "
        "the same hourly records, events and rates, whatever their arrival order. A summary goes to stderr.",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    rp.add_argument("--config", required=True, help="registry TOML, e.g. deploy/registry.toml")
    rp.add_argument(
        "--input",
        required=True,
        help="recorded data, one per line: an HJ 212 packet, a JSON reading, or an MQTT message as 'TOPIC PAYLOAD' "
        "(grid sensors: 'grid/v1/G001 {...}' or 'grid/v1/G001 ##...' for an HJ 212 ST=22 packet)",
    )
    rp.add_argument(
        "--format",
        choices=["auto", "hj212", "jsonl"],
        default="auto",
        help="input format (auto: lines starting with ## are HJ 212, others JSON)",
    )
    rp.add_argument(
        "--warnings",
        metavar="FILE",
        help="the heavy-pollution warning history (a JSON array of settings, as the ingester's warnings.json; "
        "issue 16): the emergency lists are judged under it, as live",
    )
    rp.add_argument("--hourly-out", metavar="FILE", help="write hourly records (JSON lines)")
    rp.add_argument(
        "--events-out", metavar="FILE", help="write events, final state, still-open ones with status open (JSON lines)"
    )
    rp.add_argument(
        "--rates-out", metavar="FILE", help="write transmission rates per outlet and Beijing day (JSON lines)"
    )
    rp.add_argument(
        "--districts-out", metavar="FILE", help="write district rates and supervision per month (JSON lines)"
    )
    rp.add_argument(
        "--daily-out", metavar="FILE", help="write daily means per outlet, code and Beijing day (JSON lines)"
    )
    rp.add_argument(
        "--monthly-out",
        metavar="FILE",
        help="write month validity and monthly rules (steel ultra-low >= 95 %%) per outlet and code (JSON lines)",
    )
    rp.add_argument(
        "--marks",
        metavar="FILE",
        help="marks, declarations, repairs and withdrawals to apply, one JSON record per line as "
        "`cems marks list --json` writes them (issue 14)",
    )
    rp.add_argument("--grid-hourly-out", metavar="FILE", help="write grid sensors' hourly values and AQI (JSON lines)")
    rp.add_argument(
        "--grid-daily-out",
        metavar="FILE",
        help="write grid sensors' daily values, AQI and upload rate per Beijing day (JSON lines)",
    )
    rp.add_argument(
        "--store",
        action="store_true",
        help="also write to InfluxDB what the live service writes: readings, hourly, daily and monthly "
        "results, grid points, events, marks and rates",
    )
    rp.add_argument(
        "--late-hold-hours",
        type=float,
        default=None,
        help="hours an emitted hour keeps its sub-values in memory (default 3; up to 240, the repair window); after "
        "that they wait in an archive until the repair deadline (the newest ≈ 16 MB of them unpacked in memory, "
        "the rest packed on disk), so late data revise the hour exactly either way: this only trades memory for "
        "disk reads [CEMS_LATE_HOLD_HOURS]",
    )
    rp.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="replay over N processes, the registry's outlets dealt out among them by MN (the outlets of an "
        "emergency production line together, grid sensors in the first): the same outputs, byte for byte, as "
        "one process; each process reads the whole input and decodes only its outlets' lines (default 1)",
    )
    rp.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress of reading the input on stderr every 2 s (auto: when stderr is a terminal)",
    )
    add_influx_args(rp, env)
    rp.set_defaults(func=cmd_replay)


def with_progress(lines: Iterable[AnyStr], total_bytes: int, out: TextIO, every_s: float = 2.0) -> Iterator[AnyStr]:
    """The lines, with a progress line on ``out`` every ``every_s`` seconds (share of the file read, lines)."""
    done = n = 0
    t0 = last = time.monotonic()
    for line in lines:
        done += len(line)
        n += 1
        if n % 4096 == 0 and (now := time.monotonic()) - last >= every_s:
            last = now
            share = min(done / total_bytes, 1.0) if total_bytes else 1.0
            print(f"replay: read {share:6.1%} of the input, {n:,} lines, {now - t0:.0f} s", file=out, flush=True)
        yield line
    print(f"replay: read the whole input, {n:,} lines; computing", file=out, flush=True)


def cmd_replay(a: argparse.Namespace, env: Env) -> int:
    registry = load_registry(a.config)
    for problem in missing_credentials(registry, env.values):  # offline: their HJ 212 lines are bad_password
        print(f"replay: warning: {problem}: its HJ 212 packets are rejected as bad_password", file=sys.stderr)
    registry = with_credentials(registry, env.values, strict=False)
    influx = influx_config(a) if a.store else None
    t0 = time.perf_counter()
    show = a.progress == "always" or (a.progress == "auto" and sys.stderr.isatty())
    marks: list[MarkRecord] = []
    if a.marks:
        with open(a.marks, encoding="utf-8") as mf:
            try:
                marks = load_marks(mf)
            except ValueError as e:
                raise ConfigError(f"--marks {a.marks}: {e}") from None
    if a.workers < 1:
        raise ConfigError(f"--workers {a.workers}: must be at least 1")
    hold = late_hold(a.late_hold_hours, env)
    warnings = None if a.warnings is None else read_history(Path(a.warnings))
    if a.workers > 1:
        # imported here: multiprocessing (≈ 0.6 MB) is not loaded by the other commands, `cems run` included
        from cems.replay_parallel import replay_parallel

        res = replay_parallel(
            registry,
            a.input,
            a.format,
            workers=a.workers,
            keep_readings=a.store,
            hold=hold,
            warnings=warnings,
            marks=marks,
            progress=partial(with_progress, out=sys.stderr) if show else None,
        )
    else:
        with open(a.input, encoding="utf-8", errors="replace") as f:
            lines = with_progress(f, os.fstat(f.fileno()).st_size, sys.stderr) if show else f
            res = replay(registry, lines, a.format, keep_readings=a.store, hold=hold, warnings=warnings, marks=marks)
    elapsed = time.perf_counter() - t0
    outputs = [
        (a.hourly_out, (h.to_json() for h in res.hourly)),
        (a.events_out, (e.to_json() for e in res.events)),
        (a.rates_out, (r.to_json() for r in res.outlet_days)),
        (a.districts_out, (d.to_json() for d in res.district_months)),
        (a.daily_out, (d.to_json() for d in res.daily)),
        (a.monthly_out, (m.to_json() for m in res.months)),
        (a.grid_hourly_out, (h.to_json() for h in res.grid_hourly)),
        (a.grid_daily_out, (day_to_json(d) for d in res.grid_daily)),
    ]
    for path, objs in outputs:
        if path:
            with open(path, "w", encoding="utf-8") as out:
                out.writelines(json_lines(objs))
    if influx is not None:
        asyncio.run(store_replay(influx, res))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(res.rejected.items())) or "none"
    n_open = sum(1 for e in res.events if e.is_open)
    print(
        f"replay: {res.lines} lines, {res.readings} readings, {res.values} values in {elapsed:.2f}s "
        f"({res.values / max(elapsed, 1e-9):,.0f} values/s); {len(res.hourly)} hourly records, "
        f"{len(res.events)} events ({n_open} open); grid: {res.grid_readings} readings, {len(res.grid_hourly)} "
        f"hours, {len(res.grid_daily)} days; rejected: {rejected}; late readings: {res.late_readings} "
        f"merged, {res.late_unrevised} unrevised, {res.late_beyond_window} beyond the repair window"
        + (f"; rules errors: {res.rules_errors} (see the log)" if res.rules_errors else ""),
        file=sys.stderr,
    )
    return 0
