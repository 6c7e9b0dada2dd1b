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

import builtins
import os
from collections.abc import Mapping
from pathlib import Path

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

    def str(self, name: str, default: str) -> str:
        value = self.values.get(name)
        return value if value else default

    def int(self, name: builtins.str, default: int, *, minimum: int | None = None) -> int:
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

    def float(self, name: builtins.str, default: float, *, minimum: float | None = None) -> float:
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

    def choice(self, name: builtins.str, default: builtins.str, choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name, default)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def list(self, name: builtins.str) -> tuple[builtins.str, ...]:
        """A comma-separated list, blanks dropped."""
        return tuple(part.strip() for part in (self.values.get(name) or "").split(",") if part.strip())

    def path(self, name: builtins.str) -> Path | None:
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
