"""Decoding HJ 212 packets: the lenient full decoder, the fast path for clean packets, the JSON view
(``cems hj212 decode``) and the :class:`cems.model.Reading` of a data packet.

Pure, no I/O.  :func:`decode` first tries :func:`_decode_fast`, which takes only packets the full decoder
would accept without any deviation, and otherwise runs the full :func:`_decode`, so reasons and deviations
are always the full decoder's own (guarded by the differential test ``tests/unit/test_hj212_fast_path.py``).
Measured (docs/benchmark.md, "Replay and decode speed"): :func:`fast_reading` ≈ 20 µs per 10-value
packet against ≈ 37 µs for :func:`decode` + :func:`to_reading`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, tzinfo
from typing import Any, Final

from cems.errors import HJ212Error
from cems.model import BEIJING, CN_STREAM, Measurement, Reading, new_reading
from cems.protocol.hj212._codes import is_2005, map_2005
from cems.protocol.hj212._crc import crc16, crc16_modbus_swapped
from cems.protocol.hj212._packet import (
    _DIGITS,
    _HEADER_RANK,
    _HEX,
    _TEXT_SUFFIXES,
    _VERSIONS,
    MAX_DATA_BYTES,
    Packet,
    _is_digits,
    _snippet,
)


def _parse_datatime(raw: str, deviations: list[str]) -> datetime:
    n = len(raw)
    if n not in (14, 17) or not _is_digits(raw):
        raise HJ212Error("hj212_datatime", f"DataTime {_snippet(raw)} is not YYYYMMDDhhmmss (14 digits, or 17 with ms)")
    try:
        dt = datetime(
            int(raw[0:4]),
            int(raw[4:6]),
            int(raw[6:8]),
            int(raw[8:10]),
            int(raw[10:12]),
            int(raw[12:14]),
            int(raw[14:17]) * 1000 if n == 17 else 0,
            tzinfo=BEIJING,
        )
    except ValueError:
        raise HJ212Error("hj212_datatime", f"DataTime {raw!r} is not a valid date and time") from None
    if n == 17:
        deviations.append("DataTime has milliseconds (17 digits)")
    return dt


def decode(line: str | bytes, *, require_crc: bool = True, accept_modbus_crc: bool = False) -> Packet:
    """Decode one packet (``##`` ... CRC, with or without the trailing CRLF).

    With ``require_crc=False`` a missing or wrong CRC is reported in ``deviations`` (``crc_ok`` False)
    instead of raising.  ``accept_modbus_crc=True`` accepts a byte-swapped CRC-16/MODBUS (still
    ``crc_ok`` False, with a deviation).  Raises only :class:`HJ212Error`.
    """
    if isinstance(line, str):
        text: str | None = line
    elif isinstance(line, bytes):
        try:
            text = line.decode("ascii")  # ASCII: the same text and bytes as the UTF-8 path below
        except UnicodeDecodeError:
            text = None
    else:
        text = None
    if text is not None:
        try:
            fast = _decode_fast(text)
        except Exception:  # pragma: no cover - the fast path never raises; the full decoder decides
            fast = None
        if fast is not None:
            return fast
    try:
        return _decode(line, require_crc, accept_modbus_crc)
    except HJ212Error:
        raise
    except Exception as e:  # pragma: no cover - safety net: the contract is "only HJ212Error"
        raise HJ212Error("hj212_field", f"cannot interpret packet: {type(e).__name__}: {e}") from None


#: What the fast path parsed: (cn, qn, st, pw, mn, flag, segment, CP body).
_Head = tuple[str, str, str, str, str, int, str, str]


#: The header :func:`_fast_head` takes: ``QN;ST;CN;PW;MN;Flag`` in this order, then ``;`` (before ``CP=&&``); a
#: 17-digit QN, digits for ST and CN, a non-empty PW and MN, a Flag of 1 to 3 digits (the segment is ASCII).
_HEAD: Final = re.compile(r"QN=([0-9]{17});ST=([0-9]+);CN=([0-9]+);PW=([^;]+);MN=([^;]+);Flag=([0-9]{1,3});")


def _fast_head(text: str) -> _Head | None:
    """Framing, CRC and header of a packet that :func:`_decode` accepts *without any deviation*, else ``None``.

    The fast path (:func:`_decode_fast`, :func:`fast_reading`) takes only: ASCII, a 4-digit length field equal
    to the segment length (≤ :data:`MAX_DATA_BYTES`), the matching upper-case 4-digit CRC, no whitespace,
    the header ``QN;ST;CN;PW;MN;Flag`` in this order with valid values (no PNUM/PNO, D bit clear, known
    version bits).  Everything else goes to the full, lenient :func:`_decode`, so reasons and deviations
    stay exactly its own.  Must not raise.
    """
    s = text.rstrip("\r\n")
    if s[:2] != "##":
        return None
    rest = s[6:]
    cp_at = rest.find("CP=&&")
    if cp_at < 0:
        return None
    j = rest.rfind("&&")
    if j < cp_at + 5 or len(rest) != j + 6:
        return None
    segment = rest[: j + 2]
    n = len(segment)
    if n > MAX_DATA_BYTES or s[2:6] != f"{n:04d}" or not segment.isascii():
        return None
    if " " in segment or "\t" in segment:
        return None
    if rest[j + 2 :] != f"{crc16(segment.encode('ascii')):04X}":
        return None
    head = _HEAD.fullmatch(segment, 0, cp_at)  # (one C call for the header's order, names and values)
    if head is None:
        return None
    qn, st, cn, pw, mn, flag_text = head.groups()
    flag = int(flag_text)
    if flag > 255 or flag & 2 or (flag >> 2) not in _VERSIONS:
        return None
    cp_body = segment[cp_at + 5 : n - 2]
    if cp_body[-1:] == ";":
        return None
    return cn, qn, st, pw, mn, flag, segment, cp_body


def _fast_datatime(raw: str, tz: tzinfo) -> datetime | None:
    key = (raw, tz)
    dt = _DATATIMES.get(key)
    if dt is not None:
        return dt
    if len(raw) != 14 or not raw.isdigit():
        return None
    try:
        dt = datetime(
            int(raw[0:4]), int(raw[4:6]), int(raw[6:8]), int(raw[8:10]), int(raw[10:12]), int(raw[12:14]), tzinfo=tz
        )
    except ValueError:
        return None
    if len(_DATATIMES) >= _DATATIMES_MAX:
        _DATATIMES.clear()
    _DATATIMES[key] = dt
    return dt


#: DataTime text (and zone) → datetime: the outlets of a city send the same few data times (every 30 s, each
#: minute ...) at once, so most packets find theirs here (datetimes are immutable: shared safely).
_DATATIMES: dict[tuple[str, tzinfo], datetime] = {}
_DATATIMES_MAX: Final = 4096


def _decode_fast(text: str) -> Packet | None:
    """:func:`_decode` of a packet without deviations (see :func:`_fast_head`), else ``None``."""
    head = _fast_head(text)
    if head is None:
        return None
    cn, qn, st, pw, mn, flag, segment, cp_body = head
    values: dict[str, dict[str, float | str]] = {}
    cp_other: dict[str, str] = {}
    dt_raw: str | None = None
    if cp_body:
        if "_" in cp_body:  # float() takes "1_0", the decoder does not: leave it to the full path
            return None
        values_get = values.get
        text_suffixes = _TEXT_SUFFIXES
        for item in cp_body.replace(";", ",").split(","):
            k, sep, v = item.partition("=")
            if not sep:
                return None
            code, dash, suffix = k.rpartition("-")
            if dash:
                if not code or not suffix:
                    return None
                d = values_get(code)
                if d is None:
                    d = values[code] = {}
                elif suffix in d:
                    return None
                if suffix in text_suffixes or suffix[-4:] == "Flag":
                    d[suffix] = v
                    continue
                try:
                    x = float(v)
                except ValueError:
                    return None
                if x - x != 0.0:  # not finite
                    return None
                d[suffix] = x
            elif k == "DataTime":
                if dt_raw is not None:
                    return None
                dt_raw = v
            else:
                if not k or k in cp_other:
                    return None
                cp_other[k] = v
    data_time: datetime | None = None
    if dt_raw is not None:
        data_time = _fast_datatime(dt_raw, BEIJING)
        if data_time is None:
            return None
    return Packet(
        cn=cn,
        qn=qn,
        st=st,
        pw=pw,
        mn=mn,
        flag=flag,
        data_time=data_time,
        values=values,
        cp_other=cp_other,
        raw=segment,
    )


#: What :func:`fast_reading` does with a CP key: a number ``{code}-{suffix}``, the flag ``{code}-Flag``, the
#: ``DataTime``, another key (``extra``), or nothing it takes (the full path decides).
_NUM: Final = 0
_FLAG: Final = 1
_DATATIME: Final = 2
_EXTRA: Final = 3
_REFUSE: Final = 4
_KeySpec = tuple[int, str, str]
#: CP key → (kind, code, suffix): a city's packets carry the same few keys, so each is split and classified
#: once, not once per packet (bounded against floods of invented keys).
_KEYS: dict[str, _KeySpec] = {}
_KEYS_MAX: Final = 4096


def _key_spec(k: str) -> _KeySpec:
    """How :func:`fast_reading` takes the CP key ``k`` (remembered in :data:`_KEYS`)."""
    code, dash, suffix = k.rpartition("-")
    spec: _KeySpec
    if dash:
        if not code or not suffix:
            spec = (_REFUSE, "", "")
        elif suffix == "Flag":
            spec = (_FLAG, sys.intern(code), suffix)
        elif suffix in _TEXT_SUFFIXES or suffix[-4:] == "Flag":
            spec = (_REFUSE, "", "")
        else:
            spec = (_NUM, sys.intern(code), sys.intern(suffix))
    elif k == "DataTime":
        spec = (_DATATIME, "", "")
    elif not k:
        spec = (_REFUSE, "", "")
    else:
        spec = (_EXTRA, "", "")
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[k] = spec
    return spec


def fast_reading(text: str, tz: tzinfo = BEIJING) -> tuple[str, str, Reading] | None:
    """``(MN, PW, to_reading(decode(text), tz))`` for the common, deviation-free data packet, else ``None``.

    For hot paths (``cems replay``): skips the :class:`Packet`.  ``None`` means "use :func:`decode` and
    :func:`to_reading`" (which give the reason of a rejection); it never means the packet is bad.  Only
    ``Flag`` text values are taken (other text suffixes go to ``None``).  Must not raise.
    """
    try:
        head = _fast_head(text)
        if head is None:
            return None
        cn, qn, _st, pw, mn, flag, _segment, cp_body = head
        stream = CN_STREAM.get(cn)
        if stream is None or not cp_body or "_" in cp_body:
            return None
        nums: dict[str, dict[str, float]] = {}
        flags: dict[str, str] = {}
        extra: dict[str, str] = {}
        dt_raw: str | None = None
        nums_get = nums.get
        keys_get = _KEYS.get
        for item in cp_body.replace(";", ",").split(","):
            k, sep, v = item.partition("=")
            if not sep:
                return None
            spec = keys_get(k)
            if spec is None:
                spec = _key_spec(k)
            kind, code, suffix = spec
            if kind == _NUM:
                d = nums_get(code)
                if d is None:
                    d = nums[code] = {}
                elif suffix in d:
                    return None
                x = float(v)  # ValueError: not a number, the full path decides
                if x - x != 0.0:
                    return None
                d[suffix] = x
            elif kind == _FLAG:
                if code not in nums:
                    nums[code] = {}
                if code in flags:
                    return None
                flags[code] = v
            elif kind == _DATATIME:
                if dt_raw is not None:
                    return None
                dt_raw = v
            elif kind == _EXTRA:
                if k in extra:
                    return None
                extra[k] = v
            else:
                return None
        if dt_raw is None:
            return None
        dt = _fast_datatime(dt_raw, tz)
        if dt is None:
            return None
        flags_get = flags.get
        new = tuple.__new__  # (Measurement(...) without the Python frame of its __new__)
        # (the codes are interned by _key_spec: kept as keys in per-outlet state, one copy each)
        measurements = {code: new(Measurement, (code, d, flags_get(code))) for code, d in nums.items()}
        if flag < 4:  # HJ/T 212-2005 (version bits 0): its codes become 2017 codes, as in to_reading
            measurements = map_2005(measurements)
        return mn, pw, new_reading(mn, stream, dt, measurements, qn, "hj212", extra)  # (Reading(...), faster)
    except Exception:
        return None


def _decode(line: str | bytes, require_crc: bool, accept_modbus_crc: bool) -> Packet:
    deviations: list[str] = []
    enc = "utf-8"
    if isinstance(line, str):
        text = line
    elif isinstance(line, bytes | bytearray | memoryview):
        data = bytes(line)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = data.decode("gb18030")
            except UnicodeDecodeError:
                raise HJ212Error("hj212_framing", "packet is neither UTF-8 nor GB18030 text") from None
            enc = "gb18030"
            deviations.append("packet is GB18030 text, not ASCII/UTF-8")
    else:
        raise HJ212Error("hj212_framing", f"expected str or bytes, got {type(line).__name__}")

    s = text.rstrip("\r\n")
    stripped = s.strip()
    if stripped != s:
        deviations.append("stray whitespace around the packet")
        s = stripped
    if not s.startswith("##"):
        raise HJ212Error("hj212_framing", f"packet does not start with '##': {_snippet(s)}")
    n = len(s)
    i = 2
    while i < n and i < 7 and s[i] in _DIGITS:
        i += 1
    ndig = i - 2
    if ndig == 0:
        raise HJ212Error("hj212_framing", f"no length field after '##': {_snippet(s)}")
    if ndig > 4:
        raise HJ212Error("hj212_framing", f"length field has more than 4 digits: {_snippet(s)}")
    declared = int(s[2:i])
    if ndig < 4:
        deviations.append(f"length field {s[2:i]!r} not zero-padded to 4 digits")
    rest = s[i:]

    cp_at = rest.find("CP=&&")
    if cp_at < 0:
        raise HJ212Error("hj212_field", "no 'CP=&&' in the data segment")
    cp_start = cp_at + 5
    closing = True
    crc_text: str | None = None
    j = rest.rfind("&&")
    if j >= cp_start:
        tail = rest[j + 2 :]
        if tail:
            if len(tail) <= 4 and all(c in _HEX for c in tail):
                crc_text = tail
            else:
                raise HJ212Error("hj212_framing", f"text after closing '&&' is not a CRC: {_snippet(tail)}")
        segment = rest[: j + 2]
        cp_body = rest[cp_start:j]
    else:
        closing = False
        deviations.append("closing '&&' missing")
        tail4 = rest[-4:]
        if len(rest) - cp_start >= 4 and all(c in _HEX for c in tail4):
            crc_text = tail4
            segment = rest[:-4]
        else:
            segment = rest
        cp_body = segment[cp_start:]

    try:
        seg_bytes = segment.encode(enc, "surrogatepass")
    except UnicodeEncodeError:
        raise HJ212Error("hj212_framing", "data segment cannot be encoded") from None
    actual = len(seg_bytes)
    if actual > 9999:
        raise HJ212Error("hj212_length", f"data segment is {actual} bytes, more than a length field can hold")

    # CRC
    if crc_text is None:
        crc_ok = False
        if require_crc:
            raise HJ212Error("hj212_crc", "packet has no CRC")
        deviations.append("no CRC")
    else:
        got = int(crc_text, 16)
        computed = crc16(seg_bytes)
        crc_ok = got == computed
        if not crc_ok:
            if got == crc16_modbus_swapped(seg_bytes):
                msg = f"CRC {crc_text} is a byte-swapped CRC-16/MODBUS, not the HJ 212 CRC ({computed:04X})"
                if require_crc and not accept_modbus_crc:
                    raise HJ212Error("hj212_crc", msg)
                deviations.append(msg)
            elif not closing:
                raise HJ212Error(
                    "hj212_framing",
                    f"closing '&&' missing and the last 4 characters {crc_text!r} are not a matching CRC: "
                    "cannot tell where the data ends",
                )
            else:
                msg = f"CRC mismatch: packet says {crc_text}, computed {computed:04X}"
                if require_crc:
                    raise HJ212Error("hj212_crc", msg)
                deviations.append(msg)
        if len(crc_text) < 4:
            deviations.append(f"CRC {crc_text!r} not zero-padded to 4 digits")
        if not crc_text.isupper() and not crc_text.isdigit():
            deviations.append("lower-case CRC")

    if declared != actual:
        deviations.append(f"length field {declared} but data segment is {actual} bytes")
    if actual > MAX_DATA_BYTES:
        deviations.append(f"data segment of {actual} bytes exceeds the {MAX_DATA_BYTES}-byte maximum")

    ws = (" " in segment) or ("\t" in segment)
    if ws:
        deviations.append("stray whitespace inside the data segment")

    # Header
    header = segment[:cp_at]
    if header and not header.endswith(";"):
        raise HJ212Error("hj212_field", f"no ';' before 'CP=': {_snippet(header[-20:])}")
    hdr: dict[str, str] = {}
    ranks: list[int] = []
    for item in header.split(";"):
        if not item:
            continue
        k, sep, v = item.partition("=")
        if ws:
            k = k.strip()
            v = v.strip()
        if not sep:
            raise HJ212Error("hj212_field", f"header item {_snippet(item)} has no '='")
        if k in hdr:
            raise HJ212Error("hj212_field", f"duplicate header field {k}")
        hdr[k] = v
        r = _HEADER_RANK.get(k)
        if r is None:
            deviations.append(f"unknown header field {_snippet(k, 20)} ignored")
        else:
            ranks.append(r)
    if ranks != sorted(ranks):
        deviations.append("header fields out of standard order: " + ";".join(hdr))

    cn = hdr.get("CN")
    if cn is None:
        raise HJ212Error("hj212_field", "missing CN")
    if not _is_digits(cn):
        raise HJ212Error("hj212_field", f"CN {_snippet(cn)} is not a number")
    st = hdr.get("ST")
    if st is None:
        deviations.append("missing ST")
    elif not _is_digits(st):
        raise HJ212Error("hj212_field", f"ST {_snippet(st)} is not a number")
    qn = hdr.get("QN")
    if qn is None:
        deviations.append("missing QN")
    elif len(qn) != 17 or not _is_digits(qn):
        deviations.append(f"QN {_snippet(qn)} is not 17 digits")
    pw = hdr.get("PW")
    mn = hdr.get("MN")
    for name, val in (("PW", pw), ("MN", mn)):
        if val is None:
            deviations.append(f"missing {name}")
        elif not val:
            deviations.append(f"empty {name}")
    flag: int | None = None
    flag_text = hdr.get("Flag")
    if flag_text is None:
        deviations.append("missing Flag")
    else:
        if not _is_digits(flag_text) or len(flag_text) > 3 or int(flag_text) > 255:
            raise HJ212Error("hj212_field", f"Flag {_snippet(flag_text)} is not a number 0-255")
        flag = int(flag_text)
        if (flag >> 2) not in _VERSIONS:
            deviations.append(f"Flag {flag}: unknown protocol version bits {flag >> 2}")
    pnum_t, pno_t = hdr.get("PNUM"), hdr.get("PNO")
    pnum: int | None = None
    pno: int | None = None
    if pnum_t is not None or pno_t is not None:
        if pnum_t is None or pno_t is None:
            raise HJ212Error("hj212_field", "PNUM and PNO must come together")
        if not (_is_digits(pnum_t) and _is_digits(pno_t)) or len(pnum_t) > 4 or len(pno_t) > 4:
            raise HJ212Error("hj212_field", f"PNUM {_snippet(pnum_t)} / PNO {_snippet(pno_t)} not numbers")
        pnum, pno = int(pnum_t), int(pno_t)
        if not 1 <= pno <= pnum:
            raise HJ212Error("hj212_field", f"PNO {pno} outside 1..PNUM {pnum}")
        if flag is not None and not flag & 2:
            deviations.append("PNUM/PNO present but Flag D bit not set")
    elif flag is not None and flag & 2:
        deviations.append("Flag D bit set but no PNUM/PNO")

    # CP
    values: dict[str, dict[str, float | str]] = {}
    cp_other: dict[str, str] = {}
    dt_raw: str | None = None
    dropped: list[str] = []
    if cp_body:
        dt_raw = _parse_cp(cp_body, ws, values, cp_other, deviations, dropped)
    data_time = _parse_datatime(dt_raw, deviations) if dt_raw is not None else None

    return Packet(
        cn=cn,
        qn=qn,
        st=st,
        pw=pw,
        mn=mn,
        flag=flag,
        pnum=pnum,
        pno=pno,
        data_time=data_time,
        values=values,
        cp_other=cp_other,
        crc_ok=crc_ok,
        deviations=deviations,
        raw=segment,
        dropped=tuple(dropped),
    )


_NUMERIC_TAILS: Final = ("Rtd", "Avg", "Min", "Max", "Cou")


def _parse_cp(
    cp_body: str,
    ws: bool,
    values: dict[str, dict[str, float | str]],
    cp_other: dict[str, str],
    deviations: list[str],
    dropped: list[str],
) -> str | None:
    """Parse the CP items into ``values`` / ``cp_other`` (numeric items that are not finite numbers into
    ``dropped``); returns the raw DataTime (hot loop: keep lean)."""
    dt_raw: str | None = None
    if cp_body[-1] == ";":
        deviations.append("trailing ';' before closing '&&'")
        cp_body = cp_body[:-1]
    values_get = values.get
    text_suffixes = _TEXT_SUFFIXES
    empty_reported = False
    for item in cp_body.replace(";", ",").split(","):
        k, sep, v = item.partition("=")
        if ws:
            k = k.strip()
            v = v.strip()
        if not sep:
            if not item or (ws and not k):
                if not empty_reported:
                    deviations.append("empty item or ';' group in CP")
                    empty_reported = True
                continue
            raise HJ212Error("hj212_field", f"CP item {_snippet(item)} has no '='")
        code, dash, suffix = k.rpartition("-")
        if dash:
            if not code or not suffix:
                raise HJ212Error("hj212_field", f"CP key {_snippet(k)} is not code-suffix")
            d = values_get(code)
            if d is None:
                d = values[code] = {}
            elif suffix in d:
                raise HJ212Error("hj212_field", f"duplicate CP item {k}")
            if suffix in text_suffixes or suffix[-4:] == "Flag":
                d[suffix] = v
                continue
            try:
                x = float(v)
            except ValueError:
                x = math.nan
            if x - x == 0.0 and "_" not in v:  # finite
                d[suffix] = x
            elif suffix[-3:] in _NUMERIC_TAILS or suffix in ("RS", "ValidNum", "TotalNum"):
                deviations.append(f"{k}={_snippet(v, 20)} is not a number: dropped")
                dropped.append(k)
            else:
                d[suffix] = v
        elif k == "DataTime":
            if dt_raw is not None and v != dt_raw:
                raise HJ212Error("hj212_field", "two different DataTime values")
            dt_raw = v
        else:
            if not k:
                raise HJ212Error("hj212_field", f"CP item {_snippet(item)} has an empty name")
            if k in cp_other:
                raise HJ212Error("hj212_field", f"duplicate CP item {k}")
            cp_other[k] = v
    return dt_raw


# --------------------------------------------------------------------------------------- JSON view


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.isoformat(timespec="milliseconds" if dt.microsecond else "seconds")


def packet_json(p: Packet, *, ok: bool = True) -> dict[str, Any]:
    """The CLI JSON object of a decoded packet (see :func:`decode_json`)."""
    return {
        "ok": ok,
        "crc_ok": p.crc_ok,
        "version": p.version,
        "qn": p.qn,
        "st": p.st,
        "cn": p.cn,
        "pw": p.pw,
        "mn": p.mn,
        "flag": p.flag,
        "pnum": p.pnum,
        "pno": p.pno,
        "data_time": _iso(p.data_time),
        "values": {code: dict(sv) for code, sv in p.values.items()},
        "deviations": list(p.deviations),
    }


def _empty_json() -> dict[str, Any]:
    return {
        "ok": False,
        "crc_ok": False,
        "version": None,
        "qn": None,
        "st": None,
        "cn": None,
        "pw": None,
        "mn": None,
        "flag": None,
        "pnum": None,
        "pno": None,
        "data_time": None,
        "values": {},
        "deviations": [],
    }


def decode_json(line: str | bytes, *, require_crc: bool = True) -> dict[str, Any]:
    """Decode to the CLI JSON object; never raises.

    Keys: ``ok``, ``crc_ok``, ``version``, ``qn``, ``st``, ``cn``, ``pw``, ``mn``, ``flag``, ``pnum`` and ``pno``
    (the part of a split packet: PNUM parts in all, this is part PNO; ``null`` when not split), ``data_time``
    (ISO 8601 with offset), ``values``, ``deviations`` and, when ``ok`` is false, ``error``
    (``"reason: detail"``).  A packet rejected only for its CRC still shows its fields.
    """
    try:
        return packet_json(decode(line, require_crc=require_crc))
    except HJ212Error as e:
        out: dict[str, Any] | None = None
        if e.reason == "hj212_crc":
            try:
                out = packet_json(decode(line, require_crc=False), ok=False)
            except HJ212Error:
                out = None
        if out is None:
            out = _empty_json()
        out["error"] = str(e)
        return out
    except Exception as e:  # pragma: no cover - decode raises only HJ212Error
        out = _empty_json()
        out["error"] = f"hj212_field: {type(e).__name__}: {e}"
        return out


def decode_lines(lines: Iterable[str], *, require_crc: bool = True) -> Iterator[str]:
    """One JSON line per non-blank input line (``cems hj212 decode``)."""
    for line in lines:
        if not line.strip():
            continue
        yield json.dumps(decode_json(line, require_crc=require_crc), ensure_ascii=False)


# ----------------------------------------------------------------------------------------- reading


def to_reading(packet: Packet, tz: tzinfo = BEIJING) -> Reading:
    """A :class:`cems.model.Reading` from a data packet (CN 2011/2051/2061/2031), ``origin="hj212"``.

    ``tz`` reinterprets the DataTime wall clock (HJ 212 times are Beijing time).  Numeric suffixes become
    :attr:`Measurement.values`, ``Flag`` the measurement flag; other text values and non-pollutant CP items
    go to :attr:`Reading.extra` (``code-suffix`` / name → text, the code as sent).  The codes of an HJ/T
    212-2005 packet (Flag version 0, or no Flag) become their HJ 212-2017 codes (``02`` → ``a21026``; the table
    is ``cems/protocol/hj212_2005_codes.toml``), so a 2005 device's SO2 meets its limit and counts for its rate.
    """
    stream = CN_STREAM.get(packet.cn)
    if stream is None:
        raise HJ212Error("hj212_not_data", f"CN {packet.cn} is not a data upload (2011/2051/2061/2031)")
    if packet.data_time is None:
        raise HJ212Error("hj212_datatime", f"CN {packet.cn} packet has no DataTime")
    if not packet.mn:
        raise HJ212Error("hj212_field", "data packet without MN")
    dt = packet.data_time if tz is BEIJING else packet.data_time.replace(tzinfo=tz)
    extra: dict[str, str] = dict(packet.cp_other)
    measurements: dict[str, Measurement] = {}
    for code, sv in packet.values.items():
        nums: dict[str, float] = {}
        flag: str | None = None
        for suffix, v in sv.items():
            if isinstance(v, float):
                nums[suffix] = v
            elif suffix == "Flag":
                flag = v
            else:
                extra[f"{code}-{suffix}"] = v
        code = sys.intern(code)  # kept as a key in per-outlet state: one copy of each code, not one per message
        measurements[code] = Measurement(code, nums, flag)
    if is_2005(packet.flag):
        measurements = map_2005(measurements)
    return Reading(
        mn=packet.mn,
        stream=stream,
        data_time=dt,
        measurements=measurements,
        qn=packet.qn,
        origin="hj212",
        extra=extra,
        dropped=packet.dropped,
    )
