"""``cems evidence`` as a user runs it, without services: verify an archive in place, its exit codes, and the
errors of export.  (The full round trip through `cems run`: tests/integration/test_evidence_live.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from registries import one_outlet  # tests/registries.py

from cems.sinks.archive import ArchiveSettings, Entry, EvidenceArchive, segments

pytestmark = pytest.mark.e2e


def cems(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cems", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_verify_an_archive_in_place_then_a_tampered_one(tmp_path: Path) -> None:
    a = EvidenceArchive(ArchiveSettings(tmp_path, "cems-ingester"))
    a.open()
    t = datetime.now(UTC).timestamp()
    a.write([Entry(f"packet {i}".encode(), t + i, "cems/v1/MN0001/hj212", "accepted") for i in range(3)])
    a.close()
    ok = cems("evidence", "verify", str(tmp_path))
    assert ok.returncode == 0 and "OK (1 archive segments" in ok.stdout, ok.stderr
    (seg,) = segments(tmp_path / "cems-ingester")
    data = seg.read_bytes()
    seg.write_bytes(data.replace(b'"accepted"', b'"rejected"', 1))
    bad = cems("evidence", "verify", str(tmp_path))
    assert bad.returncode == 1
    assert seg.name in bad.stderr and "the line was changed" in bad.stderr and "NOT verified" in bad.stderr


def test_verify_of_something_that_is_not_a_case_file_fails(tmp_path: Path) -> None:
    junk = tmp_path / "case.zip"
    junk.write_bytes(b"not a zip")
    r = cems("evidence", "verify", str(junk))
    assert r.returncode == 1 and "case.zip: not a readable zip" in r.stderr


def test_export_names_a_missing_archive_and_a_reversed_period(tmp_path: Path) -> None:
    reg = tmp_path / "registry.toml"
    reg.write_text(one_outlet(), encoding="utf-8")
    base = [
        "evidence",
        "export",
        "--config",
        str(reg),
        "--mn",
        "MN0001",
        "--by",
        "张三",
        "--out",
        str(tmp_path / "c.zip"),
    ]
    r = cems(*base, "--from", "2026-12-01", "--to", "2026-12-02", "--evidence-dir", str(tmp_path / "nope"))
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = cems(*base, "--from", "2026-12-02", "--to", "2026-12-01", "--evidence-dir", str(tmp_path))
    assert r.returncode == 2 and "must be after" in r.stderr
