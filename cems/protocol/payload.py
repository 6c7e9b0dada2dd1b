"""JSON reading payload, schema ``cems.reading/1`` (documented in docs/payload.md).

Gateways publish it to ``cems/v1/{mn}/{stream}``.  It carries per pollutant code the same information as
an HJ 212 data packet: a value per suffix exactly as HJ 212 names it (``Rtd``, ``Avg``, ``ZsAvg``, ``Cou``,
...) and the data flag::

    {"schema": "cems.reading/1", "mn": "010000A8900016F000169DC0", "stream": "rtd",
     "data_time": "2026-11-22T08:00:30+08:00", "qn": "20261122080030123",
     "values": {"a21026": {"Rtd": 12.5, "ZsRtd": 15.1, "Flag": "N"}, "a19001": {"Rtd": 8.2, "Flag": "N"}}}

Decoding is strict about types (numbers must be JSON numbers, finite; flags must be HJ 212 flags) and
raises :class:`cems.errors.RejectedMessage` with a specific reason.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from itertools import chain
from typing import Any, Final

import msgspec
from pydantic import ValidationError

from cems.errors import Reason, RejectedMessage
from cems.model import BEIJING, DATA_FLAGS, Measurement, Reading, Stream, new_reading
from cems.protocol._payload_schema import FastPayload as _FastPayload
from cems.protocol._payload_schema import PayloadModel as _Payload

SCHEMA: Final = "cems.reading/1"
#: Largest payload accepted, bytes (HJ 212 caps a data segment at 1024 bytes; JSON is wordier).
MAX_PAYLOAD_BYTES: Final = 64 * 1024

_FAST_DECODER: Final = msgspec.json.Decoder(_FastPayload)
_STREAMS: Final = {s.value: s for s in Stream}
#: (schema, mn, stream, data_time, qn, values) of a payload that :class:`_Payload` accepts.
_Fields = tuple[str | None, str | None, Stream | None, str, str | None, dict[str, dict[str, float | str]]]


def _fast_fields(payload: bytes) -> _Fields | None:
    """The fields of a payload that :class:`_Payload` surely accepts, decoded by msgspec (faster than pydantic,
    docs/benchmark.md); ``None`` for anything else, which pydantic then decodes so that every reason and detail
    stays its own.  (msgspec reads a number out of the float range as an error: every float it returns is
    finite.)  Equivalence: tests/unit/test_payload_fast_path.py."""
    if not payload.isascii():
        try:  # msgspec skips an unknown key's value without checking its UTF-8; pydantic checks it
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        p = _FAST_DECODER.decode(payload)
    except msgspec.DecodeError:
        return None
    mn, qn, dt = p.mn, p.qn, p.data_time
    if (mn is not None and len(mn) > 24) or (qn is not None and len(qn) > 20) or not 8 <= len(dt) <= 40:
        return None
    stream: Stream | None = None
    if p.stream is not None:
        stream = _STREAMS.get(p.stream)
        if stream is None:
            return None
    if len(p.values) > 256:
        return None
    return p.schema, mn, stream, dt, qn, p.values


_new_tuple: Final = tuple.__new__
_intern: Final = sys.intern


def _fast_measurements(values: dict[str, dict[str, float | str]]) -> dict[str, Measurement] | None:
    """The measurements of :func:`_fast_fields`'s ``values`` (whose dicts it takes over) when every value is a
    number and every ``Flag`` an HJ 212 flag; ``None`` otherwise (:func:`_measurements` then says why)."""
    out: dict[str, Measurement] = {}
    flags = DATA_FLAGS
    for code, nums in values.items():
        flag = nums.pop("Flag", None)
        if flag is not None and flag not in flags:
            return None
        code = _intern(code)  # kept as a key in per-outlet state: one copy of each code, not one per message
        out[code] = _new_tuple(Measurement, (code, nums, flag))  # (Measurement(...) without its Python frame)
    if str in map(type, chain.from_iterable(map(dict.values, values.values()))):  # (every value at once, in C)
        return None
    return out


def _measurements(values: dict[str, dict[str, float | str]]) -> dict[str, Measurement]:
    measurements: dict[str, Measurement] = {}
    for code, fields in values.items():
        flag: str | None = None
        nums: dict[str, float] = {}
        for suffix, v in fields.items():
            if suffix == "Flag":
                if not isinstance(v, str) or v not in DATA_FLAGS:
                    raise RejectedMessage("bad_flag", f"{code}-Flag {v!r} is not an HJ 212 data flag")
                flag = v
            elif isinstance(v, str):
                raise RejectedMessage("bad_field", f"{code}-{suffix}: {v!r} is not a number")
            else:
                nums[suffix] = v
        code = _intern(code)
        measurements[code] = Measurement(code, nums, flag)
    return measurements


def _slow_fields(payload: bytes) -> _Fields:
    try:
        p = _Payload.model_validate_json(payload)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "payload"
        kind: Reason = "malformed_json" if err["type"] == "json_invalid" else "bad_field"
        raise RejectedMessage(kind, f"{where}: {err['msg']}") from None
    return p.schema_, p.mn, p.stream, p.data_time, p.qn, p.values


def parse_data_time(text: str, tz: Any = BEIJING) -> datetime:
    """ISO 8601 (offset optional) or HJ 212 ``YYYYMMDDhhmmss[zzz]``.  Without an offset: Beijing time."""
    key = (text, tz)
    dt = _DATA_TIMES.get(key)
    if dt is None:
        dt = _parse_data_time(text, tz)
        if len(_DATA_TIMES) >= _DATA_TIMES_MAX:
            _DATA_TIMES.clear()
        _DATA_TIMES[key] = dt
    return dt


#: data_time text (and zone) → datetime: a city's gateways send the same few data times at once, so most
#: payloads find theirs here (datetimes are immutable: shared safely).
_DATA_TIMES: dict[tuple[str, Any], datetime] = {}
_DATA_TIMES_MAX: Final = 4096


def _parse_data_time(text: str, tz: Any) -> datetime:
    t = text.strip()
    if t.isascii() and t.isdigit() and len(t) in (14, 17):
        try:  # month 13, 30 February, hour 24 ...: a reject, never an uncaught ValueError (a poison message)
            dt = datetime(
                int(t[0:4]),
                int(t[4:6]),
                int(t[6:8]),
                int(t[8:10]),
                int(t[10:12]),
                int(t[12:14]),
                int(t[14:17]) * 1000 if len(t) == 17 else 0,
            )
        except ValueError:
            raise RejectedMessage("bad_data_time", f"data_time {text!r} is not a valid date and time") from None
    else:
        try:
            dt = datetime.fromisoformat(t)
        except ValueError:
            raise RejectedMessage("bad_data_time", f"data_time {text!r} is not ISO 8601 or YYYYMMDDhhmmss") from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def decode_payload(payload: bytes, *, mn: str, stream: Stream, tz: Any = BEIJING) -> Reading:
    """Decode a JSON payload published on ``cems/v1/{mn}/{stream}`` into a :class:`Reading`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("too_large", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    parsed = _fast_fields(payload)
    schema, p_mn, p_stream, data_time, qn, values = parsed if parsed is not None else _slow_fields(payload)
    if schema is not None and schema != SCHEMA:
        raise RejectedMessage("bad_schema", f"schema {schema!r} is not {SCHEMA!r}")
    if p_mn is not None and p_mn != mn:
        raise RejectedMessage("mn_mismatch", f"payload MN {p_mn!r} does not match topic MN {mn!r}")
    if p_stream is not None and p_stream is not stream:
        raise RejectedMessage("stream_mismatch", f"payload stream {p_stream!r} does not match topic {stream!r}")
    measurements = _fast_measurements(values) if parsed is not None else None  # (takes the dicts over)
    if measurements is None:
        if parsed is not None:  # a value that is not a number, a bad flag: the dicts again, in their order
            values = _FAST_DECODER.decode(payload).values
        measurements = _measurements(values)
    return new_reading(mn, stream, parse_data_time(data_time, tz), measurements, qn, "json", {})  # (Reading(...))


def encode_payload(reading: Reading) -> bytes:
    """The JSON payload for a reading (used by gateways and the simulator)."""
    values: dict[str, dict[str, float | str]] = {}
    for code, m in reading.measurements.items():
        d: dict[str, float | str] = dict(m.values)
        if m.flag is not None:
            d["Flag"] = m.flag
        values[code] = d
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "mn": reading.mn,
        "stream": reading.stream.value,
        "data_time": reading.data_time.isoformat(),
        "values": values,
    }
    if reading.qn is not None:
        doc["qn"] = reading.qn
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
