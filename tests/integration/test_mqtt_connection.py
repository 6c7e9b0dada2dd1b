"""The ingester's MQTT client against the real Mosquitto: an idle connection stays up on keep-alive, a
persistent session gets what was published while it was away, and an unacknowledged message comes back
after a reconnection (at least once) while an acknowledged one does not."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from cems.service.mqtt import MqttConnection, MqttSettings

pytestmark = pytest.mark.integration


async def _get(conn: MqttConnection, timeout: float = 10.0) -> Any:
    return await asyncio.wait_for(conn.queue.get(), timeout)


async def test_keep_alive_persistent_session_and_redelivery(mosquitto: Any) -> None:
    topic = f"t/{uuid.uuid4().hex[:8]}"
    cid = f"ingester-{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(url=mosquitto.url, client_id=cid, keepalive_s=2)
    pub = MqttConnection(MqttSettings(url=mosquitto.url, client_id=f"pub-{cid}", clean_session=True), [])
    await pub.start()

    conn = MqttConnection(settings, [(f"{topic}/#", 1)])
    await conn.start()
    await asyncio.sleep(5.5)  # idle for more than 1.5 × keep-alive: PINGREQ keeps the connection
    assert conn.connected and conn.disconnects == 0 and conn.connects == 1

    await pub.publish(f"{topic}/a", b"1", qos=1)
    await pub.publish(f"{topic}/a", b"2", qos=1)
    m1, m2 = await _get(conn), await _get(conn)
    assert (m1.payload, m2.payload, m1.qos) == (b"1", b"2", 1)
    conn.ack(m1)  # m2 is never acknowledged
    await asyncio.sleep(0.3)
    await conn.stop()

    await pub.publish(f"{topic}/a", b"3", qos=1)  # while the ingester is away: queued in its session
    conn = MqttConnection(settings, [(f"{topic}/#", 1)])
    await conn.start()
    got = [(await _get(conn)).payload for _ in range(2)]
    assert sorted(got) == [b"2", b"3"]  # m2 redelivered, m1 not; m3 from the session
    with pytest.raises(TimeoutError):
        await _get(conn, 1.0)
    await conn.stop()
    await pub.stop()
