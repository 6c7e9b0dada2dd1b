"""Fuzzing the HJ 212 decoder: whatever arrives, it raises only HJ212Error and decode_json never raises."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cems.protocol.hj212 import HJ212Error, StreamFramer, crc16, decode, decode_json, to_reading

REAL = Path("/work/shared/data/hj212_real_packets.jsonl")
SEEDS: list[str] = (
    [json.loads(line)["packet"] for line in REAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    if REAL.exists()
    else []
)
SEEDS.append(
    "##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80"
)

_ALPHABET = "#&;,=-.0123456789ABCDEFabcdefQNSTCPWMFlagRtdAvg \r\n\t\x00é中"


def _check(line: str | bytes) -> None:
    try:
        p = decode(line)
    except HJ212Error as e:
        assert e.reason.startswith("hj212_") and e.detail
        assert "cannot interpret packet" not in e.detail  # the safety net in decode() never fired
    else:
        assert p.crc_ok
        try:
            to_reading(p)
        except HJ212Error as e:
            assert e.reason.startswith("hj212_")
    with contextlib.suppress(HJ212Error):
        decode(line, require_crc=False, accept_modbus_crc=True)
    j = decode_json(line)
    json.dumps(j, allow_nan=False)
    assert isinstance(j["ok"], bool) and isinstance(j["deviations"], list)
    if not j["ok"]:
        assert isinstance(j["error"], str) and j["error"]
    else:
        assert "error" not in j


def _with_valid_crc(segment: str) -> str:
    b = segment.encode("utf-8", "surrogatepass")
    return f"##{len(b):04d}{segment}{crc16(b):04X}"


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _check(data)
    if data[:2] != b"##":
        assert decode_json(data)["ok"] is False


@settings(max_examples=500)
@given(st.text(_ALPHABET, max_size=300))
def test_random_text(text: str) -> None:
    _check(text)
    _check("##" + text)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(st.sampled_from(["del", "ins", "sub", "dup"]), st.floats(0, 1), st.text(_ALPHABET, max_size=4)),
        min_size=1,
        max_size=6,
    ),
    fix_crc=st.booleans(),
)
def test_mutated_real_packets(seed: str, edits: list[tuple[str, float, str]], fix_crc: bool) -> None:
    s = seed
    for op, where, txt in edits:
        i = int(where * len(s))
        if op == "del":
            s = s[:i] + s[i + 1 + len(txt) :]
        elif op == "ins":
            s = s[:i] + txt + s[i:]
        elif op == "sub":
            s = s[:i] + txt + s[i + len(txt) :]
        else:
            s = s[:i] + s[i : i + 10] + s[i:]
    _check(s)
    _check(s.encode("utf-8", "surrogatepass"))
    if fix_crc and s.startswith("##") and len(s) > 10:
        # mutate the inside but give it a correct CRC, so the parser (not the CRC check) is exercised
        _check(_with_valid_crc(s[6:-4]))


@settings(max_examples=300)
@given(st.lists(st.sampled_from(SEEDS) | st.text(_ALPHABET, max_size=50), max_size=10), st.integers(1, 97))
def test_framer_then_decoder(parts: list[str], chunk: int) -> None:
    stream = "\r\n".join(parts).encode("utf-8", "surrogatepass")
    f = StreamFramer()
    for i in range(0, len(stream), chunk):
        for x in f.feed(stream[i : i + chunk]):
            if isinstance(x, bytes):
                _check(x)
            else:
                assert isinstance(x, HJ212Error)
