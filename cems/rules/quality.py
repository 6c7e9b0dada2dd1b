"""Data-quality and falsification signals (监测数据弄虚作假, issue 17): patterns an inspector looks for in an
honest-looking stream, raised as events with the evidence that triggered them, so that a person decides.

The seeds order a crackdown on falsified monitoring data and ask the duty room to check that emissions fit
the operating conditions (DOMAIN.md §1, §9: production and treatment must stop together; 分表计电); they
name the patterns but give no figures.  Every threshold is therefore a **documented choice** in the registry
(``[city.quality]``, :class:`cems.registry.Quality`; reasoning in docs/events.md), never a standard's figure,
and a signal is a lead, never an exceedance: it changes no hourly record and no rate.

Signals (event types), each judged per closed hour (``limit_hugging``: per Beijing day):

* ``flatline`` (恒值): a pollutant or O2 whose sub-values of the hour stay within a tolerance while the outlet
  runs (a valid hour of flue-gas flow: an outlet without a flow measurement is not judged), for
  ``flatline_hours`` hours in a row.  Pollutant: the code; ``peak``: the value; ``limit``: the
  tolerance.
* ``o2_anomaly``: O2 hourly mean at or above ``o2_ambient`` (or above the dilution cut-off) while a whole
  hour of flue-gas flow shows combustion; or, in such an hour, O2 missing / not valid while a pollutant has
  valid data of its own.  Pollutant ``a19001``; ``peak``: the O2 mean (none when missing); ``limit``: ``o2_ambient``.
* ``zs_inconsistent``: the DAS's ``ZsAvg`` disagrees with C × (21 − O2ref) / (21 − O2) on its own Avg and
  O2 beyond the tolerance, or the two lie on different sides of the limit (always raised: within 2 % the
  hourly rule uses the DAS's value, so the DAS would decide the exceedance); or ``zs_rtd_min_minutes``
  minutes whose real-time ``ZsRtd`` (minute ``ZsAvg``) disagrees with the same formula on ``Rtd`` (``Avg``)
  and O2's.
  ``peak``: the largest difference (mg/m³); ``limit``: the emission limit.
* ``hourly_inconsistent``: the DAS's hourly record (CN=2061) ``Avg`` differs from the mean of its own minute
  records (CN=2051, flag N, covering ≥ ``hourly_min_minutes``) beyond the tolerance.  ``peak``: the
  difference; ``limit``: the tolerance.
* ``limit_hugging`` (卡线): a day (≥ 20 valid hours, HJ 75-2017's valid day) with ≥ ``hugging_share`` of its
  valid hours in [``hugging_band`` × limit, limit], that share being ``hugging_rise`` above the outlet's own
  median of the previous 30 days (≥ ``hugging_history_days`` valid days needed; without that history the
  day is not judged).  ``peak``: the day's share; ``limit``: ``hugging_share``.
* ``out_of_range``: minutes (≥ ``out_of_range_min_minutes`` in an hour) with a concentration below
  −``negative_tol``, a value pinned at the configured analyser full scale, flow with zero velocity
  (a00000 > 0, a01011 ≤ 0), dry standard flow above the wet flow at stack conditions (a00000 > a01011 ×
  ``outlet.duct_area_m2`` × (1 + ``dry_wet_tol``) with the stack above 0 °C), or O2 + CO2 (a05001) above
  ``o2_co2_max``.  Pollutant: the code concerned;
  ``peak``: the minutes; ``limit``: the minimum.
* ``operation_mismatch``: minutes (≥ ``mismatch_min_minutes``) in which flue-gas flow shows production
  running while a treatment facility reports off (``SBxxx-RS = 0``).  Pollutant: the facility code.

Events are maximal runs of consecutive hours (days) with the signal, like ``hourly_exceedance``
(:class:`cems.rules.events.ExceedanceTracker`): stable ids, revised by late data (marked ``late``, or
``retracted``), closed when the next hour is decided.  Hours inside a declared stop (``outlet.stop``) are not
judged for ``flatline``, ``o2_anomaly`` and ``operation_mismatch`` (a declared start-up or shut-down).

Order independence (live = replay): what the readings add to an hour is kept as commutative summaries —
min/max and bit masks of the hour's minutes (idempotent, so a redelivered reading changes nothing) — and is
judged only when the hour's records are emitted or revised (:mod:`cems.rules.hourly`, itself independent of
arrival order).  The summaries of an hour are kept for the hourly rule's ``hold`` plus
:data:`KEEP_MARGIN_HOURS` behind the newest data time; a revision of an older hour (back-filled data of an
hour that had none) keeps the signals that came from its readings, and its readings add none.
"""

from __future__ import annotations

import itertools
import math
import statistics
from array import array
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from cems.model import BEIJING, FLOW, O2, Reading, Stream, beijing_ts
from cems.registry import Outlet, Quality
from cems.rules._shared import SharedSettings, shared_hour
from cems.rules.events import (
    RETRACTED_STATUS,
    Event,
    EventUpdate,
    retract_missing,
    run_updates,
)
from cems.rules.hourly import (
    DEFAULT_HOLD,
    SOURCE_DAS,
    VALID_HOUR_FLAGS,
    HourlyRecord,
    is_concentration,
    unit_factors,
    with_code,
)
from cems.rules.limits import LimitSchedule
from cems.rules.o2 import DEFAULT_MAX_O2, O2_AIR, correct, zs_agrees

#: The streams as module constants: ``Stream.RTD`` (an enum class attribute) costs ≈ 950 instructions a look-up,
#: a module global ≈ 40 (callgrind; several per reading, issue 20)
_S_RTD: Final = Stream.RTD
_S_MIN: Final = Stream.MIN
_S_HOUR: Final = Stream.HOUR
_S_DAY: Final = Stream.DAY

FLATLINE: Final = "flatline"
O2_ANOMALY: Final = "o2_anomaly"
ZS_INCONSISTENT: Final = "zs_inconsistent"
HOURLY_INCONSISTENT: Final = "hourly_inconsistent"
LIMIT_HUGGING: Final = "limit_hugging"
OUT_OF_RANGE: Final = "out_of_range"
OPERATION_MISMATCH: Final = "operation_mismatch"
#: Every data-quality event type (docs/events.md), in report order.
QUALITY_TYPES: Final = (
    FLATLINE,
    O2_ANOMALY,
    ZS_INCONSISTENT,
    HOURLY_INCONSISTENT,
    LIMIT_HUGGING,
    OUT_OF_RANGE,
    OPERATION_MISMATCH,
)

#: Flue-gas velocity (HJ 212-2017 appendix B, DOMAIN.md §2).
VELOCITY: Final = "a01011"
#: Flue-gas temperature, ℃ (HJ 212-2017 appendix B, DOMAIN.md §2).
TEMPERATURE: Final = "a01012"
#: Carbon dioxide, % (HJ 212-2017 appendix B code of CO2).
CO2: Final = "a05001"
#: A valid day has ≥ 20 valid hours (HJ 75-2017, DOMAIN.md §3): fewer and ``limit_hugging`` has no share.
VALID_DAY_HOURS: Final = 20
#: Days of the outlet's own history ``limit_hugging`` compares a day with.
HISTORY_DAYS: Final = 30
#: Hours of per-reading summaries kept behind the newest data time, beyond the hourly rule's ``hold``
#: (:data:`cems.rules.hourly.DEFAULT_HOLD`), so that every revision it can still make exactly finds its hour's
#: summary (the engine passes its ``hold``).
KEEP_MARGIN_HOURS: Final = 2

_H: Final = 3600
#: ``1 << m`` of each minute ``m`` of an hour (a minute's bit in the masks), made once.
_MINUTE_BITS: Final = tuple(1 << m for m in range(60))
_DAY: Final = 86400
_BJ_OFFSET: Final = 8 * 3600
_FULL_HOUR: Final = (1 << 60) - 1
_N: Final = frozenset({None, "N", "n"})
_OK_HOUR: Final = VALID_HOUR_FLAGS
#: Signals judged from the hour's readings (kept as they were when the summaries are gone).
_FROM_READINGS: Final = frozenset({FLATLINE, OUT_OF_RANGE, OPERATION_MISMATCH, HOURLY_INCONSISTENT})
#: Signals judged partly from the readings: without the summaries, a hit is kept, never cleared.
_PARTLY_FROM_READINGS: Final = frozenset({ZS_INCONSISTENT})
_NEVER: Final = -(1 << 62)
_MICRO: Final = 1_000_000

#: One unit (hour or day) with the signal: (value for ``peak``, threshold for ``limit``, evidence).
_Hit = tuple[float | None, float | None, str]


_CONC: Final = 0
_O2_KIND: Final = 1
_FLOW: Final = 2
_VELOCITY: Final = 3
_CO2: Final = 4
_FACILITY: Final = 5
_OTHER: Final = 6
_KINDS: dict[str, int] = {}


def _kind(code: str) -> int:
    """What a code is for these rules (cached: a handful of codes per city)."""
    k = _KINDS.get(code)
    if k is None:
        if code.startswith("SB"):
            k = _FACILITY
        elif code == O2:
            k = _O2_KIND
        elif code == FLOW:
            k = _FLOW
        elif code == VELOCITY:
            k = _VELOCITY
        elif code == CO2:
            k = _CO2
        elif is_concentration(code):
            k = _CONC
        else:
            k = _OTHER
        if len(_KINDS) < 10_000:
            _KINDS[code] = k
    return k


_CONC_CODES: dict[str, bool] = {}


def _is_conc(code: str) -> bool:
    """:func:`~cems.rules.hourly.is_concentration`, cached (a handful of codes per city)."""
    c = _CONC_CODES.get(code)
    if c is None:
        c = is_concentration(code)
        if len(_CONC_CODES) < 10_000:
            _CONC_CODES[code] = c
    return c


def _bits(mask: int) -> int:
    return mask.bit_count()


def _day(ts: int) -> int:
    """Start (epoch s) of the Beijing day containing ``ts``."""
    return ts - (ts + _BJ_OFFSET) % _DAY


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, BEIJING)


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


#: The shared read-only empty summary of an hour's rare parts (negative values, pinned values, facilities off,
#: ZsRtd disagreements, minute records): each is made when first written (memory per outlet, issue 20).
_NONE: Any = MappingProxyType({})
#: The shared empty [minute mask, value] of ``o2co2`` and ``drywet`` (replaced by a list when first set).
_ZERO2: Any = (0, 0.0)


class _HourStats:
    """What the readings of one hour add (commutative summaries; see the module docstring).  The rare parts
    start as the shared :data:`_NONE` (:data:`_ZERO2`) and get their own dict (list) when first written.

    Memory (issue 20): the flatline summary, per code the lowest and highest valid value and the minutes with
    one, is the hour's codes (a tuple shared with the other hours that have the same codes,
    :func:`~cems.rules.hourly.with_code`), one ``array("d")`` of (lowest, highest) per code and one
    ``array("Q")`` of minute masks, instead of three dicts of boxed numbers (≈ 1 KB an hour for 8 codes, now
    ≈ 0.4 KB); :attr:`lo`, :attr:`hi` and :attr:`mask` give them as the dicts they were."""

    __slots__ = ("codes", "drywet", "hour", "lohi", "masks", "mins", "neg", "novel", "o2co2", "pinned", "rs_off",
                 "running", "zs_rt")  # fmt: skip

    def __init__(self, hour: int = 0) -> None:
        self.hour = hour  # start (epoch s)
        self.codes: tuple[str, ...] = ()  # codes with a valid value, in order of their first one
        self.lohi: array[float] = array("d")  # lowest, highest valid value of each code
        self.masks: array[int] = array("Q")  # code → minutes with a valid value (flatline coverage)
        self.neg: dict[str, list[float]] = _NONE  # code → [minute mask, lowest value]
        self.pinned: dict[str, list[float]] = _NONE  # code → [minute mask, value]
        self.novel = 0  # minutes with flow > 0 and velocity ≤ 0
        self.o2co2: list[float] = _ZERO2  # [minute mask, highest O2 + CO2]
        self.drywet: list[float] = _ZERO2  # [minute mask, highest dry standard ÷ wet actual flow]
        self.running = 0  # minutes with flue-gas flow above running_flow
        self.rs_off: dict[str, int] = _NONE  # facility code → minutes reported off (RS = 0)
        self.zs_rt: dict[str, list[float]] = _NONE  # code → [minute mask, largest |ZsRtd − formula|, das, formula]
        #: code → [minutes with a flag-N minute record (its start), Σ Avg in µ-units]: an integer sum, exact
        #: and commutative (a float sum would depend on the arrival order in its last bits); the first record of
        #: a minute counts
        self.mins: dict[str, list[int]] = _NONE

    def widen(self, code: str, lo: float, hi: float, bits: int) -> None:
        """Add a code's valid value(s) of the minutes ``bits``: its range widened to [lo, hi]."""
        try:
            i = self.codes.index(code)
        except ValueError:
            self.codes = with_code(self.codes, code)
            self.lohi.append(lo)
            self.lohi.append(hi)
            self.masks.append(bits)
            return
        lohi = self.lohi
        if lo < lohi[2 * i]:
            lohi[2 * i] = lo
        if hi > lohi[2 * i + 1]:
            lohi[2 * i + 1] = hi
        self.masks[i] |= bits

    @property
    def lo(self) -> dict[str, float]:
        """Code → lowest valid value of the hour (a new dict)."""
        return dict(zip(self.codes, self.lohi[0::2], strict=True))

    @property
    def hi(self) -> dict[str, float]:
        """Code → highest valid value of the hour (a new dict)."""
        return dict(zip(self.codes, self.lohi[1::2], strict=True))

    @property
    def mask(self) -> dict[str, int]:
        """Code → minutes of the hour with a valid value (a new dict)."""
        return dict(zip(self.codes, self.masks, strict=True))

    def to_json(self) -> dict[str, Any]:
        """JSON-able; empty parts left out (most hours have only the flatline summary).  (CPU, issue 20: each
        snapshot writes every hour kept; the arrays read once as lists, the three dicts filled in one pass, ≈ half
        the cost of three ``dict(zip(...))``, the parts tested one by one.)"""
        d: dict[str, Any] = {}
        codes = self.codes
        if codes:
            lohi = iter(self.lohi.tolist())  # lowest, highest of each code in turn
            lo: dict[str, float] = {}
            hi: dict[str, float] = {}
            mask: dict[str, int] = {}
            for code, minutes in zip(codes, self.masks.tolist(), strict=True):
                lo[code] = next(lohi)
                hi[code] = next(lohi)
                mask[code] = minutes
            d["lo"], d["hi"], d["mask"] = lo, hi, mask
        if self.neg:
            d["neg"] = self.neg
        if self.pinned:
            d["pinned"] = self.pinned
        if self.novel:
            d["novel"] = self.novel
        if self.o2co2[0]:
            d["o2co2"] = self.o2co2
        if self.drywet[0]:
            d["drywet"] = self.drywet
        if self.running:
            d["running"] = self.running
        if self.rs_off:
            d["rs_off"] = self.rs_off
        if self.zs_rt:
            d["zs_rt"] = self.zs_rt
        if self.mins:
            d["mins"] = self.mins
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], hour: int = 0) -> _HourStats:
        s = cls(hour)
        lo, hi, mask = d.get("lo", {}), d.get("hi", {}), d.get("mask", {})
        if not lo.keys() == hi.keys() == mask.keys():
            raise ValueError("quality state: an hour's lo, hi and mask name different codes")
        for k, v in lo.items():
            s.widen(k, float(v), float(hi[k]), int(mask[k]))
        s.neg = {k: [int(v[0]), float(v[1])] for k, v in d.get("neg", {}).items()} or _NONE
        s.pinned = {k: [int(v[0]), float(v[1])] for k, v in d.get("pinned", {}).items()} or _NONE
        s.novel = int(d.get("novel", 0))
        o2co2 = d.get("o2co2")
        if o2co2:
            s.o2co2 = [int(o2co2[0]), float(o2co2[1])]
        drywet = d.get("drywet")
        if drywet:
            s.drywet = [int(drywet[0]), float(drywet[1])]
        s.running = int(d.get("running", 0))
        s.rs_off = {k: int(v) for k, v in d.get("rs_off", {}).items()} or _NONE
        s.zs_rt = {
            k: [int(v[0]), float(v[1]), float(v[2]), float(v[3])] for k, v in d.get("zs_rt", {}).items()
        } or _NONE
        s.mins = {c: [int(v[0]), int(v[1])] for c, v in d.get("mins", {}).items()} or _NONE
        return s


def _or(d: dict[str, list[float]], code: str, bit: int, value: float, lowest: bool) -> dict[str, list[float]]:
    """``d`` with the minute ``bit`` and ``value`` added for ``code`` (a new dict in place of :data:`_NONE`)."""
    cur = d.get(code)
    if cur is None:
        if d is _NONE:
            d = {}
        d[code] = [bit, value]
    else:
        cur[0] = int(cur[0]) | bit
        cur[1] = min(cur[1], value) if lowest else max(cur[1], value)
    return d


class _Hours(list[_HourStats]):
    """An outlet's hour summaries, by hour (ascending; each knows its hour): a list, not a dict by hour (memory,
    issue 20: a dict of a few hours is ≈ 220–350 bytes, the list ≈ 90–120).  A handful of hours: looked up from
    the newest."""

    __slots__ = ()

    def values(self) -> _Hours:
        return self

    def find(self, hour: int) -> _HourStats | None:
        for st in reversed(self):
            if st.hour == hour:
                return st
            if st.hour < hour:
                return None
        return None


#: The hours of an outlet that has none (shared, never written: an outlet gets its own list with its first).
_NO_HOURS: Final = _Hours()


class _QualityParams:
    """A quality tracker's settings, one object for every outlet that has the same."""

    __slots__ = ("cfg", "factors", "keep_s", "max_o2", "o2_co2", "schedule")

    def __init__(
        self,
        cfg: Quality,
        schedule: LimitSchedule,
        factors: Mapping[str, float],
        max_o2: float,
        o2_co2: bool,
        keep_s: int,
    ) -> None:
        self.cfg = cfg
        self.schedule = schedule
        self.factors = factors
        self.max_o2 = max_o2
        #: whether O2 + CO2 is judged (combustion profiles, ``o2_co2_profiles``)
        self.o2_co2 = o2_co2
        #: how long an hour's summaries are kept behind the newest data time (s)
        self.keep_s = keep_s


#: The settings objects, one per distinct set of values (memory, issue 20).
_quality_params = SharedSettings(_QualityParams)


class QualityTracker:
    """The data-quality signals of one outlet (see the module docstring).  Feed every reading with
    :meth:`on_reading` and every emitted or revised hourly record with :meth:`on_hours`; live, call
    :meth:`on_clock` with the time up to which hours are decided.  Each returns :class:`EventUpdate` s."""

    __slots__ = ("_area", "_decided", "_events", "_hits", "_newest", "_p", "_pruned", "_stats", "_zs", "district",
                 "enterprise", "mn", "outlet")  # fmt: skip

    def __init__(
        self,
        outlet: Outlet,
        enterprise: str,
        district: str,
        *,
        quality: Quality | None = None,
        schedule: LimitSchedule | None = None,
        max_o2: float = DEFAULT_MAX_O2,
        hold: timedelta = DEFAULT_HOLD,
    ) -> None:
        self.outlet = outlet
        self.mn = outlet.mn
        self.enterprise = enterprise
        self.district = district
        cfg = quality if quality is not None else Quality()
        #: The settings, shared with the outlets that have the same (memory, issue 20).
        self._p = _quality_params(
            cfg,
            schedule if schedule is not None else LimitSchedule(outlet),
            unit_factors(outlet),
            max_o2,
            outlet.profile.startswith(tuple(cfg.o2_co2_profiles)),
            (math.ceil(hold.total_seconds() / _H) + KEEP_MARGIN_HOURS) * _H,
        )
        self._stats: _Hours = _NO_HOURS
        self._area = outlet.duct_area_m2
        self._newest = _NEVER
        #: type → pollutant → unit start (epoch s) → hit
        #: (this and the next two: the shared :data:`_NONE` until the first hour is judged, memory, issue 20)
        self._hits: dict[str, dict[str, dict[int, _Hit]]] = _NONE
        #: type → pollutant → run start → the event as last reported
        self._events: dict[str, dict[str, dict[int, Event]]] = _NONE
        #: concentration code → hour → (corrected mean, limit) of valid hours (limit_hugging)
        #: concentration code → Beijing day → [valid hours (24-bit mask), hours hugging the limit (mask), limit]
        self._zs: dict[str, dict[int, list[float]]] = _NONE
        #: every hour starting before this is decided
        self._decided = _NEVER
        self._pruned = _NEVER

    @property
    def cfg(self) -> Quality:
        """The thresholds (registry ``[city.quality]``)."""
        return self._p.cfg

    # -- readings ---------------------------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Add what the reading says to its hour's summaries (no event comes from a reading alone)."""
        stream = reading.stream
        if not self._p.cfg.enabled or stream is _S_DAY:
            return
        if reading.mn != self.mn:
            raise ValueError(f"reading of {reading.mn!r} fed to the quality tracker of {self.mn!r}")
        ts = math.floor(beijing_ts(reading.data_time))  # (as timestamp(): the reading's data time is aware)
        hour = ts - ts % _H
        if hour < self._newest - self._p.keep_s:
            return  # the hour's summaries are gone (see the module docstring)
        if hour > self._newest:
            self._newest = hour = shared_hour(hour)  # (one int object per hour, shared)
        stats = self._stats
        st = stats[-1] if stats and stats[-1].hour == hour else stats.find(hour)
        if st is None:
            st = _HourStats(shared_hour(hour))
            if stats is _NO_HOURS:  # (made with its hour: a list of one, not of four after an append)
                self._stats = _Hours((st,))
            elif not stats or stats[-1].hour < hour:
                stats.append(st)
            else:  # an older hour than the newest: in its place
                stats.insert(next(i for i, s in enumerate(stats) if s.hour > hour), st)
        if stream is _S_HOUR:
            self._hour_record(reading, st)
            return
        cfg, f = self._p.cfg, self._p.factors
        bit = _MINUTE_BITS[(ts - hour) // 60]  # (shared ints: an hour's first minute keeps no int of its own)
        main = "Rtd" if stream is _S_RTD else "Avg"
        is_min = stream is _S_MIN
        neg = -cfg.negative_tol
        ranges = cfg.analyser_range
        codes, lohi, masks = st.codes, st.lohi, st.masks
        k = 0  # where the next code usually is: a DAS lists its codes in the same order every time
        flow = vel = o2 = co2 = temp = None
        # the codes that may have a ZsRtd (ZsAvg) to check, in the reading's order: those with one among the
        # concentrations (the codes _is_conc accepts: CONC, CO2 and facility codes), for _zs_sub (CPU: its
        # own pass over every code cost as much as the check); checked when a CONC code has one (has_zs)
        zs_key = "Zs" + main
        zs_codes: list[str] = []
        has_zs = False
        kinds, isfinite = _KINDS, math.isfinite
        for code, m in reading.measurements.items():
            vals = m.values
            kind = kinds.get(code)
            if kind is None:
                kind = _kind(code)
            if kind == _FACILITY:
                if zs_key in vals:
                    zs_codes.append(code)
                if vals.get("RS") == 0:
                    rs_off = st.rs_off
                    if rs_off is _NONE:
                        rs_off = st.rs_off = {}
                    rs_off[code] = rs_off.get(code, 0) | bit
                continue
            if m.flag not in _N:
                continue
            v = vals.get(main)
            if v is None or not isfinite(v):
                continue
            if f:
                v *= f.get(code, 1.0)
            if kind <= _O2_KIND:  # a concentration or O2: the flatline summary
                lo = hi = v
                if len(vals) > 1 and ("Min" in vals or "Max" in vals):
                    lo, hi = self._min_max(code, vals, v)
                if k < len(codes) and codes[k] == code:
                    i = k
                else:
                    try:
                        i = codes.index(code)
                    except ValueError:  # the code's first valid value of the hour
                        i = len(codes)
                        codes = st.codes = with_code(codes, code)
                        lohi.append(lo)
                        lohi.append(hi)
                        masks.append(bit)
                        k = i + 1
                        i = -1
                if i >= 0:
                    k = i + 1
                    j = i + i
                    if lo < lohi[j]:
                        lohi[j] = lo
                    j += 1
                    if hi > lohi[j]:
                        lohi[j] = hi
                    minutes = masks[i]
                    if not minutes & bit:
                        masks[i] = minutes | bit
                if kind == _CONC:
                    if v < neg:
                        st.neg = _or(st.neg, code, bit, v, True)
                    if zs_key in vals:
                        zs_codes.append(code)
                        has_zs = True
                else:
                    o2 = v
            elif kind == _FLOW:
                flow = v
            elif kind == _VELOCITY:
                vel = v
            elif kind == _CO2:
                co2 = v
                if zs_key in vals:
                    zs_codes.append(code)
            elif code == TEMPERATURE:
                temp = v
            if ranges:
                full = ranges.get(code)
                if full is not None and v >= 0.999 * full:
                    st.pinned = _or(st.pinned, code, bit, v, False)
            if is_min:
                cur = st.mins.get(code)
                if cur is None:
                    if st.mins is _NONE:
                        st.mins = {}
                    st.mins[code] = [bit, round(v * _MICRO)]
                elif not cur[0] & bit:
                    cur[0] |= bit
                    cur[1] += round(v * _MICRO)
        if flow is not None:
            if flow > cfg.running_flow:
                running = st.running
                if not running & bit:
                    st.running = running | bit if running else bit
            if flow > 0 and vel is not None and vel <= 0:
                st.novel |= bit
            area = self._area
            if (
                area is not None
                and vel is not None
                and vel >= max(cfg.dry_wet_min_velocity, 1e-9)
                and (temp is None or temp > 0)
            ):
                ratio = flow / (vel * area)  # dry standard ÷ wet flow at stack conditions
                if ratio > 1 + cfg.dry_wet_tol:
                    st.drywet = [int(st.drywet[0]) | bit, max(st.drywet[1], ratio)]
        if o2 is not None:
            # CO2 in % (a value above 100 is not: a DAS sending mg/m³); combustion outlets only (registry)
            if co2 is not None and co2 <= 100 and o2 + co2 > cfg.o2_co2_max and self._p.o2_co2:
                st.o2co2 = [int(st.o2co2[0]) | bit, max(st.o2co2[1], o2 + co2)]
            if has_zs:
                self._zs_sub(reading, zs_codes, st, bit, o2, main)

    def _min_max(self, code: str, vals: Mapping[str, float], v: float) -> tuple[float, float]:
        lo = hi = v
        for sfx in ("Min", "Max"):
            w = vals.get(sfx)
            if w is not None and math.isfinite(w):
                w *= self._p.factors.get(code, 1.0)
                lo, hi = min(lo, w), max(hi, w)
        return lo, hi

    def _hour_record(self, reading: Reading, st: _HourStats) -> None:
        """A DAS hourly record (CN=2061) says how the hour varied only through its Min and Max."""
        for code, m in reading.measurements.items():
            vals = m.values
            if _kind(code) > _O2_KIND or m.flag not in _N or "Min" not in vals or "Max" not in vals:
                continue
            v = vals.get("Avg")
            if v is None or not math.isfinite(v):
                continue
            lo, hi = self._min_max(code, vals, v * self._p.factors.get(code, 1.0))
            st.widen(code, lo, hi, _FULL_HOUR)

    def _zs_sub(self, reading: Reading, zs_codes: list[str], st: _HourStats, bit: int, o2: float, main: str) -> None:
        """Real-time ``ZsRtd`` (minute ``ZsAvg``) against the formula on ``Rtd`` (``Avg``) and O2's, for
        ``zs_codes`` (the reading's codes that :func:`_is_conc` accepts and that have one, in its order)."""
        zs_key = "Zs" + main
        ref_and_limit = self._p.schedule.ref_and_limit
        factors = self._p.factors
        t = reading.data_time
        rel_tol, abs_tol, max_o2 = self._p.cfg.zs_rel_tol, self._p.cfg.zs_abs_tol, self._p.max_o2
        # correct(c, o2, ref, max_o2=max_o2) and zs_agrees inline (CPU: three codes a reading), the same
        # arithmetic: the reading's O2 checked once (out of range: no code has a corrected value)
        if not (0.0 <= o2 < O2_AIR) or o2 > max_o2:
            return
        o2_div = O2_AIR - o2
        isfinite, isclose = math.isfinite, math.isclose
        ms = reading.measurements
        for code in zs_codes:
            m = ms[code]
            vals = m.values
            das = vals.get(zs_key)
            if das is None:
                continue
            rtd = vals.get(main)
            if rtd is None or m.flag not in _N:
                continue
            f = factors.get(code, 1.0) if factors else 1.0
            ref, limit = ref_and_limit(code, t)
            c = rtd * f
            if not (0.0 <= ref < O2_AIR) or not isfinite(c) or not isfinite(das):
                continue
            computed = c * (O2_AIR - ref) / o2_div
            das *= f
            if (
                isfinite(das)
                and isfinite(computed)
                and isclose(das, computed, rel_tol=rel_tol, abs_tol=abs_tol)
                and (limit is None or (das > limit) == (computed > limit))
            ):
                continue
            diff = abs(das - computed)
            cur = st.zs_rt.get(code)
            if cur is None:
                if st.zs_rt is _NONE:
                    st.zs_rt = {}
                st.zs_rt[code] = [bit, diff, das, computed]
            else:
                cur[0] = int(cur[0]) | bit
                if (diff, das, computed) > (cur[1], cur[2], cur[3]):
                    cur[1:] = [diff, das, computed]

    def _agrees(self, das: float, computed: float, limit: float | None) -> bool:
        if not zs_agrees(das, computed, self._p.cfg.zs_rel_tol, self._p.cfg.zs_abs_tol):
            return False
        return limit is None or (das > limit) == (computed > limit)

    # -- hours ------------------------------------------------------------------------------------------

    def on_hours(self, records: Iterable[HourlyRecord]) -> list[EventUpdate]:
        """Judge the hours of ``records`` (emitted or revised; all codes of an hour come together)."""
        if not self._p.cfg.enabled:
            return []
        if self._hits is _NONE:  # the outlet's first hour: its own containers
            self._hits, self._events, self._zs = {}, {}, {}
        by_hour: dict[int, dict[str, HourlyRecord]] = {}
        for rec in records:
            if rec.mn != self.mn:
                raise ValueError(f"record of {rec.mn!r} fed to the quality tracker of {self.mn!r}")
            by_hour.setdefault(int(rec.hour_start.timestamp()), {})[rec.pollutant] = rec
        dirty: dict[tuple[str, str], bool] = {}
        days: set[int] = set()
        decided_before = self._decided
        for hour in sorted(by_hour):
            late = hour < self._decided
            recs = by_hour[hour]
            st = self._stats.find(hour)
            found = self._judge(hour, recs, st)
            for type_ in (FLATLINE, O2_ANOMALY, ZS_INCONSISTENT, HOURLY_INCONSISTENT, OUT_OF_RANGE, OPERATION_MISMATCH):
                if st is None and type_ in _FROM_READINGS:
                    continue
                by_key = self._hits.get(type_, {})
                keys = {k for k, d in by_key.items() if hour in d} | {k for t, k in found if t == type_}
                for key in keys:
                    new = found.get((type_, key))
                    old = by_key.get(key, {}).get(hour)
                    if new == old or (new is None and st is None and type_ in _PARTLY_FROM_READINGS):
                        continue
                    if new is None:
                        del by_key[key][hour]
                    else:
                        self._hits.setdefault(type_, {}).setdefault(key, {})[hour] = new
                        by_key = self._hits[type_]
                    dirty[(type_, key)] = dirty.get((type_, key), False) or late
            days |= self._hours_zs(hour, recs)
            self._decided = max(self._decided, hour + _H)
        for day in sorted(days):
            late = day + _DAY <= decided_before
            for key in self._judge_days(day):
                dirty[(LIMIT_HUGGING, key)] = dirty.get((LIMIT_HUGGING, key), False) or late
        for type_, ev_by_key in self._events.items():  # open runs whose next hour (day) is now decided
            for key, runs in ev_by_key.items():
                if (type_, key) not in dirty and any(ev.status == "open" for ev in runs.values()):
                    dirty[(type_, key)] = False
        ups: list[EventUpdate] = []
        for (type_, key), late in sorted(dirty.items()):
            ups.extend(self._recompute(type_, key, late))
        self._prune_stats()
        return ups

    def _running(self, recs: Mapping[str, HourlyRecord]) -> bool:
        """The outlet ran the whole hour: a valid hour of flue-gas flow above ``running_flow`` (a start-up or
        shut-down hour, partly without flow, is not; without a flow measurement the state is unknown: not)."""
        flow = recs.get(FLOW)
        if flow is None:
            return False
        return flow.valid and flow.avg is not None and flow.avg > self._p.cfg.running_flow

    def _judge(self, hour: int, recs: Mapping[str, HourlyRecord], st: _HourStats | None) -> dict[tuple[str, str], _Hit]:
        cfg = self._p.cfg
        out: dict[tuple[str, str], _Hit] = {}
        running = self._running(recs)
        stopped = self.outlet.in_stop(_dt(hour)) if self.outlet.stop else False
        flow = recs.get(FLOW)
        flow_txt = f"flow {_g(flow.avg)} m³/s (flag {flow.flag})" if flow is not None else "no flow measured"
        if st is not None and not stopped:
            lohi = st.lohi
            for code, i in sorted((c, i) for i, c in enumerate(st.codes)):
                n = _bits(st.masks[i])
                lo, hi = lohi[2 * i], lohi[2 * i + 1]
                if n < cfg.flatline_min_minutes or not running or hi <= cfg.flatline_floor:
                    continue
                mid = (lo + hi) / 2
                tol = max(cfg.flatline_abs_tol, cfg.flatline_rel_tol * abs(mid))
                if hi - lo <= tol:
                    ev = (
                        f"{code}: every valid value of the hour within {lo:.6g}…{hi:.6g} (range {hi - lo:.3g} ≤ "
                        f"tolerance {tol:.3g}) over {min(n, 60)} minutes while running; {flow_txt}"
                    )
                    out[(FLATLINE, code)] = (mid, tol, ev)
        if not stopped:
            hit = self._o2(recs, running, flow_txt)
            if hit is not None:
                out[(O2_ANOMALY, O2)] = hit
        for code, rec in recs.items():
            hit = self._zs_hour(rec, st)
            if hit is not None:
                out[(ZS_INCONSISTENT, code)] = hit
            hit = self._hourly_vs_minutes(rec, st)
            if hit is not None:
                out[(HOURLY_INCONSISTENT, code)] = hit
        if st is not None:
            self._out_of_range(st, out)
            if not stopped:
                for sb in sorted(st.rs_off):
                    n = _bits(st.running & st.rs_off[sb])
                    if n >= cfg.mismatch_min_minutes:
                        ev = (
                            f"{sb}-RS = 0 (treatment facility off) in {n} minutes while flue-gas flow was above "
                            f"{cfg.running_flow:g} m³/s (production running); hour: {flow_txt}"
                        )
                        out[(OPERATION_MISMATCH, sb)] = (float(n), float(cfg.mismatch_min_minutes), ev)
        return out

    def _o2(self, recs: Mapping[str, HourlyRecord], running: bool | None, flow_txt: str) -> _Hit | None:
        o2 = recs.get(O2)
        reported = sorted(
            c for c, r in recs.items() if is_concentration(c) and r.avg is not None and (r.valid or r.o2_invalid)
        )
        if not running:
            return None  # no combustion shown (stopped, starting up, or no flow measured: state unknown)
        if o2 is None or o2.avg is None or not o2.valid or o2.flag != "N":
            if not reported:
                return None
            why = "no O2 (a19001) data" if o2 is None or o2.avg is None else f"O2 hour not valid (flag {o2.flag})"
            return (None, self._p.cfg.o2_ambient, f"{why} while {', '.join(reported)} reported valid data; {flow_txt}")
        if o2.avg >= self._p.cfg.o2_ambient or o2.avg > self._p.max_o2:
            ev = (
                f"O2 hourly mean {o2.avg:.2f} % (ambient ≥ {self._p.cfg.o2_ambient:g} %, dilution cut-off "
                f"{self._p.max_o2:g} %) while the flue gas flowed all hour: {flow_txt}"
            )
            return (o2.avg, self._p.cfg.o2_ambient, ev)
        return None

    def _zs_hour(self, rec: HourlyRecord, st: _HourStats | None) -> _Hit | None:
        code = rec.pollutant
        if not is_concentration(code):
            return None
        parts: list[str] = []
        peak: float | None = None
        das = rec.das_zs_avg
        if das is not None and rec.avg is not None and rec.o2_avg is not None and rec.ref_o2 is not None:
            computed = correct(rec.avg, rec.o2_avg, rec.ref_o2, max_o2=self._p.max_o2)
            if computed is not None and not self._agrees(das, computed, rec.limit):
                diff = abs(das - computed)
                peak = diff
                rel = diff / max(abs(das), abs(computed)) if max(abs(das), abs(computed)) else 0.0
                side = ""
                if rec.limit is not None and (das > rec.limit) != (computed > rec.limit):
                    side = f"; the two lie on different sides of the limit {rec.limit:g}"
                parts.append(
                    f"DAS ZsAvg {das:.4g} vs C×(21−{rec.ref_o2:g})/(21−O2) = {computed:.4g} (Avg {rec.avg:.4g}, O2 "
                    f"{rec.o2_avg:.2f} %): differs by {diff:.3g} ({rel:.1%}; tolerance {self._p.cfg.zs_rel_tol:.0%} or "
                    f"{self._p.cfg.zs_abs_tol:g}){side}"
                )
        rt = None if st is None else st.zs_rt.get(code)
        if rt is not None and _bits(int(rt[0])) >= self._p.cfg.zs_rtd_min_minutes:
            peak = rt[1] if peak is None else max(peak, rt[1])
            parts.append(
                f"ZsRtd/ZsAvg of real-time or minute data disagrees with the formula on Rtd/Avg and O2 in "
                f"{_bits(int(rt[0]))} minutes (largest: {rt[2]:.4g} vs {rt[3]:.4g})"
            )
        if not parts:
            return None
        return (peak, rec.limit, f"{code}: " + "; ".join(parts))

    def _hourly_vs_minutes(self, rec: HourlyRecord, st: _HourStats | None) -> _Hit | None:
        if st is None or rec.source != SOURCE_DAS or rec.avg is None or rec.flag not in _OK_HOUR:
            return None
        mins = st.mins.get(rec.pollutant)
        if not mins:
            return None
        secs = [i for i in range(60) if mins[0] >> i & 1]
        gaps = [b - a for a, b in itertools.pairwise(secs)]
        period = min(gaps) if gaps else 1  # minutes per record (MinInterval 1–10)
        covered = min(60, len(secs) * period)
        if covered < self._p.cfg.hourly_min_minutes:
            return None
        mean = mins[1] / _MICRO / len(secs)
        diff = abs(rec.avg - mean)
        tol = max(self._p.cfg.hourly_abs_tol, self._p.cfg.hourly_rel_tol * abs(mean))
        if diff <= tol:
            return None
        ev = (
            f"{rec.pollutant}: DAS hourly (CN=2061) Avg {rec.avg:.4g} vs mean {mean:.4g} of its {len(secs)} minute "
            f"records (CN=2051, {covered} minutes): differs by {diff:.3g} > tolerance {tol:.3g}"
        )
        return (diff, tol, ev)

    def _out_of_range(self, st: _HourStats, out: dict[tuple[str, str], _Hit]) -> None:
        cfg = self._p.cfg
        need = cfg.out_of_range_min_minutes
        found: dict[str, list[str]] = {}
        worst: dict[str, int] = {}

        def add(key: str, n: int, text: str) -> None:
            found.setdefault(key, []).append(text)
            worst[key] = max(worst.get(key, 0), n)

        for code, (mask, low) in sorted(st.neg.items()):
            n = _bits(int(mask))
            if n >= need:
                add(code, n, f"negative concentration in {n} minutes (lowest {low:.4g} < −{cfg.negative_tol:g})")
        for code, (mask, val) in sorted(st.pinned.items()):
            n = _bits(int(mask))
            if n >= need:
                full = cfg.analyser_range[code]
                add(code, n, f"pinned at the analyser's full scale {full:g} in {n} minutes (value {val:.4g})")
        n = _bits(st.novel)
        if n >= need:
            add(FLOW, n, f"flue-gas flow with zero velocity ({VELOCITY} ≤ 0) in {n} minutes")
        n = _bits(int(st.drywet[0]))
        if n >= need:
            add(
                FLOW,
                n,
                f"dry standard flow ({FLOW}) {st.drywet[1]:.3g}× the wet flow at stack conditions ({VELOCITY} × duct "
                f"area {self._area:g} m²) in {n} minutes",
            )
        n = _bits(int(st.o2co2[0]))
        if n >= need:
            add(O2, n, f"O2 + CO2 ({CO2}) = {st.o2co2[1]:.3g} % > {cfg.o2_co2_max:g} % in {n} minutes")
        for key, texts in found.items():
            out[(OUT_OF_RANGE, key)] = (float(worst[key]), float(need), f"{key}: " + "; ".join(texts))

    # -- limit hugging (days) ---------------------------------------------------------------------------

    def _hours_zs(self, hour: int, recs: Mapping[str, HourlyRecord]) -> set[int]:
        """Mark the hour valid / hugging in its day's masks; the days whose judgement may change."""
        d = _day(hour)
        bit = 1 << ((hour - d) // _H)
        band = self._p.cfg.hugging_band
        changed = False
        for code, rec in recs.items():
            if not is_concentration(code):
                continue
            zs, limit = rec.zs_avg, rec.limit
            ok = rec.counts_valid and not rec.o2_invalid and zs is not None and limit is not None
            by_d = self._zs.get(code)
            cur = None if by_d is None else by_d.get(d)
            if cur is None:
                if not ok:
                    continue
                cur = self._zs.setdefault(code, {}).setdefault(d, [0, 0, 0.0])
            before = list(cur)
            v, h = int(cur[0]) & ~bit, int(cur[1]) & ~bit
            if ok:
                assert zs is not None and limit is not None
                v |= bit
                if band * limit <= zs <= limit:
                    h |= bit
                cur[2] = limit
            cur[0], cur[1] = v, h
            changed = changed or cur != before
        if not changed:
            return set()
        return {d + i * _DAY for i in range(HISTORY_DAYS + 1)}

    @staticmethod
    def _share(by_d: Mapping[int, list[float]], day: int) -> tuple[float, int, int] | None:
        cur = by_d.get(day)
        if cur is None:
            return None
        n, k = _bits(int(cur[0])), _bits(int(cur[1]))
        return (k / n, k, n) if n >= VALID_DAY_HOURS else None

    def _judge_days(self, day: int) -> list[str]:
        """Recompute ``limit_hugging`` of ``day``; the codes whose hit changed."""
        newest = _day(self._decided - _H) if self._decided != _NEVER else day
        if day > newest:
            return []
        cfg = self._p.cfg
        changed: list[str] = []
        hits = self._hits.setdefault(LIMIT_HUGGING, {})
        for code in sorted(set(self._zs) | set(hits)):
            by_d = self._zs.get(code, {})
            hit: _Hit | None = None
            today = self._share(by_d, day)
            if today is not None and today[0] >= cfg.hugging_share:
                history = [s[0] for i in range(1, HISTORY_DAYS + 1) if (s := self._share(by_d, day - i * _DAY))]
                if len(history) >= cfg.hugging_history_days:
                    base = statistics.median(history)
                    if today[0] - base >= cfg.hugging_rise:
                        limit = by_d[day][2]
                        ev = (
                            f"{code}: {today[1]} of {today[2]} valid hours ({today[0]:.0%}) within "
                            f"{cfg.hugging_band:.0%}–100 % of the limit ({limit:g}); the outlet's median share over "
                            f"its previous {len(history)} valid days: {base:.0%}"
                        )
                        hit = (today[0], cfg.hugging_share, ev)
            by_key = hits.get(code, {})
            if by_key.get(day) != hit:
                if hit is None:
                    del by_key[day]
                else:
                    hits.setdefault(code, {})[day] = hit
                changed.append(code)
        return changed

    # -- runs → events ----------------------------------------------------------------------------------

    def _min_units(self, type_: str) -> int:
        return self._p.cfg.flatline_hours if type_ == FLATLINE else 1

    def _recompute(self, type_: str, key: str, late: bool) -> list[EventUpdate]:
        step = _DAY if type_ == LIMIT_HUGGING else _H
        by_u = self._hits.get(type_, {}).get(key, {})
        runs: list[list[Any]] = []  # [start, end, peak, first hit]
        for u in sorted(by_u):
            hit = by_u[u]
            if runs and runs[-1][1] == u:
                run = runs[-1]
                run[1] = u + step
                if hit[0] is not None and (run[2] is None or hit[0] > run[2]):
                    run[2] = hit[0]
            else:
                runs.append([u, u + step, hit[0], hit])
        need = self._min_units(type_)
        old = self._events.get(type_, {}).get(key, {})
        new: dict[int, Event] = {}
        ups: list[EventUpdate] = []
        for start, end, peak, first in runs:
            if (end - start) // step < need:
                continue
            closed = end + step <= self._decided if step == _DAY else end < self._decided
            prev = old.get(start)
            ev = Event(
                type=type_,
                mn=self.mn,
                enterprise=self.enterprise,
                district=self.district,
                pollutant=key,
                start=_dt(start),
                end=_dt(end) if closed else None,
                hours=(end - start) // _H,
                peak=peak,
                limit=first[1],
                ref_o2=None,
                profile=None,
                status="closed" if closed else "open",
                late=late or (prev is not None and prev.late),
                evidence=first[2],
            )
            new[start] = ev
            ups += run_updates(prev, ev)
        ups += retract_missing(old, new)
        by_key = self._events.setdefault(type_, {})
        if new:
            by_key[key] = new
        else:
            by_key.pop(key, None)
        ups.sort(key=lambda u: u.event.start)
        return ups

    def on_clock(self, until: datetime) -> list[EventUpdate]:
        """Hours that ended at or before ``until`` are decided: close runs whose next hour (day) is one of
        them (live; replay leaves the runs still going at the end of the input open, like exceedances)."""
        if not self._p.cfg.enabled:
            return []
        u = math.floor(until.timestamp())
        decided = u - u % _H
        if decided <= self._decided:
            return []
        self._decided = decided
        ups: list[EventUpdate] = []
        for type_ in sorted(self._events):
            for key in sorted(self._events[type_]):
                if any(ev.status == "open" for ev in self._events[type_][key].values()):
                    ups.extend(self._recompute(type_, key, False))
        return ups

    def _all_events(self) -> list[Event]:
        evs = self._events
        return [ev for t in sorted(evs) for k in sorted(evs[t]) for _, ev in sorted(evs[t][k].items())]

    @property
    def open_events(self) -> list[Event]:
        return [ev for ev in self._all_events() if ev.status == "open"]

    @property
    def has_events(self) -> bool:
        return any(self._events.values())

    def _prune_stats(self) -> None:
        cut = self._newest - self._p.keep_s
        stats = self._stats
        if stats and stats[0].hour < cut:
            del stats[: next((i for i, s in enumerate(stats) if s.hour >= cut), len(stats))]
            if not stats:
                self._stats = _NO_HOURS

    def prune(self, before: datetime) -> None:
        """Forget runs that ended before ``before`` (final: outside the repair window), the hits that are
        part of no remaining run, and corrected means older than the history ``limit_hugging`` needs."""
        b = math.floor(before.timestamp())
        if b - b % _H <= self._pruned:
            return  # once per hour of the cut is enough
        self._pruned = b - b % _H
        for by_key in self._events.values():
            for key in list(by_key):
                runs = by_key[key]
                for start, ev in list(runs.items()):
                    if ev.status != "open" and (ev.end is None or ev.end.timestamp() < b):
                        del runs[start]
                if not runs:
                    del by_key[key]
        for type_, hits in self._hits.items():
            spans = [
                (start, start + int(ev.hours) * _H)
                for runs in self._events.get(type_, {}).values()
                for start, ev in runs.items()
                if ev.status != RETRACTED_STATUS
            ]
            for key in list(hits):
                old = [u for u in hits[key] if u < b and not any(a <= u < e for a, e in spans)]
                for u in old:
                    del hits[key][u]
                if not hits[key]:
                    del hits[key]
        keep = b - (HISTORY_DAYS + 1) * _DAY
        for code in list(self._zs):
            by_d = self._zs[code]
            for d in [d for d in by_d if d < keep]:
                del by_d[d]
            if not by_d:
                del self._zs[code]

    # -- persistence ------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "kind": "quality",
            "mn": self.mn,
            "decided": self._decided,
            "newest": self._newest,
            "pruned": self._pruned,
            "stats": [[s.hour, s.to_json()] for s in self._stats],
            "hits": {
                t: {k: [[u, *hit] for u, hit in sorted(d.items())] for k, d in sorted(by_k.items())}
                for t, by_k in sorted(self._hits.items())
            }
            if self._hits
            else {},
            "events": [ev.to_json() for ev in self._all_events()] if self._events else [],
            "days": {c: [[d, *v] for d, v in sorted(by_d.items())] for c, by_d in sorted(self._zs.items())}
            if self._zs
            else {},
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1 or state.get("kind") != "quality":
            raise ValueError("not a version-1 quality state")
        if state.get("mn") != self.mn:
            raise ValueError(f"quality state of outlet {state.get('mn')!r} restored into {self.mn!r}")
        self._decided = int(state["decided"])
        self._newest = shared_hour(int(state["newest"]))
        self._pruned = int(state.get("pruned", _NEVER))
        by_hour = {int(h): s for h, s in state["stats"]}  # (a repeated hour: the last, as a dict by hour kept)
        self._stats = _Hours(_HourStats.from_json(by_hour[h], h) for h in sorted(by_hour)) or _NO_HOURS
        self._hits = {
            t: {k: {int(u): (p, lim, str(ev)) for u, p, lim, ev in rows} for k, rows in by_k.items()}
            for t, by_k in state["hits"].items()
        }
        self._events = {}
        for d in state["events"]:
            ev = Event.from_json(d)
            key = ev.pollutant or ""
            self._events.setdefault(ev.type, {}).setdefault(key, {})[int(ev.start.timestamp())] = ev
        self._zs = {
            c: {int(d): [int(v), int(h), float(lim)] for d, v, h, lim in rows} for c, rows in state["days"].items()
        }
