"""A mypyc build of the ingest hot path, for measuring it (issue 20 item 5; docs/benchmark.md "mypyc").

Not a supported build: measured, it saves too little CPU per message for a C build step (the *mypyc* subsection).
``python -m cems.devtools.compile`` compiles the pure per-message modules (:data:`GROUPS`) with mypyc into
extension modules next to their sources (``cems/…/*.cpython-311-*.so``, one shared library
``cems/_compiled__mypyc…so``); Python imports an extension module before the ``.py`` of the same name, so
``cems run`` (and everything else) then runs them compiled.  ``--clean`` removes them (pure Python again),
``--status`` lists them and says which are older than their source (a stale build shadows an edited ``.py``).

Why mypyc: it is mypy's own compiler (maintained with mypy, which is already a dev dependency), and it
compiles ordinary type-hinted Python as it is: these modules need no Cython dialect, no second source and no
rewrite, pure Python stays the default and the reference (the outputs are the same, ``cpu_profile --digest``).
It needs gcc and the Python headers; the build takes a few minutes.  Modules stay out of the build when they
are async adapters, I/O, the CLI, or use what compiled classes refuse (``object.__new__`` on a dataclass:
:mod:`cems.model`; class keywords of ``msgspec.Struct`` and pydantic models: :mod:`cems.protocol._payload_schema`).
The rules (:mod:`cems.engine`, :mod:`cems.rules`) are not in :data:`GROUPS`: compiled, they judge differently
(a subclass's property over a base class's attribute is not read by the base's compiled methods: the emergency
tracker's events come out as ``hourly_exceedance``), lose the memory sharing of equal ints (``shared_hour``:
compiled code unboxes them), refuse the shared empty ``MappingProxyType`` and tuple placeholders typed as
dicts and lists, and the transmission rates' mixin attributes become dataclass defaults.  Measured on a copy
with those placeholders changed: the judge stage ≈ 0.8× the CPU; of 347 rules tests, 11 emergency-tracker tests
(the property), 2 of the ints' sharing, 1 subclassing a compiled tracker (interpreted classes cannot) fail.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

#: The compiled modules, by stage of ``cems run``'s per-message path (paths from the project's root).
GROUPS: dict[str, tuple[str, ...]] = {
    # prepare: decode (HJ 212, JSON), validate, line protocol
    "prepare": (
        "cems/decode.py",
        "cems/validate.py",
        "cems/protocol/hj212/_decode.py",
        "cems/protocol/hj212/_packet.py",
        "cems/protocol/hj212/_crc.py",
        "cems/protocol/payload.py",
        "cems/sinks/lineprotocol.py",
    ),
}
#: The shared library's module (inside the package, so that an editable install's finder finds it).
GROUP_NAME = "cems._compiled"
ROOT = Path(__file__).resolve().parents[2]


def extensions(root: Path = ROOT) -> list[Path]:
    """The compiled extension modules under ``root/cems`` (``.so``; ``.pyd`` on Windows)."""
    return sorted(p for p in (root / "cems").rglob("*") if p.suffix in (".so", ".pyd") and p.is_file())


def source_of(ext: Path) -> Path:
    """The ``.py`` an extension module shadows (``x.cpython-311-x86_64-linux-gnu.so`` → ``x.py``)."""
    return ext.with_name(ext.name.split(".", 1)[0] + ".py")


def stale(root: Path = ROOT) -> list[Path]:
    """Extension modules older than the source they shadow (an edited ``.py`` that would not run)."""
    out = []
    for ext in extensions(root):
        src = source_of(ext)
        if src.exists() and src.stat().st_mtime > ext.stat().st_mtime:
            out.append(ext)
    return out


def clean(root: Path = ROOT) -> list[Path]:
    """Remove the compiled extension modules (pure Python again); returns what was removed."""
    removed = extensions(root)
    for p in removed:
        p.unlink()
    return removed


def build(groups: Sequence[str], root: Path = ROOT, *, multi_file: bool = False) -> list[Path]:
    """Compile the modules of ``groups`` in place (the C sources and objects under ``root/build/mypyc``)."""
    from mypyc.build import mypycify  # (mypy's compiler: a dev dependency, imported only to build)
    from setuptools import Distribution  # type: ignore[import-untyped]

    files = [f for g in groups for f in GROUPS[g]]
    cwd = Path.cwd()
    os.chdir(root)  # mypyc names modules by their paths from the working directory
    try:
        clean(root)
        exts = mypycify(
            ["--config-file", "pyproject.toml", *files],
            opt_level="3",
            multi_file=multi_file,
            target_dir="build/mypyc",
            group_name=GROUP_NAME,
        )
        # setuptools directly, not setup(): an older setuptools in the venv cannot read pyproject.toml's license
        dist = Distribution({"name": "cems-compiled", "ext_modules": exts})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = "build/mypyc/temp"
        cmd.parallel = os.cpu_count() or 1
        dist.run_command("build_ext")
    finally:
        os.chdir(cwd)
    return extensions(root)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.compile", description=__doc__.split("\n")[0])
    ap.add_argument("groups", nargs="*", help=f"of {', '.join(GROUPS)} (default: all)")
    ap.add_argument("--clean", action="store_true", help="remove the compiled modules (pure Python again)")
    ap.add_argument("--status", action="store_true", help="list the compiled modules and the stale ones")
    ap.add_argument("--multi-file", action="store_true", help="a C file per module: faster to build, slower")
    a = ap.parse_args(argv)
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown groups {unknown}: choose of {', '.join(GROUPS)}")
    if a.clean:
        for p in clean():
            print(f"removed {p.relative_to(ROOT)}")
        return 0
    if a.status:
        old = set(stale())
        for p in extensions():
            print(f"{p.relative_to(ROOT)}{'  STALE: older than its .py' if p in old else ''}")
        return 1 if old else 0
    t = time.monotonic()
    built = build(a.groups or list(GROUPS), multi_file=a.multi_file)
    print(f"compiled {len(built)} extension modules in {time.monotonic() - t:.0f} s (--clean: undo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
