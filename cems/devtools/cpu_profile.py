"""The ingester's per-message CPU path in one process, without sockets (issue 20; docs/benchmark.md).

``python -m cems.devtools.cpu_profile DIR`` feeds the benchmark's messages (:mod:`cems.devtools.bench._data`,
fixed data times and seed: the same messages every run) through the code ``cems run`` runs per batch —
:meth:`IngestService.prepare` (decode, validate, line protocol, evidence entries), the evidence archive's
writer (:meth:`IngestService._archive`, its thread and fsync) and :meth:`IngestService.rules_stage` (the
compliance engine, ``take_changes`` and the SQLite state commit) — with the InfluxDB writes replaced by a
function that keeps (hashes) the lines, and no MQTT connection (acknowledgements are then no-ops).

Made for ``valgrind --tool=callgrind`` (instruction counts: repeatable whatever the machine's load): between
two stages the driver calls ``os.getppid()``, which nothing else in the path calls, so that
``--dump-before=os_getppid`` writes one profile part per stage; the driver prints the stages' labels in
order (``stage <label>``), and :func:`stage_counts` sums the parts' instructions per label::

    valgrind --tool=callgrind --dump-before=os_getppid --callgrind-out-file=OUT/cg.%p \\
        python -m cems.devtools.cpu_profile OUT/run --outlets 2000 --warm-rounds 3 --rounds 3 > OUT/labels
    python -m cems.devtools.cpu_profile --count OUT/labels OUT/cg.<pid>

It imports only what older trees (the start of issue 20's work, 65dc28e) also have, so the same file runs
on ``PYTHONPATH`` of an old tree's ``git archive``.  ``--digest`` prints SHA-256 of what the run produced
(line protocol, derived lines, evidence entries, the SQLite state and events): the same for two trees means
the same outputs.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cems.devtools.bench import _data
from cems.registry import load_registry
from cems.service.compliance import ComplianceConfig
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.sinks.archive import ArchiveSettings
from cems.sinks.influx import InfluxConfig

#: The data times' end: fixed, so that every run gets the same messages (within one hour of data at the
#: default sizes: no hour closes, the steady per-reading cost).
END = datetime(2026, 11, 20, 1, 40, tzinfo=UTC)
#: A fixed clock for the rules (alert opening times, SLA): the same outputs in every run.
CLOCK = datetime(2026, 11, 20, 1, 41, tzinfo=UTC)


#: CPU seconds (user + system, every thread: :func:`time.process_time`) per stage label, summed by :func:`mark`
#: since the last :func:`run` started; the marks' own printing is left out.
CPU: dict[str, float] = {}
_current: list[Any] = [None, 0.0]  # the stage running since the last mark, and its start's CPU time


def mark(label: str) -> None:
    """A stage boundary: print its label and call ``os.getppid`` (callgrind's ``--dump-before`` marker); the
    CPU time since the previous mark goes to the previous label in :data:`CPU`."""
    now = time.process_time()
    if _current[0] is not None:
        CPU[_current[0]] = CPU.get(_current[0], 0.0) + now - _current[1]
    print(f"stage {label}", flush=True)
    os.getppid()
    _current[0], _current[1] = label, time.process_time()


def compiled_modules() -> list[str]:
    """The ``cems`` modules loaded from extension modules (:mod:`cems.devtools.compile`'s mypyc build)."""
    return sorted(
        name
        for name, m in list(sys.modules.items())
        if name.startswith("cems") and str(getattr(m, "__file__", "")).endswith((".so", ".pyd"))
    )


class _Sink:
    """The InfluxDB writes' stand-in: hashes the derived lines (hourly records, events, ...)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.n = 0

    async def write(self, lines: list[str], stop: asyncio.Event | None) -> bool:
        for line in lines:
            self.h.update(line.encode())
            self.h.update(b"\n")
        self.n += len(lines)
        return True


def messages(n_outlets: int, rounds: int, path: Path | None = None) -> list[InboundMessage]:
    """The benchmark's throughput messages (HJ 212 and JSON alternating), as the MQTT connection hands them;
    kept in ``path`` (``topic payload`` lines) and read from it when it exists (making them is slow under
    valgrind)."""
    if path is not None and path.exists():
        pairs = _data.read_messages(str(path))
    else:
        pairs = list(_data.throughput_messages(n_outlets, n_outlets * rounds, end=END))
        if path is not None:
            _data.write_messages(str(path), iter(pairs))
    out: list[InboundMessage] = []
    for k, (topic, payload) in enumerate(pairs):
        out.append(InboundMessage(topic, payload, k + 1, 1, 1_763_600_000.0 + k * 1e-4, 1))
    return out


def _chunks(items: Sequence[InboundMessage], size: int) -> Iterator[Sequence[InboundMessage]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def build(directory: Path, n_outlets: int, *, commit_interval_s: float) -> IngestService:
    """An ingest service of the benchmark's registry, its state and evidence under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    reg_path = directory / "registry.toml"
    reg_path.write_text(_data.registry_toml(n_outlets), encoding="utf-8")
    registry = load_registry(reg_path)
    t = registry.topics
    evidence = ArchiveSettings(
        directory=directory / "evidence",
        source="cems-cpu-profile",
        topic_prefixes=(t.prefix, t.grid_prefix),
        attrs={"client_id": "cems-cpu-profile"},
    )
    compliance = ComplianceConfig(
        state_dir=directory / "state", clock=lambda: CLOCK, commit_interval_s=commit_interval_s
    )
    return IngestService(
        registry,
        MqttSettings(url="mqtt://127.0.0.1:1"),
        InfluxConfig(url="http://127.0.0.1:1"),
        IngestSettings(evidence=evidence),
        compliance=compliance,
    )


def _digest_db(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with sqlite3.connect(path) as c:
        for name, q in (
            ("state", "SELECT mn, state FROM outlet_state ORDER BY mn"),
            ("events", "SELECT event_id, type, mn, status, json, alerted_key, opened_at FROM events ORDER BY event_id"),
            ("hour_log", "SELECT mn, last_hour, entries FROM hour_log ORDER BY mn, id"),
        ):
            h = hashlib.sha256()
            try:
                for row in c.execute(q):
                    h.update(repr(row).encode())
            except sqlite3.OperationalError as e:
                h.update(str(e).encode())
            out[name] = h.hexdigest()
    return out


def run(
    directory: Path,
    *,
    n_outlets: int,
    warm_rounds: int,
    rounds: int,
    batch: int,
    chunk: int,
    commit_interval_s: float,
    digest: bool,
    messages_file: Path | None = None,
) -> dict[str, Any]:
    """Warm-up rounds, then measured rounds, batch by batch: prepare (in chunks of ``chunk`` messages merged into
    a batch, as latency mode does), archive, rules.  Returns the counts (and the digests)."""
    import cems.service.ingest as ingest

    CPU.clear()
    _current[0] = None
    mark("setup")
    msgs = messages(n_outlets, warm_rounds + rounds, messages_file)
    svc = build(directory, n_outlets, commit_interval_s=commit_interval_s)
    comp = svc.compliance
    assert comp is not None and svc.archive is not None
    sink = _Sink()
    comp._write = sink.write
    stage = ["warm"]
    _split(comp, "_judge", "judge", stage)
    _split(comp, "_commit", "commit", stage, settle=getattr(comp, "settle", None))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(comp.open())
    svc.archive.open()
    tune = getattr(ingest, "_tune_gc", None)
    if tune is not None:
        tune()
    lines_h, evidence_h = hashlib.sha256(), hashlib.sha256()
    merge = getattr(ingest, "_merge", None)
    n_warm = n_outlets * warm_rounds
    for part, todo in (("warm", msgs[:n_warm]), ("run", msgs[n_warm:])):
        stage[0] = part
        for b in _chunks(todo, batch):
            mark(f"{part}.prepare")
            p: Any = None
            seen: set[int] = set()
            for c in _chunks(b, chunk or batch):
                q = svc.prepare(list(c), seen) if chunk else svc.prepare(list(c))
                p = q if p is None else merge(p, q) if merge is not None else _merge_old(p, q)
            mark(f"{part}.archive")
            ok = loop.run_until_complete(svc._archive(p.evidence, None)) if p.evidence else True
            assert ok
            mark(f"{part}.rules")
            loop.run_until_complete(svc.rules_stage(p, None))
            if digest:
                mark(f"{part}.digest")
                for line in p.lines:
                    lines_h.update(line.encode())
                    lines_h.update(b"\n")
                for e in p.evidence:
                    evidence_h.update(repr(e[:7]).encode())
    stage[0] = "end"
    mark("end")
    cpu = {k: round(v, 4) for k, v in CPU.items() if k.startswith("run.") and k != "run.digest"}  # (the service's)
    loop.run_until_complete(comp._flush(None))
    loop.run_until_complete(comp.close())
    svc.archive.close()
    loop.close()
    res: dict[str, Any] = {
        "messages": len(msgs) - n_warm,
        "accepted": svc.stats.accepted,
        "derived_lines": sink.n,
        "rejected": dict(svc.stats.rejected),
        "cpu_s": cpu,
        "cpu_us_per_msg": round(sum(cpu.values()) / max(1, len(msgs) - n_warm) * 1e6, 2),
        "compiled": compiled_modules(),
    }
    if digest:
        res["digest"] = {
            "lines": lines_h.hexdigest(),
            "evidence": evidence_h.hexdigest(),
            "derived": sink.h.hexdigest(),
            **_digest_db(directory / "state" / "compliance.sqlite3"),
        }
    return res


def _split(obj: Any, name: str, label: str, stage: list[str], *, settle: Any = None) -> None:
    """Mark ``obj.name``'s calls as stage ``{part}.{label}`` (the rest of the rules stage stays ``{part}.rules``).
    ``settle``: awaited after each call, inside the stage (the state commit written aside, which a tree with
    ``ComplianceConfig.state_commit_aside`` finishes in the database thread after ``_commit`` returns: waited
    for there, its CPU is counted in the commit stage as an older tree's is)."""
    f = getattr(obj, name)
    if asyncio.iscoroutinefunction(f):

        async def wrapped_async(*args: Any, **kw: Any) -> Any:
            mark(f"{stage[0]}.{label}")
            try:
                res = await f(*args, **kw)
                if settle is not None:
                    await settle()
                return res
            finally:
                mark(f"{stage[0]}.rules")

        setattr(obj, name, wrapped_async)
        return

    def wrapped(*args: Any, **kw: Any) -> Any:
        mark(f"{stage[0]}.{label}")
        try:
            return f(*args, **kw)
        finally:
            mark(f"{stage[0]}.rules")

    setattr(obj, name, wrapped)


def _merge_old(a: Any, b: Any) -> Any:
    for f in ("lines", "good", "items", "commands", "rejects", "fingerprints", "evidence"):
        getattr(a, f).extend(getattr(b, f))
    a.archived += b.archived
    return a


_PART_IR = re.compile(r"^(?:summary|totals):\s+(\d+)", re.M)


def stage_counts(labels_file: Path, profile: str) -> dict[str, int]:
    """Instructions per stage label: callgrind's parts (``profile.1``, ``profile.2``, … and ``profile`` for
    what follows the last marker) in order, matched with the labels the driver printed."""
    labels = [ln.split(" ", 1)[1].strip() for ln in labels_file.read_text().splitlines() if ln.startswith("stage ")]

    def part_no(path: str) -> int:
        tail = path[len(profile) :]
        return int(tail[1:]) if tail.startswith(".") and tail[1:].isdigit() else 1 << 30

    parts = sorted((p for p in glob.glob(profile + "*") if p == profile or part_no(p) < 1 << 30), key=part_no)
    counts: dict[str, int] = {}
    # part 1: before the first marker (interpreter start, imports); part k+1: after the k-th label's marker
    names = ["start", *labels]
    for i, path in enumerate(parts):
        m = _PART_IR.search(Path(path).read_text(errors="replace"))
        if m is None:
            continue
        name = names[i] if i < len(names) else "?"
        counts[name] = counts.get(name, 0) + int(m.group(1))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.cpu_profile", description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path, nargs="?", help="a new directory for the registry, state and evidence")
    ap.add_argument("--outlets", type=int, default=2000)
    ap.add_argument("--warm-rounds", type=int, default=3, help="rounds (a reading per outlet) before the measured")
    ap.add_argument("--rounds", type=int, default=3, help="measured rounds")
    ap.add_argument("--batch", type=int, default=5000, help="messages per batch (the ingester's batch_max)")
    ap.add_argument("--chunk", type=int, default=0, help="prepare in chunks of this many (latency mode); 0: whole")
    ap.add_argument("--commit-interval", type=float, default=0.0, help="ComplianceConfig.commit_interval_s")
    ap.add_argument("--messages", type=Path, help="the messages' file (made when missing; read when it exists)")
    ap.add_argument("--digest", action="store_true", help="print SHA-256 of the outputs")
    ap.add_argument("--count", nargs=2, metavar=("LABELS", "PROFILE"), help="sum a callgrind run's parts per stage")
    a = ap.parse_args(argv)
    if a.count:
        counts = stage_counts(Path(a.count[0]), a.count[1])
        for k, v in counts.items():
            print(f"{k:16s} {v:15,d}")
        return 0
    if a.dir is None:
        ap.error("DIR is required")
    res = run(
        a.dir,
        n_outlets=a.outlets,
        warm_rounds=a.warm_rounds,
        rounds=a.rounds,
        batch=a.batch,
        chunk=a.chunk,
        commit_interval_s=a.commit_interval,
        digest=a.digest,
        messages_file=a.messages,
    )
    print(f"result {res}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
