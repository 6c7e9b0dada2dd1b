from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cems.errors import RegistryError
from cems.registry._model import Registry


def _location(loc: tuple[int | str, ...], doc: dict[str, Any]) -> str:
    """Turn a pydantic location into a TOML path, naming the table entry: ``enterprise[0](E001).outlet[1]``."""
    parts: list[str] = []
    node: Any = doc
    for item in loc:
        if isinstance(item, int):
            label = ""
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict):
                    ident = node.get("mn") or node.get("id") or node.get("code")
                    label = f"({ident})" if ident else ""
            else:
                node = None
            parts[-1] = f"{parts[-1]}[{item}]{label}" if parts else f"[{item}]"
        else:
            if item.startswith("function-") or item in {"datetime", "date"}:
                continue  # pydantic-internal union branch names
            node = node.get(item) if isinstance(node, dict) else None
            parts.append(item)
    return ".".join(parts) or "(top level)"


def parse_registry(text: str, source: str = "<registry>") -> Registry:
    """Parse and validate registry TOML text.  Raises :class:`RegistryError` listing every problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(source, [f"TOML syntax: {e}"]) from e
    try:
        return Registry.model_validate(doc)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_location(tuple(err['loc']), doc)}: {msg}")
        raise RegistryError(source, problems) from None


def load_registry(path: str | Path) -> Registry:
    """Load and validate a registry TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise RegistryError(str(p), [f"cannot read: {e.strerror}"]) from e
    return parse_registry(text, str(p))
