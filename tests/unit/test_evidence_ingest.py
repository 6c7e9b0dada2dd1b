"""What the ingester hands the evidence archive for each message (cems/service/ingest.py): every message of a
batch in arrival order with its verdict, and a later verdict for a held split part that never completed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_split_ingest import PARTS, REG, T, msg, part  # same directory (pytest prepend import mode)

from cems.protocol.hj212 import encode
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.sinks.archive import ArchiveSettings
from cems.sinks.influx import InfluxConfig


def service(tmp_path: Path, **kw: float) -> IngestService:
    evidence = ArchiveSettings(tmp_path, "cems-ingester")
    return IngestService(
        REG,
        MqttSettings(),
        InfluxConfig(url="http://127.0.0.1:9", db="x"),
        IngestSettings(evidence=evidence, **kw),  # type: ignore[arg-type]
    )


def test_every_message_gets_an_entry_with_its_verdict_in_arrival_order(tmp_path: Path) -> None:
    svc = service(tmp_path)
    good = encode(cn="2011", st="31", pw="123456", mn="MN1", flag=5, qn=T.strftime("%Y%m%d%H%M%S000"),
                  data_time=T, values=PARTS[0], crlf=False).encode()  # type: ignore[arg-type]  # fmt: skip
    batch = [
        msg(part(1), 1),  # held: the rest of its packet has not come
        InboundMessage("cems/v1/MN1/rtd", b"{not json", 2, 1, time.time()),
        msg(good, 3),
        msg(good, 4),  # the same bytes again in the batch: a duplicate
    ]
    p = svc.prepare(batch)
    assert [(e.payload, e.status, e.reason) for e in p.evidence] == [
        (batch[0].payload, "held", None),
        (b"{not json", "rejected", "malformed_json"),
        (good, "accepted", None),
        (good, "rejected", "duplicate"),
    ]
    assert [e.via["packet_id"] for e in p.evidence if e.via] == [1, 2, 3, 4]
    assert p.archived == len(p.rejects)


def test_a_held_part_that_times_out_gets_a_verdict_line_and_all_is_chained(tmp_path: Path) -> None:
    svc = service(tmp_path, split_timeout_s=0.05)
    assert svc.archive is not None
    svc.archive.open()
    try:
        p1 = svc.prepare([msg(part(1), 1)])
        svc.archive.write(p1.evidence)
        time.sleep(0.1)
        p2 = svc.prepare([])
        assert [(e.kind, e.status, e.reason) for e in p2.evidence] == [("verdict", "rejected", "hj212_split")]
        svc.archive.write(p2.evidence)
    finally:
        svc.archive.close()
    from cems.evidence import verify_archive

    assert verify_archive(tmp_path)[0] == []
    lines = [json.loads(x) for f in tmp_path.rglob("*.jsonl") for x in f.read_bytes().splitlines()]
    held, verdict = [x for x in lines if x["kind"] in ("msg", "verdict")]
    assert (held["status"], verdict["status"], verdict["reason"]) == ("held", "rejected", "hj212_split")
    assert verdict["sha256"] == held["sha256"] and verdict["arrival"] == held["arrival"] and "payload" not in verdict
