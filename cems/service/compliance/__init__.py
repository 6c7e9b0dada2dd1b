"""Live compliance: the :class:`~cems.engine.ComplianceEngine` inside the ingest service.

* :mod:`cems.service.compliance._runtime`: :class:`ComplianceRuntime` (feeds the engine, writes to InfluxDB,
  commits, dispatches alerts), :class:`ComplianceConfig`, the acknowledgement command.
* :mod:`cems.service.compliance._state`: the durable state in SQLite (schema, events table, commits).
* :mod:`cems.service.compliance._read`: events and marks as stored in InfluxDB (``cems events list``,
  ``cems marks list``, :func:`list_marks` for an evidence export of an outlet and a period).
* :mod:`cems.service.compliance._marks`: sending a mark to the ingester and waiting for its answer.
"""

from cems.rules.events import CLOSED
from cems.service.compliance._marks import mark_topic, submit_mark
from cems.service.compliance._read import EVENT_COLUMNS, list_events, list_marks, mark_from_row, withdrawn
from cems.service.compliance._runtime import (
    ComplianceConfig,
    ComplianceRuntime,
    ack_event,
    parse_ack,
    wall_clock,
)
from cems.service.compliance._state import (
    ACKNOWLEDGED,
    DB_FILE,
    ESCALATED,
    ESCALATION_TOPIC,
    ComplianceStats,
    EventRow,
    alert_id,
    transition_key,
)

__all__ = [
    "ACKNOWLEDGED",
    "CLOSED",
    "DB_FILE",
    "ESCALATED",
    "ESCALATION_TOPIC",
    "EVENT_COLUMNS",
    "ComplianceConfig",
    "ComplianceRuntime",
    "ComplianceStats",
    "EventRow",
    "ack_event",
    "alert_id",
    "list_events",
    "list_marks",
    "mark_from_row",
    "mark_topic",
    "parse_ack",
    "submit_mark",
    "transition_key",
    "wall_clock",
    "withdrawn",
]
