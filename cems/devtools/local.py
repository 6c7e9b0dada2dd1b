"""Project-owned local services: Mosquitto, InfluxDB 1.x and (optionally) VictoriaMetrics.

Every service runs on 127.0.0.1 with a GENERATED config file, its own data directory and free ports
(picked by binding port 0, never the system defaults such as 1883/8086/8088), under a state directory
(``$CEMS_STATE_DIR/services`` or ``~/.local/state/cems/services``)::

    services/
      state.json                 pids + ports, so ``status``/``down`` work from another process
      mosquitto/mosquitto.conf   mosquitto/data/   mosquitto/mosquitto.log
      influxdb/influxdb.conf     influxdb/data/{meta,data,wal}/   influxdb/influxdb.log
      victoria-metrics/data/     victoria-metrics/victoria-metrics.log
      mosquitto-secure/...       optional second broker with passwords, ACL and TLS
                                 (``start_mosquitto_secure``; docs/security.md)

Processes are detached (own session, stdout/stderr appended to the log file) and outlive the Python
process that started them until ``down()``/``stop_service()``. ``restart()`` reuses the same port and data
directory, so chaos tests can stop/kill the broker or the database and expect persistence.

Binaries come from apt (``mosquitto``, ``influxdb``, ``victoria-metrics``); ``CEMS_MOSQUITTO_BIN``,
``CEMS_INFLUXD_BIN`` and ``CEMS_VICTORIA_METRICS_BIN`` override the lookup.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from cems.config import environ, private_dir, state_dir
from cems.errors import ServiceError
from cems.sinks.influx import create_database

__all__ = [
    "HOST",
    "INFLUXDB",
    "MOSQUITTO",
    "MOSQUITTO_SECURE",
    "SERVICE_NAMES",
    "VICTORIA",
    "LocalServices",
    "ServiceInfo",
    "canonical_name",
    "default_state_dir",
    "find_binary",
    "format_status",
    "missing_binaries",
    "port_open",
    "wait_for_port",
]

HOST = "127.0.0.1"
MOSQUITTO = "mosquitto"
INFLUXDB = "influxdb"
VICTORIA = "victoria-metrics"
SERVICE_NAMES: tuple[str, ...] = (MOSQUITTO, INFLUXDB, VICTORIA)
MOSQUITTO_SECURE = "mosquitto-secure"
"""A second, secured broker (passwords, ACL, optional TLS): ``LocalServices.start_mosquitto_secure``.
Not part of ``SERVICE_NAMES``/``up()``: only started on request, next to the plain one."""
_ALL_NAMES: tuple[str, ...] = (*SERVICE_NAMES, MOSQUITTO_SECURE)
_ALIASES = {
    "mqtt": MOSQUITTO,
    "broker": MOSQUITTO,
    "influx": INFLUXDB,
    "influxd": INFLUXDB,
    "victoria": VICTORIA,
    "victoriametrics": VICTORIA,
    "vm": VICTORIA,
}
_SCHEMES = {MOSQUITTO: "mqtt", MOSQUITTO_SECURE: "mqtt", INFLUXDB: "http", VICTORIA: "http"}

START_TIMEOUT = 60.0
"""Seconds a service may take to answer its health check after being spawned."""
STOP_TIMEOUT = 20.0
"""Seconds between SIGTERM and SIGKILL."""
MOSQUITTO_AUTOSAVE_SECONDS = 2
"""Broker persistence autosave period (also saved on SIGTERM); bounds what a SIGKILL can lose."""


@dataclass(frozen=True)
class _Binary:
    exe: str
    apt_package: str
    env_var: str


_BINARIES = {
    MOSQUITTO: _Binary("mosquitto", "mosquitto", "CEMS_MOSQUITTO_BIN"),
    MOSQUITTO_SECURE: _Binary("mosquitto", "mosquitto", "CEMS_MOSQUITTO_BIN"),
    INFLUXDB: _Binary("influxd", "influxdb", "CEMS_INFLUXD_BIN"),
    VICTORIA: _Binary("victoria-metrics", "victoria-metrics", "CEMS_VICTORIA_METRICS_BIN"),
}


@dataclass(frozen=True)
class ServiceInfo:
    """A running service. ``url`` is ``mqtt://host:port`` for Mosquitto, ``http://host:port`` otherwise."""

    name: str
    pid: int
    host: str
    port: int
    url: str
    data_dir: Path
    log_file: Path
    config_file: Path | None = None
    extra_ports: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _Record:
    """What state.json keeps per service; ``pid`` is None while stopped (port + data dir are kept)."""

    name: str
    host: str
    port: int
    data_dir: str
    log_file: str
    config_file: str | None = None
    pid: int | None = None
    exe: str | None = None
    extra_ports: dict[str, int] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    #: mosquitto-secure only: passwd_file, acl_file and (TLS) tls_ca, tls_cert, tls_key.
    options: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{_SCHEMES[self.name]}://{self.host}:{self.port}"

    def info(self) -> ServiceInfo:
        assert self.pid is not None
        return ServiceInfo(
            name=self.name,
            pid=self.pid,
            host=self.host,
            port=self.port,
            url=self.url,
            data_dir=Path(self.data_dir),
            log_file=Path(self.log_file),
            config_file=Path(self.config_file) if self.config_file else None,
            extra_ports=dict(self.extra_ports),
        )


# --------------------------------------------------------------------------------------------------
# small helpers (also used by tests and the CLI)


def default_state_dir() -> Path:
    """``STATE_DIR/services`` (:func:`cems.config.state_dir`)."""
    return state_dir() / "services"


def canonical_name(name: str) -> str:
    """Map aliases (``victoria``, ``influx``...) to a service name; ServiceError if unknown."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _ALL_NAMES:
        raise ServiceError(f"unknown service {name!r}; known: {', '.join(_ALL_NAMES)}")
    return key


def find_binary(name: str) -> str:
    """Absolute path of the service's binary; ServiceError naming the apt package if it is missing."""
    spec = _BINARIES[canonical_name(name)]
    env = environ()
    override = env.get(spec.env_var)
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return override
        raise ServiceError(
            f"{spec.env_var}={override!r} is not an executable file "
            f"(unset it, or install the binary with `apt-get install {spec.apt_package}`)"
        )
    search = os.pathsep.join([env.get("PATH", os.defpath), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    found = shutil.which(spec.exe, path=search)
    if found is None:
        raise ServiceError(
            f"{spec.exe} not found on PATH or in /usr/sbin: install it with "
            f"`apt-get install {spec.apt_package}` (or point {spec.env_var} at it)"
        )
    return found


def missing_binaries(which: Iterable[str]) -> dict[str, str]:
    """``{service: hint}`` for every service in ``which`` whose binary cannot be found."""
    missing: dict[str, str] = {}
    for name in which:
        try:
            find_binary(name)
        except ServiceError as exc:
            missing[canonical_name(name)] = str(exc)
    return missing


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0, *, open_: bool = True) -> bool:
    """Wait until host:port accepts connections (or, with ``open_=False``, refuses them).

    Returns whether the wanted state was reached within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port, timeout=0.5) == open_:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def format_status(infos: Mapping[str, ServiceInfo | None]) -> str:
    """One line per service: name, running/stopped, URL, pid, data dir and log file."""
    lines: list[str] = []
    for name, info in infos.items():
        if info is None:
            lines.append(f"{name:<17} stopped")
        else:
            lines.append(
                f"{name:<17} running  {info.url:<24} pid {info.pid:<8} data {info.data_dir}  log {info.log_file}"
            )
    return "\n".join(lines) if lines else "no services"


# --------------------------------------------------------------------------------------------------
# process helpers

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Popen objects of services started by this process, kept so they are reaped (no zombies/warnings)."""


def _pid_alive(pid: int, exe: str | None = None) -> bool:
    """True if ``pid`` is a live (non-zombie) process, running ``exe`` when given (guards pid reuse)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        # Our own child: poll() reaps it. (Its /proc cmdline may still be Python's between fork and exec.)
        if proc.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc_dir = Path("/proc") / str(pid)
    try:
        stat = (proc_dir / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            return False
        if exe is not None:
            argv0 = (proc_dir / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            if Path(argv0).name != Path(exe).name:
                return False
    except (OSError, IndexError):
        pass
    return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_dead(pid: int, exe: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, exe):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, so they differ, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_bindable(port: int) -> bool:
    """True if a server could listen on HOST:port now (SO_REUSEADDR, like the services themselves)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in tail) or "(log empty)"


def _mqtt_probe(host: str, port: int, timeout: float, *, refused_ok: bool = False) -> bool:
    """MQTT 3.1.1 CONNECT (clean session, broker-assigned id) → CONNACK accepted → DISCONNECT.

    ``refused_ok``: a CONNACK refusing the anonymous probe (bad credentials / not authorised) also counts
    as healthy (the secured broker answers, and refuses anonymous clients as it should)."""
    connect = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(connect)
            ack = b""
            while len(ack) < 4:
                chunk = s.recv(4 - len(ack))
                if not chunk:
                    return False
                ack += chunk
            with contextlib.suppress(OSError):
                s.sendall(b"\xe0\x00")
            if refused_ok and ack[:3] == b"\x20\x02\x00" and ack[3] in (4, 5):
                return True
            return ack == b"\x20\x02\x00\x00"
    except OSError:
        return False


def _http_status(url: str, timeout: float) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def _probe(rec: _Record, timeout: float = 2.0) -> bool:
    if rec.name == MOSQUITTO:
        return _mqtt_probe(rec.host, rec.port, timeout)
    if rec.name == MOSQUITTO_SECURE:
        return _mqtt_probe(rec.host, rec.port, timeout, refused_ok=True)
    if rec.name == INFLUXDB:
        return _http_status(f"{rec.url}/ping", timeout) == 204
    return _http_status(f"{rec.url}/health", timeout) == 200


# --------------------------------------------------------------------------------------------------
# generated configs


def _mosquitto_conf(rec: _Record) -> str:
    user = ""
    if os.geteuid() == 0:
        user = (
            "\n# Running as root: mosquitto 2.0 would otherwise drop to user 'mosquitto', which cannot\n"
            "# write the persistence file in this root-owned state directory.\nuser root\n"
        )
    if rec.name == MOSQUITTO_SECURE:
        from cems.security import mosquitto_auth_conf

        opts = rec.options
        tls = (opts["tls_ca"], opts["tls_cert"], opts["tls_key"]) if "tls_ca" in opts else None
        listeners = (
            "# Secured broker: no anonymous clients, per-user passwords and ACL (docs/security.md).\n"
            + mosquitto_auth_conf(
                passwd_file=opts["passwd_file"],
                acl_file=opts["acl_file"],
                port=rec.port,
                bind=rec.host,
                tls=tls,
                tls_port=rec.extra_ports.get("tls", 0),
            )
        )
    else:
        listeners = (
            f"listener {rec.port} {rec.host}\n"
            "# Local development broker bound to 127.0.0.1 only: no credentials needed.\n"
            "allow_anonymous true\n"
        )
    return f"""\
# Generated by cems.devtools.local on every start: edits are overwritten.
# Project-owned broker for cems development and tests: loopback only, free port (never 1883).

{listeners}{user}
# Persistence: persistent sessions (clean_session=False subscribers), their subscriptions, queued
# QoS 1/2 messages and retained messages survive a broker restart. The database is written on clean
# shutdown (SIGTERM) and every {MOSQUITTO_AUTOSAVE_SECONDS} s, so a SIGKILL loses at most that much.
persistence true
persistence_location {rec.data_dir}/
persistence_file mosquitto.db
autosave_interval {MOSQUITTO_AUTOSAVE_SECONDS}
autosave_on_changes false
# persistent_client_expiration is left unset: persistent clients never expire (MQTT spec behaviour).

# Up to 20000 unacknowledged outgoing QoS 1/2 messages per client (default 20).  The ingester acknowledges
# a message only once its data and the rules' state are durable (a group commit every 0.25 s), so the
# window must hold what arrives in that time at full rate; 20 would cap it near 80 messages/s.
max_inflight_messages 20000
# No byte cap on the in-flight window; the message count above is the limit.
max_inflight_bytes 0
# Queue up to 100000 QoS 1/2 messages per offline or slow persistent client (default 1000) so an
# ingester restart or a chaos test does not silently drop readings; beyond that mosquitto drops.
max_queued_messages 100000
# No byte cap on that queue (0 = unlimited); max_queued_messages is the only bound.
max_queued_bytes 0
# QoS 0 is fire-and-forget: not queued for offline clients (default, MQTT spec behaviour).
queue_qos0_messages false
# Packets over 10 MiB disconnect the client. Far above any legitimate reading (a few KiB), so the
# ingester's own size check (which dead-letters with a reason) is what rejects oversize payloads;
# this only guards against runaway clients. message_size_limit stays unset (0): it would drop
# oversize QoS 1 messages silently after acknowledging them (and mosquitto 2.0 deprecates it).
max_packet_size 10485760
# Disable Nagle's algorithm: lower per-message latency for small MQTT packets.
set_tcp_nodelay true

# Logs go to stderr (unbuffered), which the launcher appends to {rec.log_file}.
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S
connection_messages true
"""


def _influxdb_conf(rec: _Record) -> str:
    data = Path(rec.data_dir)
    meta_dir, tsm_dir, wal_dir = data / "meta", data / "data", data / "wal"
    rpc = rec.extra_ports["rpc"]
    return f"""\
# Generated by cems.devtools.local on every start: edits are overwritten.
# Project-owned InfluxDB 1.x for cems development and tests: loopback only, free ports.

# Never phone home (upstream key, and the key Debian's build uses).
reporting-disabled = true
reporting-enabled = false
# RPC service used by backup/restore; its default 127.0.0.1:8088 may be taken by a system influxd.
bind-address = "{rec.host}:{rpc}"

[meta]
  dir = "{meta_dir}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{tsm_dir}"
  wal-dir = "{wal_dir}"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  cache-max-memory-size = 1073741824
  cache-snapshot-memory-size = 26214400
  cache-snapshot-write-cold-duration = "10m0s"
  compact-full-write-cold-duration = "4h0m0s"
  # 0 = no limit: load tests create many series.
  max-series-per-database = 0
  max-values-per-tag = 0
  trace-logging-enabled = false

[coordinator]
  write-timeout = "10s"
  max-concurrent-queries = 0
  query-timeout = "0s"
  log-queries-after = "0s"
  max-select-point = 0
  max-select-series = 0
  max-select-buckets = 0

[retention]
  enabled = true
  check-interval = "30m0s"

[shard-precreation]
  enabled = true
  check-interval = "10m0s"
  advance-period = "30m0s"

[monitor]
  # No _internal database: keeps test databases the only ones.
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{rec.host}:{rec.port}"
  auth-enabled = false
  # No per-request access log: a load test would fill the disk.
  log-enabled = false
  suppress-write-log = true
  write-tracing = false
  pprof-enabled = false
  https-enabled = false
  max-row-limit = 0
  max-connection-limit = 0
  unix-socket-enabled = false
  max-body-size = 25000000
  max-concurrent-write-limit = 0
  max-enqueued-write-limit = 0

[logging]
  format = "auto"
  level = "info"
  suppress-logo = true

[ifql]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""


# --------------------------------------------------------------------------------------------------
# the state directory lock (flock across processes, re-entrant within one)


class _DirLock:
    _registry: dict[str, _DirLock] = {}  # noqa: RUF012 - shared on purpose
    _guard = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @classmethod
    def for_path(cls, path: Path) -> _DirLock:
        key = str(path.resolve())
        with cls._guard:
            lock = cls._registry.get(key)
            if lock is None:
                lock = cls._registry[key] = cls(path)
            return lock

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.rlock:
            if self.depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self.fd = fd
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                    os.close(self.fd)
                    self.fd = None


# --------------------------------------------------------------------------------------------------


class LocalServices:
    """Start, stop and inspect the project-owned services living under ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, *, start_timeout: float = START_TIMEOUT) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.state_file = self.state_dir / "state.json"
        self.start_timeout = start_timeout
        self._lock = _DirLock.for_path(self.state_dir / ".lock")

    # ---- state file

    def _load(self) -> dict[str, _Record]:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ServiceError(f"unreadable state file {self.state_file}: {exc} (delete it)") from exc
        records: dict[str, _Record] = {}
        try:
            for name, data in raw.get("services", {}).items():
                records[name] = _Record(**data)
        except (TypeError, AttributeError) as exc:
            raise ServiceError(f"invalid state file {self.state_file}: {exc} (delete it)") from exc
        return records

    def _save(self, records: Mapping[str, _Record]) -> None:
        private_dir(self.state_dir)  # 0700: service state, logs and data
        tmp = self.state_file.with_suffix(f".tmp{os.getpid()}")
        payload = {"version": 1, "services": {name: asdict(rec) for name, rec in records.items()}}
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    def _update(self, rec: _Record) -> None:
        records = self._load()
        records[rec.name] = rec
        self._save(records)

    # ---- public API

    def up(self, which: Sequence[str] = (MOSQUITTO, INFLUXDB), *, influx_db: str = "cems") -> dict[str, ServiceInfo]:
        """Start every service in ``which`` (reusing any that already runs healthy) and, for InfluxDB,
        make sure database ``influx_db`` exists. Returns name → ServiceInfo."""
        infos: dict[str, ServiceInfo] = {}
        with self._lock.hold():
            for raw in which:
                name = canonical_name(raw)
                if name == INFLUXDB:
                    infos[name] = self.start_influxdb(databases=(influx_db,) if influx_db else ())
                else:
                    infos[name] = self.start(name)
        return infos

    def start_mosquitto(self, port: int | None = None) -> ServiceInfo:
        return self.start(MOSQUITTO, port)

    def start_influxdb(self, port: int | None = None, *, databases: Iterable[str] = ("cems",)) -> ServiceInfo:
        return self.start(INFLUXDB, port, databases=databases)

    def start_victoria(self, port: int | None = None) -> ServiceInfo:
        return self.start(VICTORIA, port)

    def start_mosquitto_secure(
        self,
        port: int | None = None,
        *,
        passwd_file: str | Path,
        acl_file: str | Path,
        tls: tuple[str | Path, str | Path, str | Path] | None = None,
        tls_port: int | None = None,
    ) -> ServiceInfo:
        """Start the secured broker ``mosquitto-secure`` (a separate service next to the plain one):
        ``allow_anonymous false``, ``password_file``/``acl_file`` (see :mod:`cems.security`) and, with
        ``tls`` = (ca, cert, key), a TLS listener on ``tls_port`` (default: a free port), reported as
        ``extra_ports["tls"]``. ``url`` is the plain listener (credentials needed). Idempotent; a running
        instance started with other files is restarted with the new ones."""
        options = {"passwd_file": str(Path(passwd_file).resolve()), "acl_file": str(Path(acl_file).resolve())}
        if tls is not None:
            ca, cert, key = (str(Path(f).resolve()) for f in tls)
            options.update(tls_ca=ca, tls_cert=cert, tls_key=key)
        return self._start(MOSQUITTO_SECURE, port, options=options, tls_port=tls_port)

    def start(self, name: str, port: int | None = None, *, databases: Iterable[str] = ()) -> ServiceInfo:
        """Start one service (idempotent). A stopped service restarts on its recorded port and data dir
        when that port is still free; ``port`` forces a port (error if it is busy)."""
        return self._start(name, port, databases=databases)

    def _start(
        self,
        name: str,
        port: int | None = None,
        *,
        databases: Iterable[str] = (),
        options: dict[str, str] | None = None,
        tls_port: int | None = None,
    ) -> ServiceInfo:
        name = canonical_name(name)
        exe = find_binary(name)
        with self._lock.hold():
            rec = self._load().get(name)
            if name == MOSQUITTO_SECURE and options is None and (rec is None or not rec.options):
                raise ServiceError(f"{name} was never configured: use start_mosquitto_secure()")
            changed = (
                options is not None
                and rec is not None
                and (options != rec.options or (tls_port is not None and rec.extra_ports.get("tls") != tls_port))
            )
            if rec is not None and rec.pid is not None:
                # (started with other password/ACL/TLS files: terminated below and started again)
                if not changed and _pid_alive(rec.pid, rec.exe) and self._wait_healthy(rec, 10.0, spawned=False):
                    if port is not None and port != rec.port:
                        raise ServiceError(f"{name} already runs on port {rec.port} (pid {rec.pid}); stop it first")
                    self._ensure_databases(rec, databases)
                    return rec.info()
                self._terminate(rec, kill=False)  # dead, not answering, or reconfigured
            fixed = port is not None
            if rec is None:
                rec = self._new_record(name, port)
            elif port is not None:
                rec.port = port
            elif not _port_bindable(rec.port):
                rec.port = _free_ports(1)[0]
            rec.pid = None
            rec.exe = exe
            if options is not None:
                rec.options = dict(options)
            if name == MOSQUITTO_SECURE:
                if "tls_ca" not in rec.options:
                    rec.extra_ports.pop("tls", None)
                elif tls_port is not None:
                    rec.extra_ports["tls"] = tls_port
                elif "tls" not in rec.extra_ports or not _port_bindable(rec.extra_ports["tls"]):
                    rec.extra_ports["tls"] = next(p for p in _free_ports(2) if p != rec.port)
                fixed = fixed or tls_port is not None
            for db in databases:
                if db not in rec.databases:
                    rec.databases.append(db)
            attempts = 1 if fixed else 3
            for attempt in range(attempts):
                try:
                    self._spawn(rec)
                    break
                except ServiceError as exc:
                    if attempt + 1 >= attempts or "address already in use" not in str(exc).lower():
                        raise
                    rec.port = _free_ports(1)[0]  # lost a race for the port: pick another one
                    rec.extra_ports = {key: _free_ports(1)[0] for key in rec.extra_ports}
            self._ensure_databases(rec, rec.databases)
            return rec.info()

    def stop_service(self, name: str, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """Stop one service (SIGTERM, SIGKILL after ``timeout``; ``kill=True`` sends SIGKILL at once,
        for chaos tests). Its port and data dir stay recorded for ``restart``/``start``."""
        name = canonical_name(name)
        with self._lock.hold():
            rec = self._load().get(name)
            if rec is None:
                return
            self._terminate(rec, kill=kill, timeout=timeout)
            rec.pid = None
            self._update(rec)

    def restart(self, name: str, *, kill: bool = False) -> ServiceInfo:
        """Stop (or SIGKILL) and start again on the same port with the same data directory."""
        name = canonical_name(name)
        with self._lock.hold():
            rec = self._load().get(name)
            if rec is None:
                raise ServiceError(f"{name} was never started in {self.state_dir}")
            self.stop_service(name, kill=kill)
            if not wait_for_port(rec.host, rec.port, timeout=10.0, open_=False):
                raise ServiceError(f"port {rec.port} of {name} still answers after stopping it")
            return self.start(name, rec.port)

    def down(self, *, purge: bool = False) -> None:
        """Stop every recorded service and remove the state file (``purge`` also deletes data dirs)."""
        with self._lock.hold():
            records = self._load()
            errors: list[str] = []
            for rec in records.values():
                try:
                    self._terminate(rec, kill=False)
                except ServiceError as exc:
                    errors.append(str(exc))
            if errors:
                raise ServiceError("; ".join(errors))
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
            if purge:
                for name in records:
                    shutil.rmtree(self.state_dir / name, ignore_errors=True)

    def status(self) -> dict[str, ServiceInfo | None]:
        """name → ServiceInfo for every known service that runs (pid alive and answering), else None."""
        records = self._load()
        result: dict[str, ServiceInfo | None] = {}
        for name in (*SERVICE_NAMES, *(n for n in records if n not in SERVICE_NAMES)):
            rec = records.get(name)
            healthy = rec is not None and rec.pid is not None and _pid_alive(rec.pid, rec.exe) and _probe(rec)
            result[name] = rec.info() if healthy and rec is not None else None
        return result

    def info(self, name: str) -> ServiceInfo | None:
        """The running service ``name`` or None."""
        return self.status().get(canonical_name(name))

    # ---- internals

    def _new_record(self, name: str, port: int | None) -> _Record:
        base = self.state_dir / name
        extra = ("rpc",) if name == INFLUXDB else ()
        ports = _free_ports(1 + len(extra))
        return _Record(
            name=name,
            host=HOST,
            port=port if port is not None else ports[0],
            data_dir=str(base / "data"),
            log_file=str(base / f"{name}.log"),
            config_file=str(base / f"{name}.conf") if name != VICTORIA else None,
            extra_ports=dict(zip(extra, ports[1:], strict=True)),
        )

    def _argv(self, rec: _Record) -> list[str]:
        assert rec.exe is not None
        if rec.name in (MOSQUITTO, MOSQUITTO_SECURE):
            assert rec.config_file is not None
            Path(rec.config_file).write_text(_mosquitto_conf(rec))
            return [rec.exe, "-c", rec.config_file]
        if rec.name == INFLUXDB:
            assert rec.config_file is not None
            if "rpc" not in rec.extra_ports or not _port_bindable(rec.extra_ports["rpc"]):
                rec.extra_ports["rpc"] = _free_ports(1)[0]
            for sub in ("meta", "data", "wal"):
                (Path(rec.data_dir) / sub).mkdir(parents=True, exist_ok=True)
            Path(rec.config_file).write_text(_influxdb_conf(rec))
            return [rec.exe, "-config", rec.config_file]
        return [
            rec.exe,
            "-httpListenAddr", f"{rec.host}:{rec.port}",
            "-storageDataPath", rec.data_dir,
            "-retentionPeriod", "100y",
            # Points are queryable at once (default hides the last 30 s), handy in tests.
            "-search.latencyOffset", "0s",
            "-loggerOutput", "stderr",
        ]  # fmt: skip

    def _spawn(self, rec: _Record) -> None:
        Path(rec.data_dir).mkdir(parents=True, exist_ok=True)
        log_file = Path(rec.log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv(rec)
        with log_file.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n--- {stamp} cems starts: {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=rec.data_dir,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ServiceError(f"cannot run {argv[0]}: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        rec.pid = proc.pid
        self._update(rec)
        if not self._wait_healthy(rec, self.start_timeout, spawned=True):
            alive = _pid_alive(proc.pid, rec.exe)
            self._terminate(rec, kill=True)
            rec.pid = None
            self._update(rec)
            why = f"did not answer on {rec.url} within {self.start_timeout:.0f} s" if alive else "exited"
            raise ServiceError(
                f"{rec.name} {why} (config {rec.config_file or '-'}); last lines of {rec.log_file}:\n"
                f"{_log_tail(log_file)}"
            )

    def _wait_healthy(self, rec: _Record, timeout: float, *, spawned: bool) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if rec.pid is None or not _pid_alive(rec.pid, rec.exe):
                return False
            if _probe(rec, timeout=5.0 if not spawned else 1.0):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _ensure_databases(self, rec: _Record, databases: Iterable[str]) -> None:
        if rec.name != INFLUXDB:
            return
        wanted = [db for db in databases if db]
        for db in wanted:
            create_database(rec.url, db)
            if db not in rec.databases:
                rec.databases.append(db)
        self._update(rec)

    def _terminate(self, rec: _Record, *, kill: bool, timeout: float = STOP_TIMEOUT) -> None:
        pid = rec.pid
        if pid is None or not _pid_alive(pid, rec.exe):
            return
        _signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if _wait_dead(pid, rec.exe, timeout):
            return
        _signal(pid, signal.SIGKILL)
        if not _wait_dead(pid, rec.exe, 10.0):
            raise ServiceError(f"{rec.name} (pid {pid}) survived SIGKILL")
