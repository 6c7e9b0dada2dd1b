"""Marks (标记), stop declarations (停产申报) and repairs (修约): their effects on judgement and on the 90 % rule
(issue 14 items 3–4; DOMAIN.md §3, §5, §9; MEE 公告2022年第21号).  Pure: no I/O, no clock reads.

* :class:`MarkLedger` holds every record of every outlet (append-only; a withdrawal is a record that takes an
  earlier one out of force) and answers, per outlet and hour, which mark is in force there, whether it
  exempts the hour from exceedance judgement, how the hour counts for the 90 % rule, and the repairs.
* :class:`OutletMarks` is the engine's per-outlet part: it keeps the outlet's exceeding hours as the hourly
  rules judged them (the *raw* judgement, never changed), feeds the :class:`~cems.rules.events.ExceedanceTracker`
  the judgement with marks and repairs applied, and raises ``mark_cap_exceeded`` and ``mark_suspicious``.

Rules (each a setting of ``cems/limits/marks.toml``, which cites its source):

* An hour is *marked* when a mark or declaration covers more than 15 of its minutes (less than 45 minutes
  outside it: HJ 75-2017's 45 valid minutes, as for declared stops in :mod:`cems.rules.transmission`).  When
  several records cover an hour, the one received last is in force there.
* A marked hour whose type has ``judged = false`` is not judged for exceedance, unless (``judged_above``) a
  named pollutant's corrected hourly mean is above the type's figure, or its cap group's annual hours are
  used up: per outlet and calendar year, the first ``hours`` marked hours of the group (in hour order) are
  exempt, the later ones are judged.  Hours past a cap raise one ``mark_cap_exceeded`` event per outlet,
  group and year (``hours``: hours past the cap; ``peak``: hours marked; ``limit``: the cap).
* The same holds for ``o2_invalid`` hours (:meth:`OutletMarks.judge_o2`, :meth:`OutletMarks.refresh_o2`), and
  the daily judgement leaves such hours out (:mod:`cems.rules.daily`).
* A run of exceeding hours that marks make disappear is closed as ``marked`` (never deleted: the event and
  its alerts stay, with the marks' ids); a run they shorten or split is revised like late data would.
* A repair (修约) replaces the hour's corrected value of one pollutant: the hour is judged on the submitted
  value (valid, against the limit of the hour) and counts as received and valid; the original hourly record
  is left as it was (``cems_hourly`` keeps it under its own ``source``; the repair's record has source
  ``repair``).  DOMAIN.md §5: manual repair (修约/补遗) is allowed within 10 days.
* A ``stop`` mark (停运, 停产) over hours whose flow is at the outlet's normal level (``normal_flow``), or whose
  O2 shows combustion, raises ``mark_suspicious`` (one per mark; ``hours``: the hours that look operating).
* Deadlines (:func:`mark_deadline`): a mark, repair or withdrawal is refused (``mark_too_late``) once the first
  hour it touches is final: 10 days after the hour's end, and the month is final after the 10th of the next
  month (``[marks] window_days`` / ``month_final_day``).  A stop declaration filed later is kept, with status
  ``late``, and has no effect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from cems.errors import RejectedMessage
from cems.limits import MarkCatalog, MarkType, RateEffect
from cems.model import BEIJING, FLOW, O2
from cems.protocol.mark import ACCEPTED, LATE, WITHDRAWAL, MarkRecord
from cems.registry import Registry
from cems.rules.events import (
    HOURLY_EXCEEDANCE,
    OPENED,
    RETRACTED,
    RETRACTED_STATUS,
    UPDATED,
    Event,
    EventUpdate,
    ExceedanceTracker,
    O2InvalidTracker,
)
from cems.rules.hourly import REPAIR_WINDOW, HourlyRecord
from cems.rules.limits import LimitSchedule

MARK_CAP_EXCEEDED: Final = "mark_cap_exceeded"
MARK_SUSPICIOUS: Final = "mark_suspicious"
#: Update kind and event status of an exceedance that marks made disappear.
MARKED: Final = "marked"
SOURCE_REPAIR: Final = "repair"
#: Minutes of an hour a mark must cover for the hour to be marked (the hour then has < 45 minutes outside it).
MIN_MARKED_MINUTES: Final = 15
_H: Final = 3600

#: An exceeding hour as the hourly rules judged it: (corrected value, limit, reference O2, profile).
_Hit = tuple[float | None, float | None, float | None, str | None]


def _ts(t: datetime) -> int:
    return math.floor((t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)).timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, BEIJING)


def marked_hours(start: datetime, end: datetime) -> range:
    """Starts (epoch s) of the hours a record over ``[start, end)`` marks (more than 15 minutes covered)."""
    a, b = _ts(start), _ts(end)
    first = a - a % _H
    if a - first >= _H - MIN_MARKED_MINUTES * 60:
        first += _H
    last = b - b % _H  # the hour containing the end
    if b - last > MIN_MARKED_MINUTES * 60:
        last += _H
    return range(first, max(first, last), _H)


def mark_deadline(hour: int, window_days: int, month_final_day: int) -> int:
    """When the hour starting at ``hour`` (epoch s) becomes final: ``window_days`` after its end, and no later
    than the end of the ``month_final_day``-th of the next Beijing month (DOMAIN.md §5, §9)."""
    d = _dt(hour)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    month_final = datetime(y, m, month_final_day, tzinfo=BEIJING) + timedelta(days=1)
    return min(hour + _H + window_days * 86400, _ts(month_final))


def _year(h: int) -> int:
    return _dt(h).year


@dataclass(frozen=True, slots=True)
class CapUse:
    """Hours of one cap group marked at one outlet in one calendar year."""

    mn: str
    group: str
    year: int
    used: int
    cap: float | None
    #: Hours past the cap (judged), in hour order.
    over: tuple[int, ...]


class MarkLedger:
    """Every mark, declaration, repair and withdrawal, and what is in force per outlet and hour."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.catalog: MarkCatalog = registry.mark_catalog
        self._records: dict[str, dict[str, MarkRecord]] = {}
        self._withdrawn: dict[str, str] = {}  # record id → id of the withdrawal
        #: per outlet with records in force: hour → the record in force there
        self._winner: dict[str, dict[int, MarkRecord]] = {}
        self._repairs: dict[str, dict[tuple[str, int], MarkRecord]] = {}
        self._over_cap: dict[str, set[int]] = {}
        self._caps: dict[str, list[CapUse]] = {}

    # -- input --------------------------------------------------------------------------------------------
    def get(self, mn: str, record_id: str) -> MarkRecord | None:
        return self._records.get(mn, {}).get(record_id)

    def withdrawn_by(self, record_id: str) -> str | None:
        return self._withdrawn.get(record_id)

    def add(self, rec: MarkRecord) -> set[int]:
        """Store a record (a duplicate id is ignored); returns the hours whose marks or repairs changed."""
        by = self._records.setdefault(rec.mn, {})
        if rec.record_id in by:
            return set()
        by[rec.record_id] = rec
        if rec.kind == WITHDRAWAL:
            target = by.get(rec.target or "")
            if target is None or target.record_id in self._withdrawn:
                return set()
            self._withdrawn[target.record_id] = rec.record_id
            rec = target
        elif not rec.in_force:
            return set()
        self._rebuild(rec.mn)
        return set(marked_hours(rec.start, rec.end))

    def load(self, records: Iterable[MarkRecord]) -> None:
        for r in sorted(records, key=lambda r: (r.received_at, r.record_id)):
            self.add(r)

    def records(self, mn: str | None = None) -> list[MarkRecord]:
        """Every record (of ``mn``), in the order received."""
        if mn is not None:
            recs = list(self._records.get(mn, {}).values())
        else:
            recs = [r for by in self._records.values() for r in by.values()]
        return sorted(recs, key=lambda r: (r.received_at, r.record_id))

    def in_force(self, mn: str) -> list[MarkRecord]:
        return [r for r in self._records.get(mn, {}).values() if r.in_force and r.record_id not in self._withdrawn]

    def _rebuild(self, mn: str) -> None:
        winner: dict[int, MarkRecord] = {}
        repairs: dict[tuple[str, int], MarkRecord] = {}
        for r in sorted(self.in_force(mn), key=lambda r: (r.received_at, r.record_id)):
            if r.kind == "repair":
                repairs[(r.pollutant or "", _ts(r.start))] = r
                continue
            for h in marked_hours(r.start, r.end):
                winner[h] = r
        if winner:
            self._winner[mn] = winner
        else:
            self._winner.pop(mn, None)
        if repairs:
            self._repairs[mn] = repairs
        else:
            self._repairs.pop(mn, None)
        self._caps[mn], over = self._cap_use(mn, winner)
        if over:
            self._over_cap[mn] = over
        else:
            self._over_cap.pop(mn, None)

    def _cap_use(self, mn: str, winner: Mapping[int, MarkRecord]) -> tuple[list[CapUse], set[int]]:
        hours: dict[tuple[str, int], list[int]] = {}
        for h, r in winner.items():
            t = self.catalog.types.get(r.type)
            if t is not None and t.cap is not None:
                hours.setdefault((t.cap, _year(h)), []).append(h)
        uses: list[CapUse] = []
        over: set[int] = set()
        for (group, year), hs in sorted(hours.items()):
            hs.sort()
            cap = self.catalog.cap_hours(group)
            past = tuple(hs[math.floor(cap) :]) if cap is not None else ()
            over.update(past)
            uses.append(CapUse(mn, group, year, len(hs), cap, past))
        return uses, over

    # -- queries ------------------------------------------------------------------------------------------
    def active(self, mn: str) -> bool:
        """Whether anything is in force at ``mn`` (the engine's fast path skips outlets without marks)."""
        return mn in self._winner or mn in self._repairs

    def type_of(self, rec: MarkRecord) -> MarkType | None:
        return self.catalog.types.get(rec.type)

    def mark_at(self, mn: str, hour: int) -> MarkRecord | None:
        w = self._winner.get(mn)
        return None if w is None else w.get(hour)

    def exempting(self, mn: str, hour: int, raw: Mapping[str, float | None]) -> MarkRecord | None:
        """The mark that exempts ``hour`` from exceedance judgement (``raw``: the corrected hourly means of the
        hour's exceeding pollutants, for ``judged_above``), or ``None``."""
        rec = self.mark_at(mn, hour)
        if rec is None:
            return None
        t = self.type_of(rec)
        if t is None or t.judged or hour in self._over_cap.get(mn, ()):
            return None
        for code, above in t.judged_above.items():
            v = raw.get(code)
            if v is not None and v > above:
                return None
        return rec

    def rate_effect(self, mn: str, hour: int) -> RateEffect:
        rec = self.mark_at(mn, hour)
        t = None if rec is None else self.type_of(rec)
        return "as_measured" if t is None else t.rate

    def rate_effects(self, mn: str, lo: int, hi: int) -> dict[int, RateEffect]:
        """Hours in ``[lo, hi)`` whose marks change how they count for the 90 % rule."""
        w = self._winner.get(mn)
        if not w:
            return {}
        out: dict[int, RateEffect] = {}
        for h, rec in w.items():
            if lo <= h < hi:
                t = self.type_of(rec)
                if t is not None and t.rate != "as_measured":
                    out[h] = t.rate
        return out

    def stop_spans(self, mn: str) -> list[tuple[float, float]]:
        """Periods (epoch s) of the records in force at ``mn`` whose type removes hours from the expected count
        (停运, 停产申报): documented stops, in which silence is no data interruption."""
        out: list[tuple[float, float]] = []
        for r in self.in_force(mn):
            t = self.type_of(r)
            if r.kind != "repair" and t is not None and t.rate == "removed":
                out.append((r.start.timestamp(), r.end.timestamp()))
        return out

    def hours(self, mn: str) -> Mapping[int, MarkRecord]:
        """Every marked hour of ``mn`` with the record in force there."""
        return self._winner.get(mn, {})

    def repair(self, mn: str, pollutant: str, hour: int) -> MarkRecord | None:
        r = self._repairs.get(mn)
        return None if r is None else r.get((pollutant, hour))

    def repairs(self, mn: str) -> Mapping[tuple[str, int], MarkRecord]:
        return self._repairs.get(mn, {})

    def all_repairs(self) -> list[tuple[str, str, int]]:
        """(MN, pollutant, hour) of every repair in force."""
        return [(mn, p, h) for mn, by in self._repairs.items() for (p, h) in by]

    def cap_use(self, mn: str) -> list[CapUse]:
        return self._caps.get(mn, [])

    def touching(self, mn: str, start: datetime, end: datetime | None, hours: float) -> tuple[str, ...]:
        """Ids of the records in force over an event's hours or the hour on either side (a mark that cut it)."""
        w, rp = self._winner.get(mn), self._repairs.get(mn)
        if not w and not rp:
            return ()
        a = _ts(start) - _H
        b = (_ts(end) if end is not None else _ts(start) + math.ceil(hours) * _H) + _H
        ids = {r.record_id for h, r in (w or {}).items() if a <= h < b}
        ids |= {r.record_id for (_, h), r in (rp or {}).items() if a <= h < b}
        return tuple(sorted(ids))

    def judged_exceeds(self, mn: str, pollutant: str, hour: int, exceeds: bool) -> bool:
        """Whether an hour counts as exceeding for district supervision (the rate counter's overlay): the
        repair's value if any, then the marks' exemption (``judged_above`` cannot be checked here: exempt)."""
        rep = self.repair(mn, pollutant, hour)
        if rep is not None:
            info = self.registry.outlet(mn)
            if info is not None:
                al = LimitSchedule(info.outlet).at(pollutant, _dt(hour))
                exceeds = al is not None and rep.value is not None and rep.value > al.limit
        if exceeds and self.exempting(mn, hour, {}) is not None:
            return False
        return exceeds

    # -- deadlines ----------------------------------------------------------------------------------------
    def deadline(self, rec: MarkRecord) -> datetime:
        """When the first hour ``rec`` touches became (or becomes) final."""
        d = self.catalog.deadline
        hs = marked_hours(rec.start, rec.end)
        first = hs.start if hs else _ts(rec.start) - _ts(rec.start) % _H
        return _dt(mark_deadline(first, d.window_days, d.month_final_day))

    def check(self, rec: MarkRecord, now: datetime) -> MarkRecord:
        """Decide a submission received at ``now``: the record to store (a late declaration gets status
        ``late`` and a note), or ``RejectedMessage`` (``unknown_mn``, ``unknown_mark_type``, ``mark_too_late``,
        ``unknown_mark``, ``bad_mark``)."""
        info = self.registry.outlet(rec.mn)
        if info is None:
            raise RejectedMessage("unknown_mn", f"MN {rec.mn!r} is not in the registry")
        o = info.outlet
        industry = self.catalog.industry_of(o.profile, o.mark_industry)
        if rec.kind in ("mark", "declaration"):
            decl = rec.kind == "declaration"
            if self.catalog.allowed(rec.type, industry, declaration=decl) is None:
                usable = sorted(
                    c for c in self.catalog.types if self.catalog.allowed(c, industry, declaration=decl) is not None
                )
                raise RejectedMessage(
                    "unknown_mark_type",
                    f"{rec.kind} type {rec.type!r} is not one the outlet {rec.mn!r} (industry "
                    f"{industry or 'device marks only'}) may use: {', '.join(usable)}",
                )
        if rec.kind == "repair":
            al = LimitSchedule(o).at(rec.pollutant or "", rec.start)
            if al is None:
                raise RejectedMessage(
                    "bad_mark", f"{rec.pollutant!r} has no limit at outlet {rec.mn!r}: nothing to repair"
                )
        target: MarkRecord | None = None
        if rec.kind == WITHDRAWAL:
            target = self.get(rec.mn, rec.target or "")
            if target is None or target.kind == WITHDRAWAL:
                raise RejectedMessage("unknown_mark", f"outlet {rec.mn!r} has no record {rec.target!r} to withdraw")
            if target.record_id in self._withdrawn:
                raise RejectedMessage(
                    "unknown_mark",
                    f"record {target.record_id} was already withdrawn by {self._withdrawn[target.record_id]}",
                )
        due = self.deadline(target if target is not None else rec)
        if now > due and not (target is not None and target.status == LATE):
            d = self.catalog.deadline
            rule = f"{d.window_days} 天内，且当月数据于次月 {d.month_final_day} 日后终结（DOMAIN.md §5）"
            if rec.kind == "declaration":
                return replace(
                    rec,
                    status=LATE,
                    note=f"逾期申报：截止 {due.isoformat()}，收到 {now.isoformat()}；"
                    f"保留记录，不产生效力。依据：{rule}",
                )
            what = "its target's period" if target is not None else "its period"
            raise RejectedMessage(
                "mark_too_late",
                f"{rec.kind} refused: {what} became final at {due.isoformat()} (received {now.isoformat()}; "
                f"the repair window is {d.window_days} days and the month is final after the "
                f"{d.month_final_day}th of the next month)",
            )
        return replace(rec, status=ACCEPTED)


# ---------------------------------------------------------------------------------------------- per outlet


def _judged_record(mn: str, p: str, h: int, hit: bool, v: _Hit) -> HourlyRecord:
    """What the exceedance tracker reads of an hour: pollutant, hour, exceeding, and the hit's figures."""
    return HourlyRecord(
        mn, p, _dt(h), None, None, v[0], None, None, True, "N", "", None, v[1], v[2], v[3], hit,
    )  # fmt: skip


class OutletMarks:
    """The engine's per-outlet part (module docstring): raw exceeding hours, what the tracker was fed, the
    hours that looked operating, and the mark events last reported."""

    __slots__ = ("_fed", "_mevents", "_o2off", "_o2raw", "_op", "_op_base", "_raw", "district", "enterprise", "mn",
                 "normal_flow", "schedule")  # fmt: skip

    def __init__(
        self, mn: str, enterprise: str, district: str, schedule: LimitSchedule, normal_flow: float | None
    ) -> None:
        self.mn = mn
        self.enterprise = enterprise
        self.district = district
        self.schedule = schedule
        self.normal_flow = normal_flow
        self._raw: dict[tuple[str, int], _Hit] | None = None
        #: keys whose last feed differs from the raw judgement: (pollutant, hour) → hit fed
        self._fed: dict[tuple[str, int], bool] | None = None
        #: hours (epoch s) that looked operating (flow at the normal level, or combustion)
        #: hours that looked operating, as bits from ``_op_base`` (epoch s; bit i = hour base + i h): ≈ 30 bytes
        #: for the repair window, where a set of hours would cost ≈ 10 KB per outlet
        self._op = 0
        self._op_base = 0
        self._mevents: dict[str, Event] | None = None
        #: ``o2_invalid`` hours as the hourly rules judged them (hour → O2 hourly mean), and those of them that
        #: marks exempt (fed to the tracker as not O2-invalid)
        self._o2raw: dict[int, float | None] | None = None
        self._o2off: set[int] | None = None

    # -- judging ------------------------------------------------------------------------------------------
    def judge(self, rec: HourlyRecord, ledger: MarkLedger) -> HourlyRecord:
        """The record to feed the exceedance tracker: ``rec`` itself, unless a mark or repair changes it."""
        key = (rec.pollutant, _ts(rec.hour_start))
        if rec.exceeds:
            if self._raw is None:
                self._raw = {}
            self._raw[key] = (rec.zs_avg, rec.limit, rec.ref_o2, rec.profile)
        elif self._raw is not None:
            self._raw.pop(key, None)
        if not ledger.active(self.mn):
            if self._fed:
                self._fed.pop(key, None)
            return rec
        hit, v = self._effective(key, ledger)
        self._set_fed(key, hit)
        if hit == rec.exceeds and (not hit or v[0] == rec.zs_avg):
            return rec
        return _judged_record(self.mn, key[0], key[1], hit, v)

    def judge_o2(self, records: Sequence[HourlyRecord], ledger: MarkLedger) -> Sequence[HourlyRecord]:
        """The records to feed the ``o2_invalid`` tracker: an hour marks exempt from judgement (the type's
        ``judged = false``; MEE 公告2022年第21号) is fed as not O2-invalid, like an exceeding hour."""
        hours: dict[int, bool] = {}
        for r in records:
            h = _ts(r.hour_start)
            hours[h] = hours.get(h, False) or r.o2_invalid
            if r.o2_invalid:
                if self._o2raw is None:
                    self._o2raw = {}
                self._o2raw[h] = r.o2_avg
        for h, hit in hours.items():
            if not hit and self._o2raw is not None:
                self._o2raw.pop(h, None)
        if not ledger.active(self.mn) and not self._o2off:
            return records
        off = {h for h, hit in hours.items() if hit and ledger.exempting(self.mn, h, {}) is not None}
        if self._o2off is not None:
            self._o2off -= hours.keys()
        if off:
            self._o2off = (self._o2off or set()) | off
            return [replace(r, o2_invalid=False) if _ts(r.hour_start) in off else r for r in records]
        return records

    def refresh_o2(self, ledger: MarkLedger, tracker: O2InvalidTracker) -> list[EventUpdate]:
        """After marks of the outlet changed: feed the ``o2_invalid`` tracker every O2-invalid hour whose
        exemption changed; runs that disappear are closed as ``marked``, a withdrawal reopens them."""
        ups: list[EventUpdate] = []
        for h, o2 in sorted((self._o2raw or {}).items()):
            exempt = ledger.exempting(self.mn, h, {}) is not None
            if exempt == (self._o2off is not None and h in self._o2off):
                continue
            if exempt:
                self._o2off = (self._o2off or set()) | {h}
            elif self._o2off is not None:
                self._o2off.discard(h)
            ups.extend(tracker.on_o2_hour(_dt(h), not exempt, o2))
        out: list[EventUpdate] = []
        for u in _net(ups):
            ev = u.event
            ids = ledger.touching(self.mn, ev.start, ev.end, ev.hours)
            start = _ts(ev.start)
            if u.kind == RETRACTED and not (start in (self._o2raw or {}) and start not in (self._o2off or ())):
                out.append(EventUpdate(MARKED, replace(ev, status=MARKED, marks=ids, end=ev.end or _end(ev))))
            else:
                out.append(EventUpdate(u.kind, replace(ev, marks=ids)) if ids else u)
        return out

    def _set_fed(self, key: tuple[str, int], hit: bool) -> None:
        raw = self._raw is not None and key in self._raw
        if hit != raw:
            if self._fed is None:
                self._fed = {}
            self._fed[key] = hit
        elif self._fed:
            self._fed.pop(key, None)

    def _effective(self, key: tuple[str, int], ledger: MarkLedger) -> tuple[bool, _Hit]:
        p, h = key
        raw = None if self._raw is None else self._raw.get(key)
        rep = ledger.repair(self.mn, p, h)
        if rep is not None and rep.value is not None:
            al = self.schedule.at(p, _dt(h))
            v: _Hit = (rep.value, None, None, None) if al is None else (rep.value, al.limit, al.ref_o2, al.profile)
            hit = v[1] is not None and rep.value > v[1]
        elif raw is not None:
            v, hit = raw, True
        else:
            return False, (None, None, None, None)
        if hit:
            hour_raw = {q: x[0] for (q, hh), x in (self._raw or {}).items() if hh == h}
            if ledger.exempting(self.mn, h, hour_raw) is not None:
                hit = False
        return hit, v

    def refresh(self, ledger: MarkLedger, tracker: ExceedanceTracker) -> list[EventUpdate]:
        """After marks or repairs of the outlet changed: feed the tracker every hour whose judgement changed;
        runs that disappear are closed as ``marked``; the events carry the marks that touch them."""
        keys = set(self._raw or ()) | set(self._fed or ()) | set(ledger.repairs(self.mn))
        ups: list[EventUpdate] = []
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            current = (self._fed or {}).get(key, self._raw is not None and key in self._raw)
            hit, v = self._effective(key, ledger)
            if hit == current and not (hit and ledger.repair(self.mn, *key) is not None):
                continue
            self._set_fed(key, hit)
            ups.extend(tracker.on_hour(_judged_record(self.mn, key[0], key[1], hit, v)))
        return [self._with_marks(u, ledger, marking=True) for u in _net(ups)]

    def _with_marks(self, u: EventUpdate, ledger: MarkLedger, *, marking: bool = False) -> EventUpdate:
        ev = u.event
        ids = ledger.touching(self.mn, ev.start, ev.end, ev.hours)
        if marking and u.kind == RETRACTED and not self._still_hit(ev):
            return EventUpdate(MARKED, replace(ev, status=MARKED, marks=ids, end=ev.end or _end(ev)))
        return EventUpdate(u.kind, replace(ev, marks=ids)) if ids else u

    def _still_hit(self, ev: Event) -> bool:
        """Whether the first hour of a retracted run still exceeds (the run was merged into an earlier one);
        otherwise marks or repairs took it away and it is closed as ``marked``."""
        key = (ev.pollutant or "", _ts(ev.start))
        return (self._fed or {}).get(key, self._raw is not None and key in self._raw)

    def tag(self, ups: list[EventUpdate], ledger: MarkLedger) -> list[EventUpdate]:
        """Exceedance updates of the normal path with the marks that touch them."""
        if not ups or not ledger.active(self.mn):
            return ups
        return [self._with_marks(u, ledger) if u.event.type == HOURLY_EXCEEDANCE else u for u in ups]

    # -- operation and mark events ----------------------------------------------------------------------
    def observe(self, records: Sequence[HourlyRecord], share: float, o2_below: float) -> bool:
        """Note, for the hours of ``records``, whether they looked operating; ``True`` when that changed."""
        flows: dict[int, float | None] = {}
        o2s: dict[int, float | None] = {}
        for r in records:
            if r.pollutant == FLOW:
                flows[_ts(r.hour_start)] = r.avg if r.valid else None
            elif r.pollutant == O2:
                o2s[_ts(r.hour_start)] = r.avg if r.valid else None
        changed = False
        for h in flows.keys() | o2s.keys():
            flow, o2 = flows.get(h), o2s.get(h)
            if self.normal_flow is not None:
                op = flow is not None and flow >= share * self.normal_flow
            else:
                op = o2 is not None and o2 < o2_below and (h not in flows or (flow is not None and flow > 0))
            if op != self.operating(h):
                changed = True
                self._set_op(h, op)
        return changed

    def operating(self, h: int) -> bool:
        i = (h - self._op_base) // _H
        return i >= 0 and bool(self._op >> i & 1)

    def _set_op(self, h: int, on: bool) -> None:
        if not self._op:
            self._op_base = h
        elif h < self._op_base:
            self._op <<= (self._op_base - h) // _H
            self._op_base = h
        i = (h - self._op_base) // _H
        self._op = self._op | (1 << i) if on else self._op & ~(1 << i)

    def mark_events(self, ledger: MarkLedger) -> list[EventUpdate]:
        """``mark_cap_exceeded`` and ``mark_suspicious`` as they stand now, as updates of what was reported."""
        want: dict[str, Event] = {}
        for use in ledger.cap_use(self.mn):
            if use.over:
                recs = {r.record_id for h in use.over if (r := ledger.mark_at(self.mn, h)) is not None}
                ev = self._event(MARK_CAP_EXCEEDED, use.over[0], len(use.over), use.used, use.cap, use.group, recs)
                want[ev.event_id] = ev
        for rec in ledger.in_force(self.mn):
            t = ledger.type_of(rec)
            if t is None or not t.stop or not self._op:
                continue
            hs = [
                h for h in marked_hours(rec.start, rec.end) if self.operating(h) and ledger.mark_at(self.mn, h) is rec
            ]
            if hs:
                first = marked_hours(rec.start, rec.end).start
                ev = self._event(MARK_SUSPICIOUS, first, len(hs), None, self.normal_flow, rec.type, {rec.record_id})
                want[ev.event_id] = ev
        old = self._mevents or {}
        ups: list[EventUpdate] = []
        for eid, ev in want.items():
            prev = old.get(eid)
            if prev is None or prev.status == RETRACTED_STATUS:
                ups.append(EventUpdate(OPENED, ev))
            elif prev != ev:
                ups.append(EventUpdate(UPDATED, ev))
        for eid, prev in old.items():
            if eid not in want and prev.status != RETRACTED_STATUS:
                gone = replace(prev, status=RETRACTED_STATUS)
                ups.append(EventUpdate(RETRACTED, gone))
                want[eid] = gone
            elif eid not in want:
                want[eid] = prev
        self._mevents = want or None
        return ups

    def _event(
        self, type_: str, start: int, hours: int, peak: float | None, limit: float | None, profile: str, ids: set[str]
    ) -> Event:
        return Event(
            type=type_, mn=self.mn, enterprise=self.enterprise, district=self.district, pollutant=None,
            start=_dt(start), end=None, hours=float(hours), peak=None if peak is None else float(peak),
            limit=limit, ref_o2=None, profile=profile, status="open", marks=tuple(sorted(ids)),
        )  # fmt: skip

    @property
    def open_events(self) -> list[Event]:
        return [e for e in (self._mevents or {}).values() if e.status == "open"]

    # -- bounded memory, persistence ----------------------------------------------------------------------
    def prune(self, before: int) -> None:
        """Forget hours before ``before`` (epoch s: final, outside the repair window)."""
        for d in (self._raw, self._fed):
            if d:
                for k in [k for k in d if k[1] < before]:
                    del d[k]
        if self._o2raw:
            self._o2raw = {h: v for h, v in self._o2raw.items() if h >= before} or None
        if self._o2off:
            self._o2off = {h for h in self._o2off if h >= before} or None
        if self._op and before > self._op_base:
            n = (before - self._op_base) // _H
            self._op >>= n
            self._op_base += n * _H

    def snapshot(self) -> dict[str, Any] | None:
        if not (self._raw or self._fed or self._op or self._mevents or self._o2raw):
            return None
        return {
            "o2raw": [[h, v] for h, v in sorted((self._o2raw or {}).items())],
            "o2off": sorted(self._o2off or ()),
            "raw": [[p, h, *v] for (p, h), v in sorted((self._raw or {}).items())],
            "fed": [[p, h, hit] for (p, h), hit in sorted((self._fed or {}).items())],
            "op": [self._op_base, format(self._op, "x")],
            "events": [e.to_json() for _, e in sorted((self._mevents or {}).items())],
        }

    def restore(self, s: dict[str, Any] | None) -> None:
        if not s:
            return
        self._raw = {(str(r[0]), int(r[1])): (r[2], r[3], r[4], r[5]) for r in s["raw"]} or None
        self._fed = {(str(r[0]), int(r[1])): bool(r[2]) for r in s["fed"]} or None
        self._op_base, self._op = int(s["op"][0]), int(str(s["op"][1]), 16)
        self._o2raw = {int(h): v for h, v in s.get("o2raw", [])} or None  # absent before o2_invalid marks
        self._o2off = {int(h) for h in s.get("o2off", [])} or None
        evs = [Event.from_json(e) for e in s["events"]]
        self._mevents = {e.event_id: e for e in evs} or None


def _net(ups: list[EventUpdate]) -> list[EventUpdate]:
    """Hours fed one by one: only each event's net change (a run that existed only between two of these feeds
    is no event at all)."""
    first: dict[str, EventUpdate] = {}
    last: dict[str, EventUpdate] = {}
    for u in ups:
        eid = u.event.event_id
        first.setdefault(eid, u)
        last.pop(eid, None)
        last[eid] = u
    net: list[EventUpdate] = []
    for eid, u in last.items():
        f = first[eid]
        if f.kind == OPENED and u.event.status == RETRACTED_STATUS:
            continue
        if f.kind == OPENED and u is not f:
            net.append(EventUpdate(OPENED, replace(u.event, end=None, status="open")))
        net.append(u)
    return net


def _end(ev: Event) -> datetime:
    return ev.start + timedelta(hours=ev.hours)


def repair_record(rec: MarkRecord, schedule: LimitSchedule, *, withdrawn: bool = False) -> HourlyRecord:
    """The ``cems_hourly`` record of a repair (source ``repair``), beside the original one: the submitted
    corrected value judged against the hour's limit; a withdrawn repair's record is no longer valid."""
    p = rec.pollutant or ""
    al = schedule.at(p, rec.start)
    limit = None if al is None else al.limit
    value = rec.value
    exceeds = not withdrawn and value is not None and limit is not None and value > limit
    note = f"修约 {rec.record_id}（{rec.submitter}）：{rec.reason}"
    if withdrawn:
        note = f"修约 {rec.record_id} 已撤回"
    return HourlyRecord(
        mn=rec.mn, pollutant=p, hour_start=rec.start, avg=None, o2_avg=None, zs_avg=value, das_zs_avg=None,
        zs_source=SOURCE_REPAIR, valid=not withdrawn, flag="N" if not withdrawn else "D", source=SOURCE_REPAIR,
        valid_minutes=None, limit=limit, ref_o2=None if al is None else al.ref_o2,
        profile=None if al is None else al.profile, exceeds=exceeds, note=note,
    )  # fmt: skip


#: How far back the per-outlet state is kept (the repair window plus the hour in progress).
KEEP: Final = REPAIR_WINDOW + timedelta(hours=1)

__all__ = [
    "KEEP",
    "MARKED",
    "MARK_CAP_EXCEEDED",
    "MARK_SUSPICIOUS",
    "MIN_MARKED_MINUTES",
    "SOURCE_REPAIR",
    "CapUse",
    "MarkLedger",
    "OutletMarks",
    "mark_deadline",
    "marked_hours",
    "repair_record",
]
