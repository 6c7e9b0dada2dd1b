"""Built-in emission-limit profiles, loaded from ``profiles.toml`` (data, not code; DOMAIN.md §4)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class LimitProfile:
    """A named set of hourly limits (mg/m³ at ``ref_o2`` % O2, dry, standard state) with its citation."""

    name: str
    title: str
    ref_o2: float
    basis: str
    citation: str
    limits: Mapping[str, float]
    verify: bool = False
    #: 24-h limits (mg/m³ at ``ref_o2``), judged on valid daily corrected means (issue 12 item 9).
    daily_limits: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: Monthly rule: at least this share of the month's valid hours at or below the hourly limits (steel
    #: ultra-low, 环大气〔2019〕35号), with its citation; ``None``: no monthly rule.
    monthly_share: float | None = None
    monthly_citation: str = ""


@cache
def builtin_profiles() -> Mapping[str, LimitProfile]:
    """All built-in profiles by name."""
    text = resources.files(__package__).joinpath("profiles.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    out: dict[str, LimitProfile] = {}
    for name, p in raw.items():
        out[name] = LimitProfile(
            name=name,
            title=str(p["title"]),
            ref_o2=float(p["ref_o2"]),
            basis=str(p["basis"]),
            citation=str(p["citation"]),
            limits=MappingProxyType({k: float(v) for k, v in p["limits"].items()}),
            verify=bool(p.get("verify", False)),
            daily_limits=MappingProxyType({k: float(v) for k, v in p.get("daily_limits", {}).items()}),
            monthly_share=None if p.get("monthly_share") is None else float(p["monthly_share"]),
            monthly_citation=str(p.get("monthly_citation", "")),
        )
    return MappingProxyType(out)


from cems.limits._marks import (  # noqa: E402 - after the profiles, which the registry imports first
    RATE_EFFECTS,
    CapGroup,
    MarkCatalog,
    MarkType,
    RateEffect,
    builtin_mark_catalog,
    parse_catalog,
)

__all__ = [
    "RATE_EFFECTS",
    "CapGroup",
    "LimitProfile",
    "MarkCatalog",
    "MarkType",
    "RateEffect",
    "builtin_mark_catalog",
    "builtin_profiles",
    "parse_catalog",
]
