"""``decode_message``, rebuilt for CPU (issue 20: the registry's topic prefixes and time zone read once per
registry, the topic split with one ``partition``), routes every topic as the decoder before it did (commit
6cb9411, kept below as the reference): the same reading, or the same rejection (reason and detail), for good
and odd topics, JSON and HJ 212 payloads, under two registries with different prefixes and time zones used in
turn.  The validator's per-code look-up (one dict: the name is good, and its range) judges every reading as
the former validator (kept below) did.  The JSON fast path's change (one type check over every value) is
covered by the differential test ``tests/unit/test_payload_fast_path.py``; here the whole pipeline's lines are
compared on edge values too."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

from cems import validate as v
from cems.decode import Decoded, check_grid_packet, decode_hj212, decode_message, hj212_text
from cems.errors import RejectedMessage
from cems.model import Measurement, Reading, Stream
from cems.protocol import hj212
from cems.protocol.payload import decode_payload
from cems.registry import Registry, parse_registry
from cems.sinks.lineprotocol import reading_line
from cems.validate import validate

_STREAMS = {s.value: s for s in Stream}
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
GRID = '[[grid_sensor]]\nid = "G001"\ndistrict = "130602"\ntownship = "先锋街道"\npassword = "654321"\n'
REG_A = parse_registry(one_outlet(tail=GRID))
REG_B = parse_registry(
    one_outlet(
        city="",
        tail=GRID + '[topics]\nprefix = "plant/x/v2"\ngrid_prefix = "air"\n',
    ).replace('timezone = "Asia/Shanghai"', 'timezone = "Asia/Harbin"')
)


def former_decode_message(topic: str, payload: bytes, registry: Registry, *, require_crc: bool = True) -> Decoded:
    """``decode_message`` as of commit 6cb9411 (the reference)."""
    t = registry.topics
    tz: Any = registry.tz
    if topic.startswith(t.prefix + "/"):
        rest = topic[len(t.prefix) + 1 :].split("/")
        if len(rest) != 2 or not rest[0]:
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {t.prefix}/{{mn}}/{{stream}}")
        mn, kind = rest
        if kind == "hj212":
            return Decoded(decode_hj212(payload, mn, registry, require_crc=require_crc))
        stream = _STREAMS.get(kind)
        if stream is None:
            raise RejectedMessage("bad_topic", f"topic {topic!r}: stream {kind!r} is not rtd|min|hour|day|hj212")
        return Decoded(decode_payload(payload, mn=mn, stream=stream, tz=tz))
    if topic.startswith(t.grid_prefix + "/"):
        sensor = topic[len(t.grid_prefix) + 1 :]
        if not sensor or "/" in sensor:
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {t.grid_prefix}/{{sensor_id}}")
        if payload.lstrip()[:2] == b"##":
            packet = hj212.decode(hj212_text(payload), require_crc=require_crc)
            check_grid_packet(packet, sensor, registry)
            return Decoded(hj212.to_reading(packet, tz=tz), grid=True)
        return Decoded(decode_payload(payload, mn=sensor, stream=Stream.RTD, tz=tz), grid=True)
    raise RejectedMessage("bad_topic", f"topic {topic!r} is not a data topic")


def _outcome(f: Any, topic: str, payload: bytes, registry: Registry) -> str:
    try:
        return repr(f(topic, payload, registry))
    except RejectedMessage as e:
        return f"rejected {e.reason}: {e.detail}"


def _payloads(mn: str, t: datetime) -> list[bytes]:
    values: dict[str, Any] = {"a21026": {"Rtd": 12.5, "ZsRtd": 1e-7, "Flag": "N"}, "a19001": {"Rtd": -0.0}}
    doc = {"mn": mn, "stream": "rtd", "data_time": t.isoformat(), "values": values}
    packet = hj212.encode(cn="2011", qn="20261201155955000", st="31", pw="123456", mn=mn, flag=5, data_time=t,
                          values=values, crlf=False)  # fmt: skip
    ambient = hj212.encode(cn="2011", qn="20261201155955000", st="22", pw="654321", mn=mn, flag=5, data_time=t,
                           values={"a34004": {"Rtd": 35.0, "Flag": "N"}}, crlf=False)  # fmt: skip
    return [json.dumps(doc).encode(), packet.encode(), ambient.encode(), b"{}", b"##0000", b"\xff\xfe"]


def _topics(prefix: str, grid: str, mn: str) -> list[str]:
    return [
        *(f"{prefix}/{mn}/{k}" for k in ("rtd", "min", "hour", "day", "hj212", "RTD", "", "x")),
        f"{prefix}/{mn}", f"{prefix}/{mn}/rtd/x", f"{prefix}//rtd", f"{prefix}/", f"{prefix}", f"{prefix}/OTHER/hj212",
        f"{grid}/G001", f"{grid}/{mn}", f"{grid}/", f"{grid}", f"{grid}/G001/x", "cems/v1x/MN0001/rtd", "other/t",
    ]  # fmt: skip


def test_every_topic_is_routed_as_before_under_two_registries_in_turn() -> None:
    t = datetime(2026, 12, 1, 7, 59, 30, tzinfo=UTC)
    cases = []
    for reg, prefix, grid in ((REG_A, "cems/v1", "grid/v1"), (REG_B, "plant/x/v2", "air")):
        for mn in ("MN0001", "G001"):
            for topic in _topics(prefix, grid, mn) + _topics("cems/v1", "grid/v1", mn):
                cases += [(topic, p, reg) for p in _payloads(mn, t)]
    random.Random(7).shuffle(cases)  # (the registries alternate: the remembered one is replaced often)
    assert len({id(r) for _, _, r in cases}) == 2
    for topic, payload, reg in cases:
        assert _outcome(decode_message, topic, payload, reg) == _outcome(former_decode_message, topic, payload, reg)


def test_the_registry_time_zone_is_the_one_of_the_registry_given() -> None:
    doc = {"data_time": "20261201080000", "values": {"a21026": {"Rtd": 1.0}}}
    for reg in (REG_A, REG_B, REG_A):
        r = decode_message("cems/v1/MN0001/rtd" if reg is REG_A else "plant/x/v2/MN0001/rtd",
                           json.dumps(doc).encode(), reg).reading  # fmt: skip
        assert r.data_time.tzinfo == reg.tz


@pytest.mark.parametrize("value", [1e16, 1e-7, -0.0, 0.1 + 0.2, 123456789.123456789, 1e13, -6.0, 5e-324, 2.5e-5])
def test_lines_of_edge_values_are_those_of_the_former_decoder(value: float) -> None:
    t = NOW - timedelta(seconds=5)
    values: dict[str, dict[str, float | str]] = {
        "a21026": {"Rtd": value, "ZsRtd": 1.0, "Flag": "T"},
        "a34013": {"Cou": value},
        "a19001": {"Rtd": 3.0},
    }
    doc = {"mn": "MN0001", "stream": "rtd", "data_time": t.isoformat(), "qn": "20261201155955000", "values": values}
    packet = hj212.encode(cn="2011", qn="20261201155955000", st="31", pw="123456", mn="MN0001", flag=5,
                          data_time=t, values=values, crlf=False)  # fmt: skip
    for topic, payload in (("cems/v1/MN0001/rtd", json.dumps(doc).encode()), ("cems/v1/MN0001/hj212", packet.encode())):
        lines = []
        for f in (decode_message, former_decode_message):
            try:
                r, info = validate(f(topic, payload, REG_A).reading, REG_A, NOW)
                lines.append(reading_line(r, info.enterprise.id, info.district.code))
            except RejectedMessage as e:
                lines.append(f"rejected {e.reason}: {e.detail}")
        assert lines[0] == lines[1]


def former_check_values(reading: Reading) -> Reading:
    """``cems.validate.check_values`` as of commit 6cb9411 (the reference), on the module's own helpers."""
    ranged = v._RANGED_SUFFIXES
    codes: set[str] = set()
    suffixes: set[str] = set()
    big = v.MAX_MAGNITUDE
    n = 0
    bad: list[tuple[str, str, RejectedMessage]] | None = None
    for code, m in reading.measurements.items():
        if code not in codes and not v._name_ok(code, v.CODE_GRAMMAR, codes):
            raise RejectedMessage("bad_field", f"pollutant code {v._show(code)} is not letters, digits and '_' (1-24)")
        values = m.values
        n += len(values) + (m.flag is not None)
        if not suffixes.issuperset(values):
            for suffix in values:
                if suffix not in suffixes and not v._name_ok(suffix, v.SUFFIX_GRAMMAR, suffixes):
                    raise RejectedMessage(
                        "bad_field", f"{v._show(code)}: suffix {v._show(suffix)} is not a field suffix"
                    )
        rng = v._range(code)
        lo, hi = rng if rng is not None else (-big, big)
        for suffix, x in values.items():
            if -big <= x <= big and (suffix not in ranged or lo <= x <= hi):
                continue
            if bad is None:
                bad = []
            bad.append((code, suffix, v._value_problem(code, suffix, x, rng, big)))
    if n > v.MAX_FIELDS:
        raise RejectedMessage("bad_field", f"the reading carries {n} values and flags, more than {v.MAX_FIELDS}")
    if bad is None:
        return reading
    return v._without(reading, bad)


_ODD = [math.nan, math.inf, -math.inf, -0.0, 0.0, -5.0, -5.000001, 25.0, 25.1, 1e6, 1e6 + 1, 1e12, 1e12 * 1.000001,
        -1e12, 5e-324, 1e8, -60.0, -61.0, 1500.0, 3.0]  # fmt: skip
_CODES = ["a19001", "a00000", "a01012", "a21026", "a34013", "a05024", "w01018", "SB1", "a-1", "", "x" * 25, "é"]
_SUFFIXES = ["Rtd", "ZsRtd", "Avg", "Cou", "RS", "Max", "td", "R td", "1x", ""]


def _outcome_of(f: Any, reading: Reading) -> str:
    try:
        r = f(reading)
        return "same" if r is reading else repr(r)
    except RejectedMessage as e:
        return f"rejected {e.reason}: {e.detail}"


def test_value_checks_are_those_of_the_former_validator() -> None:
    rnd = random.Random(11)
    t = NOW - timedelta(seconds=5)
    for i in range(3000):
        measurements: dict[str, Measurement] = {}
        for _ in range(rnd.randint(0, 6)):
            code = rnd.choice(_CODES) if rnd.random() < 0.2 else rnd.choice(_CODES[:8])
            vals = {
                (rnd.choice(_SUFFIXES) if rnd.random() < 0.1 else rnd.choice(_SUFFIXES[:6])): (
                    rnd.choice(_ODD) if rnd.random() < 0.3 else rnd.uniform(-2, 30)
                )
                for _ in range(rnd.randint(0, 4))
            }
            measurements[code] = Measurement(code, vals, rnd.choice([None, "N", "D"]))
        if i % 500 == 0:  # too many fields
            measurements |= {f"c{k}": Measurement(f"c{k}", {"Rtd": 1.0}, "N") for k in range(rnd.randint(95, 110))}
        r = Reading("MN0001", Stream.RTD, t, measurements)
        assert _outcome_of(v.check_values, r) == _outcome_of(former_check_values, r)


def former_header(header: str) -> tuple[str, ...] | None:
    """The header checks of ``_fast_head`` as of commit 6cb9411 (the reference): ``(qn, st, cn, pw, mn, flag)``."""
    h = header.split(";")
    if len(h) != 7 or h[6]:
        return None
    h_qn, h_st, h_cn, h_pw, h_mn, h_flag, _ = h
    if (
        h_qn[:3] != "QN="
        or h_st[:3] != "ST="
        or h_cn[:3] != "CN="
        or h_pw[:3] != "PW="
        or h_mn[:3] != "MN="
        or h_flag[:5] != "Flag="
    ):
        return None
    qn, st, cn, pw, mn, flag = h_qn[3:], h_st[3:], h_cn[3:], h_pw[3:], h_mn[3:], h_flag[5:]
    ok = len(qn) == 17 and qn.isdigit() and st.isdigit() and cn.isdigit() and pw and mn
    return (qn, st, cn, pw, mn, flag) if ok and len(flag) <= 3 and flag.isdigit() else None


def test_the_fast_header_takes_what_the_former_checks_took() -> None:
    from cems.protocol.hj212._decode import _HEAD

    base = "QN=20261201155955000;ST=31;CN=2011;PW=123456;MN=MN0001;Flag=5;"
    rnd = random.Random(5)
    alphabet = list("0123456789;=QNSTCPWMFlag-&x \n\t")
    headers = [base, base.replace("Flag=5", "Flag=255"), base.replace("Flag=5", "Flag=1234"),
               base.replace("PW=123456", "PW=a=b"), base.replace("MN=MN0001", "MN="), base[:-1], base + ";",
               base.replace("ST=31", "ST="), base.replace("QN=2026", "QN=026"),
               base.replace("CN=2011", "CN=2O11")]  # fmt: skip
    for _ in range(20_000):
        chars = list(base)
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(chars) + 1)
            op = rnd.random()
            if op < 0.4 and i < len(chars):
                chars[i] = rnd.choice(alphabet)
            elif op < 0.7:
                chars.insert(i, rnd.choice(alphabet))
            elif i < len(chars):
                del chars[i]
        headers.append("".join(chars))
    for h in headers:
        m = _HEAD.fullmatch(h + "CP=&&", 0, len(h))
        assert (m.groups() if m is not None else None) == former_header(h), h
