"""The msgspec fast path of the JSON reading payload (``cems.protocol.payload``) is an optimisation only: on
any payload, :func:`decode_payload` gives the same reading, or the same rejection (reason and detail), as the
pydantic model alone (the path every payload took before, kept for what the fast path does not take).
Differential property test over JSON texts built from key/value lists (duplicate keys, wrong types, long
strings, big and odd numbers, escapes) and their byte mutations."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.errors import RejectedMessage
from cems.model import Measurement, Reading, Stream
from cems.protocol import payload as pl

_MN = "010000A8900016F000169DC0"
_NUMBERS = ["0", "-0", "-0.0", "1e400", "-1e309", "1E5", "1.", "01", "1" * 30, "9" * 309, "1.7976931348623157e308",
            "NaN", "Infinity", "true", "null", '"12.5"', "[1]", "{}", "1e-400", "0.1e1"]  # fmt: skip
_TEXTS = [_MN, "cems.reading/1", "cems.reading/2", "rtd", "min", "RTD", "hour", "day", "x" * 25, "N", "F", "n", "Z",
          "2026-03-01T08:00:30+08:00", "20260301080030", "20260301080030123", "2026-13-01T00:00:00", "1234567",
          "x" * 41, "\\u00e9", "\\ud800", "é", "\udcff", "\udcc0\udc80", "\\n", "20261122080030123", "2" * 21,
          ""]  # fmt: skip

number = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(0, 1000).map(lambda x: repr(round(x, 2))),
    st.integers(-(10**20), 10**20).map(str),
)
odd = st.one_of(st.sampled_from(_NUMBERS), st.sampled_from(_TEXTS).map(lambda t: f'"{t}"'))
flag = st.sampled_from(['"N"', '"N"', '"F"', '"C"', '"Z"', '"n"', "1"])
scalar = st.one_of(number, odd)
suffix = st.sampled_from(["Rtd", "ZsRtd", "Avg", "Cou", "Rtd", "Flag"])
code = st.sampled_from(["a21026", "a19001", "a34013", "a21002", "w01018", "SB1", "a-1", ""])


def _obj(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}"


field = st.one_of(
    st.tuples(suffix, number), st.tuples(suffix, number), st.tuples(st.just("Flag"), flag), st.tuples(suffix, odd)
)
fields_obj = st.lists(field, max_size=4).map(_obj)
values_obj = st.one_of(
    st.lists(st.tuples(code, fields_obj), max_size=5).map(_obj),
    st.lists(st.tuples(code, fields_obj), max_size=5).map(_obj),
    st.lists(st.tuples(code, st.one_of(fields_obj, scalar)), max_size=5).map(_obj),
    st.sampled_from(["null", "[]", '"x"', "{}"]),
)
top_key = st.sampled_from(["schema", "mn", "stream", "data_time", "qn", "values", "extra", "Schema", "\udcff"])
top_value = st.one_of(scalar, values_obj)
_BASE: dict[str, tuple[str | None, list[str | None]]] = {  # key: (good value, odd ones)
    "schema": ("cems.reading/1", [None, "other"]),
    "mn": (_MN, [None, "OTHER", "x" * 25]),
    "stream": ("rtd", [None, "min", "bad"]),
    "data_time": ("2026-03-01T08:00:30+08:00", [*_TEXTS[12:18]]),
    "qn": ("20261122080030123", [None, "2" * 21]),
}


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    rnd = draw(st.randoms(use_true_random=False))  # (weighted choices: hypothesis favours the odd elements)
    pairs = []
    for key, (good, bad) in _BASE.items():
        v = rnd.choice(bad) if rnd.random() < 0.1 else good
        if v is not None or rnd.random() < 0.5:
            pairs.append((key, json.dumps(v)))
    pairs.append(("values", draw(values_obj)))
    if draw(st.integers(0, 3)) == 0:  # extra and duplicate keys
        pairs += draw(st.lists(st.tuples(top_key, top_value), max_size=2))
    text = _obj(draw(st.permutations(pairs)))
    if draw(st.integers(0, 4)) == 0:  # a byte changed
        pos, ch = draw(st.tuples(st.integers(0, 10_000), st.sampled_from(list('{}[]",:0e-. \\\udcff'))))
        i = pos % (len(text) + 1)
        text = text[:i] + ch + text[i + 1 :]
    return text.encode("utf-8", "surrogateescape")  # ("\udcff": the invalid UTF-8 byte 0xff)


def _reference(payload: bytes, stream: Stream) -> Reading:
    """:func:`decode_payload` through the pydantic model only (the path before the fast path)."""
    fields = pl._slow_fields(payload)
    schema, p_mn, p_stream, data_time, qn, values = fields
    if schema is not None and schema != pl.SCHEMA:
        raise RejectedMessage("bad_schema", f"schema {schema!r} is not {pl.SCHEMA!r}")
    if p_mn is not None and p_mn != _MN:
        raise RejectedMessage("mn_mismatch", f"payload MN {p_mn!r} does not match topic MN {_MN!r}")
    if p_stream is not None and p_stream is not stream:
        raise RejectedMessage("stream_mismatch", f"payload stream {p_stream!r} does not match topic {stream!r}")
    measurements = pl._measurements(values)
    return Reading(_MN, stream, pl.parse_data_time(data_time), measurements, qn=qn, origin="json")


def _outcome(f: Any, payload: bytes) -> tuple[str, Any]:
    try:
        r = f(payload)
    except RejectedMessage as e:
        return "rejected", (e.reason, e.detail)
    values = {c: (m.code, m.values, m.flag, [math.copysign(1, v) for v in m.values.values()])
              for c, m in r.measurements.items()}  # fmt: skip
    return "accepted", (r, list(r.measurements), [list(m.values) for m in r.measurements.values()], values)


@settings(max_examples=3000, deadline=None)
@given(payloads())
def test_fast_path_gives_the_pydantic_outcome(payload: bytes) -> None:
    got = _outcome(lambda p: pl.decode_payload(p, mn=_MN, stream=Stream.RTD), payload)
    want = _outcome(lambda p: _reference(p, Stream.RTD), payload)
    assert got == want


def test_fast_path_takes_the_common_payload_and_leaves_the_odd_one() -> None:
    good = (b'{"schema":"cems.reading/1","mn":"%s","stream":"rtd","data_time":"2026-03-01T08:00:30+08:00",'
            b'"qn":"20260301080030123","values":{"a21026":{"Rtd":12.5,"ZsRtd":15,"Flag":"N"},"a19001":{"Rtd":8}}}'
            % _MN.encode())  # fmt: skip
    assert pl._fast_fields(good) is not None
    r = pl.decode_payload(good, mn=_MN, stream=Stream.RTD)
    assert r.measurements["a21026"] == Measurement("a21026", {"Rtd": 12.5, "ZsRtd": 15.0}, "N")
    assert type(r.measurements["a21026"].values["ZsRtd"]) is float
    assert r.measurements["a19001"] == Measurement("a19001", {"Rtd": 8.0}, None)
    for odd in (good.replace(b"12.5", b"1e400"), good.replace(b'"rtd"', b'"RTD"'), good.replace(b"15", b"true")):
        assert pl._fast_fields(odd) is None
        with pytest.raises(RejectedMessage) as e:
            pl.decode_payload(odd, mn=_MN, stream=Stream.RTD)
        assert e.value.reason == "bad_field"
    bad_flag = good.replace(b'"Flag":"N"', b'"Flag":"Z"')
    with pytest.raises(RejectedMessage) as e:
        pl.decode_payload(bad_flag, mn=_MN, stream=Stream.RTD)
    assert (e.value.reason, e.value.detail) == ("bad_flag", "a21026-Flag 'Z' is not an HJ 212 data flag")


@pytest.mark.parametrize(
    "extra",
    [b'"\xc0\x80"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xe9\x80"', b'"\xef\xbf\xbe"', b'"\xf0\x9f\x98\x80"',
     b'"\\ud800\\u0041"', b'"\\udc00"', b'"\\ud800\\udc00"', b'"\\uZZZZ"', b'"\\/"', b"NaN", b"Infinity", b"01", b"1.",
     b"[1,]", b'"a\nb"', b'{"a":[{"b":[]}]}', b"-0.0e-0"],
)  # fmt: skip
def test_what_msgspec_skips_is_checked_as_pydantic_checks_it(extra: bytes) -> None:
    """An unknown key's value (skipped by msgspec unread) and a known one: invalid UTF-8, lone surrogates ..."""
    for key in (b"extra", b"mn", b"values"):
        payload = b'{"data_time":"2026-03-01T08:00:30+08:00","values":{"a21026":{"Rtd":1}},"%s":%s}' % (key, extra)
        got = _outcome(lambda p: pl.decode_payload(p, mn=_MN, stream=Stream.RTD), payload)
        assert got == _outcome(lambda p: _reference(p, Stream.RTD), payload)
