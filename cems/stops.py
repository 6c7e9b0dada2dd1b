"""``cems stops add|list``: declared stops (停产/停运) kept beside the registry in ``<registry>.stops.toml``.

Hours inside a declared stop are not expected for the 90 % rule, and silence inside one is not a data
interruption (DOMAIN.md §5).  The file is append-only TOML so that what was declared, by whom and when
stays visible; ``cems run`` and ``cems replay`` read it with the registry (restart a running ingester).
"""

from __future__ import annotations

import json
from datetime import datetime

from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import load_registry, stops_path


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or time; Beijing time when it has no offset."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CemsError(f"{text!r} is not an ISO 8601 date or time (e.g. 2026-02-01 or 2026-02-01T08:00)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def add_stop(config: str, mn: str, start: datetime, end: datetime, reason: str, by: str) -> str:
    """Validate and append one declared stop; returns the path written."""
    registry = load_registry(config)
    if registry.outlet(mn) is None:
        raise CemsError(f"MN {mn!r} is not an outlet of {config}")
    if end <= start:
        raise CemsError(f"the stop ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    path = stops_path(config)
    block = (
        f"\n[[stop]]\nmn = {_toml_str(mn)}\nfrom = {start.isoformat()}\nto = {end.isoformat()}\n"
        f"reason = {_toml_str(reason)}\ndeclared_by = {_toml_str(by)}\n"
        f"declared_at = {datetime.now(BEIJING).replace(microsecond=0).isoformat()}\n"
    )
    header = "" if path.exists() else "# Declared stops (停产/停运), appended by `cems stops add`.\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(header + block)
    load_registry(config)  # the file still loads: refuse to leave a broken registry behind
    return str(path)


def declared_stops(config: str) -> list[dict[str, str]]:
    """Every declared stop of the registry's outlets (registry and stops file): mn, enterprise, from, to, reason."""
    registry = load_registry(config)
    return [
        {
            "mn": info.outlet.mn,
            "enterprise": info.enterprise.id,
            "from": s.start.isoformat(),
            "to": s.end.isoformat(),
            "reason": s.reason,
        }
        for info in registry.outlets()
        for s in info.outlet.stop
    ]
