"""Memory of late-data revision per outlet (docs/benchmark.md, "Late data"): an outlet's engine fed ``days``
of real-time data (the benchmark's CN=2011 packets: 7 codes, every 60 s) with the emitted hours kept in
memory for the hold (3 h) and the rest in the archive, against keeping the whole repair window (10 days) in
memory.  ``python -m cems.devtools.late_memory [days]``; prints JSON."""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from datetime import timedelta
from typing import Any

from cems.devtools.bench._data import registry_toml, replay_lines
from cems.engine import ComplianceEngine
from cems.hour_archive import TempHourArchive
from cems.registry import parse_registry
from cems.replay import load_readings
from cems.rules import DEFAULT_HOLD, REPAIR_WINDOW


def measure(days: int, hold: timedelta, archived: bool) -> dict[str, Any]:
    registry = parse_registry(registry_toml(1))
    items = load_readings(registry, replay_lines(days), "hj212")
    gc.collect()
    tracemalloc.start()
    archive = TempHourArchive(held=0) if archived else None  # every archived hour packed on disk (not in memory)
    engine = ComplianceEngine(registry, journal=False, hold=hold, archive=archive)
    base = tracemalloc.get_traced_memory()[0]
    for reading, info in items:
        engine.on_reading(reading, info)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    held = sum(len(oe.hourly.held_hours) for oe in engine._outlets.values())
    out = {
        "days": days,
        "hold_hours": hold.total_seconds() / 3600,
        "archive": archived,
        "engine_bytes": used,
        "held_hours": held,
        "archived_hours": archive.puts if archive is not None else 0,
        "archive_bytes": archive.size_bytes() if archive is not None else 0,
    }
    if archive is not None:
        archive.close()
    return out


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 11
    rows = [measure(days, DEFAULT_HOLD, True), measure(days, REPAIR_WINDOW, False)]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
