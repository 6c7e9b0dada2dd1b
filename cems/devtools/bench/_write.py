"""Database limit: InfluxDB ingesting the benchmark's readings with nothing else in the way
(``python -m cems.devtools.bench._write``).

It turns the throughput backlog into exactly the ``cems_reading`` lines that ``cems run`` writes (same
decoder, validator and line protocol; this part is not timed), gzips them in batches of ``--batch`` lines
(as the ingester does), then posts them with ``--concurrency`` connections and writes a JSON summary (lines,
wall-clock time of the first request and of the last answer, CPU seconds spent posting) to ``--out``.  The
rate is what InfluxDB on this machine can store of this load: a bound for any ingester in front of it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx

from cems.decode import decode_message
from cems.devtools.bench import _data
from cems.registry import load_registry
from cems.sinks.influx import InfluxConfig
from cems.sinks.lineprotocol import reading_line
from cems.validate import validate


def build_lines(registry_path: str, messages_path: str) -> list[str]:
    """The ``cems_reading`` lines of the backlog, as ``cems run`` writes them."""
    registry = load_registry(registry_path)
    now = datetime.now(UTC)
    lines: list[str] = []
    for topic, payload in _data.read_messages(messages_path):
        reading = decode_message(topic, payload, registry).reading
        reading, info = validate(reading, registry, now)
        lines.append(reading_line(reading, info.enterprise.id, info.district.code))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cems.devtools.bench._write")
    p.add_argument("--influx-url", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--config", required=True, help="the benchmark registry")
    p.add_argument("--file", required=True, help="the throughput backlog (cems.devtools.bench._data.write_messages)")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    lines = build_lines(a.config, a.file)
    bodies = [gzip.compress("\n".join(lines[i : i + a.batch]).encode(), 1) for i in range(0, len(lines), a.batch)]
    url, params, headers = InfluxConfig(url=a.influx_url, db=a.db).write_request()
    errors: list[str] = []
    with httpx.Client(timeout=120.0) as client:

        def post(body: bytes) -> None:
            r = client.post(url, params=params, headers=headers, content=body)
            if r.status_code not in (200, 204):
                errors.append(f"{r.status_code}: {r.text[:200]}")

        c0 = time.process_time()
        first = time.time()
        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(post, bodies))
        last = time.time()
        cpu = time.process_time() - c0
    summary: dict[str, Any] = {"lines": len(lines), "batches": len(bodies), "first": first, "last": last,
                               "post_cpu_s": cpu, "errors": errors[:5]}  # fmt: skip
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(summary, f)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
