"""Marks (标记), stop declarations (停产申报), repairs (修约) and withdrawals: schema ``cems.mark/1`` (docs/payload.md).

An enterprise publishes one JSON object to ``cems/v1/{mn}/mark`` (its gateway credentials: the broker's ACL
lets an MN publish only under its own ``cems/v1/{mn}/``), or the bureau sends it on
``{command_prefix}/mark`` with ``mn`` in the payload (``cems marks add``)::

    {"schema": "cems.mark/1", "kind": "mark", "type": "cp_fault",
     "from": "2026-11-20T08:00:00+08:00", "to": "2026-11-20T11:00:00+08:00",
     "reason": "引风机跳闸", "attachment": "DOC-2026-118", "submitter": "王工", "reply_to": "a1b2c3"}

``kind``: ``mark`` (a mark type of ``cems/limits/marks.toml`` allowed for the outlet's industry, over
``[from, to)``), ``declaration`` (a stop declaration type, default ``production_stop``), ``repair`` (``pollutant``,
``hour`` and ``value``: the corrected hourly mean, mg/m³ at the reference O2, that replaces the hour's figure)
or ``withdrawal`` (``target``: the id of an earlier record of the same outlet).  ``reply_to`` (optional) asks
for the ingester's answer on ``{command_prefix}/reply/{mn}/{reply_to}`` and makes the record id (a record
sent twice with the same ``reply_to`` is stored once).

Every accepted submission becomes a :class:`MarkRecord`: append-only, with who (``submitter``), when
(``received_at``: the ingester's clock) and from where (``via``: the MQTT topic, whose ACL says who could
publish on it; ``client``: what the sender says it is).  A withdrawal is a record of its own.

Parsing is pure: bad input raises :class:`~cems.errors.RejectedMessage` with a specific reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from cems.errors import RejectedMessage
from cems.model import BEIJING

SCHEMA: Final = "cems.mark/1"
MAX_PAYLOAD_BYTES: Final = 16 * 1024
MarkKind = Literal["mark", "declaration", "repair", "withdrawal"]
KINDS: Final[tuple[MarkKind, ...]] = ("mark", "declaration", "repair", "withdrawal")
#: The declaration type when a declaration names none.
DEFAULT_DECLARATION: Final = "production_stop"
REPAIR: Final = "repair"
WITHDRAWAL: Final = "withdrawal"
#: Record status: ``accepted`` (in force unless withdrawn); ``late`` (a declaration filed after its deadline:
#: kept, without effect, DOMAIN.md §5/§9).
ACCEPTED: Final = "accepted"
LATE: Final = "late"
#: The longest period one mark or declaration may cover.
MAX_SPAN: Final = timedelta(days=366)
#: How far ahead of the clock a mark or declaration may start (planned maintenance, an announced stop).
MAX_AHEAD: Final = timedelta(days=31)
TEXT_MAX: Final = 1000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CODE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_BIDI: Final = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True, slots=True)
class MarkRecord:
    """One stored submission (see the module docstring).  ``start``/``end``: aware, Beijing time; a repair
    covers its hour.  ``type``: the mark or declaration type code, ``repair`` or ``withdrawal``."""

    record_id: str
    kind: MarkKind
    mn: str
    type: str
    start: datetime
    end: datetime
    reason: str
    attachment: str
    submitter: str
    received_at: datetime
    via: str
    client: str = ""
    status: str = ACCEPTED
    pollutant: str | None = None
    value: float | None = None
    target: str | None = None
    note: str = ""

    @property
    def in_force(self) -> bool:
        """A mark, declaration or repair that can have an effect (not a late declaration, not a withdrawal)."""
        return self.status == ACCEPTED and self.kind != WITHDRAWAL

    def to_json(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "kind": self.kind,
            "mn": self.mn,
            "type": self.type,
            "from": self.start.astimezone(BEIJING).isoformat(),
            "to": self.end.astimezone(BEIJING).isoformat(),
            "reason": self.reason,
            "attachment": self.attachment,
            "submitter": self.submitter,
            "received_at": self.received_at.astimezone(BEIJING).isoformat(),
            "via": self.via,
            "client": self.client,
            "status": self.status,
            "pollutant": self.pollutant,
            "value": self.value,
            "target": self.target,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MarkRecord:
        kind = str(d["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown record kind {kind!r}")
        value = d.get("value")
        return cls(
            record_id=str(d["record_id"]),
            kind=kind,
            mn=str(d["mn"]),
            type=str(d["type"]),
            start=_aware(datetime.fromisoformat(str(d["from"]))),
            end=_aware(datetime.fromisoformat(str(d["to"]))),
            reason=str(d.get("reason") or ""),
            attachment=str(d.get("attachment") or ""),
            submitter=str(d.get("submitter") or ""),
            received_at=_aware(datetime.fromisoformat(str(d["received_at"]))),
            via=str(d.get("via") or ""),
            client=str(d.get("client") or ""),
            status=str(d.get("status") or ACCEPTED),
            pollutant=d.get("pollutant") or None,
            value=None if value is None else float(value),
            target=d.get("target") or None,
            note=str(d.get("note") or ""),
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """A parsed ``cems.mark/1`` message: the record (status and note still to be decided against the
    deadline) and the request id to answer on."""

    record: MarkRecord
    reply_to: str | None


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def clean_text(text: str) -> str:
    """``text`` without control and bidi characters (terminal escapes, forged log lines); line breaks and tabs
    become spaces; stripped."""
    out = []
    for ch in text:
        if ch in "\t\r\n":
            out.append(" ")
        elif unicodedata.category(ch) == "Cc" or ch in _BIDI:
            continue
        else:
            out.append(ch)
    return "".join(out).strip()


def _bad(detail: str) -> RejectedMessage:
    return RejectedMessage("bad_mark", detail)


def _text(d: dict[str, Any], key: str, *, required: bool) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise _bad(f"'{key}' is required (1-{TEXT_MAX} characters)")
        return ""
    if not isinstance(v, str):
        raise _bad(f"'{key}' must be a string")
    v = clean_text(v)
    if len(v) > TEXT_MAX or (required and not v):
        raise _bad(f"'{key}' must be 1-{TEXT_MAX} characters")
    return v


def _time(d: dict[str, Any], key: str) -> datetime:
    v = d.get(key)
    if not isinstance(v, str):
        raise _bad(f"'{key}' must be an ISO 8601 time string")
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise _bad(f"'{key}' is not ISO 8601: {v[:40]!r}") from None
    return _aware(t).astimezone(BEIJING)


def record_id(mn: str, kind: str, reply_to: str | None, payload: bytes) -> str:
    """Stable id of a submission: sha1 of the MN, the kind and the request id (or, without one, the payload),
    hex[:16]: a message redelivered by the broker is the same record."""
    key = reply_to if reply_to is not None else hashlib.sha1(payload).hexdigest()
    return hashlib.sha1(f"{mn}|{kind}|{key}".encode()).hexdigest()[:16]


def parse_mark(
    payload: bytes,
    *,
    topic_mn: str | None,
    via: str,
    received_at: datetime,
) -> Submission:
    """Parse one ``cems.mark/1`` message published on ``via`` (``topic_mn``: the MN of a data topic, ``None``
    on the command topic, where the payload names it).  Raises ``RejectedMessage`` (``too_large``,
    ``malformed_json``, ``bad_schema``, ``mn_mismatch``, ``bad_mark``) saying what is wrong.  The type, the
    outlet and the deadline are checked by the caller (:func:`cems.rules.marks.check_submission`)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("too_large", f"a mark message is at most {MAX_PAYLOAD_BYTES} bytes")
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise RejectedMessage("malformed_json", f"mark message is not JSON: {e}") from None
    if not isinstance(d, dict):
        raise _bad("a mark message must be a JSON object")
    if d.get("schema", SCHEMA) != SCHEMA:
        raise RejectedMessage("bad_schema", f"schema must be {SCHEMA!r}, not {str(d.get('schema'))[:40]!r}")
    mn = d.get("mn")
    if mn is not None and not isinstance(mn, str):
        raise _bad("'mn' must be a string")
    if topic_mn is not None:
        if mn is not None and mn != topic_mn:
            raise RejectedMessage("mn_mismatch", f"payload MN {mn!r} does not match topic MN {topic_mn!r}")
        mn = topic_mn
    if not mn:
        raise _bad("'mn' is required on the command topic")
    kind = d.get("kind", "mark")
    if kind not in KINDS:
        raise _bad(f"'kind' must be one of {', '.join(KINDS)}, not {str(kind)[:40]!r}")
    reply_to = d.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, str) or not _REQUEST_ID.match(reply_to)):
        raise _bad("'reply_to' must be 1-64 letters, digits, '-' or '_'")
    submitter = _text(d, "submitter", required=True)
    reason = _text(d, "reason", required=kind != WITHDRAWAL)
    attachment = _text(d, "attachment", required=False)
    client = _text(d, "client", required=False)[:200]
    rid = record_id(mn, kind, reply_to, payload)
    received = received_at.astimezone(BEIJING)
    pollutant: str | None = None
    value: float | None = None
    target: str | None = None
    if kind == "repair":
        pollutant = d.get("pollutant")
        if not isinstance(pollutant, str) or not _CODE.match(pollutant):
            raise _bad("a repair needs 'pollutant': a pollutant code such as a21026")
        start = _time(d, "hour")
        if start.minute or start.second or start.microsecond:
            raise _bad("a repair's 'hour' must be the start of an hour")
        end = start + timedelta(hours=1)
        v = d.get("value")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise _bad("a repair needs 'value': the corrected hourly mean (mg/m³), a finite number ≥ 0")
        value = float(v)
        type_ = REPAIR
    elif kind == WITHDRAWAL:
        t = d.get("target")
        if not isinstance(t, str) or not _REQUEST_ID.match(t):
            raise _bad("a withdrawal needs 'target': the record_id of the record it withdraws")
        target = t
        start = end = received
        type_ = WITHDRAWAL
    else:
        default = DEFAULT_DECLARATION if kind == "declaration" else None
        t = d.get("type", default)
        if not isinstance(t, str) or not _CODE.match(t):
            raise _bad("'type' must be a mark type code of cems/limits/marks.toml")
        type_ = t
        start, end = _time(d, "from"), _time(d, "to")
        if end <= start:
            raise _bad(f"'to' ({end.isoformat()}) must be after 'from' ({start.isoformat()})")
        if end - start > MAX_SPAN:
            raise _bad(f"one {kind} covers at most {MAX_SPAN.days} days")
        if start > received + MAX_AHEAD:
            raise _bad(f"'from' is more than {MAX_AHEAD.days} days ahead")
    rec = MarkRecord(
        record_id=rid,
        kind=kind,
        mn=mn,
        type=type_,
        start=start,
        end=end,
        reason=reason,
        attachment=attachment,
        submitter=submitter,
        received_at=received,
        via=via,
        client=client,
        pollutant=pollutant,
        value=value,
        target=target,
    )
    return Submission(rec, reply_to)


def mark_payload(
    kind: MarkKind,
    *,
    mn: str | None,
    submitter: str,
    reason: str = "",
    type_: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    attachment: str = "",
    pollutant: str | None = None,
    value: float | None = None,
    target: str | None = None,
    reply_to: str | None = None,
    client: str = "",
) -> dict[str, Any]:
    """A ``cems.mark/1`` message (what ``cems marks`` sends)."""
    d: dict[str, Any] = {"schema": SCHEMA, "kind": kind, "submitter": submitter}
    if mn is not None:
        d["mn"] = mn
    if reason:
        d["reason"] = reason
    if type_ is not None:
        d["type"] = type_
    if kind == "repair" and start is not None:
        d["hour"] = _aware(start).isoformat()
    elif start is not None:
        d["from"] = _aware(start).isoformat()
    if end is not None:
        d["to"] = _aware(end).isoformat()
    if attachment:
        d["attachment"] = attachment
    if pollutant is not None:
        d["pollutant"] = pollutant
    if value is not None:
        d["value"] = value
    if target is not None:
        d["target"] = target
    if reply_to is not None:
        d["reply_to"] = reply_to
    if client:
        d["client"] = client
    return d
