"""The client side of the ingester's commands: publish one JSON command over MQTT and, if asked, wait for the
ingester's reply.  One function for every command (acknowledgements, event actions, marks, warning settings),
so they all behave alike: a short-lived clean-session client of its own (never the ingester's persistent
session), QoS 1 with the broker's PUBACK awaited, the reply read at QoS 0 from ``reply_topic``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import replace
from typing import Any

from cems.errors import ServiceError
from cems.service.mqtt import MqttConnection, MqttSettings


async def send_command(
    mqtt_settings: MqttSettings,
    topic: str,
    body: dict[str, Any],
    *,
    client_id: str,
    reply_topic: str,
    what: str,
    retain: bool = False,
    timeout_s: float = 30.0,
    confirm_s: float = 0.0,
) -> dict[str, Any] | None:
    """Publish ``body`` (JSON) on ``topic`` (QoS 1, ``retain`` as given) and wait ``timeout_s`` for the
    broker's PUBACK (``ServiceError`` naming ``what`` otherwise); with ``confirm_s`` > 0 also wait that long
    for a JSON object on ``reply_topic`` and return it, or ``None`` when none came."""
    settings = replace(mqtt_settings, client_id=client_id, clean_session=True)
    # QoS 0: this short-lived client does not acknowledge what it receives.
    conn = MqttConnection(settings, [(reply_topic, 0)] if confirm_s > 0 else [], manual_ack=False)
    await conn.start(wait_s=timeout_s)
    try:
        data = json.dumps(body, ensure_ascii=False)
        try:
            await asyncio.wait_for(conn.publish(topic, data, qos=1, retain=retain), timeout_s)
        except TimeoutError as e:
            raise ServiceError(f"the MQTT broker did not acknowledge the {what} within {timeout_s}s") from e
        if confirm_s <= 0:
            return None
        deadline = time.monotonic() + confirm_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(conn.queue.get(), left)
            except TimeoutError:
                break
            if msg.topic == reply_topic:
                with contextlib.suppress(ValueError):
                    reply = json.loads(msg.payload)
                    if isinstance(reply, dict):
                        return reply
        return None
    finally:
        await conn.stop()
