"""The ingester's MQTT client against the real Mosquitto: an idle connection stays up on keep-alive, a
persistent session gets what was published while it was away, and an unacknowledged message comes back
after a reconnection (at least once) while an acknowledged one does not; back-pressure does not kill the
connection; two clients with one client id are reported and back off."""

from __future__ import annotations

import asyncio
import logging
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


async def test_back_pressure_does_not_kill_a_healthy_connection(mosquitto: Any) -> None:
    """Reading paused (inbox full) for several keep-alive periods: the PINGRESP waits unread behind the
    messages, and the connection must stay up; nothing is lost once the consumer catches up."""
    topic = f"t/{uuid.uuid4().hex[:8]}"
    cid = f"ingester-{uuid.uuid4().hex[:8]}"
    pub = MqttConnection(MqttSettings(url=mosquitto.url, client_id=f"pub-{cid}", clean_session=True), [])
    await pub.start()
    conn = MqttConnection(MqttSettings(url=mosquitto.url, client_id=cid, keepalive_s=2), [(topic, 1)], queue_size=4)
    await conn.start()
    try:
        for i in range(12):
            await pub.publish(topic, str(i).encode(), qos=1)
        await asyncio.sleep(7.0)  # > 3 × keep-alive with reading paused
        assert conn.connected and conn.disconnects == 0 and conn.connects == 1
        got = []
        for _ in range(12):
            m = await _get(conn)
            got.append(m.payload)
            conn.ack(m)
        assert got == [str(i).encode() for i in range(12)]
        assert conn.disconnects == 0
    finally:
        await conn.stop()
        await pub.stop()


async def test_two_clients_with_one_client_id_are_reported_and_back_off(
    mosquitto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cid = f"ingester-{uuid.uuid4().hex[:8]}"
    a, b = (MqttConnection(MqttSettings(url=mosquitto.url, client_id=cid), [("t/x", 1)]) for _ in range(2))
    for c in (a, b):
        c.min_delay_s, c.max_delay_s = 0.1, 4.0
    with caplog.at_level(logging.WARNING, logger="cems.service.mqtt"):
        await a.start()
        await b.start()  # takes the session over from a; a takes it back, ...
        await asyncio.sleep(5.0)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and all(repr(cid) in e and "same client id" in e for e in errors)
        # with a fixed 0.1 s delay they would kick each other ≈ 50 times in 5 s; backing off, a few times
        assert a.connects + b.connects < 15
    finally:
        await a.stop()
        await b.stop()
