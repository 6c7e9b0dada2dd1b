"""Issue 13, item 2: a dead letter is bounded whatever was rejected, and says what it cut."""

from __future__ import annotations

import json

import pytest

from cems.errors import RejectedMessage
from cems.service.ingest import DEAD_LETTER_MAX_PAYLOAD, DEAD_LETTER_MAX_TEXT, dead_letter

TOO_LARGE = RejectedMessage("too_large", "payload of 2000000 bytes exceeds 65536")


@pytest.mark.parametrize("byte", [b"\x01", b"a", b'"', b"\xff", "水".encode()])
def test_a_2_mb_payload_gives_a_small_letter_that_says_it_was_truncated(byte: bytes) -> None:
    payload = byte * (2_000_000 // len(byte))
    letter = dead_letter("cems/v1/MN0001/rtd", payload, 0.0, TOO_LARGE)
    assert len(letter.encode()) < 32 * 1024  # ≈ 12 MB before: past the broker's packet limit
    doc = json.loads(letter)
    assert doc["truncated"] is True and doc["payload_bytes"] == len(payload)
    if "payload" in doc:
        assert (
            payload.startswith(doc["payload"].encode()) and len(doc["payload"].encode()) > DEAD_LETTER_MAX_PAYLOAD - 4
        )
    else:
        assert doc["payload_hex"] == payload[:DEAD_LETTER_MAX_PAYLOAD].hex()


def test_a_long_detail_and_topic_are_cut_and_a_small_letter_is_whole() -> None:
    doc = json.loads(dead_letter("t" * 70_000, b"x", 0.0, RejectedMessage("bad_topic", "d" * 50_000)))
    assert doc["truncated"] is True and len(doc["detail"]) < DEAD_LETTER_MAX_TEXT + 40
    assert len(doc["topic"]) < DEAD_LETTER_MAX_TEXT + 40 and doc["payload"] == "x"
    small = json.loads(dead_letter("cems/v1/MN0001/rtd", b"{not json", 0.0, RejectedMessage("malformed_json", "x")))
    assert small == {
        "reason": "malformed_json",
        "detail": "x",
        "topic": "cems/v1/MN0001/rtd",
        "received_at": "1970-01-01T00:00:00+00:00",
        "payload": "{not json",
        "payload_bytes": 9,
        "truncated": False,
    }
