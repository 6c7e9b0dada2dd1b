"""Issue 13, item 1: one hostile or unlucky message never stops ingestion.  A bad DataTime is a proper rejection
with a reason; anything else a message makes the code raise becomes ``internal_error`` (traceback logged) and
the other messages are processed."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

import cems.replay
import cems.service.ingest
from cems.decode import decode_message
from cems.errors import RejectedMessage
from cems.protocol.hj212 import encode
from cems.registry import Registry, parse_registry
from cems.replay import load_readings, replay
from cems.service.ingest import IngestService
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.sinks.influx import InfluxConfig
from cems.validate import check_values

REG = parse_registry(one_outlet())
MONTH_13 = "20261399000000"


def json_reading(data_time: str = "2026-11-22T08:00:00+08:00", rtd: float = 10.0) -> bytes:
    return json.dumps({"data_time": data_time, "values": {"a21026": {"Rtd": rtd, "Flag": "N"}}}).encode()


def hj212_packet(data_time: str = "20261122080000") -> str:
    good = encode(
        cn="2011",
        st="31",
        pw="123456",
        mn="MN0001",
        flag=5,
        qn="20261122080000000",
        data_time="20261122080000",
        values={"a21026": {"Rtd": 10.0, "Flag": "N"}},
        crlf=False,
    )
    if data_time == "20261122080000":
        return good
    # the encoder refuses an impossible date: rewrite it and recompute the CRC (same length)
    from cems.protocol.hj212._crc import crc16

    seg = good[6:-4].replace("DataTime=20261122080000", f"DataTime={data_time}")
    return f"##{len(seg):04d}{seg}{crc16(seg.encode()):04X}"


@pytest.mark.parametrize(
    "data_time", [MONTH_13, "20260230000000", "20261122240000", "20261301000000123", "2026-13-01T00:00:00"]
)
def test_impossible_json_data_time_is_a_bad_data_time_rejection(data_time: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        decode_message("cems/v1/MN0001/rtd", json_reading(data_time), REG)
    assert e.value.reason == "bad_data_time" and data_time in e.value.detail


def test_impossible_hj212_data_time_is_an_hj212_datatime_rejection() -> None:
    with pytest.raises(RejectedMessage) as e:
        decode_message("cems/v1/MN0001/hj212", hj212_packet(MONTH_13).encode(), REG)
    assert e.value.reason == "hj212_datatime"


def message(topic: str, payload: bytes, mid: int) -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, mid=mid, qos=1, received=time.time())


@pytest.fixture
def service() -> IngestService:
    return IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"))


def test_prepare_rejects_a_month_13_reading_and_keeps_the_others(service: IngestService) -> None:
    batch = [
        message("cems/v1/MN0001/rtd", json_reading("2026-11-22T08:00:00+08:00"), 1),
        message("cems/v1/MN0001/rtd", json_reading(MONTH_13), 2),
        message("cems/v1/MN0001/hj212", hj212_packet(MONTH_13).encode(), 3),
        message("cems/v1/MN0001/rtd", json_reading("2026-11-22T08:01:00+08:00"), 4),
    ]
    p = service.prepare(batch)
    assert [m.mid for m in p.good] == [1, 4]
    assert [(m.mid, e.reason) for m, e in p.rejects] == [(2, "bad_data_time"), (3, "hj212_datatime")]


def test_an_unexpected_exception_becomes_internal_error_logged_and_the_batch_goes_on(
    service: IngestService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = decode_message

    def buggy(topic: str, payload: bytes, registry: Registry, **kw: Any) -> Any:
        if b"POISON" in payload:
            raise ZeroDivisionError("a bug")
        return real(topic, payload, registry, **kw)

    monkeypatch.setattr(cems.service.ingest, "decode_message", buggy)
    batch = [
        message("cems/v1/MN0001/rtd", json_reading("2026-11-22T08:00:00+08:00"), 1),
        message("cems/v1/MN0001/rtd", b'{"POISON": 1}', 2),
        message("cems/v1/MN0001/rtd", json_reading("2026-11-22T08:01:00+08:00"), 3),
    ]
    with caplog.at_level(logging.ERROR, logger="cems.service.ingest"):
        p = service.prepare(batch)
    assert [m.mid for m in p.good] == [1, 3]
    ((m, e),) = p.rejects
    assert m.mid == 2 and e.reason == "internal_error" and e.detail == "ZeroDivisionError: a bug"
    (rec,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rec.exc_info is not None and "ZeroDivisionError" in caplog.text  # the traceback is logged


def replay_lines() -> list[str]:
    return [
        hj212_packet(),
        json.dumps({"mn": "MN0001", "stream": "rtd", "data_time": MONTH_13, "values": {"a21026": {"Rtd": 1.0}}}),
        hj212_packet(MONTH_13),
        '{"mn":"MN0001","stream":"rtd","data_time":"2026-11-22T08:01:00+08:00","values":{"a21026":{"Rtd":2.0}}}',
    ]


def test_replay_counts_bad_data_times_and_goes_on() -> None:
    res = replay(REG, replay_lines())
    assert res.readings == 2 and res.lines == 4
    assert res.rejected == {"bad_data_time": 1, "hj212_datatime": 1}


def test_replay_counts_an_unexpected_exception_as_internal_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = check_values

    def buggy(r: Any) -> Any:
        if r.data_time.minute == 1:
            raise KeyError("boom")
        return real(r)

    monkeypatch.setattr(cems.replay, "check_values", buggy)
    res = cems.replay.ReplayResult()
    with caplog.at_level(logging.ERROR, logger="cems.replay"):
        items = load_readings(REG, replay_lines(), result=res)
    assert len(items) == 1
    assert res.rejected == {"bad_data_time": 1, "hj212_datatime": 1, "internal_error": 1}
    assert "KeyError" in caplog.text
