from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cems.errors import RejectedMessage
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.protocol.payload import decode_payload, encode_payload, parse_data_time
from cems.registry import parse_registry
from cems.sinks.lineprotocol import point, reading_line
from cems.validate import validate

REG = parse_registry(
    """
[city]
name = "c"
[[district]]
code = "D1"
name = "d"
[[enterprise]]
id = "E1"
name = "e"
district = "D1"
[[enterprise.outlet]]
mn = "MN1"
name = "o"
profile = "cement_kiln"
"""
)
NOW = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


def reading(**values: dict[str, float]) -> Reading:
    return Reading("MN1", Stream.RTD, NOW, {c: Measurement(c, v, "N") for c, v in values.items()})


def test_data_time_forms() -> None:
    assert parse_data_time("20261122080000") == datetime(2026, 11, 22, 8, tzinfo=BEIJING)
    assert parse_data_time("20261122080000123").microsecond == 123000
    assert parse_data_time("2026-11-22T00:00:00Z") == datetime(2026, 11, 22, tzinfo=UTC)
    assert parse_data_time("2026-11-22T08:00:00").utcoffset() == timedelta(hours=8)
    with pytest.raises(RejectedMessage, match="bad_data_time"):
        parse_data_time("yesterday")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[1,2]", "bad_field"),
        (b'{"values":{}}', "bad_field"),
        (b'{"data_time":"20261122080000","values":{"a21026":{"Rtd":true}}}', "bad_field"),
        (b'{"data_time":"20261122080000","values":{"a21026":{"Rtd":Infinity}}}', "bad_field"),
        (b'{"data_time":"20261122080000","values":{"a21026":{"Flag":1}}}', "bad_flag"),
        (b'{"schema":"cems.reading/9","data_time":"20261122080000","values":{}}', "bad_schema"),
        (b'{"stream":"hour","data_time":"20261122080000","values":{}}', "stream_mismatch"),
        (b"\xff\xfe", "malformed_json"),
        (b" " * 70000, "too_large"),
    ],
)
def test_bad_payloads_are_rejected_with_specific_reasons(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        decode_payload(body, mn="MN1", stream=Stream.RTD)
    assert e.value.reason == reason and e.value.detail


codes = st.sampled_from(["a21026", "a21002", "a34013", "a19001", "a00000"])
suffixes = st.sampled_from(["Rtd", "Avg", "Min", "Max", "ZsRtd", "ZsAvg", "Cou"])
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    st.dictionaries(
        codes, st.tuples(st.dictionaries(suffixes, finite, max_size=4), st.sampled_from([None, "N", "M", "D"]))
    ),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(BEIJING)),
    st.sampled_from(list(Stream)),
)
def test_payload_round_trip(
    values: dict[str, tuple[dict[str, float], str | None]], t: datetime, stream: Stream
) -> None:
    r = Reading("MN1", stream, t, {c: Measurement(c, v, f) for c, (v, f) in values.items()}, qn="1")
    assert decode_payload(encode_payload(r), mn="MN1", stream=stream) == r


def test_validate_accepts_and_returns_the_outlet() -> None:
    r = reading(a21026={"Rtd": 10.0})
    checked, info = validate(r, REG, NOW)
    assert info.enterprise.id == "E1" and info.district.code == "D1"
    assert checked is r  # nothing left out: the same reading (no copy on the hot path)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"Rtd": 9999.0}, "absurd"),
        ({"Rtd": -100.0}, "negative"),
        ({"Rtd": float("nan")}, "not finite"),
        ({"Rtd": float("inf")}, "not finite"),
    ],
)
def test_one_bad_value_is_left_out_and_the_rest_is_judged(bad: dict[str, float], why: str) -> None:
    """Issue 12 item 3: a range check is per value, never a rejection of the values beside it."""
    r = Reading(
        "MN1",
        Stream.RTD,
        NOW,
        {
            "a01012": Measurement("a01012", {**bad, "Max": 120.0}, "D"),
            "a21026": Measurement("a21026", {"Rtd": 520.0, "ZsRtd": 530.0}, "N"),
        },
    )
    checked, _ = validate(r, REG, NOW)
    assert checked.dropped == ("a01012-Rtd",), why
    assert checked.measurements["a21026"] == r.measurements["a21026"]
    assert checked.measurements["a01012"].values == {"Max": 120.0}
    assert checked.measurements["a01012"].flag == "D"
    line = reading_line(checked, "E1", "D1")
    assert "a21026_Rtd=520.0" in line and "a01012_Rtd" not in line and 'dropped="a01012-Rtd"' in line


@pytest.mark.parametrize(
    ("r", "reason"),
    [
        (Reading("X", Stream.RTD, NOW, {"a": Measurement("a", {"Rtd": 1.0})}), "unknown_mn"),
        (Reading("MN1", Stream.RTD, NOW, {}), "empty_reading"),
        (Reading("MN1", Stream.RTD, NOW, {"a": Measurement("a", {})}), "empty_reading"),
        (
            Reading("MN1", Stream.RTD, NOW + timedelta(minutes=11), {"a": Measurement("a", {"Rtd": 1.0})}),
            "future_data_time",
        ),
        (
            Reading("MN1", Stream.RTD, NOW - timedelta(days=401), {"a": Measurement("a", {"Rtd": 1.0})}),
            "stale_data_time",
        ),
        (reading(a21026={"Rtd": float("nan")}), "not_finite"),
        (reading(a21026={"Rtd": -6.0}), "negative_value"),
        (reading(a34013={"Avg": 2e6}), "absurd_value"),
        (reading(a19001={"Rtd": 30.0}), "absurd_value"),
    ],
)
def test_validate_rejects(r: Reading, reason: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        validate(r, REG, NOW)
    assert e.value.reason == reason


def test_validate_allows_negative_temperature_and_small_zero_drift() -> None:
    validate(reading(a01012={"Rtd": -20.0}, a21026={"Rtd": -0.4}), REG, NOW)


def test_line_protocol_escaping_and_types() -> None:
    line = point("m x", {"t,a": "v=1 2", "empty": ""}, {"f": 1.5, "i": 3, "b": True, "s": 'a"b\\c', "n": None}, 5)
    assert line == 'm\\ x,t\\,a=v\\=1\\ 2 f=1.5,i=3i,b=true,s="a\\"b\\\\c" 5'
    r = Reading(
        "MN1",
        Stream.MIN,
        datetime(2026, 1, 1, 8, tzinfo=BEIJING),
        {"a21026": Measurement("a21026", {"Avg": 1e-7, "Max": 12.0}, "N")},
    )
    assert reading_line(r, "E1", "D1") == (
        'cems_reading,district=D1,enterprise=E1,mn=MN1,stream=min a21026_Avg=1e-7,a21026_Max=12.0,a21026_Flag="N" '
        "1767225600000"
    )
    assert json.loads(encode_payload(r))["data_time"] == "2026-01-01T08:00:00+08:00"


@pytest.mark.parametrize("now", [NOW, NOW.astimezone(BEIJING) + timedelta(microseconds=123_457)])
def test_data_time_limits_are_exact_to_the_microsecond(now: datetime) -> None:
    """The time checks compare Unix times (floats): still exact at the microsecond, in any zone."""
    a = {"a": Measurement("a", {"Rtd": 1.0})}
    for t, ok in [
        (now + timedelta(minutes=10), True),
        (now + timedelta(minutes=10, microseconds=1), False),
        (now - timedelta(days=400), True),
        (now - timedelta(days=400, microseconds=1), False),
    ]:
        r = Reading("MN1", Stream.RTD, t.astimezone(BEIJING), a)
        if ok:
            validate(r, REG, now)
        else:
            with pytest.raises(RejectedMessage):
                validate(r, REG, now)


def test_reading_line_is_point_of_the_same_fields() -> None:
    """``reading_line`` (templates per measurement, numbers in one call) writes what :func:`point` writes of
    the same fields, odd names (``%``, spaces, commas: escaped, never read as a format) and flags included;
    only a number's exponent may be spelt differently (``1e-7``), which InfluxDB reads the same."""
    r = Reading(
        "MN 1",
        Stream.RTD,
        datetime(2026, 1, 1, 8, 0, 0, 250_000, tzinfo=BEIJING),
        {
            "a%s": Measurement("a%s", {"R%d": 1.5, "x y": -2.0}, 'N"%'),
            "b": Measurement("b", {}, None),
            "c,d": Measurement("c,d", {}, "F"),
            "e": Measurement("e", {"Rtd": 3.0}, None),
        },
        qn='q"1',
        dropped=("a-b", "c-d"),
    )
    fields: dict[str, float | int | str | bool | None] = {
        "a%s_R%d": 1.5, "a%s_x y": -2.0, "a%s_Flag": 'N"%', "c,d_Flag": "F", "e_Rtd": 3.0, "qn": 'q"1',
        "dropped": "a-b,c-d",
    }  # fmt: skip
    tags = {"district": "D 1", "enterprise": "E,1", "mn": "MN 1", "stream": "rtd"}
    for _ in range(2):  # (the second time from the templates remembered)
        assert reading_line(r, "E,1", "D 1") == point("cems_reading", tags, fields, 1767225600250)
    plain = Reading("MN1", Stream.RTD, NOW, {"a": Measurement("a", {"Rtd": 2.0}, None)}, qn="20261122080030123")
    assert reading_line(plain, "E1", "D1").split(" ")[1] == 'a_Rtd=2.0,qn="20261122080030123"'
