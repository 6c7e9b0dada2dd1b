"""Registry tables of the heavy-pollution response (issue 16): the city's default emergency profile, each
enterprise's emergency list (应急减排清单) per production line, the line's power meters (分表计电) and its
staggered-production (错峰生产) windows.

TOML (one ``[[enterprise.line]]`` per production line on the list)::

    [emergency]                          # optional: the city's default cuts (cems/limits/emergency.toml)
    profile = "xinmi_langfang"

    [[enterprise]]
    id = "E001"
    grade = "B"                          # 绩效分级: A+, A, B, C, D or 引领性 (环办大气〔2026〕2号)
    [[enterprise.line]]
    id = "kiln1"
    name = "1#熟料生产线"
    outlets = ["MN0001"]                 # the outlets carrying the line's emissions (rates summed)
    baseline = { a21026 = 10.0, a21002 = 40.0, a34013 = 2.0 }   # 应急减排基数, kg/h
    running_codes = ["SB1"]              # SB1-RS = 1: running (HJ 212 facility state)
    production_power = { code = "ep01" } # kW, real-time (HJ 212-2025 CN=2011) on the line's first outlet
    treatment_power = { mn = "MN0009", code = "et01" }
    idle_flow_m3_s = 1.0                 # at or below: no operation shown by flow
    idle_power_kw = 5.0
    treatment_idle_power_kw = 2.0
    measure = { orange = "stop", red = "stop", yellow = { cut = { a21026 = 0.15 } } }
    [[enterprise.line.staggered]]
    from = 2021-12-22
    to = 2022-02-09
    reason = "砖瓦窑 错峰生产 (seed 002)"
    [[enterprise.line.staggered]]
    warning_at_least = "blue"            # cement grinding stops during any warning (DOMAIN.md §6)

A level's measure is ``"stop"``, ``"exempt"``, ``"profile"`` (the profile's cuts, the default for every level
the profile has) or ``{ cut = { code = share } }`` (overrides the profile's cuts for that level, per code).
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cems.limits.emergency import PROFILE_LEVELS, builtin_emergency_profiles
from cems.model import BEIJING

#: 绩效分级 grades (环办大气〔2026〕2号: A/B/C/D, new A+; 引领性 for simple industries; DOMAIN.md §9).
GRADES = ("A+", "A", "B", "C", "D", "引领性")
LEVELS = ("none", *PROFILE_LEVELS)


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


def _aware(v: datetime | date) -> datetime:
    if not isinstance(v, datetime):
        v = datetime.combine(v, time(0))
    return v if v.tzinfo is not None else v.replace(tzinfo=BEIJING)


class EmergencySettings(_Base):
    """``[emergency]``: the city's default profile of cuts per warning level."""

    profile: str | None = None

    @model_validator(mode="after")
    def _known(self) -> EmergencySettings:
        _check_profile(self.profile)
        return self


def _check_profile(name: str | None) -> None:
    known = builtin_emergency_profiles()
    if name is not None and name not in known:
        raise ValueError(f"unknown emergency profile {name!r}; built-in: {', '.join(sorted(known))}")


class CutMeasure(_Base):
    """``{ cut = { a21026 = 0.2 } }``: shares (0–1) of the baseline to cut, per pollutant code."""

    cut: dict[str, Annotated[float, Field(ge=0, le=1)]]


MeasureSpec = Literal["stop", "exempt", "profile"] | CutMeasure


class PowerMeter(_Base):
    """A power meter of the line: the code (kW, real-time values) sent by ``mn`` (default: the line's first
    outlet).  HJ 212-2025 sends production and treatment line power as real-time data (CN=2011, DOMAIN.md §9);
    its codes are not in the standard's text seen here, so the registry names them."""

    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,24}$")]
    mn: str | None = None


class StaggeredSpec(_Base):
    """``[[enterprise.line.staggered]]``: a 错峰生产 stop window, by dates and/or during warnings ≥ a level."""

    from_: Annotated[datetime | date | None, Field(alias="from")] = None
    to: datetime | date | None = None
    warning_at_least: Literal["blue", "yellow", "orange", "red"] | None = None
    reason: str = ""

    @property
    def start(self) -> datetime | None:
        return None if self.from_ is None else _aware(self.from_)

    @property
    def end(self) -> datetime | None:
        return None if self.to is None else _aware(self.to)

    @model_validator(mode="after")
    def _window(self) -> StaggeredSpec:
        if self.from_ is None and self.to is None and self.warning_at_least is None:
            raise ValueError("a staggered window needs from/to dates, warning_at_least, or both")
        if (self.from_ is None) != (self.to is None):
            raise ValueError("a staggered date window needs both from and to")
        s, e = self.start, self.end
        if s is not None and e is not None and e <= s:
            raise ValueError(f"staggered window ends ({e.isoformat()}) before it starts ({s.isoformat()})")
        return self


class ProductionLine(_Base):
    """``[[enterprise.line]]``: a production line on the emergency list (see the module docstring)."""

    id: Annotated[str, Field(min_length=1)]
    name: str = ""
    grade: Literal["A+", "A", "B", "C", "D", "引领性"] | None = None
    outlets: list[str] = Field(default_factory=list)
    profile: str | None = None
    #: 应急减排基数, kg/h per pollutant code.
    baseline: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    measure: dict[Literal["blue", "yellow", "orange", "red"], MeasureSpec] = Field(default_factory=dict)
    running_codes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,24}$")]] = Field(default_factory=list)
    production_power: PowerMeter | None = None
    treatment_power: PowerMeter | None = None
    idle_flow_m3_s: Annotated[float, Field(ge=0)] | None = None
    idle_power_kw: Annotated[float, Field(ge=0)] = 0.0
    treatment_idle_power_kw: Annotated[float, Field(ge=0)] = 0.0
    staggered: list[StaggeredSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ProductionLine:
        _check_profile(self.profile)
        for level, m in self.measure.items():
            if isinstance(m, CutMeasure):
                missing = sorted(p for p in m.cut if p not in self.baseline)
                if missing:
                    raise ValueError(f"measure.{level}: cut of {', '.join(missing)} without a baseline (kg/h)")
        if self.treatment_power is not None and self.production_power is None:
            raise ValueError("treatment_power without production_power: treatment_off compares the two")
        return self


def emergency_problems(
    enterprises: list[tuple[int, str, list[ProductionLine]]],
    outlet_enterprise: dict[str, str],
    default_profile: str | None,
) -> list[str]:
    """Cross-checks of the emergency lists, each with its TOML location: line ids unique per enterprise, the
    line's outlets and meters are outlets of the registry (its own enterprise's, for the emissions), a line
    with cuts has a profile or its own cut measures."""
    problems: list[str] = []
    for i, eid, lines in enterprises:
        seen: set[str] = set()
        for j, ln in enumerate(lines):
            where = f"enterprise[{i}]({eid}).line[{j}]({ln.id})"
            if ln.id in seen:
                problems.append(f"{where}.id: duplicate line id {ln.id!r}")
            seen.add(ln.id)
            for mn in ln.outlets:
                owner = outlet_enterprise.get(mn)
                if owner is None:
                    problems.append(f"{where}.outlets: {mn!r} is not an outlet MN of the registry")
                elif owner != eid:
                    problems.append(f"{where}.outlets: {mn!r} is an outlet of enterprise {owner!r}, not {eid!r}")
            for key, meter in (("production_power", ln.production_power), ("treatment_power", ln.treatment_power)):
                if meter is None:
                    continue
                if meter.mn is None and not ln.outlets:
                    problems.append(f"{where}.{key}: no mn and the line has no outlets to take it from")
                elif meter.mn is not None and meter.mn not in outlet_enterprise:
                    problems.append(f"{where}.{key}.mn: {meter.mn!r} is not an outlet MN of the registry")
            uses_profile = any(m == "profile" for m in ln.measure.values())
            if uses_profile and ln.profile is None and default_profile is None:
                problems.append(f'{where}.measure: "profile" but no profile (line.profile or [emergency].profile)')
            if (ln.idle_flow_m3_s is None and not ln.running_codes and ln.production_power is None) and (
                "stop" in ln.measure.values() or ln.staggered
            ):
                problems.append(
                    f"{where}: must stop (measure or staggered) but has no sign of operation to check: give "
                    "idle_flow_m3_s, running_codes or production_power"
                )
    return problems
