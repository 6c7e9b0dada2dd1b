"""HJ/T 212-2005 pollutant codes (``01`` dust, ``02`` SO2, ``S01`` O2, …) → HJ 212-2017 codes (``a34013``,
``a21026``, ``a19001``, …), read from the data file ``cems/protocol/hj212_2005_codes.toml`` (its source is
cited there).  Pure, no I/O beyond reading the package's own data once.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Final

from cems.model import Measurement

#: Flag version bits of HJ/T 212-2005 (DOMAIN.md §2: V = 0).
VERSION_2005: Final = 0


@dataclass(frozen=True, slots=True)
class Code2005:
    """One row of the table: the 2005 code, its 2017 code, the name, and whether it is still to be verified."""

    old: str
    code: str
    name: str
    verify: bool = False


@cache
def codes_2005() -> Mapping[str, Code2005]:
    """The table, by 2005 code."""
    text = resources.files("cems.protocol").joinpath("hj212_2005_codes.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)["codes"]
    return MappingProxyType(
        {
            old: Code2005(old, sys.intern(str(row["code"])), str(row["name"]), bool(row.get("verify", False)))
            for old, row in raw.items()
        }
    )


@cache
def _renames() -> Mapping[str, str]:
    return MappingProxyType({old: c.code for old, c in codes_2005().items()})


def is_2005(flag: int | None) -> bool:
    """A packet whose codes are HJ/T 212-2005's: Flag version bits 0, or no Flag at all (the version bits came
    with HJ 212-2017; a 2005 code never looks like a 2017 one, so a 2017 packet without Flag loses nothing)."""
    return flag is None or flag >> 2 == VERSION_2005


def map_2005(measurements: dict[str, Measurement]) -> dict[str, Measurement]:
    """``measurements`` with 2005 codes renamed to their 2017 codes (the same dict when none is listed).  A code
    whose 2017 code the packet also carries is kept as sent (the 2017 value is not overwritten)."""
    renames = _renames()
    if not any(code in renames for code in measurements):
        return measurements
    out: dict[str, Measurement] = {}
    for code, m in measurements.items():
        new = renames.get(code)
        if new is None or new in measurements:
            out[code] = m
        else:
            out[new] = m._replace(code=new)
    return out
