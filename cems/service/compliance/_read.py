"""The read side of events and marks: the latest state of events as stored in ``cems_event`` (``cems events
list``), and the marks, declarations, repairs and withdrawals of ``cems_mark`` (``cems marks list``, an
evidence export) — InfluxDB, InfluxQL over ``/query``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from cems.model import BEIJING
from cems.protocol.mark import MarkRecord
from cems.sinks.influx import influx_query
from cems.sinks.influxql import quote_literal
from cems.sinks.lineprotocol import present

EVENT_COLUMNS: Final = (
    "event_id",
    "type",
    "status",
    "mn",
    "enterprise",
    "district",
    "pollutant",
    "start",
    "end",
    "hours",
    "peak",
    "limit",
    "ref_o2",
    "profile",
    "acked_by",
    "acked_at",
    "ack_note",
    "escalated_at",
)


def list_events(
    influx_url: str, db: str, *, only_open: bool = True, only_unacked: bool = False
) -> list[dict[str, Any]]:
    """The latest state of the events stored in ``cems_event`` (InfluxDB 1.x API), oldest first."""
    q = "SELECT * FROM cems_event"
    if only_open:
        q += " WHERE \"status\" = 'open'"
    out: list[dict[str, Any]] = []
    for r in map(present, influx_query(influx_url, db, q)):  # without the fields a revision emptied
        if only_unacked and r.get("acked_by"):
            continue
        row = {k: r.get(k) for k in EVENT_COLUMNS}
        for k in ("end", "pollutant", "profile", "acked_by", "acked_at", "ack_note", "escalated_at"):
            if row[k] == "":
                row[k] = None
        if r.get("evidence"):  # data-quality signals (issue 17): what triggered them
            row["evidence"] = r["evidence"]
        out.append(row)
    out.sort(key=lambda r: (str(r.get("start") or ""), str(r.get("event_id") or "")))
    return out


def _aware(v: str) -> datetime:
    t = datetime.fromisoformat(v)
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def mark_from_row(row: dict[str, Any]) -> MarkRecord:
    """A :class:`MarkRecord` from a ``cems_mark`` row."""
    d = {k: (None if v == "" else v) for k, v in row.items()}
    return MarkRecord.from_json(d)


def list_marks(
    influx_url: str,
    db: str,
    *,
    mn: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[MarkRecord]:
    """The marks, stop declarations, repairs and withdrawals stored in ``cems_mark`` (of ``mn``) whose period
    overlaps ``[start, end)`` (a withdrawal: whose target does; both ``None``: all), in the order received.
    Append-only: a withdrawn record is listed with the withdrawal that took it out of force (for an evidence
    export of an outlet and a period)."""
    q = "SELECT * FROM cems_mark"
    if mn is not None:
        q += f' WHERE "mn" = {quote_literal(mn)}'
    recs = [mark_from_row(r) for r in influx_query(influx_url, db, q)]
    recs.sort(key=lambda r: (r.received_at, r.record_id))
    if start is None and end is None:
        return recs
    lo = start or datetime.min.replace(tzinfo=BEIJING)
    hi = end or datetime.max.replace(tzinfo=BEIJING)
    keep = {r.record_id for r in recs if r.kind != "withdrawal" and r.start < hi and r.end > lo}
    return [r for r in recs if r.record_id in keep or (r.kind == "withdrawal" and r.target in keep)]


def withdrawn(records: list[MarkRecord]) -> dict[str, str]:
    """Record id → id of the withdrawal that took it out of force."""
    return {r.target: r.record_id for r in records if r.kind == "withdrawal" and r.target}
