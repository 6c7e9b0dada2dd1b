"""``python -m cems.devtools.writer_wait`` (docs/benchmark.md, eighth session) measures what it says: every
alerts transaction commits after the state transaction it waited for, and the tool prints the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from cems.devtools import writer_wait


@pytest.mark.parametrize("lock", [True, False])
async def test_each_alerts_transaction_commits_after_the_state_transaction_it_met(tmp_path: Path, lock: bool) -> None:
    after = await writer_wait.measure(tmp_path, 3, lock=lock)
    assert len(after) == 3 and all(a >= 0 for a in after)


def test_the_tool_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert writer_wait.main(["--runs", "2"]) == 0
    assert "writer lock: the alerts transaction committed p50" in capsys.readouterr().out
