"""Memory of the engine per outlet (issue 20, 100 000 outlets): containers made on first write, shared empty
defaults that are never written to, snapshots unchanged, and the registry validated enterprise by enterprise
with the same models and messages as a whole validation."""

from __future__ import annotations

import tomllib
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from cems.decode import decode_message
from cems.devtools.bench import _data
from cems.engine import ComplianceEngine
from cems.errors import RegistryError
from cems.registry import parse_registry
from cems.registry._model import Registry
from cems.rules import daily, events, monthly, quality

END = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def _shared_empties_untouched() -> None:
    assert not quality._NONE and quality._ZERO2 == (0, 0.0)
    assert not daily._NO_DAYS and not daily._NO_REPORTS
    assert not monthly._NO_MONTHS and not events._NO_KEYS


def test_one_reading_leaves_the_rare_containers_shared_and_the_snapshot_as_a_fresh_one() -> None:
    reg = parse_registry(_data.registry_toml(4))
    eng = ComplianceEngine(reg)
    for topic, payload in _data.throughput_messages(4, 4, end=END):
        eng.on_reading(decode_message(topic, payload, reg).reading)
    for oe in eng._outlets.values():
        q, d = oe.quality, oe.daily
        for part in (q._hits, q._events, q._zs):
            assert part is quality._NONE
        (st,) = q._stats.values()
        assert st.neg is quality._NONE and st.mins is quality._NONE and st.o2co2 is quality._ZERO2
        assert d._dirty is daily._NO_DAYS and d._stored is daily._NO_DAYS and d._reported is daily._NO_REPORTS
        assert oe.monthly._dirty is monthly._NO_MONTHS and oe.exceedance._latest_keys is events._NO_KEYS
        assert oe.daily.exempt is oe.monthly.exempt is eng._exempt  # one callable for every outlet
        snap = oe.snapshot()
        assert snap["quality"]["hits"] == {} and snap["quality"]["events"] == [] and snap["quality"]["days"] == {}
        assert snap["daily"]["dirty"] == [] and snap["daily"]["reported"] == {} and snap["monthly"]["dirty"] == []
    _shared_empties_untouched()


def test_a_day_of_data_writes_its_own_containers_never_the_shared_empties() -> None:
    reg = parse_registry(_data.registry_toml(2))
    eng = ComplianceEngine(reg)
    from cems.replay import load_readings

    items = load_readings(reg, _data.replay_lines(2, 2), "hj212")
    for r, info in items:
        eng.on_reading(r, info)
    eng.on_clock(items[-1][0].data_time + timedelta(hours=30))
    eng.finish()
    for oe in eng._outlets.values():
        assert isinstance(oe.quality._hits, dict) and isinstance(oe.exceedance._latest_keys, set)
        # a state restored into a fresh engine gives the same snapshot
        other = ComplianceEngine(reg)
        other.restore_outlet(oe.info.outlet.mn, oe.snapshot())
        assert other._outlets[oe.info.outlet.mn].snapshot() == oe.snapshot()
    _shared_empties_untouched()


def test_engine_state_after_one_reading_stays_small() -> None:
    n = 400
    reg = parse_registry(_data.registry_toml(n))
    readings = [decode_message(t, p, reg).reading for t, p in _data.throughput_messages(n, n, end=END)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        eng = ComplianceEngine(reg)
        for r in readings:
            eng.on_reading(r)
        per_outlet = (tracemalloc.get_traced_memory()[0] - base) / n
    finally:
        tracemalloc.stop()
    assert len(eng._outlets) == n
    assert per_outlet < 6000  # ≈ 4.8 KB measured (CPython 3.11); 7.5 KB before the containers made on first write


def test_registry_validated_by_enterprise_equals_a_whole_validation() -> None:
    text = _data.registry_toml(30)
    whole = Registry.model_validate(tomllib.loads(text))
    reg = parse_registry(text)
    assert reg.model_dump() == whole.model_dump()
    for a, b in zip(reg.enterprise, whole.enterprise, strict=True):
        assert a.model_fields_set == b.model_fields_set
        assert [o.model_fields_set for o in a.outlet] == [o.model_fields_set for o in b.outlet]
    assert reg.outlets() == whole.outlets()


def test_a_problem_in_an_enterprise_keeps_its_path_in_the_message() -> None:
    text = _data.registry_toml(6).replace("rtd_interval_s = 30", 'rtd_interval_s = "30"', 1)
    assert text != _data.registry_toml(6)
    with pytest.raises(RegistryError) as e:
        parse_registry(text)
    assert "enterprise[0](" in str(e.value) and "outlet[0]" in str(e.value) and "rtd_interval_s" in str(e.value)
