"""HJ 212 split packets (PNUM/PNO) in the ingester (issue 12 item 11): the parts of one (MN, QN, CN) are held,
unacknowledged, and judged as one reading once all have arrived; an incomplete packet is dead-lettered
``hj212_split`` after the timeout."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.registry import parse_registry
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.sinks.influx import InfluxConfig

REG = parse_registry(
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="MN1"\nname="o"\nprofile="coal_power_ultra_low"\npassword="123456"\n'
)
T = datetime.now(BEIJING).replace(microsecond=0) - timedelta(minutes=5)
PARTS = [
    {"a19001": {"Rtd": 6.0, "Flag": "N"}},
    {"a21002": {"Rtd": 80.0, "Flag": "N"}},
    {"a21026": {"Rtd": 10.0, "Flag": "N"}},
]


def part(pno: int, pnum: int = 3, qn: str | None = None, t: datetime = T) -> bytes:
    text = encode(cn="2011", st="31", pw="123456", mn="MN1", flag=7, qn=qn or t.strftime("%Y%m%d%H%M%S000"),
                  data_time=t, pnum=pnum, pno=pno, values=PARTS[pno - 1], crlf=False)  # type: ignore[arg-type]  # fmt: skip
    return text.encode()


def msg(payload: bytes, mid: int) -> InboundMessage:
    return InboundMessage("cems/v1/MN1/hj212", payload, mid, 1, time.time())


def service(**kw: float) -> IngestService:
    return IngestService(
        REG,
        MqttSettings(),
        InfluxConfig(url="http://127.0.0.1:9", db="x"),
        IngestSettings(**kw),  # type: ignore[arg-type]
    )


def test_parts_are_held_and_judged_as_one_reading() -> None:
    svc = service()
    p1 = svc.prepare([msg(part(1), 1), msg(part(2), 2)])
    assert p1.good == [] and p1.rejects == [] and p1.lines == []  # held: not stored, not acknowledged
    assert svc.stats.split_parts_held == 2
    p2 = svc.prepare([msg(part(3), 3)])
    assert [m.mid for m in p2.good] == [3] and not p2.rejects
    reading, _ = p2.items[0]  # type: ignore[misc]
    assert sorted(reading.measurements) == ["a19001", "a21002", "a21026"]  # one reading: O2 beside NOx
    assert "a21002_Rtd=80.0" in p2.lines[0] and "a19001_Rtd=6.0" in p2.lines[0]
    assert [m.mid for m in svc._companions[id(p2.good[0])]] == [1, 2]  # acknowledged with part 3
    assert svc.stats.split_reassembled == 1 and svc.stats.split_parts_held == 0


def test_acknowledging_the_last_part_acknowledges_the_held_ones() -> None:
    svc = service()
    acked: list[int] = []
    svc.conn.ack = lambda msg: acked.append(msg.mid)  # type: ignore[method-assign]
    svc.prepare([msg(part(1), 1), msg(part(2), 2)])
    p = svc.prepare([msg(part(3), 3)])
    svc._ack(p.good[0])
    assert acked == [3, 1, 2] and not svc._companions


def test_an_incomplete_split_packet_is_dead_lettered_after_the_timeout() -> None:
    svc = service(split_timeout_s=0.05)
    assert svc.prepare([msg(part(1), 1)]).good == []
    time.sleep(0.1)
    p = svc.prepare([])
    assert [(m.mid, e.reason) for m, e in p.rejects] == [(1, "hj212_split")]
    assert "parts [1] of 3" in p.rejects[0][1].detail


def test_a_packet_that_is_not_split_takes_the_usual_path() -> None:
    svc = service()
    p = svc.prepare([msg(part(1, pnum=1), 1)])
    assert [m.mid for m in p.good] == [1] and not svc._companions
    wrong = InboundMessage("cems/v1/OTHER/hj212", part(1), 2, 1, time.time())
    assert [e.reason for _, e in service().prepare([wrong]).rejects] == ["mn_mismatch"]
    assert datetime.now(UTC) > T
