"""paho-mqtt adapter of the plant-side programs: one factory for the simulator and the HJ 212 bridge.

The ingester does not use paho: it has its own asyncio client (:mod:`cems.service.mqtt`, where the reasons
and the measurements are written).  The plant-side programs publish from paho's network thread, which is
plenty for them, so the one paho set-up they share lives here (telegraf's ``plugins/common/mqtt/``): the
same :class:`~cems.service.mqtt.MqttSettings` (URL, credentials, TLS) as the ingester, the same MQTT 3.1.1.
"""

from __future__ import annotations

import random

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cems.service.mqtt import MqttSettings

__all__ = ["make_client"]


def make_client(settings: MqttSettings, *, manual_ack: bool) -> tuple[mqtt.Client, str, int]:
    """A configured paho client (not yet connected), with credentials and TLS from the settings/URL, and the
    broker's host and port to connect to."""
    host, port, _ = settings.host_port
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=settings.clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    user, pw = settings.credentials()
    if user:
        client.username_pw_set(user, pw)
    ctx = settings.tls_context()
    if ctx is not None:
        client.tls_set_context(ctx)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    # exponential back-off between reconnects (paho doubles the delay); a random start and cap per client
    # spread a fleet's reconnections after a broker restart (jitter)
    client.reconnect_delay_set(min_delay=random.randint(1, 3), max_delay=random.randint(30, 60))
    return client, host, port
