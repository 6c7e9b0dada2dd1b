"""HJ 212 codec: CRC, the 30 real packets of DOMAIN.md §8, encoding, replies, splits, stream framing."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.model import BEIJING, Stream
from cems.protocol import hj212
from cems.protocol.hj212 import (
    FramingError,
    HJ212Error,
    Packet,
    Reassembler,
    StreamFramer,
    crc16,
    decode,
    decode_json,
    encode,
    encode_packet,
    frame,
)

# 30 real packets from public sources (a copy of shared/data/hj212_real_packets.jsonl, see its `source` keys)
REAL = Path(__file__).resolve().parents[1] / "data" / "hj212_real_packets.jsonl"

OFFICIAL_SEGMENT = (
    "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&"
)


def _real() -> list[dict[str, Any]]:
    if not REAL.exists():
        return []
    return [json.loads(line) for line in REAL.read_text(encoding="utf-8").splitlines() if line.strip()]


REAL_PACKETS = _real()
needs_real = pytest.mark.skipif(not REAL_PACKETS, reason=f"{REAL} not found")


# ----------------------------------------------------------------------------------------------- CRC


def _crc_reference(data: bytes) -> int:
    """Appendix A, literally."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def test_official_crc_vector() -> None:
    assert len(OFFICIAL_SEGMENT) == 101
    assert crc16(OFFICIAL_SEGMENT.encode()) == 0x1C80
    assert frame(OFFICIAL_SEGMENT) == f"##0101{OFFICIAL_SEGMENT}1C80\r\n"
    assert frame(OFFICIAL_SEGMENT, crlf=False) == f"##0101{OFFICIAL_SEGMENT}1C80"


@given(st.binary(max_size=300))
def test_table_crc_equals_appendix_a(data: bytes) -> None:
    assert crc16(data) == _crc_reference(data)


def test_crc_zero_is_written_padded() -> None:
    pkt = next((d for d in REAL_PACKETS if d["crc_field"] == "0000"), None)
    if pkt is None:
        pytest.skip("no CRC-0000 packet in the data set")
    p = decode(pkt["packet"])
    assert p.crc_ok
    assert frame(p.raw, crlf=False) == pkt["packet"]


# ------------------------------------------------------------------------------------- real packets


def _expected_dt(p: Packet) -> str | None:
    if p.data_time is None:
        return None
    s = p.data_time.strftime("%Y%m%d%H%M%S")
    return s + f"{p.data_time.microsecond // 1000:03d}" if p.data_time.microsecond else s


def _check_fields(p: Packet, d: dict[str, Any]) -> None:
    for key in ("qn", "st", "cn", "pw", "mn", "flag"):
        assert getattr(p, key) == d[key], key
    if d["data_time"] is not None and len(d["data_time"]) == 17:
        assert _expected_dt(p) == d["data_time"] or (
            p.data_time is not None and p.data_time.strftime("%Y%m%d%H%M%S") + "000" == d["data_time"]
        )
    else:
        assert _expected_dt(p) == d["data_time"]
    if p.data_time is not None:
        assert p.data_time.utcoffset() == timedelta(hours=8)
    assert set(p.values) == set(d["values"])
    for code, sv in d["values"].items():
        assert set(p.values[code]) == set(sv), code
        for suffix, v in sv.items():
            got = p.values[code][suffix]
            if isinstance(v, str):
                assert got == v
            else:
                assert isinstance(got, float) and got == pytest.approx(v), (code, suffix)
    assert p.cp_other == {k: str(v) for k, v in d["cp_other"].items()}
    hx = d["header_extra"]
    if "PNUM" in hx:
        assert p.pnum == int(hx["PNUM"]) and p.pno == int(hx["PNO"])
    else:
        assert p.pnum is None and p.pno is None
    # every defect named by the data set is reported
    if d["length_field"] != d["length_actual"]:
        assert any("length field" in x for x in p.deviations)
    if d["crc_field"] and d["crc_field"] != d["crc_field"].upper():
        assert "lower-case CRC" in p.deviations
    if d["flag"] is None:
        assert "missing Flag" in p.deviations and p.version is None
    if not d["packet"].rstrip().endswith("&&" + (d["crc_field"] or "")):
        assert "closing '&&' missing" in p.deviations


@needs_real
@pytest.mark.parametrize("d", [d for d in REAL_PACKETS if d["crc_ok"]], ids=lambda d: d["packet"][:24])
def test_real_packet_with_good_crc_decodes(d: dict[str, Any]) -> None:
    p = decode(d["packet"])
    assert p.crc_ok
    _check_fields(p, d)
    j = decode_json(d["packet"])
    assert j["ok"] is True and j["crc_ok"] is True and "error" not in j
    assert j["values"] == p.values
    json.dumps(j)  # serialisable


@needs_real
@pytest.mark.parametrize("d", [d for d in REAL_PACKETS if not d["crc_ok"]], ids=lambda d: d["packet"][:24])
def test_real_packet_with_bad_or_no_crc_is_rejected(d: dict[str, Any]) -> None:
    with pytest.raises(HJ212Error) as ei:
        decode(d["packet"])
    assert ei.value.reason == "hj212_crc"
    j = decode_json(d["packet"])
    assert j["ok"] is False and j["crc_ok"] is False and j["error"].startswith("hj212_crc")
    # with the CRC check off it decodes as the data set says, unless it is broken beyond that
    if len(d["data_time"] or "") not in (0, 14, 17):
        with pytest.raises(HJ212Error) as ei2:
            decode(d["packet"], require_crc=False)
        assert ei2.value.reason == "hj212_datatime"
        return
    p = decode(d["packet"], require_crc=False)
    assert not p.crc_ok
    _check_fields(p, d)


@needs_real
def test_modbus_crc_is_recognised() -> None:
    d = next(d for d in REAL_PACKETS if d["crc_field"] == "0681")
    with pytest.raises(HJ212Error, match="MODBUS"):
        decode(d["packet"])
    p = decode(d["packet"], accept_modbus_crc=True)
    assert not p.crc_ok and any("MODBUS" in x for x in p.deviations)


@needs_real
def test_versions_from_flag() -> None:
    by_flag = {d["flag"]: decode(d["packet"]) for d in REAL_PACKETS if d["crc_ok"]}
    assert by_flag[5].version == "2017" and by_flag[5].needs_reply
    assert by_flag[4].version == "2017" and not by_flag[4].needs_reply
    assert by_flag[9].version == "2025" and by_flag[9].needs_reply
    assert by_flag[8].version == "2025"
    assert by_flag[None].version is None and not by_flag[None].needs_reply


@needs_real
@pytest.mark.parametrize("d", [d for d in REAL_PACKETS if d["crc_ok"]], ids=lambda d: d["packet"][:24])
def test_real_packet_reencodes(d: dict[str, Any]) -> None:
    p = decode(d["packet"])
    again = decode(encode_packet(p))
    assert again.crc_ok and not any("length" in x for x in again.deviations)
    assert (again.cn, again.qn, again.mn, again.pw, again.flag, again.data_time) == (
        p.cn,
        p.qn,
        p.mn,
        p.pw,
        p.flag,
        p.data_time,
    )
    assert again.values == p.values and again.cp_other == p.cp_other


# -------------------------------------------------------------------------------- lenient / strict


def _pkt(segment: str, crc: str | None = None, length: str | None = None) -> str:
    b = segment.encode()
    return f"##{length if length is not None else f'{len(b):04d}'}{segment}" + (
        crc if crc is not None else f"{crc16(b):04X}"
    )


SEG = (
    "QN=20260101080000000;ST=31;CN=2061;PW=123456;MN=MN001;Flag=5;"
    "CP=&&DataTime=20260101080000;a21026-Avg=12.5,a21026-ZsAvg=15.1,a21026-Flag=N&&"
)


def test_happy_path_and_json_shape() -> None:
    j = decode_json(_pkt(SEG) + "\r\n")
    assert j == {
        "ok": True,
        "crc_ok": True,
        "version": "2017",
        "qn": "20260101080000000",
        "st": "31",
        "cn": "2061",
        "pw": "123456",
        "mn": "MN001",
        "flag": 5,
        "pnum": None,
        "pno": None,
        "data_time": "2026-01-01T08:00:00+08:00",
        "values": {"a21026": {"Avg": 12.5, "ZsAvg": 15.1, "Flag": "N"}},
        "deviations": [],
    }


def test_decode_json_shows_pnum_and_pno_of_a_split_packet() -> None:
    """Issue 12 item 11: ``cems hj212 decode`` shows which part of a split packet a line is."""
    seg = (
        "QN=20260101080000000;ST=31;CN=2051;PW=1;MN=MN001;Flag=7;PNUM=3;PNO=2;"
        "CP=&&DataTime=20260101080000;a21002-Avg=1&&"
    )
    j = decode_json(_pkt(seg))
    assert j["ok"] and (j["pnum"], j["pno"], j["flag"]) == (3, 2, 7)
    assert hj212.encode_json(j) == _pkt(seg)  # and encodes back to the same part


def test_bytes_input_and_unpadded_crc() -> None:
    b = SEG.encode()
    crc = crc16(b)
    seg = SEG
    while crc >= 0x1000:  # find a segment whose CRC has a leading zero digit
        seg = seg.replace("12.5", f"{float(seg.split('Avg=')[1].split(',')[0]) + 0.1:.1f}", 1)
        crc = crc16(seg.encode())
    p = decode(f"##{len(seg):04d}{seg}{crc:X}".encode())
    assert p.crc_ok and any("not zero-padded" in x for x in p.deviations)


def test_stray_whitespace_reported() -> None:
    p = decode("  " + _pkt(SEG) + " \r\n")
    assert "stray whitespace around the packet" in p.deviations
    seg = SEG.replace("ST=31;", "ST=31; ")
    p = decode(_pkt(seg))
    assert p.st == "31" and p.pw == "123456"
    assert any("whitespace inside" in x for x in p.deviations)


def test_crc_mismatch_lenient() -> None:
    bad = _pkt(SEG, crc="ABCD")
    with pytest.raises(HJ212Error) as ei:
        decode(bad)
    assert ei.value.reason == "hj212_crc" and "ABCD" in ei.value.detail
    p = decode(bad, require_crc=False)
    assert not p.crc_ok and any("CRC mismatch" in x for x in p.deviations)
    j = decode_json(bad)
    assert j["ok"] is False and j["mn"] == "MN001" and j["error"].startswith("hj212_crc")


def test_missing_closing_ampersands_with_matching_crc() -> None:
    seg = SEG[:-2]
    p = decode(_pkt(seg))
    assert p.crc_ok and "closing '&&' missing" in p.deviations
    assert p.values["a21026"]["Flag"] == "N"


def test_missing_closing_ampersands_ambiguous_is_rejected() -> None:
    with pytest.raises(HJ212Error) as ei:
        decode(_pkt(SEG[:-2], crc="ABCD"), require_crc=False)
    assert ei.value.reason == "hj212_framing"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("", "hj212_framing"),
        ("hello", "hj212_framing"),
        ("##", "hj212_framing"),
        ("##QN=1;CN=2011;CP=&&&&4000", "hj212_framing"),
        ("##123456QN=1;CN=2011;CP=&&&&4000", "hj212_framing"),
        (_pkt("QN=1;ST=31;PW=1;MN=1;CP=&&&&"), "hj212_field"),  # no CN
        (_pkt("QN=1;ST=31;CN=20x1;CP=&&&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;Flag=x;CP=&&&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;CN=2011;CP=&&&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;PNUM=2;CP=&&&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;PNUM=2;PNO=3;CP=&&&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;QN=1"), "hj212_field"),  # no CP
        (_pkt("ST=31;CN=2011;CP=&&a-Rtd=1;a-Rtd=2&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;CP=&&junk&&"), "hj212_field"),
        (_pkt("ST=31;CN=2011;CP=&&DataTime=20261301000000&&"), "hj212_datatime"),
        (_pkt("ST=31;CN=2011;CP=&&DataTime=202601010800&&"), "hj212_datatime"),
        (_pkt("ST=31;CN=2011;CP=&&&&") + "XYZ12", "hj212_framing"),
        (_pkt("ST=31;CN=2011;CP=&&&&", crc=""), "hj212_crc"),
    ],
)
def test_rejections(line: str, reason: str) -> None:
    with pytest.raises(HJ212Error) as ei:
        decode(line)
    assert ei.value.reason == reason, ei.value
    j = decode_json(line)
    assert j["ok"] is False and j["error"].startswith(reason)


def test_non_number_value_dropped_with_deviation() -> None:
    p = decode(_pkt("ST=31;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101080000;a21026-Rtd=,a21026-Flag=N&&"))
    assert p.values == {"a21026": {"Flag": "N"}}
    assert any("not a number" in x for x in p.deviations)
    p = decode(_pkt("ST=31;CN=2011;CP=&&a21026-Rtd=nan,a34013-Rtd=inf&&"))
    assert p.values == {"a21026": {}, "a34013": {}}


def test_datatime_milliseconds() -> None:
    p = decode(_pkt("ST=31;CN=2011;PW=1;MN=1;CP=&&DataTime=20260101080000123;a-Rtd=1&&"))
    assert p.data_time == datetime(2026, 1, 1, 8, 0, 0, 123000, tzinfo=BEIJING)
    assert decode_json(_pkt("ST=31;CN=2011;CP=&&DataTime=20260101080000123&&"))["data_time"] == (
        "2026-01-01T08:00:00.123+08:00"
    )


# ----------------------------------------------------------------------------------------- encoding


def test_encode_fields() -> None:
    pkt = encode(
        qn="20261122080000000",
        st="31",
        cn="2061",
        pw="123456",
        mn="MN001",
        flag=5,
        data_time=datetime(2026, 11, 22, 0, 0, tzinfo=UTC),
        values={"a21026": {"Avg": 12.5, "Flag": "N"}, "a00000": {"Cou": 1e-05}},
    )
    assert pkt.endswith("\r\n")
    seg = pkt[6:-6]
    assert seg == (
        "QN=20261122080000000;ST=31;CN=2061;PW=123456;MN=MN001;Flag=5;"
        "CP=&&DataTime=20261122080000;a21026-Avg=12.5,a21026-Flag=N;a00000-Cou=0.00001&&"
    )
    assert decode(pkt).data_time == datetime(2026, 11, 22, 8, tzinfo=BEIJING)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cn": "2011", "mn": "a;b"},
        {"cn": "2011", "values": {"a": {"Rtd": math.nan}}},
        {"cn": "2011", "values": {"a": {"Flag": "N&&"}}},
        {"cn": "2011", "values": {"a": {"R-td": 1.0}}},
        {"cn": "2011", "flag": 300},
        {"cn": "2011", "pnum": 2},
    ],
)
def test_encode_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(HJ212Error) as ei:
        encode(**kwargs)
    assert ei.value.reason == "hj212_encode"


def test_json_round_trip_and_lines() -> None:
    j = decode_json(_pkt(SEG))
    again = hj212.encode_json(j)
    assert again == _pkt(SEG)
    out = list(hj212.decode_lines([_pkt(SEG) + "\n", "   \n", "garbage\n"]))
    assert len(out) == 2
    assert json.loads(out[0])["ok"] is True and json.loads(out[1])["ok"] is False
    assert list(hj212.encode_lines([out[0], ""])) == [_pkt(SEG)]
    with pytest.raises(HJ212Error, match="line 1"):
        list(hj212.encode_lines(["{not json"]))
    with pytest.raises(HJ212Error, match="line 2"):
        list(hj212.encode_lines([out[0], '{"values": {}}']))


_code = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=8)
_suffix = st.sampled_from(["Rtd", "Min", "Avg", "Max", "ZsRtd", "ZsAvg", "Cou", "RS", "ValidNum"])
_num = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-(10**12), 10**12).map(float)
_group = st.tuples(st.dictionaries(_suffix, _num, max_size=4), st.none() | st.sampled_from(list("NFMSDCTB"))).map(
    lambda t: {**t[0], **({"Flag": t[1]} if t[1] else {})}
)


@settings(max_examples=200, deadline=None)
@given(
    qn=st.none() | st.text("0123456789", min_size=17, max_size=17),
    stc=st.sampled_from(["22", "31", "32", "27", "39", "51"]),
    cn=st.sampled_from(["2011", "2051", "2061", "2031"]),
    pw=st.text("abcdefABCDEF0123456789", max_size=24),
    mn=st.text("abcdefABCDEF0123456789_-", min_size=1, max_size=24),
    flag=st.none() | st.sampled_from([0, 1, 4, 5, 8, 9]),
    dt=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=BEIJING)
    ),
    values=st.dictionaries(_code, _group, max_size=12),
)
def test_round_trip_property(
    qn: str | None,
    stc: str,
    cn: str,
    pw: str,
    mn: str,
    flag: int | None,
    dt: datetime,
    values: dict[str, dict[str, float | str]],
) -> None:
    pkt = encode(qn=qn, st=stc, cn=cn, pw=pw, mn=mn, flag=flag, data_time=dt, values=values)
    p = decode(pkt)
    assert p.crc_ok
    assert (p.qn, p.st, p.cn, p.pw, p.mn, p.flag, p.data_time) == (qn, stc, cn, pw, mn, flag, dt)
    assert p.values == {k: v for k, v in values.items() if v}  # an empty group cannot be written
    assert not any("length" in x or "CRC" in x for x in p.deviations)
    assert encode_packet(p) == pkt
    if cn in ("2011", "2051", "2061", "2031"):
        r = hj212.to_reading(p)
        assert r.value_count == sum(len([s for s in v if s != "Flag"]) for v in values.values())


# ------------------------------------------------------------------------------------------ replies


def _data_packet(flag: int = 5) -> Packet:
    return decode(_pkt(SEG.replace("Flag=5", f"Flag={flag}")))


def test_reply_9014() -> None:
    r = hj212.reply_9014(_data_packet())
    assert r == frame("QN=20260101080000000;ST=91;CN=9014;PW=123456;MN=MN001;Flag=4;CP=&&&&")
    assert decode(r).crc_ok
    r25 = decode(hj212.reply_9014(_data_packet(9)))
    assert r25.flag == 8 and r25.version == "2025"


def test_reply_9011_and_9012() -> None:
    r = decode(hj212.reply_9011(_data_packet(), hj212.QNRTN_CRC_ERROR))
    assert (r.cn, r.st, r.qn, r.mn, r.cp_other) == ("9011", "91", "20260101080000000", "MN001", {"QnRtn": "9"})
    assert hj212.reply_9011(_data_packet(), 3, crlf=False).endswith(
        "CP=&&QnRtn=3&&" + hj212.reply_9011(_data_packet(), 3, crlf=False)[-4:]
    )
    r = decode(hj212.reply_9012(_data_packet(), 1))
    assert r.cn == "9012" and r.cp_other == {"ExeRtn": "1"}


def test_heartbeat() -> None:
    hb = hj212.encode_heartbeat(mn="MN001", pw="123456", st="31", qn="20260101080000000")
    p = decode(hb)
    assert hj212.is_heartbeat(p) and p.flag == 9 and p.version == "2025" and p.needs_reply
    assert p.raw == "QN=20260101080000000;ST=31;CN=9015;PW=123456;MN=MN001;Flag=9;CP=&&&&"
    with pytest.raises(HJ212Error) as ei:
        hj212.to_reading(p)
    assert ei.value.reason == "hj212_not_data"


# ----------------------------------------------------------------------------------------- readings


def test_to_reading() -> None:
    seg = (
        "QN=20260101080000000;ST=31;CN=2011;PW=1;MN=MN001;Flag=5;CP=&&DataTime=20260101080000;"
        "a21026-Rtd=12.5,a21026-ZsRtd=15.1,a21026-Flag=N;SB1-RS=1;a34013-Rtd=3,a34013-Flag=D,a34013-EFlag=x;"
        "RtdInterval=30&&"
    )
    r = hj212.to_reading(decode(_pkt(seg)))
    assert r.stream is Stream.RTD and r.origin == "hj212" and r.mn == "MN001" and r.qn == "20260101080000000"
    assert r.data_time == datetime(2026, 1, 1, 8, tzinfo=BEIJING)
    assert r.measurements["a21026"].values == {"Rtd": 12.5, "ZsRtd": 15.1}
    assert r.measurements["a21026"].flag == "N"
    assert r.measurements["SB1"].values == {"RS": 1.0}
    assert not r.measurements["a34013"].valid
    assert r.extra == {"RtdInterval": "30", "a34013-EFlag": "x"}
    utc = hj212.to_reading(decode(_pkt(seg)), tz=UTC)
    assert utc.data_time == datetime(2026, 1, 1, 8, tzinfo=UTC)


def test_to_reading_errors() -> None:
    with pytest.raises(HJ212Error) as ei:
        hj212.to_reading(decode(_pkt("ST=31;CN=2011;PW=1;MN=1;CP=&&a-Rtd=1&&")))
    assert ei.value.reason == "hj212_datatime"
    with pytest.raises(HJ212Error) as ei:
        hj212.to_reading(decode(_pkt("ST=31;CN=2021;PW=1;MN=1;CP=&&DataTime=20260101080000&&")))
    assert ei.value.reason == "hj212_not_data"


# ---------------------------------------------------------------------------------------- splitting


def _part(pno: int, pnum: int = 3, qn: str = "20260101080000000", mn: str = "MN001") -> Packet:
    seg = (
        f"QN={qn};ST=31;CN=2051;PW=1;MN={mn};Flag=7;PNUM={pnum};PNO={pno};"
        f"CP=&&DataTime=20260101080000;c{pno}-Avg={pno}.5,c{pno}-Flag=N&&"
    )
    return decode(_pkt(seg))


def test_reassembler_combines_in_any_order() -> None:
    r = Reassembler()
    assert r.feed(_part(3)) is None
    assert r.feed(_part(1)) is None
    assert r.pending == 1
    whole = r.feed(_part(2))
    assert whole is not None and r.pending == 0
    assert whole.values == {
        "c1": {"Avg": 1.5, "Flag": "N"},
        "c2": {"Avg": 2.5, "Flag": "N"},
        "c3": {"Avg": 3.5, "Flag": "N"},
    }
    assert whole.pnum is None and whole.flag == 5 and whole.crc_ok
    single = decode(_pkt(SEG))
    assert r.feed(single) is single


def test_reassembler_is_bounded() -> None:
    r = Reassembler(max_pending=2, max_age_packets=5, ttl_s=10.0)
    r.feed(_part(1, qn="00000000000000001"), now=0.0)
    r.feed(_part(1, qn="00000000000000002"), now=1.0)
    r.feed(_part(1, qn="00000000000000003"), now=2.0)  # evicts ...001
    assert r.pending == 2 and r.dropped == 1
    r.expire(now=11.5)  # ...002 started at 1.0: expired; ...003 at 2.0: not yet
    assert r.pending == 1 and r.dropped == 2
    for _ in range(6):
        r.feed(decode(_pkt(SEG)))
    assert r.pending == 0 and r.dropped == 3
    with pytest.raises(HJ212Error) as ei:
        Reassembler(max_parts=10).feed(_part(1, pnum=11))
    assert ei.value.reason == "hj212_split"


# ------------------------------------------------------------------------------------ stream framer


def _frames(out: list[bytes | FramingError]) -> list[bytes]:
    return [x for x in out if isinstance(x, bytes)]


def _errors(out: list[bytes | FramingError]) -> list[str]:
    return [x.reason for x in out if isinstance(x, FramingError)]


def test_framer_fragments_and_batches() -> None:
    a, b = _pkt(SEG).encode(), _pkt(SEG.replace("MN001", "MN002")).encode()
    data = a + b"\r\n" + b + b"\r\n"
    f = StreamFramer()
    got: list[bytes | FramingError] = []
    for i in range(len(data)):  # byte by byte
        got += f.feed(data[i : i + 1])
    assert got == [a, b] and f.buffered == 0
    assert StreamFramer().feed(data + data) == [a, b, a, b]


def test_framer_garbage_truncation_and_oversize() -> None:
    a = _pkt(SEG).encode()
    f = StreamFramer()
    out = f.feed(b"\r\nHELLO" + a + b"\r\n")
    assert _frames(out) == [a] and _errors(out) == ["hj212_garbage"]
    out = f.feed(b"##0100QN=cut" + a + b"\r\n")
    assert _frames(out) == [a] and _errors(out) == ["hj212_truncated"]
    # oversize without terminator: discarded, then resync on the next '##'
    out = f.feed(b"##9999" + b"x" * 3000)
    assert _errors(out) == ["hj212_oversize"] and f.buffered < 1100
    out = f.feed(b"y" * 5000 + b"\r\n" + a + b"\r\n")
    assert _frames(out) == [a] and _errors(out) == []
    # oversize with terminator in the same read
    out = StreamFramer(max_data_bytes=100).feed(b"##0200" + b"z" * 150 + b"\r\n" + a + b"\n")
    assert _errors(out) == ["hj212_oversize", "hj212_oversize"]  # a itself has > 100 data bytes
    out = StreamFramer(max_data_bytes=100).feed(b"##0200" + b"z" * 150 + b"\r\n##0003abc\r\n")
    assert _errors(out) == ["hj212_oversize"] and _frames(out) == [b"##0003abc"]
    # a lone '#' at the end of a read is kept
    f = StreamFramer()
    assert f.feed(b"junk#") == [] or True
    assert _frames(f.feed(a[1:] + b"\r\n")) == [a]


@given(st.lists(st.binary(max_size=200), max_size=30))
def test_framer_never_grows_unbounded(chunks: list[bytes]) -> None:
    f = StreamFramer(max_data_bytes=64)
    for c in chunks:
        for x in f.feed(c):
            assert isinstance(x, bytes | FramingError)
            if isinstance(x, bytes):
                assert x.startswith(b"##") and len(x) <= f.max_frame
        assert f.buffered <= f.max_frame + 2
