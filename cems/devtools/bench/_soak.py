"""``cems bench --soak MINUTES``: the ingester under a steady load for minutes to hours, its CPU per message
and memory over time (issue 20; docs/benchmark.md, "Soak mode").

The short benchmark drains a backlog of ≈ 90 000 messages: too short for the costs that only a long run
pays — the 200 000-message duplicate window full and evicting, the compliance state committed and its
SQLite WAL checkpointed again and again, InfluxDB compacting its shards, hours and days closing, warnings
opening and closing.  Here, on the same project-owned Mosquitto and InfluxDB as the benchmark
(``LocalServices``), ``cems run`` (every rule on) takes a load generator's stream (``loadgen soak``: round
robin over the outlets at a fixed rate, a few outlets exceeding three readings in a row now and then) for
MINUTES.  Data time runs faster than the wall clock, so that each outlet sends every 30 s of it (its
registry cadence), and ``cems run`` is given the same accelerated clock for its rules
(``--accelerated-clock``, a hidden benchmark option): hours, days and events close as they would live, every
few minutes instead of every hour.  Meanwhile a bare paho-mqtt subscriber (the
benchmark's baseline consumer) receives the same stream, so that every interval's CPU per message of cems
is compared with the bare consumer's *in the same interval* (a ratio: the machine is shared).

Every ``interval`` seconds a sample: the ingester's CPU seconds and RSS (``/proc``), its counts (``/healthz``:
received, accepted = durable), the load generator's acknowledged count and the bare consumer's count (their
status files), InfluxDB's CPU.  At the end the load generator waits for every PUBACK, the ingester drains,
and the readings stored in InfluxDB are counted: ``lost`` = acknowledged − stored.  Drift: CPU per message of
the last quarter of the run ÷ the first quarter's (and the same for the ratio to the bare consumer), and the
RSS growth from the end of the first quarter to the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cems.devtools.bench import _data
from cems.devtools.bench._run import CEMS_TOPICS, Bench, BenchConfig, _cpu_s, _rss_mb, machine
from cems.errors import CemsError, ServiceError
from cems.sinks.influx import create_database

#: Seconds ``cems run`` may take to start (its first reading stored) in a soak.
_WARM_UP_S = 180.0
#: The rules' lateness (``ComplianceEngine``'s default): an hour closes this long after its end.
_LATENESS_S = 300.0
#: A backlog this large nears the broker's per-client queue limit (``MAX_BACKLOG`` of the benchmark).
_BACKLOG_WARN = 80_000
#: Messages the bare consumer is told to wait for: it runs until stopped.
_FOREVER = 10**12


@dataclass
class Sample:
    """One interval of the soak (figures of the interval that ends at ``t_s``; totals where named so)."""

    t_s: float
    received: int  # total messages the ingester received
    accepted: int  # total accepted and durable
    acked: int  # total the broker acknowledged to the load generator
    baseline_received: int  # total the bare consumer received
    msgs_per_s: float | None  # the ingester's receive rate in the interval
    cems_cpu_us_per_msg: float | None
    baseline_cpu_us_per_msg: float | None
    ratio: float | None  # cems ÷ bare consumer, CPU per message, this interval
    rss_mb: float | None
    backlog: int  # acknowledged by the broker, not yet received by the ingester
    influxdb_cores: float | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return doc
    except (OSError, ValueError):
        return {}


def _per_msg(cpu: float | None, msgs: int) -> float | None:
    return cpu / msgs * 1e6 if cpu is not None and msgs > 0 else None


def drift(samples: Sequence[Sample], cpu: Sequence[tuple[float, float, float, float]]) -> dict[str, Any]:
    """Last quarter ÷ first quarter of the run.  ``cpu``: per sample (cems CPU s, cems messages, bare consumer
    CPU s, bare consumer messages) of its interval."""
    if len(samples) < 4:
        return {"note": "fewer than 4 samples: no drift"}
    end = samples[-1].t_s
    first = [i for i, s in enumerate(samples) if s.t_s <= end / 4]
    last = [i for i, s in enumerate(samples) if s.t_s > end * 3 / 4]
    if not first or not last:
        return {"note": "too few samples per quarter: no drift"}

    def per_msg(ix: list[int], k: int) -> float | None:
        c = sum(cpu[i][k] for i in ix)
        n = sum(cpu[i][k + 1] for i in ix)
        return c / n * 1e6 if n > 0 else None

    c1, c4 = per_msg(first, 0), per_msg(last, 0)
    b1, b4 = per_msg(first, 2), per_msg(last, 2)
    r1 = c1 / b1 if c1 and b1 else None
    r4 = c4 / b4 if c4 and b4 else None
    rss1, rss4 = samples[first[-1]].rss_mb, samples[-1].rss_mb
    return {
        "cems_cpu_us_per_msg_first_quarter": c1,
        "cems_cpu_us_per_msg_last_quarter": c4,
        "cpu_per_msg_drift": c4 / c1 if c1 and c4 else None,
        "ratio_first_quarter": r1,
        "ratio_last_quarter": r4,
        "ratio_drift": r4 / r1 if r1 and r4 else None,
        "rss_mb_end_of_first_quarter": rss1,
        "rss_mb_end": rss4,
        "rss_growth_mb": rss4 - rss1 if rss1 is not None and rss4 is not None else None,
    }


def format_samples(samples: Sequence[Sample]) -> str:
    head = ("t_s", "msg/s", "cems_us/msg", "base_us/msg", "ratio", "rss_mb", "backlog", "stored", "influx_cores")

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else fmt.format(v)

    rows = [
        (f"{s.t_s:.0f}", f(s.msgs_per_s, "{:,.0f}"), f(s.cems_cpu_us_per_msg, "{:.1f}"),
         f(s.baseline_cpu_us_per_msg, "{:.1f}"), f(s.ratio, "{:.2f}"), f(s.rss_mb, "{:.0f}"), f"{s.backlog:,}",
         f"{s.accepted:,}", f(s.influxdb_cores, "{:.2f}"))
        for s in samples
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


class Soak:
    def __init__(self, cfg: BenchConfig, workdir: Path, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.bench = Bench(cfg, workdir, log)
        self.dir = workdir
        self.log = log
        self.samples: list[Sample] = []
        self.cpu: list[tuple[float, float, float, float]] = []
        self.result: dict[str, Any] = {"lost": None, "notes": []}
        self._last_stats: dict[str, Any] = {"received": 0, "accepted": 0}
        self.speed = 1.0
        self.rate = 0.0

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.log(f"note: {text}")

    def load_rate(self) -> float:
        """``--soak-rate``, else half the sustained rate measured now (the benchmark's throughput run)."""
        if self.cfg.soak_rate:
            return float(self.cfg.soak_rate)
        b = self.bench
        b.prepare()
        b.cems()
        sustained = b.res.figures.get("cems_msgs_per_s")
        self.result["measured"] = {k: b.res.figures.get(k) for k in ("cems_msgs_per_s", "cems_cpu_us_per_msg")}
        if not sustained:
            raise ServiceError(f"could not measure the sustained rate ({'; '.join(b.res.notes)}): give --soak-rate")
        self.log(f"soak: sustained {sustained:,.0f} msg/s measured; the soak runs at half of it")
        return float(sustained) / 2.0

    def run(self) -> dict[str, Any]:
        b = self.bench
        minutes = float(self.cfg.soak_minutes or 0.0)
        try:
            b.start_services()
            rate = self.rate = self.load_rate()
            outlets = self.cfg.outlets
            # data time runs so that each outlet sends every 30 s of it (its registry cadence)
            speed = self.cfg.soak_speed or max(1.0, _data.RTD_INTERVAL_S * rate / outlets)
            self.speed = speed
            self.result["config"] = {"minutes": minutes, "rate_msgs_per_s": rate, "outlets": outlets,
                                     "interval_s": self.cfg.soak_interval, "clock_speed": speed}  # fmt: skip
            self._soak(minutes * 60.0, rate, outlets, speed)
        finally:
            b.procs.kill_all()
            with contextlib.suppress(CemsError):
                b.services.down()
        return self.result

    def _soak(self, duration: float, rate: float, outlets: int, speed: float) -> None:
        b, logs = self.bench, self.dir / "logs"
        reg = self.dir / "registry-soak.toml"
        reg.write_text(_data.registry_toml(outlets), encoding="utf-8")
        db, cid, base_cid = "bench_soak", "bench-cems-soak", "bench-soak-baseline"
        create_database(b.influx_url, db)
        b._create_session(cid, CEMS_TOPICS)
        b._create_session(base_cid, CEMS_TOPICS[:1])
        port = _free_port()
        # the accelerated clock of the rules and of the data times: it starts far enough back that the data
        # never pass the wall clock (the ingester rejects data times ahead of it)
        wall = time.time()
        data = wall - (duration + _WARM_UP_S) * speed - 3600.0
        clock = f"{wall:.3f},{data:.3f},{speed:g}"
        argv = b._py(
            "-m", "cems", "run", "--config", str(reg), "--mqtt-url", b.mqtt_url, "--influx-url", b.influx_url,
            "--influx-db", db, "--client-id", cid, "--health-port", str(port), "--accelerated-clock", clock,
            *self.cfg.cems_args,
        )  # fmt: skip
        proc = b.procs.spawn("cems-soak", argv, env=b._cems_env("soak"))
        # one reading before the clock's start: the ingester is connected and consuming once it is stored
        start = datetime.fromtimestamp(data, UTC).replace(microsecond=0)
        warm = b._warm_up("soak", db, proc, start - timedelta(hours=2))
        if warm > _WARM_UP_S:
            raise ServiceError(f"cems run took {warm:.0f} s to start (at most {_WARM_UP_S:.0f} s for the soak's clock)")
        self.log(f"soak: ingester ready after {warm:.1f} s; {duration / 60:g} min at {rate:,.0f} msg/s over "
                 f"{outlets} outlets, data time ×{speed:g} from {start.isoformat()}, a sample every "
                 f"{self.cfg.soak_interval:g} s")  # fmt: skip
        base_status, base_out = logs / "soak-baseline.status", logs / "soak-baseline.json"
        sub = b.procs.spawn("soak-baseline", b._py(
            "-m", "cems.devtools.bench._sub", "--mqtt-url", b.mqtt_url, "--client-id", base_cid,
            "--topic", CEMS_TOPICS[0], "--count", str(_FOREVER), "--timeout", str(duration + 3600),
            "--out", str(base_out), "--status", str(base_status)))  # fmt: skip
        pub_status, pub_out = logs / "soak-loadgen.status", logs / "soak-loadgen.json"
        pub = b.procs.spawn("soak-loadgen", b._py(
            "-m", "cems.devtools.bench.loadgen", "soak", "--mqtt-url", b.mqtt_url, "--client-id", "bench-soak-loadgen",
            "--outlets", str(outlets), "--rate", f"{rate:.1f}", "--duration", str(duration), "--clock", clock,
            "--status", str(pub_status), "--out", str(pub_out)))  # fmt: skip
        health = f"http://127.0.0.1:{port}/healthz"
        t0 = time.monotonic()
        prev = self._probe(proc.pid, sub.pid, health, pub_status, base_status)
        deadline = t0 + duration + 300.0
        print(format_samples([]).splitlines()[0], file=sys.stderr, flush=True)
        # samples while the load runs (the last one at most one interval short of its end)
        while pub.poll() is None and (len(self.samples) + 1) * self.cfg.soak_interval <= duration + 1.0:
            time.sleep(max(0.0, t0 + (len(self.samples) + 1) * self.cfg.soak_interval - time.monotonic()))
            if proc.poll() is not None:
                self.note(f"cems run exited with {proc.returncode} during the soak")
                break
            cur = self._probe(proc.pid, sub.pid, health, pub_status, base_status)
            self._sample(time.monotonic() - t0, prev, cur)
            prev = cur
        if b.procs.wait(pub, max(10.0, deadline - time.monotonic())) is None:
            b.procs.stop(pub)
            raise ServiceError("the load generator did not finish in time")
        if pub.returncode != 0:
            raise ServiceError(f"the load generator failed (exit {pub.returncode}): "
                               f"{(logs / 'soak-loadgen.err').read_text(errors='replace')[-1000:]}")  # fmt: skip
        summary = _read_json(pub_out)
        acked = int(summary.get("acked") or 0)
        if summary.get("published") != acked:
            self.note(f"load generator: {acked} of {summary.get('published')} publishes acknowledged")
        w = b._watch_cems("soak", proc, db, acked + 1, 120.0 + acked / 2000.0)
        b.procs.stop(sub)
        stats = b._stop_cems("soak", proc)
        stored = int(w["stored"])
        self.result.update(
            lost=acked + 1 - stored,
            acknowledged=acked,
            stored=stored - 1,
            loadgen=summary,
            ingest_stats=stats,
            drain_s=w["seconds"],
            samples=[asdict(s) for s in self.samples],
            drift=drift(self.samples, self.cpu),
        )
        self.result["notes"] += [n for n in b.res.notes if n not in self.result["notes"]]

    def _probe(self, pid: int, sub_pid: int, health: str, pub_status: Path, base_status: Path) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            stats = httpx.get(health, timeout=15.0).json()
        if "received" not in stats:  # no answer (the ingester's event loop busy): the last counts hold
            self.note("no answer from /healthz within 15 s: this sample's counts are the previous ones")
            stats = dict(self._last_stats)
        self._last_stats = {"received": stats.get("received", 0), "accepted": stats.get("accepted", 0)}
        return {
            "cpu": _cpu_s(pid),
            "rss": _rss_mb(pid),
            "base_cpu": _cpu_s(sub_pid),
            "influx_cpu": _cpu_s(self.bench.influx_pid),
            "received": int(stats.get("received") or 0),
            "accepted": int(stats.get("accepted") or 0),
            "acked": int(_read_json(pub_status).get("acked") or 0),
            "base": int(_read_json(base_status).get("count") or 0),
            "t": time.monotonic(),
        }

    def _sample(self, t_s: float, a: dict[str, Any], b: dict[str, Any]) -> None:
        def delta(k: str) -> float | None:
            return None if a[k] is None or b[k] is None else float(b[k] - a[k])

        n, nb, wall = b["received"] - a["received"], b["base"] - a["base"], b["t"] - a["t"]
        cpu, bcpu, icpu = delta("cpu"), delta("base_cpu"), delta("influx_cpu")
        c, bc = _per_msg(cpu, n), _per_msg(bcpu, nb)
        s = Sample(
            t_s=round(t_s, 1), received=b["received"], accepted=b["accepted"], acked=b["acked"],
            baseline_received=b["base"], msgs_per_s=n / wall if wall > 0 else None, cems_cpu_us_per_msg=c,
            baseline_cpu_us_per_msg=bc, ratio=c / bc if c and bc else None, rss_mb=b["rss"],
            backlog=max(0, b["acked"] - b["received"]),
            influxdb_cores=icpu / wall if icpu is not None and wall > 0 else None,
        )  # fmt: skip
        lag = s.backlog / self.rate * self.speed if self.rate else None  # data time the ingester is behind
        if lag is not None and lag > _LATENESS_S and not any("lateness" in n for n in self.result["notes"]):
            self.note(
                f"backlog {s.backlog:,} at {t_s:.0f} s ≈ {lag / 60:.0f} min of data time behind the accelerated "
                "clock, more than the rules' 5-min lateness: hours close before their data arrive and every late "
                "batch revises its hour (CPU per message rises); the figures from here on are those of an ingester "
                "catching up, not of a steady state"
            )
        if s.backlog > _BACKLOG_WARN and not any("queue limit" in n for n in self.result["notes"]):
            self.note(
                f"backlog {s.backlog:,} at {t_s:.0f} s: cems does not keep up with the rate, and the broker drops "
                "what is queued beyond its 100 000-message queue limit per client: lower --soak-rate"
            )
        self.samples.append(s)
        self.cpu.append((cpu or 0.0, float(n), bcpu or 0.0, float(nb)))
        print(format_samples([s]).splitlines()[1], file=sys.stderr, flush=True)


def run_soak(cfg: BenchConfig, json_file: str | Path | None = None) -> int:
    """``cems bench --soak``: print the samples and the verdict, write ``json_file``.  Exit 0 when nothing
    was lost (acknowledged = stored), 1 when readings were lost or the run did not complete; set-up errors
    raise :class:`~cems.errors.CemsError` (exit 2 from the command line)."""
    workdir = Path(tempfile.mkdtemp(prefix="cems-soak-"))
    started = datetime.now(UTC)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    before = machine()
    log(f"cems bench --soak {cfg.soak_minutes:g} in {workdir}; load average {before.get('loadavg')}")
    soak = Soak(cfg, workdir, log)
    try:
        res = soak.run()
    finally:
        if not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(format_samples(soak.samples))
    d: dict[str, Any] = res.get("drift") or {}
    lost = res.get("lost")

    def fmt(v: Any, f: str) -> str:
        return "n/a" if v is None else f.format(v)

    print(f"acknowledged {fmt(res.get('acknowledged'), '{:,}')}, stored {fmt(res.get('stored'), '{:,}')}, "
          f"lost {fmt(lost, '{}')}")  # fmt: skip
    print(f"drift (last quarter ÷ first): CPU/msg {fmt(d.get('cpu_per_msg_drift'), '{:.2f}')}, ratio to the "
          f"bare consumer {fmt(d.get('ratio_drift'), '{:.2f}')} ({fmt(d.get('ratio_first_quarter'), '{:.2f}')} → "
          f"{fmt(d.get('ratio_last_quarter'), '{:.2f}')}); RSS {fmt(d.get('rss_mb_end_of_first_quarter'), '{:.0f}')} "
          f"→ {fmt(d.get('rss_mb_end'), '{:.0f}')} MB")  # fmt: skip
    for note in res.get("notes", []):
        print(f"note: {note}")
    doc = {"mode": "soak", **res, "machine": {**before, "loadavg_at_end": machine().get("loadavg")},
           "started": started.isoformat(), "workdir": str(workdir) if cfg.keep else None}  # fmt: skip
    if json_file:
        Path(json_file).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    if cfg.keep:
        print(f"state kept in {workdir}")
    if lost != 0:
        print(f"cems bench --soak: {'lost ' + str(lost) if lost is not None else 'not verified'}", file=sys.stderr)
        return 1
    return 0
