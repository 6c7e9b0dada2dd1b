"""MQTT adapter: paho-mqtt in its own network thread, bridged to asyncio.

Why paho and not aiomqtt: aiomqtt 2.x acknowledges QoS 1 messages on receipt, but cems must acknowledge a
message only after its data are durable (DEVELOPERS.md, issue 7).  paho-mqtt 2.x has ``manual_ack``.

Back-pressure: the broker sends at most its in-flight window of unacknowledged QoS 1 messages to this
client (Mosquitto ``max_inflight_messages``); messages wait in a bounded :class:`Inbox`; if it is ever full
the paho thread waits, which stops reading the socket (TCP back-pressure) instead of dropping anything.

The hand-off from the paho thread to the event loop costs one deque append per message and one loop
wake-up per burst (measured: a cross-thread coroutine round trip per message made the paho thread spend
~80 % of its time waiting; docs/benchmark.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cems.errors import ServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float  # time.time() at arrival


@dataclass(frozen=True, slots=True)
class MqttSettings:
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "cems-ingester"
    clean_session: bool = False
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # TLS when the URL is mqtts:// (or a CA file is given)
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def host_port(self) -> tuple[str, int, bool]:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ServiceError(f"MQTT URL {self.url!r}: scheme must be mqtt:// or mqtts://")
        tls = u.scheme in ("mqtts", "ssl")
        return u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), tls


def make_client(settings: MqttSettings, *, manual_ack: bool) -> tuple[mqtt.Client, str, int]:
    """A configured paho client (not yet connected), with credentials and TLS from the settings/URL."""
    host, port, tls = settings.host_port
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        clean_session=settings.clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    u = urlparse(settings.url)
    user = settings.username or (unquote(u.username) if u.username else None)
    pw = settings.password or (unquote(u.password) if u.password else None)
    if user:
        client.username_pw_set(user, pw)
    if tls or settings.ca_file:
        ctx = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
        client.tls_set_context(ctx)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    # exponential back-off between reconnects (paho doubles the delay); a random start and cap per client
    # spread a fleet's reconnections after a broker restart (jitter)
    client.reconnect_delay_set(min_delay=random.randint(1, 3), max_delay=random.randint(30, 60))
    return client, host, port


class Inbox:
    """Bounded hand-off of inbound messages from the paho thread to the event loop.

    Same consumer interface as :class:`asyncio.Queue` (``get``, ``get_nowait``, ``empty``, ``qsize``).
    ``deque.append``/``popleft`` are atomic in CPython; the loop is woken once per burst, not per message.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._dq: deque[InboundMessage] = deque()
        self._event = asyncio.Event()
        self._signalled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- producer (paho thread) -------------------------------------------------------------------------
    def put_blocking(self, m: InboundMessage, closing: Callable[[], bool]) -> bool:
        """Append; wait while full (back-pressure).  ``False`` if the connection is closing."""
        while len(self._dq) >= self.maxsize:
            if closing():
                return False
            time.sleep(0.005)
        self._dq.append(m)
        if not self._signalled and self._loop is not None:
            self._signalled = True
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # loop closed
                return False
        return True

    # -- consumer (event loop) --------------------------------------------------------------------------
    def empty(self) -> bool:
        return not self._dq

    def qsize(self) -> int:
        return len(self._dq)

    def get_nowait(self) -> InboundMessage:
        try:
            return self._dq.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None

    async def get(self) -> InboundMessage:
        while True:
            if self._dq:
                return self._dq.popleft()
            self._event.clear()
            self._signalled = False  # the next put wakes us; re-check before waiting (no lost wake-up)
            if self._dq:
                continue
            await self._event.wait()


class MqttConnection:
    """A persistent-session MQTT connection delivering messages into a bounded asyncio queue.

    Call :meth:`ack` once a message's data are durable.  :meth:`publish` waits for the broker's PUBACK.
    """

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: list[tuple[str, int]],
        *,
        queue_size: int = 20000,
        manual_ack: bool = True,
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.queue = Inbox(queue_size)
        self._client, self._host, self._port = make_client(settings, manual_ack=manual_ack)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = threading.Event()
        self._closing = False
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()
        self.connects = 0
        self.disconnects = 0
        c = self._client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish

    # -- paho thread callbacks -------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.error("MQTT connect refused: %s", rc)
            return
        self.connects += 1
        log.info("MQTT connected to %s:%s (session present: %s)", self._host, self._port, flags.session_present)
        if self.subscriptions:
            client.subscribe(self.subscriptions)
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._closing:
            self.disconnects += 1
            log.warning("MQTT disconnected (%s); paho reconnects with back-off", rc)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        m = InboundMessage(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.time())
        self.queue.put_blocking(m, lambda: self._closing)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._published, mid)

    # -- event-loop side ------------------------------------------------------------------------------
    def _published(self, mid: int) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None:
            self._early.add(mid)
        elif not fut.done():
            fut.set_result(None)

    async def start(self, *, wait_s: float = 30.0) -> None:
        self._loop = asyncio.get_running_loop()
        self.queue.bind(self._loop)
        # jitter the first connection so a restarted fleet of ingesters does not hit the broker at once
        await asyncio.sleep(random.uniform(0, 0.05))
        try:
            self._client.connect_async(self._host, self._port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as e:
            raise ServiceError(f"cannot connect to MQTT broker {self.settings.url}: {e}") from e
        self._client.loop_start()
        ok = await asyncio.to_thread(self._connected.wait, wait_s)
        if not ok:
            self._closing = True
            self._client.loop_stop()
            raise ServiceError(f"MQTT broker {self.settings.url} did not accept a connection within {wait_s}s")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def ack(self, msg: InboundMessage) -> None:
        """Acknowledge a message to the broker (PUBACK for QoS 1)."""
        if msg.qos > 0:
            self._client.ack(msg.mid, msg.qos)

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged (QoS 1) or the message was sent (QoS 0)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return
        if info.mid in self._early:
            self._early.discard(info.mid)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = fut
        await fut

    def publish_nowait(self, topic: str, payload: bytes | str, *, qos: int = 1) -> None:
        """Queue a publish without waiting (paho retries QoS 1 until acknowledged while running)."""
        info = self._client.publish(topic, payload, qos=qos)
        if qos and info.mid not in self._early:
            self._pending[info.mid] = asyncio.get_running_loop().create_future()
        self._early.discard(info.mid)

    async def stop(self) -> None:
        self._closing = True
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
