"""MQTT adapter of the ingester: a small MQTT 3.1.1 client on asyncio (:class:`MqttConnection`).

Why not a library here.  The ingester needs QoS 1 with *manual* acknowledgement (a message is acknowledged
only once its data are durable: README, "Reliability and security", and issue 7): aiomqtt 2.x acknowledges on
receipt, so it cannot be used; paho-mqtt 2.x can (``manual_ack``) and was used until measured: in ``cems
bench`` the paho adapter alone cost ≈ 40 µs of CPU per message of the ingester's ≈ 100 µs — its network thread
parses every packet in Python with four ``recv`` calls, each acknowledgement from the event loop wakes that
thread through a socket pair and goes out in its own ``send``, and the two threads contend for the GIL.  This
client parses every packet of a received chunk in one pass on the event loop and writes a burst of PUBACKs in
one ``write`` (docs/benchmark.md).  It implements only what the ingester uses: CONNECT (persistent session,
credentials, TLS), SUBSCRIBE, PUBLISH in at QoS 0/1 with manual PUBACK, PUBLISH out at QoS 0/1 with
retransmission after a reconnect, keep-alive, and reconnection with exponential back-off and jitter.  The
ingester does not import paho: the plant-side programs (simulator, HJ 212 bridge) keep paho-mqtt behind their
own adapter (``gateways/_paho.py``), and the benchmark's baseline consumer uses it directly
(``cems/bench/_sub.py``).

Acknowledgement is safe across reconnections: a message carries the number of the connection it arrived
on, and is acknowledged only on that connection.  After a reconnection the broker redelivers what was not
acknowledged (same packet identifiers), and the copy is acknowledged instead: an old acknowledgement can
never acknowledge a different message that the broker gave a freed identifier.

Back-pressure: the broker sends at most its in-flight window of unacknowledged QoS 1 messages to this
client (Mosquitto ``max_inflight_messages``); messages wait in a bounded :class:`Inbox`; when it is full
the client stops reading the socket (TCP back-pressure) instead of dropping anything, and resumes once
the consumer has taken half of it.  While reading is paused, the keep-alive still sends PINGREQ (the broker
must hear from the client) but the PINGRESP deadline is suspended: the answer waits unread behind the
messages, and a healthy connection is not dropped for it (the deadline starts again on resume).

Acknowledgements go out in the order the messages were received (MQTT-4.6.0-2): a message acknowledged
before an earlier one waits until the earlier one is acknowledged too, then both go out in one write.

Client-id takeover: two clients with one client id take the session from each other (the broker closes the
older connection at once).  A connection the broker closes soon after accepting it is counted; from the
second in a row the client logs an ERROR naming the client id and backs off longer each time, instead of
fighting for the session every second and splitting the stream between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlparse

from cems.errors import MqttProtocolError as MqttProtocolError  # declared in cems.errors, re-exported
from cems.errors import ServiceError
from cems.model import slot_setters

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float  # time.time() at arrival
    #: The connection it arrived on (acknowledged only on that connection).
    connection: int = 0


_M_TOPIC, _M_PAYLOAD, _M_MID, _M_QOS, _M_RECEIVED, _M_CONNECTION = slot_setters(
    InboundMessage, ("topic", "payload", "mid", "qos", "received", "connection")
)
_new_object: Final = object.__new__


def new_inbound(topic: str, payload: bytes, mid: int, qos: int, received: float, connection: int) -> InboundMessage:
    """``InboundMessage(...)`` for the reader (one a message): the slots set directly, ≈ 5 500 instructions
    instead of ≈ 9 900 for the frozen dataclass's ``__init__`` (callgrind, issue 20).  The same object."""
    m = _new_object(InboundMessage)
    _M_TOPIC(m, topic)
    _M_PAYLOAD(m, payload)
    _M_MID(m, mid)
    _M_QOS(m, qos)
    _M_RECEIVED(m, received)
    _M_CONNECTION(m, connection)
    return m


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
    #: Seconds to wait for the TCP (and TLS) connection and then for the broker's CONNACK: a broker that
    #: accepts TCP but never answers is given up and connected to again (with back-off).
    connect_timeout_s: float = 10.0
    #: Further brokers (other nodes of one cluster) after ``url``: when the current one is unreachable or
    #: the connection drops, the next one in the list is tried (with the usual back-off once every one of
    #: them failed in a row); a persistent session kept cluster-wide continues on the node reached.
    failover_urls: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        """Every broker, in the order they are tried: ``url``, then ``failover_urls``."""
        return (self.url, *self.failover_urls)

    @property
    def endpoints(self) -> list[tuple[str, int, bool]]:
        """(host, port, TLS) of every broker in :attr:`urls` (each URL checked)."""
        return [_host_port(u) for u in self.urls]

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) from the settings, else from the URL."""
        u = urlparse(self.url)
        user = self.username or (unquote(u.username) if u.username else None)
        pw = self.password or (unquote(u.password) if u.password else None)
        return user, pw

    def tls_context(self, tls: bool | None = None) -> ssl.SSLContext | None:
        """The TLS context when the URL (or ``tls``: a failover URL's) is mqtts:// or a CA file is given
        (server certificate and host checked)."""
        tls = self.host_port[2] if tls is None else tls
        if not (tls or self.ca_file):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    @property
    def host_port(self) -> tuple[str, int, bool]:
        return _host_port(self.url)


def _host_port(url: str) -> tuple[str, int, bool]:
    """(host, port, TLS) of an ``mqtt://`` or ``mqtts://`` URL; :class:`ServiceError` for anything else."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ServiceError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port
    except ValueError:
        raise ServiceError(f"MQTT URL {url!r}: the port is not a number from 0 to 65535") from None
    return u.hostname or "127.0.0.1", port or (8883 if tls else 1883), tls


# -- MQTT 3.1.1 packet types (OASIS MQTT 3.1.1, section 2.2.1) ------------------------------------------------
_CONNECT: Final = 0x10
_CONNACK: Final = 0x20
_PUBLISH: Final = 0x30
_PUBACK: Final = 0x40
_SUBSCRIBE: Final = 0x82  # with the reserved flags 0010
_SUBACK: Final = 0x90
_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = 0xD0
_DISCONNECT: Final = b"\xe0\x00"
_CONNACK_CODES: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
#: Topic filters per SUBSCRIBE packet.
_SUBSCRIBE_CHUNK: Final = 1000


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def _connect_packet(s: MqttSettings) -> bytes:
    user, pw = s.credentials()
    flags = 0 if not s.clean_session else 0x02
    payload = _utf8(s.client_id)
    if user:
        flags |= 0x80
        payload += _utf8(user)
        if pw is not None:
            flags |= 0x40
            payload += _utf8(pw)
    return _packet(_CONNECT, _utf8("MQTT") + bytes((4, flags)) + struct.pack("!H", s.keepalive_s) + payload)


def _publish_packet(topic: str, payload: bytes, qos: int, mid: int, *, retain: bool, dup: bool) -> bytes:
    first = _PUBLISH | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    return _packet(first, _utf8(topic) + (struct.pack("!H", mid) if qos else b"") + payload)


class Inbox:
    """Bounded queue of inbound messages between the MQTT connection and the ingest pipeline (one event loop).

    Same consumer interface as :class:`asyncio.Queue` (``get``, ``get_nowait``, ``empty``, ``qsize``).  When it
    holds ``maxsize`` messages the connection stops reading (``full``); once the consumer has taken it down
    to half, ``on_room`` is called and reading resumes.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._dq: deque[InboundMessage] = deque()
        self._event = asyncio.Event()
        self.on_room: Callable[[], None] | None = None
        self._waiting_room = False

    # -- producer (the connection) ------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        return len(self._dq) >= self.maxsize

    def put(self, m: InboundMessage) -> None:
        self._dq.append(m)
        if not self._event.is_set():
            self._event.set()

    def wait_for_room(self) -> None:
        self._waiting_room = True

    # -- consumer (the ingest pipeline) -------------------------------------------------------------------
    def empty(self) -> bool:
        return not self._dq

    def qsize(self) -> int:
        return len(self._dq)

    def _taken(self) -> None:
        if self._waiting_room and len(self._dq) <= self.maxsize // 2:
            self._waiting_room = False
            if self.on_room is not None:
                self.on_room()

    def get_nowait(self) -> InboundMessage:
        try:
            m = self._dq.popleft()
        except IndexError:
            raise asyncio.QueueEmpty from None
        if self._waiting_room:
            self._taken()
        return m

    async def get(self) -> InboundMessage:
        while not self._dq:
            self._event.clear()
            await self._event.wait()
        return self.get_nowait()


class _Protocol(asyncio.Protocol):
    """One TCP (or TLS) connection to the broker: frames packets, hands them to the :class:`MqttConnection`."""

    def __init__(self, owner: MqttConnection, number: int) -> None:
        self.owner = owner
        self.number = number
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = b""
        self._paused = False
        #: Set at the broker's CONNACK (whatever its return code) or when the connection is lost.
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: time.monotonic() of an accepting CONNACK.
        self.accepted_at: float | None = None
        #: Why this client closed the connection itself (None: the broker or the network closed it).
        self.closed_by_us: str | None = None
        #: The CONNACK's session-present flag.
        self.session_present = False

    def close_by_us(self, why: str) -> None:
        """Abort the connection from this side (not counted as a takeover)."""
        if self.closed_by_us is None:
            self.closed_by_us = why
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.answered.done():
            self.answered.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf = self._buf + data if self._buf else data
        if not self._paused:
            self._parse()

    def resume(self) -> None:
        """The inbox has room again: parse what is buffered, then read the socket again."""
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            owner = self.owner
            if owner._ping_sent is not None:  # the PINGRESP deadline was suspended: it starts again now
                owner._ping_sent = time.monotonic()
            self._parse()
            if not self._paused:
                self.transport.resume_reading()

    def _parse(self) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        owner = self.owner
        inbox = owner.queue
        unacked = owner._unacked if owner._manual_ack else None
        order = owner._order
        try:
            while n - pos >= 2:
                first = buf[pos]
                length = 0
                mult = 1
                i = pos + 1
                while True:
                    if i >= n:
                        self._buf = buf[pos:]
                        return
                    b = buf[i]
                    i += 1
                    length += (b & 0x7F) * mult
                    if b < 0x80:
                        break
                    mult *= 128
                    if mult > 128**3:
                        raise MqttProtocolError("malformed remaining length")
                end = i + length
                if end > n:
                    break
                if first & 0xF0 == _PUBLISH:
                    qos = (first >> 1) & 3
                    tlen = (buf[i] << 8) | buf[i + 1]
                    j = i + 2 + tlen
                    topic = buf[i + 2 : j].decode("utf-8")
                    mid = 0
                    if qos:
                        if qos > 1:
                            raise MqttProtocolError("QoS 2 PUBLISH on a QoS 1 subscription")
                        mid = (buf[j] << 8) | buf[j + 1]
                        j += 2
                    m = new_inbound(topic, buf[j:end], mid, qos, time.time(), self.number)
                    if qos and unacked is not None:  # acknowledged in this order (MQTT-4.6.0-2)
                        if mid not in unacked:
                            order.append(mid)
                        unacked[mid] = m
                    inbox.put(m)
                    pos = end
                    if inbox.full:
                        self._pause()
                        break
                    continue
                owner._control(self, first, buf[i:end])
                pos = end
        except (IndexError, UnicodeDecodeError, MqttProtocolError) as e:
            log.error("MQTT: unreadable packet from the broker (%s): reconnecting", e)
            self._buf = b""
            self.close_by_us("unreadable packet")
            return
        self._buf = buf[pos:]

    def _pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
            self.owner.queue.wait_for_room()


class MqttConnection:
    """A persistent-session MQTT connection delivering messages into a bounded :class:`Inbox`.

    Call :meth:`ack` once a message's data are durable.  :meth:`publish` waits for the broker's PUBACK.
    """

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: list[tuple[str, int]],
        *,
        queue_size: int = 20000,
        manual_ack: bool = True,
        takeover_window_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self.queue = Inbox(queue_size)
        self.queue.on_room = self._room
        #: The brokers, tried in turn (``settings.failover_urls``); ``_current`` is the one in use.
        self._endpoints = settings.endpoints
        self._current = 0
        #: Connection attempts in a row that reached no broker (several brokers: the back-off doubles per round).
        self._failed_in_row = 0
        self._manual_ack = manual_ack
        self._proto: _Protocol | None = None
        self._number = 0
        self._connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._acks = bytearray()
        self._ack_flush_scheduled = False
        #: QoS 1 messages of the current connection not yet acknowledged: mid → message, and their packet
        #: identifiers in the order received; ``_done`` those acknowledged but waiting for an earlier one.
        self._unacked: dict[int, InboundMessage] = {}
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        #: A connection the broker closes within this many seconds of accepting it counts as taken over.
        self.takeover_window_s = takeover_window_s
        #: Connections in a row the broker closed soon after accepting them (client-id takeover).
        self._kicks = 0
        #: Times a takeover was reported (ERROR logged).
        self.takeovers = 0
        self._next_mid = 0
        #: Outgoing QoS 1 publishes not yet acknowledged by the broker: mid → (packet, waiter).
        self._outgoing: dict[int, tuple[bytes, asyncio.Future[None] | None]] = {}
        self._last_write = 0.0
        self._ping_sent: float | None = None
        self.connects = 0
        self.disconnects = 0
        #: QoS 1 publishes the broker has acknowledged.
        self.acknowledged = 0
        self._puback = asyncio.Event()
        self.min_delay_s = float(random.randint(1, 3))
        self.max_delay_s = float(random.randint(30, 60))
        #: SUBSCRIBE packets awaiting their SUBACK: mid → the filters they carry; filters the broker refused
        #: are subscribed again after a back-off (``_resubscribe_s``, doubling up to ``max_delay_s``).
        self._sub_pending: dict[int, list[tuple[str, int]]] = {}
        self._resubscribe_s = 1.0
        #: Topic filters the broker refused (SUBACK 0x80), counted each time.
        self.subscriptions_refused = 0

    @property
    def _host(self) -> str:
        return self._endpoints[self._current][0]

    @property
    def _port(self) -> int:
        return self._endpoints[self._current][1]

    @property
    def broker(self) -> str:
        """``host:port`` of the broker in use (or tried next)."""
        return f"{self._host}:{self._port}"

    def _next_broker(self) -> None:
        """Move on to the next broker of the list (round robin)."""
        self._current = (self._current + 1) % len(self._endpoints)

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self, *, wait_s: float = 30.0) -> None:
        # jitter the first connection so a restarted fleet of ingesters does not hit the broker at once
        await asyncio.sleep(random.uniform(0, 0.05))
        self._task = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._connected.wait(), wait_s)
        except TimeoutError:
            await self.stop()
            which = (
                "broker " + self.settings.url
                if len(self._endpoints) == 1
                else "brokers " + ", ".join(self.settings.urls)
            )
            raise ServiceError(f"MQTT {which} did not accept a connection within {wait_s}s") from None

    async def stop(self) -> None:
        self._closing = True
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            self._flush_acks()
            proto.transport.write(_DISCONNECT)
            proto.transport.close()  # after what is buffered (the last acknowledgements) has been sent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.closed), 5.0)
        for t in (self._task, self._keepalive):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        for _, fut in self._outgoing.values():
            if fut is not None and not fut.done():
                fut.cancel()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def _run(self) -> None:
        """Connect, and reconnect with exponential back-off and jitter, until stopped.  With several brokers
        (``failover_urls``) each failure (unreachable, or a connection that dropped) moves on to the next
        one; the back-off doubles once per round of the list without a successful connection."""
        loop = asyncio.get_running_loop()
        delay = self.min_delay_s
        contexts = {tls: self.settings.tls_context(tls) for tls in {e[2] for e in self._endpoints}}
        timeout = self.settings.connect_timeout_s
        while not self._closing:
            self._number += 1
            proto: _Protocol | None = None
            host, port, tls = self._endpoints[self._current]
            ctx = contexts[tls]
            try:
                _, new = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Protocol(self, self._number),
                        host,
                        port,
                        ssl=ctx,
                        server_hostname=host if ctx is not None else None,
                    ),
                    timeout,
                )
                self._proto = proto = new
                self._write(_connect_packet(self.settings))
                await asyncio.wait((new.answered,), timeout=timeout)
                if not new.answered.done():
                    log.warning(
                        "MQTT: %s:%s accepted the connection but sent no CONNACK within %.0fs: reconnecting",
                        self._host,
                        self._port,
                        timeout,
                    )
                    new.close_by_us("no CONNACK")
                await new.closed
            except TimeoutError:
                log.warning("MQTT: cannot connect to %s:%s within %.0fs", self._host, self._port, timeout)
            except (OSError, ssl.SSLError) as e:
                log.warning("MQTT: cannot connect to %s:%s (%s)", self._host, self._port, e)
            finally:
                if proto is not None and proto.transport is not None and not proto.transport.is_closing():
                    proto.close_by_us("stopped")
                was = self._connected.is_set()
                self._connected.clear()
                self._proto = None
                self._acks.clear()  # unsent acknowledgements belong to the lost connection
                self._unacked.clear()
                self._order.clear()
                self._done.clear()
                if self._keepalive is not None:
                    self._keepalive.cancel()
            if self._closing:
                return
            if was and proto is not None:
                self.disconnects += 1
                delay = self._after_disconnect(proto)
            if len(self._endpoints) == 1:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_delay_s)
                continue
            # several brokers: the next one at once (jittered) after a drop or an unreachable one, and the
            # back-off once a whole round of the list failed in a row, or when the session is being taken over
            self._failed_in_row = 0 if was else self._failed_in_row + 1
            self._next_broker()
            log.warning("MQTT: %s:%s %s; trying the next broker of the list, %s", host, port,
                        "dropped" if was else "unreachable or refused", self.broker)  # fmt: skip
            if (was and self._kicks >= 2) or (not was and self._failed_in_row % len(self._endpoints) == 0):
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_delay_s)
            else:
                await asyncio.sleep(random.uniform(0.05, 0.25))

    def _after_disconnect(self, proto: _Protocol) -> float:
        """Log a lost connection; the delay before the next attempt.  A connection the broker closed soon
        after accepting it, several times in a row, means another client uses this client id: ERROR, and a
        longer back-off each time."""
        lived = time.monotonic() - (proto.accepted_at or 0.0)
        cid = self.settings.client_id
        if proto.closed_by_us is None and lived < self.takeover_window_s:
            self._kicks += 1
        else:
            self._kicks = 0
        delay = min(self.min_delay_s * 2.0**self._kicks, self.max_delay_s)
        if self._kicks >= 2:
            self.takeovers += 1
            log.error(
                "MQTT: the broker %s:%s closed the connection of client id %r %d times in a row within %.0fs "
                "of accepting it: another client is connected with the same client id and takes the session "
                "(and its messages) over (session present: %s); give every ingester its own client id. "
                "Backing off %.0fs",
                self._host,
                self._port,
                cid,
                self._kicks,
                self.takeover_window_s,
                "yes" if proto.session_present else "no",
                delay,
            )
        else:
            why = f" ({proto.closed_by_us})" if proto.closed_by_us else ""
            log.warning(
                "MQTT disconnected from %s:%s%s (client id %r); reconnecting with back-off",
                self._host,
                self._port,
                why,
                cid,
            )
        return delay

    async def _keep_alive(self, proto: _Protocol) -> None:
        """PINGREQ when nothing was sent for a while; drop the connection when the broker stops answering."""
        k = float(self.settings.keepalive_s)
        if k <= 0:
            return
        while self._proto is proto:
            await asyncio.sleep(min(1.0, k / 4))
            now = time.monotonic()
            if proto._paused:
                # reading paused by back-pressure: the PINGRESP waits unread behind the messages, so there
                # is no deadline; PINGREQ still goes out so that the broker keeps the connection
                if now - self._last_write >= k / 2:
                    if self._ping_sent is None:
                        self._ping_sent = now
                    self._write(_PINGREQ)
                continue
            if self._ping_sent is not None and now - self._ping_sent > k:
                log.warning("MQTT: no PINGRESP within %.0fs: the connection is dead", k)
                proto.close_by_us("keep-alive")
                return
            if self._ping_sent is None and now - self._last_write >= k / 2:
                self._ping_sent = now
                self._write(_PINGREQ)

    # -- packets from the broker --------------------------------------------------------------------------
    def _control(self, proto: _Protocol, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == _PUBACK:
            entry = self._outgoing.pop((body[0] << 8) | body[1], None)
            if entry is not None:
                self.acknowledged += 1
                self._puback.set()
                fut = entry[1]
                if fut is not None and not fut.done():
                    fut.set_result(None)
        elif kind == _PINGRESP:
            self._ping_sent = None
        elif kind == _CONNACK:
            self._connack(proto, body)
        elif kind == _SUBACK:
            self._suback(proto, body)
        else:
            raise MqttProtocolError(f"unexpected packet type 0x{first:02x}")

    def _connack(self, proto: _Protocol, body: bytes) -> None:
        rc = body[1]
        if not proto.answered.done():
            proto.answered.set_result(None)
        if rc != 0:
            log.error("MQTT connect refused: %s", _CONNACK_CODES.get(rc, f"code {rc}"))
            proto.closed_by_us = "connect refused"
            if proto.transport is not None:
                proto.transport.close()
            return
        self.connects += 1
        proto.accepted_at = time.monotonic()
        proto.session_present = bool(body[0] & 1)
        log.info("MQTT connected to %s:%s (session present: %s)", self._host, self._port, proto.session_present)
        self._sub_pending.clear()
        self._resubscribe_s = 1.0
        self._subscribe(self.subscriptions)
        for packet, _ in list(self._outgoing.values()):  # not acknowledged before: again, with DUP
            self._write(bytes((packet[0] | 0x08,)) + packet[1:])
        self._ping_sent = None
        self._keepalive = asyncio.create_task(self._keep_alive(proto))
        self._connected.set()

    def _subscribe(self, subs: list[tuple[str, int]]) -> None:
        for k in range(0, len(subs), _SUBSCRIBE_CHUNK):
            chunk = subs[k : k + _SUBSCRIBE_CHUNK]
            mid = self._new_mid()
            self._sub_pending[mid] = chunk
            filters = b"".join(_utf8(t) + bytes((q,)) for t, q in chunk)
            self._write(_packet(_SUBSCRIBE, struct.pack("!H", mid) + filters))

    def _suback(self, proto: _Protocol, body: bytes) -> None:
        """A filter refused (0x80) is subscribed again after a back-off on the same connection: an ACL that
        forbids it is reported again each time (ERROR), and a broker that refused it for a passing reason —
        a NATS cluster node whose JetStream consumer could not be created while a peer was rejoining
        (docs/scaling.md) — grants it on a later attempt instead of leaving the ingester deaf to the topic."""
        chunk = self._sub_pending.pop((body[0] << 8) | body[1], None)
        if chunk is None:  # not a SUBSCRIBE of this connection: nothing to retry
            if any(code == 0x80 for code in body[2:]):
                log.error("MQTT: the broker refused a subscription (SUBACK 0x80): check the ACL")
            return
        refused = [f for f, code in zip(chunk, body[2:], strict=False) if code == 0x80]
        if not refused:
            return
        self.subscriptions_refused += len(refused)
        delay = self._resubscribe_s
        self._resubscribe_s = min(delay * 2.0, self.max_delay_s)
        log.error(
            "MQTT: the broker refused the subscription to %s (SUBACK 0x80): check the ACL; subscribing again in %.0fs",
            ", ".join(f for f, _ in refused),
            delay,
        )

        def again() -> None:
            t = proto.transport
            if self._proto is proto and not self._closing and t is not None and not t.is_closing():
                self._subscribe(refused)

        asyncio.get_running_loop().call_later(delay, again)

    def _room(self) -> None:
        if self._proto is not None:
            self._proto.resume()

    # -- to the broker ------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> bool:
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return False
        proto.transport.write(data)
        self._last_write = time.monotonic()
        return True

    def _new_mid(self) -> int:
        for _ in range(65535):
            self._next_mid = self._next_mid % 65535 + 1
            if self._next_mid not in self._outgoing:
                return self._next_mid
        raise ServiceError("MQTT: 65 535 publishes await acknowledgement")

    def ack(self, msg: InboundMessage) -> None:
        """Acknowledge a message to the broker (PUBACK for QoS 1), on the connection it arrived on, in the
        order the messages were received (MQTT-4.6.0-2); the acknowledgements of a burst go out in one write."""
        proto = self._proto
        if msg.qos == 0 or proto is None or msg.connection != proto.number or self._unacked.get(msg.mid) is not msg:
            # QoS 0, acknowledged already, or from another connection: the broker redelivers it, and the
            # copy is acknowledged
            return
        self._done.add(msg.mid)
        if not self._ack_flush_scheduled:
            self._ack_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_flush_scheduled = False
        order, done, unacked, acks = self._order, self._done, self._unacked, self._acks
        while order and order[0] in done:
            mid = order.popleft()
            done.discard(mid)
            del unacked[mid]
            acks += b"\x40\x02" + mid.to_bytes(2, "big")
        if acks:
            self._write(bytes(acks))
            acks.clear()

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged (QoS 1; sent again after a reconnection until it is)
        or the message was written (QoS 0)."""
        fut = self._send(topic, payload, qos, retain, wait=True)
        if fut is not None:
            await fut

    @property
    def unacknowledged(self) -> int:
        """QoS 1 publishes not yet acknowledged by the broker."""
        return len(self._outgoing)

    async def wait_unacknowledged_below(self, n: int) -> None:
        """Wait until fewer than ``n`` publishes await the broker's acknowledgement (a publishing window)."""
        while len(self._outgoing) >= n:
            self._puback.clear()
            await self._puback.wait()

    def publish_nowait(self, topic: str, payload: bytes | str, *, qos: int = 1) -> None:
        """Queue a publish without waiting (QoS 1 is sent again after a reconnection until acknowledged)."""
        self._send(topic, payload, qos, False, wait=False)

    def _send(
        self, topic: str, payload: bytes | str, qos: int, retain: bool, *, wait: bool
    ) -> asyncio.Future[None] | None:
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        if qos == 0:
            if not self._write(_publish_packet(topic, data, 0, 0, retain=retain, dup=False)):
                log.warning("MQTT: not connected, QoS 0 message to %s dropped", topic)
            return None
        if qos != 1:
            raise ValueError("this client publishes at QoS 0 or 1")
        mid = self._new_mid()
        packet = _publish_packet(topic, data, 1, mid, retain=retain, dup=False)
        fut: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if wait else None
        self._outgoing[mid] = (packet, fut)
        if self._connected.is_set():
            self._write(packet)  # else sent when the connection is back (_connack)
        return fut
