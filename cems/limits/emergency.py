"""Built-in city profiles of the heavy-pollution emergency cuts, loaded from ``emergency.toml`` (data, not code;
DOMAIN.md §6, §9; issue 16).  Each profile gives, per warning level, the share of the emergency baseline
(应急减排基数) each pollutant must be cut by, and names its source (seed document)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final

#: Warning levels a profile may give cuts for, lowest first (DOMAIN.md §6; "none" has no measure).
PROFILE_LEVELS: Final = ("blue", "yellow", "orange", "red")


@dataclass(frozen=True, slots=True)
class EmergencyProfile:
    """A city's default cuts: level name → pollutant code → share of the baseline (0–1), with its source."""

    name: str
    title: str
    source: str
    cuts: Mapping[str, Mapping[str, float]]


def _profile(name: str, raw: dict[str, object]) -> EmergencyProfile:
    cuts: dict[str, Mapping[str, float]] = {}
    for level in PROFILE_LEVELS:
        table = raw.get(level)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ValueError(f"emergency profile {name}: {level} must be a table of pollutant = share")
        shares = {str(k): float(v) for k, v in table.items()}
        bad = [k for k, v in shares.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"emergency profile {name}: {level}: shares of {', '.join(bad)} not within 0..1")
        cuts[level] = MappingProxyType(shares)
    return EmergencyProfile(name, str(raw["title"]), str(raw["source"]), MappingProxyType(cuts))


@cache
def builtin_emergency_profiles() -> Mapping[str, EmergencyProfile]:
    """All built-in emergency profiles by name (``xinmi_langfang``, ``zhangjiakou``, ``plans_2017``)."""
    text = resources.files(__package__).joinpath("emergency.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    return MappingProxyType({name: _profile(name, p) for name, p in raw.items()})
