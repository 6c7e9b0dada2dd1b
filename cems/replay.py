"""``cems replay``: the live compliance engine run offline over recorded data — no broker, no database.

Input: one record per line, either HJ 212 packets (``##…``) or JSON readings (schema ``cems.reading/1``
with ``mn`` and ``stream`` present; docs/payload.md).  Records are ordered by data time (stable, so equal
times keep file order), validated against the registry (unknown MN, password, values), and fed to the same
:class:`cems.engine.ComplianceEngine` as the live service.  Deterministic: no wall clock is read.
"""

from __future__ import annotations

import gc
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cems.decode import decode_hj212, decode_hj212_text
from cems.engine import ComplianceEngine, merge_parts
from cems.errors import RejectedMessage
from cems.model import Reading, Stream
from cems.protocol.payload import decode_payload
from cems.registry import OutletInfo, Registry
from cems.rules import DistrictMonthRate, Event, HourlyRecord, OutletDayRate
from cems.rules.daily import DailyRecord, MonthResult, month_results
from cems.validate import check_values

log = logging.getLogger(__name__)

Format = Literal["auto", "hj212", "jsonl"]
_STREAMS = {s.value: s for s in Stream}


@dataclass
class ReplayResult:
    lines: int = 0
    readings: int = 0
    values: int = 0
    #: HJ 212 values that were not finite numbers (``nan``, ``inf``): left out, the values beside them kept.
    values_dropped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    hourly: list[HourlyRecord] = field(default_factory=list)
    #: Final state of every event (closed, or still open at the end of the input), by start time.
    events: list[Event] = field(default_factory=list)
    outlet_days: list[OutletDayRate] = field(default_factory=list)
    district_months: list[DistrictMonthRate] = field(default_factory=list)
    #: Daily means per outlet, code and Beijing day (issue 12 item 9), by day.
    daily: list[DailyRecord] = field(default_factory=list)
    #: Month validity and monthly rules (steel ultra-low ≥ 95 %) per outlet, code and month.
    months: list[MonthResult] = field(default_factory=list)
    #: The accepted readings in data-time order (kept only when asked, e.g. for ``--store``).
    accepted: list[tuple[Reading, OutletInfo]] = field(default_factory=list)


def _decode_line(text: str, registry: Registry, fmt: Format) -> tuple[Reading, OutletInfo | None]:
    """One stripped, non-blank line → (reading, its outlet when already looked up)."""
    if fmt == "hj212" or (fmt == "auto" and text.startswith("##")):
        if text.isascii():  # the UTF-8 bytes decode as ASCII to the same text: skip the round trip
            return decode_hj212_text(text, None, registry)
        return decode_hj212(text.encode("utf-8", "replace"), None, registry), None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise RejectedMessage("malformed_json", f"line is neither an HJ 212 packet nor JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RejectedMessage("bad_field", "a JSON line must be an object")
    mn, stream = doc.get("mn"), _STREAMS.get(str(doc.get("stream")))
    if not isinstance(mn, str) or stream is None:
        raise RejectedMessage("bad_field", "a recorded JSON reading needs 'mn' and 'stream' (rtd|min|hour|day)")
    return decode_payload(text.encode("utf-8"), mn=mn, stream=stream, tz=registry.tz), None


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: replay builds hundreds of thousands of long-lived objects (and no
    reference cycles), which would otherwise make it rescan everything again and again (~25 % of the time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # Everything allocated meanwhile is in the youngest generation: the first collection after
            # re-enabling would scan it all (~1 M objects for a month, ~13 % of the replay time). The
            # objects are long-lived results without cycles: move them out of the collector's sight.
            gc.freeze()
            gc.enable()


def load_readings(
    registry: Registry, lines: Iterable[str], fmt: Format = "auto", result: ReplayResult | None = None
) -> list[tuple[Reading, OutletInfo]]:
    """Decode and validate every line; rejected lines are counted by reason in ``result``."""
    res = result if result is not None else ReplayResult()
    with _no_gc():
        return _load(registry, lines, fmt, res)


def _load(registry: Registry, lines: Iterable[str], fmt: Format, res: ReplayResult) -> list[tuple[Reading, OutletInfo]]:
    out: list[tuple[Reading, OutletInfo]] = []
    append = out.append
    outlet = registry.outlet
    rejected = res.rejected
    n = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        n += 1
        try:
            r, info = _decode_line(text, registry, fmt)
            if info is None:
                info = outlet(r.mn)
                if info is None:
                    raise RejectedMessage("unknown_mn", f"MN {r.mn!r} is not in the registry")
            r = check_values(r)
            if r.dropped:
                res.values_dropped += len(r.dropped)
        except RejectedMessage as e:
            rejected[e.reason] += 1
            continue
        except Exception:  # a bug met by this line: count it, log the traceback, go on with the next line
            log.exception("internal error on input line %d (counted as internal_error)", n)
            rejected["internal_error"] += 1
            continue
        append((r, info))
    res.lines += n
    out.sort(key=_data_time)
    return out


def _data_time(item: tuple[Reading, OutletInfo]) -> datetime:
    return item[0].data_time


def replay(
    registry: Registry, lines: Iterable[str], fmt: Format = "auto", *, keep_readings: bool = False
) -> ReplayResult:
    """Run the compliance engine over recorded data and return hourly records, events and rates."""
    res = ReplayResult()
    with _no_gc():
        items = _load(registry, lines, fmt, res)
        engine = ComplianceEngine(registry, journal=False)
        events: dict[str, Event] = {}
        hourly = res.hourly
        on_reading = engine.on_reading
        n_values = 0
        for reading, info in merge_parts(items):
            for m in reading.measurements.values():
                n_values += len(m.values)
            out = on_reading(reading, info)
            if out.hourly:
                hourly.extend(out.hourly)
            if out.daily:
                res.daily.extend(out.daily)
            for u in out.events:
                events[u.event.event_id] = u.event
        res.readings += len(items)
        res.values += n_values
        end = engine.finish()
        res.hourly.extend(end.hourly)
        res.daily.extend(end.daily)
        for u in end.events:
            events[u.event.event_id] = u.event
        res.events = sorted(events.values(), key=lambda e: (e.start, e.mn, e.type, e.pollutant or ""))
        res.hourly.sort(key=lambda h: (h.hour_start, h.mn, h.pollutant))
        res.daily.sort(key=lambda d: (d.day, d.mn, d.pollutant))
        res.months = month_results(res.hourly, res.daily)
        res.outlet_days = engine.rates.outlet_days()
        res.district_months = engine.rates.district_months()
    if keep_readings:
        res.accepted = items
    return res


def json_lines(objs: Iterable[dict[str, Any]]) -> Iterator[str]:
    for o in objs:
        yield json.dumps(o, ensure_ascii=False, sort_keys=False) + "\n"
