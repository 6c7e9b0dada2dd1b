"""Rejection reasons are a closed list (``cems.errors.Reason``), documented exactly in docs/payload.md and the
only codes the source raises (pydantic ``tests/test_docs.py::test_error_codes`` style)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

from cems.errors import REASONS, Reason

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "payload.md"
#: Exception classes whose first argument (or ``reason=``) is a reason.
RAISERS = {"RejectedMessage", "HJ212Error", "FramingError"}
#: Raise sites whose reason is not a literal: typed ``Reason`` (mypy checks them), listed here to be reviewed.
NON_LITERAL = {
    ("cems/protocol/payload.py", "kind"),
    ("cems/protocol/hj212/_encode.py", "e.reason"),
}


def _documented() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Dead letters\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M)


def _reason_arg(call: ast.Call) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "reason":
            return kw.value
    return call.args[0] if call.args else None


def _literals(node: ast.expr) -> list[str] | None:
    """The string literals an expression can evaluate to, or ``None`` when it is not built from literals."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        a, b = _literals(node.body), _literals(node.orelse)
        return None if a is None or b is None else a + b
    return None


def _raise_sites() -> tuple[list[tuple[str, int, str]], set[tuple[str, str]]]:
    literal: list[tuple[str, int, str]] = []
    other: set[tuple[str, str]] = set()
    for top in ("cems", "gateways"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name not in RAISERS:
                    continue
                arg = _reason_arg(node)
                assert arg is not None, f"{rel}:{node.lineno}: {name}() without a reason"
                values = _literals(arg)
                if values is None:
                    other.add((rel, ast.unparse(arg)))
                else:
                    literal.extend((rel, node.lineno, v) for v in values)
    return literal, other


def test_reasons_are_spelled_out() -> None:
    assert frozenset(get_args(Reason)) == REASONS
    assert len(get_args(Reason)) == len(REASONS), "a reason is listed twice"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in REASONS), "reasons are snake_case, no wildcard"


def test_docs_list_exactly_the_reasons() -> None:
    documented = _documented()
    assert len(documented) == len(set(documented)), "a reason is documented twice"
    assert set(documented) - REASONS == set(), "documented in docs/payload.md but not in cems.errors.Reason"
    assert REASONS - set(documented) == set(), "in cems.errors.Reason but not documented in docs/payload.md"


def test_every_raise_site_uses_a_listed_reason() -> None:
    literal, other = _raise_sites()
    assert len(literal) > 50, "the scan found the raise sites"
    unknown = [f"{rel}:{line} {reason!r}" for rel, line, reason in literal if reason not in REASONS]
    assert unknown == []
    assert other == NON_LITERAL, "a non-literal reason: make sure it is typed Reason, then list it here"


def test_every_reason_is_raised_somewhere() -> None:
    literal, _ = _raise_sites()
    assert REASONS - {reason for _, _, reason in literal} == set(), "a listed reason is never raised"
