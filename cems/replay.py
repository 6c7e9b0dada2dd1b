"""``cems replay``: the live compliance engine run offline over recorded data — no broker, no database.

Input: one record per line, either HJ 212 packets (``##…``) or JSON readings (schema ``cems.reading/1``
with ``mn`` and ``stream`` present; docs/payload.md).  Records are ordered by data time (stable, so equal
times keep file order), validated against the registry (unknown MN, password, values), and fed to the same
:class:`cems.engine.ComplianceEngine` as the live service.  Deterministic: no wall clock is read.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from cems.decode import decode_hj212
from cems.engine import ComplianceEngine
from cems.errors import RejectedMessage
from cems.model import Reading, Stream
from cems.protocol.payload import decode_payload
from cems.registry import OutletInfo, Registry
from cems.rules import DistrictMonthRate, Event, HourlyRecord, OutletDayRate
from cems.validate import check_values

Format = Literal["auto", "hj212", "jsonl"]
_STREAMS = {s.value: s for s in Stream}


@dataclass
class ReplayResult:
    lines: int = 0
    readings: int = 0
    values: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    hourly: list[HourlyRecord] = field(default_factory=list)
    #: Final state of every event (closed, or still open at the end of the input), by start time.
    events: list[Event] = field(default_factory=list)
    outlet_days: list[OutletDayRate] = field(default_factory=list)
    district_months: list[DistrictMonthRate] = field(default_factory=list)
    #: The accepted readings in data-time order (kept only when asked, e.g. for ``--store``).
    accepted: list[tuple[Reading, OutletInfo]] = field(default_factory=list)


def _decode_line(line: str, registry: Registry, fmt: Format) -> Reading:
    text = line.strip()
    if fmt == "hj212" or (fmt == "auto" and text.startswith("##")):
        return decode_hj212(text.encode("utf-8", "replace"), None, registry)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RejectedMessage("malformed_json", f"line is neither an HJ 212 packet nor JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RejectedMessage("bad_field", "a JSON line must be an object")
    mn, stream = doc.get("mn"), _STREAMS.get(str(doc.get("stream")))
    if not isinstance(mn, str) or stream is None:
        raise RejectedMessage("bad_field", "a recorded JSON reading needs 'mn' and 'stream' (rtd|min|hour|day)")
    return decode_payload(text.encode("utf-8"), mn=mn, stream=stream, tz=registry.tz)


def load_readings(
    registry: Registry, lines: Iterable[str], fmt: Format = "auto", result: ReplayResult | None = None
) -> list[tuple[Reading, OutletInfo]]:
    """Decode and validate every line; rejected lines are counted by reason in ``result``."""
    res = result if result is not None else ReplayResult()
    out: list[tuple[Reading, OutletInfo]] = []
    for line in lines:
        if not line.strip():
            continue
        res.lines += 1
        try:
            r = _decode_line(line, registry, fmt)
            info = registry.outlet(r.mn)
            if info is None:
                raise RejectedMessage("unknown_mn", f"MN {r.mn!r} is not in the registry")
            check_values(r)
        except RejectedMessage as e:
            res.rejected[e.reason] += 1
            continue
        out.append((r, info))
    out.sort(key=lambda it: it[0].data_time)
    return out


def replay(
    registry: Registry, lines: Iterable[str], fmt: Format = "auto", *, keep_readings: bool = False
) -> ReplayResult:
    """Run the compliance engine over recorded data and return hourly records, events and rates."""
    res = ReplayResult()
    items = load_readings(registry, lines, fmt, res)
    engine = ComplianceEngine(registry, include_silent_outlets=True)
    events: dict[str, Event] = {}
    for reading, info in items:
        res.readings += 1
        res.values += reading.value_count
        out = engine.on_reading(reading, info)
        res.hourly.extend(out.hourly)
        for u in out.events:
            events[u.event.event_id] = u.event
    end = engine.finish()
    res.hourly.extend(end.hourly)
    for u in end.events:
        events[u.event.event_id] = u.event
    res.events = sorted(events.values(), key=lambda e: (e.start, e.mn, e.type, e.pollutant or ""))
    res.hourly.sort(key=lambda h: (h.hour_start, h.mn, h.pollutant))
    res.outlet_days = engine.rates.outlet_days()
    res.district_months = engine.rates.district_months()
    if keep_readings:
        res.accepted = items
    return res


def json_lines(objs: Iterable[dict[str, Any]]) -> Iterator[str]:
    for o in objs:
        yield json.dumps(o, ensure_ascii=False, sort_keys=False) + "\n"
