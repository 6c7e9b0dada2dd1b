"""One exception hierarchy for cems (httpx-style): catch ``CemsError`` for anything the package raises."""

from __future__ import annotations


class CemsError(Exception):
    """Base class of every error cems raises on purpose."""


class RegistryError(CemsError):
    """The registry (sources, limits) is invalid. ``problems`` lists every problem with its TOML location."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid registry {path}: {len(problems)} problem(s)\n{lines}")


class RejectedMessage(CemsError):
    """A message that cannot be accepted. ``reason`` is a short stable code used in counters and the
    dead-letter topic; ``detail`` says exactly what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ConfigError(CemsError):
    """A setting (environment variable, command-line value, settings file) is invalid; the message names it."""


class ServiceError(CemsError):
    """A local service (Mosquitto, InfluxDB) could not be started, reached or stopped."""


class SinkError(CemsError):
    """A sink (InfluxDB, webhook) rejected or could not take a write."""
