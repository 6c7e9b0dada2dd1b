"""One exception hierarchy for cems (httpx-style): catch ``CemsError`` for anything the package raises.

Every exception class cems defines is declared here, so the whole tree can be read in one place::

    CemsError
    ├── ConfigError              a setting (environment variable, flag, settings file) is invalid
    ├── RegistryError            the registry (sources, limits) is invalid; ``problems`` lists them all
    ├── RejectedMessage          a message cannot be accepted; ``reason`` (stable code), ``detail``
    │   └── HJ212Error           an HJ 212 packet cannot be accepted (``hj212_*`` reasons)
    │       └── FramingError     a problem in a TCP byte stream, reported by ``StreamFramer``
    ├── ServiceError             a local service (Mosquitto, InfluxDB) cannot be started, reached, stopped
    │   └── MqttProtocolError    the broker sent something the MQTT client cannot interpret
    └── SinkError                a sink (InfluxDB, spool, webhook) rejected or could not take a write
        ├── InfluxQueryError     an InfluxQL query (v1 ``/query``) failed: HTTP, connection or InfluxQL error
        ├── InfluxWriteError     InfluxDB refused a write or is unreachable (``retryable``, ``status``)
        ├── SpoolFull            the on-disk spool is at its bound: apply back-pressure
        ├── ArchiveError         the evidence archive cannot be written (in use, disk error): do not acknowledge
        └── WebhookError         a webhook receiver answered something other than 2xx

The modules that raise them re-export them (``cems.protocol.hj212.HJ212Error``,
``cems.sinks.spool.SpoolFull``, ...), so they can be imported from either place.

A rejection's ``reason`` is one of a closed list, :data:`Reason` (a ``Literal``, so ``mypy --strict`` checks
every raise site), also available at run time as :data:`REASONS`.  The reasons are documented in
``docs/payload.md`` ("Dead letters"); ``tests/unit/test_reasons.py`` checks that the list there, this list
and the raise sites agree.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "REASONS",
    "ArchiveError",
    "CemsError",
    "ConfigError",
    "FramingError",
    "HJ212Error",
    "InfluxQueryError",
    "InfluxWriteError",
    "MqttProtocolError",
    "Reason",
    "RegistryError",
    "RejectedMessage",
    "ServiceError",
    "SinkError",
    "SpoolFull",
    "WebhookError",
]


#: Every ``reason`` a :class:`RejectedMessage` can carry: the dead-letter topic ``cems/deadletter/v1/{reason}``
#: and the ``cems_messages_rejected{reason=...}`` counter.  Stable: a code is never renamed or reused.
Reason = Literal[
    # topic and JSON payload (cems.decode, cems.protocol.payload, cems replay)
    "bad_topic",
    "too_large",
    "malformed_json",
    "bad_field",
    "bad_schema",
    "bad_flag",
    "bad_data_time",
    "mn_mismatch",
    "stream_mismatch",
    # registry and plausibility (cems.validate, cems.service.ingest)
    "unknown_mn",
    "wrong_shard",
    "unknown_sensor",
    "empty_reading",
    "future_data_time",
    "stale_data_time",
    "not_finite",
    "negative_value",
    "absurd_value",
    # HJ 212 packet on cems/v1/{mn}/hj212 (cems.decode)
    "bad_password",
    "hj212_encoding",
    # HJ 212 codec (cems.protocol.hj212)
    "hj212_framing",
    "hj212_crc",
    "hj212_length",
    "hj212_field",
    "hj212_datatime",
    "hj212_not_data",
    "hj212_encode",
    "hj212_split",
    # HJ 212 TCP stream (cems.protocol.hj212.StreamFramer, reported by the bridge)
    "hj212_garbage",
    "hj212_oversize",
    "hj212_truncated",
    # storage (cems.service.ingest)
    "duplicate",
    "database_rejected",
    # a bug met by one message: the per-message guard of cems.service.ingest and cems replay
    "internal_error",
    # event acknowledgements on the command topic (cems.service.compliance)
    "bad_command",
    "unknown_event",
    # marks, stop declarations, repairs and withdrawals on cems/v1/{mn}/mark (cems.protocol.mark, cems.rules.marks)
    "bad_mark",
    "unknown_mark_type",
    "mark_too_late",
    "unknown_mark",
]

#: :data:`Reason` at run time.
REASONS: Final[frozenset[str]] = frozenset(get_args(Reason))


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

    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason: Reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class HJ212Error(RejectedMessage):
    """An HJ 212 packet that cannot be accepted (``reason`` is a stable ``hj212_*`` code)."""


class FramingError(HJ212Error):
    """A problem in a TCP byte stream reported (not raised) by :class:`cems.protocol.hj212.StreamFramer`.

    ``data`` holds (at most the first 64 of) the discarded bytes.
    """

    def __init__(self, reason: Reason, detail: str, data: bytes = b"", discarded: int = 0) -> None:
        super().__init__(reason, detail)
        self.data = data[:64]
        self.discarded = discarded


class ConfigError(CemsError):
    """A setting (environment variable, command-line value, settings file) is invalid; the message names it."""


class ServiceError(CemsError):
    """A local service (Mosquitto, InfluxDB) could not be started, reached or stopped."""


class MqttProtocolError(ServiceError):
    """The broker sent something this client cannot interpret: the connection is dropped and re-made."""


class SinkError(CemsError):
    """A sink (InfluxDB, webhook) rejected or could not take a write."""


class InfluxQueryError(SinkError):
    """An InfluxQL query (v1 ``/query``) failed: HTTP error, connection error or an InfluxQL error."""


class InfluxWriteError(SinkError):
    """InfluxDB refused a write (``status``) or could not be reached; ``retryable`` says whether to back off
    and try again (5xx, connection errors) or dead-letter the data (4xx)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class SpoolFull(SinkError):
    """The spool is at its bound; the caller must apply back-pressure (not acknowledge)."""


class ArchiveError(SinkError):
    """The evidence archive cannot be written (another process holds it, a disk error): the messages it was
    to keep are not acknowledged."""


class WebhookError(SinkError):
    """A webhook receiver answered something other than 2xx."""


class InvalidTransition(CemsError, ValueError):
    """An action on an event's case (电子督办, issue 19) that does not follow the case's state, e.g. feedback
    before the dispatch (:func:`cems.service.compliance.apply_action`)."""


class CsrfError(CemsError):
    """A duty-console form came without the session's CSRF token (or with another one)."""


class IncompleteParts(CemsError, ValueError):
    """The district parts of a sharded deployment cannot be merged: a shard's part is missing, doubled, or the
    parts come from different shard counts (:func:`cems.rules.district_parts.merge_parts`, issue 20)."""
