"""The decoders' and the MQTT reader's constructors that set a frozen dataclass's slots directly (issue 20,
fourth session: CPU) make the same objects as the dataclasses' own ``__init__``, still frozen."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from cems.model import Measurement, Reading, Stream, new_reading
from cems.service.mqtt import InboundMessage, new_inbound


def _fields(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


def test_new_reading_is_the_dataclasss_reading() -> None:
    t = datetime(2026, 12, 1, 5, 0, 9, tzinfo=UTC)
    ms = {"a21026": Measurement("a21026", {"Rtd": 1.5}, "N")}
    cases: list[tuple[str, Stream, datetime, dict[str, Measurement], str | None, str, dict[str, str], tuple[str, ...]]]
    cases = [
        ("MN1", Stream.RTD, t, ms, "20261201130009000", "hj212", {"k": "v"}, ("a01012-Rtd",)),
        ("MN2", Stream.MIN, t, {}, None, "json", {}, ()),
    ]
    for args in cases:
        a, b = new_reading(*args), Reading(*args)
        assert a == b and repr(a) == repr(b) and type(a) is Reading
        assert _fields(a) == args and all(x is y for x, y in zip(_fields(a), args, strict=True))
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.mn = "other"  # type: ignore[misc]
    assert new_reading("MN", Stream.RTD, t, ms, None, "json", {}) == Reading("MN", Stream.RTD, t, ms, None, "json")


def test_new_inbound_is_the_dataclasss_message() -> None:
    args = ("cems/v1/MN1/hj212", b"##0101QN=...", 7, 1, 1_763_600_000.25, 3)
    a, b = new_inbound(*args), InboundMessage(*args)
    assert a == b and repr(a) == repr(b) and _fields(a) == args
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.qos = 0  # type: ignore[misc]
