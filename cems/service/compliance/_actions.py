"""Event actions (电子督办, issue 19): acknowledge, dispatch to the district, the district's feedback, close,
send back — each recorded with who, when and a note in an append-only history per event.

The incineration 电子督办 flow is push → feedback → close (DOMAIN.md §9); Lanzhou's plan makes it an
accountability item if an anomaly is not seen, or no investigation organised, within 2 hours (seed 000,
registry ``[city] ack_sla_hours``).  The ingester stays the single writer of event state: the duty console
and ``cems events dispatch|feedback|close|send-back`` publish a command on ``{command_prefix}/event_action``
(QoS 1) and the ingester answers on ``{command_prefix}/reply/{reply_to}`` once the action is durable.

The case (督办) of an event moves through :data:`CASE_STATES`::

    new ──ack──▶ acknowledged ──dispatch──▶ dispatched ──feedback──▶ answered ──close──▶ closed
                      │                          ▲                       │
                      └──────────close───────────┼───────────────────────┘ (close: from acknowledged too)
                                                 └──────send_back────────┘

It is independent of the event's own ``status`` (open/closed/retracted), which only the data decide.

This module holds the pure parts (parsing, the transition rule, the line protocol) and the SQLite functions
the runtime's worker thread calls; :func:`send_action` is the client side.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from cems.errors import InvalidTransition
from cems.model import BEIJING
from cems.registry import Topics
from cems.service.commands import send_command
from cems.service.mqtt import MqttSettings
from cems.service.outbox import OutboxRow, enqueue, transaction
from cems.sinks.lineprotocol import point

ACK: Final = "ack"
DISPATCH: Final = "dispatch"
FEEDBACK: Final = "feedback"
CLOSE: Final = "close"
SEND_BACK: Final = "send_back"
ACTIONS: Final = (ACK, DISPATCH, FEEDBACK, CLOSE, SEND_BACK)

CASE_NEW: Final = "new"
CASE_ACKNOWLEDGED: Final = "acknowledged"
CASE_DISPATCHED: Final = "dispatched"
CASE_ANSWERED: Final = "answered"
CASE_CLOSED: Final = "closed"
CASE_STATES: Final = (CASE_NEW, CASE_ACKNOWLEDGED, CASE_DISPATCHED, CASE_ANSWERED, CASE_CLOSED)

#: action → (the case states it may follow, the case state it leads to)
TRANSITIONS: Final[dict[str, tuple[frozenset[str], str]]] = {
    ACK: (frozenset({CASE_NEW}), CASE_ACKNOWLEDGED),
    DISPATCH: (frozenset({CASE_ACKNOWLEDGED}), CASE_DISPATCHED),
    FEEDBACK: (frozenset({CASE_DISPATCHED}), CASE_ANSWERED),
    SEND_BACK: (frozenset({CASE_ANSWERED}), CASE_DISPATCHED),
    CLOSE: (frozenset({CASE_ACKNOWLEDGED, CASE_ANSWERED}), CASE_CLOSED),
}

#: Chinese labels (the console, the report).
ACTION_LABELS: Final = {ACK: "签收", DISPATCH: "督办", FEEDBACK: "反馈", CLOSE: "办结", SEND_BACK: "退回"}
CASE_LABELS: Final = {
    CASE_NEW: "待签收",
    CASE_ACKNOWLEDGED: "已签收",
    CASE_DISPATCHED: "督办中",
    CASE_ANSWERED: "已反馈",
    CASE_CLOSED: "已办结",
}

ACTION_MEASUREMENT: Final = "cems_event_action"
NOTE_MAX_CHARS: Final = 1000

ACTIONS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS event_actions(
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    note TEXT,
    dispatched_to TEXT,
    deadline TEXT,
    case_status TEXT NOT NULL,
    request_id TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS event_actions_event ON event_actions(event_id, seq);
CREATE TABLE IF NOT EXISTS event_case(
    event_id TEXT PRIMARY KEY,
    case_status TEXT NOT NULL,
    dispatched_to TEXT,
    dispatched_at TEXT,
    deadline TEXT,
    updated_at TEXT NOT NULL
);
"""


def action_topic(topics: Topics) -> str:
    return f"{topics.command_prefix}/event_action"


@dataclass(frozen=True, slots=True)
class ActionCommand:
    """One action on an event's case, as sent by the console or the CLI."""

    action: str
    event_id: str
    by: str
    note: str
    at: str | None = None
    #: dispatch: the district (code) the 督办单 goes to (default: the event's district)
    dispatched_to: str | None = None
    #: dispatch (required) / send_back (optional, else the previous one): the district's answer is due by
    deadline: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class CaseState:
    """The case of one event: where it stands in :data:`CASE_STATES` and to whom it is dispatched."""

    case_status: str = CASE_NEW
    dispatched_to: str | None = None
    dispatched_at: str | None = None
    deadline: str | None = None

    def fields(self) -> dict[str, str | None]:
        """The ``cems_event`` fields of the case (docs/influxdb.md)."""
        return {
            "case_status": self.case_status,
            "dispatched_to": self.dispatched_to,
            "dispatched_at": self.dispatched_at,
            "deadline": self.deadline,
        }


def apply_action(case: CaseState, cmd: ActionCommand, at: str, event_district: str) -> CaseState:
    """The case after ``cmd`` (pure). Raises :class:`InvalidTransition` when the action may not follow."""
    allowed, after = TRANSITIONS[cmd.action]
    if case.case_status not in allowed:
        raise InvalidTransition(
            f"{cmd.action} is not possible on a case that is {case.case_status} "
            f"(possible after: {', '.join(sorted(allowed))})"
        )
    if cmd.action == DISPATCH:
        return CaseState(after, cmd.dispatched_to or event_district, at, cmd.deadline)
    if cmd.action == SEND_BACK:
        return replace(case, case_status=after, deadline=cmd.deadline or case.deadline)
    return replace(case, case_status=after)


def _clean(text: str) -> str:
    from cems.service.compliance._runtime import clean_text  # (the runtime imports this module)

    return clean_text(text)


def _iso(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"action '{what}' must be an ISO 8601 string")
    try:
        t = datetime.fromisoformat(value)
    except ValueError as e:
        raise ValueError(f"action '{what}' is not ISO 8601: {value!r}") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=BEIJING)
    return t.astimezone(BEIJING).isoformat()


def parse_action(payload: bytes) -> ActionCommand:
    """``{"action", "event_id", "by", "note", "at"?, "dispatched_to"?, "deadline"?, "reply_to"?}`` →
    :class:`ActionCommand`. Every action needs a note (处理意见 / 督办要求 / 处理结果 / 办结意见 / 退回理由);
    a dispatch needs a deadline. Raises ValueError saying what is wrong."""
    from cems.service.compliance._runtime import _REQUEST_ID

    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"action command is not JSON: {e}") from e
    if not isinstance(d, dict):
        raise ValueError("action command must be a JSON object")
    action, eid, by, note = d.get("action"), d.get("event_id"), d.get("by"), d.get("note")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if not isinstance(eid, str) or not eid.strip() or len(eid) > 64:
        raise ValueError("action command needs a non-empty string event_id")
    by = _clean(by) if isinstance(by, str) else None
    if not by or len(by) > 200:
        raise ValueError("action command needs 'by': who acts (1-200 characters)")
    note = _clean(note) if isinstance(note, str) else None
    if not note or len(note) > NOTE_MAX_CHARS:
        raise ValueError(f"action command needs a 'note' of 1-{NOTE_MAX_CHARS} characters")
    reply_to = d.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not _REQUEST_ID.match(reply_to)):
        raise ValueError("action command 'reply_to' must be 1-64 letters, digits, '-' or '_'")
    at = _iso(d["at"], "at") if d.get("at") is not None else None
    to = d.get("dispatched_to")
    if to is not None and (not isinstance(to, str) or not to.strip() or len(to) > 64):
        raise ValueError("action 'dispatched_to' must be a district code")
    deadline = _iso(d["deadline"], "deadline") if d.get("deadline") is not None else None
    if action == DISPATCH and deadline is None:
        raise ValueError("a dispatch needs a 'deadline' (ISO 8601): when the district's answer is due")
    if action not in (DISPATCH, SEND_BACK) and (deadline is not None or to is not None):
        raise ValueError(f"{action} takes no deadline or dispatched_to")
    if action == SEND_BACK and to is not None:
        raise ValueError("send_back returns the case to the district it was dispatched to")
    return ActionCommand(action, eid.strip(), by, note, at, to.strip() if to else None, deadline, reply_to)


def action_line(
    cmd: ActionCommand,
    at: str,
    case: CaseState,
    *,
    event_type: str,
    enterprise: str,
    district: str,
    mn: str,
    ts_ms: int | None = None,
) -> str:
    """``cems_event_action``: one point per action (time = when it was taken, or ``ts_ms``; tags: event id,
    action; the field ``at`` keeps the exact time)."""
    tags = {
        "event_id": cmd.event_id,
        "action": cmd.action,
        "type": event_type,
        "enterprise": enterprise,
        "district": district,
        "mn": mn,
    }
    fields: dict[str, float | int | str | bool | None] = {
        "by": cmd.by,
        "at": at,
        "note": cmd.note,
        "case_status": case.case_status,
        "dispatched_to": case.dispatched_to if cmd.action in (DISPATCH, SEND_BACK) else None,
        "deadline": case.deadline if cmd.action in (DISPATCH, SEND_BACK) else None,
    }
    if ts_ms is None:
        ts_ms = action_ms(at)
    return point(ACTION_MEASUREMENT, tags, fields, ts_ms)


def action_ms(at: str) -> int:
    return round(datetime.fromisoformat(at).timestamp() * 1000)


# ------------------------------------------------------------------------------------------------ SQLite


def load_case(conn: sqlite3.Connection, event_id: str, acked: bool) -> CaseState:
    """The case of an event; events acknowledged before cases existed (``acked_at`` set) are acknowledged."""
    t = conn.execute(
        "SELECT case_status, dispatched_to, dispatched_at, deadline FROM event_case WHERE event_id = ?", (event_id,)
    ).fetchone()
    if t is None:
        return CaseState(CASE_ACKNOWLEDGED if acked else CASE_NEW)
    return CaseState(t[0], t[1], t[2], t[3])


def find_request(conn: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    """The action already recorded for ``request_id`` (a redelivered command), or ``None``."""
    t = conn.execute(
        "SELECT seq, event_id, action, by, at, note, dispatched_to, deadline, case_status "
        "FROM event_actions WHERE request_id = ?",
        (request_id,),
    ).fetchone()
    return None if t is None else _history_row(t)


def _history_row(t: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("seq", "event_id", "action", "by", "at", "note", "dispatched_to", "deadline", "case_status")
    return dict(zip(keys, t, strict=True))


def history(conn: sqlite3.Connection, event_id: str) -> list[dict[str, Any]]:
    """The actions on one event, oldest first."""
    q = (
        "SELECT seq, event_id, action, by, at, note, dispatched_to, deadline, case_status "
        "FROM event_actions WHERE event_id = ? ORDER BY seq"
    )
    return [_history_row(t) for t in conn.execute(q, (event_id,))]


def record_action(
    conn: sqlite3.Connection,
    cmd: ActionCommand,
    at: str,
    case: CaseState,
    rows: list[OutboxRow],
    now_ts: float,
) -> int:
    """Append the action, store the case (and, for an ack, the event's acknowledgement) and enqueue its
    alerts in one transaction; returns the action's sequence number."""
    with transaction(conn):
        if cmd.action == ACK:
            conn.execute(
                "UPDATE events SET acked_by=?, acked_at=?, ack_note=?, updated_ts=? WHERE event_id=?",
                (cmd.by, at, cmd.note, now_ts, cmd.event_id),
            )
        cur = conn.execute(
            "INSERT INTO event_actions(event_id, action, by, at, note, dispatched_to, deadline, case_status, "
            "request_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                cmd.event_id,
                cmd.action,
                cmd.by,
                at,
                cmd.note,
                case.dispatched_to,
                case.deadline,
                case.case_status,
                cmd.reply_to,
            ),
        )
        conn.execute(
            "INSERT OR REPLACE INTO event_case(event_id, case_status, dispatched_to, dispatched_at, deadline, "
            "updated_at) VALUES (?,?,?,?,?,?)",
            (cmd.event_id, case.case_status, case.dispatched_to, case.dispatched_at, case.deadline, at),
        )
        enqueue(conn, rows, now_ts)
        return int(cur.lastrowid or 0)


def record_legacy_ack(conn: sqlite3.Connection, event_id: str, by: str, at: str, note: str | None) -> None:
    """The history row and case of an acknowledgement that came on the ``{command_prefix}/ack`` topic."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO event_actions(event_id, action, by, at, note, case_status) VALUES (?,?,?,?,?,?)",
            (event_id, ACK, by, at, note or "", CASE_ACKNOWLEDGED),
        )
        conn.execute(
            "INSERT OR IGNORE INTO event_case(event_id, case_status, updated_at) VALUES (?,?,?)",
            (event_id, CASE_ACKNOWLEDGED, at),
        )


# ------------------------------------------------------------------------------------------------ client


async def send_action(
    mqtt_settings: MqttSettings,
    topics: Topics,
    body: dict[str, Any],
    *,
    timeout_s: float = 30.0,
    confirm_s: float = 10.0,
) -> dict[str, Any] | None:
    """Publish an action command (QoS 1; ``body`` as :func:`parse_action` reads it, without ``reply_to``)
    and wait for the broker's PUBACK; with ``confirm_s`` > 0 also for the ingester's reply
    (``{"result": "done" | "invalid_state" | "unknown_event" | "bad_command", …}``), else return ``None``."""
    request_id = uuid.uuid4().hex
    payload = dict(body)
    if confirm_s > 0:
        payload["reply_to"] = request_id
    return await send_command(
        mqtt_settings,
        action_topic(topics),
        payload,
        client_id=f"cems-action-{request_id[:10]}",
        reply_topic=f"{topics.command_prefix}/reply/{request_id}",
        what="action",
        timeout_s=timeout_s,
        confirm_s=confirm_s,
    )
