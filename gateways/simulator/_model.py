"""The fleet model: every outlet's DAS (数采仪) and grid micro-station of a registry, in simulated time.

Pure and deterministic for a seed: no I/O, no wall clock, no MQTT.  :meth:`FleetModel.advance` returns the
:class:`Emission` s (one :class:`cems.model.Reading` each, with its topic and simulated send time) that the
fleet produces up to simulated time ``until``; :func:`hj212_packet` encodes a reading as an HJ 212 packet.
Publishing them is :mod:`gateways.simulator._publish`.

What one outlet produces (DOMAIN.md §2–§4):

* real-time data (CN 2011, stream ``rtd``) every ``outlet.rtd_interval_s``: flue-gas flow ``a00000``,
  temperature ``a01012``, O2 ``a19001`` and the measured (dry) concentrations of SO2 ``a21026``, NOx
  ``a21002`` and particulate ``a34013`` with ``-ZsRtd``, the DAS's own reference-O2 correction
  ``C × (21 − O2ref) / (21 − O2)`` (omitted when O2 > 19.5 %: dilution, no valid correction);
* "minute" records (CN 2051, stream ``min``) every :attr:`SimConfig.min_period_s` (10 min by default),
  DataTime the start of the period, ``Min/Avg/Max`` (+ ``ZsAvg``, ``Cou``) over the period's real-time
  values: the values flagged N when there are any, otherwise all of them;
* hourly records (CN 2061, stream ``hour``) at each hour end: ``Avg`` is the mean of the ``Avg`` of that
  hour's minute records flagged N (so an engine computing hours from the minute data gets the same value),
  ``Min``/``Max`` the extremes of theirs, ``Cou`` their sum, ``ZsAvg`` the formula applied to the hourly
  means of C and O2 (DOMAIN.md §3).

Flags follow the 75 % rule: a minute record is N when ≥ 75 % of the real-time values expected in the period
are N; an hour is N when it has ≥ 45 valid minutes.  Otherwise the record carries the most frequent non-N
flag of its sub-values (M, C, D ...), or D when the values are simply too few (a gap).

Values: each enterprise has a daily load curve (coal power low at night with an afternoon/evening peak, gas
turbines peaking, heating boilers highest in the early morning, kilns/sinter/glass flat); O2 moves inversely
with load around the profile's reference O2; flow and temperature move with load; pollutants are generated
as *corrected* values of usually 30–80 % of the (stricter-wins) limit in force at that time, then turned
into measured values with the formula.  Random events per outlet (rates in :class:`SimConfig`, all
switchable off with :meth:`SimConfig.quiet`): exceedance episodes (1–3 h at 1.2–2× a limit), gaps (silent
5–60 min), maintenance (M) and calibration (C) periods of 10–30 min, rare analyser faults (D), and a
per-outlet clock skew (a few seconds, for some outlets about a minute): the DAS clock, which stamps DataTime
and delimits periods, runs ``skew`` seconds off the true (simulated) send time.  Declared stops of the
registry (``[[...outlet.stop]]``) are reported with flag F, no flow and air-like O2; before ``outlet.since``
an outlet is silent.  The model warms up from the start of the hour in progress, so the first minute and
hourly records are complete.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from cems.model import BEIJING, FLOW, NOX, O2, PM, SO2, STREAM_CN, Measurement, Reading, Stream
from cems.protocol import hj212
from cems.registry import GridSensor, Outlet, OutletInfo, Registry
from cems.rules.limits import LimitSchedule

PROTOCOLS: Final[tuple[str, ...]] = ("json", "hj212", "mixed")

TEMP: Final = "a01012"
#: Codes of one outlet's real-time record, in publication order.
POLLUTANTS: Final[tuple[str, ...]] = (SO2, NOX, PM)
#: Ambient codes of a grid micro-station (µg/m³; CO mg/m³).
PM25: Final = "a34004"
PM10: Final = "a34002"
AMB_SO2: Final = "a21026"
AMB_NO2: Final = "a21004"
AMB_CO: Final = "a21005"
AMB_O3: Final = "a05024"
#: Facility-state code used when :attr:`SimConfig.facility_state` is on (``SB1-RS``).
FACILITY: Final = "SB1"
#: HJ 212 PW sent when the registry configures none (the standard's examples use 123456).
DEFAULT_PW: Final = "123456"
#: Above this O2 (%) the DAS does not compute a corrected value (dilution / no combustion).
O2_MAX_CORRECTION: Final = 19.5

_HOUR: Final = 3600
_DAY: Final = 86400
_BJ_OFFSET: Final = 8 * _HOUR
_FLAG_ORDER: Final = "DMCFBTS"
#: Limit assumed for a pollutant no profile/permit limits (mg/m³), only to scale simulated values.
_DEFAULT_LIMIT: Final = 50.0


# ------------------------------------------------------------------------------------------ config


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Rates and switches of the simulation.  Event rates are per outlet per simulated day."""

    min_period_s: int = 600
    grid_interval_s: int = 60
    exceedances_per_day: float = 0.1
    gaps_per_day: float = 0.2
    maintenance_per_day: float = 0.05
    calibrations_per_day: float = 0.3
    faults_per_day: float = 0.02
    #: Per-outlet DAS clock offset, uniform in ±max_clock_skew_s seconds ...
    max_clock_skew_s: int = 5
    #: ... except this fraction of outlets, whose clock is 45–90 s off.
    large_skew_fraction: float = 0.05
    #: Fraction of outlets that are HJ 212-2025 devices (Flag=9 instead of 5).
    hj212_2025_fraction: float = 0.25
    #: With protocol "mixed": fraction of outlets speaking HJ 212 (the rest JSON).
    mixed_hj212_fraction: float = 0.5
    #: Add ``SB1-RS`` (facility state: 1 running, 2 calibrating, 3 maintenance, 4 alarm) to real-time data.
    facility_state: bool = False
    #: Simulate the registry's grid sensors.
    grid: bool = True
    #: Grid sensors (ids) made clearly higher than their surroundings (明显高于周边): PM2.5 and PM10 × 2.5, so
    #: that the grid engine raises ``grid_hotspot`` for them (demos, tests).
    grid_hotspots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_period_s <= 0 or self.min_period_s % 60 or _HOUR % self.min_period_s:
            raise ValueError(f"min_period_s={self.min_period_s} must be whole minutes dividing one hour")
        if self.grid_interval_s <= 0:
            raise ValueError("grid_interval_s must be positive")
        for name in (
            "exceedances_per_day",
            "gaps_per_day",
            "maintenance_per_day",
            "calibrations_per_day",
            "faults_per_day",
            "large_skew_fraction",
            "hj212_2025_fraction",
            "mixed_hj212_fraction",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_clock_skew_s < 0:
            raise ValueError("max_clock_skew_s must be >= 0")

    @classmethod
    def quiet(cls, **overrides: Any) -> SimConfig:
        """No events and no clock skew: every value flagged N, every record on time (for tests)."""
        base = cls(
            exceedances_per_day=0.0,
            gaps_per_day=0.0,
            maintenance_per_day=0.0,
            calibrations_per_day=0.0,
            faults_per_day=0.0,
            max_clock_skew_s=0,
            large_skew_fraction=0.0,
        )
        return replace(base, **overrides)


# ------------------------------------------------------------------------------------------ output


@dataclass(frozen=True, slots=True)
class Emission:
    """One message of the fleet: a reading, its MQTT topic (JSON layout) and its simulated send time."""

    at: datetime
    topic: str
    reading: Reading
    outlet: Outlet | None = None  # None for a grid sensor

    @property
    def grid(self) -> bool:
        return self.outlet is None


@dataclass(frozen=True, slots=True)
class Episode:
    """A simulated event of one outlet (or grid sensor), ``[start, end)`` in true simulated time."""

    kind: str  # "exceedance" | "gap" | "maintenance" | "calibration" | "fault"
    start: datetime
    end: datetime
    code: str | None = None
    factor: float = 1.0


# ------------------------------------------------------------------------------------------ helpers


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, BEIJING)


def _epoch(t: datetime) -> float:
    if t.tzinfo is None:
        t = t.replace(tzinfo=BEIJING)
    return t.timestamp()


def _local_hour(epoch: float) -> float:
    return ((epoch + _BJ_OFFSET) % _DAY) / _HOUR


def _bump(h: float, centre: float, width: float) -> float:
    d = abs(h - centre) % 24.0
    d = min(d, 24.0 - d)
    return math.exp(-((d / width) ** 2))


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def correct(c: float, o2: float, ref_o2: float) -> float | None:
    """Reference-O2 correction ``C × (21 − O2ref) / (21 − O2)``; ``None`` when O2 is above the dilution
    cut-off or impossible (as :func:`cems.rules.o2.correct`)."""
    if o2 > O2_MAX_CORRECTION or o2 < 0.0:
        return None
    return c * (21.0 - ref_o2) / (21.0 - o2)


def _qn(epoch: float, ms: int) -> str:
    return _dt(math.floor(epoch)).strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


def _dominant_flag(flags: list[str]) -> str:
    """The most frequent non-N flag (ties: the more serious per ``_FLAG_ORDER``); D when all are N."""
    bad = Counter(f for f in flags if f != "N")
    if not bad:
        return "D"  # too few values: insufficient data
    return max(bad, key=lambda f: (bad[f], -_FLAG_ORDER.find(f) if f in _FLAG_ORDER else -99))


class _Ou:
    """Ornstein–Uhlenbeck noise: mean 0, stationary standard deviation ``sd``, correlation time ``tau``."""

    __slots__ = ("sd", "tau", "x")

    def __init__(self, rng: random.Random, sd: float, tau: float) -> None:
        self.sd = sd
        self.tau = tau
        self.x = rng.gauss(0.0, sd)

    def step(self, rng: random.Random, dt: float) -> float:
        a = math.exp(-dt / self.tau)
        self.x = self.x * a + self.sd * math.sqrt(1.0 - a * a) * rng.gauss(0.0, 1.0)
        return self.x


# ------------------------------------------------------------------------------------------ events


_EVENT_KINDS: Final = ("exceedance", "gap", "maintenance", "calibration", "fault")
_DURATIONS: Final[dict[str, tuple[float, float]]] = {
    "exceedance": (3600.0, 3 * 3600.0),
    "gap": (300.0, 3600.0),
    "maintenance": (600.0, 1800.0),
    "calibration": (600.0, 1800.0),
    "fault": (600.0, 3600.0),
}


@dataclass(slots=True)
class _Ep:
    kind: str
    start: float
    end: float
    code: str | None = None
    factor: float = 1.0


class _Events:
    """Poisson arrivals of each event kind, generated lazily in time order from per-kind RNG streams."""

    def __init__(self, key: str, rates: dict[str, float], codes: dict[str, tuple[str, ...]], t0: float) -> None:
        self._streams: list[tuple[str, float, random.Random]] = []
        self._next: list[float] = []
        self._codes = codes
        for kind in _EVENT_KINDS:
            rate = rates.get(kind, 0.0)
            if rate <= 0:
                continue
            rng = random.Random(f"{key}/{kind}")
            self._streams.append((kind, rate / _DAY, rng))
            self._next.append(t0 + rng.expovariate(rate / _DAY))
        self.live: list[_Ep] = []
        self.history: list[_Ep] = []

    def active(self, t: float) -> list[_Ep]:
        for i, (kind, rate, rng) in enumerate(self._streams):
            while self._next[i] <= t:
                start = self._next[i]
                lo, hi = _DURATIONS[kind]
                ep = _Ep(kind, start, start + rng.uniform(lo, hi))
                choices = self._codes.get(kind, ())
                if choices:
                    ep.code = rng.choice(choices)
                if kind == "exceedance":
                    ep.factor = rng.uniform(1.2, 2.0)
                self.live.append(ep)
                self.history.append(ep)
                self._next[i] = ep.end + rng.expovariate(rate)
        if self.live:
            self.live = [e for e in self.live if e.end > t]
        return [e for e in self.live if e.start <= t]


# ------------------------------------------------------------------------------------------ outlets


@dataclass(frozen=True, slots=True)
class _Family:
    lo: float
    hi: float
    shape: str
    o2_offset: float
    o2_gain: float
    flow: tuple[float, float]  # design flow, m³/s (standard, dry)
    temp: float
    temp_gain: float


_FAMILIES: Final[dict[str, _Family]] = {
    "power": _Family(0.5, 1.0, "power", 1.0, 5.0, (250.0, 600.0), 47.0, 6.0),
    "turbine": _Family(0.35, 1.0, "peaker", 0.3, 2.5, (300.0, 700.0), 85.0, 15.0),
    "boiler": _Family(0.45, 0.95, "heating", 1.5, 4.0, (8.0, 40.0), 90.0, 40.0),
    "process": _Family(0.85, 0.97, "flat", 0.8, 4.0, (80.0, 400.0), 110.0, 20.0),
}


def _family(profile: str) -> _Family:
    if profile.startswith(("coal_power", "thermal_power")):
        return _FAMILIES["power"]
    if profile.startswith("gas_turbine"):
        return _FAMILIES["turbine"]
    if profile.startswith("boiler"):
        return _FAMILIES["boiler"]
    return _FAMILIES["process"]


def _shape(kind: str, h: float) -> float:
    """Daily load shape in [0, 1] at local hour ``h``."""
    if kind == "power":
        s = 0.5 - 0.5 * math.cos(2 * math.pi * (h - 3.5) / 24) + 0.25 * _bump(h, 19.5, 1.5)
    elif kind == "peaker":
        s = 0.9 * _bump(h, 10.0, 2.5) + 1.0 * _bump(h, 19.5, 2.0)
    elif kind == "heating":
        s = 0.5 + 0.5 * math.cos(2 * math.pi * (h - 6.0) / 24)
    else:
        s = 0.5 + 0.15 * math.sin(2 * math.pi * h / 24)
    return _clamp(s, 0.0, 1.0)


@dataclass(slots=True)
class _Sample:
    d: int  # DAS time of the value
    values: dict[str, float]  # published Rtd per code
    flags: dict[str, str]
    flow_m3s: float


class _Pollutant:
    __slots__ = ("base", "fast", "sens", "slow")

    def __init__(self, rng: random.Random, code: str) -> None:
        self.base = rng.uniform(0.4, 0.6)
        self.sens = {NOX: 0.3, SO2: 0.2}.get(code, 0.1)
        self.fast = _Ou(rng, 0.05, 900.0)
        self.slow = _Ou(rng, 0.05, 6 * 3600.0)


class _OutletSim:
    """One outlet's DAS: its physics, its events, its DAS clock and its period buffers."""

    def __init__(self, info: OutletInfo, seed: int, cfg: SimConfig, start: float, prefix: str) -> None:
        o = info.outlet
        self.info = info
        self.outlet = o
        self.mn = o.mn
        self.cfg = cfg
        self.interval = o.rtd_interval_s
        self.topic_prefix = f"{prefix}/{o.mn}"
        key = f"{seed}/{o.mn}"
        dev = random.Random(f"{key}/device")
        if dev.random() < cfg.large_skew_fraction:
            self.skew = dev.choice((-1, 1)) * dev.randint(45, 90)
        else:
            self.skew = dev.randint(-cfg.max_clock_skew_s, cfg.max_clock_skew_s)
        self.qn_ms = dev.randint(0, 999)
        self.latency = dev.uniform(1.0, 3.0)
        self.hj212_flag = 9 if dev.random() < cfg.hj212_2025_fraction else 5
        self.mixed_hj212 = dev.random() < cfg.mixed_hj212_fraction
        self.flow_factor = 3600.0 if o.units.get(FLOW, "").replace("³", "3").lower() in ("m3/h", "m^3/h") else 1.0

        fam = _family(o.profile)
        plant = random.Random(f"{seed}/{info.enterprise.id}/plant")
        self.shape = fam.shape
        self.phase = plant.uniform(-0.75, 0.75)
        self.lo = _clamp(fam.lo + plant.uniform(-0.05, 0.05), 0.2, 0.95)
        self.hi = _clamp(fam.hi + plant.uniform(-0.03, 0.0), self.lo + 0.02, 1.0)
        self.mid = (self.lo + self.hi) / 2
        self.fam = fam
        self.rng = random.Random(f"{key}/noise")
        r = self.rng
        self.design_flow = r.uniform(*fam.flow)
        self.temp_base = fam.temp + r.uniform(-5.0, 5.0)
        self.ou_load = _Ou(r, 0.025, 1200.0)
        self.ou_o2 = _Ou(r, 0.25, 600.0)
        self.ou_flow = _Ou(r, 0.02, 300.0)
        self.ou_temp = _Ou(r, 0.8, 900.0)
        self.pollutants = {c: _Pollutant(r, c) for c in POLLUTANTS}
        self.last_good: dict[str, float] = {}
        self.schedule = LimitSchedule(o)
        self._bounds = sorted({ch.start.timestamp() for ch in o.limit_change})
        self._lim_cache: dict[int, tuple[float, dict[str, float]]] = {}

        analysers = (SO2, NOX, PM, O2, FLOW)
        self.events = _Events(
            key,
            {
                "exceedance": cfg.exceedances_per_day,
                "gap": cfg.gaps_per_day,
                "maintenance": cfg.maintenance_per_day,
                "calibration": cfg.calibrations_per_day,
                "fault": cfg.faults_per_day,
            },
            {"exceedance": POLLUTANTS, "fault": analysers},
            start - _HOUR,
        )
        # warm start: the DAS has been running since the start of the hour (on its own clock)
        das0 = start + self.skew
        hour0 = math.floor(das0 / _HOUR) * _HOUR
        self.d_next = math.ceil(hour0 / self.interval) * self.interval
        self.win_start = hour0
        self.win: list[_Sample] = []
        self.hour_start = hour0
        self.hour_recs: list[dict[str, Measurement]] = []

    # -- physics ---------------------------------------------------------------------------------------
    def load_curve(self, t: float) -> float:
        h = (_local_hour(t) - self.phase) % 24.0
        return self.lo + (self.hi - self.lo) * _shape(self.shape, h)

    def _limits(self, t: float) -> tuple[float, dict[str, float]]:
        """Reference O2 and limits in force (the rules engine's schedule: profile, changes, stricter-wins)."""
        seg = bisect_right(self._bounds, t)
        hit = self._lim_cache.get(seg)
        if hit is None:
            when = _dt(t)
            lim: dict[str, float] = {}
            for code in POLLUTANTS:
                al = self.schedule.at(code, when)
                lim[code] = al.limit if al is not None else _DEFAULT_LIMIT
            hit = self._lim_cache[seg] = (self.schedule.ref_o2(when), lim)
        return hit

    def _sample(self, d: int) -> _Sample | None:
        """The real-time values at DAS time ``d`` (true time ``d − skew``); None inside a gap."""
        t = d - self.skew
        o = self.outlet
        if o.since is not None and _dt(t).date() < o.since:
            return None  # not yet connected
        active = self.events.active(t)
        if any(e.kind == "gap" for e in active):
            return None
        if o.stop and o.in_stop(_dt(t)):
            return self._stopped(d)
        r, dt = self.rng, float(self.interval)
        fam = self.fam
        ref, lim = self._limits(t)
        load = _clamp(self.load_curve(t) * (1.0 + self.ou_load.step(r, dt)), 0.15, 1.05)
        centre = ref + fam.o2_offset
        o2 = _clamp(centre - fam.o2_gain * (load - self.mid) + self.ou_o2.step(r, dt), max(0.5, ref - 5.0), 19.0)
        flow = self.design_flow * (0.2 + 0.8 * load) * (1.0 + self.ou_flow.step(r, dt))
        temp = self.temp_base + fam.temp_gain * load + self.ou_temp.step(r, dt)
        dil = (21.0 - o2) / (21.0 - ref)
        values: dict[str, float] = {}
        flags: dict[str, str] = {}
        values[FLOW] = flow
        values[TEMP] = temp
        values[O2] = o2
        exceed = {e.code: e for e in active if e.kind == "exceedance"}
        for code, p in self.pollutants.items():
            frac = p.base + p.sens * (load - self.mid) + p.fast.step(r, dt) + p.slow.step(r, dt)
            frac = _clamp(frac, 0.12, 0.9)
            ep = exceed.get(code)
            if ep is not None:
                ramp = _clamp(min(t - ep.start, ep.end - t) / 300.0, 0.0, 1.0)
                frac += ramp * (ep.factor - frac) * (1.0 + 0.03 * r.gauss(0.0, 1.0))
            values[code] = frac * lim[code] * dil
        for code in values:
            flags[code] = "N"
        kinds = {e.kind: e for e in active}
        if "maintenance" in kinds:
            for code in values:
                flags[code] = "M"
            values[O2] = 20.9 + 0.03 * r.gauss(0.0, 1.0)
            for code in POLLUTANTS:
                values[code] = abs(0.2 * r.gauss(0.0, 1.0))
        elif "calibration" in kinds:
            for code in (SO2, NOX):
                span = 2.0 * lim[code]
                values[code] = span * (1.0 + 0.01 * r.gauss(0.0, 1.0))
                flags[code] = "C"
        if "fault" in kinds and "maintenance" not in kinds:
            code = kinds["fault"].code or SO2
            values[code] = self.last_good.get(code, values[code]) if code == O2 else 0.0
            flags[code] = "D"
        for code, f in flags.items():
            if f == "N":
                self.last_good[code] = values[code]
        # publish with the resolution a DAS uses
        pub = {
            FLOW: round(values[FLOW] * self.flow_factor, 1 if self.flow_factor > 1 else 2),
            TEMP: round(values[TEMP], 1),
            O2: round(values[O2], 2),
        }
        for code in POLLUTANTS:
            pub[code] = round(max(values[code], 0.0), 3)
        return _Sample(d, pub, flags, pub[FLOW] / self.flow_factor)

    def _stopped(self, d: int) -> _Sample:
        """A declared stop (停运): the DAS keeps reporting, flag F, no flow, air in the duct."""
        r = self.rng
        pub = {
            FLOW: round(abs(0.002 * self.design_flow * r.gauss(0.0, 1.0)) * self.flow_factor, 2),
            TEMP: round(15.0 + 2.0 * r.gauss(0.0, 1.0), 1),
            O2: round(20.9 + 0.03 * r.gauss(0.0, 1.0), 2),
        }
        for code in POLLUTANTS:
            pub[code] = round(abs(0.1 * r.gauss(0.0, 1.0)), 3)
        return _Sample(d, pub, dict.fromkeys(pub, "F"), pub[FLOW] / self.flow_factor)

    # -- records ---------------------------------------------------------------------------------------
    def _rtd(self, d: int, s: _Sample) -> Emission:
        ref, _ = self._limits(d - self.skew)
        ms: dict[str, Measurement] = {}
        for code in (FLOW, TEMP, O2, *POLLUTANTS):
            vals = {"Rtd": s.values[code]}
            if code in POLLUTANTS:
                z = correct(s.values[code], s.values[O2], ref)
                if z is not None:
                    vals["ZsRtd"] = round(z, 3)
            ms[code] = Measurement(code, vals, s.flags[code])
        if self.cfg.facility_state:
            fl = set(s.flags.values())
            rs = 0.0 if "F" in fl else 3.0 if "M" in fl else 2.0 if "C" in fl else 4.0 if "D" in fl else 1.0
            ms[FACILITY] = Measurement(FACILITY, {"RS": rs}, None)
        reading = Reading(self.mn, Stream.RTD, _dt(d), ms, qn=_qn(d, self.qn_ms))
        return Emission(_dt(d - self.skew + self.qn_ms / 1000.0), f"{self.topic_prefix}/rtd", reading, self.outlet)

    def _close_window(self, at: float) -> Emission | None:
        ws = self.win_start
        self.win_start += self.cfg.min_period_s
        samples = [s for s in self.win if s.d < self.win_start]
        self.win = [s for s in self.win if s.d >= self.win_start]
        em: Emission | None = None
        if samples:
            expected = max(1.0, self.cfg.min_period_s / self.interval)
            ref, _ = self._limits(ws - self.skew)
            ms: dict[str, Measurement] = {}
            for code in (FLOW, TEMP, O2, *POLLUTANTS):
                flags = [s.flags[code] for s in samples]
                good = [s.values[code] for s in samples if s.flags[code] == "N"]
                flag = "N" if len(good) >= 0.75 * expected else _dominant_flag(flags)
                sub = good or [s.values[code] for s in samples]
                nd = 2 if code in (FLOW, O2) else 1 if code == TEMP else 3
                vals = {"Min": min(sub), "Avg": round(sum(sub) / len(sub), nd), "Max": max(sub)}
                if code == FLOW:
                    vals["Cou"] = round(sum(s.flow_m3s for s in samples) * self.interval, 1)
                elif code in POLLUTANTS:
                    kg = sum(s.values[code] * s.flow_m3s * self.interval for s in samples if s.flags[code] == "N")
                    vals["Cou"] = round(kg * 1e-6, 4)
                ms[code] = Measurement(code, vals, flag)
            o2avg = ms[O2].values["Avg"]
            for code in POLLUTANTS:
                z = correct(ms[code].values["Avg"], o2avg, ref)
                if z is not None:
                    ms[code].values["ZsAvg"] = round(z, 3)
            self.hour_recs.append(ms)
            reading = Reading(self.mn, Stream.MIN, _dt(ws), ms, qn=_qn(at + self.skew, self.qn_ms + 333))
            em = Emission(_dt(at), f"{self.topic_prefix}/min", reading, self.outlet)
        return em

    def _close_hour(self, at: float) -> Emission | None:
        hs, recs = self.hour_start, self.hour_recs
        self.hour_start += _HOUR
        self.hour_recs = []
        if not recs:
            return None
        per_hour = _HOUR / self.cfg.min_period_s
        ref, _ = self._limits(hs - self.skew)
        ms: dict[str, Measurement] = {}
        for code in (FLOW, TEMP, O2, *POLLUTANTS):
            rows = [r[code] for r in recs]
            good = [m for m in rows if m.flag == "N"]
            flag = "N" if len(good) >= 0.75 * per_hour else _dominant_flag([m.flag or "N" for m in rows])
            sub = good or rows
            nd = 2 if code in (FLOW, O2) else 1 if code == TEMP else 3
            vals = {
                "Min": min(m.values["Min"] for m in sub),
                "Avg": round(sum(m.values["Avg"] for m in sub) / len(sub), nd),
                "Max": max(m.values["Max"] for m in sub),
            }
            if "Cou" in rows[0].values:
                vals["Cou"] = round(sum(m.values["Cou"] for m in rows), 1 if code == FLOW else 4)
            ms[code] = Measurement(code, vals, flag)
        o2avg = ms[O2].values["Avg"]
        for code in POLLUTANTS:
            z = correct(ms[code].values["Avg"], o2avg, ref)
            if z is not None:
                ms[code].values["ZsAvg"] = round(z, 3)
        reading = Reading(self.mn, Stream.HOUR, _dt(hs), ms, qn=_qn(at + self.skew, self.qn_ms + 666))
        return Emission(_dt(at), f"{self.topic_prefix}/hour", reading, self.outlet)

    def advance(self, until: float, out: list[Emission]) -> None:
        """Produce everything this DAS sends at true times ≤ ``until``, in send-time order."""
        period = self.cfg.min_period_s
        while True:
            # send times: a real-time value qn_ms after its sampling instant, period records `latency` s
            # after the period ended (values sampled at or after the period end wait for the next one)
            t_sample = self.d_next - self.skew + self.qn_ms / 1000.0
            win_end = self.win_start + period
            t_close = win_end - self.skew + self.latency
            if t_close <= t_sample:
                if t_close > until:
                    return
                em = self._close_window(t_close)
                if em is not None:
                    out.append(em)
                if win_end % _HOUR == 0:
                    em = self._close_hour(t_close)
                    if em is not None:
                        out.append(em)
            else:
                if t_sample > until:
                    return
                d = self.d_next
                self.d_next += self.interval
                s = self._sample(d)
                if s is not None:
                    self.win.append(s)
                    out.append(self._rtd(d, s))


# ------------------------------------------------------------------------------------------ grid


class _GridSim:
    """A grid micro-station: regional background shared by its district, local offset, daily cycles."""

    def __init__(self, g: GridSensor, seed: int, cfg: SimConfig, start: float, prefix: str) -> None:
        self.sensor = g
        self.topic = f"{prefix}/{g.id}"
        self.interval = cfg.grid_interval_s
        dist = random.Random(f"{seed}/district/{g.district}")
        self.base_pm = dist.uniform(25.0, 60.0)
        self.phases = [dist.uniform(0, 2 * math.pi) for _ in range(3)]
        self.rng = random.Random(f"{seed}/grid/{g.id}")
        r = self.rng
        self.local = r.uniform(0.85, 1.15)
        hotspot = r.random() < 0.1
        self.pm10_boost = r.uniform(1.5, 2.2) if hotspot else 1.0
        self.pm25_boost = r.uniform(1.2, 1.6) if hotspot else 1.0
        if g.id in cfg.grid_hotspots:
            self.pm10_boost = self.pm25_boost = 2.5
        self.coarse = r.uniform(1.4, 2.0)
        self.no2 = r.uniform(20.0, 45.0)
        self.so2 = r.uniform(5.0, 15.0)
        self.co = r.uniform(0.5, 1.0)
        self.o3 = r.uniform(0.7, 1.3)
        self.ou = {k: _Ou(r, sd, 1200.0) for k, sd in (("pm", 0.1), ("gas", 0.08), ("o3", 0.08))}
        self.events = _Events(f"{seed}/grid/{g.id}", {"gap": cfg.gaps_per_day}, {}, start)
        self.t_next = math.ceil(start / self.interval) * self.interval

    def regime(self, t: float) -> float:
        """Multi-day pollution regime shared by the district (stagnant weather episodes)."""
        p = self.phases
        return math.exp(
            0.45 * math.sin(2 * math.pi * t / (4.3 * _DAY) + p[0])
            + 0.25 * math.sin(2 * math.pi * t / (1.7 * _DAY) + p[1])
        )

    def _reading(self, t: int) -> Reading:
        r, dt = self.rng, float(self.interval)
        h = _local_hour(t)
        reg = self.regime(t)
        npm = self.ou["pm"].step(r, dt)
        ngas = self.ou["gas"].step(r, dt)
        no3 = self.ou["o3"].step(r, dt)
        pm_day = 1.0 + 0.25 * math.cos(2 * math.pi * (h - 7.0) / 24)
        pm25 = self.base_pm * reg * pm_day * self.local * self.pm25_boost * (1 + npm)
        pm10 = pm25 * self.coarse * self.pm10_boost / self.pm25_boost
        traffic = 1.0 + 0.4 * (_bump(h, 8.0, 1.5) + _bump(h, 18.0, 1.5))
        no2 = self.no2 * math.sqrt(reg) * traffic * (1 + ngas)
        so2 = self.so2 * math.sqrt(reg) * (1 + ngas)
        co = self.co * math.sqrt(reg) * traffic * (1 + ngas)
        o3 = (25.0 + 120.0 * _bump(h, 15.0, 3.5)) * self.o3 / math.sqrt(reg) * (1 + no3)
        vals = {
            PM25: round(max(pm25, 1.0), 1),
            PM10: round(max(pm10, 2.0), 1),
            AMB_SO2: round(max(so2, 1.0), 1),
            AMB_NO2: round(max(no2, 1.0), 1),
            AMB_CO: round(max(co, 0.1), 2),
            AMB_O3: round(max(o3, 1.0), 1),
        }
        ms = {c: Measurement(c, {"Rtd": v}, "N") for c, v in vals.items()}
        return Reading(self.sensor.id, Stream.RTD, _dt(t), ms, qn=_qn(t, 0))

    def advance(self, until: float, out: list[Emission]) -> None:
        while self.t_next <= until:
            t = self.t_next
            self.t_next += self.interval
            if any(e.kind == "gap" for e in self.events.active(t)):
                continue
            out.append(Emission(_dt(t), self.topic, self._reading(t), None))


# ------------------------------------------------------------------------------------------ model


class FleetModel:
    """The fleet of a registry: every outlet's DAS and every grid sensor, in simulated time.

    Pure and deterministic: the same registry, seed, start and config give the same emissions however
    ``advance`` calls are split.  Emissions sent before ``start`` (the model warms up from the start of the
    hour so that the first minute/hour records are complete) are not returned.
    """

    def __init__(self, registry: Registry, *, seed: int = 0, start: datetime, config: SimConfig | None = None) -> None:
        self.registry = registry
        self.seed = seed
        self.config = config or SimConfig()
        self.start = start if start.tzinfo is not None else start.replace(tzinfo=BEIJING)
        self._start = _epoch(self.start)
        self._now = self._start
        prefix = registry.topics.prefix
        self._outlets: dict[str, _OutletSim] = {
            info.outlet.mn: _OutletSim(info, seed, self.config, self._start, prefix) for info in registry.outlets()
        }
        gp = registry.topics.grid_prefix
        self._grid: list[_GridSim] = (
            [_GridSim(g, seed, self.config, self._start, gp) for g in registry.grid_sensor] if self.config.grid else []
        )

    @property
    def now(self) -> datetime:
        """Simulated time up to which emissions have been produced."""
        return _dt(self._now)

    def advance(self, until: datetime) -> list[Emission]:
        """Everything the fleet sends after :attr:`now` up to ``until``, ordered by send time."""
        u = _epoch(until)
        if u <= self._now:
            return []
        out: list[Emission] = []
        for o in self._outlets.values():
            o.advance(u, out)
        for g in self._grid:
            g.advance(u, out)
        self._now = u
        start = self.start
        out = [e for e in out if e.at >= start]
        out.sort(key=lambda e: e.at)
        return out

    def run_for(self, seconds: float) -> list[Emission]:
        """Advance by ``seconds`` of simulated time."""
        return self.advance(self.now + timedelta(seconds=seconds))

    # -- introspection (tests, publisher) ------------------------------------------------------------
    def load_curve(self, mn: str, t: datetime) -> float:
        """The outlet's plant load (0–1) at ``t`` from its daily curve, without noise."""
        return self._outlets[mn].load_curve(_epoch(t))

    def episodes(self, mn: str) -> list[Episode]:
        """Events generated so far for an outlet (or a grid sensor id)."""
        src = (
            self._outlets[mn].events if mn in self._outlets else next(g.events for g in self._grid if g.sensor.id == mn)
        )
        return [Episode(e.kind, _dt(e.start), _dt(e.end), e.code, e.factor) for e in src.history]

    def clock_skew(self, mn: str) -> int:
        """The outlet's DAS clock offset (s): DataTime = true time + skew."""
        return self._outlets[mn].skew

    def hj212_flag(self, mn: str) -> int:
        """HJ 212 Flag the outlet's DAS sends: 5 (2017, reply requested) or 9 (2025, reply requested)."""
        return self._outlets[mn].hj212_flag

    def transport(self, mn: str, protocol: str) -> Literal["json", "hj212"]:
        """Whether the outlet speaks JSON or HJ 212 under ``protocol`` (mixed: a per-outlet choice)."""
        if protocol == "mixed":
            return "hj212" if self._outlets[mn].mixed_hj212 else "json"
        return "hj212" if protocol == "hj212" else "json"


# ------------------------------------------------------------------------------------------ encoders


def hj212_packet(reading: Reading, outlet: Outlet, *, flag: int = 5, crlf: bool = True) -> str:
    """The HJ 212 packet of a reading: ST=31, CN from the stream, PW of the outlet, QN of the reading."""
    values: dict[str, dict[str, float | str]] = {}
    for code, m in reading.measurements.items():
        d: dict[str, float | str] = dict(m.values)
        if m.flag is not None:
            d["Flag"] = m.flag
        values[code] = d
    obj: dict[str, Any] = {
        "qn": reading.qn,
        "st": "31",
        "cn": STREAM_CN[reading.stream],
        "pw": outlet.password or DEFAULT_PW,  # password_env resolved by the caller (with_credentials)
        "mn": reading.mn,
        "flag": flag,
        "data_time": reading.data_time.isoformat(),
        "values": values,
    }
    return hj212.encode_json(obj, crlf=crlf)
