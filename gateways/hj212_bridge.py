"""HJ 212 TCP → MQTT bridge: the TCP server that plant DAS (数采仪) keep connected to.

Per connection: :class:`cems.protocol.hj212.StreamFramer` frames the byte stream, each packet is decoded
(CRC checked), its MN looked up in the registry and its PW compared with the outlet's password.  Accepted
packets are published, as received, to ``{topic_prefix}/{mn}/hj212`` with QoS 1; **only after the broker's
PUBACK** does the device get its 9014 data reply (when the Flag's A bit asks for one).  If the broker does
not acknowledge within ``ack_timeout_s`` the device gets no reply and will resend (HJ 212: 10 s, 3 retries).

A packet whose MN is a grid sensor's id (``[[grid_sensor]]``, ambient air ST=22; ST=39 from a construction
site) is checked as the ingester checks it on a grid topic (:func:`cems.decode.check_grid_packet`: ST, the
sensor's ``password``) and published to ``{grid_prefix}/{MN}`` (default ``grid/v1/{MN}``), where the ingester
takes it as a grid reading (issue 15).

Rejections are answered with 9011: unknown MN → QnRtn 4, wrong PW → 3, CRC error → 9; nothing is published.
HJ 212-2025 heartbeats (CN 9015) are answered (9014, when asked) but not published.

Split packets (PNUM/PNO, issue 12 item 11): the parts of one (MN, QN, CN) are reassembled here
(:class:`cems.protocol.hj212.Reassembler`, at most ``split_max_pending`` packets for at most ``split_timeout_s``)
and the reassembled packet is validated and published **once**, re-encoded as one packet (D bit cleared, no
PNUM/PNO, its own CRC).  Each part is answered as HJ 212 asks: the parts before the last get their 9014 when
they are held (the DAS would otherwise resend a part instead of sending the next), the last one after the
broker's PUBACK of the whole, or 9011 QnRtn 2 when the whole is rejected.  When the publish is not acknowledged
the earlier parts are kept, so the DAS's resend of the last part completes the packet again.  A bridge that stops
between the parts of a packet loses the parts it holds (they were answered): HJ 212 gives no way to defer them.

Before the 9014 reply, a data packet (CN 2011/2051/2061/2031) goes through the ingester's own validation
(:func:`cems.validate.validate`: data time neither in the future nor too old, values finite and plausible):
data the ingester would reject is not published and is answered 9011 QnRtn 2 (rejected), so a DAS with a
wrong clock does not believe its data delivered.

One bad device cannot hurt the others: a connection is idle when no authenticated packet arrived for
``idle_timeout_s`` (stray bytes do not keep it open) and is then closed; the number of connections is capped
in all and per peer IP; each connection has a token-bucket rate limit that slows reading from its socket (TCP
back-pressure) instead of buffering without bound; framing errors are logged once per connection (a summary
when it closes) and the connection is closed after ``max_junk_bytes`` bytes of junk; at most
``max_warnings_per_connection`` warnings are logged per connection.

Password guessing (the 9011 QnRtn 3/4 answers are an oracle): :class:`FailureGuard` counts failed logins
(unknown MN, wrong PW) per peer IP and wrong PWs per MN; ``auth_max_failures`` within ``auth_window_s`` ban
the peer (its connections are closed and refused) or lock the MN (its packets are dropped without an answer)
for ``auth_ban_s``, doubling at each new ban up to ``auth_max_ban_s``.  A ban is an ERROR log line and is
counted (``peer_bans``, ``mn_bans``, ``banned_packets``, ``connections_refused_banned`` in :attr:`stats`).  A
connection that already sent the right password for an MN keeps working through bans (a DAS behind the same
NAT as the attacker, or whose MN is attacked, is not cut off while connected).

Evidence (issue 14 item 6): with ``evidence`` settings every frame is kept as received in the bridge's own
archive (:mod:`cems.sinks.archive`, source ``hj212-bridge``): its bytes, the time the bridge received it, the
plant's TCP peer address (``via.peer``) and the verdict (``published`` on ``topic``, ``rejected`` with a
reason, ``held`` split part, ``heartbeat``, ``publish_failed``), durable **before** the 9014 reply.  The ingester's
MQTT 3.1.1 connection carries no peer address, so this is where it is kept; a published frame is the MQTT payload
byte for byte, and the two archives share its SHA-256 (a reassembled split packet is re-encoded: the last part's
line names the published packet's SHA-256, ``via.published_sha256``).  docs/evidence.md.

The bridge reads neither argv nor the environment: the command line (``gateways/cli.py``) passes typed
settings (:func:`bridge_mqtt_settings`, an ``environ`` mapping for the registry's ``password_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import paho.mqtt.client as mqtt

from cems.config import split_url_credentials
from cems.decode import check_grid_packet, find_grid_sensor, grid_sensor_of
from cems.errors import ConfigError, RejectedMessage
from cems.model import CN_STREAM
from cems.protocol.hj212 import (
    MAX_DATA_BYTES,
    QNRTN_CRC_ERROR,
    QNRTN_MN_ERROR,
    QNRTN_PW_ERROR,
    QNRTN_REJECTED,
    FramingError,
    HJ212Error,
    Packet,
    Reassembler,
    StreamFramer,
    decode,
    encode_packet,
    is_heartbeat,
    reply_9011,
    reply_9014,
    to_reading,
)
from cems.registry import Registry, check_credentials, expected_password
from cems.registry.shard import outlet_topic
from cems.service.mqtt import MqttSettings
from cems.sinks.archive import ArchiveError, ArchiveSettings, Entry, EvidenceArchive
from cems.validate import DEFAULT_POLICY, ValidationPolicy, validate, validate_grid
from gateways._paho import make_client

log = logging.getLogger(__name__)

__all__ = ["FailureGuard", "HJ212Bridge", "MqttPublisher", "TokenBucket", "bridge_mqtt_settings", "run_bridge"]

#: No environment: the entry point passes one (``cems.config.environ()``).
_NO_ENVIRON: Mapping[str, str] = MappingProxyType({})


def bridge_mqtt_settings(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    client_id: str | None = None,
) -> MqttSettings:
    """The bridge's MQTT settings: a clean session under a client id of its own (unique per process unless
    given), credentials and CA as given (the command line reads them from the environment, never from argv:
    docs/security.md).  A user and password inside ``url`` are moved out of it (explicit ones win), so the
    URL that logs and errors show carries no password."""
    bare, url_user, url_password = split_url_credentials(url)
    return MqttSettings(
        url=bare,
        client_id=client_id or f"cems-hj212-bridge-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        clean_session=True,
        username=username or url_user or None,
        password=password or url_password or None,
        ca_file=ca_file or None,
    )


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved.  :meth:`reserve` returns the wait (s) for one."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.tokens = self.burst
        self.last: float | None = None

    def reserve(self, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    until: float = 0.0  # banned until (monotonic)
    level: int = 0  # bans so far (the next one lasts twice as long)
    last: float = 0.0


class FailureGuard:
    """Failed logins per key (a peer IP, an MN): ``max_failures`` within ``window_s`` start a ban of ``ban_s``,
    twice as long at each further ban (at most ``max_ban_s``; forgotten after ``max_ban_s`` without failures).
    Pure: the caller passes the time.  Holds at most ``max_keys`` keys (those neither banned nor failing
    recently go first)."""

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60.0,
        ban_s: float = 60.0,
        max_ban_s: float = 3600.0,
        *,
        max_keys: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.ban_s = ban_s
        self.max_ban_s = max_ban_s
        self.max_keys = max_keys
        self._keys: dict[str, _Failures] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def banned(self, key: str, now: float) -> float:
        """Seconds of ban left for ``key`` (0: not banned)."""
        f = self._keys.get(key)
        return max(0.0, f.until - now) if f is not None else 0.0

    def failure(self, key: str, now: float) -> float:
        """Count a failure; the length of the ban it starts (0: none)."""
        f = self._keys.get(key)
        if f is None:
            if len(self._keys) >= self.max_keys:
                self._prune(now)
            f = self._keys[key] = _Failures()
        elif now - f.last > self.max_ban_s + self.window_s and f.until <= now:
            f.level = 0  # quiet for long: forgiven
        f.last = now
        times = f.times
        while times and now - times[0] > self.window_s:
            times.popleft()
        times.append(now)
        if len(times) < self.max_failures or f.until > now:
            return 0.0
        times.clear()
        length = min(self.ban_s * 2.0**f.level, self.max_ban_s)
        f.level += 1
        f.until = now + length
        return length

    def _prune(self, now: float) -> None:
        for key in [k for k, f in self._keys.items() if f.until <= now and now - f.last > self.window_s]:
            del self._keys[key]
        while len(self._keys) >= self.max_keys:  # still full: the oldest first
            del self._keys[next(iter(self._keys))]


class MqttPublisher:
    """paho-mqtt client in its own network thread (``loop_start``); :meth:`publish` awaits the PUBACK.

    ``settings`` as :func:`bridge_mqtt_settings` makes them (clean session, a client id of its own).
    """

    def __init__(self, settings: MqttSettings, *, max_queued: int = 10_000) -> None:
        self._client, self._host, self._port = make_client(settings, manual_ack=False)
        self._client.max_queued_messages_set(max_queued)
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()  # PUBACK arrived before publish() registered its future
        self._abandoned: set[int] = set()  # publish() timed out: a late PUBACK is ignored
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = threading.Event()
        self._stopping = False

    # paho thread
    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("MQTT connect to %s:%s refused: %s", self._host, self._port, rc)
            return
        log.info("MQTT connected to %s:%s", self._host, self._port)
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        level = logging.INFO if self._stopping else logging.WARNING
        log.log(level, "MQTT disconnected from %s:%s: %s", self._host, self._port, rc)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                if mid in self._abandoned:
                    self._abandoned.discard(mid)
                else:
                    self._early.add(mid)
                return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut)

    # event loop
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    async def publish(self, topic: str, payload: bytes, *, timeout: float) -> bool:
        """True once the broker acknowledged (PUBACK) within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        try:
            info = self._client.publish(topic, payload, qos=1)
        except (ValueError, OSError) as e:  # pragma: no cover - paho raises only on misuse
            log.warning("MQTT publish to %s failed: %s", topic, e)
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish to %s not queued: %s", topic, mqtt.error_string(info.rc))
            return False
        mid = info.mid
        with self._lock:
            self._abandoned.discard(mid)  # message ids wrap around
            if mid in self._early:
                self._early.discard(mid)
                return True
            self._pending[mid] = fut
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                if self._pending.get(mid) is fut:
                    del self._pending[mid]
                    if len(self._abandoned) > 65536:
                        self._abandoned.clear()
                    self._abandoned.add(mid)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        await loop.run_in_executor(None, self._client.loop_stop)
        with self._lock:
            for fut in self._pending.values():
                if not fut.done():
                    fut.cancel()
            self._pending.clear()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Conn:
    __slots__ = ("authed", "busy", "framing_errors", "ip", "junk_bytes", "peer", "suppressed", "warnings", "writer")

    def __init__(self, writer: asyncio.StreamWriter, peer: Any, ip: str) -> None:
        self.writer = writer
        self.peer = peer
        self.ip = ip
        self.busy = False
        #: MNs whose right password this connection has sent.
        self.authed: set[str] = set()
        self.framing_errors = 0
        self.junk_bytes = 0
        self.warnings = 0
        self.suppressed = 0


class HJ212Bridge:
    """The bridge server.  ``await start(host, port)`` (port 0 picks a free port: see :attr:`port`),
    ``await close()`` for a graceful shutdown.  :attr:`stats` counts what happened.

    ``mqtt`` is the broker's settings (:func:`bridge_mqtt_settings`) or just its URL (no credentials);
    ``client_id``, if given, replaces the settings' client id.  ``environ`` holds the environment variables
    an outlet's ``password_env`` names: the bridge reads no environment itself (the command line passes
    :func:`cems.config.environ`) and resolves passwords with :func:`cems.registry.expected_password`, as the
    ingester does.  An outlet whose variable is missing or empty makes the constructor raise
    :class:`~cems.errors.ConfigError` naming every such outlet and variable (fail closed).
    """

    def __init__(
        self,
        registry: Registry,
        mqtt: MqttSettings | str,
        *,
        topic_prefix: str | None = None,
        idle_timeout_s: float = 300.0,
        max_connections: int = 10_000,
        max_packets_per_s: float = 20.0,
        require_crc: bool = True,
        ack_timeout_s: float = 10.0,
        max_data_bytes: int = MAX_DATA_BYTES,
        write_timeout_s: float = 10.0,
        client_id: str | None = None,
        environ: Mapping[str, str] = _NO_ENVIRON,
        max_connections_per_ip: int = 64,
        max_junk_bytes: int = 64 * 1024,
        max_warnings_per_connection: int = 10,
        auth_max_failures: int = 5,
        auth_window_s: float = 60.0,
        auth_ban_s: float = 60.0,
        auth_max_ban_s: float = 3600.0,
        policy: ValidationPolicy = DEFAULT_POLICY,
        split_timeout_s: float = 60.0,
        split_max_pending: int = 1000,
        evidence: ArchiveSettings | None = None,
        shards: int | None = None,
    ) -> None:
        check_credentials(registry, environ)
        #: With N shards (``--shards N``, docs/scaling.md) an outlet's packets go to ``{prefix}/s{k}/{mn}/hj212``,
        #: ``k = CRC-32(MN) mod N``: the topics of ``cems run --shard k/N``.
        if shards is not None and shards < 1:
            raise ValueError(f"shards {shards}: must be at least 1")
        self.shards = shards
        self.archive = EvidenceArchive(evidence) if evidence is not None else None
        self.registry = registry
        self.environ = environ
        self.topic_prefix = (topic_prefix or registry.topics.prefix).rstrip("/")
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_packets_per_s = max_packets_per_s
        self.require_crc = require_crc
        self.ack_timeout_s = ack_timeout_s
        self.max_data_bytes = max_data_bytes
        self.write_timeout_s = write_timeout_s
        self.max_connections_per_ip = max_connections_per_ip
        self.max_junk_bytes = max_junk_bytes
        self.max_warnings_per_connection = max_warnings_per_connection
        self.policy = policy
        self.reassembler = Reassembler(
            max_pending=split_max_pending, max_age_packets=1 << 62, ttl_s=split_timeout_s, on_drop=self._split_dropped
        )
        guard = (auth_max_failures, auth_window_s, auth_ban_s, auth_max_ban_s)
        self.peer_guard = FailureGuard(*guard)
        self.mn_guard = FailureGuard(*guard)
        self._per_ip: Counter[str] = Counter()
        settings = bridge_mqtt_settings(mqtt, client_id=client_id) if isinstance(mqtt, str) else mqtt
        if client_id is not None:
            settings = replace(settings, client_id=client_id)
        self.publisher = MqttPublisher(settings)
        self.stats: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], _Conn] = {}
        self._closing = False

    def outlet_topic(self, mn: str) -> str:
        """Where an outlet's packets are published: ``{prefix}/{mn}/hj212``, or with shards
        ``{prefix}/s{CRC-32(mn) mod N}/{mn}/hj212`` (:func:`cems.registry.shard.outlet_topic`)."""
        return outlet_topic(self.topic_prefix, mn, "hj212", self.shards)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self, host: str, port: int) -> None:
        if self.archive is not None:
            await asyncio.to_thread(self.archive.open)
        await self.publisher.start()
        self._server = await asyncio.start_server(self._on_client, host, port, limit=64 * 1024)
        log.info("HJ 212 bridge listening on %s:%d → %s/+/hj212", host, self.port, self.topic_prefix)

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let connections finish the packet in hand, then close them and MQTT."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for conn in self._conns.values():
            if not conn.busy:  # waiting for data: close now; busy ones finish their packets first
                conn.writer.close()
        tasks = list(self._conns)
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=grace_s)
            for t in still:
                t.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        await self.publisher.close()
        if self.archive is not None:
            await asyncio.to_thread(self.archive.close)

    # ---------------------------------------------------------------------------------- connections

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        refused = None
        if self._closing or len(self._conns) >= self.max_connections:
            refused = ("connections_refused", f"{len(self._conns)} connections open")
        elif self._per_ip[ip] >= self.max_connections_per_ip:
            refused = ("connections_refused_per_ip", f"{self._per_ip[ip]} connections open from {ip}")
        elif left := self.peer_guard.banned(ip, asyncio.get_running_loop().time()):
            refused = ("connections_refused_banned", f"{ip} banned for failed logins ({left:.0f}s left)")
        if refused is not None:
            count = self.stats[refused[0]]
            self.stats[refused[0]] += 1
            if count < 10 or count & (count - 1) == 0:  # the first ten, then at 16, 32, 64, ...
                log.warning("refusing connection from %s: %s (%d refused so far)", peer, refused[1], count + 1)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        assert task is not None
        conn = self._conns[task] = _Conn(writer, peer, ip)
        self._per_ip[ip] += 1
        self.stats["connections"] += 1
        try:
            await self._serve(reader, conn)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as e:
            log.info("connection %s lost: %s", peer, e)
        except asyncio.CancelledError:
            # cancelled by close() after the grace period: end quietly (the server's callback would
            # otherwise log the cancellation as an error)
            log.info("connection %s cancelled at shutdown", peer)
        finally:
            self._conns.pop(task, None)
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
            if conn.framing_errors > 1 or conn.suppressed:
                log.warning(
                    "%s: connection closed after %d framing errors (%d bytes of junk discarded); "
                    "%d further warnings not logged",
                    peer,
                    conn.framing_errors,
                    conn.junk_bytes,
                    conn.suppressed,
                )
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    def _warn(self, conn: _Conn, msg: str, *args: object) -> None:
        """A WARNING about one connection: at most ``max_warnings_per_connection``, then counted (summary at
        close)."""
        if conn.warnings < self.max_warnings_per_connection:
            conn.warnings += 1
            log.warning("%s: " + msg, conn.peer, *args)
        else:
            conn.suppressed += 1

    async def _serve(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        framer = StreamFramer(self.max_data_bytes)
        bucket = TokenBucket(self.max_packets_per_s)
        #: The time of the last authenticated packet: idle means none for idle_timeout_s (bytes do not count).
        last = loop.time()
        while not self._closing:
            left = self.idle_timeout_s - (loop.time() - last)
            try:
                if left <= 0:
                    raise TimeoutError
                data = await asyncio.wait_for(reader.read(4096), left)
            except TimeoutError:
                self.stats["idle_closed"] += 1
                log.info("closing idle connection %s (no packet for %.0fs)", conn.peer, self.idle_timeout_s)
                return
            if not data:
                return
            received = time.time()
            conn.busy = True
            for item in framer.feed(data):
                if isinstance(item, FramingError):
                    self.stats[item.reason] += 1
                    conn.framing_errors += 1
                    conn.junk_bytes += item.discarded or len(item.data)
                    if conn.framing_errors == 1:
                        self._warn(conn, "%s (further framing errors: one summary when it closes)", item)
                    if conn.junk_bytes > self.max_junk_bytes:
                        self.stats["junk_closed"] += 1
                        self._warn(conn, "closing: more than %d bytes of junk", self.max_junk_bytes)
                        return
                    continue
                wait = bucket.reserve(loop.time())
                if wait > 0:
                    self.stats["rate_limited"] += 1
                    await asyncio.sleep(wait)
                outcome = await self._packet(item, conn, received)
                if outcome is None:
                    return  # banned: close
                if outcome:
                    last = loop.time()
            conn.busy = False

    async def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        writer.write(text.encode("ascii", "replace"))
        await asyncio.wait_for(writer.drain(), self.write_timeout_s)

    def _password(self, mn: str) -> tuple[bool, str | None]:
        """(known MN, expected password or None when none is configured).  Raises :class:`ConfigError` when
        the outlet's ``password_env`` variable has gone missing since the start (the packet is refused)."""
        info = self.registry.outlet(mn)
        if info is None:
            g = find_grid_sensor(self.registry, mn)
            return (False, None) if g is None else (True, g.hj212_password)
        return True, expected_password(info.outlet, self.environ)

    def _auth_failure(self, conn: _Conn, mn: str | None) -> bool:
        """Count a failed login of ``conn`` (for ``mn`` when the MN is known); True when it is now banned."""
        now = asyncio.get_running_loop().time()
        banned = False
        length = self.peer_guard.failure(conn.ip, now)
        if length:
            banned = True
            self.stats["peer_bans"] += 1
            log.error(
                "HJ 212 password guessing: peer %s banned for %.0fs after %d failed logins within %.0fs "
                "(its connections are closed and refused)",
                conn.ip,
                length,
                self.peer_guard.max_failures,
                self.peer_guard.window_s,
            )
        if mn is not None and (length := self.mn_guard.failure(mn, now)):
            banned = True
            self.stats["mn_bans"] += 1
            log.error(
                "HJ 212 password guessing: MN %s locked for %.0fs after %d wrong passwords within %.0fs (last "
                "from %s); its packets are dropped unanswered except on connections that sent its right password",
                mn,
                length,
                self.mn_guard.max_failures,
                self.mn_guard.window_s,
                conn.ip,
            )
        return banned

    async def _keep(
        self,
        frame: bytes,
        conn: _Conn,
        received: float,
        status: str,
        reason: str | None = None,
        mn: str | None = None,
        *,
        published: bytes | None = None,
    ) -> bool:
        """Archive one frame and the bridge's verdict on it (no-op without an archive); False when it could not
        be made durable (the device then gets no 9014: it resends)."""
        if self.archive is None:
            return True
        via: dict[str, str | int] = {"peer": f"{conn.ip}:{conn.peer[1]}" if isinstance(conn.peer, tuple) else conn.ip}
        if published is not None and published != frame:
            via["published_sha256"] = hashlib.sha256(published).hexdigest()
        topic = self.outlet_topic(mn) if mn else ""
        try:
            await self.archive.append([Entry(frame, received, topic, status, reason, None, "msg", via, mn or None)])
            return True
        except ArchiveError as e:
            self.stats["evidence_failed"] += 1
            log.error("%s: the device gets no reply", e)
            return False

    async def _packet(self, frame: bytes, conn: _Conn, received: float = 0.0) -> bool | None:
        """Handle one frame: True for an authenticated packet, False otherwise, None to close the connection."""
        received = received or time.time()
        writer = conn.writer
        now = asyncio.get_running_loop().time()
        if not conn.authed and self.peer_guard.banned(conn.ip, now):
            self.stats["banned_packets"] += 1
            return None
        try:
            p = decode(frame, require_crc=self.require_crc)
        except HJ212Error as e:
            self.stats[e.reason] += 1
            self._warn(conn, "rejected packet: %s", e)
            await self._keep(frame, conn, received, "rejected", e.reason)
            if e.reason == "hj212_crc":
                with contextlib.suppress(HJ212Error):
                    bad = decode(frame, require_crc=False)
                    if bad.mn is not None:
                        await self._reply(writer, reply_9011(bad, QNRTN_CRC_ERROR))
            return False
        mn = p.mn or ""
        if mn not in conn.authed and self.mn_guard.banned(mn, now):
            self.stats["banned_packets"] += 1
            await self._keep(frame, conn, received, "rejected", "mn_locked", mn)
            self._warn(conn, "packet for MN %s dropped unanswered: MN locked after wrong passwords", mn)
            return False
        try:
            known, expected = self._password(mn)
        except ConfigError as e:
            self.stats["wrong_password"] += 1
            log.error("%s: %s: refusing the packet", conn.ip, e)
            await self._keep(frame, conn, received, "rejected", "bad_password", mn)
            await self._reply(writer, reply_9011(p, QNRTN_PW_ERROR))
            return False
        if not known:
            self.stats["unknown_mn"] += 1
            self._warn(conn, "unknown MN %r", p.mn)
            await self._keep(frame, conn, received, "rejected", "unknown_mn", mn)
            if self._auth_failure(conn, None):
                return None
            await self._reply(writer, reply_9011(p, QNRTN_MN_ERROR))
            return False
        if expected is not None and p.pw != expected:
            self.stats["wrong_password"] += 1
            self._warn(conn, "wrong PW for MN %s", p.mn)
            await self._keep(frame, conn, received, "rejected", "bad_password", mn)
            if self._auth_failure(conn, mn):
                return None if self.peer_guard.banned(conn.ip, now) else False
            await self._reply(writer, reply_9011(p, QNRTN_PW_ERROR))
            return False
        conn.authed.add(mn)
        if is_heartbeat(p):
            self.stats["heartbeats"] += 1
            await self._keep(frame, conn, received, "heartbeat", None, mn)
            if p.needs_reply:
                await self._reply(writer, reply_9014(p))
            return True
        last_part = p
        if p.pnum is not None and p.cn in CN_STREAM:
            whole = self.reassembler.feed(p, now)
            if whole is None:  # held for the rest of its packet; HJ 212 wants each part answered
                self.stats["split_parts_held"] += 1
                if not await self._keep(frame, conn, received, "held", None, mn):
                    return True
                if p.needs_reply:
                    await self._reply(writer, reply_9014(p))
                return True
            parts = self.reassembler.last_parts
            try:
                published = encode_packet(whole, crlf=False).encode("utf-8")
            except HJ212Error as e:
                self.stats[e.reason] += 1
                await self._keep(frame, conn, received, "rejected", e.reason, mn)
                self._warn(conn, "MN %s QN %s: reassembled packet cannot be written: %s", p.mn, p.qn, e)
                await self._reply(writer, reply_9011(last_part, QNRTN_REJECTED))
                return True
            self.stats["split_reassembled"] += 1
            p = whole
        else:
            parts = []
            published = frame
        grid = grid_sensor_of(p, self.registry) is not None
        if p.cn in CN_STREAM:
            # the ingester's own checks: what it would reject is not confirmed (nor published)
            try:
                reading = to_reading(p, tz=self.registry.tz)
                if grid:  # a grid sensor's ambient packet (ST=22): published on its grid topic (issue 15)
                    check_grid_packet(p, None, self.registry)
                    validate_grid(reading, datetime.now(UTC), self.policy)
                else:
                    validate(reading, self.registry, datetime.now(UTC), self.policy)
            except RejectedMessage as e:
                self.stats[e.reason] += 1
                self._warn(conn, "MN %s QN %s rejected (%s): %s", p.mn, p.qn, e.reason, e.detail)
                await self._keep(frame, conn, received, "rejected", e.reason, mn)
                await self._reply(writer, reply_9011(last_part, QNRTN_REJECTED))
                return True
        if p.deviations:
            log.debug("%s: MN %s packet deviations: %s", conn.peer, p.mn, "; ".join(p.deviations))
        topic = f"{self.registry.topics.grid_prefix}/{p.mn}" if grid else self.outlet_topic(str(p.mn))
        if not await self.publisher.publish(topic, published, timeout=self.ack_timeout_s):
            self.stats["publish_failed"] += 1
            await self._keep(frame, conn, received, "publish_failed", None, mn, published=published)
            self._warn(conn, "broker did not acknowledge MN %s QN %s: device gets no reply", p.mn, p.qn)
            for part in parts[:-1]:  # kept: the device's resend of the last part completes the packet again
                self.reassembler.feed(part, now)
            return True
        self.stats["published"] += 1
        if not await self._keep(frame, conn, received, "published", None, mn, published=published):
            return True  # not durable: no 9014, the device resends (the ingester takes the copy as a duplicate)
        if last_part.needs_reply:
            await self._reply(writer, reply_9014(last_part))
        return True

    def _split_dropped(self, key: tuple[str | None, str | None, str], parts: list[Packet]) -> None:
        self.stats["hj212_split"] += 1
        got = [part.pno for part in parts]
        log.warning("split packet MN %s QN %s CN %s: only parts %s arrived; dropped", key[0], key[1], key[2], got)


async def run_bridge(
    registry: Registry,
    listen_host: str,
    listen_port: int,
    mqtt: MqttSettings | str,
    *,
    topic_prefix: str | None = None,
    idle_timeout_s: float = 300.0,
    max_connections: int = 10_000,
    max_packets_per_s: float = 20.0,
    require_crc: bool = True,
    ack_timeout_s: float = 10.0,
    max_data_bytes: int = MAX_DATA_BYTES,
    stop_event: asyncio.Event | None = None,
    started: asyncio.Future[HJ212Bridge] | None = None,
    environ: Mapping[str, str] = _NO_ENVIRON,
    max_connections_per_ip: int = 64,
    max_junk_bytes: int = 64 * 1024,
    auth_max_failures: int = 5,
    auth_window_s: float = 60.0,
    auth_ban_s: float = 60.0,
    evidence: ArchiveSettings | None = None,
    shards: int | None = None,
) -> None:
    """Run the bridge until ``stop_event`` is set (or SIGINT/SIGTERM when no event is given).

    ``topic_prefix`` defaults to the registry's ``[topics] prefix`` ("cems/v1").  ``started``, if given,
    receives the running :class:`HJ212Bridge` (e.g. to read the port when ``listen_port`` is 0).  ``mqtt`` and
    ``environ`` as for :class:`HJ212Bridge`.
    """
    bridge = HJ212Bridge(
        registry,
        mqtt,
        topic_prefix=topic_prefix,
        idle_timeout_s=idle_timeout_s,
        max_connections=max_connections,
        max_packets_per_s=max_packets_per_s,
        require_crc=require_crc,
        ack_timeout_s=ack_timeout_s,
        max_data_bytes=max_data_bytes,
        environ=environ,
        max_connections_per_ip=max_connections_per_ip,
        max_junk_bytes=max_junk_bytes,
        auth_max_failures=auth_max_failures,
        auth_window_s=auth_window_s,
        auth_ban_s=auth_ban_s,
        evidence=evidence,
        shards=shards,
    )
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop_event is None:
        stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop_event.set)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover - non-main thread
                pass
    try:
        await bridge.start(listen_host, listen_port)
        if started is not None and not started.done():
            started.set_result(bridge)
        await stop_event.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await bridge.close()
        log.info("HJ 212 bridge stopped: %s", dict(bridge.stats))
