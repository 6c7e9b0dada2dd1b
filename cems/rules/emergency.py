"""Heavy-pollution response (重污染天气应急, issue 16): warning levels, emergency cut lists, staggered
production (错峰生产) and the checks made on them from monitoring data.  Pure: no I/O, no clock reads; time is
the data's (Beijing time) or an argument.

**Warning levels** (DOMAIN.md §6): none, blue, yellow, orange, red.  The city's level is set by an operator
(never automatically) for a period; :class:`WarningHistory` keeps every setting in the order made, and the
level in force at a data time is that of the *last* setting whose period covers it (a later setting — an
upgrade, a lift to ``none``, an early end — overrides an earlier one for the time it covers).

**Emission rate** (排放速率).  HJ 75-2017 computes a pollutant's emission rate from the *measured* (actual,
dry-basis, standard-state) concentration and the dry standard-state flue-gas flow (标干流量), not from the
O2-corrected (折算) concentration: correction to reference O2 is for comparing with concentration limits and
would overstate or understate the mass actually emitted (a diluted gas has a lower concentration and a
larger flow; the product is the mass).  So, for one hour::

    rate [kg/h] = C_measured [mg/m³] × Q_dry,std [m³/s] × 3600 [s/h] × 10⁻⁶ [kg/mg]

with ``C_measured`` the hourly mean of the pollutant (:attr:`~cems.rules.hourly.HourlyRecord.avg`, in mg/m³)
and ``Q`` the hourly mean of HJ 212 code ``a00000`` (flue-gas flow).  HJ 212-2017 appendix B gives a00000
in m³/s (DOMAIN.md §2); real devices often send m³/h, which the registry declares per outlet
(``units = { a00000 = "m3/h" }``) and the hourly aggregator converts to m³/s before this formula sees it.
Equivalently ``C × Q[m³/h] × 10⁻⁶``.  Worked example: 35 mg/m³ × 100 m³/s → 35 × 100 × 3600 × 10⁻⁶ =
12.6 kg/h.

**Cuts** are shares of the line's emergency baseline (应急减排基数, kg/h per pollutant, from the source
inventory): during a warning the hour is compliant when ``rate ≤ baseline × (1 − cut)`` (at the threshold is
compliant; the cities' plans give the cut as "≥ x %", DOMAIN.md §6).  City defaults are data
(:mod:`cems.limits.emergency`, seeds 001/003/004 and the 2017 plans); per-grade cuts of the 2020 guide are
not known (DOMAIN.md §9) and are configuration.  A stricter warning never relaxes a measure: a level without
its own measure takes the measure of the nearest lower level that has one.

**Operation** of a line that must stop (停产, or a 错峰 window) is shown by any of: the hourly mean flue-gas
flow above the line's idle threshold; a facility running state ``SBxxx-RS = 1`` (HJ 212: 0 off, 1 running,
…) in the hour; the hourly mean production power above the line's idle threshold (分表计电, DOMAIN.md §9).
**Treatment off** (治理设施未运行): production draws power above its idle threshold while the line's treatment
facility draws no more than its own — at any time, not only during warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Final

from cems.model import BEIJING
from cems.rules.aqi import POLLUTANTS, aqi, standard_for

# ---------------------------------------------------------------------------------------------- levels


class WarningLevel(IntEnum):
    """重污染天气预警 levels, ordered (DOMAIN.md §6; blue only in the 2017 plans)."""

    NONE = 0
    BLUE = 1
    YELLOW = 2
    ORANGE = 3
    RED = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> WarningLevel:
        """``none``/``blue``/``yellow``/``orange``/``red`` (any case) or 无/蓝色/黄色/橙色/红色."""
        t = text.strip().lower()
        level = _LEVEL_NAMES.get(t)
        if level is None:
            raise ValueError(f"unknown warning level {text!r} (none, blue, yellow, orange, red)")
        return level


_LEVEL_NAMES: Final[dict[str, WarningLevel]] = {
    **{lv.name.lower(): lv for lv in WarningLevel},
    "无": WarningLevel.NONE,
    "蓝色": WarningLevel.BLUE,
    "黄色": WarningLevel.YELLOW,
    "橙色": WarningLevel.ORANGE,
    "红色": WarningLevel.RED,
}


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


@dataclass(frozen=True, slots=True)
class WarningPeriod:
    """One setting of the city's level: ``level`` from ``start`` to ``end`` (exclusive; ``None``: until further
    notice), set by ``set_by`` (an operator) at ``set_at``."""

    level: WarningLevel
    start: datetime
    end: datetime | None
    set_by: str
    set_at: datetime | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _aware(self.start))
        if self.end is not None:
            object.__setattr__(self, "end", _aware(self.end))
            if self.end <= self.start:
                raise ValueError(f"warning ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")
        if self.set_at is not None:
            object.__setattr__(self, "set_at", _aware(self.set_at))

    def covers(self, t: datetime) -> bool:
        return self.start <= t and (self.end is None or t < self.end)

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level.label,
            "from": self.start.astimezone(BEIJING).isoformat(),
            "to": None if self.end is None else self.end.astimezone(BEIJING).isoformat(),
            "by": self.set_by,
            "set_at": None if self.set_at is None else self.set_at.astimezone(BEIJING).isoformat(),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WarningPeriod:
        """The inverse of :meth:`to_json`; raises ``ValueError`` (or ``KeyError``/``TypeError``) on bad input."""
        to, at = d.get("to"), d.get("set_at")
        return cls(
            level=WarningLevel.parse(str(d["level"])),
            start=datetime.fromisoformat(str(d["from"])),
            end=None if to is None else datetime.fromisoformat(str(to)),
            set_by=str(d["by"]),
            set_at=None if at is None else datetime.fromisoformat(str(at)),
            note=str(d.get("note", "")),
        )


#: A piece of time with one level in force: (start, end or None = open, level, the setting that gives it).
Span = tuple[datetime, datetime | None, WarningLevel, WarningPeriod | None]


@dataclass(frozen=True, slots=True)
class WarningHistory:
    """Every setting of the city's warning level, in the order made (see the module docstring)."""

    periods: tuple[WarningPeriod, ...] = ()

    def with_period(self, period: WarningPeriod) -> WarningHistory:
        return WarningHistory((*self.periods, period))

    def setting_at(self, t: datetime) -> WarningPeriod | None:
        """The setting in force at ``t``: the last made whose period covers it."""
        t = _aware(t)
        for p in reversed(self.periods):
            if p.covers(t):
                return p
        return None

    def level_at(self, t: datetime) -> WarningLevel:
        p = self.setting_at(t)
        return WarningLevel.NONE if p is None else p.level

    def spans(self) -> list[Span]:
        """The timeline: maximal pieces of constant setting, in time order (gaps with no setting are left out)."""
        cuts: set[datetime] = set()
        for q in self.periods:
            cuts.add(q.start)
            if q.end is not None:
                cuts.add(q.end)
        points = sorted(cuts)
        out: list[Span] = []
        for i, a in enumerate(points):
            b = points[i + 1] if i + 1 < len(points) else None
            p = self.setting_at(a)
            if p is None:
                continue
            if out and out[-1][3] is p and out[-1][1] == a:
                out[-1] = (out[-1][0], b, p.level, p)
            else:
                out.append((a, b, p.level, p))
        return out

    def warnings(self) -> list[Span]:
        """The pieces of time with a warning (level above none), adjacent pieces of one level merged."""
        out: list[Span] = []
        for a, b, level, p in self.spans():
            if level is WarningLevel.NONE:
                continue
            if out and out[-1][1] == a and out[-1][2] is level:
                out[-1] = (out[-1][0], b, level, out[-1][3])
            else:
                out.append((a, b, level, p))
        return out

    def at_least(self, level: WarningLevel) -> list[tuple[datetime, datetime | None]]:
        """Pieces of time with a level ≥ ``level`` (merged when adjacent)."""
        out: list[tuple[datetime, datetime | None]] = []
        for a, b, lv, _ in self.spans():
            if lv < level or lv is WarningLevel.NONE:
                continue
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.periods]

    @classmethod
    def from_json(cls, rows: Iterable[Mapping[str, Any]]) -> WarningHistory:
        return cls(tuple(WarningPeriod.from_json(r) for r in rows))


# ---------------------------------------------------------------------------------------------- emission rate

#: mg → kg.
KG_PER_MG: Final = 1e-6
SECONDS_PER_HOUR: Final = 3600.0


def emission_rate_kg_h(concentration_mg_m3: float, flow_m3_s: float) -> float:
    """Hourly emission rate (kg/h) from the measured dry standard-state concentration (mg/m³) and the dry
    standard-state flow (m³/s, HJ 212 a00000): ``C × Q × 3600 × 10⁻⁶`` (HJ 75-2017; module docstring)."""
    return concentration_mg_m3 * flow_m3_s * SECONDS_PER_HOUR * KG_PER_MG


# ---------------------------------------------------------------------------------------------- measures

CUT: Final = "cut"
STOP: Final = "stop"
EXEMPT: Final = "exempt"


@dataclass(frozen=True, slots=True)
class Measure:
    """What a line must do at one warning level: cut each pollutant by a share of its baseline, stop, or
    nothing (exempt).  ``source``: where the measure comes from (a profile and its seed, or the registry)."""

    kind: str  # "cut" | "stop" | "exempt"
    cuts: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""


def allowed_rate(baseline_kg_h: float, cut: float) -> float:
    """The highest compliant hourly rate: ``baseline × (1 − cut)``."""
    return baseline_kg_h * (1.0 - cut)


def cut_exceeded(rate_kg_h: float, baseline_kg_h: float, cut: float) -> bool:
    """The hour is above the allowed rate (at the allowed rate is compliant; a relative 10⁻⁹ absorbs float
    rounding of ``baseline × (1 − cut)``)."""
    allowed = allowed_rate(baseline_kg_h, cut)
    return rate_kg_h > allowed + 1e-9 * max(1.0, abs(allowed))


@dataclass(frozen=True, slots=True)
class StaggeredWindow:
    """A mandated stop of 错峰生产 (DOMAIN.md §6): a date window (``start``–``end``, end exclusive), or "during
    any warning at ``min_level`` or above", or both (the window only while such a warning is in force)."""

    start: datetime | None = None
    end: datetime | None = None
    min_level: WarningLevel | None = None
    reason: str = ""

    def mandated(self, t: datetime, level: WarningLevel) -> bool:
        if self.start is not None and t < self.start:
            return False
        if self.end is not None and t >= self.end:
            return False
        return not (self.min_level is not None and (level is WarningLevel.NONE or level < self.min_level))

    def describe(self) -> str:
        parts = []
        if self.start is not None or self.end is not None:
            a = "…" if self.start is None else self.start.astimezone(BEIJING).date().isoformat()
            b = "…" if self.end is None else self.end.astimezone(BEIJING).isoformat()
            parts.append(f"{a}–{b}")
        if self.min_level is not None:
            parts.append(f"warning ≥ {self.min_level.label}")
        return " during ".join(parts) + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True, slots=True)
class LinePlan:
    """A production line on the emergency list (应急减排清单), resolved from the registry.

    ``outlets``: the MNs whose emissions are the line's (the rate is summed over them); ``baseline``:
    pollutant → kg/h; ``measures``: level → measure (levels without one: see :meth:`measure_at`);
    ``running_codes``: facility codes whose ``-RS`` shows the line running; ``production_power`` /
    ``treatment_power``: (MN, code) of the line's power meters (kW); idle thresholds: at or below them the
    line (or its treatment) is idle."""

    enterprise: str
    id: str
    name: str = ""
    grade: str | None = None
    outlets: tuple[str, ...] = ()
    baseline: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    measures: Mapping[WarningLevel, Measure] = field(default_factory=lambda: MappingProxyType({}))
    running_codes: tuple[str, ...] = ()
    production_power: tuple[str, str] | None = None
    treatment_power: tuple[str, str] | None = None
    idle_flow_m3_s: float | None = None
    idle_power_kw: float = 0.0
    treatment_idle_power_kw: float = 0.0
    staggered: tuple[StaggeredWindow, ...] = ()

    def measure_at(self, level: WarningLevel) -> Measure | None:
        """The measure in force at ``level``: its own, or that of the nearest lower level that has one."""
        if level is WarningLevel.NONE:
            return None
        for lv in range(int(level), 0, -1):
            m = self.measures.get(WarningLevel(lv))
            if m is not None:
                return m
        return None

    def staggered_at(self, t: datetime, level: WarningLevel) -> StaggeredWindow | None:
        return next((w for w in self.staggered if w.mandated(t, level)), None)


@dataclass(frozen=True, slots=True)
class HourEvidence:
    """What the data show about a line in one hour (``None``: not measured)."""

    flow_m3_s: float | None = None
    running: tuple[str, ...] = ()  # facility codes with -RS = 1 in the hour
    production_kw: float | None = None
    treatment_kw: float | None = None


def operation_evidence(plan: LinePlan, ev: HourEvidence) -> list[tuple[str, float, float]]:
    """Why the line counts as operating in the hour: (what, value, idle threshold) for each sign found —
    flow above the idle flow, a running state ``-RS = 1`` (value 1, threshold 0), production power above
    the idle power.  Empty: no sign of operation."""
    out: list[tuple[str, float, float]] = []
    if plan.idle_flow_m3_s is not None and ev.flow_m3_s is not None and ev.flow_m3_s > plan.idle_flow_m3_s:
        out.append(("a00000", ev.flow_m3_s, plan.idle_flow_m3_s))
    for code in ev.running:
        out.append((f"{code}-RS", 1.0, 0.0))
    if plan.production_power is not None and ev.production_kw is not None and ev.production_kw > plan.idle_power_kw:
        out.append((plan.production_power[1], ev.production_kw, plan.idle_power_kw))
    return out


def treatment_off(plan: LinePlan, ev: HourEvidence) -> bool:
    """Production draws power above its idle threshold while the treatment facility draws no more than its own
    (分表计电, DOMAIN.md §9).  Needs both meters' values for the hour."""
    if plan.production_power is None or plan.treatment_power is None:
        return False
    p, t = ev.production_kw, ev.treatment_kw
    if p is None or t is None or not (math.isfinite(p) and math.isfinite(t)):
        return False
    return p > plan.idle_power_kw and t <= plan.treatment_idle_power_kw


@dataclass(frozen=True, slots=True)
class CutResult:
    """One pollutant of one line in one warning hour: the rate, the baseline, the cut and the verdict."""

    pollutant: str
    rate_kg_h: float
    baseline_kg_h: float
    cut: float
    exceeded: bool

    @property
    def allowed_kg_h(self) -> float:
        return allowed_rate(self.baseline_kg_h, self.cut)


def cut_results(plan: LinePlan, measure: Measure, rates: Mapping[str, float]) -> list[CutResult]:
    """The cut checks of one hour: every pollutant with a cut, a baseline and a rate (summed over the line's
    outlets by the caller)."""
    out: list[CutResult] = []
    for p in sorted(measure.cuts):
        base = plan.baseline.get(p)
        rate = rates.get(p)
        if base is None or rate is None:
            continue
        cut = measure.cuts[p]
        out.append(CutResult(p, rate, base, cut, cut_exceeded(rate, base, cut)))
    return out


def mandated_stops(
    plan: LinePlan, history: WarningHistory, lo: datetime, hi: datetime
) -> list[tuple[datetime, datetime, str]]:
    """The line's mandated stops (错峰 windows, and stop measures during warnings) within [lo, hi), as
    (start, end, reason) pieces: hours in them are not expected for the 90 % rule (DOMAIN.md §6)."""
    cuts: set[datetime] = {lo, hi}
    for win in plan.staggered:
        for t in (win.start, win.end):
            if t is not None and lo < t < hi:
                cuts.add(t)
    for a, b, _, _ in history.spans():
        for t in (a, b):
            if t is not None and lo < t < hi:
                cuts.add(t)
    points = sorted(cuts)
    out: list[tuple[datetime, datetime, str]] = []
    for a, b in pairwise(points):
        level = history.level_at(a)
        reason = ""
        w = plan.staggered_at(a, level)
        if w is not None:
            reason = f"错峰生产 {w.describe()}"
        else:
            m = plan.measure_at(level)
            if m is not None and m.kind == STOP:
                reason = f"应急停产 ({level.label} warning)"
        if not reason:
            continue
        if out and out[-1][1] == a and out[-1][2] == reason:
            out[-1] = (out[-1][0], b, reason)
        else:
            out.append((a, b, reason))
    return out


def sum_rates(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Sum per-outlet rates of a line (a pollutant missing at any outlet is missing for the line: a partial sum
    would understate the line's emissions)."""
    if not parts:
        return {}
    keys = set(parts[0]).intersection(*parts[1:])
    return {k: sum(p[k] for p in parts) for k in sorted(keys)}


# ---------------------------------------------------------------------------------------------- suggestion

#: Hours of AQI > 200 for yellow / orange / red, and of AQI > 300 within red (DOMAIN.md §6: the plans' warning
#: criteria are *forecast* durations: yellow ≥ 48 h, orange ≥ 72 h, red ≥ 96 h with > 300 for ≥ 48 h, or AQI
#: reaching 500).
_SUGGEST_HOURS: Final = ((WarningLevel.YELLOW, 48), (WarningLevel.ORANGE, 72), (WarningLevel.RED, 96))
_RED_SEVERE_HOURS: Final = 48


def suggest_level(hourly_aqi: Sequence[int | None]) -> tuple[WarningLevel, str]:
    """A *suggestion* for the operator, never applied automatically (issue 16): the level the plans' criteria
    give when applied to the trailing run of hourly AQI values (oldest first; ``None`` = missing, which ends
    the run) instead of a forecast.  Returns the level and the reason in words."""
    run = 0
    severe = 0
    for v in reversed(hourly_aqi):
        if v is None or v <= 200:
            break
        run += 1
        severe += v > 300
    peak = max((v for v in hourly_aqi[len(hourly_aqi) - run :] if v is not None), default=0)
    if peak >= 500:
        return WarningLevel.RED, f"AQI reached {peak} (≥ 500)"
    level = WarningLevel.NONE
    for lv, hours in _SUGGEST_HOURS:
        if run >= hours and (lv is not WarningLevel.RED or severe >= _RED_SEVERE_HOURS):
            level = lv
    if level is WarningLevel.NONE:
        return level, f"AQI > 200 for the last {run} h (yellow needs ≥ 48 h)"
    return level, f"AQI > 200 for the last {run} h ({severe} h > 300)"


@dataclass(frozen=True, slots=True)
class CityHour:
    """The city's real-time AQI of one Beijing hour, from its stations' hourly values (``cems warning
    suggest``): each pollutant's city value is the arithmetic mean of the stations that have a valid hourly
    value for it (HJ 663-2013 §5: a city's concentration is the mean of its assessment stations), the AQI is
    HJ 633's of those means (the standard in force on the hour's date).  ``aqi`` None: no station reported,
    or too few pollutants for an AQI (HJ 633: NA unless the others already exceed 100)."""

    hour_start: datetime
    aqi: int | None
    #: Stations that gave at least one valid value in the hour.
    stations: int
    #: Pollutant (AQI name) → the city mean, µg/m³ (CO mg/m³).
    means: Mapping[str, float]

    def to_json(self) -> dict[str, object]:
        return {
            "hour_start": self.hour_start.isoformat(),
            "aqi": self.aqi,
            "stations": self.stations,
            "means": {k: round(v, 3) for k, v in self.means.items()},
        }


def city_hours(
    station_hours: Mapping[datetime, Sequence[Mapping[str, float]]], start: datetime, end: datetime
) -> list[CityHour]:
    """The city's hourly AQI for every Beijing hour in [``start``, ``end``), oldest first: ``station_hours``
    maps an hour's start to the valid hourly values of each station that reported (AQI name → value); an hour
    missing from it has no AQI (and so ends a run in :func:`suggest_level`)."""
    first = start.astimezone(BEIJING).replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    out: list[CityHour] = []
    t = first
    while t < end:
        stations = [s for s in station_hours.get(t, ()) if s]
        means: dict[str, float] = {}
        for p in POLLUTANTS:
            vals = [s[p] for s in stations if p in s]
            if vals:
                means[p] = math.fsum(vals) / len(vals)
        value = aqi(means, period="1h", standard=standard_for(t.date())).aqi if means else None
        out.append(CityHour(t, value, len(stations), MappingProxyType(means)))
        t += timedelta(hours=1)
    return out
