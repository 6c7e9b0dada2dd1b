"""Writing HJ 212 packets: fields or the :func:`~cems.protocol.hj212.decode_json` shape to a framed packet
(length field, CRC), and the platform's replies (9011, 9012, 9014) and heartbeat.

Pure, no I/O.  Everything that cannot be written without changing its meaning (reserved characters, NaN,
a segment longer than a 4-digit length field) raises :class:`HJ212Error` ``hj212_encode``; numbers are
written in the shortest form that reads back to the same float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from cems.errors import HJ212Error
from cems.model import BEIJING
from cems.protocol.hj212._crc import crc16
from cems.protocol.hj212._packet import _RESERVED, CN_HEARTBEAT, Packet, _is_digits, _snippet

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
