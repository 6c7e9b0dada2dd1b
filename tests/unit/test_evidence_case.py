"""Case files (cems/evidence): what is selected, what is left out, and that verify catches a removed packet even
when the forger recomputes every digest of the zip."""

from __future__ import annotations

import hashlib
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from registries import one_outlet  # tests/registries.py

from cems.evidence import CaseReads, CaseRequest, export_case, verify_case
from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.registry import parse_registry
from cems.sinks.archive import ArchiveSettings, Entry, EvidenceArchive

START = datetime(2026, 12, 1, 8, 0, tzinfo=BEIJING)
END = START + timedelta(hours=2)


def packet(mn: str, t: datetime) -> bytes:
    return encode(
        cn="2051",
        qn=t.strftime("%Y%m%d%H%M%S000"),
        st="31",
        pw="123456",
        mn=mn,
        flag=5,
        data_time=t.strftime("%Y%m%d%H%M%S"),
        values={"a21026": {"Avg": 12.0, "Flag": "N"}},
    ).encode()


class Clock:
    t = START.timestamp()

    def __call__(self) -> float:
        return self.t


def build_archive(root: Path) -> dict[str, bytes]:
    clock = Clock()
    a = EvidenceArchive(ArchiveSettings(root, "ingester"), clock=clock)
    a.open()
    p = {
        "before": packet("MN0001", START - timedelta(hours=3)),
        "in": packet("MN0001", START + timedelta(minutes=5)),
        "other": packet("MN0002", START + timedelta(minutes=5)),
        "late": packet("MN0001", START + timedelta(minutes=10)),
    }
    t = START.timestamp()
    a.write([Entry(p["before"], t - 3 * 3600 + 60, "cems/v1/MN0001/hj212", "accepted")])
    a.write([Entry(p["in"], t + 360, "cems/v1/MN0001/hj212", "accepted")])
    a.write([Entry(p["other"], t + 400, "cems/v1/MN0002/hj212", "rejected", "unknown_mn", "not in the registry")])
    clock.t = t + 3 * 86400  # back-filled (补传) three days later: a new day, a new segment
    a.write([Entry(p["late"], clock.t, "cems/v1/MN0001/hj212", "accepted")])
    clock.t += 86400
    a.write([Entry(packet("MN0001", START + timedelta(days=4)), clock.t, "cems/v1/MN0001/hj212", "accepted")])
    a.close()
    return p


def reads(marks: list[dict[str, Any]] | None = None) -> CaseReads:
    return CaseReads(
        hourly=lambda mn, s, e: [{"time": "2026-12-01T00:00:00Z", "mn": mn, "pollutant": "a21026", "avg": 12.0}],
        events=lambda mn, s, e: [{"event_id": "e1", "mn": mn, "acked_by": "张三", "acked_at": "2026-12-01T09:00"}],
        alerts=lambda ids: [{"event_id": i, "update": "acknowledged"} for i in ids],
        marks=lambda mn, s, e: marks or [],
    )


def export(tmp_path: Path, **kw: Any) -> tuple[Path, dict[str, Any]]:
    out = tmp_path / "case.zip"
    req = CaseRequest("MN0001", START, END, "张三", (tmp_path / "evidence",))
    return out, export_case(req, parse_registry(one_outlet()), reads(**kw), out)


def test_selects_by_arrival_and_data_time_and_never_copies_other_outlets(tmp_path: Path) -> None:
    p = build_archive(tmp_path / "evidence")
    out, manifest = export(tmp_path, marks=[{"type": "停运", "from": "2026-12-01T08:00+08:00"}])
    with zipfile.ZipFile(out) as z:
        blob = b"".join(z.read(n) for n in z.namelist())
        readings = [json.loads(x) for x in z.read("readings.jsonl").splitlines()]
        marks = json.loads(z.read("marks.json"))
        acks = json.loads(z.read("acknowledgements.json"))
    import base64

    b64 = {k: base64.b64encode(v) for k, v in p.items()}
    assert b64["in"] in blob and b64["late"] in blob
    assert b64["other"] not in blob and b"MN0002" not in blob  # another enterprise's packet: never in the file
    by = {r["sha256"]: r["selected_by"] for r in readings}
    assert by[hashlib.sha256(p["in"]).hexdigest()] == ["arrival", "data_time"]
    assert by[hashlib.sha256(p["late"]).hexdigest()] == ["data_time"]  # arrived 3 days later
    assert hashlib.sha256(p["before"]).hexdigest() not in by  # in the same segment, not selected...
    assert b64["before"] in blob  # ...but kept in the packet file: the outlet's chain of the segment is whole
    assert [s["segment"] for s in manifest["segments"]] == ["20261201-001.jsonl", "20261204-001.jsonl"]
    assert marks == [{"type": "停运", "from": "2026-12-01T08:00+08:00"}]
    assert acks["acknowledgements"][0]["acked_by"] == "张三"
    assert acks["alert_history"] == [{"event_id": "e1", "update": "acknowledged"}]
    assert verify_case(out)[0] == []


def _rezip(src: Path, dst: Path, change: dict[str, bytes]) -> None:
    """Rewrite the case file with ``change`` and every digest (SHA256SUMS, manifest) recomputed."""
    with zipfile.ZipFile(src) as z:
        files = {n: change.get(n, z.read(n)) for n in z.namelist()}
    manifest = json.loads(files["manifest.json"])
    for n, meta in manifest["files"].items():
        meta.update(sha256=hashlib.sha256(files[n]).hexdigest(), size=len(files[n]))
    files["manifest.json"] = json.dumps(manifest).encode()
    del files["SHA256SUMS"]
    files["SHA256SUMS"] = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in files.items()).encode()
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)


def test_a_removed_packet_is_caught_even_with_every_digest_recomputed(tmp_path: Path) -> None:
    build_archive(tmp_path / "evidence")
    out, manifest = export(tmp_path)
    name = manifest["segments"][0]["file"]
    with zipfile.ZipFile(out) as z:
        lines = z.read(name).splitlines(keepends=True)
    assert json.loads(lines[1])["kind"] == "msg"
    forged = tmp_path / "forged.zip"
    _rezip(out, forged, {name: b"".join([lines[0], *lines[2:]])})
    problems = verify_case(forged)[0]
    assert problems and all(p.file in (name, "readings.jsonl") for p in problems), problems
    assert any("mn_prev" in p.what for p in problems)


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    build_archive(tmp_path / "evidence")
    out, _ = export(tmp_path)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(out) as z, zipfile.ZipFile(bad, "w") as w:
        for n in z.namelist():
            b = z.read(n)
            w.writestr(n, b.replace(b'"avg": 12.0', b'"avg": 1.0') if n == "hourly.jsonl" else b)
    assert [str(p) for p in verify_case(bad)[0]] == [
        "hourly.jsonl: SHA-256 does not match SHA256SUMS (the file was changed)",
        "hourly.jsonl: does not match manifest.json",
    ]


def test_empty_period_gives_an_empty_but_verifiable_case(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    out, manifest = export(tmp_path)
    assert manifest["segments"] == [] and verify_case(out)[0] == []
    assert datetime.fromisoformat(manifest["exported_at"]).tzinfo == UTC


def test_events_acknowledgements_and_alert_history_come_from_the_ingesters_state(tmp_path: Path) -> None:
    import sqlite3

    from cems.evidence._reads import case_reads
    from cems.service.compliance._state import STATE_SCHEMA
    from cems.service.outbox import OUTBOX_SCHEMA, OutboxRow, enqueue

    db = tmp_path / "compliance.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript(STATE_SCHEMA + OUTBOX_SCHEMA)
    ev = {"event_id": "e1", "type": "hourly_exceedance", "mn": "MN0001", "start": "2026-12-01T09:00:00+08:00"}
    far = {**ev, "event_id": "e2", "start": "2026-11-01T09:00:00+08:00", "end": "2026-11-01T10:00:00+08:00"}
    for e in (ev, far):
        conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (e["event_id"], e["type"], "MN0001", "E001", "130602", "open", json.dumps(e), "open", "opened",
             "2026-12-01T10:05:00+08:00", 1.0, 1.0, "张三", "2026-12-01T10:30:00+08:00", None, "已通知企业"),
        )  # fmt: skip
    body = json.dumps({**ev, "update": "acknowledged"}).encode()
    enqueue(
        conn,
        [OutboxRow("mqtt", "cems/alerts/v1/x", "e1", "a1", body), OutboxRow("webhook", "u", "e1", "a1", body)],
        5.0,
    )
    conn.commit()
    conn.close()
    reads = case_reads("http://127.0.0.1:9", "cems", db)  # InfluxDB is not asked for events or alerts
    events = reads.events("MN0001", START, END)
    assert [e["event_id"] for e in events] == ["e1"]  # e2 ended before the period
    assert (events[0]["acked_by"], events[0]["ack_note"]) == ("张三", "已通知企业")
    (alert,) = reads.alerts(["e1"])  # one per alert: the MQTT row, not each webhook's copy
    assert (alert["update"], alert["delivery"]) == ("acknowledged", "pending")


def test_a_case_from_the_segment_being_written_verifies_and_says_it_is_not_sealed(tmp_path: Path) -> None:
    a = EvidenceArchive(ArchiveSettings(tmp_path / "evidence", "ingester"), clock=Clock())
    a.open()
    a.write([Entry(packet("MN0001", START), START.timestamp() + 1, "cems/v1/MN0001/hj212", "accepted")])
    try:  # the ingester is still running: no seal yet
        out, manifest = export(tmp_path)
    finally:
        a.close()
    assert [s["sealed"] for s in manifest["segments"]] == [False]
    assert verify_case(out)[0] == []
