"""District months of a sharded deployment (issue 20 item 4): the parts of N shards add up to the whole
city's figure and the 挂牌督办 decision is taken once, on the sum (cems.rules.district_parts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from registries import many_outlets  # tests/registries.py

from cems.model import BEIJING
from cems.registry import Registry, parse_registry
from cems.registry.shard import Shard, shard_of, shard_registry
from cems.replay import replay
from cems.rules.district_parts import IncompleteParts, merge_parts, part_from_row, part_of
from cems.sinks.lineprotocol import district_part_line

CITY = "supervision_enterprise_threshold = 2\n"
DAY = datetime(2026, 11, 20, tzinfo=BEIJING)


def _lines(reg: Registry, exceeding: set[str], skip: set[str]) -> Iterator[str]:
    """Minute data 08:00–11:00 of every outlet not in ``skip``; ``exceeding`` far above 35 mg/m³ at 09:00."""
    for info in reg.outlets():
        mn = info.outlet.mn
        if mn in skip:
            continue
        for m in range(180):
            so2 = 8.0 + (300.0 if mn in exceeding and 60 <= m < 120 else 0.0)
            doc = {
                "mn": mn,
                "stream": "min",
                "data_time": (DAY + timedelta(hours=8, minutes=m)).isoformat(),
                "values": {"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}},
            }
            yield json.dumps(doc)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("spread", [False, True])
def test_the_merged_parts_equal_one_ingester_of_the_whole_city(n: int, spread: bool) -> None:
    whole = parse_registry(many_outlets(8, city=CITY))
    mns = sorted(i.outlet.mn for i in whole.outlets())
    # spread: the two exceeding enterprises' outlets on different shards (neither part sees two enterprises)
    e2 = next(mn for mn in mns if mn != "MN0001" and (shard_of(mn, n) != shard_of("MN0001", n)) == spread)
    lines = list(_lines(whole, {"MN0001", e2}, skip={mns[-1]}))  # one outlet silent: expected, not received
    one = replay(whole, lines).district_months
    assert one and one[0].supervised and one[0].exceeding_enterprises == ("E001", "E002")
    parts = []
    for k in range(n):
        shard = Shard(k, n)
        res = replay(shard_registry(whole, shard), lines)
        parts += [part_of(r, shard) for r in res.district_months]
    assert merge_parts(whole.city, parts) == one
    if spread:  # the decision by enterprises exists only on the sum
        assert not any(len(p.enterprises) >= 2 for p in parts)


def test_a_part_round_trips_through_its_line() -> None:
    whole = parse_registry(many_outlets(3, city=CITY))
    res = replay(shard_registry(whole, Shard(1, 2)), list(_lines(whole, {"MN0001"}, set())))
    (r,) = res.district_months
    part = part_of(r, Shard(1, 2))
    line = district_part_line(part)
    head, fields, ts = line.split(" ")
    assert head == "cems_rate,district=130602,level=district_shard,shard=1/2"
    row: dict[str, object] = {"time": int(ts) // 1000, "district": "130602", "shard": "1/2"}
    for kv in fields.split(","):
        k, v = kv.split("=", 1)
        row[k] = v.strip('"').rstrip("i")
    assert part_from_row(row) == part


def test_missing_or_mixed_parts_are_refused() -> None:
    whole = parse_registry(many_outlets(6, city=CITY))
    lines = list(_lines(whole, set(), set()))
    parts = [
        part_of(r, Shard(k, 3))
        for k in range(3)
        for r in replay(shard_registry(whole, Shard(k, 3)), lines).district_months
    ]
    with pytest.raises(IncompleteParts, match="no part from shard"):
        merge_parts(whole.city, parts[:2])
    with pytest.raises(IncompleteParts, match="two parts"):
        merge_parts(whole.city, [*parts, parts[0]])
    two = [part_of(r, Shard(0, 2)) for r in replay(shard_registry(whole, Shard(0, 2)), lines).district_months]
    with pytest.raises(IncompleteParts, match="resharded"):
        merge_parts(whole.city, [*parts, *two])
