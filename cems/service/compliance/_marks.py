"""Sending marks, stop declarations, repairs and withdrawals (``cems.mark/1``, issue 14) to the running ingester
over MQTT and waiting for its answer (``cems marks``).  The ingester is the single writer of the state; this
client only publishes and listens on ``{command_prefix}/reply/{mn}/{request_id}``."""

from __future__ import annotations

import uuid
from typing import Any

from cems.registry import Topics
from cems.service.commands import send_command
from cems.service.mqtt import MqttSettings


def mark_topic(topics: Topics, mn: str, *, on_behalf: bool) -> str:
    """Where a mark is published: the MN's own ``{prefix}/{mn}/mark`` (the enterprise's gateway credentials:
    the broker's ACL lets an MN publish only there), or ``{command_prefix}/mark`` (the bureau, entering a mark
    on an enterprise's behalf with the command user)."""
    return f"{topics.command_prefix}/mark" if on_behalf else f"{topics.prefix}/{mn}/mark"


async def submit_mark(
    mqtt_settings: MqttSettings,
    topics: Topics,
    payload: dict[str, Any],
    *,
    on_behalf: bool = False,
    timeout_s: float = 30.0,
    confirm_s: float = 10.0,
    request_id: str | None = None,
) -> dict[str, Any] | None:
    """Publish one ``cems.mark/1`` message (QoS 1; ``payload`` must name ``mn``) and, with ``confirm_s`` > 0,
    wait that long for the ingester's answer: ``{"result": "accepted" | "late" | "duplicate" | a rejection
    reason, "detail": …, "record": {…}}``, or ``None`` when none came.  Uses its own clean-session client id.

    ``request_id`` (default: a new one) makes the record id: sending again with the same one (a retry after a
    lost answer) is stored once (answer ``duplicate``)."""
    mn = str(payload["mn"])
    request_id = request_id or uuid.uuid4().hex
    body = {**payload, "reply_to": request_id}
    return await send_command(
        mqtt_settings,
        mark_topic(topics, mn, on_behalf=on_behalf),
        body,
        client_id=f"cems-mark-{request_id[:10]}",
        reply_topic=f"{topics.command_prefix}/reply/{mn}/{request_id}",
        what="mark",
        timeout_s=timeout_s,
        confirm_s=confirm_s,
    )
