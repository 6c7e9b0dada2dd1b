"""The in-process CPU driver (``cems.devtools.cpu_profile``, issue 20): it runs the ingester's stages on the
benchmark's messages, its digests repeat, and its stage sums read callgrind's parts in order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cems.devtools import cpu_profile


def test_driver_runs_the_stages_and_repeats_its_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def run(d: str) -> dict[str, Any]:
        return cpu_profile.run(
            tmp_path / d, n_outlets=20, warm_rounds=1, rounds=2, batch=15, chunk=4, commit_interval_s=0.0,
            digest=True, messages_file=tmp_path / "m.txt",
        )  # fmt: skip

    a, b = run("a"), run("b")
    assert a["messages"] == 40 and a["accepted"] == 60 and not a["rejected"]
    assert a["digest"] == b["digest"]
    # CPU per stage of the measured rounds: the service's stages only (not the driver's digest)
    assert set(a["cpu_s"]) == {"run.prepare", "run.archive", "run.rules", "run.judge", "run.commit"}
    assert a["cpu_us_per_msg"] > 0 and isinstance(a["compiled"], list)
    labels = [ln.split(" ", 1)[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("stage ")]
    for stage in ("warm.prepare", "run.prepare", "run.archive", "run.judge", "run.commit", "run.rules"):
        assert stage in labels


def test_stage_counts_sum_the_parts_per_label(tmp_path: Path) -> None:
    (tmp_path / "labels").write_text("stage setup\nstage run.prepare\nstage run.rules\nstage run.prepare\nresult {}\n")
    prof = tmp_path / "cg.out"
    for i, n in enumerate((100, 5, 7, 11, 13), start=1):  # part 1 before the first marker, the last unnumbered
        (tmp_path / (f"cg.out.{i}" if i < 5 else "cg.out")).write_text(f"events: Ir\nsummary: {n}\n")
    assert cpu_profile.stage_counts(tmp_path / "labels", str(prof)) == {
        "start": 100,
        "setup": 5,
        "run.prepare": 7 + 13,
        "run.rules": 11,
    }
