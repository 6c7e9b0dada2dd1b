"""The evidence archive's format (cems/sinks/archive.py): the hash chain, tampering, crash recovery and
retention."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cems.errors import ArchiveError
from cems.sinks.archive import (
    ArchiveSettings,
    Entry,
    EvidenceArchive,
    check_directory,
    check_segment,
    segments,
    source_dir,
)

DAY = 86400.0
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def entry(mn: str, i: int, status: str = "accepted", **kw: object) -> Entry:
    return Entry(f"##packet {mn} {i}".encode(), T0 + i, f"cems/v1/{mn}/hj212", status, **kw)  # type: ignore[arg-type]


def archive(tmp_path: Path, clock: Clock, **kw: object) -> EvidenceArchive:
    a = EvidenceArchive(ArchiveSettings(tmp_path, "ingester-1", **kw), clock=clock)  # type: ignore[arg-type]
    a.open()
    return a


def seg_dir(tmp_path: Path) -> Path:
    return source_dir(tmp_path, "ingester-1")


def test_lines_chain_and_per_outlet_links(tmp_path: Path) -> None:
    a = archive(tmp_path, Clock())
    a.write([entry("MN1", 1), entry("MN2", 2, "rejected", reason="bad_password", detail="wrong PW")])
    a.write([entry("MN1", 3), entry("MN1", 3, "rejected", reason="database_rejected", kind="verdict")])
    a.close()
    (seg,) = segments(seg_dir(tmp_path))
    check = check_segment(seg)
    assert check.problems == [] and check.sealed
    recs = [json.loads(x) for x in seg.read_bytes().splitlines()]
    kinds = [r["kind"] for r in recs]
    assert kinds == ["header", "msg", "msg", "msg", "verdict", "seal", "seal", "close"]
    for before, after in itertools.pairwise(recs):
        assert after["prev"] == before["chain"]
    mn1 = [r for r in recs if r.get("mn") == "MN1"]
    assert mn1[0]["mn_prev"] == recs[0]["chain"]
    assert [r["mn_prev"] for r in mn1[1:]] == [r["chain"] for r in mn1[:-1]]
    assert mn1[-1]["kind"] == "seal" and mn1[-1]["records"] == 3
    assert base64.b64decode(recs[1]["payload"]) == b"##packet MN1 1"
    assert recs[2]["reason"] == "bad_password" and recs[2]["status"] == "rejected"
    assert "payload" not in recs[4]


def _rewrite(path: Path, fn: object) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(fn(lines)))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda ls: [ls[0], ls[1].replace(b'"accepted"', b'"rejected"'), *ls[2:]], "the line was changed"),
        (lambda ls: [ls[0], *ls[2:]], "prev does not match"),  # a line removed
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "prev does not match"),  # reordered
        (lambda ls: [*ls[:-1], ls[-1][:-20]], "torn last line"),  # truncated
    ],
)
def test_tampered_segment_is_detected(tmp_path: Path, tamper: object, expected: str) -> None:
    a = archive(tmp_path, Clock())
    a.write([entry("MN1", i) for i in range(4)])
    a.close()
    (seg,) = segments(seg_dir(tmp_path))
    _rewrite(seg, tamper)
    problems = check_segment(seg).problems
    assert problems and expected in " ".join(problems), problems


def test_one_changed_payload_byte_is_detected_even_with_the_chain_recomputed(tmp_path: Path) -> None:
    a = archive(tmp_path, Clock())
    a.write([entry("MN1", 1)])
    a.close()
    (seg,) = segments(seg_dir(tmp_path))
    lines = seg.read_bytes().splitlines()
    rec = json.loads(lines[1])
    rec["payload"] = base64.b64encode(b"##packet MN1 9").decode()
    del rec["chain"]
    from cems.sinks.archive import seal_line

    forged, _ = seal_line(rec)  # a forger who recomputes this line's chain still breaks the next line's prev
    seg.write_bytes(b"\n".join([lines[0], forged.rstrip(b"\n"), *lines[2:]]) + b"\n")
    problems = " ".join(check_segment(seg).problems)
    assert "payload does not match" in problems


def test_segments_chain_across_days_and_a_removed_segment_is_detected(tmp_path: Path) -> None:
    clock = Clock()
    a = archive(tmp_path, clock)
    for d in range(3):
        clock.t = T0 + d * DAY
        a.write([entry("MN1", d)])
    a.close()
    segs = segments(seg_dir(tmp_path))
    assert [p.name for p in segs] == ["20261201-001.jsonl", "20261202-001.jsonl", "20261203-001.jsonl"]
    checks, problems = check_directory(seg_dir(tmp_path))
    assert problems == [] and all(c.sealed for c in checks)
    segs[1].unlink()
    _, problems = check_directory(seg_dir(tmp_path))
    assert any("does not continue" in p for p in problems)


def test_crash_recovery_cuts_the_torn_line_and_seals(tmp_path: Path) -> None:
    a = archive(tmp_path, Clock())
    a.write([entry("MN1", 1), entry("MN1", 2)])
    seg = a._seg
    assert seg is not None
    import os

    os.write(seg.fd, b'{"seq":3,"prev":"half a line')  # the crash came mid-write
    os.close(seg.fd)  # no seal: as after SIGKILL
    a._seg = None
    a.close()
    b = archive(tmp_path, Clock(T0 + 60))
    b.write([entry("MN1", 3)])
    b.close()
    first, second = segments(seg_dir(tmp_path))
    assert check_segment(first).problems == [] and check_segment(first).sealed
    close = json.loads(first.read_bytes().splitlines()[-1])
    assert close["why"] == "recovered" and close["torn_bytes"] == len(b'{"seq":3,"prev":"half a line')
    header = json.loads(second.read_bytes().splitlines()[0])
    assert header["previous"]["state"] == "recovered"
    assert check_directory(seg_dir(tmp_path))[1] == []


def test_retention_deletes_only_whole_old_segments_and_says_so(tmp_path: Path) -> None:
    clock = Clock()
    a = archive(tmp_path, clock, retention_days=2)
    for d in range(5):
        clock.t = T0 + d * DAY
        a.write([entry("MN1", d)])
    a.close()
    names = [p.name for p in segments(seg_dir(tmp_path))]
    # the day-4 rotation keeps day 2 onwards (days ≥ today − 2); nothing is cut inside a segment
    assert names == ["20261203-001.jsonl", "20261204-001.jsonl", "20261205-001.jsonl"]
    for p in segments(seg_dir(tmp_path)):
        assert check_segment(p).problems == []
    headers = [json.loads(p.read_bytes().splitlines()[0]) for p in segments(seg_dir(tmp_path))]
    deleted = [d["segment"] for h in headers for d in h["deleted"]]
    assert "20261202-001.jsonl" in deleted
    # the oldest kept segment continues one that is gone: reported as such, not as tampering inside
    _, problems = check_directory(seg_dir(tmp_path))
    assert problems == []


def test_a_second_writer_on_the_same_source_is_refused(tmp_path: Path) -> None:
    a = archive(tmp_path, Clock())
    with pytest.raises(ArchiveError, match="in use"):
        archive(tmp_path, Clock())
    a.close()


def test_append_from_the_event_loop_groups_batches(tmp_path: Path) -> None:
    a = archive(tmp_path, Clock())

    async def main() -> None:
        await asyncio.gather(*(a.append([entry("MN1", i)]) for i in range(50)))

    asyncio.run(main())
    a.close()
    assert a.lines_written == 50 and 1 <= a.fsyncs <= 50
    (seg,) = segments(seg_dir(tmp_path))
    assert check_segment(seg).problems == []


@pytest.mark.parametrize(
    "e",
    [
        Entry(
            b'{"x":1}\xff',
            T0 + 0.123456,
            "cems/v1/MN1/rtd",
            "accepted",
            via={"connection": 1, "packet_id": 7, "qos": 1},
        ),
        Entry(b"##0000", T0 + 0.9999999, "cems/v1/MN1/hj212", "rejected", "bad_field", 'a "é" \\' * 80, kind="verdict"),
        Entry(b"", T0, "other/topic", "command", via={"peer": "10.0.0.1:5000", "n%s": 2}),
        Entry(b"p", T0 + 1.5, "cems/v1/MN2/rtd", "held", mn="MN2", via={"connection": 0, "packet_id": 1, "qos": 0}),
    ],
)
def test_message_lines_are_the_json_of_their_fields(e: Entry) -> None:
    """The hand-built message line (the hot path) is byte for byte ``seal_line`` of the same fields: the one
    spelling the chain and ``cems evidence verify`` rely on."""
    from cems.sinks.archive import iso, seal_line

    a = EvidenceArchive(ArchiveSettings(Path("/nonexistent"), "s"))
    for _ in range(2):  # (the second time from the archive's caches)
        mn = e.mn if e.mn is not None else a._mn_of(e.topic)
        body = a._body(e, 12, "a" * 64, mn, "b" * 64)
        rec: dict[str, object] = {"seq": 12, "prev": "a" * 64, "kind": e.kind, "mn": mn, "mn_prev": "b" * 64,
               "arrival": iso(e.arrival), "topic": e.topic, "size": len(e.payload),
               "sha256": hashlib.sha256(e.payload).hexdigest(), "status": e.status}  # fmt: skip
        if e.reason is not None:
            rec["reason"] = e.reason
        if e.detail:
            rec["detail"] = e.detail[:300]
        if e.via:
            rec["via"] = dict(e.via)
        if e.kind == "msg":
            rec["payload"] = base64.b64encode(e.payload).decode()
        line, chain = seal_line(rec)
        assert body[:-1] + b',"chain":"' + chain.encode() + b'"}\n' == line


def test_plain_topics_keep_only_their_mn_and_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory (issue 20): a topic and MN that JSON spells as themselves between quotes are remembered as the MN
    alone; the lines are the bytes the full spelling gives (that path forced by a pattern nothing matches)."""
    import re

    from cems.sinks import archive as archive_module

    odd = ["MN1", 'M"N', "M\\N", "计量MN", "M\u0001N", "MN~ !#[]"]  # plain ones, and ones JSON escapes
    batches = [
        [entry(mn, i) for i, mn in enumerate(odd)],
        [entry("MN1", 9), Entry(b"x", T0 + 9, "other/topic", "rejected", reason="unknown_topic")],
        [Entry(b"y", T0 + 10, "cems/v1/MN2/hj212", "accepted", mn="MN2")],
        [entry("MN1", 11, "rejected", reason="r", kind="verdict")],
        [entry(mn, 20 + i) for i, mn in enumerate(odd)],  # remembered now
    ]
    files = []
    for name, plain in (("plain", None), ("full", re.compile(r"(?!)"))):
        if plain is not None:
            monkeypatch.setattr(archive_module, "_PLAIN", plain)
        d = tmp_path / name
        a = archive(d, Clock())
        for b in batches:
            a.write(b)
        kept = dict(a._topics)
        a.close()
        (seg,) = segments(source_dir(d, "ingester-1"))
        assert check_segment(seg).problems == []
        files.append(seg.read_bytes())
        if plain is None:
            assert kept["cems/v1/MN1/hj212"] == "MN1" and kept["cems/v1/MN~ !#[]/hj212"] == "MN~ !#[]"
            assert all(type(kept[f"cems/v1/{mn}/hj212"]) is tuple for mn in odd[1:5])
            assert type(kept["other/topic"]) is tuple
    assert files[0] == files[1]
