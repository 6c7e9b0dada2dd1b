"""cems: continuous-emission monitoring for environmental bureaus.

Data flow: decode (:mod:`cems.decode`, :mod:`cems.protocol`) → validate (:mod:`cems.validate`) →
rules (:mod:`cems.rules`, :mod:`cems.engine`) → sinks (:mod:`cems.sinks`); the async shell lives in
:mod:`cems.service`, the command line in :mod:`cems.cli`, tools in :mod:`cems.devtools` (docs/architecture.md).

``Registry`` and ``load_registry`` are imported on first use: they load pydantic, which a program that only
decodes HJ 212 packets does not need.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from cems.errors import CemsError, ConfigError, RegistryError, RejectedMessage, ServiceError, SinkError
from cems.model import BEIJING, Measurement, Reading, Stream

if TYPE_CHECKING:
    from cems.registry import Registry, load_registry

try:
    __version__ = version("cems")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BEIJING",
    "CemsError",
    "ConfigError",
    "Measurement",
    "Reading",
    "Registry",
    "RegistryError",
    "RejectedMessage",
    "ServiceError",
    "SinkError",
    "Stream",
    "__version__",
    "load_registry",
]


def __getattr__(name: str) -> Any:
    if name in ("Registry", "load_registry"):
        from cems import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'cems' has no attribute {name!r}")
