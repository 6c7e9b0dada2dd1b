"""The mypyc build's housekeeping (``python -m cems.devtools.compile``, for measuring): which extension
modules a tree holds, which are stale, and ``--clean``; the module list names existing pure modules.  (The build
itself needs gcc and minutes: measured by hand, docs/benchmark.md "mypyc".)"""

from __future__ import annotations

import os
from pathlib import Path

from cems.devtools import compile as compile_

SO = ".cpython-311-x86_64-linux-gnu.so"


def test_status_and_clean_find_the_extension_modules_and_the_stale_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "cems" / "rules"
    pkg.mkdir(parents=True)
    for name in ("hourly", "events"):
        (pkg / f"{name}.py").write_text("x = 1\n")
        (pkg / f"{name}{SO}").write_bytes(b"\x7fELF")
    (tmp_path / "cems" / f"_compiled__mypyc{SO}").write_bytes(b"\x7fELF")
    (pkg / "marks.py").write_text("x = 1\n")  # not compiled
    t = (pkg / f"hourly{SO}").stat().st_mtime
    os.utime(pkg / "hourly.py", (t + 10, t + 10))  # edited after the build
    os.utime(pkg / "events.py", (t - 10, t - 10))

    exts = compile_.extensions(tmp_path)
    assert [p.name for p in exts] == [f"_compiled__mypyc{SO}", f"events{SO}", f"hourly{SO}"]
    assert compile_.source_of(pkg / f"hourly{SO}") == pkg / "hourly.py"
    assert compile_.stale(tmp_path) == [pkg / f"hourly{SO}"]
    assert compile_.clean(tmp_path) == exts
    assert compile_.extensions(tmp_path) == [] and (pkg / "hourly.py").exists() and (pkg / "marks.py").exists()


def test_the_groups_name_pure_modules_of_the_tree() -> None:
    files = [f for g in compile_.GROUPS.values() for f in g]
    assert len(files) == len(set(files))
    for f in files:
        assert (compile_.ROOT / f).is_file(), f
        assert f.startswith("cems/") and "service" not in f and "rules" not in f  # not the rules: see the module
