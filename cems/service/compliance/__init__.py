"""Live compliance: the :class:`~cems.engine.ComplianceEngine` inside the ingest service.

* :mod:`cems.service.compliance._runtime`: :class:`ComplianceRuntime` (feeds the engine, writes to InfluxDB,
  commits, dispatches alerts), :class:`ComplianceConfig`, the acknowledgement command.
* :mod:`cems.service.compliance._actions`: event actions of the duty console (电子督办: ack, dispatch,
  feedback, close, send back) and their append-only history.
* :mod:`cems.service.compliance._state`: the durable state in SQLite (schema, events table, commits).
* :mod:`cems.service.compliance._read`: events and marks as stored in InfluxDB (``cems events list``,
  ``cems marks list``, :func:`list_marks` for an evidence export of an outlet and a period).
* :mod:`cems.service.compliance._marks`: sending a mark to the ingester and waiting for its answer.
"""

from cems.rules.events import CLOSED
from cems.service.compliance._actions import (
    ACTION_LABELS,
    ACTIONS,
    CASE_LABELS,
    CASE_STATES,
    ActionCommand,
    CaseState,
    action_topic,
    apply_action,
    parse_action,
    send_action,
)
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
    "ACTIONS",
    "ACTION_LABELS",
    "CASE_LABELS",
    "CASE_STATES",
    "CLOSED",
    "DB_FILE",
    "ESCALATED",
    "ESCALATION_TOPIC",
    "EVENT_COLUMNS",
    "ActionCommand",
    "CaseState",
    "ComplianceConfig",
    "ComplianceRuntime",
    "ComplianceStats",
    "EventRow",
    "ack_event",
    "action_topic",
    "alert_id",
    "apply_action",
    "list_events",
    "list_marks",
    "mark_from_row",
    "mark_topic",
    "parse_ack",
    "parse_action",
    "send_action",
    "submit_mark",
    "transition_key",
    "wall_clock",
    "withdrawn",
]
