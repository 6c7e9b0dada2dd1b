"""The registry: the city, its districts, enterprises and their monitored outlets, loaded from TOML.

``load_registry(path)`` validates everything and raises :class:`cems.errors.RegistryError` listing every
problem with its TOML location; a bad registry never starts the service.
"""

from cems.registry._credentials import check_credentials, expected_password, missing_credentials, with_credentials
from cems.registry._emergency import CutMeasure, EmergencySettings, PowerMeter, ProductionLine, StaggeredSpec
from cems.registry._loader import load_registry, parse_registry, read_stops, stops_path
from cems.registry._model import (
    City,
    District,
    Enterprise,
    GridConstruction,
    GridHotspot,
    GridRules,
    GridSensor,
    LimitChange,
    Outlet,
    OutletInfo,
    Quality,
    Registry,
    Stop,
    Topics,
)
from cems.registry._warnings import registry_warnings

__all__ = [
    "City",
    "CutMeasure",
    "District",
    "EmergencySettings",
    "Enterprise",
    "GridConstruction",
    "GridHotspot",
    "GridRules",
    "GridSensor",
    "LimitChange",
    "Outlet",
    "OutletInfo",
    "PowerMeter",
    "ProductionLine",
    "Quality",
    "Registry",
    "StaggeredSpec",
    "Stop",
    "Topics",
    "check_credentials",
    "expected_password",
    "load_registry",
    "missing_credentials",
    "parse_registry",
    "read_stops",
    "registry_warnings",
    "stops_path",
    "with_credentials",
]
