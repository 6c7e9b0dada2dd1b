"""``cems bench``: throughput, loss, alert latency, memory and replay speed against the physical limits.

Everything runs on this machine, on loopback: a project-owned Mosquitto and InfluxDB in a temporary state
directory (``LocalServices``), the load generator as a separate process (``python -m cems.devtools.bench.loadgen``),
and the ingester as ``cems run`` in a subprocess.  Every wait is bounded in time; every process started
here is killed (its process group) in ``finally``.  See docs/benchmark.md.

Throughput is measured by draining the same pre-queued backlog of M QoS 1 messages (persistent session,
queued by the broker while the consumer is away) with three consumers, from the first to the last message:

* ``mosquitto_sub`` (C client): the broker's limit;
* a bare paho-mqtt subscriber that only counts: the limit for a Python consumer;
* ``cems run`` (decode, validate, rules, InfluxDB write, ack after write): first to last reading
  queryable in InfluxDB (``SELECT count(a21026_Rtd)`` polled).

and InfluxDB's own limit for the same readings (``python -m cems.devtools.bench._write``: the lines ``cems run`` would
write, posted with nothing in front), run after the ingester phases so that its compactions do not disturb
them.  CPU per message (consumer process CPU ÷ messages) is reported beside the rates: on a shared machine
it moves far less than wall-clock rates.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cems.config import environ
from cems.devtools.bench import _data
from cems.devtools.local import HOST, INFLUXDB, MOSQUITTO, LocalServices
from cems.errors import CemsError, ServiceError
from cems.sinks.influx import InfluxQueryError, create_database, drop_database, influx_query, quote_ident

ALERT_TOPIC = "cems/alerts/v1/#"
CEMS_TOPICS = ("cems/v1/+/+", "grid/v1/+")
#: Mosquitto's max_queued_messages (LocalServices config) is 100 000 per client: stay below it.
MAX_BACKLOG = 95_000
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

TARGET_RATIO = 0.7
#: issue 20's targets: CPU per message ≤ 2.5× the bare consumer's (same run), alert p99 ≤ 0.5 s at half the
#: sustained rate, peak RSS ≤ 512 MB at 100 000 outlets (earlier issues asked 1.0 s and 1 024 MB)
TARGET_CPU_RATIO = 2.5
TARGET_P99_S = 0.5
TARGET_RSS_MB = 512.0
TARGET_RSS_OUTLETS = 100_000
TARGET_REPLAY = 300_000.0

KEYS = (
    "broker_msgs_per_s",
    "baseline_msgs_per_s",
    "database_msgs_per_s",
    "cems_msgs_per_s",
    "cems_values_per_s",
    "lost",
    "ratio_vs_baseline",
    "ratio_vs_database",
    "baseline_cpu_us_per_msg",
    "cems_cpu_us_per_msg",
    "cpu_per_msg_vs_baseline",
    "alert_latency_p50_s",
    "alert_latency_p99_s",
    "rss_mb",
    "replay_values_per_s",
)


# ----------------------------------------------------------------------------------------- arguments


@dataclass
class BenchConfig:
    outlets: int = 2000
    duration: float = 30.0
    messages: int = 90_000
    rss_outlets: tuple[int, ...] = (10_000, 100_000)
    replay_days: int = 30
    smoke: bool = False
    skip: frozenset[str] = frozenset()
    keep: bool = False
    profile: str | None = None
    cems_args: tuple[str, ...] = ()
    #: ``--soak MINUTES`` (cems.devtools.bench._soak): the minutes of load, its rate (None: half the measured
    #: sustained rate) and the seconds between samples.
    soak_minutes: float | None = None
    soak_rate: float | None = None
    soak_interval: float = 30.0
    soak_speed: float | None = None
    #: ``--alert-rate``: messages/s of the alert run (None: half the sustained rate of the throughput run), so
    #: that runs of two versions compare at the same load.
    alert_rate: float | None = None
    #: ``--rss-month-end``: each memory run again with the rate counter holding a month's end of counted hours (the
    #: previous month and the one before of every outlet: ``python -m cems.devtools.month_end --serve``).
    rss_month_end: bool = False

    @classmethod
    def create(
        cls,
        *,
        smoke: bool = False,
        outlets: int | None = None,
        duration: float | None = None,
        messages: int | None = None,
        rss_outlets: Sequence[int] | None = None,
        replay_days: int | None = None,
        skip: Sequence[str] = (),
        keep: bool = False,
        profile: str | None = None,
        cems_args: Sequence[str] = (),
        soak_minutes: float | None = None,
        soak_rate: float | None = None,
        soak_interval: float | None = None,
        soak_speed: float | None = None,
        alert_rate: float | None = None,
        rss_month_end: bool = False,
    ) -> BenchConfig:
        """The configuration, with the sizes of a full run or, with ``smoke``, tiny ones for what is not given."""
        outlets = outlets if outlets is not None else (20 if smoke else 2000)
        duration = duration if duration is not None else (2.0 if smoke else 30.0)
        messages = messages or int(min(MAX_BACKLOG, max(1000, duration * 3000)))
        rss = tuple(rss_outlets) if rss_outlets else ((200, 1000) if smoke else (10_000, 100_000))
        days = replay_days or (1 if smoke else 30)
        if outlets < 1 or messages < 1 or any(n < 1 for n in rss) or days < 1:
            raise CemsError("--outlets, --messages, --rss-outlets and --replay-days must be positive")
        if messages > MAX_BACKLOG:
            raise CemsError(f"--messages must be at most {MAX_BACKLOG} (the broker's per-client queue limit)")
        if soak_minutes is not None and soak_minutes <= 0:
            raise CemsError("--soak must be a positive number of minutes")
        if any(v is not None and v <= 0 for v in (soak_rate, soak_interval, soak_speed)):
            raise CemsError("--soak-rate, --soak-interval and --soak-speed must be positive")
        if alert_rate is not None and alert_rate <= 0:
            raise CemsError("--alert-rate must be a positive number of messages/s")
        interval = soak_interval or (2.0 if smoke else 30.0)
        return cls(outlets, duration, messages, rss, days, smoke, frozenset(skip), keep, profile, tuple(cems_args),
                   soak_minutes, soak_rate, interval, soak_speed, alert_rate, rss_month_end)  # fmt: skip


# ----------------------------------------------------------------------------------------- processes


def _cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class _RssSampler:
    """Peak VmRSS of a process, sampled every 0.1 s in a thread until :meth:`close`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            r = _rss_mb(self.pid)
            if r is not None:
                self.peak = max(self.peak, r)
            self._stop.wait(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


class _Procs:
    """Processes started by the benchmark: own process groups, killed in :meth:`kill_all`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cpu: dict[int, float] = {}

    def spawn(self, name: str, argv: Sequence[str], *, stdout: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        out = open(stdout or self.logdir / f"{name}.out", "wb")  # noqa: SIM115 - closed below
        err = open(self.logdir / f"{name}.err", "wb")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                env=env, close_fds=True,
            )  # fmt: skip
        finally:
            out.close()
            err.close()
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        """Wait (bounded); reap with wait4 to keep the child's CPU seconds in ``self.cpu``."""
        deadline = time.monotonic() + timeout
        while proc.returncode is None:
            try:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:
                proc.poll()
                break
            if pid == proc.pid:
                self.cpu[proc.pid] = ru.ru_utime + ru.ru_stime
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
        return proc.returncode

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            if self.wait(proc, timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                self.wait(proc, 10.0)
        return proc.returncode

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.poll() is None:
                self.stop(proc, signal.SIGTERM, 10.0)


# ----------------------------------------------------------------------------------------- the bench


@dataclass
class _Drain:
    count: int = 0
    first: float | None = None
    last: float | None = None
    cpu_s: float | None = None
    broker_cpu_s: float | None = None
    wall_s: float | None = None

    @property
    def rate(self) -> float | None:
        if self.first is None or self.last is None or self.count < 2 or self.last <= self.first:
            return None
        return (self.count - 1) / (self.last - self.first)


@dataclass
class _Result:
    figures: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(KEYS))
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, cfg: BenchConfig, workdir: Path, log: Callable[[str], None]) -> None:
        self.cfg = cfg
        self.dir = workdir
        self.log = log
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.procs = _Procs(workdir / "logs")
        self.services = LocalServices(workdir / "services")
        self.res = _Result()
        self.mqtt_url = ""
        self.influx_url = ""
        self.port = 0
        self.broker_pid = 0
        self.influx_pid = 0

    # -- helpers ----------------------------------------------------------------------------------------
    def _py(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def _create_session(self, client_id: str, topics: Sequence[str]) -> None:
        """Register a persistent QoS 1 session, so the broker queues what is published while it is away."""
        argv = ["mosquitto_sub", "-h", HOST, "-p", str(self.port), "-q", "1", "-c", "-i", client_id, "-E"]
        for t in topics:
            argv += ["-t", t]
        proc = self.procs.spawn(f"session-{client_id}", argv)
        if self.procs.wait(proc, 15.0) != 0:
            self.procs.stop(proc)
            raise ServiceError(f"could not create the persistent session {client_id!r}")

    def _loadgen(self, name: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
        out = self.dir / "logs" / f"{name}.json"
        argv = self._py("-m", "cems.devtools.bench.loadgen", *args, "--mqtt-url", self.mqtt_url, "--out", str(out))
        proc = self.procs.spawn(name, argv)
        rc = self.procs.wait(proc, timeout)
        if rc is None:
            self.procs.stop(proc)
            raise ServiceError(f"load generator {name} did not finish within {timeout:.0f} s")
        if rc != 0:
            err = (self.dir / "logs" / f"{name}.err").read_text(errors="replace")[-2000:]
            raise ServiceError(f"load generator {name} failed (exit {rc}): {err}")
        res: dict[str, Any] = json.loads(out.read_text())
        res["cpu_s"] = self.procs.cpu.get(proc.pid)
        return res

    def _count(self, db: str) -> int:
        rows = influx_query(self.influx_url, db, f"SELECT count({quote_ident(_data.COUNT_FIELD)}) FROM cems_reading")
        return int(rows[0]["count"]) if rows else 0

    def _publish_file(self, name: str, path: Path, n: int, rate: float | None = None) -> dict[str, Any]:
        args = ["publish", "--file", str(path), "--client-id", f"bench-loadgen-{name}"]
        if rate:
            args += ["--rate", f"{rate:.1f}"]
        timeout = 120.0 + n / (rate or 2000.0)
        res = self._loadgen(f"loadgen-{name}", args, timeout)
        if res["acked"] != n:
            self.res.notes.append(f"{name}: load generator got {res['acked']} of {n} PUBACKs")
        return res

    def _cems_env(self, phase: str) -> dict[str, str]:
        env = dict(environ())
        env["CEMS_STATE_DIR"] = str(self.dir / f"state-{phase}")
        env.pop("CEMS_CONFIG", None)
        return env

    def _start_cems(
        self, phase: str, registry: Path, db: str, client_id: str, *, month_end: bool = False
    ) -> subprocess.Popen[bytes]:
        # month_end: the rate counter holds the previous month's end of counted hours once started (1 outlet in 20
        # with odd hours: cems.devtools.month_end)
        cems = ("-m", "cems.devtools.month_end", "--profiles", "mix", "--serve") if month_end else ("-m", "cems")
        argv = self._py(
            *cems, "run", "--config", str(registry), "--mqtt-url", self.mqtt_url,
            "--influx-url", self.influx_url, "--influx-db", db, "--client-id", client_id, *self.cfg.cems_args,
        )  # fmt: skip
        return self.procs.spawn(f"cems-{phase}", argv, env=self._cems_env(phase))

    def _stop_cems(self, phase: str, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
        rc = self.procs.stop(proc, signal.SIGTERM, 60.0)
        err = (self.dir / "logs" / f"cems-{phase}.err").read_text(errors="replace")
        stats: dict[str, Any] | None = None
        for line in reversed(err.splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    stats = json.loads(line)
                    break
        if rc not in (0, -signal.SIGTERM) or stats is None:
            self.res.notes.append(f"cems run ({phase}) exited {rc}; stderr tail: {err[-600:]!r}")
        return stats

    def _warm_up(self, phase: str, db: str, proc: subprocess.Popen[bytes], before: datetime) -> float:
        """Publish one reading (outlet 0, data time ``before``) and wait until it is stored: the ingester is
        then connected and consuming.  Returns the seconds it took."""
        path = self.dir / f"warmup-{phase}.txt"
        _data.write_messages(str(path), _data.throughput_messages(1, 1, end=before))
        t0 = time.monotonic()
        self._publish_file(f"warmup-{phase}", path, 1)
        deadline = t0 + 180.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"cems run ({phase}) exited with {proc.returncode} during start-up")
            with contextlib.suppress(InfluxQueryError):
                if self._count(db) >= 1:
                    return time.monotonic() - t0
            time.sleep(0.1)
        raise ServiceError(f"cems run ({phase}) stored nothing within 180 s of start-up")

    # -- phases -------------------------------------------------------------------------------------------
    def start_services(self) -> None:
        infos = self.services.up((MOSQUITTO, INFLUXDB), influx_db="")
        m, i = infos[MOSQUITTO], infos[INFLUXDB]
        self.mqtt_url, self.influx_url, self.port = m.url, i.url, m.port
        self.broker_pid, self.influx_pid = m.pid, i.pid
        conf = Path(m.config_file).read_text() if m.config_file else ""
        limits = {k: v for k, v in re.findall(r"^(max_inflight_messages|max_queued_messages)\s+(\d+)", conf, re.M)}
        self.res.details["broker_config"] = limits
        self.log(f"services: {self.mqtt_url} (pid {m.pid}), {self.influx_url} (pid {i.pid}); broker {limits}")

    def prepare(self) -> None:
        self.registry = self.dir / "registry.toml"
        self.registry.write_text(_data.registry_toml(self.cfg.outlets), encoding="utf-8")
        self.tp_file = self.dir / "throughput.txt"
        self.tp_n = _data.write_messages(
            str(self.tp_file), _data.throughput_messages(self.cfg.outlets, self.cfg.messages)
        )
        size = self.tp_file.stat().st_size
        self.res.details["load"] = {
            "outlets": self.cfg.outlets,
            "messages": self.tp_n,
            "values_per_message": _data.VALUES_PER_MESSAGE,
            "mean_payload_bytes": round(size / self.tp_n - 1 - 30),
            "mix": "half HJ 212 packets (cems/v1/{mn}/hj212), half JSON readings (cems/v1/{mn}/rtd), QoS 1",
        }
        self.log(f"load: {self.tp_n} messages over {self.cfg.outlets} outlets ({size / 1e6:.1f} MB)")

    def _drain_external(self, name: str, argv: list[str], out: Path, parse: Callable[[subprocess.Popen[bytes]], _Drain],
                        timeout: float) -> _Drain:  # fmt: skip
        b0 = _cpu_s(self.broker_pid)
        t0 = time.time()
        proc = self.procs.spawn(name, argv, stdout=out)
        rc = self.procs.wait(proc, timeout)
        if rc is None:
            self.procs.stop(proc)
            self.res.notes.append(f"{name}: did not receive every message within {timeout:.0f} s")
        b1 = _cpu_s(self.broker_pid)
        d = parse(proc)
        d.wall_s = time.time() - t0
        d.cpu_s = self.procs.cpu.get(proc.pid)
        d.broker_cpu_s = None if b0 is None or b1 is None else b1 - b0
        return d

    def broker(self) -> None:
        cid = "bench-broker"
        self._create_session(cid, CEMS_TOPICS[:1])
        pub = self._publish_file("broker", self.tp_file, self.tp_n)
        n = int(pub["acked"])
        out = self.dir / "logs" / "mosquitto_sub.times"
        argv = ["mosquitto_sub", "-h", HOST, "-p", str(self.port), "-q", "1", "-c", "-i", cid,
                "-t", CEMS_TOPICS[0], "-C", str(n), "-F", "%U"]  # fmt: skip

        def parse(_p: subprocess.Popen[bytes]) -> _Drain:
            lines = out.read_text().split()
            times = [float(x) for x in lines if x]
            return _Drain(len(times), times[0] if times else None, times[-1] if times else None)

        d = self._drain_external("mosquitto_sub", argv, out, parse, 60.0 + n / 1000.0)
        self._record_drain("broker", d, pub, n)
        self.res.figures["broker_msgs_per_s"] = d.rate

    def baseline(self) -> None:
        cid = "bench-baseline"
        self._create_session(cid, CEMS_TOPICS[:1])
        pub = self._publish_file("baseline", self.tp_file, self.tp_n)
        n = int(pub["acked"])
        out = self.dir / "logs" / "baseline.json"
        argv = self._py("-m", "cems.devtools.bench._sub", "--mqtt-url", self.mqtt_url, "--client-id", cid,
                        "--topic", CEMS_TOPICS[0], "--count", str(n), "--timeout", str(60.0 + n / 500.0),
                        "--out", str(out))  # fmt: skip

        def parse(_p: subprocess.Popen[bytes]) -> _Drain:
            s = json.loads(out.read_text())
            return _Drain(int(s["count"]), s["first"], s["last"])

        d = self._drain_external("baseline-sub", argv, self.dir / "logs" / "baseline-sub.stdout", parse,
                                 90.0 + n / 500.0)  # fmt: skip
        self._record_drain("baseline", d, pub, n)
        self.res.figures["baseline_msgs_per_s"] = d.rate
        if d.cpu_s is not None and d.count:
            self.res.figures["baseline_cpu_us_per_msg"] = d.cpu_s / d.count * 1e6

    def database(self) -> None:
        """InfluxDB's own limit for this load: the same ``cems_reading`` lines posted with nothing in front."""
        db = "bench_database"
        create_database(self.influx_url, db)
        out = self.dir / "logs" / "database.json"
        argv = self._py("-m", "cems.devtools.bench._write", "--influx-url", self.influx_url, "--db", db,
                        "--config", str(self.registry), "--file", str(self.tp_file), "--out", str(out))  # fmt: skip
        i0 = _cpu_s(self.influx_pid)
        proc = self.procs.spawn("database-writer", argv)
        rc = self.procs.wait(proc, 120.0 + self.tp_n / 500.0)
        i1 = _cpu_s(self.influx_pid)
        if rc is None:
            self.procs.stop(proc)
            self.res.notes.append("database: the writer did not finish in time")
            return
        if not out.exists():
            err = (self.dir / "logs" / "database-writer.err").read_text(errors="replace")[-500:]
            self.res.notes.append(f"database: the writer failed (exit {rc}): {err!r}")
            return
        s = json.loads(out.read_text())
        stored = self._count(db)
        span = float(s["last"]) - float(s["first"])
        rate = int(s["lines"]) / span if span > 0 and stored == int(s["lines"]) else None
        if stored != int(s["lines"]):
            self.res.notes.append(f"database: {stored} of {s['lines']} lines stored ({s.get('errors')})")
        self.res.figures["database_msgs_per_s"] = rate
        cems_rate = self.res.figures.get("cems_msgs_per_s")
        self.res.figures["ratio_vs_database"] = cems_rate / rate if cems_rate and rate else None
        self.res.details["database"] = {
            "lines": s["lines"], "batches": s["batches"], "stored": stored, "write_s": span, "msgs_per_s": rate,
            "influxdb_cores": None if i0 is None or i1 is None or span <= 0 else (i1 - i0) / span,
            "writer_cpu_s": s["post_cpu_s"],
        }  # fmt: skip
        self.log(f"database: {stored}/{s['lines']} lines stored in {span:.2f} s, {rate or 0:,.0f} readings/s")
        drop_database(self.influx_url, db)  # no compaction behind the later phases

    def _record_drain(self, name: str, d: _Drain, pub: dict[str, Any], n: int) -> None:
        span = None if d.first is None or d.last is None else d.last - d.first
        self.res.details[name] = {
            "messages": n,
            "received": d.count,
            "drain_s": span,
            "msgs_per_s": d.rate,
            "consumer_cpu_s": d.cpu_s,
            "consumer_cores": (d.cpu_s / d.wall_s) if d.cpu_s is not None and d.wall_s else None,
            "broker_cpu_s": d.broker_cpu_s,
            "broker_cores": (d.broker_cpu_s / d.wall_s) if d.broker_cpu_s is not None and d.wall_s else None,
            "loadgen_msgs_per_s": pub.get("msgs_per_s"),
            "loadgen_cpu_s": pub.get("cpu_s"),
        }
        if d.count != n:
            self.res.notes.append(f"{name}: received {d.count} of {n} queued messages")
        rate = f"{d.rate:,.0f} msg/s" if d.rate else "n/a"
        self.log(f"{name}: {d.count}/{n} messages drained, {rate} (loadgen {pub.get('msgs_per_s') or 0:,.0f}/s)")

    def _watch_cems(self, phase: str, proc: subprocess.Popen[bytes], db: str, target: int, timeout: float,
                    on_first: Callable[[], None] | None = None) -> dict[str, Any]:  # fmt: skip
        """Poll the stored count and the ingester's RSS until ``target`` readings are stored (bounded)."""
        deadline = time.monotonic() + timeout
        peak_rss = 0.0
        first: tuple[float, int] | None = None
        last_change = time.monotonic()
        count, prev = 0, -1
        cpu0 = {p: _cpu_s(p) for p in (proc.pid, self.broker_pid, self.influx_pid)}
        w0 = time.time()
        t_end: float | None = None
        while time.monotonic() < deadline:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                peak_rss = max(peak_rss, rss)
            if proc.poll() is not None:
                self.res.notes.append(f"cems run ({phase}) exited early with {proc.returncode}")
                break
            try:
                count = self._count(db)
            except InfluxQueryError:
                count = 0
            now = time.time()
            if count != prev:
                prev, last_change = count, time.monotonic()
            if first is None and count > 0:
                first = (now, count)
                if on_first is not None:
                    on_first()
            if count >= target:
                t_end = now
                break
            if time.monotonic() - last_change > 60.0:
                self.res.notes.append(f"{phase}: stored count stuck at {count} of {target} for 60 s")
                break
            time.sleep(0.2)
        wall = time.time() - w0
        cpu = {}
        for name, p in (("cems", proc.pid), ("broker", self.broker_pid), ("influxdb", self.influx_pid)):
            c0, c1 = cpu0[p], _cpu_s(p)
            cpu[f"{name}_cores"] = None if c0 is None or c1 is None or wall <= 0 else (c1 - c0) / wall
        rate = None
        if first is not None and t_end is not None and t_end > first[0]:
            rate = (count - first[1]) / (t_end - first[0])
        elif t_end is not None and t_end > w0 and count > 0:
            # all stored between two polls (a small load on a fast machine): over the whole watch, start-up included
            rate = count / (t_end - w0)
            self.res.notes.append(f"{phase}: every reading stored before a second poll; msg/s over the whole watch")
        return {"stored": count, "target": target, "msgs_per_s": rate, "peak_rss_mb": peak_rss,
                "seconds": wall, **cpu}  # fmt: skip

    def cems(self) -> None:
        cid, db = "bench-cems", "bench_throughput"
        create_database(self.influx_url, db)
        self._create_session(cid, CEMS_TOPICS)
        pub = self._publish_file("cems", self.tp_file, self.tp_n)
        n = int(pub["acked"])
        proc = self._start_cems("throughput", self.registry, db, cid)
        spy: list[subprocess.Popen[bytes]] = []

        def start_profile() -> None:
            if not self.cfg.profile:
                return
            # the venv's own py-spy when its bin directory is not on PATH (`.venv/bin/cems bench --profile F`)
            exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
            if exe is None:
                self.res.notes.append("profile: py-spy not found (pip install py-spy): no profile taken")
                return
            spy.append(self.procs.spawn("py-spy", [exe, "record", "--pid", str(proc.pid), "--rate", "100",
                                                    "--format", "raw", "--output", self.cfg.profile]))  # fmt: skip

        w = self._watch_cems("throughput", proc, db, n, 120.0 + n / 200.0, on_first=start_profile)
        for s in spy:
            self.procs.stop(s, signal.SIGINT, 30.0)
        stats = self._stop_cems("throughput", proc)
        stored = self._count(db)
        lost = n - stored
        vpm = float(_data.VALUES_PER_MESSAGE)
        if stats and stats.get("accepted"):
            vpm = float(stats["values"]) / float(stats["received"] or 1)
        rate = w["msgs_per_s"]
        self.res.figures["cems_msgs_per_s"] = rate
        self.res.figures["cems_values_per_s"] = None if rate is None else rate * vpm
        self.res.figures["lost"] = lost
        base = self.res.figures.get("baseline_msgs_per_s")
        self.res.figures["ratio_vs_baseline"] = rate / base if rate and base else None
        if w.get("cems_cores") is not None and n:
            self.res.figures["cems_cpu_us_per_msg"] = w["cems_cores"] * w["seconds"] / n * 1e6
        self.res.figures["cpu_per_msg_vs_baseline"] = cpu_ratio(self.res.figures)
        self.res.details["cems"] = {"messages": n, **w, "stored_after_stop": stored, "ingest_stats": stats,
                                    "loadgen_msgs_per_s": pub.get("msgs_per_s")}  # fmt: skip
        if stats and stats.get("rejected"):
            self.res.notes.append(f"throughput: cems rejected {stats['rejected']}")
        self.log(f"cems: {stored}/{n} stored, {rate or 0:,.0f} msg/s, lost {lost}, cores {w['cems_cores']}")
        drop_database(self.influx_url, db)  # counted: its compactions are not the alert phase's load

    def _database_quiet(self, limit_s: float = 120.0, idle_cores: float = 0.1, run_s: int = 3) -> float:
        """Wait until InfluxDB has used under ``idle_cores`` of a core for ``run_s`` seconds in a row (the flushes
        and compactions of an earlier phase's burst are over), at most ``limit_s``; the seconds waited."""
        t0 = time.monotonic()
        quiet, last = 0, _cpu_s(self.influx_pid)
        while last is not None and quiet < run_s and time.monotonic() - t0 < limit_s:
            time.sleep(1.0)
            now = _cpu_s(self.influx_pid)
            if now is None:
                break
            quiet = quiet + 1 if now - last < idle_cores else 0
            last = now
        return time.monotonic() - t0

    def alert(self) -> None:
        cid, db = "bench-cems-alert", "bench_alert"
        n_out = self.cfg.outlets
        sustained = self.res.figures.get("cems_msgs_per_s") or 1000.0
        rate = self.cfg.alert_rate or max(20.0, sustained / 2.0)
        step_s = 2.0
        rounds = int(max(8, min(100, math.ceil(self.cfg.duration * rate / n_out))))
        k = max(1, min(400, n_out // 4))
        # the latency of the steady state at that rate, not of the throughput run's aftermath: InfluxDB compacting
        # the burst before it took the cores for tens of seconds (docs/benchmark.md, seventh session)
        settle = self._database_quiet()
        create_database(self.influx_url, db)
        self._create_session(cid, CEMS_TOPICS)
        proc = self._start_cems("alert", self.registry, db, cid)
        db_cpu0 = _cpu_s(self.influx_pid)
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        got: dict[str, float] = {}
        seen: dict[str, int] = {"messages": 0}
        lock = threading.Lock()

        def on_message(_c: Any, _u: Any, m: Any) -> None:
            t = time.time()
            try:
                doc = json.loads(m.payload)
            except ValueError:
                return
            with lock:
                seen["messages"] += 1
                if isinstance(doc, dict) and doc.get("type") == "realtime_warning" and doc.get("mn") not in got:
                    got[str(doc.get("mn"))] = t

        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alert-watch", clean_session=True)
        sub.on_message = on_message
        sub.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(ALERT_TOPIC, qos=1)
        try:
            sub.connect(HOST, self.port, keepalive=60)
            sub.loop_start()
            before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=step_s * rounds + 60)
            warm = self._warm_up("alert", db, proc, before)
            self.log(f"alert: InfluxDB quiet after {settle:.0f} s, ingester ready after {warm:.1f} s; {rounds} rounds "
                     f"× {n_out} outlets at {rate:,.0f} msg/s, {k} outlets raise a real-time warning")  # fmt: skip
            pub = self._loadgen(
                "loadgen-alert",
                ["alert", "--outlets", str(n_out), "--rounds", str(rounds), "--alert-outlets", str(k),
                 "--rate", f"{rate:.1f}", "--step-s", str(step_s), "--client-id", "bench-loadgen-alert"],
                120.0 + rounds * n_out / rate * 2,
            )  # fmt: skip
            sent: dict[str, float] = pub["third_exceeding_publish"]
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                with lock:
                    if all(mn in got for mn in sent):
                        break
                time.sleep(0.1)
            w = self._watch_cems("alert", proc, db, 1 + int(pub["acked"]), 60.0)
            db_cpu1 = _cpu_s(self.influx_pid)
        finally:
            sub.loop_stop()
            with contextlib.suppress(Exception):
                sub.disconnect()
        stats = self._stop_cems("alert", proc)
        with lock:
            lat = sorted(got[mn] - t for mn, t in sent.items() if mn in got)
            # each warning's latency by when its 3rd exceeding reading was sent (seconds from the first): shows
            # whether the tail is spread over the run or a stretch of it (a compaction, a slow commit)
            t_first = min(sent.values(), default=0.0)
            timeline = sorted((round(t - t_first, 2), round(got[mn] - t, 3)) for mn, t in sent.items() if mn in got)
            n_msgs = seen["messages"]
        detail: dict[str, Any] = {
            "rate_msgs_per_s": rate, "rate_given": self.cfg.alert_rate is not None, "rounds": rounds,
            "outlets": n_out, "warnings_expected": len(sent),
            "warnings_received": len(lat), "alert_messages": n_msgs, "loadgen_msgs_per_s": pub.get("msgs_per_s"),
            "stored": w["stored"], "published": pub["acked"], "ingest_stats": stats,
            "database_settle_s": round(settle, 1),
            "database_cpu_s": None if db_cpu0 is None or db_cpu1 is None else round(db_cpu1 - db_cpu0, 2),
        }  # fmt: skip
        if lat:
            detail["latency_min_s"], detail["latency_max_s"] = lat[0], lat[-1]
            detail["latency_timeline"] = timeline
            detail["latency_timeline_t0"] = t_first  # the first send's time.time(), to match other clocks' records
            self.res.figures["alert_latency_p50_s"] = _percentile(lat, 50)
            self.res.figures["alert_latency_p99_s"] = _percentile(lat, 99)
        else:
            present = (Path(__file__).resolve().parents[1] / "service" / "compliance.py").exists()
            self.res.notes.append(
                "alert latency: no realtime_warning alert arrived on cems/alerts/v1/# "
                f"({n_msgs} alert messages in all); cems/service/compliance.py "
                + ("exists but `cems run` published no alert" if present else "does not exist yet (alert path absent)")
            )
        if lat and len(lat) < len(sent):
            self.res.notes.append(f"alert latency: {len(sent) - len(lat)} of {len(sent)} warnings never arrived")
        self.res.details["alert"] = detail
        p50, p99 = self.res.figures["alert_latency_p50_s"], self.res.figures["alert_latency_p99_s"]
        self.log(f"alert: {len(lat)}/{len(sent)} warnings; p50 {p50} s, p99 {p99} s")

    def rss(self) -> None:
        out: dict[str, float | None] = {}
        end_out: dict[str, float | None] = {}
        for n in self.cfg.rss_outlets:
            out[str(n)] = self._rss_run(n, month_end=False)
            if self.cfg.rss_month_end:
                end_out[str(n)] = self._rss_run(n, month_end=True)
        self.res.figures["rss_mb"] = out
        if self.cfg.rss_month_end:
            self.res.figures["rss_mb_month_end"] = end_out

    def _rss_run(self, n: int, *, month_end: bool) -> float | None:
        """Peak RSS of ``cems run`` with ``n`` outlets sending a reading each (``month_end``: holding a month's end of
        counted hours from its start)."""
        sustained = self.res.figures.get("cems_msgs_per_s")
        tag = f"{n}-month-end" if month_end else f"{n}"
        phase, db, cid = f"rss{tag}", f"bench_rss_{tag.replace('-', '_')}", f"bench-cems-rss-{tag}"
        reg = self.dir / f"registry-{n}.toml"
        reg.write_text(_data.registry_toml(n), encoding="utf-8")
        path = self.dir / f"rss-{n}.txt"
        end = datetime.now(UTC).replace(microsecond=0)
        m = _data.write_messages(str(path), _data.throughput_messages(n, n, end=end))
        create_database(self.influx_url, db)
        self._create_session(cid, CEMS_TOPICS)
        t0 = time.monotonic()
        proc = self._start_cems(phase, reg, db, cid, month_end=month_end)
        sampler = _RssSampler(proc.pid)
        try:
            warm = self._warm_up(phase, db, proc, end - timedelta(seconds=3600))
            idle_rss = _rss_mb(proc.pid)
            # keep the broker's queue for the ingester well under its 100 000 limit
            rate = max(2000.0, 2.0 * sustained) if sustained else 5000.0
            pub = self._publish_file(phase, path, m, rate)
            w = self._watch_cems(phase, proc, db, 1 + int(pub["acked"]), 120.0 + n / 100.0)
        finally:
            sampler.close()
        stats = self._stop_cems(phase, proc)
        peak: float = round(max(sampler.peak, w["peak_rss_mb"]), 1)
        lost = int(pub["acked"]) + 1 - int(w["stored"])
        self.res.details[phase] = {"outlets": n, "month_end": month_end, "peak_rss_mb": peak,
                                   "rss_after_startup_mb": idle_rss, "startup_s": warm,
                                   "total_s": time.monotonic() - t0, "lost": lost, "msgs_per_s": w["msgs_per_s"],
                                   "ingest_stats": stats}  # fmt: skip
        if lost:
            self.res.notes.append(f"memory run with {n} outlets{' at a month end' if month_end else ''}: {lost} "
                                  "readings not stored")  # fmt: skip
        when = " at a month's end" if month_end else ""
        self.log(f"rss: {n} outlets{when} → peak {peak} MB (after start-up {idle_rss} MB), lost {lost}")
        return peak

    def replay(self) -> None:
        days = self.cfg.replay_days
        reg = self.dir / "registry-replay.toml"
        reg.write_text(_data.registry_toml(1), encoding="utf-8")
        path = self.dir / "replay.hj212"
        with open(path, "w", encoding="ascii") as f:
            for line in _data.replay_lines(days):
                f.write(line + "\n")
        proc = self.procs.spawn("replay", self._py("-m", "cems", "replay", "--config", str(reg), "--input", str(path)))
        rc = self.procs.wait(proc, 600.0)
        err = (self.dir / "logs" / "replay.err").read_text(errors="replace")
        m = re.search(r"replay: (\d+) lines, (\d+) readings, (\d+) values in ([\d.]+)s \(([\d,]+) values/s\)", err)
        if rc != 0 or m is None:
            self.procs.stop(proc)
            self.res.notes.append(f"cems replay failed (exit {rc}): {err[-500:]!r}")
            return
        values, secs = int(m.group(3)), float(m.group(4))
        rate = values / secs if secs > 0 else float(m.group(5).replace(",", ""))
        self.res.figures["replay_values_per_s"] = rate
        self.res.details["replay"] = {"days": days, "lines": int(m.group(1)), "readings": int(m.group(2)),
                                      "values": values, "engine_s": secs,
                                      "process_cpu_s": self.procs.cpu.get(proc.pid)}  # fmt: skip
        self.log(f"replay: {values} values in {secs:.2f} s → {rate:,.0f} values/s")

    # -- all ----------------------------------------------------------------------------------------------
    def run(self) -> _Result:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("broker", self.broker), ("baseline", self.baseline), ("cems", self.cems), ("alert", self.alert),
            ("database", self.database), ("rss", self.rss), ("replay", self.replay),
        ]  # fmt: skip
        try:
            self.start_services()
            self.prepare()
            for name, fn in steps:
                if name == "replay":
                    # offline: the broker and the database are not needed, and their background work
                    # (InfluxDB compactions of the earlier phases) would share the cores
                    with contextlib.suppress(CemsError):
                        self.services.down()
                if name in self.cfg.skip:
                    self.res.notes.append(f"{name}: skipped (--skip)")
                    continue
                t0 = time.monotonic()
                try:
                    fn()
                except (CemsError, OSError, ValueError, KeyError) as e:
                    self.res.notes.append(f"{name}: failed: {e}")
                    self.log(f"{name}: FAILED: {e}")
                self.res.details.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)
        finally:
            self.procs.kill_all()
            with contextlib.suppress(CemsError):
                self.services.down()
        return self.res


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as numpy's default) of sorted values."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


# ----------------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    return info


def evaluate(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows of (figure, value, target, PASS/FAIL/-)."""

    def num(v: Any, fmt: str = "{:,.0f}") -> str:
        return "null" if v is None else fmt.format(v)

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    ratio, lost = fig.get("ratio_vs_baseline"), fig.get("lost")
    p99, cpu = fig.get("alert_latency_p99_s"), fig.get("cpu_per_msg_vs_baseline")
    rss: dict[str, Any] = fig.get("rss_mb") or {}
    replay = fig.get("replay_values_per_s")
    rows = [
        ("broker_msgs_per_s", num(fig.get("broker_msgs_per_s")), "(broker limit)", "-"),
        ("baseline_msgs_per_s", num(fig.get("baseline_msgs_per_s")), "(Python consumer limit)", "-"),
        ("database_msgs_per_s", num(fig.get("database_msgs_per_s")), "(InfluxDB limit)", "-"),
        ("cems_msgs_per_s", num(fig.get("cems_msgs_per_s")), "", "-"),
        ("cems_values_per_s", num(fig.get("cems_values_per_s")), "", "-"),
        ("lost", num(lost, "{}"), "= 0", verdict(None if lost is None else lost == 0)),
        ("ratio_vs_baseline", num(ratio, "{:.2f}"), f">= {TARGET_RATIO} (lost = 0)",
         verdict(None if ratio is None else (ratio >= TARGET_RATIO and lost == 0))),
        ("ratio_vs_database", num(fig.get("ratio_vs_database"), "{:.2f}"), "", "-"),
        ("baseline_cpu_us_per_msg", num(fig.get("baseline_cpu_us_per_msg"), "{:.1f}"), "", "-"),
        ("cems_cpu_us_per_msg", num(fig.get("cems_cpu_us_per_msg"), "{:.1f}"), "", "-"),
        ("cpu_per_msg_vs_baseline", num(cpu, "{:.2f}"), f"<= {TARGET_CPU_RATIO} (× bare consumer)",
         verdict(None if cpu is None else cpu <= TARGET_CPU_RATIO)),
        ("alert_latency_p50_s", num(fig.get("alert_latency_p50_s"), "{:.3f}"), "", "-"),
        ("alert_latency_p99_s", num(p99, "{:.3f}"), f"<= {TARGET_P99_S}",
         verdict(None if p99 is None else p99 <= TARGET_P99_S)),
    ]  # fmt: skip
    for n, mb in rss.items():
        target = int(n) >= TARGET_RSS_OUTLETS
        rows.append((f"rss_mb ({int(n):,} outlets)", num(mb, "{:.0f}"), f"<= {TARGET_RSS_MB:.0f}" if target else "",
                     verdict(None if mb is None or not target else mb <= TARGET_RSS_MB)))  # fmt: skip
    if not rss:
        rows.append(("rss_mb", "null", f"<= {TARGET_RSS_MB:.0f} at 100,000 outlets", "-"))
    for n, mb in (fig.get("rss_mb_month_end") or {}).items():
        target = int(n) >= TARGET_RSS_OUTLETS
        rows.append((f"rss_mb at a month's end ({int(n):,} outlets)", num(mb, "{:.0f}"),
                     f"<= {TARGET_RSS_MB:.0f}" if target else "",
                     verdict(None if mb is None or not target else mb <= TARGET_RSS_MB)))  # fmt: skip
    rows.append(("replay_values_per_s", num(replay), f">= {TARGET_REPLAY:,.0f}",
                 verdict(None if replay is None else replay >= TARGET_REPLAY)))  # fmt: skip
    return rows


def cpu_ratio(figures: dict[str, Any]) -> float | None:
    """cems's CPU per message ÷ the bare consumer's, both measured in the same run: the speed figure that
    compares across machines (a wall-clock rate depends on the cores and on what else runs)."""
    cems, base = figures.get("cems_cpu_us_per_msg"), figures.get("baseline_cpu_us_per_msg")
    return float(cems) / float(base) if cems and base else None


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("figure", "value", "target", "result")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    fmt = "  ".join(f"{{:{'>' if i == 1 else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


def run_bench(cfg: BenchConfig, json_file: str | Path | None = None) -> int:
    """``cems bench``: run every measurement, print the table, write ``json_file``.

    Returns the exit code: 0 when every target with a verdict passed (a smoke run judges only ``lost``: its
    sizes are too small for the performance targets), 1 when readings were lost or a target was missed.
    Set-up errors raise :class:`~cems.errors.CemsError` (exit 2 from the command line)."""
    workdir = Path(tempfile.mkdtemp(prefix="cems-bench-"))
    started = datetime.now(UTC)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    before = machine()
    log(f"cems bench in {workdir} ({'smoke' if cfg.smoke else 'full'}); load average {before.get('loadavg')}")
    try:
        res = Bench(cfg, workdir, log).run()
    finally:
        if not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = evaluate(res.figures)
    print(format_table(rows))
    for note in res.notes:
        print(f"note: {note}")
    doc: dict[str, Any] = {
        **res.figures,
        "targets": {r[0]: {"value": r[1], "target": r[2], "result": r[3]} for r in rows},
        "config": {"outlets": cfg.outlets, "duration_s": cfg.duration, "messages": cfg.messages,
                   "rss_outlets": list(cfg.rss_outlets), "rss_month_end": cfg.rss_month_end,
                   "replay_days": cfg.replay_days, "smoke": cfg.smoke},
        "machine": {**before, "loadavg_at_end": machine().get("loadavg")},
        "started": started.isoformat(),
        "details": res.details,
        "notes": res.notes,
        "workdir": str(workdir) if cfg.keep else None,
    }  # fmt: skip
    if json_file:
        Path(json_file).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    if cfg.keep:
        print(f"state kept in {workdir}")
    lost = res.figures.get("lost")
    if isinstance(lost, int) and lost != 0:
        print(f"cems bench: {lost} readings lost", file=sys.stderr)
        return 1
    failed = [r[0] for r in rows if r[3] == "FAIL"]
    if failed and not cfg.smoke:
        print(f"cems bench: targets missed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
