"""District figures with several ingesters (issue 20 item 4): each ingester's part, and their merge.

An ingester of a sharded deployment (``cems run --shard K/N``) counts only its own outlets, so its district
month is a *part*: it writes it as ``cems_rate`` with ``level=district_shard`` and a ``shard`` tag (never under
the district's own key, where parts would overwrite each other), with what a merge needs — the hour counts,
the number of outlets and the exceeding enterprises.  The counts are sums over outlets and the enterprises a
set, so the parts of all N shards add up exactly to the figure one ingester of the whole city computes; the
supervision (挂牌督办) decision is then taken once, on the merged figure, by the same rule
(:func:`cems.rules.transmission.district_month`).  ``cems districts`` does this at query time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cems.errors import IncompleteParts as IncompleteParts  # declared in cems.errors, re-exported
from cems.model import BEIJING
from cems.registry import City
from cems.registry.shard import Shard
from cems.rules.transmission import DistrictMonthRate, RateCounts, district_month

#: ``cems_rate``'s ``level`` of one shard's part of a district month.
PART_LEVEL = "district_shard"


@dataclass(frozen=True, slots=True)
class DistrictPart:
    """One shard's part of one district's month."""

    shard: Shard
    district: str
    month: str  # "YYYY-MM"
    counts: RateCounts
    outlets: int
    enterprises: frozenset[str]


def part_of(r: DistrictMonthRate, shard: Shard) -> DistrictPart:
    return DistrictPart(
        shard,
        r.district,
        r.month,
        RateCounts(r.expected, r.received, r.valid),
        r.outlets,
        frozenset(r.exceeding_enterprises),
    )


def part_fields(p: DistrictPart) -> tuple[dict[str, str], dict[str, int | str]]:
    """The tags and fields of a part's ``cems_rate`` point (its time: the month's first Beijing midnight)."""
    tags = {"level": PART_LEVEL, "district": p.district, "shard": str(p.shard)}
    fields: dict[str, int | str] = {
        "expected": p.counts.expected,
        "received": p.counts.received,
        "valid": p.counts.valid,
        "outlets": p.outlets,
        "exceeding_enterprises": ",".join(sorted(p.enterprises)),
    }
    return tags, fields


def part_from_row(row: Mapping[str, Any]) -> DistrictPart:
    """A part from an InfluxQL row of ``cems_rate`` (``level=district_shard``; ``time`` in epoch seconds or
    RFC 3339)."""
    t = row["time"]
    when = (
        datetime.fromtimestamp(t, BEIJING)
        if isinstance(t, int | float)
        else datetime.fromisoformat(str(t).replace("Z", "+00:00")).astimezone(BEIJING)
    )
    ents = str(row.get("exceeding_enterprises") or "")
    return DistrictPart(
        Shard.parse(str(row["shard"])),
        str(row["district"]),
        f"{when.year:04d}-{when.month:02d}",
        RateCounts(int(row["expected"]), int(row["received"]), int(row["valid"])),
        int(row.get("outlets") or 0),
        frozenset(e for e in ents.split(",") if e),
    )


def merge_parts(city: City, parts: Iterable[DistrictPart]) -> list[DistrictMonthRate]:
    """The district months of the whole city from every shard's part, each decided once.  Every (district,
    month) must have exactly one part from each of the N shards (all with the same N): otherwise
    :class:`IncompleteParts` names what is missing (a partial figure must never decide a 挂牌督办)."""
    all_parts = list(parts)
    counts = {p.shard.count for p in all_parts}
    if len(counts) > 1:
        raise IncompleteParts(f"parts of different shard counts {sorted(counts)}: the deployment was resharded")
    by_key: dict[tuple[str, str], dict[int, DistrictPart]] = {}
    for p in all_parts:
        got = by_key.setdefault((p.district, p.month), {})
        if p.shard.index in got:
            raise IncompleteParts(f"district {p.district} {p.month}: two parts of shard {p.shard}")
        got[p.shard.index] = p
    out: list[DistrictMonthRate] = []
    for (district, month), got in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n = next(iter(got.values())).shard.count
        missing = sorted(set(range(n)) - set(got))
        if missing:
            raise IncompleteParts(
                f"district {district} {month}: no part from shard(s) {', '.join(f'{k}/{n}' for k in missing)}"
            )
        total = RateCounts()
        for p in got.values():
            total = total + p.counts
        out.append(
            district_month(
                city,
                district,
                month,
                total,
                sum(p.outlets for p in got.values()),
                {e for p in got.values() for e in p.enterprises},
            )
        )
    return out
