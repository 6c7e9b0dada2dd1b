"""Broker security: per-gateway credentials, a topic ACL, TLS files and where the secrets come from.

The model (docs/security.md):

* every plant gateway logs in to Mosquitto with its outlet's **MN as username** and may publish only under
  ``cems/v1/{its MN}/`` (``pattern write cems/v1/%u/+``); a grid micro-station logs in with its sensor id and
  may publish only ``grid/v1/{its id}``;
* the ingester (``cems-ingester``) reads the data topics and the command topics and writes only the alert and
  dead-letter topics: it cannot inject readings;
* the HJ 212 bridge (``cems-bridge``) writes ``cems/v1/+/hj212`` for every MN, after checking each packet's
  HJ 212 password itself;
* an optional read-only monitor user (the monitoring room's dashboard) reads the alerts; an optional command
  user writes the command topics;
* anonymous clients are refused (``allow_anonymous false``), and a TLS listener can be added.

Secrets (broker passwords) live in a ``NAME=secret`` file (mode 0600) or in ``CEMS_SECRET_<NAME>``
environment variables, **never in the registry** (which is configuration, reviewed and copied around).

Everything here is a pure function or a small file writer; the external tools (``mosquitto_passwd``,
``openssl``) run as subprocesses.  The ``cems broker-config`` command is :func:`broker_config_command`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cems.config import environ as config_environ
from cems.errors import CemsError, ServiceError

if TYPE_CHECKING:
    from cems.registry import Registry

__all__ = [
    "DEFAULT_BRIDGE_USER",
    "DEFAULT_INGESTER_USER",
    "SECRET_ENV_PREFIX",
    "BrokerConfigOptions",
    "BrokerUsers",
    "TlsFiles",
    "broker_users",
    "generate_test_ca",
    "load_secrets",
    "mosquitto_acl",
    "mosquitto_auth_conf",
    "parse_secrets",
    "secret_env_var",
    "write_broker_config",
    "write_password_file",
]

log = logging.getLogger(__name__)

DEFAULT_INGESTER_USER = "cems-ingester"
DEFAULT_BRIDGE_USER = "cems-bridge"
SECRET_ENV_PREFIX = "CEMS_SECRET_"
"""``CEMS_SECRET_<NAME>`` holds the broker password of user NAME (see :func:`secret_env_var`)."""

# A Mosquitto username usable in a %u pattern and in a password file: no MQTT wildcard or level separator
# (Mosquitto refuses %u substitution for those), no ':' (password file separator), no whitespace.
_USERNAME_RE = re.compile(r"^[^\s:+#/]{1,128}$")
# A topic prefix written into the ACL: levels without wildcards or spaces.
_PREFIX_RE = re.compile(r"^[^\s+#]+(/[^\s+#]+)*$")


# --------------------------------------------------------------------------------------------------
# the ACL


@dataclass(frozen=True, slots=True)
class BrokerUsers:
    """Every broker username the registry and the service roles call for."""

    gateways: tuple[str, ...]
    """Outlet MNs (one gateway login per outlet)."""
    grid_sensors: tuple[str, ...]
    """Grid micro-station ids."""
    services: Mapping[str, str]
    """Service username → role: ``ingester``, ``bridge``, ``monitor``, ``command``."""

    def all(self) -> list[str]:
        return [*self.gateways, *self.grid_sensors, *self.services]


def broker_users(
    registry: Registry,
    *,
    ingester_user: str = DEFAULT_INGESTER_USER,
    bridge_user: str | None = DEFAULT_BRIDGE_USER,
    monitor_user: str | None = None,
    command_user: str | None = None,
) -> BrokerUsers:
    """The usernames of a deployment, validated.

    Raises ValueError when a name cannot be a Mosquitto username used in a ``%u`` pattern, when a grid
    sensor id equals an MN (that sensor could then publish as the outlet), or when a service user equals an
    MN, a sensor id or another service user (it would get the gateway rights of that MN).
    """
    mns = [info.outlet.mn for info in registry.outlets()]
    sensors = [g.id for g in registry.grid_sensor]
    roles = {"ingester": ingester_user, "bridge": bridge_user, "monitor": monitor_user, "command": command_user}
    services: dict[str, str] = {}
    problems: list[str] = []
    for role, name in roles.items():
        if name is None or name == "":
            if role == "ingester":
                problems.append("the ingester user must be named")
            continue
        if name in services:
            problems.append(f"{role} user {name!r} is also the {services[name]} user")
        services[name] = role
    for kind, names in (("grid sensor id", sensors), ("service user", list(services))):
        problems.extend(
            f"{kind} {n!r} cannot be a broker username (no whitespace, ':', '+', '#' or '/')"
            for n in names
            if not _USERNAME_RE.match(n)
        )
    mn_set = set(mns)
    sensor_set = set(sensors)
    problems.extend(f"grid sensor id {s!r} is also an outlet MN" for s in sorted(sensor_set & mn_set))
    for name, role in services.items():
        if name in mn_set or name in sensor_set:
            problems.append(f"{role} user {name!r} is also an outlet MN or grid sensor id")
    if problems:
        raise ValueError("; ".join(problems))
    return BrokerUsers(tuple(mns), tuple(sensors), services)


def mosquitto_acl(
    registry: Registry,
    *,
    ingester_user: str = DEFAULT_INGESTER_USER,
    bridge_user: str | None = DEFAULT_BRIDGE_USER,
    monitor_user: str | None = None,
    command_user: str | None = None,
) -> str:
    """Text of a Mosquitto 2.0 ``acl_file`` for the registry's topics (``registry.topics``).

    ``bridge_user=None`` leaves the HJ 212 bridge out; ``monitor_user`` (reads alerts) and ``command_user``
    (writes commands) are added only when named.  Raises ValueError as :func:`broker_users` does.
    """
    users = broker_users(
        registry,
        ingester_user=ingester_user,
        bridge_user=bridge_user,
        monitor_user=monitor_user,
        command_user=command_user,
    )
    t = registry.topics
    prefixes = {
        "prefix": t.prefix,
        "grid_prefix": t.grid_prefix,
        "alerts_prefix": t.alerts_prefix,
        "deadletter_prefix": t.deadletter_prefix,
        "command_prefix": t.command_prefix,
    }
    bad = [f"{k} = {v!r}" for k, v in prefixes.items() if not _PREFIX_RE.match(v.strip("/"))]
    if bad:
        raise ValueError("topic prefixes must be levels without wildcards or spaces: " + ", ".join(bad))
    data, grid, alerts, dead, cmd = (v.strip("/") for v in prefixes.values())
    roles = {role: name for name, role in users.services.items()}

    def deny_patterns(user: str) -> list[str]:
        # The gateway patterns also match service users (%u = "cems-ingester"): take those rights back.
        return [
            "# Not a gateway: the gateway patterns above do not apply to this user.",
            f"topic deny {data}/{user}/#",
            f"topic deny {grid}/{user}",
        ]

    lines = [
        "# Mosquitto ACL for cems, generated by `cems broker-config` (cems.security.mosquitto_acl).",
        "# Regenerate it instead of editing it; reload the broker with SIGHUP after replacing it.",
        "#",
        "# Mosquitto 2.0 semantics: whatever is not granted here is denied. An unauthorised PUBLISH is",
        "# dropped silently (with MQTT 3.1.1 a QoS 1 publish still gets its PUBACK). A SUBSCRIBE is",
        "# granted, but every message is checked against the receiver's read rights when it is",
        "# delivered, so a client only ever receives what it may read. `topic` lines before the first",
        "# `user` line would apply to anonymous clients: there are none (and the broker runs with",
        "# allow_anonymous false). `pattern` lines apply to EVERY authenticated user, %u being its",
        "# username; `user NAME` starts the `topic` lines of that user only; `deny` lines are checked",
        "# before any grant. Who may log in at all is decided by the password file.",
        "",
        f"# ---- gateways: username = outlet MN ({len(users.gateways)} outlet(s) in the registry) ----",
        f"# A plant gateway publishes its readings ({data}/MN/rtd, min, hour, day, hj212) under its own",
        "# MN only: a publish under another MN is dropped.",
        f"pattern write {data}/%u/+",
        f"# Its marks, stop declarations and repairs go to {data}/MN/mark (covered above: an MN marks only",
        "# itself); it may read the ingester's answers to them, addressed to its own MN only.",
        f"pattern read {cmd}/reply/%u/+",
        f"# ---- grid micro-stations: username = sensor id ({len(users.grid_sensors)} in the registry) ----",
        "# A grid station publishes its single topic only. (Sensor ids never equal MNs: checked when this",
        "# file is generated, so no station can publish as an outlet or the reverse.)",
        f"pattern write {grid}/%u",
        "",
        "# ---- the ingester: read-only on data, writes only what it produces ----",
        f"user {roles['ingester']}",
        "# Readings of every outlet: exactly the ingester's subscription (MN level + stream level).",
        f"topic read {data}/+/+",
        "# Readings of every grid station (the ingester's second subscription).",
        f"topic read {grid}/+",
        "# Commands addressed to the ingester (it never sends commands), and its replies to them.",
        f"topic read {cmd}/#",
        f"topic write {cmd}/reply/#",
        "# Alerts it raises (exceedances, warnings, interruptions): write only.",
        f"topic write {alerts}/#",
        "# Rejected messages with their reason: write only.",
        f"topic write {dead}/#",
        *deny_patterns(roles["ingester"]),
    ]
    if "bridge" in roles:
        lines += [
            "",
            "# ---- the HJ 212 bridge: publishes raw packets for many MNs ----",
            "# It accepts a TCP packet only after checking that MN's HJ 212 password (PW) against the",
            "# registry, then publishes it unchanged to the MN's hj212 topic. It cannot publish the JSON",
            "# streams (rtd/min/hour/day), alerts or dead letters, and reads nothing.",
            f"user {roles['bridge']}",
            f"topic write {data}/+/hj212",
            *deny_patterns(roles["bridge"]),
        ]
    if "monitor" in roles:
        lines += [
            "",
            "# ---- the monitoring room: read-only on alerts ----",
            f"user {roles['monitor']}",
            f"topic read {alerts}/#",
            *deny_patterns(roles["monitor"]),
        ]
    if "command" in roles:
        lines += [
            "",
            "# ---- the command sender: writes the ingester's command topics only ----",
            "# and reads the ingester's replies (cems events ack waits for them).",
            f"user {roles['command']}",
            f"topic write {cmd}/#",
            f"topic read {cmd}/reply/#",
            *deny_patterns(roles["command"]),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# secrets


def secret_env_var(name: str, prefix: str = SECRET_ENV_PREFIX) -> str:
    """Environment variable holding the password of broker user ``name``: ``CEMS_SECRET_`` + the name
    upper-cased with every character other than A-Z, 0-9 and '_' replaced by '_'
    (``cems-ingester`` → ``CEMS_SECRET_CEMS_INGESTER``, MN ``13060200001001`` → ``CEMS_SECRET_13060200001001``)."""
    return prefix + re.sub(r"[^A-Z0-9_]", "_", name.upper())


def parse_secrets(text: str, source: str = "<secrets>") -> dict[str, str]:
    """Parse ``NAME=secret`` lines (blank lines and ``#`` comments ignored; spaces around the name and the
    secret stripped; a secret may itself contain '='). ValueError on a malformed or duplicate line."""
    secrets: dict[str, str] = {}
    problems: list[str] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition("=")
        name, secret = name.strip(), secret.strip()
        if not sep or not name or not secret:
            problems.append(f"{source}:{no}: expected NAME=secret")
        elif name in secrets:
            problems.append(f"{source}:{no}: duplicate entry for {name!r}")
        else:
            secrets[name] = secret
    if problems:
        raise ValueError("; ".join(problems))
    return secrets


def load_secrets(
    path: str | Path | None = None,
    *,
    names: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prefix: str = SECRET_ENV_PREFIX,
) -> dict[str, str]:
    """Broker passwords: name → secret, from a ``NAME=secret`` file and/or the environment.

    ``path``: a secrets file (see :func:`parse_secrets`); a warning is logged when it is readable by its
    group or by others (use ``chmod 600``).  Environment variables override the file: with ``names``, each
    name is looked up as :func:`secret_env_var`; without, every ``CEMS_SECRET_<NAME>`` variable yields an
    entry ``NAME``.  Missing names are simply absent from the result (callers decide whether that is an
    error).  Raises CemsError when the file cannot be read or is malformed.
    """
    env = config_environ() if environ is None else environ
    secrets: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        try:
            mode = p.stat().st_mode
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise CemsError(f"cannot read secrets file {p}: {exc.strerror or exc}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secrets file %s is accessible by group/others (mode %o): run `chmod 600 %s`",
                p,
                stat.S_IMODE(mode),
                p,
            )
        try:
            secrets.update(parse_secrets(text, str(p)))
        except ValueError as exc:
            raise CemsError(f"invalid secrets file: {exc}") from exc
    if names is not None:
        for name in names:
            value = env.get(secret_env_var(name, prefix))
            if value:
                secrets[name] = value
    else:
        for var, value in env.items():
            if var.startswith(prefix) and len(var) > len(prefix) and value:
                secrets[var[len(prefix) :]] = value
    return secrets


# --------------------------------------------------------------------------------------------------
# files for the broker


def _which(exe: str, env_var: str, apt_package: str) -> str:
    env = config_environ()
    override = env.get(env_var)
    if override:
        if Path(override).is_file() and os.access(override, os.X_OK):
            return override
        raise ServiceError(f"{env_var}={override!r} is not an executable file")
    search = os.pathsep.join([env.get("PATH", os.defpath), "/usr/bin", "/usr/sbin", "/usr/local/bin"])
    found = shutil.which(exe, path=search)
    if found is None:
        raise ServiceError(
            f"{exe} not found on PATH: install it with `apt-get install {apt_package}` (or point {env_var} at it)"
        )
    return found


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-800:]
        raise ServiceError(f"{what}: {Path(argv[0]).name} exited with {proc.returncode}: {detail}")


def write_password_file(path: str | Path, users: Mapping[str, str]) -> Path:
    """Write a Mosquitto password file (hashed, PBKDF2-SHA512) for ``users`` (username → password).

    The plain ``user:password`` lines go to a 0600 temporary file next to ``path``, which
    ``mosquitto_passwd -U`` hashes in place (no password ever appears on a command line); the result
    replaces ``path`` atomically, mode 0600. ServiceError if ``mosquitto_passwd`` is missing or fails,
    ValueError for an unusable username or password.
    """
    problems = [f"username {u!r} contains ':', whitespace or is empty" for u in users if not _USERNAME_RE.match(u)]
    problems += [f"password of {u!r} is empty or contains a line break" for u, pw in users.items() if not pw or
                 "\n" in pw or "\r" in pw]  # fmt: skip
    if problems:
        raise ValueError("; ".join(problems))
    exe = _which("mosquitto_passwd", "CEMS_MOSQUITTO_PASSWD_BIN", "mosquitto")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".passwd-", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp creates it 0600
            fh.writelines(f"{user}:{pw}\n" for user, pw in users.items())
        _run([exe, "-U", str(tmp)], f"hashing password file {target}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate files of a TLS listener (paths as the broker sees them)."""

    ca: Path
    cert: Path
    key: Path


def generate_test_ca(
    directory: str | Path, *, hosts: Iterable[str] = ("127.0.0.1", "localhost"), days: int = 825
) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for ``hosts`` (IPs and DNS names) signed by it, made with
    the ``openssl`` CLI (EC P-256 keys). For tests and local setups, not for production.

    Writes ``ca.crt``, ``ca.key``, ``server.crt`` and ``server.key`` (keys 0600) into ``directory`` and
    returns ``(ca_cert, server_cert, server_key)``. ServiceError if ``openssl`` is missing or fails.
    """
    exe = _which("openssl", "CEMS_OPENSSL_BIN", "openssl")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = d / "ca.crt", d / "ca.key"
    srv_crt, srv_key, srv_csr, ext = d / "server.crt", d / "server.key", d / "server.csr", d / "server.ext"
    sans = []
    for host in hosts:
        kind = "IP" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:.]*", host) else "DNS"
        sans.append(f"{kind}:{host}")
    if not sans:
        raise ValueError("generate_test_ca needs at least one host")
    cn = next((h for h in hosts if not h[0].isdigit() and ":" not in h), "localhost")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        [exe, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", str(days),
         "-subj", "/O=cems/CN=cems test CA", "-sha256",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        "creating the test CA",
    )  # fmt: skip
    _run(
        [exe, "req", "-new", *ec, "-keyout", str(srv_key), "-out", str(srv_csr), "-subj", f"/O=cems/CN={cn}"],
        "creating the server key",
    )
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    _run(
        [exe, "x509", "-req", "-in", str(srv_csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(srv_crt), "-days", str(days), "-sha256", "-extfile", str(ext)],
        "signing the server certificate",
    )  # fmt: skip
    for key in (ca_key, srv_key):
        os.chmod(key, 0o600)
    for tmp in (srv_csr, ext, d / "ca.srl"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return ca_crt, srv_crt, srv_key


def mosquitto_auth_conf(
    *,
    passwd_file: str | Path,
    acl_file: str | Path,
    port: int | None = 1883,
    bind: str | None = None,
    tls: TlsFiles | tuple[str | Path, str | Path, str | Path] | None = None,
    tls_port: int = 8883,
) -> str:
    """Mosquitto 2.0 config lines: anonymous clients refused, password file, ACL, a plain listener on
    ``port`` (None: none, TLS only) and, with ``tls`` = (ca, cert, key), a TLS listener on ``tls_port``.
    ``bind`` restricts the listeners to one address (default: all)."""
    if port is None and tls is None:
        raise ValueError("no listener: give a plain port, TLS files, or both")
    at = f" {bind}" if bind else ""
    out = [
        "# Authentication and authorisation (cems.security): one set for every listener.",
        "per_listener_settings false",
        "# No anonymous clients: every gateway, the ingester and the bridge log in.",
        "allow_anonymous false",
        "# Hashed passwords (mosquitto_passwd); usernames are outlet MNs, grid sensor ids and service users.",
        f"password_file {passwd_file}",
        "# Topic rights per user (cems broker-config).",
        f"acl_file {acl_file}",
    ]
    if port is not None:
        out += [
            "",
            "# Plain MQTT: credentials travel in clear text; use it only on a trusted network or loopback.",
            f"listener {port}{at}",
        ]
    if tls is not None:
        ca, cert, key = (tls.ca, tls.cert, tls.key) if isinstance(tls, TlsFiles) else tls
        out += [
            "",
            "# MQTT over TLS: the server proves its identity with certfile; clients verify it with the CA.",
            f"listener {tls_port}{at}",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "# Clients authenticate with username/password, not with client certificates.",
            "require_certificate false",
            "tls_version tlsv1.2",
        ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# `cems broker-config`


@dataclass(frozen=True)
class BrokerConfigOptions:
    """What ``cems broker-config`` writes: see :func:`write_broker_config`."""

    config: str
    out_dir: str
    secrets: str | None = None
    ingester_user: str = DEFAULT_INGESTER_USER
    #: ``None`` or ``""`` leaves the HJ 212 bridge out.
    bridge_user: str | None = DEFAULT_BRIDGE_USER
    monitor_user: str | None = None
    command_user: str | None = None
    skip_missing: bool = False
    install_dir: str | None = None
    port: int = 1883
    bind: str | None = None
    tls_port: int = 8883
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def write_broker_config(o: BrokerConfigOptions, environ: Mapping[str, str] | None = None) -> str:
    """Write ``acl``, ``passwd`` and ``mosquitto-secure.conf`` into ``o.out_dir``; return a one-line summary.

    Usernames come from the registry (MNs, grid sensor ids) and the service users; passwords from
    ``o.secrets`` and ``CEMS_SECRET_<NAME>`` in ``environ``. Raises CemsError for a missing secret (unless
    ``skip_missing``), an invalid registry/username or a failing ``mosquitto_passwd``.
    """
    from cems.registry import load_registry

    registry = load_registry(o.config)
    tls_parts = [o.tls_ca or "", o.tls_cert or "", o.tls_key or ""]
    if any(tls_parts) and not all(tls_parts):
        raise CemsError("--tls-ca, --tls-cert and --tls-key go together")
    ingester = o.ingester_user or DEFAULT_INGESTER_USER
    bridge = o.bridge_user or None
    monitor = o.monitor_user or None
    command = o.command_user or None
    try:
        users = broker_users(
            registry, ingester_user=ingester, bridge_user=bridge, monitor_user=monitor, command_user=command
        )
        acl = mosquitto_acl(
            registry, ingester_user=ingester, bridge_user=bridge, monitor_user=monitor, command_user=command
        )
    except ValueError as exc:
        raise CemsError(f"cannot build the broker ACL: {exc}") from exc
    names = users.all()
    secrets = load_secrets(o.secrets, names=names, environ=environ)
    missing = [n for n in names if n not in secrets]
    if missing and not o.skip_missing:
        shown = ", ".join(missing[:20]) + (f" … ({len(missing)} in all)" if len(missing) > 20 else "")
        raise CemsError(
            f"no broker password for: {shown}. Add NAME=secret lines to the secrets file or set "
            f"{secret_env_var(missing[0])}-style variables (or pass --skip-missing)"
        )
    for name in missing:
        log.warning("no secret for %r: left out of the password file (it cannot log in)", name)
    passwords = {n: secrets[n] for n in names if n in secrets}
    if not passwords:
        raise CemsError("no user has a secret: the password file would be empty")

    out = Path(o.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    install = Path(o.install_dir) if o.install_dir else out.resolve()
    (out / "acl").write_text(acl, encoding="utf-8")
    try:
        write_password_file(out / "passwd", passwords)
    except ValueError as exc:
        raise CemsError(f"cannot write the password file: {exc}") from exc
    conf = mosquitto_auth_conf(
        passwd_file=install / "passwd",
        acl_file=install / "acl",
        port=o.port or None,
        bind=o.bind,
        tls=(tls_parts[0], tls_parts[1], tls_parts[2]) if all(tls_parts) else None,
        tls_port=o.tls_port,
    )
    header = (
        f"# Generated by `cems broker-config --config {o.config}`: include it from mosquitto.conf\n"
        "# (`include_dir`) or append it; then `kill -HUP` the broker after regenerating acl/passwd.\n\n"
    )
    (out / "mosquitto-secure.conf").write_text(header + conf, encoding="utf-8")
    return f"wrote {out / 'acl'}, {out / 'passwd'} ({len(passwords)} user(s)) and {out / 'mosquitto-secure.conf'}" + (
        f"; {len(missing)} user(s) without a secret left out" if missing else ""
    )
