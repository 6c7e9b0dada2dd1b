"""HJ 212 codec (HJ/T 212-2005, HJ 212-2017, HJ 212-2025): pure, no I/O.

Packet layout (DOMAIN.md §2)::

    ##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=...;Flag=5;CP=&&RtdInterval=30&&1C80\\r\\n
      ^^^^ length of the data segment (bytes)                                            ^^^^ CRC

Decoding is lenient where real devices deviate (wrong/unpadded length field, lower-case or unpadded CRC,
DataTime with milliseconds, missing Flag, header fields out of order, trailing ``;`` before ``&&``, missing
closing ``&&`` when the CRC proves where the data ends, a byte-swapped CRC-16/MODBUS) and reports every
deviation in :attr:`Packet.deviations`; it rejects what cannot be interpreted without guessing, always with
:class:`HJ212Error` (a :class:`cems.errors.RejectedMessage`) and a stable ``reason`` code:

``hj212_framing``  no ``##``, no length field, text after the closing ``&&`` that is not a CRC, ...
``hj212_crc``      missing or wrong CRC (unless ``require_crc=False``)
``hj212_length``   data segment longer than a 4-digit length field can express
``hj212_field``    missing CN, malformed or duplicate fields, bad Flag/PNUM/PNO
``hj212_datatime`` DataTime that is not a valid ``YYYYMMDDhhmmss[zzz]`` Beijing time
``hj212_not_data`` :func:`to_reading` on a packet that is not a data upload
``hj212_encode``   :func:`encode` / :func:`encode_json` given something that cannot be written
``hj212_garbage`` / ``hj212_oversize`` / ``hj212_truncated``  reported by :class:`StreamFramer`
``hj212_split``    :class:`Reassembler` gave up on an incomplete split packet
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Final

from cems.errors import FramingError, HJ212Error
from cems.model import BEIJING, CN_STREAM, Measurement, Reading

__all__ = [
    "MAX_DATA_BYTES",
    "FramingError",
    "HJ212Error",
    "Packet",
    "Reassembler",
    "StreamFramer",
    "crc16",
    "crc16_modbus_swapped",
    "decode",
    "decode_json",
    "decode_lines",
    "encode",
    "encode_heartbeat",
    "encode_json",
    "encode_lines",
    "encode_packet",
    "fast_reading",
    "frame",
    "is_heartbeat",
    "packet_json",
    "reply_9011",
    "reply_9012",
    "reply_9014",
    "to_reading",
]

#: Maximum data-segment length in the standard (bytes).
MAX_DATA_BYTES: Final = 1024

# QnRtn codes of CN 9011 (request reply).
QNRTN_READY: Final = 1
QNRTN_REJECTED: Final = 2
QNRTN_PW_ERROR: Final = 3
QNRTN_MN_ERROR: Final = 4
QNRTN_ST_ERROR: Final = 5
QNRTN_FLAG_ERROR: Final = 6
QNRTN_QN_ERROR: Final = 7
QNRTN_CN_ERROR: Final = 8
QNRTN_CRC_ERROR: Final = 9
QNRTN_UNKNOWN: Final = 100

CN_HEARTBEAT: Final = "9015"

_VERSIONS: Final = {0: "2005", 1: "2017", 2: "2025"}
_VERSION_BITS: Final = {v: k for k, v in _VERSIONS.items()}
_HEADER_ORDER: Final = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_HEADER_RANK: Final = {k: i for i, k in enumerate(_HEADER_ORDER)}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_DIGITS: Final = frozenset("0123456789")
#: Suffixes whose value is text, never a number.
_TEXT_SUFFIXES: Final = frozenset({"Flag", "EFlag", "SampleTime", "Info"})
#: Characters that cannot appear in a written name or value.
_RESERVED: Final = frozenset(";,=&\r\n")


# --------------------------------------------------------------------------------------------- CRC


def _make_table() -> tuple[list[int], list[int]]:
    table: list[int] = []
    for x in range(256):
        c = x
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table, [t >> 8 for t in table]


_T, _H = _make_table()


def _make_fold_tables() -> tuple[list[list[bytes]], list[int], list[int]]:
    # The per-byte step h -> _H[h ^ b] is linear over GF(2)^8 (h ^ b, then a CRC table) and _H has order 8
    # (_H applied 8 times is the identity: asserted below).  After m bytes from h0:
    #     h_m = _H^m(h0) ^ XOR_k _H^(m-k)(b_k)       and  _H^j = _H^(j mod 8)
    # so the bytes only matter XOR-ed together by k mod 8: fold the data, read as a little-endian integer,
    # down to 64 bits (C-level big-int operations), then 8 look-ups.
    powers = [list(range(256))]
    for _ in range(8):
        powers.append([_H[x] for x in powers[-1]])
    if powers[8] != powers[0]:  # pragma: no cover - a property of the HJ 212 CRC, checked at import
        raise AssertionError("HJ 212 CRC byte step does not have order 8")
    tables = [[bytes(powers[(m8 - s) % 8]) for s in range(8)] for m8 in range(8)]
    init = [powers[m8][0xFF] for m8 in range(8)]
    masks = [(1 << (64 << i)) - 1 for i in range(16)]
    return tables, init, masks


_FOLD_TABLES, _FOLD_INIT, _FOLD_MASKS = _make_fold_tables()


def crc16(data: bytes) -> int:
    """HJ 212 "ANSI CRC16" (appendix A) of the data segment.

    Per byte ``crc = (crc >> 8) ^ byte`` then eight reflected shifts with 0xA001; because the first step
    leaves only 8 significant bits, each byte reduces to one table look-up: ``crc = T[(crc >> 8) ^ byte]``,
    i.e. ``h = H[h ^ byte]`` on the high byte ``h``.  ``H`` is linear and of order 8, so all but the last
    byte are XOR-folded by position mod 8 with big-integer operations and finished with 8 look-ups
    (equivalent to the byte loop; see ``_make_fold_tables``).
    """
    n = len(data)
    if n < 2:
        return _T[0xFF ^ data[0]] if n else 0xFFFF
    m = n - 1
    x = int.from_bytes(data[:m], "little")
    t = ((m - 1) >> 3).bit_length()  # 64 << t bits hold the m bytes
    masks = _FOLD_MASKS
    if t >= len(masks):  # more than 256 KiB: plain table loop
        h = 0xFF
        table_h = _H
        for b in data[:m]:
            h = table_h[h ^ b]
        return _T[h ^ data[m]]
    while t:
        t -= 1
        x = (x >> (64 << t)) ^ (x & masks[t])
    t0, t1, t2, t3, t4, t5, t6, t7 = _FOLD_TABLES[m & 7]
    h = (
        _FOLD_INIT[m & 7]
        ^ t0[x & 255]
        ^ t1[(x >> 8) & 255]
        ^ t2[(x >> 16) & 255]
        ^ t3[(x >> 24) & 255]
        ^ t4[(x >> 32) & 255]
        ^ t5[(x >> 40) & 255]
        ^ t6[(x >> 48) & 255]
        ^ t7[x >> 56]
    )
    return _T[h ^ data[m]]


def crc16_modbus_swapped(data: bytes) -> int:
    """CRC-16/MODBUS with its two bytes swapped: a variant some devices send instead of :func:`crc16`."""
    crc = 0xFFFF
    table = _T
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return ((crc & 0xFF) << 8) | (crc >> 8)


# ------------------------------------------------------------------------------------------ Packet


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded HJ 212 packet.

    ``values`` maps a pollutant code to ``{suffix: value}`` with the suffix exactly as sent (``Rtd``,
    ``Avg``, ``ZsAvg``, ``Cou``, ``Flag``, ``RS``, ...): numbers as ``float``, flags (and values of unknown
    suffixes that are not numbers) as ``str``.  ``cp_other`` holds CP items that are not ``code-suffix``
    pairs (``QnRtn``, ``ExeRtn``, ``RtdInterval``, ``SystemTime``, ``PolId`` ...).  ``raw`` is the data
    segment (what the CRC covers).  ``crc_ok`` is true only when the HJ 212 CRC matched.
    """

    cn: str
    qn: str | None = None
    st: str | None = None
    pw: str | None = None
    mn: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    data_time: datetime | None = None
    values: dict[str, dict[str, float | str]] = field(default_factory=dict)
    cp_other: dict[str, str] = field(default_factory=dict)
    crc_ok: bool = True
    deviations: list[str] = field(default_factory=list)
    raw: str = ""

    @property
    def version(self) -> str | None:
        """ "2005", "2017" or "2025" from the Flag version bits; ``None`` without Flag or for unknown bits."""
        if self.flag is None:
            return None
        return _VERSIONS.get(self.flag >> 2)

    @property
    def needs_reply(self) -> bool:
        """The Flag's A bit: the sender expects a reply (9014 for data)."""
        return self.flag is not None and bool(self.flag & 1)

    @property
    def is_split(self) -> bool:
        return self.pnum is not None

    @property
    def value_count(self) -> int:
        return sum(len(v) for v in self.values.values())


def _snippet(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


def _is_digits(s: str) -> bool:
    return bool(s) and s.isascii() and s.isdigit()


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
    h = segment[:cp_at].split(";")
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
    qn = h_qn[3:]
    st = h_st[3:]
    cn = h_cn[3:]
    pw = h_pw[3:]
    mn = h_mn[3:]
    flag_text = h_flag[5:]
    # (str.isdigit is ASCII-only here: the segment is ASCII)
    if not (
        len(qn) == 17
        and qn.isdigit()
        and st.isdigit()
        and cn.isdigit()
        and pw
        and mn
        and len(flag_text) <= 3
        and flag_text.isdigit()
    ):
        return None
    flag = int(flag_text)
    if flag > 255 or flag & 2 or (flag >> 2) not in _VERSIONS:
        return None
    cp_body = segment[cp_at + 5 : n - 2]
    if cp_body[-1:] == ";":
        return None
    return cn, qn, st, pw, mn, flag, segment, cp_body


def _fast_datatime(raw: str, tz: tzinfo) -> datetime | None:
    if len(raw) != 14 or not raw.isdigit():
        return None
    try:
        return datetime(
            int(raw[0:4]), int(raw[4:6]), int(raw[6:8]), int(raw[8:10]), int(raw[10:12]), int(raw[12:14]), tzinfo=tz
        )
    except ValueError:
        return None


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
        cn, qn, _st, pw, mn, _flag, _segment, cp_body = head
        stream = CN_STREAM.get(cn)
        if stream is None or not cp_body or "_" in cp_body:
            return None
        nums: dict[str, dict[str, float]] = {}
        flags: dict[str, str] = {}
        extra: dict[str, str] = {}
        dt_raw: str | None = None
        nums_get = nums.get
        for item in cp_body.replace(";", ",").split(","):
            k, sep, v = item.partition("=")
            if not sep:
                return None
            code, dash, suffix = k.rpartition("-")
            if dash:
                if not code or not suffix:
                    return None
                d = nums_get(code)
                if d is None:
                    d = nums[code] = {}
                if suffix == "Flag":
                    if code in flags:
                        return None
                    flags[code] = v
                    continue
                if suffix in d or suffix in _TEXT_SUFFIXES or suffix[-4:] == "Flag":
                    return None
                x = float(v)  # ValueError: not a number, the full path decides
                if x - x != 0.0:
                    return None
                d[suffix] = x
            elif k == "DataTime":
                if dt_raw is not None:
                    return None
                dt_raw = v
            else:
                if not k or k in extra:
                    return None
                extra[k] = v
        if dt_raw is None:
            return None
        dt = _fast_datatime(dt_raw, tz)
        if dt is None:
            return None
        flags_get = flags.get
        intern = sys.intern  # codes are kept as keys in per-outlet state: one copy each, not one per message
        measurements = {(c := intern(code)): Measurement(c, d, flags_get(code)) for code, d in nums.items()}
        return mn, pw, Reading(mn, stream, dt, measurements, qn, "hj212", extra)
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
    if cp_body:
        dt_raw = _parse_cp(cp_body, ws, values, cp_other, deviations)
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
    )


_NUMERIC_TAILS: Final = ("Rtd", "Avg", "Min", "Max", "Cou")


def _parse_cp(
    cp_body: str,
    ws: bool,
    values: dict[str, dict[str, float | str]],
    cp_other: dict[str, str],
    deviations: list[str],
) -> str | None:
    """Parse the CP items into ``values`` / ``cp_other``; returns the raw DataTime (hot loop: keep lean)."""
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
        "data_time": None,
        "values": {},
        "deviations": [],
    }


def decode_json(line: str | bytes, *, require_crc: bool = True) -> dict[str, Any]:
    """Decode to the CLI JSON object; never raises.

    Keys: ``ok``, ``crc_ok``, ``version``, ``qn``, ``st``, ``cn``, ``pw``, ``mn``, ``flag``, ``data_time``
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


# ---------------------------------------------------------------------------------------- encoding


def _check_text(what: str, s: str) -> str:
    if any(c in _RESERVED for c in s):
        raise HJ212Error("hj212_encode", f"{what} {_snippet(s)} contains one of ; , = & CR LF")
    return s


def _fmt_num(x: float | int) -> str:
    if isinstance(x, bool):
        raise HJ212Error("hj212_encode", f"{x!r} is not a number")
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        raise HJ212Error("hj212_encode", f"{x!r} is not a finite number")
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    r = repr(x)
    if "e" in r or "E" in r:
        return format(Decimal(r), "f")
    return r


def _fmt_datatime(dt: datetime | str) -> str:
    if isinstance(dt, str):
        if len(dt) in (14, 17) and _is_digits(dt):
            return dt
        text = dt
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise HJ212Error("hj212_encode", f"data_time {_snippet(text)} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=BEIJING)
    dt = dt.astimezone(BEIJING)
    if dt.year < 1000:
        raise HJ212Error("hj212_encode", f"data_time {dt.isoformat()} is before year 1000")
    s = f"{dt.year:04d}{dt.month:02d}{dt.day:02d}{dt.hour:02d}{dt.minute:02d}{dt.second:02d}"
    if dt.microsecond:
        s += f"{dt.microsecond // 1000:03d}"
    return s


def encode_segment(
    *,
    cn: str,
    qn: str | None = None,
    st: str | None = None,
    pw: str | None = None,
    mn: str | None = None,
    flag: int | None = None,
    pnum: int | None = None,
    pno: int | None = None,
    data_time: datetime | str | None = None,
    values: Mapping[str, Mapping[str, float | int | str]] | None = None,
    cp_other: Mapping[str, str | int | float] | None = None,
) -> str:
    """The data segment (``QN=...;...;CP=&&...&&``), fields in standard order, ``None`` fields omitted."""
    parts: list[str] = []
    for name, val in (("QN", qn), ("ST", st), ("CN", cn), ("PW", pw), ("MN", mn)):
        if val is not None:
            parts.append(f"{name}={_check_text(name, str(val))}")
    if flag is not None:
        if isinstance(flag, bool) or not isinstance(flag, int) or not 0 <= flag <= 255:
            raise HJ212Error("hj212_encode", f"Flag {flag!r} is not an integer 0-255")
        parts.append(f"Flag={flag}")
    if (pnum is None) != (pno is None):
        raise HJ212Error("hj212_encode", "PNUM and PNO must come together")
    if pnum is not None and pno is not None:
        parts.append(f"PNUM={int(pnum)}")
        parts.append(f"PNO={int(pno)}")
    groups: list[str] = []
    if data_time is not None:
        groups.append("DataTime=" + _fmt_datatime(data_time))
    for k, v in (cp_other or {}).items():
        _check_text("CP name", k)
        if not k or "-" in k:
            raise HJ212Error("hj212_encode", f"CP name {_snippet(k)} is empty or contains '-'")
        sv = v if isinstance(v, str) else _fmt_num(v)
        groups.append(f"{k}={_check_text(k, sv)}")
    for code, sv_map in (values or {}).items():
        _check_text("code", code)
        if not code:
            raise HJ212Error("hj212_encode", "empty pollutant code")
        items: list[str] = []
        for suffix, v in sv_map.items():
            _check_text("suffix", suffix)
            if not suffix or "-" in suffix:
                raise HJ212Error("hj212_encode", f"suffix {_snippet(suffix)} is empty or contains '-'")
            if isinstance(v, str):
                _check_text(f"{code}-{suffix}", v)
                items.append(f"{code}-{suffix}={v}")
            elif isinstance(v, int | float):
                items.append(f"{code}-{suffix}={_fmt_num(v)}")
            else:
                raise HJ212Error("hj212_encode", f"{code}-{suffix}: {type(v).__name__} is not a number/text")
        if items:
            groups.append(",".join(items))
    parts.append("CP=&&" + ";".join(groups) + "&&")
    return ";".join(parts)


def frame(segment: str, *, crlf: bool = True) -> str:
    """Wrap a data segment: ``##`` + 4-digit length + segment + 4 upper-case hex CRC (+ CRLF)."""
    b = segment.encode("utf-8")
    if len(b) > 9999:
        raise HJ212Error("hj212_encode", f"data segment of {len(b)} bytes does not fit a 4-digit length")
    return f"##{len(b):04d}{segment}{crc16(b):04X}" + ("\r\n" if crlf else "")


def encode(
    *,
    cn: str,
    qn: str | None = None,
    st: str | None = None,
    pw: str | None = None,
    mn: str | None = None,
    flag: int | None = None,
    pnum: int | None = None,
    pno: int | None = None,
    data_time: datetime | str | None = None,
    values: Mapping[str, Mapping[str, float | int | str]] | None = None,
    cp_other: Mapping[str, str | int | float] | None = None,
    crlf: bool = True,
) -> str:
    """A complete packet from fields (raises :class:`HJ212Error` ``hj212_encode``)."""
    seg = encode_segment(
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
    )
    return frame(seg, crlf=crlf)


def encode_packet(packet: Packet | Mapping[str, Any], *, crlf: bool = True) -> str:
    """A complete packet from a :class:`Packet` or a mapping of :func:`encode`'s keyword arguments."""
    if isinstance(packet, Packet):
        return encode(
            cn=packet.cn,
            qn=packet.qn,
            st=packet.st,
            pw=packet.pw,
            mn=packet.mn,
            flag=packet.flag,
            pnum=packet.pnum,
            pno=packet.pno,
            data_time=packet.data_time,
            values=packet.values,
            cp_other=packet.cp_other,
            crlf=crlf,
        )
    return encode_json(packet, crlf=crlf)


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise HJ212Error("hj212_encode", f"{key} must be a string")
    return str(v)


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise HJ212Error("hj212_encode", f"{key} must be an integer")
    return v


def encode_json(obj: Mapping[str, Any], *, crlf: bool = False) -> str:
    """A packet from the :func:`decode_json` shape (``cems hj212 encode``); no CRLF by default.

    Uses ``qn``, ``st``, ``cn`` (required), ``pw``, ``mn``, ``flag``, ``data_time`` (ISO 8601, or HJ 212
    digits), ``values``, and optionally ``cp_other``, ``pnum``, ``pno``; other keys are ignored.
    """
    if not isinstance(obj, Mapping):
        raise HJ212Error("hj212_encode", f"expected a JSON object, got {type(obj).__name__}")
    cn = _opt_str(obj, "cn")
    if cn is None:
        raise HJ212Error("hj212_encode", "cn is required")
    values = obj.get("values") or {}
    if not isinstance(values, Mapping) or not all(isinstance(v, Mapping) for v in values.values()):
        raise HJ212Error("hj212_encode", "values must be an object of objects")
    cp_other = obj.get("cp_other") or {}
    if not isinstance(cp_other, Mapping):
        raise HJ212Error("hj212_encode", "cp_other must be an object")
    dt = obj.get("data_time")
    if dt is not None and not isinstance(dt, str):
        raise HJ212Error("hj212_encode", "data_time must be a string")
    return encode(
        cn=cn,
        qn=_opt_str(obj, "qn"),
        st=_opt_str(obj, "st"),
        pw=_opt_str(obj, "pw"),
        mn=_opt_str(obj, "mn"),
        flag=_opt_int(obj, "flag"),
        pnum=_opt_int(obj, "pnum"),
        pno=_opt_int(obj, "pno"),
        data_time=dt,
        values=values,
        cp_other=cp_other,
        crlf=crlf,
    )


def encode_lines(lines: Iterable[str]) -> Iterator[str]:
    """One packet (no CRLF) per non-blank JSON input line.  Raises :class:`HJ212Error` naming the line."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise HJ212Error("hj212_encode", f"line {n}: not JSON: {e}") from None
        try:
            yield encode_json(obj)
        except HJ212Error as e:
            raise HJ212Error(e.reason, f"line {n}: {e.detail}") from None


# ----------------------------------------------------------------------------------------- replies


def _reply_flag(p: Packet) -> int:
    """Flag of a platform reply: version bits of a 2025 device (8), otherwise 2017 (4); A bit clear."""
    return 8 if p.version == "2025" else 4


def _reply(p: Packet, cn: str, cp_other: Mapping[str, str] | None, crlf: bool) -> str:
    return encode(qn=p.qn, st="91", cn=cn, pw=p.pw, mn=p.mn, flag=_reply_flag(p), cp_other=cp_other, crlf=crlf)


def reply_9014(packet: Packet, *, crlf: bool = True) -> str:
    """Data reply ``QN=<same>;ST=91;CN=9014;PW=..;MN=..;Flag=4;CP=&&&&`` (Flag 8 for 2025 devices)."""
    return _reply(packet, "9014", None, crlf)


def reply_9011(packet: Packet, qn_rtn: int, *, crlf: bool = True) -> str:
    """Request reply with ``QnRtn`` (1 ready, 2 rejected, 3 PW, 4 MN, 5 ST, 6 Flag, 7 QN, 8 CN, 9 CRC error,
    100 unknown)."""
    return _reply(packet, "9011", {"QnRtn": str(int(qn_rtn))}, crlf)


def reply_9012(packet: Packet, exe_rtn: int, *, crlf: bool = True) -> str:
    """Execution result with ``ExeRtn`` (1 success, 2 failed, 3 conditions, ... 100 unknown)."""
    return _reply(packet, "9012", {"ExeRtn": str(int(exe_rtn))}, crlf)


def encode_heartbeat(*, mn: str, pw: str, st: str, qn: str | None, flag: int = 9, crlf: bool = True) -> str:
    """HJ 212-2025 heartbeat ``QN=..;ST=<device ST>;CN=9015;PW=..;MN=..;Flag=9;CP=&&&&``."""
    return encode(qn=qn, st=st, cn=CN_HEARTBEAT, pw=pw, mn=mn, flag=flag, crlf=crlf)


def is_heartbeat(packet: Packet) -> bool:
    return packet.cn == CN_HEARTBEAT


# ----------------------------------------------------------------------------------------- reading


def to_reading(packet: Packet, tz: tzinfo = BEIJING) -> Reading:
    """A :class:`cems.model.Reading` from a data packet (CN 2011/2051/2061/2031), ``origin="hj212"``.

    ``tz`` reinterprets the DataTime wall clock (HJ 212 times are Beijing time).  Numeric suffixes become
    :attr:`Measurement.values`, ``Flag`` the measurement flag; other text values and non-pollutant CP items
    go to :attr:`Reading.extra` (``code-suffix`` / name → text).
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
    return Reading(
        mn=packet.mn,
        stream=stream,
        data_time=dt,
        measurements=measurements,
        qn=packet.qn,
        origin="hj212",
        extra=extra,
    )


# ---------------------------------------------------------------------------------- split packets


@dataclass(slots=True)
class _Pending:
    pnum: int
    parts: dict[int, Packet]
    first_seq: int
    first_time: float | None


class Reassembler:
    """Combines split packets (PNUM/PNO) of one (MN, QN, CN) into one :class:`Packet`.

    Bounded: at most ``max_pending`` incomplete groups (the oldest is dropped); a group expires after
    ``max_age_packets`` further packets fed, or ``ttl_s`` seconds when the caller passes ``now`` (no wall
    clock inside).  Dropped groups are counted in :attr:`dropped` and listed in :attr:`dropped_keys`
    (the latest 100).
    """

    def __init__(
        self,
        *,
        max_pending: int = 1000,
        max_age_packets: int = 10_000,
        ttl_s: float | None = None,
        max_parts: int = 100,
    ) -> None:
        self.max_pending = max_pending
        self.max_age_packets = max_age_packets
        self.ttl_s = ttl_s
        self.max_parts = max_parts
        self._pending: OrderedDict[tuple[str | None, str | None, str], _Pending] = OrderedDict()
        self._seq = 0
        self.dropped = 0
        self.dropped_keys: list[tuple[str | None, str | None, str]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _drop(self, key: tuple[str | None, str | None, str]) -> None:
        del self._pending[key]
        self.dropped += 1
        self.dropped_keys.append(key)
        del self.dropped_keys[:-100]

    def expire(self, now: float | None = None) -> int:
        """Drop expired groups; returns how many."""
        before = self.dropped
        while self._pending:
            key, g = next(iter(self._pending.items()))
            too_old = self._seq - g.first_seq > self.max_age_packets
            timed_out = (
                self.ttl_s is not None
                and now is not None
                and g.first_time is not None
                and now - g.first_time > self.ttl_s
            )
            if not (too_old or timed_out):
                break
            self._drop(key)
        return self.dropped - before

    def feed(self, packet: Packet, now: float | None = None) -> Packet | None:
        """Returns the packet itself when not split, the combined packet when the last part arrives, else
        ``None``.  Raises :class:`HJ212Error` (``hj212_split``) for a packet with too many parts."""
        self._seq += 1
        self.expire(now)
        if packet.pnum is None or packet.pno is None:
            return packet
        if packet.pnum == 1:
            return _combine([packet])
        if packet.pnum > self.max_parts:
            raise HJ212Error("hj212_split", f"PNUM {packet.pnum} exceeds {self.max_parts} parts")
        key = (packet.mn, packet.qn, packet.cn)
        g = self._pending.get(key)
        if g is not None and g.pnum != packet.pnum:
            self._drop(key)
            g = None
        if g is None:
            while len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)))
            g = self._pending[key] = _Pending(packet.pnum, {}, self._seq, now)
        g.parts[packet.pno] = packet
        if len(g.parts) < g.pnum:
            return None
        del self._pending[key]
        return _combine([g.parts[i] for i in sorted(g.parts)])


def _combine(parts: list[Packet]) -> Packet:
    first = parts[0]
    values: dict[str, dict[str, float | str]] = {}
    cp_other: dict[str, str] = {}
    deviations: list[str] = []
    data_time = None
    for p in parts:
        for code, sv in p.values.items():
            values.setdefault(code, {}).update(sv)
        cp_other.update(p.cp_other)
        deviations.extend(f"part {p.pno}: {d}" for d in p.deviations)
        if data_time is None:
            data_time = p.data_time
        elif p.data_time is not None and p.data_time != data_time:
            deviations.append(f"part {p.pno}: DataTime differs from part 1 (kept part 1's)")
    flag = None if first.flag is None else first.flag & ~2
    return replace(
        first,
        flag=flag,
        pnum=None,
        pno=None,
        data_time=data_time,
        values=values,
        cp_other=cp_other,
        crc_ok=all(p.crc_ok for p in parts),
        deviations=deviations,
        raw="\n".join(p.raw for p in parts),
    )


# ------------------------------------------------------------------------------------ stream framer


_WS_BYTES: Final = b" \t\r\n\x00"


class StreamFramer:
    """Frames ``##...\\r\\n`` packets out of a TCP byte stream (pure, no I/O).

    :meth:`feed` returns complete frames (bytes, without the line terminator) and
    :class:`FramingError` values for skipped garbage (``hj212_garbage``), frames cut by a new ``##``
    (``hj212_truncated``) and frames longer than ``max_data_bytes`` + overhead (``hj212_oversize``,
    discarded up to the next ``##``).  A bare ``\\n`` terminator is accepted too.  The buffer never holds
    more than one maximum frame.
    """

    #: ``##`` + 4-digit length + 4 CRC digits + slack for unpadded/stray bytes.
    OVERHEAD: Final = 2 + 4 + 4 + 6

    def __init__(self, max_data_bytes: int = MAX_DATA_BYTES) -> None:
        self.max_frame = max_data_bytes + self.OVERHEAD
        self._buf = bytearray()
        self._discarding = False  # inside an oversize frame: drop silently until the next '##'

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FramingError]:
        out: list[bytes | FramingError] = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(b"##")
            if start != 0:
                # bytes before the next '##' (keep a trailing '#': it may start one)
                cut = start if start > 0 else (len(buf) - 1 if buf.endswith(b"#") else len(buf))
                if cut == 0:
                    break
                junk = bytes(buf[:cut])
                del buf[:cut]
                if not self._discarding and junk.strip(_WS_BYTES):
                    out.append(FramingError("hj212_garbage", f"skipped {cut} bytes outside a packet", junk, cut))
                if start < 0:
                    break
                continue
            self._discarding = False
            limit = self.max_frame + 2
            end = buf.find(b"\n", 2, limit)
            nxt = buf.find(b"##", 2, end if end >= 0 else limit)
            if nxt >= 0:
                junk = bytes(buf[:nxt])
                del buf[:nxt]
                out.append(FramingError("hj212_truncated", f"frame cut after {nxt} bytes by a new '##'", junk, nxt))
                continue
            if end >= 0:
                frame_bytes = bytes(buf[:end])
                del buf[: end + 1]
                if frame_bytes.endswith(b"\r"):
                    frame_bytes = frame_bytes[:-1]
                if len(frame_bytes) > self.max_frame:
                    out.append(
                        FramingError(
                            "hj212_oversize",
                            f"frame of {len(frame_bytes)} bytes longer than {self.max_frame}: discarded",
                            frame_bytes,
                            len(frame_bytes),
                        )
                    )
                else:
                    out.append(frame_bytes)
                continue
            if len(buf) >= limit:
                # no terminator within a maximum frame: drop it and resync on the next '##'
                nxt = buf.find(b"##", 2)
                if nxt >= 0:
                    cut = nxt
                else:
                    cut = len(buf) - 1 if buf.endswith(b"#") else len(buf)
                    self._discarding = True
                junk = bytes(buf[:cut])
                del buf[:cut]
                out.append(
                    FramingError(
                        "hj212_oversize",
                        f"no packet end within {self.max_frame} bytes: discarding up to the next '##'",
                        junk,
                        cut,
                    )
                )
                continue
            break
        return out
