from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Annotated, Any, Final, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cems.errors import RejectedMessage
from cems.limits import MarkCatalog, builtin_mark_catalog, builtin_profiles
from cems.model import BEIJING
from cems.registry._emergency import EmergencySettings, ProductionLine, emergency_problems

#: HJ 212 MN: up to 24 characters; real devices use letters, digits, '-' and '_'.
_MN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,24}$")
_CODE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,16}$")


#: The distinct ``__pydantic_fields_set__`` of the registry models (see ``_Strict._share_fields_set``).
_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
#: The empty containers the registry models share (see ``_Strict._share_fields_set``).
_EMPTY_DICT: Final[dict[Any, Any]] = {}
_EMPTY_LIST: Final[list[Any]] = []


_M = TypeVar("_M", bound=BaseModel)


def _intern(v: str | None) -> str | None:
    return None if v is None else sys.intern(v)


class _Strict(BaseModel):
    # strict: `rtd_interval_s = "30"` is an error, not silently 30 (TOML has real numbers, dates and booleans)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)

    @model_validator(mode="after")
    def _share_fields_set(self) -> Self:
        """Memory: pydantic keeps, per model, the set of the fields given explicitly (``model_fields_set``),
        ≈ 0.2–0.7 KB each; a registry of 100 000 outlets has a handful of distinct ones.  Models with equal
        sets share one.  Safe because the models are frozen: pydantic only adds to the set on attribute
        assignment, and ``model_copy`` copies it first."""
        fs = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(fs), fs)
        if shared is not fs:
            object.__setattr__(self, "__pydantic_fields_set__", shared)
        # Memory (issue 20): most outlets have no limits, units, stops or limit changes: their empty
        # containers are one shared dict and one shared list (64 and 56 bytes each per outlet otherwise).
        # Never mutated: the models are frozen and nothing in cems changes a registry's containers in place
        # (a change is a new model, ``model_copy(update=...)``); tests/unit/test_registry_memory.py checks
        # they stay empty.
        values = self.__dict__
        for name, v in values.items():
            if not v and type(v) is dict:
                values[name] = _EMPTY_DICT
            elif not v and type(v) is list:
                values[name] = _EMPTY_LIST
        return self


def _compact(m: _M) -> _M:
    """An equal copy of a validated model that keeps its fields in the object (CPython's inline values with
    the keys shared by every instance of the class) instead of a dict of its own: an outlet's ≈ 540 bytes
    become ≈ 260 (issue 20, memory at 100 000 outlets).  pydantic reads the fields as attributes and through
    ``__dict__`` (made on demand, sharing the keys); the copy behaves the same."""
    cls = type(m)
    c = cls.__new__(cls)
    for name, v in m.__dict__.items():
        object.__setattr__(c, name, v)
    object.__setattr__(c, "__pydantic_fields_set__", m.__pydantic_fields_set__)
    object.__setattr__(c, "__pydantic_extra__", m.__pydantic_extra__)
    object.__setattr__(c, "__pydantic_private__", m.__pydantic_private__)
    return c


def _aware(v: datetime | date, tz: Any = BEIJING) -> datetime:
    """A registry date/datetime without an offset is Beijing time (DOMAIN.md: all standard times are UTC+8)."""
    if not isinstance(v, datetime):
        v = datetime.combine(v, time(0))
    return v if v.tzinfo is not None else v.replace(tzinfo=tz)


class Quality(_Strict):
    """Thresholds of the data-quality and falsification signals (监测数据弄虚作假, issue 17;
    :mod:`cems.rules.quality`), registry ``[city.quality]``.  **Every default is a documented choice, not a
    figure from a standard** (the seeds order the crackdown and the check that emissions fit operating
    conditions but give no numbers); docs/events.md gives each one's reasoning.  A signal is a lead for a
    person to check, never an exceedance."""

    #: Off: no quality signal is judged (the other rules are unaffected).
    enabled: bool = True
    #: Flue-gas flow (a00000, m³/s after unit conversion) above which the outlet counts as running.
    running_flow: Annotated[float, Field(ge=0)] = 0.0
    #: ``flatline``: hours in a row (≥) whose sub-values stay within the tolerance while running.
    flatline_hours: Annotated[int, Field(ge=1)] = 4
    #: ``flatline``: minutes of the hour that must carry a valid value for the hour to be judged (six: a DAS
    #: sending 10-minute records gives six; an hourly record with its Min and Max covers the hour).
    flatline_min_minutes: Annotated[int, Field(ge=2, le=60)] = 6
    #: ``flatline``: tolerance of the hour's max − min: ``max(abs, rel × |mean|)``.
    flatline_abs_tol: Annotated[float, Field(ge=0)] = 0.01
    flatline_rel_tol: Annotated[float, Field(ge=0)] = 0.001
    #: ``flatline``: hours whose values all stay at or below this (mg/m³ or %) are not judged (a clean stack
    #: whose DAS clips the analyser's zero noise to 0 is flat without anything being hidden).
    flatline_floor: Annotated[float, Field(ge=0)] = 1.0
    #: ``o2_anomaly``: hourly O2 mean (%) at or above which the flue gas is (near) ambient air.
    o2_ambient: Annotated[float, Field(gt=0, le=21)] = 20.0
    #: ``zs_inconsistent``: tolerance of DAS ZsAvg/ZsRtd against the formula, ``max(rel × value, abs)``
    #: (the same as the hourly rule's agreement check, :func:`cems.rules.o2.zs_agrees`).
    zs_rel_tol: Annotated[float, Field(ge=0)] = 0.02
    zs_abs_tol: Annotated[float, Field(ge=0)] = 0.1
    #: ``zs_inconsistent``: real-time minutes of an hour whose ZsRtd disagrees that make the hour inconsistent.
    zs_rtd_min_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    #: ``hourly_inconsistent``: tolerance of the DAS hourly Avg against the mean of its minute data.
    hourly_rel_tol: Annotated[float, Field(ge=0)] = 0.05
    hourly_abs_tol: Annotated[float, Field(ge=0)] = 0.5
    #: ``hourly_inconsistent``: minutes (of 60) the minute records must cover for the hour to be judged.
    hourly_min_minutes: Annotated[int, Field(ge=1, le=60)] = 45
    #: ``limit_hugging``: a valid hour "hugs" the limit when its corrected mean is in [band × limit, limit].
    hugging_band: Annotated[float, Field(gt=0, lt=1)] = 0.9
    #: ``limit_hugging``: a day hugs when this share of its valid hours hug ...
    hugging_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    #: ... and that share is this much above the outlet's own median share of previous days ...
    hugging_rise: Annotated[float, Field(ge=0, le=1)] = 0.3
    #: ... over at least this many previous days with ≥ 20 valid hours (HJ 75's valid day), of the last 30.
    hugging_history_days: Annotated[int, Field(ge=1, le=30)] = 7
    #: ``out_of_range``: a concentration below −this (mg/m³) is negative beyond zero noise.
    negative_tol: Annotated[float, Field(ge=0)] = 1.0
    #: ``out_of_range``: minutes of an hour with an impossible value that make the hour out of range.
    out_of_range_min_minutes: Annotated[int, Field(ge=1, le=60)] = 3
    #: ``out_of_range``: analyser full scale per code (mg/m³ or %): values at ≥ 99.9 % of it are pinned.
    analyser_range: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    #: ``out_of_range``: O2 + CO2 (%) above this is impossible (21 % O2 of air plus a margin for the two
    #: analysers' errors).
    o2_co2_max: Annotated[float, Field(gt=0)] = 21.5
    #: ... judged only for outlets whose limit profile starts with one of these: fuel combustion.  Kilns and
    #: furnaces that calcine carbonates (cement, lime, sinter flux, glass batch) release CO2 without using
    #: O2, so their O2 + CO2 can exceed 21 % honestly.
    o2_co2_profiles: list[str] = Field(
        default_factory=lambda: ["coal_power", "gas_turbine", "thermal_power", "boiler_", "waste_incineration"]
    )
    #: ``out_of_range``: the dry standard flow (a00000) may exceed velocity × duct area (``outlet.duct_area_m2``,
    #: the wet flow at stack conditions) by this share before it is impossible.  At a stack temperature above
    #: 0 °C and near-atmospheric pressure, reducing to 273 K, 101.325 kPa and dry gas only shrinks the volume
    #: (HJ 75-2017 standard-state conversion), so the margin covers the two instruments' errors only.
    dry_wet_tol: Annotated[float, Field(ge=0)] = 0.10
    #: ... judged only at a velocity of at least this (m/s): at start-up and shut-down a differential-pressure
    #: probe reads near zero and the ratio means nothing (a documented choice).
    dry_wet_min_velocity: Annotated[float, Field(ge=0)] = 2.0
    #: ``operation_mismatch``: minutes of an hour with production running and treatment reporting off.
    mismatch_min_minutes: Annotated[int, Field(ge=1, le=60)] = 15


class City(_Strict):
    name: str
    transmission_rate_target: Annotated[float, Field(gt=0, le=1)] = 0.90
    supervision_enterprise_threshold: Annotated[int, Field(ge=1)] = 5
    ack_sla_hours: Annotated[float, Field(gt=0)] = 2.0
    #: The document that sets the city's 挂牌督办 rule (the 90 % target and the enterprise threshold), cited in
    #: the reasons of the report, in Chinese: set it to the plan's title and 文号 (seeds 000/001/003/004 are
    #: city plans, DOMAIN.md §5).  The default names the provision without inventing a title.
    supervision_basis: str = "本市大气污染防治实施方案中的挂牌督办规定"
    #: Assessed factors of the 90 % rule (DOMAIN.md §5): particulate, SO2, NOx by default.
    assessed_factors: list[str] = Field(default_factory=lambda: ["a34013", "a21026", "a21002"])
    #: Dilution cut-off, % O2: above it no corrected (折算) value is computed and the hour is not valid for
    #: the corrected pollutants.  No standard gives a figure: a documented choice, see
    #: ``cems.rules.o2.DEFAULT_MAX_O2``.  ``outlet.o2_max`` overrides it per outlet.
    o2_max: Annotated[float, Field(gt=0, le=21)] = 19.5
    #: Flag T (over the analyser's range): the value sent is a lower bound of the true value, so T data are
    #: valid and judged (an hour must not escape judgement because the analyser saturated; issue 12 item 8,
    #: documented in ``cems.rules.hourly``).  ``false``: T data are not valid, like the other flags.
    over_range_valid: bool = True
    #: Data-quality and falsification signals' thresholds (``[city.quality]``, issue 17).
    quality: Quality = Field(default_factory=Quality)


class District(_Strict):
    code: str
    name: str


class Stop(_Strict):
    """A declared stop (停产/停运): hours inside it are not expected and silence is not an interruption."""

    from_: Annotated[datetime | date, Field(alias="from")]
    to: datetime | date
    reason: str = ""

    @property
    def start(self) -> datetime:
        return _aware(self.from_)

    @property
    def end(self) -> datetime:
        return _aware(self.to)

    @model_validator(mode="after")
    def _ordered(self) -> Stop:
        if self.end <= self.start:
            raise ValueError(f"stop ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")
        return self


class LimitChange(_Strict):
    """From a date on, another profile, reference O2 or permit limits apply (e.g. an ultra-low retrofit)."""

    from_: Annotated[datetime | date, Field(alias="from")]
    profile: str | None = None
    ref_o2: Annotated[float, Field(ge=0, lt=21)] | None = None
    limits: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    reason: str = ""

    @property
    def start(self) -> datetime:
        return _aware(self.from_)


class Outlet(_Strict):
    mn: str
    name: str
    profile: str
    #: HJ 212 PW.  Prefer ``password_env`` (name of an environment variable) in production registries;
    #: not both.  :func:`cems.registry.with_credentials` resolves ``password_env`` into ``password``.
    password: str | None = None
    password_env: str | None = None
    rtd_interval_s: Annotated[int, Field(gt=0, le=3600)] = 30
    ref_o2: Annotated[float, Field(ge=0, lt=21)] | None = None
    #: Permit (排污许可证) or local-standard limits, mg/m³; stricter-wins with the profile.
    limits: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    #: Units the device sends, per code, e.g. ``a00000 = "m3/h"``.
    units: dict[str, str] = Field(default_factory=dict)
    since: date | None = None
    interruption_threshold_s: Annotated[int, Field(gt=0)] | None = None
    #: Dilution cut-off (% O2) of this outlet, instead of ``city.o2_max``.
    o2_max: Annotated[float, Field(gt=0, le=21)] | None = None
    stop: list[Stop] = Field(default_factory=list)
    limit_change: list[LimitChange] = Field(default_factory=list)
    #: The industry whose operating-condition marks (工况标记) the outlet may use ("1 + N", MEE 公告2022年第21号):
    #: an ``[industry.*]`` code of ``cems/limits/marks.toml``; by default derived from ``profile``.
    mark_industry: str | None = None
    #: The outlet's flow in normal operation (m³/s, e.g. from the permit or the design): a ``stop`` mark over
    #: hours whose flow reaches a share of it raises ``mark_suspicious`` (marks.toml ``[suspicious]``).
    normal_flow: Annotated[float, Field(gt=0)] | None = None
    #: Cross-section of the duct at the flow-measuring point (m², from the CEMS acceptance report, HJ 75-2017):
    #: velocity (a01011) × this is the wet flow at stack conditions, which the dry standard flow (a00000)
    #: cannot exceed in a hot stack (``out_of_range``, issue 17).  Optional: without it the check is off.
    duct_area_m2: Annotated[float, Field(gt=0)] | None = None
    #: Where the stack stands (WGS 84), for the monitoring room's map (docs/dashboards.md); optional.
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None

    @field_validator("mn")
    @classmethod
    def _mn(cls, v: str) -> str:
        if not _MN_RE.match(v):
            raise ValueError(f"MN {v!r} must be 1-24 letters, digits, '-' or '_' (HJ 212)")
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        known = builtin_profiles()
        if v not in known:
            raise ValueError(f"unknown limit profile {v!r}; built-in profiles: {', '.join(sorted(known))}")
        return sys.intern(v)

    @field_validator("name", "password", "password_env")
    @classmethod
    def _shared_text(cls, v: str | None) -> str | None:
        # memory: many outlets have the same name ("1#排放口") or password: one string, not one per outlet
        return _intern(v)

    @field_validator("limits", "units")
    @classmethod
    def _codes(cls, v: dict[str, Any]) -> dict[str, Any]:
        for code in v:
            if not _CODE_RE.match(code):
                raise ValueError(f"{code!r} is not a pollutant code")
        return v

    @model_validator(mode="after")
    def _changes(self) -> Outlet:
        if self.password is not None and self.password_env is not None:
            raise ValueError("password and password_env: give one (password_env names the variable holding the PW)")
        known = builtin_profiles()
        for ch in self.limit_change:
            if ch.profile is not None and ch.profile not in known:
                raise ValueError(f"limit_change: unknown limit profile {ch.profile!r}")
        return self

    @property
    def hj212_password(self) -> str | None:
        """The HJ 212 PW packets must carry (``None``: no check).  An outlet with ``password_env`` that
        :func:`cems.registry.with_credentials` has not resolved fails closed: every packet is rejected
        ``bad_password`` (this reads no environment)."""
        if self.password is None and self.password_env:
            raise RejectedMessage(
                "bad_password", f"MN {self.mn!r}: password_env {self.password_env!r} is not set: no PW can match"
            )
        return self.password

    @property
    def interruption_threshold(self) -> int:
        """Seconds of silence that make a data interruption (DOMAIN.md §5): max(10 min, 3 × interval)."""
        if self.interruption_threshold_s is not None:
            return self.interruption_threshold_s
        return max(600, 3 * self.rtd_interval_s)

    def in_stop(self, t: datetime) -> bool:
        return any(s.start <= t < s.end for s in self.stop)


class Enterprise(_Strict):
    id: str
    name: str
    district: str
    sector: str = ""
    outlet: list[Outlet] = Field(default_factory=list)
    #: 绩效分级 (环办大气〔2026〕2号; DOMAIN.md §9) and the emergency list's production lines (issue 16).
    grade: Literal["A+", "A", "B", "C", "D", "引领性"] | None = None
    line: list[ProductionLine] = Field(default_factory=list)

    @field_validator("district", "sector")
    @classmethod
    def _shared_text(cls, v: str) -> str:
        return sys.intern(v)


class GridSensor(_Strict):
    """A grid air-quality monitor (网格化监测微站), a national/provincial station or a construction site's PM10
    monitor (``kind``), placed by ``lat``/``lon`` (WGS 84) for maps and hotspot neighbourhoods."""

    id: str
    name: str = ""
    district: str
    township: str = ""
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    kind: Literal["micro_station", "national_station", "construction_site"] = "micro_station"
    #: Seconds between readings: each reading covers this long for the 45-minute hourly rule (GB 3095-2012).
    interval_s: Annotated[int, Field(gt=0, le=3600)] = 60
    #: HJ 212 PW its ST=22 packets must carry (on ``grid/v1/{id}`` or through the HJ 212 bridge); ``None``:
    #: not checked (the broker's ACL still lets only the sensor publish on its topic).
    password: str | None = None

    @property
    def hj212_password(self) -> str | None:
        return self.password


HotspotPollutant = Literal["pm25", "pm10"]
SensorKind = Literal["micro_station", "national_station", "construction_site"]
_HOTSPOT_POLLUTANTS: tuple[HotspotPollutant, ...] = ("pm25", "pm10")
_HOTSPOT_KINDS: tuple[SensorKind, ...] = ("micro_station", "national_station")


class GridHotspot(_Strict):
    """``[grid.hotspot]``: a sensor whose hourly PM2.5 (or PM10) is at least ``ratio`` × and ``floor`` µg/m³
    above the median of its neighbours (at least ``min_neighbours`` sensors within ``radius_km``; the same
    township when either has no coordinates) for ``hours`` consecutive hours raises ``grid_hotspot``
    (明显高于周边, seed 000). The defaults are a documented choice, not a standard's figure; the 3 km radius
    follows the MEE hotspot-grid cell (3 km × 3 km, DOMAIN.md §9)."""

    ratio: Annotated[float, Field(gt=1)] = 1.5
    floor: Annotated[float, Field(ge=0)] = 20.0
    hours: Annotated[int, Field(ge=1, le=72)] = 3
    min_neighbours: Annotated[int, Field(ge=1)] = 2
    radius_km: Annotated[float, Field(gt=0, le=100)] = 3.0
    pollutants: list[HotspotPollutant] = Field(default_factory=lambda: list(_HOTSPOT_POLLUTANTS))
    #: Kinds of sensor compared (as candidates and as neighbours): construction sites are hot by design and
    #: have their own alarm (``[grid.construction]``).
    kinds: list[SensorKind] = Field(default_factory=lambda: list(_HOTSPOT_KINDS))


class GridConstruction(_Strict):
    """``[grid.construction]``: a construction site's PM10 monitor (``kind = "construction_site"``) whose valid
    hourly PM10 is above ``pm10_limit`` µg/m³ for ``hours`` consecutive hours raises ``grid_pm10_alarm``. No
    figure in DOMAIN.md (§6: construction sites' PM10 monitors report to the housing department); the default
    150 µg/m³ is the GB 3095-2012 grade-II 24-h PM10 limit applied to hourly means, a documented choice: set
    the local standard's figure (e.g. a provincial 施工扬尘排放标准)."""

    pm10_limit: Annotated[float, Field(gt=0)] = 150.0
    hours: Annotated[int, Field(ge=1, le=72)] = 1


class GridRules(_Strict):
    """``[grid]``: the city's grid air-quality rules (cems.rules.grid)."""

    #: Silence (by data time) after which a sensor's ``data_interruption`` opens; default max(10 min, 3 ×
    #: the sensor's ``interval_s``), as for an outlet (DOMAIN.md §5).
    interruption_threshold_s: Annotated[int, Field(gt=0)] | None = None
    hotspot: GridHotspot = Field(default_factory=GridHotspot)
    construction: GridConstruction = Field(default_factory=GridConstruction)


class Topics(_Strict):
    """MQTT topic layout (defaults documented in docs/payload.md)."""

    prefix: str = "cems/v1"
    grid_prefix: str = "grid/v1"
    alerts_prefix: str = "cems/alerts/v1"
    deadletter_prefix: str = "cems/deadletter/v1"
    command_prefix: str = "cems/cmd/v1"

    @field_validator("prefix", "grid_prefix", "alerts_prefix", "deadletter_prefix", "command_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\x00") or v.startswith("/") or v.endswith("/") or "//" in v:
            raise ValueError(
                f"topic prefix {v!r} must be non-empty levels separated by '/', without the wildcards '+' and '#'"
            )
        return v


def _fill_shared_keys(cls: type[BaseModel]) -> None:
    """Make the class's shared key table (PEP 412) hold every field before any instance exists.  CPython 3.11
    takes one slot off a class's table for each instance made while it is still being filled
    (``init_inline_values``): pydantic makes every outlet before :func:`_compact` copies the first one, so
    without this the table would be too small for the fields and every copy would get a dict of its own."""
    c = cls.__new__(cls)
    for name in cls.model_fields:
        object.__setattr__(c, name, None)


def compact_enterprise(e: Enterprise) -> Enterprise:
    """A compact equal copy of an enterprise, its outlets replaced in place by compact copies (:func:`_compact`)."""
    outlets = e.outlet
    for j, o in enumerate(outlets):
        outlets[j] = _compact(o)
    return _compact(e)


def _compact_enterprises(enterprises: list[Enterprise]) -> None:
    """Replace, in place, the enterprises and their outlets by compact equal copies (:func:`_compact`)."""
    for i, e in enumerate(enterprises):
        enterprises[i] = compact_enterprise(e)


@dataclass(frozen=True, slots=True)
class OutletInfo:
    """An outlet with the enterprise and district it belongs to (what the sinks tag points with)."""

    outlet: Outlet
    enterprise: Enterprise
    district: District


_fill_shared_keys(Outlet)
_fill_shared_keys(Enterprise)

#: Zone names of Beijing time (Asia/Shanghai and its IANA links).
BEIJING_ZONES = frozenset({"Asia/Shanghai", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "PRC"})


class Registry(_Strict):
    #: The zone HJ 212 DataTime (and JSON times without an offset) are read in.  HJ 212 defines DataTime as
    #: Beijing time: another zone would shift every hour (Europe/Berlin: by 7 h or 6 h), so it is refused unless
    #: ``allow_non_beijing_timezone = true`` (e.g. a test bench whose simulators send local time), and then
    #: ``cems registry check`` and ``cems run`` warn.
    timezone: str = "Asia/Shanghai"
    allow_non_beijing_timezone: bool = False
    city: City
    district: list[District] = Field(default_factory=list)
    enterprise: list[Enterprise] = Field(default_factory=list)
    grid_sensor: list[GridSensor] = Field(default_factory=list)
    grid: GridRules = Field(default_factory=GridRules)
    topics: Topics = Field(default_factory=Topics)
    #: The city's default emergency profile (issue 16, cems/limits/emergency.toml).
    emergency: EmergencySettings = Field(default_factory=EmergencySettings)
    #: City overrides of the mark types (``cems/limits/marks.toml``): ``window_days``, ``month_final_day``,
    #: ``caps = { group = hours }``, ``type = { CODE = { judged = …, rate = … } }``, ``suspicious = {…}``.
    marks: dict[str, Any] = Field(default_factory=dict)

    _by_mn: dict[str, OutletInfo] = PrivateAttr(default_factory=dict)
    _mark_catalog: MarkCatalog | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @model_validator(mode="after")
    def _cross(self) -> Registry:
        problems: list[str] = []
        if self.timezone not in BEIJING_ZONES and not self.allow_non_beijing_timezone:
            problems.append(
                f"timezone: {self.timezone!r} is not Beijing time: HJ 212 DataTime is Beijing time (UTC+8), and "
                "reading it in another zone shifts every hour; remove the setting, or set "
                "allow_non_beijing_timezone = true if the devices really send this zone's local time"
            )
        districts: dict[str, District] = {}
        for i, d in enumerate(self.district):
            if d.code in districts:
                problems.append(f"district[{i}].code: duplicate district code {d.code!r}")
            districts[d.code] = d
        ids: set[str] = set()
        by_mn: dict[str, OutletInfo] = {}
        _compact_enterprises(self.enterprise)
        for i, e in enumerate(self.enterprise):
            if e.id in ids:
                problems.append(f"enterprise[{i}].id: duplicate enterprise id {e.id!r}")
            ids.add(e.id)
            if e.district not in districts:
                problems.append(
                    f"enterprise[{i}].district: {e.district!r} is not a [[district]] code "
                    f"(known: {', '.join(sorted(districts)) or 'none'})"
                )
                continue
            for j, o in enumerate(e.outlet):
                if o.mn in by_mn:
                    other = by_mn[o.mn].enterprise.id
                    problems.append(
                        f"enterprise[{i}].outlet[{j}].mn: duplicate MN {o.mn!r} (also in enterprise {other!r})"
                    )
                by_mn[o.mn] = OutletInfo(o, e, districts[e.district])
        grid_ids: set[str] = set()
        for i, g in enumerate(self.grid_sensor):
            if g.id in by_mn:
                problems.append(f"grid_sensor[{i}].id: {g.id!r} is also an outlet MN (broker users and topics clash)")
            if g.id in grid_ids:
                problems.append(f"grid_sensor[{i}].id: duplicate grid sensor id {g.id!r}")
            grid_ids.add(g.id)
            if g.district not in districts:
                problems.append(f"grid_sensor[{i}].district: {g.district!r} is not a [[district]] code")
        problems += emergency_problems(
            [(i, e.id, e.line) for i, e in enumerate(self.enterprise) if e.line],
            {mn: info.enterprise.id for mn, info in by_mn.items()},
            self.emergency.profile,
        )
        catalog: MarkCatalog | None = None
        try:
            catalog = builtin_mark_catalog().with_overrides(self.marks)
        except ValueError as e:
            problems.append(f"marks: {e}")
        if catalog is not None:
            for info in by_mn.values():
                ind = info.outlet.mark_industry
                if ind is not None and ind not in catalog.industries:
                    problems.append(
                        f"outlet {info.outlet.mn!r}: mark_industry {ind!r} is not one of "
                        f"{', '.join(sorted(catalog.industries))} (cems/limits/marks.toml)"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        self._by_mn = by_mn
        self._mark_catalog = catalog
        return self

    @property
    def mark_catalog(self) -> MarkCatalog:
        """The mark types with this city's ``[marks]`` overrides applied."""
        return self._mark_catalog or builtin_mark_catalog()

    def reindexed(self, enterprises: list[Enterprise]) -> Registry:
        """A copy with these enterprises (same ids, districts and MNs, e.g. with resolved credentials)."""
        enterprises = list(enterprises)
        _compact_enterprises(enterprises)
        copy = self.model_copy(update={"enterprise": enterprises})
        districts = {d.code: d for d in self.district}
        copy._by_mn = {o.mn: OutletInfo(o, e, districts[e.district]) for e in enterprises for o in e.outlet}
        return copy

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def outlet(self, mn: str) -> OutletInfo | None:
        # hot path (every message): read the private dict directly, not through pydantic's __getattr__
        by_mn: dict[str, OutletInfo] = self.__pydantic_private__["_by_mn"]  # type: ignore[index]
        return by_mn.get(mn)

    def outlets(self) -> list[OutletInfo]:
        return list(self._by_mn.values())

    def district_by_code(self, code: str) -> District | None:
        return next((d for d in self.district if d.code == code), None)
