"""An hour's quality summary gives the same JSON as before issue 20's CPU step (``_HourStats.to_json``, written
for every hour an outlet keeps, at each state commit)."""

from __future__ import annotations

import json
from typing import Any

from cems.rules import quality


def _former_to_json(st: quality._HourStats) -> dict[str, Any]:
    """``_HourStats.to_json`` before issue 20's CPU step (kept here to compare)."""
    d: dict[str, Any] = {}
    for k in ("lo", "hi", "mask", "neg", "pinned", "novel"):
        v = getattr(st, k)
        if v:
            d[k] = v
    if st.o2co2[0]:
        d["o2co2"] = st.o2co2
    if st.drywet[0]:
        d["drywet"] = st.drywet
    for k in ("running", "rs_off", "zs_rt", "mins"):
        v = getattr(st, k)
        if v:
            d[k] = v
    return d


def test_hour_stats_json_is_the_former() -> None:
    empty = quality._HourStats(3600)
    assert empty.to_json() == _former_to_json(empty) == {}
    st = quality._HourStats(3600)
    st.widen("a21026", 1.5, 2.5, 0b101)
    st.widen("a19001", 9.0, 9.0, 0b1)
    st.widen("a21026", 0.5, 2.0, 0b10)
    assert json.dumps(st.to_json()) == json.dumps(_former_to_json(st))
    st.neg, st.pinned, st.novel = {"a21026": [1, -3.0]}, {"a21002": [2, 500.0]}, 4
    st.o2co2, st.drywet, st.running = [8, 21.5], [16, 1.7], 0b111
    st.rs_off, st.zs_rt, st.mins = {"p1": 1}, {"a21026": [1, 2.0, 3.0, 4.0]}, {"a21026": [1, 5_000_000]}
    assert json.dumps(st.to_json()) == json.dumps(_former_to_json(st))
    for part in ("neg", "pinned", "rs_off", "zs_rt", "mins"):  # each alone, the others empty
        one = quality._HourStats(0)
        setattr(one, part, getattr(st, part))
        assert json.dumps(one.to_json()) == json.dumps(_former_to_json(one))
