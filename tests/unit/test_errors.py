"""The exception tree is declared in one place (``cems/errors.py``) and every class in it is a ``CemsError``."""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

from cems import errors

ROOT = Path(__file__).resolve().parents[2]


def _exception_names() -> set[str]:
    """Names a class would derive from to be an exception: builtin exceptions and those of cems.errors."""
    names = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    return names | {n for n in errors.__all__ if isinstance(getattr(errors, n), type)}


def test_every_error_is_a_cems_error_and_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    classes = [n for n in errors.__all__ if isinstance(getattr(errors, n), type)]
    assert len(classes) == 14
    for name in classes:
        assert issubclass(getattr(errors, name), errors.CemsError), name
        assert re.search(rf"^[ │├└─]*{name}\b", doc, re.M), f"{name} not drawn in errors.py's docstring"


def test_no_exception_class_is_declared_outside_errors_py() -> None:
    exc = _exception_names()
    found: list[str] = []
    for top in ("cems", "gateways"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "cems" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    if bases & exc:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert found == [], "declare exceptions in cems/errors.py: " + ", ".join(found)


def test_old_import_locations_still_work() -> None:
    from cems.protocol.hj212 import FramingError, HJ212Error
    from cems.service.mqtt import MqttProtocolError
    from cems.service.outbox import WebhookError
    from cems.sinks.influx import InfluxWriteError
    from cems.sinks.spool import SpoolFull

    assert HJ212Error is errors.HJ212Error and FramingError is errors.FramingError
    assert MqttProtocolError is errors.MqttProtocolError and WebhookError is errors.WebhookError
    assert InfluxWriteError is errors.InfluxWriteError and SpoolFull is errors.SpoolFull
    assert issubclass(SpoolFull, errors.SinkError) and issubclass(WebhookError, errors.SinkError)


def test_unwritable_state_dir_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """`cems run` as a service account without a home: a ConfigError naming the directory and CEMS_STATE_DIR,
    not a raw FileNotFoundError/PermissionError from inside the service."""
    from cems.config import writable_private_dir
    from cems.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"state directory .*file/ingester.*CEMS_STATE_DIR"):
        writable_private_dir(blocker / "ingester", "the ingester's state directory")
    ok = writable_private_dir(tmp_path / "s" / "ingester", "the ingester's state directory")
    assert ok.is_dir() and (ok.stat().st_mode & 0o777) == 0o700
