"""Configuration from the environment, read in one place.

Only the entry points (``cems`` and ``cems-gateway`` command lines) call into this module; they turn what
it returns into typed settings (``MqttSettings``, ``InfluxConfig``, ``ComplianceConfig``, ...) and hand those
to the library, which never reads ``os.environ`` itself (cosmicpython's ``config.py``). A bad value is a
:class:`ConfigError` naming the variable, never a traceback: ``CEMS_BATCH_MAX=abc cems --version`` says
``CEMS_BATCH_MAX='abc' is not an integer``.

The state directory (local services, the ingester's SQLite state and spool, the demo) is defined here once:
``$CEMS_STATE_DIR``, else ``$XDG_STATE_HOME/cems``, else ``~/.local/state/cems``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from cems.errors import ConfigError

Environ = Mapping[str, str]


def environ() -> Environ:
    """The process environment: the only read of ``os.environ`` in cems."""
    return os.environ


class Env:
    """Typed reads of environment variables; every bad value raises :class:`ConfigError` with its name.

    ``Env()`` reads the process environment; ``Env({...})`` a given mapping (tests, subprocess set-ups).
    """

    def __init__(self, values: Environ | None = None) -> None:
        self.values: Environ = environ() if values is None else values

    def get(self, name: str, default: str | None = None) -> str | None:
        """The variable's value, ``default`` when unset or empty."""
        value = self.values.get(name)
        return value if value else default

    def string(self, name: str, default: str) -> str:
        value = self.values.get(name)
        return value if value else default

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self.values.get(name)
        if not raw:
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        raw = self.values.get(name)
        if not raw:
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name}={raw!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, blanks dropped."""
        return tuple(part.strip() for part in (self.values.get(name) or "").split(",") if part.strip())

    def path(self, name: str) -> Path | None:
        value = self.values.get(name)
        return Path(value).expanduser() if value else None


def state_dir(env: Env | None = None) -> Path:
    """The base state directory: ``$CEMS_STATE_DIR``, else ``$XDG_STATE_HOME/cems``, else ``~/.local/state/cems``.

    Under it: ``services/`` (local Mosquitto/InfluxDB), ``ingester/`` (compliance state, spool), ``demo/``.
    """
    e = env or Env()
    explicit = e.path("CEMS_STATE_DIR")
    if explicit is not None:
        return explicit
    xdg = e.path("XDG_STATE_HOME")
    return (xdg if xdg is not None else Path.home() / ".local" / "state") / "cems"


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and make it ``0700``: state, spool and local services
    hold secrets (alert bodies, readings, service credentials) that other users must not read."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


def writable_private_dir(path: Path, what: str) -> Path:
    """:func:`private_dir`, or a :class:`ConfigError` saying which directory and what to do when this user
    cannot create or write it (e.g. a service account without a home directory: ``cems run`` as ``nobody``
    would otherwise die on a raw ``FileNotFoundError``/``PermissionError`` from deep inside the service)."""
    try:
        private_dir(path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable", str(path))
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            f"{what} {path} cannot be created or written by this user (uid {os.getuid()}): {reason}. "
            "Set CEMS_STATE_DIR (or --state-dir) to a directory it can write"
        ) from None
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty if it does not exist and make it ``0600`` (e.g. before SQLite opens it; its
    ``-wal`` and ``-shm`` files get the same mode)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    if stat.S_IMODE(path.stat().st_mode) != 0o600:
        path.chmod(0o600)
    return path


def split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without user and password, user, password)`` of a URL such as ``mqtt://u:pw@host:1883``
    (user and password percent-decoded), so that the password is kept out of every message and log that
    names the URL.  A URL without them is returned as it is."""
    u = urlsplit(url)
    if u.username is None and u.password is None:
        return url, None, None
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if u.port is None else f"{host}:{u.port}"
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password is not None else None
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment)), user, password


def url_list(text: str | None) -> tuple[str, ...]:
    """The URLs of a comma-separated list such as ``CEMS_MQTT_URL=mqtt://a:1883,mqtt://b:1883`` (brokers to
    fail over between), blanks dropped, repeats kept once, in order."""
    out: list[str] = []
    for part in (text or "").split(","):
        url = part.strip()
        if url and url not in out:
            out.append(url)
    return tuple(out)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages that must show the URL)."""
    u = urlsplit(url)
    if u.password is None:
        return url
    bare, user, _ = split_url_credentials(url)
    scheme, rest = bare.split("://", 1) if "://" in bare else ("", bare)
    who = quote(user or "", safe="") + ":***@"
    return f"{scheme}://{who}{rest}" if scheme else who + rest
