"""What ``cems registry check`` (and ``cems run`` at start) warns about: a registry that loads, but whose
figures an officer should confirm before acting on them.  Pure."""

from __future__ import annotations

from cems.limits import builtin_profiles
from cems.registry._model import BEIJING_ZONES, Registry


def registry_warnings(registry: Registry) -> list[str]:
    """Every warning, each with its TOML location.

    * A dated profile change (``[[enterprise.outlet.limit_change]]`` with ``profile``) without ``ref_o2`` while
      an explicit ``ref_o2`` (the outlet's or an earlier change's) was in force: an explicit reference O2 belongs
      to its profile period (:func:`cems.rules.limits.ref_o2_at`), so from this change on the new profile's
      reference O2 applies (煤改气: 9 % → 3.5 %).  Give ``ref_o2`` on the change when the permit says otherwise.
    * ``timezone`` other than Beijing time with ``allow_non_beijing_timezone = true``: every HJ 212 DataTime and
      JSON time without an offset is read in that zone, not in Beijing time as HJ 212 defines it.
    * An outlet whose limit profile (or a profile it changes to) holds values marked ``verify`` in
      ``cems/limits/profiles.toml`` (taken from secondary material).
    """
    out: list[str] = []
    if registry.timezone not in BEIJING_ZONES:
        out.append(
            f"timezone: {registry.timezone!r} with allow_non_beijing_timezone: HJ 212 DataTime is Beijing time "
            "(UTC+8); every data time without an offset is read in this zone instead"
        )
    profiles = builtin_profiles()
    unverified: dict[str, list[str]] = {}
    for i, e in enumerate(registry.enterprise):
        for j, o in enumerate(e.outlet):
            where = f"enterprise[{i}]({e.id}).outlet[{j}]({o.mn})"
            for name in [o.profile, *(ch.profile for ch in o.limit_change if ch.profile is not None)]:
                if profiles[name].verify:
                    unverified.setdefault(name, []).append(where)
            explicit: tuple[float, str] | None = None if o.ref_o2 is None else (o.ref_o2, "outlet.ref_o2")
            order = sorted(range(len(o.limit_change)), key=lambda k: o.limit_change[k].start)
            for k in order:
                ch = o.limit_change[k]
                if ch.ref_o2 is not None:
                    explicit = (ch.ref_o2, f"limit_change[{k}].ref_o2")
                elif ch.profile is not None:
                    if explicit is not None:
                        new = profiles[ch.profile].ref_o2
                        out.append(
                            f"{where}.limit_change[{k}] (from {ch.start.date().isoformat()}): switches to profile "
                            f"{ch.profile!r} without ref_o2: the explicit reference O2 {explicit[0]:g} % "
                            f"({explicit[1]}) ends here and {ch.profile!r}'s {new:g} % applies; give ref_o2 on "
                            "this change if the permit sets another"
                        )
                    explicit = None
    for name, wheres in unverified.items():
        shown = ", ".join(wheres[:5]) + (f" and {len(wheres) - 5} more" if len(wheres) > 5 else "")
        out.append(
            f"profile {name!r} ({profiles[name].citation}) holds values marked verify in cems/limits/profiles.toml "
            f"(secondary sources): used by {shown}; a permit value in the registry takes precedence"
        )
    return out
