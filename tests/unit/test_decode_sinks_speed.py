"""Issue 20, decode and sinks (second session): the remembered CP keys of the HJ 212 fast path and the
remembered Unix time of a data time change no result (docs/benchmark.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from cems.model import BEIJING
from cems.protocol.hj212 import _decode, decode, encode, fast_reading, to_reading
from cems.validate import unix_time


def _packet(values: dict[str, dict[str, object]]) -> str:
    return encode(cn="2011", qn="20261201130009000", st="31", pw="123456", mn="010000A8900016F000169DC0",
                  flag=5, data_time=datetime(2026, 12, 1, 13, 0, 9, tzinfo=BEIJING), values=values,  # type: ignore[arg-type]
                  crlf=False)  # fmt: skip


def _fields(text: str) -> list[tuple[str, list[tuple[str, float]], str | None]] | None:
    got = fast_reading(text, BEIJING)
    if got is None:
        return None
    return [(c, list(m.values.items()), m.flag) for c, m in got[2].measurements.items()]


def test_fast_reading_same_cold_and_warm_in_the_full_decoders_field_order() -> None:
    text = _packet({"a21026": {"Flag": "N", "Rtd": 13.81, "ZsRtd": 14.42}, "a19001": {"Rtd": 6.63}, "SB1": {"Cou": 2}})
    _decode._KEYS.clear()
    cold = _fields(text)
    warm = _fields(text)
    assert cold == warm
    assert cold == [
        ("a21026", [("Rtd", 13.81), ("ZsRtd", 14.42)], "N"),
        ("a19001", [("Rtd", 6.63)], None),
        ("SB1", [("Cou", 2.0)], None),
    ]
    got = fast_reading(text, BEIJING)
    assert got is not None and got[2] == to_reading(decode(text), tz=BEIJING)


def test_keys_the_fast_path_does_not_take_stay_refused_once_remembered() -> None:
    for values in ({"a21026": {"Rtd": 1.0, "Info": "x"}}, {"a21026": {"Rtd": 1.0, "EFlag": "x"}}):
        text = _packet(values)
        assert fast_reading(text, BEIJING) is None
        assert fast_reading(text, BEIJING) is None  # (now from the remembered key)
    dup = _packet({"a21026": {"Rtd": 1.0}}).replace("a21026-Rtd=1", "a21026-Rtd=1,a21026-Rtd=1", 1)
    assert fast_reading(dup, BEIJING) is None  # (a bad frame now: the full path decides, whatever the reason)


def test_key_memory_is_bounded() -> None:
    _decode._KEYS.clear()
    for i in range(_decode._KEYS_MAX + 10):
        _decode._key_spec(f"c{i}-Rtd")
    assert len(_decode._KEYS) <= _decode._KEYS_MAX
    assert _decode._key_spec("a21026-Rtd") == (_decode._NUM, "a21026", "Rtd")


def test_unix_time_is_timestamp_whatever_came_before() -> None:
    a = datetime(2026, 12, 1, 13, 0, 9, tzinfo=BEIJING)
    b = datetime(2026, 12, 1, 13, 0, 9, tzinfo=UTC)  # equal wall clock, another zone: another instant
    c = datetime(2026, 12, 1, 5, 0, 9, 250_000, tzinfo=timezone(timedelta(hours=-3)))
    for t in (a, a, b, a, c, c, b):
        assert unix_time(t) == t.timestamp()
