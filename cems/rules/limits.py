"""The emission limit that applies to an outlet, a pollutant and a time (DOMAIN.md §4).

* A source's limit is a function of time: ``Outlet.limit_change`` entries switch the profile, the reference
  O2 or permit limits from a date on (e.g. an ultra-low-emission retrofit, seed 000).  Registry dates
  without an offset are Beijing midnight.
* Where a local standard or the permit (排污许可证) is stricter than the national profile, the stricter
  value applies (从严, seeds 003/004): every value that applies at ``t`` is collected and the minimum wins.

Pure functions plus :class:`LimitSchedule`, a per-outlet cache for the hot path (hourly records and
real-time warnings).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from cems.limits import LimitProfile, builtin_profiles
from cems.model import BEIJING
from cems.registry import LimitChange, Outlet

#: Citation used when the outlet's own permit / local-standard value is the strictest.
PERMIT_CITATION = "排污许可证 / 地方标准 (registry outlet.limits; 从严: stricter value applies, DOMAIN.md §4)"


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    """The hourly limit (mg/m³, dry, standard state, at ``ref_o2`` % O2) that applies, and where it comes from.

    ``source``: ``"profile"`` (the national/sector profile), ``"permit"`` (``outlet.limits``) or
    ``"limit_change"`` (a dated ``limit_change.limits`` value).  ``profile`` is always the active profile.
    """

    code: str
    limit: float
    ref_o2: float
    profile: str
    citation: str
    source: str


def _aware(t: datetime) -> datetime:
    # A naive time is Beijing time (all times in the Chinese standards are UTC+8, DOMAIN.md).
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def _active_changes(outlet: Outlet, t: datetime) -> list[LimitChange]:
    """Changes in force at ``t`` (start ≤ t), oldest first (registry order is not trusted)."""
    t = _aware(t)
    return sorted((ch for ch in outlet.limit_change if ch.start <= t), key=lambda ch: ch.start)


def active_profile(outlet: Outlet, t: datetime) -> LimitProfile:
    """The profile in force: the latest change (start ≤ t) naming a profile, else ``outlet.profile``."""
    name = outlet.profile
    for ch in _active_changes(outlet, t):
        if ch.profile is not None:
            name = ch.profile
    return builtin_profiles()[name]


def ref_o2_at(outlet: Outlet, t: datetime) -> float:
    """Reference O2 (%) at ``t``: an explicit ``ref_o2`` belongs to its profile period (issue 12 item 10).

    ``outlet.ref_o2`` applies while ``outlet.profile`` does; a change that switches the profile starts a new
    period with that profile's reference O2 unless the change gives its own ``ref_o2``; a change giving only
    ``ref_o2`` sets it for the rest of the current period.  So a 煤改气 change (boiler coal 9 % → gas 3.5 %)
    never keeps the old 9 % (NOx 160 at 3.5 % would read as ≈ 114 at 9 %: no exceedance).  ``cems registry
    check`` warns about every change where this differs from keeping the old value
    (:func:`cems.registry.registry_warnings`).
    """
    ref: float | None = outlet.ref_o2
    for ch in _active_changes(outlet, t):
        ref = ch.ref_o2 if ch.ref_o2 is not None else (None if ch.profile is not None else ref)
    return ref if ref is not None else active_profile(outlet, t).ref_o2


def limit_at(outlet: Outlet, code: str, t: datetime) -> AppliedLimit | None:
    """The limit of ``code`` at ``t``, or ``None`` when no profile, permit or change gives one.

    Candidates: the active profile's value, the permit value (``outlet.limits``) and the dated value of the
    latest change (start ≤ t) that gives this code (a newer permit version replaces an older one).  The
    strictest (minimum) wins (从严, DOMAIN.md §4); on a tie the profile, then the permit is named.
    """
    changes = _active_changes(outlet, t)
    profile = active_profile(outlet, t)
    ref = ref_o2_at(outlet, t)
    best: AppliedLimit | None = None
    v = profile.limits.get(code)
    if v is not None:
        best = AppliedLimit(code, v, ref, profile.name, profile.citation, "profile")
    v = outlet.limits.get(code)
    if v is not None and (best is None or v < best.limit):
        best = AppliedLimit(code, v, ref, profile.name, PERMIT_CITATION, "permit")
    latest: LimitChange | None = None
    for ch in changes:
        if code in ch.limits:
            latest = ch
    if latest is not None:
        v = latest.limits[code]
        if best is None or v < best.limit:
            why = f"; {latest.reason}" if latest.reason else ""
            cite = f"limit_change from {latest.start.astimezone(BEIJING).isoformat()}{why} (从严, DOMAIN.md §4)"
            best = AppliedLimit(code, v, ref, profile.name, cite, "limit_change")
    return best


def daily_limit_at(outlet: Outlet, code: str, t: datetime) -> AppliedLimit | None:
    """The 24-h limit of ``code`` for the day starting at ``t`` (the active profile's ``daily_limits``), or
    ``None``.  Permit daily limits are not configurable yet; the hourly limits keep 从严 as before."""
    profile = active_profile(outlet, t)
    v = profile.daily_limits.get(code)
    if v is None:
        return None
    return AppliedLimit(code, v, ref_o2_at(outlet, t), profile.name, profile.citation, "profile")


def limit_key(outlet: Outlet) -> Hashable:
    """Everything of ``outlet`` that :func:`limit_at`, :func:`ref_o2_at` and :func:`active_profile` read.

    Outlets with equal keys have the same limits at every time, so they can share one :class:`LimitSchedule`
    (the engine keeps one schedule per distinct key, not one per outlet: most outlets of a city differ only
    by their profile).  The changes keep their registry order (it breaks ties between equal start dates).
    """
    changes = tuple(
        (ch.start, ch.profile, ch.ref_o2, tuple(sorted(ch.limits.items())), ch.reason) for ch in outlet.limit_change
    )
    return (outlet.profile, outlet.ref_o2, tuple(sorted(outlet.limits.items())), changes)


class LimitSchedule:
    """:func:`limit_at` / :func:`ref_o2_at` for one outlet, cached per interval between change dates.

    One schedule may serve every outlet with the same :func:`limit_key` (``outlet`` is then the outlet it
    was built for).  Build a new schedule when the registry is reloaded.
    """

    __slots__ = ("_at0", "_bounds", "_cache", "_outlet", "_ref_cache", "_zs0", "_zs_cache")

    def __init__(self, outlet: Outlet) -> None:
        self._outlet = outlet
        self._bounds: list[float] = sorted({ch.start.timestamp() for ch in outlet.limit_change})
        self._cache: dict[tuple[str, int], AppliedLimit | None] = {}
        self._at0: dict[str, AppliedLimit | None] = {}  # the same, when there are no dated changes
        self._ref_cache: dict[int, float] = {}
        self._zs_cache: dict[tuple[str, int], tuple[float, float | None]] = {}
        self._zs0: dict[str, tuple[float, float | None]] = {}  # the same, when there are no dated changes

    @property
    def outlet(self) -> Outlet:
        return self._outlet

    def _segment(self, t: datetime) -> int:
        if not self._bounds:  # no dated change (most outlets): one segment, no clock arithmetic
            return 0
        return bisect_right(self._bounds, _aware(t).timestamp())

    def at(self, code: str, t: datetime) -> AppliedLimit | None:
        if not self._bounds:  # no dated change (most outlets): one look-up by code (CPU: per reading)
            try:
                return self._at0[code]
            except KeyError:
                al0 = self._at0[code] = limit_at(self._outlet, code, t)
                return al0
        key = (code, self._segment(t))
        try:
            return self._cache[key]
        except KeyError:
            al = self._cache[key] = limit_at(self._outlet, code, t)
            return al

    def ref_o2(self, t: datetime) -> float:
        seg = self._segment(t)
        ref = self._ref_cache.get(seg)
        if ref is None:
            ref = self._ref_cache[seg] = ref_o2_at(self._outlet, t)
        return ref

    def ref_and_limit(self, code: str, t: datetime) -> tuple[float, float | None]:
        """The reference O2 that ``code``'s corrected value uses at ``t`` (its limit's, else the outlet's) and
        the limit (``None``: none): one cached look-up for the per-reading checks."""
        if not self._bounds:  # no dated change (most outlets): one look-up by code (CPU: per reading)
            got = self._zs0.get(code)
            if got is None:
                got = self._zs0[code] = self._ref_and_limit(code, t)
            return got
        key = (code, self._segment(t))
        got = self._zs_cache.get(key)
        if got is None:
            got = self._zs_cache[key] = self._ref_and_limit(code, t)
        return got

    def _ref_and_limit(self, code: str, t: datetime) -> tuple[float, float | None]:
        al = self.at(code, t)
        return (self.ref_o2(t), None) if al is None else (al.ref_o2, al.limit)
