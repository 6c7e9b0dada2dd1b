"""``cems.protocol.hj212`` is a curated API over private modules (httpx ``tests/test_exported_members.py``)."""

from __future__ import annotations

from cems.protocol import hj212

# Everything other modules use from the codec: same names as before the package split.
EXPECTED = {
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
}


def test_exported_members() -> None:
    assert set(hj212.__all__) == EXPECTED
    assert len(hj212.__all__) == len(EXPECTED)
    public = {n for n in vars(hj212) if not n.startswith("_")}
    assert public == EXPECTED, "the package namespace holds only the curated API (and the private modules)"
