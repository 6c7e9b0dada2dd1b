"""The evidence archive: every raw message as received, append-only, in hash-chained segment files.

Why: monitoring data are evidence in a penalty case only inside an unbroken chain (DOMAIN.md §1, §9), and
until now only the parsed fields survived a message.  The archive keeps the bytes, when they arrived (UTC),
on which topic and connection, their SHA-256, the outlet (MN) and the verdict (accepted, rejected with the
dead-letter reason, held, command), durably before the message is acknowledged (docs/evidence.md).

Format (``cems.evidence/1``): one directory per source (an ingester's client id, a bridge's name), one
segment file per UTC day (``YYYYMMDD-NNN.jsonl``; a new one at each start and at ``segment_max_bytes``), each
line one JSON object in ASCII whose last key is ``chain``::

    {"seq":1,"prev":"<chain of line 0>","kind":"msg","mn":"MN0001","mn_prev":"<chain>",...,"chain":"<hex>"}

``chain`` = SHA-256 of the line's *body*: the line without its last 76 bytes (``,"chain":"<64 hex>"}``)
and with ``}`` in their place.  Every body holds ``prev``, the chain of the line before (the first line of a
segment: the last chain of the source's previous segment), so lines cannot be changed, removed or reordered
without breaking the chain, and the chain runs on across segments.  ``mn_prev`` links the lines of one
outlet within a segment (header → first → … → ``seal``), so an export holding only one outlet's lines
(:mod:`cems.evidence`) proves that none of that outlet's lines is missing, without showing other
enterprises' data.  Kinds: ``header`` (first line), ``msg`` (a message, payload base64), ``verdict`` (a later
verdict on a message already archived, by its arrival and SHA-256, without the payload), ``seal`` (one per
outlet when the segment closes: its line count) and ``close`` (last line).

Crash: a line is written and fsync'd before the message's acknowledgement; a segment a crash left open is
sealed at the next start ("recovered"), after cutting a torn last line (bytes never fsync'd, never
acknowledged: their length and SHA-256 are kept in the ``close`` line).  Retention deletes only whole
segments whose day is older than ``retention_days`` and records the deletion in the next header.

Blocking file work runs in one writer thread; :meth:`EvidenceArchive.append` hands it a batch and awaits the
fsync, and batches queued meanwhile share one fsync (group commit).  Measured: docs/benchmark.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

from cems.config import private_dir
from cems.errors import ArchiveError as ArchiveError  # declared in cems.errors, re-exported

log = logging.getLogger(__name__)

FORMAT: Final = "cems.evidence/1"
#: 排污许可管理条例 (国务院令第736号, 2021) 第十九条: 原始监测记录保存期限不得少于5年 [verify against the
#: official text].  Five years hold at most two 29 Februaries: 5 × 365 + 2 days (docs/evidence.md).
DEFAULT_RETENTION_DAYS: Final = 1827
DEFAULT_SEGMENT_MAX_BYTES: Final = 1 << 30
GENESIS: Final = "0" * 64
#: Bytes after a line's body: ``,"chain":"`` + 64 hex digits + ``"}``.
_TAIL: Final = 76
_DETAIL_MAX: Final = 300
_SEGMENT_RE: Final = re.compile(r"^(\d{8})-(\d{3,})\.jsonl$")
_SAFE_SOURCE: Final = re.compile(r"[^A-Za-z0-9._-]")
#: JSON of the writer's lines: compact, ASCII (the chain hashes bytes: one spelling only).
_ENC: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, check_circular=False)
#: Topics whose MN and JSON spelling are remembered (a city's topics; cleared beyond).
_CACHE_MAX: Final = 1_000_000
#: A string that :data:`_ENC` spells as itself between quotes: printable ASCII but ``"`` and ``\``.
_PLAIN: Final = re.compile(r"[ !#-\[\]-~]*")
_sha256: Final = hashlib.sha256
_b64: Final = binascii.b2a_base64

#: ``via`` values that go into its template as they are (``%s`` of an int is its JSON; not a bool's).
_INTS: Final = frozenset((int,))
#: A line's microseconds: ``%.0f`` rounds half to even, as ``round`` does (the correctly rounded decimal).
_US: Final = "%06.0f"


class Entry(NamedTuple):
    """One message to archive (``kind`` ``msg``), or a later verdict on one (``verdict``: the payload is only
    hashed).  ``mn`` is taken from the topic when not given (:class:`ArchiveSettings` ``topic_prefixes``)."""

    payload: bytes
    arrival: float  # Unix time of arrival
    topic: str
    status: str  # accepted | rejected | held | command | published | ...
    reason: str | None = None
    detail: str | None = None
    kind: str = "msg"
    #: Where it came from: the MQTT connection and packet id, a TCP peer, ...
    via: Mapping[str, str | int] | None = None
    mn: str | None = None


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    directory: Path
    #: The writer's name (an ingester's client id): its own sub-directory, one writer at a time (locked).
    source: str
    retention_days: int = DEFAULT_RETENTION_DAYS
    segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES
    #: Topic prefixes followed by the MN (``cems/v1`` → ``cems/v1/{mn}/…``).
    topic_prefixes: tuple[str, ...] = ("cems/v1",)
    #: Written in every segment header (broker URL without credentials, client id, ...).
    attrs: Mapping[str, str] = field(default_factory=dict)
    #: Pending batches before :meth:`EvidenceArchive.append` waits.
    queue_size: int = 64


def source_dir(directory: Path, source: str) -> Path:
    return directory / (_SAFE_SOURCE.sub("_", source) or "_")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------------ line format


def seal_line(body: dict[str, Any]) -> tuple[bytes, str]:
    """The line (with newline) of ``body`` and its chain.  ``body`` must not hold ``chain``."""
    raw = _ENC.encode(body).encode("ascii")
    chain = hashlib.sha256(raw).hexdigest()
    return raw[:-1] + b',"chain":"' + chain.encode("ascii") + b'"}\n', chain


def line_body(line: bytes) -> tuple[bytes, str]:
    """(body, chain written in it) of one line (without its newline); ``ValueError`` if it is not one."""
    if len(line) < _TAIL + 2 or not line.endswith(b'"}') or line[-_TAIL : -_TAIL + 10] != b',"chain":"':
        raise ValueError("not an evidence line (no trailing chain)")
    return line[:-_TAIL] + b"}", line[-_TAIL + 10 : -2].decode("ascii")


def check_line(line: bytes) -> dict[str, Any]:
    """Parse a line and check its own chain (SHA-256 of its body) and, for a message, its payload's SHA-256;
    ``ValueError`` saying what is wrong."""
    body, chain = line_body(line)
    if hashlib.sha256(body).hexdigest() != chain:
        raise ValueError("chain does not match the line (the line was changed)")
    rec: dict[str, Any] = json.loads(line)
    if rec.get("kind") == "msg":
        payload = base64.b64decode(rec["payload"], validate=True)
        if hashlib.sha256(payload).hexdigest() != rec.get("sha256") or len(payload) != rec.get("size"):
            raise ValueError("payload does not match its sha256/size")
    return rec


def _segment_number(path: Path) -> int:
    m = _SEGMENT_RE.match(path.name)
    return int(m.group(2)) if m else 0


def segment_day(path: Path) -> date | None:
    m = _SEGMENT_RE.match(path.name)
    return datetime.strptime(m.group(1), "%Y%m%d").date() if m else None


def segments(directory: Path) -> list[Path]:
    """The segment files of one source directory, oldest first."""

    def key(p: Path) -> tuple[str, int]:
        m = _SEGMENT_RE.match(p.name)
        assert m is not None
        return m.group(1), int(m.group(2))

    return sorted((p for p in directory.glob("*.jsonl") if _SEGMENT_RE.match(p.name)), key=key)


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """(complete lines without newlines, torn tail)."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], data[end:]


# ---------------------------------------------------------------------------------------------- verification


@dataclass
class SegmentCheck:
    path: Path
    lines: int = 0
    first_prev: str | None = None
    last_chain: str | None = None
    sealed: bool = False
    problems: list[str] = field(default_factory=list)


def check_segment(path: Path, data: bytes | None = None) -> SegmentCheck:
    """Check one whole segment: every line's chain, the ``prev`` links, ``seq`` order, payload hashes, the
    per-outlet links and seals.  A segment without its ``close`` line is reported ``sealed = False`` (the live
    one, or one a crash left open) — not a problem by itself; a torn last line is one."""
    res = SegmentCheck(path)
    raw = path.read_bytes() if data is None else data
    lines, torn = split_lines(raw)
    if torn:
        res.problems.append(f"{path.name}: torn last line ({len(torn)} bytes without a newline)")
    prev: str | None = None
    tails: dict[str | None, tuple[str, int]] = {}
    header_chain: str | None = None
    for n, line in enumerate(lines, 1):
        where = f"{path.name}: line {n}"
        try:
            rec = check_line(line)
        except (ValueError, KeyError, TypeError) as e:
            res.problems.append(f"{where}: {e}")
            return res
        chain = line_body(line)[1]
        if rec.get("seq") != n - 1:
            res.problems.append(f"{where}: seq {rec.get('seq')} where {n - 1} was expected (reordered or removed)")
        if prev is None:
            res.first_prev = rec.get("prev")
        elif rec.get("prev") != prev:
            res.problems.append(f"{where}: prev does not match the line before (a line removed or reordered)")
        kind = rec.get("kind")
        if n == 1:
            if kind != "header":
                res.problems.append(f"{where}: the first line is not a header")
            header_chain = chain
        elif kind in ("msg", "verdict", "seal"):
            mn = rec.get("mn")
            last, count = tails.get(mn, (header_chain or "", 0))
            if rec.get("mn_prev") != last:
                res.problems.append(f"{where}: mn_prev does not match MN {mn}'s line before (one of its lines removed)")
            if kind == "seal":
                if rec.get("records") != count:
                    res.problems.append(f"{where}: seal of MN {mn} counts {rec.get('records')} lines, found {count}")
            else:
                tails[mn] = (chain, count + 1)
        elif kind == "close":
            res.sealed = True
            if n != len(lines):
                res.problems.append(f"{where}: lines after the close line")
        prev = chain
        res.lines = n
        res.last_chain = chain
    return res


def check_directory(directory: Path) -> tuple[list[SegmentCheck], list[str]]:
    """Check every segment of one source directory and the chain from each segment to the next."""
    checks = [check_segment(p) for p in segments(directory)]
    problems = [p for c in checks for p in c.problems]
    for before, after in itertools.pairwise(checks):
        if after.first_prev != before.last_chain:
            problems.append(f"{after.path.name}: does not continue {before.path.name} (a segment removed or changed)")
        if not before.sealed:
            problems.append(f"{before.path.name}: not sealed, yet a later segment exists")
    return checks, problems


# ----------------------------------------------------------------------------------------------------- writer


@dataclass
class _Segment:
    path: Path
    fd: int
    day: date
    seq: int  # next line's seq
    chain: str  # last line's chain
    size: int
    header_chain: str
    tails: dict[str | None, tuple[str, int]] = field(default_factory=dict)


class EvidenceArchive:
    """The archive of one source.  :meth:`open` (blocking: lock, recover, retention) and :meth:`close` from a
    worker thread or before the loop runs; :meth:`append` from the event loop."""

    def __init__(self, settings: ArchiveSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.dir = source_dir(settings.directory, settings.source)
        self.clock = clock
        self._seg: _Segment | None = None
        self._lock_fd: int | None = None
        self._queue: queue.Queue[tuple[Sequence[Entry], concurrent.futures.Future[None]] | None] = queue.Queue(
            settings.queue_size
        )
        self._thread: threading.Thread | None = None
        self._broken: str | None = None
        #: JSON of MNs, statuses, reasons
        self._strings: dict[str, str] = {}
        #: per topic: its MN and the JSON of both (one look-up a message); only the MN when the JSON of both is
        #: the text between quotes (a city's topics: memory, issue 20, ≈ 0.26 KB an outlet less)
        self._topics: dict[str, str | tuple[str | None, str, str]] = {}
        #: per (kind, status, reason): the JSON of ``"kind":…`` and of ``"status":…[,"reason":…]``
        self._verdicts: dict[tuple[str, str, str | None], tuple[str, str]] = {}
        self._via_templates: dict[tuple[str, ...], str] = {}
        self._iso_second = -1.0
        self._iso_text = ""
        #: Lines written and fsyncs done (group commits), for tests and metrics.
        self.lines_written = 0
        self.fsyncs = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    def open(self) -> None:
        private_dir(self.dir)
        self._lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ArchiveError(
                f"evidence archive {self.dir} is in use by another process: give each ingester its own --client-id"
            ) from None
        previous = self._recover()
        deleted = self._retention()
        self._start_segment(previous, deleted)
        self._thread = threading.Thread(target=self._run, name="cems-evidence", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._seg is not None:
            with contextlib.suppress(OSError):
                self._seal("stop")
            os.close(self._seg.fd)
            self._seg = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def append(self, entries: Sequence[Entry]) -> None:
        """Archive ``entries`` durably (written and fsync'd) before returning; :class:`ArchiveError` if not."""
        if not entries:
            return
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._queue.put_nowait((entries, fut))
        except queue.Full:
            await asyncio.to_thread(self._queue.put, (entries, fut))
        await asyncio.wrap_future(fut)

    def write(self, entries: Sequence[Entry]) -> None:
        """Blocking :meth:`append` (from the writer thread's side: only when no thread runs, e.g. tests)."""
        self._write_group([entries])

    # -- writer thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            stop = False
            while True:  # group commit: whatever queued meanwhile shares the fsync
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            try:
                self._write_group([e for e, _ in group])
            except BaseException as e:  # reported to every waiting caller; the archive stays consistent
                err = e if isinstance(e, ArchiveError) else ArchiveError(f"evidence archive {self.dir}: {e}")
                for _, f in group:
                    f.set_exception(err)
            else:
                for _, f in group:
                    f.set_result(None)
            if stop:
                return

    def _write_group(self, groups: Sequence[Sequence[Entry]]) -> None:
        if self._broken is not None:
            raise ArchiveError(self._broken)
        now = self.clock()
        seg = self._seg
        if seg is None:
            raise ArchiveError(f"evidence archive {self.dir}: no segment open (a rotation failed): restart")
        if datetime.fromtimestamp(now, UTC).date() != seg.day or seg.size >= self.settings.segment_max_bytes:
            self._rotate()
            seg = self._seg
            assert seg is not None
        seq0 = seg.seq
        out, changed, seq, chain = self._lines(groups, seq0, seg.chain, seg.header_chain, seg.tails)
        data = b"".join(out)
        try:
            _write_all(seg.fd, data)
            os.fsync(seg.fd)
        except OSError as e:
            try:  # our own unacknowledged bytes: cut them, so the file stays a valid chain
                os.ftruncate(seg.fd, seg.size)
            except OSError as e2:
                self._broken = f"evidence archive {seg.path}: cannot undo a failed write ({e2}); restart the ingester"
                log.error("%s", self._broken)
            raise ArchiveError(f"evidence archive {seg.path}: write failed: {e}") from e
        seg.seq, seg.chain, seg.size = seq, chain, seg.size + len(data)
        seg.tails.update(changed)
        self.lines_written += seq - seq0
        self.fsyncs += 1

    def _lines(
        self,
        groups: Sequence[Sequence[Entry]],
        seq: int,
        chain: str,
        header: str,
        tails: Mapping[str | None, tuple[str, int]],
    ) -> tuple[list[bytes], dict[str | None, tuple[str, int]], int, str]:
        """The lines of ``groups``' entries after line ``seq - 1`` (whose chain is ``chain``): (their parts,
        joined once — no copy of a line, nor of its payload's base64 —; the outlets' new (chain, count), merged
        into ``tails`` once durable; the next seq; the last chain).  A line body is built directly (≈ 3 times
        faster than a dict through ``json.dumps``: one per message), the same JSON as :func:`seal_line` writes
        (``tests/unit/test_evidence_archive.py``).  One Python frame for the whole batch (issue 20: the entry
        unpacked once, no call per line but the C ones; was a method call per line, ≈ 14 % of the writer's
        instructions: docs/benchmark.md)."""
        changed: dict[str | None, tuple[str, int]] = {}
        out: list[bytes] = []
        topics, verdicts, templates = self._topics, self._verdicts, self._via_templates
        iso_second, iso_text = self._iso_second, self._iso_text
        sha, b64, ints = _sha256, _b64, _INTS
        mn: str | None
        for entries in groups:
            for payload, arrival, topic, status, reason, detail, kind, via, given_mn in entries:
                spelled = topics.get(topic) or self._topic(topic)
                # a plain topic and MN (see _topic): their JSON is them between quotes, which the line's
                # f-string writes around them (qt, qm: no string made for it)
                if type(spelled) is str:
                    topic_json, qt = topic, '"'
                    if given_mn is None:
                        mn, mn_json, qm = spelled, spelled, '"'
                    else:
                        mn, mn_json, qm = given_mn, self._quoted(given_mn), ""
                else:
                    topic_json, qt = spelled[2], ""
                    if given_mn is None:
                        mn, mn_json, qm = spelled[0], spelled[1], ""
                    else:
                        mn, mn_json, qm = given_mn, self._quoted(given_mn), ""
                verdict = verdicts.get((kind, status, reason)) or self._verdict(kind, status, reason)
                last = changed.get(mn) or tails.get(mn) or (header, 0)
                second, frac = divmod(arrival, 1.0)
                if second != iso_second:  # (NaN, infinities: fromtimestamp raises)
                    iso_second = second
                    iso_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
                # the microseconds, rounded half to even (as round()) and at most 999999 (frac < 1): the digits
                # of f"{min(round(frac * 1e6), 999_999):06d}" in one C call (≈ half its instructions)
                us = frac * 1e6
                text = (
                    f'{{"seq":{seq},"prev":"{chain}","kind":{verdict[0]},"mn":{qm}{mn_json}{qm},'
                    f'"mn_prev":"{last[0]}","arrival":"{iso_text}.{_US % us if us < 999_999.5 else "999999"}Z",'
                    f'"topic":{qt}{topic_json}{qt},"size":{len(payload)},"sha256":"{sha(payload).hexdigest()}",'
                    f'"status":{verdict[1]}'
                )
                if detail:
                    text += ',"detail":' + _ENC.encode(detail[:_DETAIL_MAX])
                if via:
                    keys = tuple(via)
                    template = templates.get(keys) or self._via_template(keys)
                    values = tuple(via.values())
                    if ints.issuperset(map(type, values)):  # all ints (the ingester's): no Python loop
                        text += template % values
                    else:  # (a bool as JSON's true/false, not Python's True)
                        q = self._quoted
                        spelled_values = [
                            v if type(v) is int else q(v) if type(v) is str else _ENC.encode(v) for v in values
                        ]
                        text += template % tuple(spelled_values)
                if kind == "msg":  # body: head + the payload's base64 (straight as bytes: no str made of it) + '"}'
                    head = (text + ',"payload":"').encode("ascii")
                    encoded = b64(payload, newline=False)
                    h = sha(head)
                    h.update(encoded)
                    h.update(b'"}')
                    chain = h.hexdigest()
                    out += (head, encoded, b'","chain":"', chain.encode("ascii"), b'"}\n')
                else:  # body: head + "}"
                    head = text.encode("ascii")
                    h = sha(head)
                    h.update(b"}")
                    chain = h.hexdigest()
                    out += (head, b',"chain":"', chain.encode("ascii"), b'"}\n')
                changed[mn] = (chain, last[1] + 1)
                seq += 1
        self._iso_second, self._iso_text = iso_second, iso_text
        return out, changed, seq, chain

    def _mn_of(self, topic: str) -> str | None:
        spelled = self._topics.get(topic) or self._topic(topic)
        return spelled if type(spelled) is str else spelled[0]

    def _quoted(self, text: str) -> str:
        """``text`` as a JSON string (topics, MNs, statuses repeat: remembered)."""
        quoted = self._strings.get(text)
        if quoted is None:
            if len(self._strings) >= _CACHE_MAX:
                self._strings.clear()
            quoted = self._strings[text] = _ENC.encode(text)
        return quoted

    def _topic(self, topic: str) -> str | tuple[str | None, str, str]:
        """(MN or ``None``, the MN's JSON or ``null``, the topic's JSON) of a topic, or only its MN when both
        are plain (:data:`_PLAIN`: their JSON is them between quotes, made when a line is written instead of
        kept); remembered: a city's topics, cleared beyond."""
        mn = None
        for prefix in self.settings.topic_prefixes:
            if topic.startswith(prefix + "/"):
                mn = topic[len(prefix) + 1 :].split("/", 1)[0] or None
                break
        spelled: str | tuple[str | None, str, str]
        if mn is not None and _PLAIN.fullmatch(mn) and _PLAIN.fullmatch(topic):
            spelled = mn
        else:
            spelled = (mn, _ENC.encode(mn) if mn is not None else "null", _ENC.encode(topic))
        if len(self._topics) >= _CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = spelled
        return spelled

    def _verdict(self, kind: str, status: str, reason: str | None) -> tuple[str, str]:
        """(kind, status and reason) as JSON (remembered: a few verdicts, some reasons)."""
        status_json = self._quoted(status) + (',"reason":' + self._quoted(reason) if reason is not None else "")
        spelled = (self._quoted(kind), status_json)
        if len(self._verdicts) >= 4096:
            self._verdicts.clear()
        self._verdicts[kind, status, reason] = spelled
        return spelled

    def _body(self, e: Entry, seq: int, prev: str, mn: str | None, mn_prev: str) -> bytes:
        """A message's (or verdict's) line body as :meth:`_lines` writes it (tests: the same JSON as
        :func:`seal_line`), with ``mn_prev`` as its outlet's line before (``mn``: the entry's, given or from its
        topic)."""
        out, changed, _, _ = self._lines([[e]], seq, prev, mn_prev, {})
        assert list(changed) == [mn]
        return line_body(b"".join(out)[:-1])[0]

    def _via_template(self, keys: tuple[str, ...]) -> str:
        """``,"via":{"k1":%s,...}`` for ``via`` mappings with these keys (remembered: every message has the
        same keys, its connection's)."""
        template = ',"via":{' + ",".join(self._quoted(k).replace("%", "%%") + ":%s" for k in keys) + "}"
        if len(self._via_templates) >= 64:
            self._via_templates.clear()
        self._via_templates[keys] = template
        return template

    # -- segments -------------------------------------------------------------------------------------
    def _start_segment(self, previous: dict[str, Any], deleted: list[dict[str, Any]]) -> None:
        now = self.clock()
        day = datetime.fromtimestamp(now, UTC).date()
        n = 1 + max((_segment_number(p) for p in segments(self.dir) if segment_day(p) == day), default=0)
        path = self.dir / f"{day:%Y%m%d}-{n:03d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        from cems import __version__

        header = {
            "seq": 0,
            "prev": previous.get("chain", GENESIS),
            "kind": "header",
            "format": FORMAT,
            "source": self.settings.source,
            "segment": path.name,
            "opened": iso(now),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cems": __version__,
            "attrs": dict(self.settings.attrs),
            "previous": {k: v for k, v in previous.items() if k != "chain"} or None,
            "retention_days": self.settings.retention_days,
            "deleted": deleted,
        }
        line, chain = seal_line(header)
        _write_all(fd, line)
        os.fsync(fd)
        _fsync_dir(self.dir)
        self._seg = _Segment(path, fd, day, 1, chain, len(line), chain)
        log.info("evidence archive: segment %s opened", path)

    def _seal(self, why: str, extra: Mapping[str, Any] | None = None) -> None:
        """Seal the current segment: one ``seal`` line per outlet, then ``close``."""
        seg = self._seg
        assert seg is not None
        out: list[bytes] = []
        seq, chain = seg.seq, seg.chain
        for mn, (last, count) in sorted(seg.tails.items(), key=lambda kv: kv[0] or ""):
            line, chain = seal_line(
                {"seq": seq, "prev": chain, "kind": "seal", "mn": mn, "mn_prev": last, "records": count}
            )
            out.append(line)
            seq += 1
        close = {"seq": seq, "prev": chain, "kind": "close", "closed": iso(self.clock()), "why": why,
                 "lines": seq, "outlets": len(seg.tails), **(extra or {})}  # fmt: skip
        line, chain = seal_line(close)
        out.append(line)
        _write_all(seg.fd, b"".join(out))
        os.fsync(seg.fd)
        seg.seq, seg.chain = seq + 1, chain
        log.info("evidence archive: segment %s sealed (%s), last chain %s", seg.path.name, why, chain)

    def _rotate(self) -> None:
        seg = self._seg
        assert seg is not None
        self._seal("day" if datetime.fromtimestamp(self.clock(), UTC).date() != seg.day else "size")
        os.close(seg.fd)
        previous = {"segment": seg.path.name, "lines": seg.seq, "state": "sealed", "chain": seg.chain}
        self._seg = None
        deleted = self._retention()
        self._start_segment(previous, deleted)

    def _recover(self) -> dict[str, Any]:
        """Seal the last segment if a crash left it open; what the next header says of it."""
        segs = segments(self.dir)
        if not segs:
            return {}
        last = segs[-1]
        data = last.read_bytes()
        lines, torn = split_lines(data)
        if not lines:
            log.warning("evidence archive: %s holds no complete line (%d bytes): left as it is", last, len(data))
            return {"segment": last.name, "lines": 0, "state": "empty", "torn_bytes": len(torn)}
        try:
            recs = [check_line(x) for x in lines]
        except (ValueError, KeyError, TypeError) as e:
            log.error("evidence archive: %s is damaged (%s): left as it is, the new segment says so", last, e)
            return {"segment": last.name, "state": f"damaged: {e}", "chain": line_body(lines[-1])[1]}
        chain = line_body(lines[-1])[1]
        if recs[-1].get("kind") == "close":
            return {"segment": last.name, "lines": len(lines), "state": "sealed", "chain": chain}
        extra: dict[str, Any] = {}
        if torn:
            extra = {"torn_bytes": len(torn), "torn_sha256": hashlib.sha256(torn).hexdigest()}
            with open(last, "r+b") as f:  # bytes never fsync'd before a crash: never acknowledged
                f.truncate(len(data) - len(torn))
                f.flush()
                os.fsync(f.fileno())
            log.warning("evidence archive: cut a torn last line of %d bytes from %s", len(torn), last)
        header_chain = line_body(lines[0])[1]
        tails: dict[str | None, tuple[str, int]] = {}
        for x, rec in zip(lines, recs, strict=True):
            if rec.get("kind") in ("msg", "verdict"):
                mn = rec.get("mn")
                tails[mn] = (line_body(x)[1], tails.get(mn, ("", 0))[1] + 1)
        day = segment_day(last) or datetime.fromtimestamp(self.clock(), UTC).date()
        fd = os.open(last, os.O_WRONLY | os.O_APPEND)
        self._seg = _Segment(last, fd, day, len(lines), chain, len(data) - len(torn), header_chain, tails)
        try:
            self._seal("recovered", extra)
            chain = self._seg.chain
            n = self._seg.seq
        finally:
            os.close(fd)
            self._seg = None
        return {"segment": last.name, "lines": n, "state": "recovered", "chain": chain, **extra}

    def _retention(self) -> list[dict[str, Any]]:
        """Delete whole segments whose day is more than ``retention_days`` ago (never the last one)."""
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        cutoff = today - timedelta(days=self.settings.retention_days)
        deleted: list[dict[str, Any]] = []
        segs = segments(self.dir)
        for p in segs[:-1]:
            day = segment_day(p)
            if day is None or day >= cutoff:
                break
            last = _last_line(p)
            try:
                chain: str | None = line_body(last)[1]
                lines = json.loads(last).get("lines") if b'"kind":"close"' in last else None
            except ValueError:
                chain, lines = None, None
            p.unlink()
            deleted.append({"segment": p.name, "lines": lines, "last_chain": chain})
            log.info("evidence archive: %s deleted (older than %d days)", p, self.settings.retention_days)
        if deleted:
            _fsync_dir(self.dir)
        return deleted


def _last_line(path: Path, tail: int = 1 << 16) -> bytes:
    """The last complete line of a file (without its newline), reading only its end."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - tail))
        lines, _ = split_lines(f.read())
    return lines[-1] if lines else b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_records(directory: Path, *, days: tuple[date, date] | None = None) -> Iterator[tuple[Path, list[bytes]]]:
    """(segment, its complete lines) of one source directory, oldest first, optionally only the segments
    whose day lies within ``days`` (inclusive)."""
    for p in segments(directory):
        d = segment_day(p)
        if days is not None and d is not None and not days[0] <= d <= days[1]:
            continue
        yield p, split_lines(p.read_bytes())[0]
