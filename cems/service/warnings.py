"""Heavy-pollution warning levels set by an operator (issue 16): the MQTT command, its parsing, the durable
history file and the history file format of ``cems replay --warnings``.

An operator sets the city's level with ``cems warning set LEVEL --from --to --by``: one JSON command on
``{command_prefix}/warning``, QoS 1, **retained** (a restarted ingester, or one that lost its state, receives
the last setting again when it subscribes)::

    {"level": "orange", "from": "2026-12-01T00:00:00+08:00", "to": "2026-12-04T00:00:00+08:00",
     "by": "张三", "set_at": "2026-11-30T21:05:00+08:00", "note": "市重污染天气应急指挥部办公室通知",
     "reply_to": "<request id>"}

``to`` may be null (until further notice); a later setting overrides an earlier one for the time it covers
(a lift is ``level = "none"``).  The broker ACL lets only the command user (operators) write the command
topics (:mod:`cems.security`).  The ingester keeps every setting in ``warnings.json`` in its state directory,
ignores a setting it already has (the retained copy is delivered on every subscription), turns each new one
into a ``warning_level`` event, judges the emergency lists' kept hours again, and replies on
``{command_prefix}/reply/{reply_to}``.  The history file (a JSON array of settings, the same objects without
``reply_to``) is also what ``cems replay --warnings FILE`` reads, so replay judges as live did.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import Topics
from cems.rules.emergency import WarningHistory, WarningLevel, WarningPeriod
from cems.service.commands import send_command
from cems.service.mqtt import MqttSettings

#: The history file in the ingester's state directory.
HISTORY_FILE: Final = "warnings.json"
#: Longest ``by`` / ``note`` kept (characters).
_MAX_TEXT: Final = 1000


def warning_topic(topics: Topics) -> str:
    return f"{topics.command_prefix}/warning"


def parse_warning(payload: bytes) -> tuple[WarningPeriod, str | None]:
    """A warning command → (the setting, its ``reply_to``).  Raises ``ValueError`` naming what is wrong."""
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError("a warning command is a JSON object")
    for key in ("level", "from", "by"):
        if not isinstance(d.get(key), str) or not d[key].strip():
            raise ValueError(f"{key!r} is required (a non-empty string)")
    for key in ("to", "set_at", "note", "reply_to"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise ValueError(f"{key!r} must be a string or null")
    if len(d["by"]) > _MAX_TEXT or len(d.get("note") or "") > _MAX_TEXT:
        raise ValueError(f"'by' and 'note' are at most {_MAX_TEXT} characters")
    try:
        p = WarningPeriod.from_json(d)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(str(e)) from None
    return p, d.get("reply_to")


def read_history(path: Path) -> WarningHistory:
    """A history file (JSON array of settings); an empty history when the file does not exist.  Raises
    :class:`CemsError` naming the file and the entry when it cannot be read."""
    if not path.exists():
        return WarningHistory()
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CemsError(f"{path}: cannot read the warning history: {e}") from None
    if not isinstance(rows, list):
        raise CemsError(f"{path}: a warning history is a JSON array of settings")
    periods = []
    for i, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise ValueError("not an object")
            periods.append(WarningPeriod.from_json(row))
        except (ValueError, KeyError, TypeError) as e:
            raise CemsError(f"{path}: setting [{i}]: {e}") from None
    return WarningHistory(tuple(periods))


def write_history(path: Path, history: WarningHistory) -> None:
    """Write the history atomically (a temporary file renamed over it, after fsync)."""
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps(history.to_json(), ensure_ascii=False, indent=1)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


async def publish_warning(
    mqtt_settings: MqttSettings,
    topics: Topics,
    level: WarningLevel,
    start: datetime,
    end: datetime | None,
    by: str,
    *,
    note: str = "",
    set_at: datetime | None = None,
    timeout_s: float = 30.0,
    confirm_s: float = 0.0,
) -> dict[str, Any] | None:
    """Publish a warning setting (QoS 1, retained) and wait for the broker's PUBACK; with ``confirm_s`` > 0
    also for the ingester's reply (``{"result": "set" | "already_set" | "bad_command", …}``), else ``None``."""
    period = WarningPeriod(level, start, end, by, set_at or datetime.now(BEIJING).replace(microsecond=0), note)
    request_id = uuid.uuid4().hex
    body: dict[str, Any] = period.to_json()
    if confirm_s > 0:
        body["reply_to"] = request_id
    return await send_command(
        mqtt_settings,
        warning_topic(topics),
        body,
        client_id=f"cems-warning-{request_id[:10]}",
        reply_topic=f"{topics.command_prefix}/reply/{request_id}",
        what="warning",
        retain=True,
        timeout_s=timeout_s,
        confirm_s=confirm_s,
    )
