"""The package's public API is what ``__all__`` says, and every name in it can be imported (httpx style)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import cems

PACKAGES = [
    "cems",
    "cems.registry",
    "cems.report",
    "cems.service.compliance",
    "cems.protocol.hj212",
    "cems.devtools.bench",
    "cems.cli",
    "gateways.simulator",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    for member in exported:
        assert getattr(module, member) is not None, f"{name}.{member}"


def test_version_from_the_installed_metadata() -> None:
    from importlib.metadata import version

    assert cems.__version__ == version("cems")


def test_decoding_does_not_load_pydantic() -> None:
    code = "import sys, cems.protocol.hj212; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_library_never_imports_the_cli() -> None:
    code = (
        "import sys, cems.service.ingest, cems.replay, cems.report, cems.devtools.demo, cems.devtools.bench;"
        "print(sorted(m for m in sys.modules if m.startswith('cems.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_ingester_does_not_load_paho() -> None:
    code = "import sys, cems.service.ingest; print(any(m.startswith('paho') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_only_config_reads_the_environment() -> None:
    """``cems/config.py`` is the one module that reads ``os.environ`` (or ``os.getenv``)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readers = [
        str(p.relative_to(root))
        for p in [*(root / "cems").rglob("*.py"), *(root / "gateways").rglob("*.py")]
        if "os.environ" in p.read_text(encoding="utf-8") or "getenv(" in p.read_text(encoding="utf-8")
    ]
    assert readers == ["cems/config.py"]
