from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cems.errors import RegistryError
from cems.registry._model import Enterprise, Registry, compact_enterprise


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


def _validate_enterprises(doc: dict[str, Any]) -> bool:
    """Memory at start-up (issue 20): validate the ``[[enterprise]]`` tables one by one, each replaced in
    ``doc`` by its compact model as soon as it is made, so that the TOML tables of the enterprises already
    validated are freed while the next are validated (whole, the TOML tree, pydantic's models and their compact
    copies were all alive at once: ≈ 90 MB more at 100 000 outlets, kept by the process as fragmented heap).
    ``Registry`` takes the models as they are (strict mode accepts an instance of the field's class; the
    registry-wide checks run as before).  ``False`` when an enterprise has a problem (``doc`` partly replaced:
    the caller parses it again and validates it whole, for the same messages as before)."""
    ents = doc.get("enterprise")
    if not isinstance(ents, list):
        return True
    try:
        for i, raw in enumerate(ents):
            if isinstance(raw, dict):
                ents[i] = compact_enterprise(Enterprise.model_validate(raw))
    except ValidationError:
        return False
    return True


def parse_registry(text: str, source: str = "<registry>", *, stops: list[dict[str, Any]] | None = None) -> Registry:
    """Parse and validate registry TOML text.  Raises :class:`RegistryError` listing every problem.

    ``stops``: declared stops kept outside the registry (``cems stops add``), each with an ``mn``; they are
    added to their outlets' ``[[enterprise.outlet.stop]]`` lists."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(source, [f"TOML syntax: {e}"]) from e
    if stops:
        _merge_stops(doc, stops, source)
    if not _validate_enterprises(doc):  # a problem: validated whole below, for the messages with their paths
        doc = tomllib.loads(text)
        if stops:
            _merge_stops(doc, stops, source)
    try:
        return Registry.model_validate(doc)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_location(tuple(err['loc']), doc)}: {msg}")
        raise RegistryError(source, problems) from None


def stops_path(registry_path: str | Path) -> Path:
    """Where ``cems stops add`` keeps declared stops: ``<registry>.stops.toml`` beside the registry."""
    p = Path(registry_path)
    return p.with_name(p.stem + ".stops.toml")


def read_stops(path: Path) -> list[dict[str, Any]]:
    """The ``[[stop]]`` entries of a stops file (none when it does not exist)."""
    if not path.exists():
        return []
    try:
        doc = tomllib.loads(_read_utf8(path))
    except tomllib.TOMLDecodeError as e:
        raise RegistryError(str(path), [f"TOML syntax: {e}"]) from e
    stops = doc.get("stop", [])
    if not isinstance(stops, list):
        raise RegistryError(str(path), ["stop: must be an array of tables ([[stop]])"])
    problems = [f"stop[{i}]: must be a table ([[stop]])" for i, st in enumerate(stops) if not isinstance(st, dict)]
    problems += [
        f"stop[{i}].mn: must be the MN string of an outlet"
        for i, st in enumerate(stops)
        if isinstance(st, dict) and not isinstance(st.get("mn"), str)
    ]
    if problems:
        raise RegistryError(str(path), problems)
    return stops


def _read_utf8(path: Path) -> str:
    """The file's text; :class:`RegistryError` when it cannot be read or is not UTF-8 (e.g. saved as GBK)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RegistryError(str(path), [f"cannot read: {e.strerror}"]) from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RegistryError(
            str(path), [f"line {line}: not UTF-8 (byte {e.start}); save the file as UTF-8 (GBK is not read)"]
        ) from None


def _merge_stops(doc: dict[str, Any], stops: list[dict[str, Any]], source: str) -> None:
    outlets = {
        o.get("mn"): o
        for e in doc.get("enterprise", [])
        if isinstance(e, dict)
        for o in e.get("outlet", [])
        if isinstance(o, dict)
    }
    problems = []
    for i, st in enumerate(stops):
        entry = dict(st)
        mn = entry.pop("mn", None)
        for k in ("declared_by", "declared_at"):
            entry.pop(k, None)
        if mn not in outlets:
            problems.append(f"stops file: stop[{i}].mn: {mn!r} is not an outlet of the registry")
            continue
        listed = outlets[mn].setdefault("stop", [])
        if not isinstance(listed, list):
            problems.append(f"stops file: stop[{i}]: outlet {mn!r} has a 'stop' that is not an array of tables")
            continue
        listed.append(entry)
    if problems:
        raise RegistryError(source, problems)


def load_registry(path: str | Path) -> Registry:
    """Load and validate a registry TOML file (with the declared stops of ``<registry>.stops.toml``)."""
    p = Path(path)
    text = _read_utf8(p)
    return parse_registry(text, str(p), stops=read_stops(stops_path(p)))
