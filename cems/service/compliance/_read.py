"""The read side of events: their latest state as stored in ``cems_event`` (InfluxDB, InfluxQL over
``/query``), for ``cems events list``."""

from __future__ import annotations

from typing import Any, Final

from cems.sinks.influx import influx_query

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
    for r in influx_query(influx_url, db, q):
        if only_unacked and r.get("acked_by"):
            continue
        row = {k: r.get(k) for k in EVENT_COLUMNS}
        for k in ("end", "pollutant", "acked_by", "acked_at", "ack_note", "escalated_at"):
            if row[k] == "":
                row[k] = None
        if r.get("evidence"):  # data-quality signals (issue 17): what triggered them
            row["evidence"] = r["evidence"]
        out.append(row)
    out.sort(key=lambda r: (str(r.get("start") or ""), str(r.get("event_id") or "")))
    return out
