"""cems: continuous-emission monitoring for environmental bureaus.

Data flow: decode (:mod:`cems.decode`, :mod:`cems.protocol`) → validate (:mod:`cems.validate`) →
rules (:mod:`cems.rules`) → sinks (:mod:`cems.sinks`); the async shell lives in :mod:`cems.service`.
"""

from cems.errors import CemsError, RegistryError, RejectedMessage, ServiceError, SinkError
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import Registry, load_registry

__version__ = "0.1.0"

__all__ = [
    "BEIJING",
    "CemsError",
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
