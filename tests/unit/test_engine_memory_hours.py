"""Memory of the engine per outlet, fourth step (issue 20, 100 000 outlets): hour starts shared between outlets,
the quality tracker's minute bits shared, and an hour's log of sub-values one array of (key, value) pairs — with
the same values, records and snapshots as before."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest

from cems.decode import decode_message
from cems.devtools.bench import _data
from cems.engine import ComplianceEngine
from cems.model import Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.rules import _shared, hourly
from cems.rules.quality import _MINUTE_BITS

END = datetime(2026, 3, 2, 4, 20, tzinfo=UTC)


def test_shared_hour_gives_an_equal_int_and_one_object_per_value() -> None:
    a = int("1772424000")  # made at run time: not the same object as another equal int
    b = int("1772424000")
    assert a is not b
    sa, sb = _shared.shared_hour(a), _shared.shared_hour(b)
    assert sa == a and sb == b and sa is sb
    other = _shared.shared_hour(int("1772427600"))
    assert other == 1772427600 and other is not sa


def test_shared_hour_is_bounded_and_stays_correct_when_emptied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shared, "_HOURS", {})  # (the process's table left as it was)
    for i in range(_shared._HOURS_MAX + 10):
        h = 1_700_000_000 + 3600 * i
        assert _shared.shared_hour(h) == h
    assert len(_shared._HOURS) <= _shared._HOURS_MAX
    assert _shared.shared_hour(5 * 3600) == 5 * 3600


def test_outlets_in_the_same_hour_share_its_int_and_keep_their_own_state() -> None:
    n = 6
    reg = parse_registry(_data.registry_toml(n))
    eng = ComplianceEngine(reg)
    for topic, payload in _data.throughput_messages(n, n, end=END):
        eng.on_reading(decode_message(topic, payload, reg).reading)
    oes = list(eng._outlets.values())
    first = oes[0]
    for oe in oes[1:]:
        assert oe.hourly._open[0].hour is first.hourly._open[0].hour
        assert oe.quality._stats[0].hour is first.quality._stats[0].hour
        assert oe.quality._newest is first.quality._newest
    # a later hour for one outlet moves only that outlet's hours
    t, p = next(_data.throughput_messages(1, 1, end=END + timedelta(hours=2)))
    eng.on_reading(decode_message(t, p, reg).reading)
    assert first.quality._newest > oes[1].quality._newest
    assert first.hourly._closed_before > oes[1].hourly._closed_before
    assert [acc.hour for acc in oes[1].hourly._open] == [oes[2].hourly._open[0].hour]


def test_minute_bits_are_the_powers_of_two() -> None:
    assert tuple(1 << m for m in range(60)) == _MINUTE_BITS


def _flow_reading(mn: str, t: datetime, flow: float) -> Reading:
    ms = {"a00000": Measurement("a00000", {"Rtd": flow}, "N"), "a21026": Measurement("a21026", {"Rtd": 5.0}, "N")}
    return Reading(mn, Stream.RTD, t, ms)


def test_running_minutes_are_the_or_of_the_running_readings_minutes() -> None:
    reg = parse_registry(_data.registry_toml(1))
    mn = reg.outlets()[0].outlet.mn
    eng = ComplianceEngine(reg)
    rng = random.Random(3)
    hour = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    want = 0
    for _ in range(200):
        sec = rng.randrange(3600)
        flow = rng.choice([0.0, 12.5])
        eng.on_reading(_flow_reading(mn, hour + timedelta(seconds=sec), flow))
        if flow > 0:
            want |= 1 << (sec // 60)
    st = eng._outlets[mn].quality._stats[0]
    assert st.running == want


def _reference_grouped(adds: list[tuple[str, int, float, int]]) -> dict[str, dict[int, tuple[float, int]]]:
    """What a dict per code kept: codes and seconds in order of first arrival, a re-sent second replacing."""
    out: dict[str, dict[int, tuple[float, int]]] = {}
    for code, sec, v, ok in adds:
        out.setdefault(code, {})[sec] = (v, ok)
    return out


def _same(a: dict[str, dict[int, tuple[float, int]]], b: dict[str, dict[int, tuple[float, int]]]) -> bool:
    if list(a) != list(b):
        return False
    for code in a:
        if list(a[code]) != list(b[code]):
            return False
        for s in a[code]:
            (va, oka), (vb, okb) = a[code][s], b[code][s]
            if oka != okb or type(oka) is not int or math.copysign(1, va) != math.copysign(1, vb):
                return False
            if not (va == vb or (math.isnan(va) and math.isnan(vb))):
                return False
    return True


def test_a_log_groups_back_into_the_dicts_per_code_it_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hourly, "_CODE_TUPLES", {})  # (300 codes would fill the process's shared code tuples)
    rng = random.Random(11)
    codes = [f"a{c:05d}" for c in range(300)]  # more codes than a byte: the index is not truncated
    for _ in range(200):
        acc = hourly._HourAcc()
        adds: dict[str, list[tuple[str, int, float, int]]] = {"rtd": [], "mins": []}
        for _ in range(rng.randint(0, 300)):
            kind = rng.choice(["rtd", "mins"])
            ok = rng.choice([0, 1, 1, 2])
            v = math.nan if ok == 0 and rng.random() < 0.5 else rng.choice([-0.0, 0.0, rng.uniform(-1e6, 1e6)])
            code, sec = rng.choice(codes), rng.choice([0, 1, 59, 3599, rng.randrange(3600)])
            acc.add(kind, code, sec, v, ok)
            adds[kind].append((code, sec, v, ok))
        assert _same(acc.rtd, _reference_grouped(adds["rtd"]))
        assert _same(acc.mins, _reference_grouped(adds["mins"]))
        back = hourly.unpack_hour(hourly.pack_hour(acc))  # (packed by second: seconds come back sorted)
        for got, want in ((back.rtd, acc.rtd), (back.mins, acc.mins)):
            assert _same(got, {c: dict(sorted(d.items())) for c, d in want.items()})


def test_the_log_refuses_what_its_key_cannot_hold() -> None:
    acc = hourly._HourAcc()
    with pytest.raises(ValueError):
        acc.add("rtd", "a21026", 1 << 16, 1.0, 1)
    with pytest.raises(ValueError):
        acc.add("rtd", "a21026", -1, 1.0, 1)
    with pytest.raises(ValueError):
        acc.add("rtd", "a21026", 10, 1.0, 4)
    assert acc.rtd == {}
