"""``cems evidence verify``: every hash of a case file, or of an archive directory, checked again.

A case file (zip) passes when: ``SHA256SUMS`` lists every other file and each digest matches; the manifest's
digests agree; every packet line's own chain (SHA-256 of its body) and payload digest match; the lines of the
outlet in each segment are linked without a gap (``mn_prev``: header → messages → seal, and a seal's count
equals the lines before it); consecutive lines (``seq`` n, n + 1) are linked by ``prev``; the last line of
each segment is the one the manifest names; and every reading refers to a packet line of the case file.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cems.sinks.archive import check_directory, check_line, line_body


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


def _check_outlet_lines(name: str, data: bytes) -> tuple[list[Problem], set[str]]:
    """One ``packets/…`` file: a segment header followed by one outlet's lines."""
    problems: list[Problem] = []
    chains: set[str] = set()
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()
    else:
        problems.append(Problem(name, "does not end with a newline (truncated)"))
    last_link: str | None = None
    count = 0
    prev_seq: int | None = None
    prev_chain: str | None = None
    for n, line in enumerate(raw, 1):
        try:
            rec: dict[str, Any] = check_line(line)
        except (ValueError, KeyError, TypeError) as e:
            problems.append(Problem(name, f"line {n}: {e}"))
            return problems, chains
        chain = line_body(line)[1]
        chains.add(chain)
        seq = rec.get("seq")
        if n == 1:
            if rec.get("kind") != "header" or seq != 0:
                problems.append(Problem(name, "line 1 is not the segment header"))
            last_link = chain
        else:
            if not isinstance(seq, int) or prev_seq is None or seq <= prev_seq:
                problems.append(Problem(name, f"line {n}: seq {seq} out of order"))
            elif seq == prev_seq + 1 and rec.get("prev") != prev_chain:
                problems.append(Problem(name, f"line {n}: prev does not match line {n - 1}"))
            if rec.get("mn_prev") != last_link:
                problems.append(Problem(name, f"line {n}: mn_prev does not match the outlet's line before (removed?)"))
            if rec.get("kind") == "seal":
                if rec.get("records") != count:
                    problems.append(
                        Problem(name, f"line {n}: the seal counts {rec.get('records')} lines, found {count}")
                    )
                if n != len(raw):
                    problems.append(Problem(name, f"line {n}: lines after the seal"))
            else:
                count += 1
            last_link = chain
        prev_seq, prev_chain = seq if isinstance(seq, int) else prev_seq, chain
    return problems, chains


def verify_case(path: Path) -> tuple[list[Problem], dict[str, Any]]:
    """The problems found in a case file (empty: it verifies) and its manifest."""
    problems: list[Problem] = []
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        return [Problem(path.name, f"not a readable zip: {e}")], {}
    with z:
        names = set(z.namelist())
        data: dict[str, bytes] = {}
        for n in names:
            try:
                data[n] = z.read(n)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a changed byte inside the zip
                problems.append(Problem(n, f"cannot be read from the zip: {e}"))
    if "SHA256SUMS" not in data:
        return [*problems, Problem("SHA256SUMS", "missing")], {}
    listed: dict[str, str] = {}
    for line in data["SHA256SUMS"].decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for n in sorted(names - {"SHA256SUMS"}):
        if n not in listed:
            problems.append(Problem(n, "not listed in SHA256SUMS"))
    for n, digest in sorted(listed.items()):
        if n not in data:
            if n in names:
                continue  # already reported: unreadable
            problems.append(Problem(n, "listed in SHA256SUMS but missing"))
        elif hashlib.sha256(data[n]).hexdigest() != digest:
            problems.append(Problem(n, "SHA-256 does not match SHA256SUMS (the file was changed)"))
    manifest: dict[str, Any] = {}
    try:
        manifest = json.loads(data.get("manifest.json", b"{}"))
    except ValueError as e:
        problems.append(Problem("manifest.json", f"not JSON: {e}"))
    for n, meta in (manifest.get("files") or {}).items():
        b = data.get(n)
        if b is None or hashlib.sha256(b).hexdigest() != meta.get("sha256") or len(b) != meta.get("size"):
            problems.append(Problem(n, "does not match manifest.json"))
    chains: set[str] = set()
    last_by_file = {s["file"]: s.get("last_chain") for s in manifest.get("segments", [])}
    for n in sorted(x for x in data if x.startswith("packets/")):
        found, c = _check_outlet_lines(n, data[n])
        problems.extend(found)
        chains |= c
        lines = data[n].rstrip(b"\n").split(b"\n")
        if not found and last_by_file.get(n) != line_body(lines[-1])[1]:
            problems.append(Problem(n, "the last line is not the one manifest.json names"))
    for n in last_by_file:
        if n not in data:
            problems.append(Problem(n, "named in manifest.json but missing"))
    for i, raw_row in enumerate(data.get("readings.jsonl", b"").splitlines(), 1):
        try:
            row = json.loads(raw_row)
        except ValueError:
            problems.append(Problem("readings.jsonl", f"line {i}: not JSON"))
            continue
        if row.get("chain") not in chains:
            problems.append(Problem("readings.jsonl", f"line {i}: refers to no packet line of this case file"))
    return problems, manifest


def verify_archive(root: Path) -> tuple[list[Problem], int]:
    """Check an archive in place: ``root`` is one source directory or the directory of several."""
    dirs = [root] if any(root.glob("*.jsonl")) else sorted(p for p in root.iterdir() if p.is_dir())
    problems: list[Problem] = []
    n = 0
    for d in dirs:
        checks, found = check_directory(d)
        n += len(checks)
        problems.extend(Problem(str(d), p) for p in found)
    return problems, n
