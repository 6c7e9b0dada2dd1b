"""A realistic fleet of plant DAS (数采仪) and grid micro-stations, for demos, load tests and end-to-end tests.

Two layers, two private modules:

* :class:`FleetModel` (``_model.py``): pure and deterministic for a seed, no I/O, no wall clock.
  ``advance(until)`` returns the :class:`Emission` s (one :class:`cems.model.Reading` each, with its topic
  and simulated send time) that the fleet produces up to simulated time ``until``; what one outlet produces
  (real-time, minute and hourly records, flags, events, clock skew) is described there.
* :func:`run_simulator` (``_publish.py``): a thin async publisher: paces simulated time against the wall
  clock (``speed``), encodes JSON (``cems.reading/1``) or HJ 212 packets and publishes them over MQTT with
  QoS 1, or sends HJ 212 over TCP to the gateway bridge waiting for the 9014 data reply.

The command line (``cems-gateway simulate``) is in :mod:`gateways.cli`.
"""

from gateways.simulator._model import (
    AMB_CO,
    AMB_NO2,
    AMB_O3,
    AMB_SO2,
    DEFAULT_PW,
    FACILITY,
    O2_MAX_CORRECTION,
    PM10,
    PM25,
    POLLUTANTS,
    PROTOCOLS,
    TEMP,
    Emission,
    Episode,
    FleetModel,
    SimConfig,
    correct,
    hj212_packet,
)
from gateways.simulator._publish import OnPublish, SimStats, run_simulator

__all__ = [
    "AMB_CO",
    "AMB_NO2",
    "AMB_O3",
    "AMB_SO2",
    "DEFAULT_PW",
    "FACILITY",
    "O2_MAX_CORRECTION",
    "PM10",
    "PM25",
    "POLLUTANTS",
    "PROTOCOLS",
    "TEMP",
    "Emission",
    "Episode",
    "FleetModel",
    "OnPublish",
    "SimConfig",
    "SimStats",
    "correct",
    "hj212_packet",
    "run_simulator",
]
