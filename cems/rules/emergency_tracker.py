"""The heavy-pollution checks run on the data stream (issue 16): per production line on the emergency list,
hour by hour, from the hourly records and readings the engine already has.  Pure (no I/O, no clock): the
engine feeds it and it returns :class:`~cems.rules.events.EventUpdate`s like the other trackers.

Event types (docs/events.md), each a run of consecutive hours (``hours``), ``pollutant`` the pollutant code
(cuts) or the line id (the others), ``peak`` / ``limit`` the evidence, ``profile`` the evidence in words
(level, measure, baseline, its source):

* ``emergency_noncompliance``: during a warning, the line's hourly emission rate of a pollutant (summed over
  its outlets) above ``baseline × (1 − cut)``.  ``peak``: the highest rate of the run, kg/h; ``limit``: the
  allowed rate, kg/h.
* ``emergency_stop_violation``: the line must stop at the level in force but the hour shows operation (flow
  above the idle flow, ``SBxxx-RS = 1``, production power above the idle power).  ``peak``/``limit``: the
  first sign's value and idle threshold.
* ``staggered_production_violation``: the same inside a 错峰生产 window (a date window or "during any warning
  ≥ level").  Takes precedence over a stop measure for the same hour.
* ``treatment_off``: production draws power while the treatment facility does not (分表计电), at any time.
  ``peak``: production kW; ``limit``: the treatment's idle threshold, kW.
* ``warning_level``: a setting of the city's level (:meth:`EmergencyMonitor.set_history`).  ``mn`` ``city``,
  ``pollutant`` the level, ``peak`` its number (0 none … 4 red), ``profile`` who set it.

Which level judges an hour: the lower of the levels in force at its first and its last second, so an
enterprise is judged only on hours wholly inside a warning (a warning from 08:30 judges from 09:00).
An hour of a line is judged when the records of that hour of any of its outlets or meters arrive (first or
revised), with everything known of the hour then; a revision or a warning set afterwards re-judges it (the
events are then marked ``late``), so live and replay agree whatever the arrival order.  Hours are kept for
the repair window (10 days), like the hourly records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from cems.limits.emergency import builtin_emergency_profiles
from cems.model import BEIJING, FLOW, Reading
from cems.registry import CutMeasure, ProductionLine, Registry, Stop
from cems.rules.emergency import (
    CUT,
    EXEMPT,
    STOP,
    HourEvidence,
    LinePlan,
    Measure,
    StaggeredWindow,
    WarningHistory,
    WarningLevel,
    WarningPeriod,
    cut_results,
    emission_rate_kg_h,
    mandated_stops,
    operation_evidence,
    sum_rates,
    treatment_off,
)
from cems.rules.events import OPENED, Event, EventUpdate, ExceedanceTracker
from cems.rules.hourly import REPAIR_WINDOW, HourlyRecord

EMERGENCY_NONCOMPLIANCE: Final = "emergency_noncompliance"
EMERGENCY_STOP_VIOLATION: Final = "emergency_stop_violation"
STAGGERED_PRODUCTION_VIOLATION: Final = "staggered_production_violation"
TREATMENT_OFF: Final = "treatment_off"
WARNING_LEVEL: Final = "warning_level"
#: ``mn`` of city-wide events (``warning_level``).
CITY_MN: Final = "city"

_LEVEL_BY_NAME: Final = {lv.label: lv for lv in WarningLevel}


# ---------------------------------------------------------------------------------------------- plans


def _measure(spec: str | CutMeasure, profile_cuts: Mapping[str, float] | None, source: str) -> Measure | None:
    if spec == "stop":
        return Measure(STOP, source="registry: stop")
    if spec == "exempt":
        return Measure(EXEMPT, source="registry: exempt")
    if spec == "profile":
        return None if profile_cuts is None else Measure(CUT, MappingProxyType(dict(profile_cuts)), source)
    assert isinstance(spec, CutMeasure)
    cuts = dict(profile_cuts or {})
    cuts.update(spec.cut)
    return Measure(CUT, MappingProxyType(cuts), "registry: " + ", ".join(f"{k} {v:g}" for k, v in spec.cut.items()))


def line_plan(enterprise: str, grade: str | None, ln: ProductionLine, default_profile: str | None) -> LinePlan:
    """A registry line resolved: the profile's cuts for every level it has (only for the pollutants with a
    baseline), overridden level by level by the line's own ``measure``."""
    profile_name = ln.profile or default_profile
    prof = None if profile_name is None else builtin_emergency_profiles()[profile_name]
    measures: dict[WarningLevel, Measure] = {}
    if prof is not None:
        for level, cuts in prof.cuts.items():
            own = {p: c for p, c in cuts.items() if p in ln.baseline}
            if own:
                measures[_LEVEL_BY_NAME[level]] = Measure(CUT, MappingProxyType(own), f"{prof.name}: {prof.source}")
    for level, spec in ln.measure.items():
        lv = _LEVEL_BY_NAME[level]
        base = None
        if prof is not None and level in prof.cuts:
            base = {p: c for p, c in prof.cuts[level].items() if p in ln.baseline}
        src = "" if prof is None else f"{prof.name}: {prof.source}"
        m = _measure(spec, base, src)
        if m is not None:
            measures[lv] = m
    first = ln.outlets[0] if ln.outlets else None
    prod = ln.production_power
    treat = ln.treatment_power
    return LinePlan(
        enterprise=enterprise,
        id=ln.id,
        name=ln.name,
        grade=ln.grade or grade,
        outlets=tuple(ln.outlets),
        baseline=MappingProxyType(dict(ln.baseline)),
        measures=MappingProxyType(measures),
        running_codes=tuple(ln.running_codes),
        production_power=None if prod is None else (prod.mn or first or "", prod.code),
        treatment_power=None if treat is None else (treat.mn or first or "", treat.code),
        idle_flow_m3_s=ln.idle_flow_m3_s,
        idle_power_kw=ln.idle_power_kw,
        treatment_idle_power_kw=ln.treatment_idle_power_kw,
        staggered=tuple(
            StaggeredWindow(
                start=w.start,
                end=w.end,
                min_level=None if w.warning_at_least is None else _LEVEL_BY_NAME[w.warning_at_least],
                reason=w.reason,
            )
            for w in ln.staggered
        ),
    )


def line_plans(registry: Registry) -> list[LinePlan]:
    """Every line on the registry's emergency lists, resolved (:func:`line_plan`)."""
    return [line_plan(e.id, e.grade, ln, registry.emergency.profile) for e in registry.enterprise for ln in e.line]


def power_codes(plans: Iterable[LinePlan]) -> dict[str, frozenset[str]]:
    """MN → the power codes the lines read from it (kW: not concentrations; no O2 correction applies)."""
    out: dict[str, set[str]] = {}
    for p in plans:
        for meter in (p.production_power, p.treatment_power):
            if meter is not None:
                out.setdefault(meter[0], set()).add(meter[1])
    return {mn: frozenset(c) for mn, c in out.items()}


# ---------------------------------------------------------------------------------------------- stops

#: The far end of a mandated stop whose warning has no end yet (recomputed when the warning is lifted).
_OPEN_END: Final = datetime(2100, 1, 1, tzinfo=BEIJING)


def _intersect(
    a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]
) -> list[tuple[datetime, datetime]]:
    out = []
    for s1, e1 in a:
        for s2, e2 in b:
            s, e = max(s1, s2), min(e1, e2)
            if s < e:
                out.append((s, e))
    return sorted(out)


def with_mandated_stops(
    registry: Registry, history: WarningHistory, plans: Sequence[LinePlan] | None = None
) -> Registry:
    """The registry with each line's mandated stops (错峰 windows; stop measures while a warning requires
    them) added to its outlets' declared stops, so that the 90 % rule does not expect their hours and silence
    in them is not a data interruption (DOMAIN.md §6: "a stopped source is not missing data").  An outlet
    shared by several lines gets only the time all of them must stop."""
    plans = line_plans(registry) if plans is None else plans
    times: list[datetime] = [t for a, b, _, _ in history.spans() for t in (a, b) if t is not None]
    times += [t for p in plans for w in p.staggered for t in (w.start, w.end) if t is not None]
    if not times:
        return registry
    lo, hi = min(times), max(max(times), _OPEN_END)
    per_outlet: dict[str, list[list[tuple[datetime, datetime]]]] = {}
    reasons: dict[str, str] = {}
    for p in plans:
        pieces = mandated_stops(p, history, lo, hi)
        for mn in p.outlets:
            per_outlet.setdefault(mn, []).append([(a, b) for a, b, _ in pieces])
            for _, _, r in pieces:
                reasons.setdefault(mn, r)
    extra: dict[str, list[tuple[datetime, datetime]]] = {}
    for mn, lists in per_outlet.items():
        spans = lists[0]
        for other in lists[1:]:
            spans = _intersect(spans, other)
        if spans:
            extra[mn] = spans
    if not extra:
        return registry
    enterprises = []
    for e in registry.enterprise:
        outlets = []
        for o in e.outlet:
            mine = extra.get(o.mn)
            if mine:
                added = [Stop.model_validate({"from": a, "to": b, "reason": reasons[o.mn]}) for a, b in mine]
                o = o.model_copy(update={"stop": [*o.stop, *added]})
            outlets.append(o)
        enterprises.append(e.model_copy(update={"outlet": outlets}))
    return registry.reindexed(enterprises)


# ---------------------------------------------------------------------------------------------- monitor


def _ts(t: datetime) -> int:
    return math.floor(t.timestamp())


def _usable(rec: HourlyRecord) -> float | None:
    """The code's own hourly mean when its own data are valid (an O2 problem does not matter for a rate)."""
    if rec.avg is None or not math.isfinite(rec.avg):
        return None
    return rec.avg if rec.valid or rec.o2_invalid else None


class _LineState:
    __slots__ = ("noncompliance", "plan", "staggered", "stop", "treatment")

    def __init__(self, plan: LinePlan, mn: str, enterprise: str, district: str) -> None:
        self.plan = plan
        self.noncompliance = _Runs(EMERGENCY_NONCOMPLIANCE, mn, enterprise, district)
        self.stop = _Runs(EMERGENCY_STOP_VIOLATION, mn, enterprise, district)
        self.staggered = _Runs(STAGGERED_PRODUCTION_VIOLATION, mn, enterprise, district)
        self.treatment = _Runs(TREATMENT_OFF, mn, enterprise, district)

    def trackers(self) -> tuple[_Runs, ...]:
        return (self.noncompliance, self.stop, self.staggered, self.treatment)


class _Runs(ExceedanceTracker):
    """Runs of hours of one line and one event type (the run logic of ``hourly_exceedance``)."""

    __slots__ = ("_type",)

    def __init__(self, type_: str, mn: str, enterprise: str, district: str) -> None:
        super().__init__(mn, enterprise, district)
        self._type = type_

    @property
    def TYPE(self) -> str:  # type: ignore[override]
        return self._type

    @property
    def KIND(self) -> str:  # type: ignore[override]
        return self._type

    def hour(
        self, key: str, hour: datetime, hit: bool, peak: float | None, limit: float | None, evidence: str | None
    ) -> list[EventUpdate]:
        return self._step(key, hour, hit, peak, limit, None, evidence)

    def hour_of_keys(
        self, hour: datetime, items: list[tuple[str, bool, float | None, float | None, str | None]]
    ) -> list[EventUpdate]:
        """Several keys (pollutants) of one hour (the tracker does not take the second key of an hour for late
        data: :class:`~cems.rules.events.ExceedanceTracker` keeps the keys of the latest hour)."""
        ups: list[EventUpdate] = []
        for key, hit, peak, limit, evidence in items:
            ups += self._step(key, hour, hit, peak, limit, None, evidence)
        return ups


class EmergencyMonitor:
    """The emergency checks of every line of the registry (see the module docstring)."""

    def __init__(self, registry: Registry, history: WarningHistory | None = None) -> None:
        self.history = history or WarningHistory()
        self.plans = line_plans(registry)
        self.power = power_codes(self.plans)
        #: MN → the lines whose data it carries (emissions, running states or power).
        self._lines_of: dict[str, list[_LineState]] = {}
        self._lines: list[_LineState] = []
        for p in self.plans:
            mns = list(p.outlets) + [m[0] for m in (p.production_power, p.treatment_power) if m is not None]
            anchor = mns[0] if mns else ""
            info = registry.outlet(anchor)
            district = "" if info is None else info.district.code
            st = _LineState(p, anchor, p.enterprise, district)
            self._lines.append(st)
            for mn in dict.fromkeys(mns):
                self._lines_of.setdefault(mn, []).append(st)
        #: MN → hour (epoch s) → code → usable hourly mean
        self._means: dict[str, dict[int, dict[str, float]]] = {}
        #: MN → hour → facility codes seen with -RS = 1
        self._running: dict[str, dict[int, set[str]]] = {}
        self._rs_codes: dict[str, frozenset[str]] = {}
        self._dirty: set[str] = set()
        for st in self._lines:
            for mn in st.plan.outlets:
                self._rs_codes[mn] = self._rs_codes.get(mn, frozenset()) | frozenset(st.plan.running_codes)

    @property
    def active(self) -> bool:
        return bool(self._lines)

    def watches(self, mn: str) -> bool:
        return mn in self._lines_of

    def is_power_code(self, mn: str, code: str) -> bool:
        codes = self.power.get(mn)
        return codes is not None and code in codes

    # -- input

    def on_reading(self, reading: Reading) -> None:
        """Collect the running states (``SBxxx-RS``) of the hour (order-independent: a set)."""
        codes = self._rs_codes.get(reading.mn)
        if not codes:
            return
        on = [c for c in codes if (m := reading.measurements.get(c)) is not None and m.values.get("RS") == 1.0]
        if on:
            h = _ts(reading.data_time)
            h -= h % 3600
            self._running.setdefault(reading.mn, {}).setdefault(h, set()).update(on)
            self._dirty.add(reading.mn)

    def on_records(self, records: Sequence[HourlyRecord]) -> list[EventUpdate]:
        """Hourly records of one outlet (first or revised): keep their means and judge the lines concerned."""
        if not records:
            return []
        mn = records[0].mn
        lines = self._lines_of.get(mn)
        if not lines:
            return []
        means = self._means.setdefault(mn, {})
        self._dirty.add(mn)
        hours: set[int] = set()
        for rec in records:
            h = _ts(rec.hour_start)
            v = _usable(rec)
            slot = means.setdefault(h, {})
            if v is None:
                slot.pop(rec.pollutant, None)
            else:
                slot[rec.pollutant] = v
            hours.add(h)
        ups: list[EventUpdate] = []
        for h in sorted(hours):
            for st in lines:
                ups += self._judge(st, h)
        self._prune(max(hours))
        return ups

    def on_clock(self, until: datetime) -> list[EventUpdate]:
        ups: list[EventUpdate] = []
        for st in self._lines:
            for t in st.trackers():
                ups += t.on_clock(until)
        return ups

    def set_history(self, history: WarningHistory, new: Sequence[WarningPeriod] = ()) -> list[EventUpdate]:
        """A new warning history (an operator's setting, or the history restored): ``warning_level`` events
        for the ``new`` settings, and every kept hour judged again under it."""
        self.history = history
        ups = [EventUpdate(OPENED, warning_event(p)) for p in new]
        kept = sorted({h for by_h in self._means.values() for h in by_h})
        for h in kept:
            for st in self._lines:
                ups += self._judge(st, h)
        return ups

    @property
    def open_events(self) -> list[Event]:
        return [ev for st in self._lines for t in st.trackers() for ev in t.open_events]

    # -- judging

    def _level(self, h: int) -> WarningLevel:
        a = datetime.fromtimestamp(h, BEIJING)
        return min(self.history.level_at(a), self.history.level_at(a + timedelta(seconds=3599)))

    def _evidence(self, p: LinePlan, h: int) -> tuple[HourEvidence, dict[str, float]]:
        flows: list[float] = []
        parts: list[dict[str, float]] = []
        running: set[str] = set()
        for mn in p.outlets:
            m = self._means.get(mn, {}).get(h, {})
            q = m.get(FLOW)
            if q is not None:
                flows.append(q)
                parts.append({c: emission_rate_kg_h(v, q) for c, v in m.items() if c in p.baseline})
            else:
                parts.append({})
            running |= self._running.get(mn, {}).get(h, set()) & set(p.running_codes)
        prod = treat = None
        if p.production_power is not None:
            prod = self._means.get(p.production_power[0], {}).get(h, {}).get(p.production_power[1])
        if p.treatment_power is not None:
            treat = self._means.get(p.treatment_power[0], {}).get(h, {}).get(p.treatment_power[1])
        ev = HourEvidence(
            flow_m3_s=sum(flows) if flows else None,
            running=tuple(sorted(running)),
            production_kw=prod,
            treatment_kw=treat,
        )
        return ev, sum_rates(parts) if parts and all(parts) else {}

    def _judge(self, st: _LineState, h: int) -> list[EventUpdate]:
        p = st.plan
        self._dirty.add(st.noncompliance.mn)
        hour = datetime.fromtimestamp(h, BEIJING)
        level = self._level(h)
        ev, rates = self._evidence(p, h)
        ups: list[EventUpdate] = []
        # 错峰生产 first, then the measure of the level
        window = p.staggered_at(hour, level)
        measure = p.measure_at(level)
        signs = operation_evidence(p, ev)
        sign_text = "; ".join(f"{w} = 1" if w.endswith("-RS") else f"{w} {v:g} > {t:g}" for w, v, t in signs)
        first = signs[0] if signs else None
        hit_stag = window is not None and bool(signs)
        ups += st.staggered.hour(
            p.id,
            hour,
            hit_stag,
            None if first is None else first[1],
            None if first is None else first[2],
            None if window is None else f"错峰生产 {window.describe()}; line {p.id}; operating: {sign_text}",
        )
        must_stop = window is None and measure is not None and measure.kind == STOP
        ups += st.stop.hour(
            p.id,
            hour,
            must_stop and bool(signs),
            None if first is None else first[1],
            None if first is None else first[2],
            f"{level.label} warning: stop ({measure.source if measure else ''}); line {p.id}; operating: {sign_text}",
        )
        cuts = {}
        if window is None and measure is not None and measure.kind == CUT:
            cuts = {r.pollutant: r for r in cut_results(p, measure, rates)}
        items: list[tuple[str, bool, float | None, float | None, str | None]] = []
        for pollutant in sorted(p.baseline):
            r = cuts.get(pollutant)
            text = None
            if r is not None:
                text = (
                    f"{level.label} warning: cut {r.cut:.0%} of baseline {r.baseline_kg_h:g} kg/h → allowed "
                    f"{r.allowed_kg_h:.3f} kg/h, rate {r.rate_kg_h:.3f} kg/h; line {p.id} "
                    f"({measure.source if measure else ''})"
                )
            items.append(
                (
                    pollutant,
                    r is not None and r.exceeded,
                    None if r is None else r.rate_kg_h,
                    None if r is None else r.allowed_kg_h,
                    text,
                )
            )
        ups += st.noncompliance.hour_of_keys(hour, items)
        off = treatment_off(p, ev)
        ups += st.treatment.hour(
            p.id,
            hour,
            off,
            ev.production_kw,
            p.treatment_idle_power_kw,
            None
            if not off or p.production_power is None or p.treatment_power is None
            else (
                f"production {p.production_power[1]} {ev.production_kw:g} kW > idle {p.idle_power_kw:g}; treatment "
                f"{p.treatment_power[1]} {ev.treatment_kw:g} kW ≤ idle {p.treatment_idle_power_kw:g}; line {p.id}"
            ),
        )
        return ups

    def _prune(self, newest: int) -> None:
        cut = newest - int(REPAIR_WINDOW.total_seconds()) - 3600
        for means in self._means.values():
            for h in [h for h in means if h < cut]:
                del means[h]
        for running in self._running.values():
            for h in [h for h in running if h < cut]:
                del running[h]
        b = datetime.fromtimestamp(cut, BEIJING)
        for st in self._lines:
            for t in st.trackers():
                if t.has_events:
                    t.prune(b)

    # -- persistence (per outlet: the engine keeps each outlet's state in its own row)

    def take_dirty(self) -> set[str]:
        """MNs whose emergency state changed since the last call (lines are kept with their first outlet)."""
        d, self._dirty = self._dirty, set()
        return d

    def snapshot_outlet(self, mn: str) -> dict[str, Any]:
        """What this monitor keeps of outlet ``mn``: its hourly means and running states of the repair window,
        and the runs of the lines anchored on it."""
        return {
            "version": 1,
            "kind": "emergency",
            "means": {str(h): v for h, v in self._means.get(mn, {}).items()},
            "running": {str(h): sorted(v) for h, v in self._running.get(mn, {}).items()},
            "lines": {
                f"{st.plan.enterprise}/{st.plan.id}": [t.snapshot() for t in st.trackers()]
                for st in self._lines
                if st.noncompliance.mn == mn
            },
        }

    def restore_outlet(self, mn: str, state: Mapping[str, Any]) -> None:
        if state.get("kind") != "emergency" or state.get("version") != 1:
            raise ValueError("not a version-1 emergency state")
        self._means[mn] = {int(h): {str(c): float(v) for c, v in d.items()} for h, d in state["means"].items()}
        self._running[mn] = {int(h): set(v) for h, v in state["running"].items()}
        for st in self._lines:
            saved = state["lines"].get(f"{st.plan.enterprise}/{st.plan.id}")
            if saved is None or st.noncompliance.mn != mn:
                continue  # a line re-anchored on another outlet starts afresh
            for t, sv in zip(st.trackers(), saved, strict=True):
                t.restore(sv)


def warning_event(p: WarningPeriod) -> Event:
    """The ``warning_level`` event of one setting of the city's level."""
    end = p.end
    hours = 0.0 if end is None else round((end - p.start).total_seconds() / 3600.0, 4)
    at = "" if p.set_at is None else f" at {p.set_at.astimezone(BEIJING).isoformat()}"
    return Event(
        type=WARNING_LEVEL,
        mn=CITY_MN,
        enterprise=CITY_MN,
        district=CITY_MN,
        pollutant=p.level.label,
        start=p.start,
        end=end,
        hours=hours,
        peak=float(int(p.level)),
        limit=None,
        ref_o2=None,
        profile=f"set by {p.set_by}{at}" + (f": {p.note}" if p.note else ""),
        status="open" if end is None else "closed",
    )


__all__ = [
    "EMERGENCY_NONCOMPLIANCE",
    "EMERGENCY_STOP_VIOLATION",
    "STAGGERED_PRODUCTION_VIOLATION",
    "TREATMENT_OFF",
    "WARNING_LEVEL",
    "EmergencyMonitor",
    "line_plan",
    "line_plans",
    "power_codes",
    "warning_event",
    "with_mandated_stops",
]
