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

(all of them members of the closed list :data:`cems.errors.Reason`, documented in docs/payload.md).

The package is split along the codec's parts, each a private module re-exported here: ``_crc`` (CRC),
``_packet`` (:class:`Packet`, constants), ``_decode`` (full decoder, fast path, JSON view, :func:`to_reading`),
``_encode`` (encoding, replies), ``_framing`` (:class:`Reassembler`, :class:`StreamFramer`), ``_codes`` (the
HJ/T 212-2005 → HJ 212-2017 code table, applied by :func:`to_reading` and :func:`fast_reading`).
"""

from cems.errors import FramingError, HJ212Error
from cems.protocol.hj212._crc import crc16, crc16_modbus_swapped
from cems.protocol.hj212._decode import decode, decode_json, decode_lines, fast_reading, packet_json, to_reading
from cems.protocol.hj212._encode import (
    encode,
    encode_heartbeat,
    encode_json,
    encode_lines,
    encode_packet,
    encode_segment,
    frame,
    is_heartbeat,
    reply_9011,
    reply_9012,
    reply_9014,
)
from cems.protocol.hj212._framing import Reassembler, StreamFramer
from cems.protocol.hj212._packet import (
    CN_HEARTBEAT,
    MAX_DATA_BYTES,
    QNRTN_CN_ERROR,
    QNRTN_CRC_ERROR,
    QNRTN_FLAG_ERROR,
    QNRTN_MN_ERROR,
    QNRTN_PW_ERROR,
    QNRTN_QN_ERROR,
    QNRTN_READY,
    QNRTN_REJECTED,
    QNRTN_ST_ERROR,
    QNRTN_UNKNOWN,
    Packet,
)

__all__ = [
    "CN_HEARTBEAT",
    "MAX_DATA_BYTES",
    "QNRTN_CN_ERROR",
    "QNRTN_CRC_ERROR",
    "QNRTN_FLAG_ERROR",
    "QNRTN_MN_ERROR",
    "QNRTN_PW_ERROR",
    "QNRTN_QN_ERROR",
    "QNRTN_READY",
    "QNRTN_REJECTED",
    "QNRTN_ST_ERROR",
    "QNRTN_UNKNOWN",
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
    "encode_segment",
    "fast_reading",
    "frame",
    "is_heartbeat",
    "packet_json",
    "reply_9011",
    "reply_9012",
    "reply_9014",
    "to_reading",
]
