"""The evidence archive's writer, rebuilt for CPU (issue 20: a line's parts joined once, one look-up for the
JSON of a topic and of a verdict, ``via`` in one C call), writes the same segment files byte for byte as the
writer before it, and a bool in ``via`` is JSON (``true``), where that writer wrote Python's ``True``."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cems.devtools.bench._data import message, outlet
from cems.sinks.archive import (
    _DETAIL_MAX,
    _ENC,
    ArchiveSettings,
    Entry,
    EvidenceArchive,
    _b64,
    _sha256,
    check_segment,
    seal_line,
    segments,
    source_dir,
)

T0 = datetime(2026, 12, 2, 1, 0, tzinfo=UTC).timestamp()


class FormerWriter(EvidenceArchive):
    """The writer as it was before this change (commit 65dc28e): the reference for the byte comparison."""

    def __init__(self, settings: ArchiveSettings, **kw: object) -> None:
        super().__init__(settings, **kw)  # type: ignore[arg-type]
        self._via_templates: dict[tuple[str, ...], str] = {}

    def _write_group(self, groups: Sequence[Sequence[Entry]]) -> None:
        seg = self._seg
        assert seg is not None
        seq, chain = seg.seq, seg.chain
        header, tails = seg.header_chain, seg.tails
        changed: dict[str | None, tuple[str, int]] = {}
        out: list[bytes] = []
        for entries in groups:
            for e in entries:
                mn = e.mn if e.mn is not None else self._mn_of(e.topic)
                last = changed.get(mn) or tails.get(mn) or (header, 0)
                body = self._former_body(e, seq, chain, mn, last[0])
                chain = hashlib.sha256(body).hexdigest()
                out.append(body[:-1] + b',"chain":"' + chain.encode("ascii") + b'"}\n')
                changed[mn] = (chain, last[1] + 1)
                seq += 1
        data = b"".join(out)
        with open(seg.path, "ab") as f:
            f.write(data)
        seg.seq, seg.chain, seg.size = seq, chain, seg.size + len(data)
        tails.update(changed)

    def _former_body(self, e: Entry, seq: int, prev: str, mn: str | None, mn_prev: str) -> bytes:
        q = self._quoted
        payload = e.payload
        second, frac = divmod(e.arrival, 1.0)
        if second != self._iso_second:
            self._iso_second = second
            self._iso_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        us = min(round(frac * 1e6), 999_999)
        text = (
            f'{{"seq":{seq},"prev":"{prev}","kind":{q(e.kind)},"mn":{q(mn) if mn is not None else "null"},'
            f'"mn_prev":"{mn_prev}","arrival":"{self._iso_text}.{us:06d}Z","topic":{q(e.topic)},'
            f'"size":{len(payload)},"sha256":"{_sha256(payload).hexdigest()}","status":{q(e.status)}'
        )
        if e.reason is not None:
            text += ',"reason":' + q(e.reason)
        if e.detail:
            text += ',"detail":' + _ENC.encode(e.detail[:_DETAIL_MAX])
        via = e.via
        if via:
            keys = tuple(via)
            template = self._via_templates.get(keys)
            if template is None:
                template = ',"via":{' + ",".join(self._quoted(k).replace("%", "%%") + ":%s" for k in keys) + "}"
                self._via_templates[keys] = template
            text += template % tuple([v if isinstance(v, int) else q(v) for v in via.values()])
        if e.kind == "msg":
            return b"".join((text.encode("ascii"), b',"payload":"', _b64(payload, newline=False), b'"}'))
        return (text + "}").encode("ascii")


def mixed_batches() -> list[list[Entry]]:
    """Benchmark JSON readings and HJ 212 packets, accepted, rejected (reasons, details with quotes, control
    and non-ASCII characters, longer than kept), held, commands, later verdicts, non-UTF-8 and empty
    payloads, a given MN, topics outside the data prefix, several ``via`` shapes."""
    rng = random.Random(5)
    batches: list[list[Entry]] = []
    for b in range(6):
        batch: list[Entry] = []
        for i in range(40):
            o = outlet(i % 7)
            t = datetime.fromtimestamp(T0 + 60 * (b * 40 + i), UTC)
            topic, payload = message(o, t, rng, hj212_packet=i % 2 == 0, exceed=i % 11 == 0)
            arrival = T0 + b * 40 + i + rng.choice((0.0, 0.123456, 0.9999999, rng.random()))
            connection: str | int = b if b % 2 else f"cems-ingest-{b}@tcp://broker:1883"  # (the ingester's: ints)
            via = {"connection": connection, "packet_id": 1 + i, "qos": 1}
            match i % 10:
                case 3:
                    payload = b'{"mn":"\xff\xfe bad utf-8 \x00\x80"}'
                    batch.append(Entry(payload, arrival, topic, "rejected", "not_utf8", "payload is not UTF-8",
                                       via=via))  # fmt: skip
                case 4:
                    detail = 'field "a21026-Rtd": 值 \\ 不是数字\n\t' * 20
                    batch.append(Entry(payload, arrival, topic, "rejected", "bad_field", detail, via=via))
                case 5:
                    batch.append(Entry(payload, arrival, topic, "held", via=via))
                    batch.append(Entry(payload, arrival, topic, "rejected", "database_rejected", kind="verdict"))
                case 6:
                    batch.append(
                        Entry(b"", arrival, "cems/cmd/ack", "command", via={"peer": "10.0.0.1:5000", "n%s": 2})
                    )
                case 7:
                    batch.append(Entry(payload, arrival, "other/topic/x", "rejected", "bad_topic", "", via=via))
                case 8:
                    batch.append(Entry(payload, arrival, topic, "published", mn="MN-given", via={"connection": 0}))
                case _:
                    batch.append(Entry(payload, arrival, topic, "accepted", via=via))
        batches.append(batch)
    return batches


def write(cls: type[EvidenceArchive], directory: Path, batches: list[list[Entry]]) -> bytes:
    a = cls(ArchiveSettings(directory, "ingester-1"), clock=lambda: T0 + 3600)
    a.open()
    a.write(batches[0])
    a._write_group(batches[1:3])  # a group commit of two batches
    for batch in batches[3:]:
        a.write(batch)
    a.close()
    (seg,) = segments(source_dir(directory, "ingester-1"))
    assert check_segment(seg).problems == []
    return seg.read_bytes()


def test_segments_are_byte_identical_to_the_former_writers(tmp_path: Path) -> None:
    batches = mixed_batches()
    assert any(e.kind == "verdict" for b in batches for e in b) and any(b"\xff" in e.payload for e in batches[0])
    former = write(FormerWriter, tmp_path / "former", batches)
    now = write(EvidenceArchive, tmp_path / "now", batches)
    assert len(now.splitlines()) == 1 + sum(map(len, batches)) + 9 + 1  # header, lines, 9 seals, close
    assert now == former


def test_a_bool_in_via_is_written_as_json(tmp_path: Path) -> None:
    e = Entry(b"x", T0, "cems/v1/MN1/rtd", "accepted", via={"connection": "c", "retain": True, "dup": False})
    a = EvidenceArchive(ArchiveSettings(tmp_path, "s"), clock=lambda: T0)
    a.open()
    a.write([e])
    a.close()
    (seg,) = segments(source_dir(tmp_path, "s"))
    assert check_segment(seg).problems == []
    line = seg.read_bytes().splitlines()[1]
    assert json.loads(line)["via"] == {"connection": "c", "retain": True, "dup": False}
    assert b'"via":{"connection":"c","retain":true,"dup":false}' in line
    # (the former writer wrote Python's spelling, which no JSON reader accepts)
    former = FormerWriter(ArchiveSettings(tmp_path / "former", "s"), clock=lambda: T0)
    body = former._former_body(e, 1, "a" * 64, "MN1", "b" * 64)
    assert b'"retain":True' in body
    rec = json.loads(line)
    rec.pop("chain")
    assert seal_line(rec)[0] == line + b"\n"  # the one spelling: json's


def test_arrival_microseconds_are_rounded_as_before(tmp_path: Path) -> None:
    """The writer's microsecond digits (``%06.0f``, one C call) are those of the former
    ``min(round(frac * 1e6), 999_999)``: round half to even, never 1000000 — ties, the last microsecond, the
    fractions just below a second, random arrivals, through the hot path (:meth:`EvidenceArchive._body`)."""
    rng = random.Random(7)
    fracs = [0.0, 0.5e-6, 1.5e-6, 2.5e-6, 0.1234565, 0.9999994, 0.9999995, 0.99999951, 0.9999999, 1 - 2**-53]
    fracs += [(k + 0.5) / 1e6 for k in range(0, 1_000_000, 997)]
    arrivals = [T0 + f for f in fracs] + [f for f in fracs[1:]] + [T0 + rng.random() * 1e6 for _ in range(3000)]
    a = EvidenceArchive(ArchiveSettings(tmp_path, "s"))
    seen = set()
    for arrival in arrivals:
        body = a._body(Entry(b"x", arrival, "cems/v1/MN1/rtd", "accepted"), 1, "a" * 64, "MN1", "b" * 64)
        second, frac = divmod(arrival, 1.0)
        us = min(round(frac * 1e6), 999_999)
        seen.add(us)
        expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{us:06d}Z"
        assert json.loads(body)["arrival"] == expected, arrival
    assert {0, 2, 999_999} <= seen  # (ties to even; the cap)
