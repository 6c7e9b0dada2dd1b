"""``python -m cems.devtools.gil_convoy`` (docs/benchmark.md "GIL convoy") runs and writes what it says."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cems.devtools import gil_convoy


@pytest.mark.parametrize("per", ["1", "40"])
def test_the_convoy_driver_writes_its_rows_and_says_how_long(capsys: pytest.CaptureFixture[str], per: str) -> None:
    gil_convoy.main(["--rows", "100", "--runs", "2", "--idle", "--per-statement", per])
    out = capsys.readouterr().out.splitlines()
    assert [re.sub(r"[\d.]+ s \(\d+ loop turns\)", "T", line) for line in out] == [
        "run 1: 100 rows in T",
        "run 2: 100 rows in T",
    ]


def test_the_write_stores_every_row(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = gil_convoy._connect(path)
    rows = [(f"MN{i}", "a21026", 202611, os.urandom(8)) for i in range(250)]
    assert gil_convoy._write(conn, rows, 100) >= 0
    assert conn.execute("SELECT count(*) FROM r").fetchone()[0] == 250
    conn.close()
