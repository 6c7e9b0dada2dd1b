"""Publishing the fleet: paces simulated time against the wall clock and sends what the model produces.

:func:`run_simulator` drives a :class:`~gateways.simulator._model.FleetModel` (``speed`` simulated seconds per
real second), encodes JSON (``cems.reading/1``) or HJ 212 packets and publishes them over MQTT with QoS 1
(paho-mqtt through :mod:`gateways._paho`, a bounded window of unacknowledged publishes), or sends HJ 212 over
TCP to the gateway bridge, one connection per outlet, waiting for the 9014 data reply (stop-and-wait with
resends).  Settings arrive as typed arguments; the command line is ``gateways/cli.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cems.errors import CemsError, ServiceError
from cems.model import BEIJING
from cems.protocol import hj212
from cems.protocol.payload import encode_payload
from cems.registry import Registry
from cems.service.mqtt import MqttSettings
from gateways._paho import make_client
from gateways.simulator._model import PROTOCOLS, Emission, FleetModel, SimConfig, _dt, _epoch, hj212_packet

log = logging.getLogger("gateways.simulator")  # the package's logger, as before the split (httpx: "httpx")


@dataclass(slots=True)
class SimStats:
    """Counters of a simulator run.  ``published`` counts messages confirmed (MQTT PUBACK, 9014 reply)."""

    sim_start: datetime
    sim_end: datetime | None = None
    published: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    failed: int = 0
    resent: int = 0
    skipped: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items()))
        end = self.sim_end.isoformat() if self.sim_end else "?"
        return (
            f"simulated {self.sim_start.isoformat()} → {end} in {self.elapsed_s:.1f} s: "
            f"published {self.published} ({kinds}), {self.bytes} bytes, failed {self.failed}, "
            f"resent {self.resent}, skipped {self.skipped}"
        )


OnPublish = Callable[[Emission], None]


def _kind(em: Emission) -> str:
    return "grid" if em.grid else em.reading.stream.value


class _MqttOut:
    """paho-mqtt (own network thread) with a bounded number of unacknowledged QoS 1 publishes."""

    def __init__(self, url: str, client_id: str, max_inflight: int, stats: SimStats, cb: OnPublish | None):
        self.url = url
        self.client, self.host, self.port = make_client(
            MqttSettings(url=url, client_id=client_id, clean_session=True), manual_ack=False
        )
        self.stats = stats
        self.cb = cb
        self.sem = asyncio.Semaphore(max_inflight)
        self.pending: dict[int, tuple[Emission, int]] = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self.connected = threading.Event()
        self.closing = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.error("MQTT connect refused: %s", rc)
            return
        log.info("simulator connected to MQTT %s:%s", self.host, self.port)
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if self.connected.is_set() and not self.closing:
            log.warning("simulator MQTT disconnected (%s); paho reconnects and resends", rc)
        self.connected.clear()

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._done, mid)

    def _done(self, mid: int) -> None:
        item = self.pending.pop(mid, None)
        if item is None:
            return
        em, size = item
        self.sem.release()
        self.stats.published += 1
        self.stats.by_kind[_kind(em)] += 1
        self.stats.bytes += size
        if not self.pending:
            self.idle.set()
        if self.cb is not None:
            self.cb(em)

    async def start(self, timeout_s: float = 30.0) -> None:
        self.loop = asyncio.get_running_loop()
        try:
            self.client.connect_async(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise ServiceError(f"cannot connect to MQTT broker {self.url}: {e}") from e
        self.client.loop_start()
        if not await asyncio.to_thread(self.connected.wait, timeout_s):
            self.client.loop_stop()
            raise ServiceError(f"MQTT broker {self.url} did not accept a connection within {timeout_s:.0f} s")

    async def publish(self, topic: str, payload: bytes, em: Emission) -> None:
        await self.sem.acquire()
        info = self.client.publish(topic, payload, qos=1)
        # rc NO_CONN: paho queued the QoS 1 message and sends it after reconnecting
        if info.rc not in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN
            self.sem.release()
            self.stats.failed += 1
            log.error("MQTT publish to %s failed: rc=%s", topic, info.rc)
            return
        self.pending[info.mid] = (em, len(payload))
        self.idle.clear()

    async def close(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.idle.wait(), timeout_s)
        except TimeoutError:
            log.error("%d MQTT publishes not acknowledged after %.0f s", len(self.pending), timeout_s)
            self.stats.failed += len(self.pending)
            self.pending.clear()
        self.closing = True
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


@dataclass(slots=True)
class _Packet:
    em: Emission
    data: bytes
    qn: str | None
    needs_reply: bool


class _BridgeLink:
    """One outlet's TCP connection to the HJ 212 bridge: send, wait for 9014, resend (stop-and-wait)."""

    def __init__(self, owner: _BridgeOut, mn: str) -> None:
        self.owner = owner
        self.mn = mn
        self.queue: asyncio.Queue[_Packet] = asyncio.Queue(maxsize=owner.queue_size)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self._run(), name=f"hj212-link-{mn}")

    async def _close(self) -> None:
        w, self.writer, self.reader = self.writer, None, None
        if w is not None:
            w.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(w.wait_closed(), 2.0)

    async def _run(self) -> None:
        try:
            while True:
                p = await self.queue.get()
                try:
                    await self._deliver(p)
                finally:
                    self.queue.task_done()
        finally:
            await self._close()

    async def _await_reply(self, qn: str | None, timeout: float) -> str:
        """ "ok" (9014), "rejected" (9011 with QnRtn ≠ 1: bad PW/MN/CRC ...) or "timeout"."""
        assert self.reader is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                line = await asyncio.wait_for(self.reader.readuntil(b"\n"), left)
            except TimeoutError:
                return "timeout"
            try:
                reply = hj212.decode(line.strip(), require_crc=False)
            except CemsError:
                continue
            if qn is not None and reply.qn != qn:
                continue  # a late reply to an earlier attempt
            if reply.cn == "9014":
                return "ok"
            if reply.cn == "9011" and reply.cp_other.get("QnRtn", "1") != "1":
                log.error("bridge rejected %s QN=%s: QnRtn=%s", self.mn, qn, reply.cp_other.get("QnRtn"))
                return "rejected"

    async def _deliver(self, p: _Packet) -> None:
        o = self.owner
        for attempt in range(o.retries + 1):
            if attempt:
                o.stats.resent += 1
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.wait_for(
                        asyncio.open_connection(o.host, o.port), o.reply_timeout_s
                    )
                assert self.writer is not None
                self.writer.write(p.data)
                await self.writer.drain()
                result = await self._await_reply(p.qn, o.reply_timeout_s) if p.needs_reply else "ok"
                if result == "ok":
                    o.delivered(p)
                    return
                if result == "rejected":
                    break
                log.info("no 9014 reply for %s QN=%s (attempt %d)", self.mn, p.qn, attempt + 1)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                log.info("HJ 212 link %s to %s:%s: %s", self.mn, o.host, o.port, e or type(e).__name__)
                await self._close()
                await asyncio.sleep(min(2.0**attempt, 5.0, o.reply_timeout_s))
        o.stats.failed += 1
        log.warning("HJ 212 packet of %s QN=%s not acknowledged after %d attempts", self.mn, p.qn, attempt + 1)


class _BridgeOut:
    def __init__(
        self,
        address: str,
        stats: SimStats,
        cb: OnPublish | None,
        *,
        reply_timeout_s: float,
        retries: int,
        queue_size: int = 100,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise CemsError(f"bridge address {address!r} must be HOST:PORT")
        self.host = host.strip("[]")
        self.port = int(port)
        self.stats = stats
        self.cb = cb
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self.queue_size = queue_size
        self.links: dict[str, _BridgeLink] = {}

    def delivered(self, p: _Packet) -> None:
        self.stats.published += 1
        self.stats.by_kind[_kind(p.em)] += 1
        self.stats.bytes += len(p.data)
        if self.cb is not None:
            self.cb(p.em)

    async def send(self, em: Emission, packet: str, flag: int) -> None:
        mn = em.reading.mn
        link = self.links.get(mn)
        if link is None:
            link = self.links[mn] = _BridgeLink(self, mn)
        await link.queue.put(_Packet(em, packet.encode("ascii"), em.reading.qn, bool(flag & 1)))

    async def close(self, timeout_s: float) -> None:
        joins = [asyncio.ensure_future(link.queue.join()) for link in self.links.values()]
        if joins:
            _done, pending = await asyncio.wait(joins, timeout=timeout_s)
            for j in pending:
                j.cancel()
            if pending:
                lost = sum(link.queue.qsize() for link in self.links.values())
                log.error("%d HJ 212 packets not delivered after %.0f s", lost, timeout_s)
                self.stats.failed += lost
        for link in self.links.values():
            link.task.cancel()
        for link in self.links.values():
            with contextlib.suppress(asyncio.CancelledError):
                await link.task


async def _sleep_or_stop(stop_event: asyncio.Event | None, seconds: float) -> None:
    if stop_event is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)


async def run_simulator(
    registry: Registry,
    mqtt_url: str | None,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    protocol: str = "json",
    bridge: str | None = None,
    seed: int = 0,
    start: datetime | None = None,
    stop_event: asyncio.Event | None = None,
    on_publish: OnPublish | None = None,
    config: SimConfig | None = None,
    max_inflight: int = 1000,
    reply_timeout_s: float = 10.0,
    retries: int = 3,
    tick_s: float = 0.2,
    drain_timeout_s: float = 120.0,
) -> SimStats:
    """Run the fleet and publish what it produces; return the counters.

    ``speed`` is simulated seconds per real second (``math.inf``: as fast as the broker takes it);
    ``duration_s`` is in *simulated* seconds (None: until ``stop_event``).  DataTime is simulated time, so
    with ``speed > 1`` and the default start (now) data soon lie in the future.  ``protocol``: ``json``
    (``cems/v1/{mn}/{stream}``), ``hj212`` (raw packets on ``cems/v1/{mn}/hj212``, or over TCP to
    ``bridge`` "HOST:PORT") or ``mixed`` (a per-outlet choice).  Grid sensors always publish JSON over
    MQTT (skipped when ``mqtt_url`` is None).  On exit every publish is awaited (up to ``drain_timeout_s``).
    """
    if protocol not in PROTOCOLS:
        raise CemsError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if not speed > 0:
        raise CemsError(f"speed {speed} must be > 0")
    if bridge is not None and protocol == "json":
        raise CemsError("--bridge sends HJ 212: use --protocol hj212 or mixed")
    if mqtt_url is None and not (bridge is not None and protocol == "hj212"):
        raise CemsError("an MQTT URL is needed unless every outlet sends HJ 212 to a bridge")
    begin = start or datetime.now(BEIJING)
    if begin.tzinfo is None:
        begin = begin.replace(tzinfo=BEIJING)
    begin = begin.astimezone(BEIJING)
    if speed > 1 and start is None:
        log.warning("speed %.0f× from now: simulated DataTimes will run ahead of the wall clock", speed)
    model = FleetModel(registry, seed=seed, start=begin, config=config)
    stats = SimStats(sim_start=begin)
    prefix = registry.topics.prefix
    mqtt_out: _MqttOut | None = None
    bridge_out: _BridgeOut | None = None
    if bridge is not None:
        bridge_out = _BridgeOut(bridge, stats, on_publish, reply_timeout_s=reply_timeout_s, retries=retries)
    if mqtt_url is not None:
        mqtt_out = _MqttOut(mqtt_url, f"cems-sim-{seed}", max_inflight, stats, on_publish)
        await mqtt_out.start()

    async def dispatch(em: Emission) -> None:
        if em.outlet is None:
            if mqtt_out is None:
                stats.skipped += 1
                return
            await mqtt_out.publish(em.topic, encode_payload(em.reading), em)
            return
        mn = em.reading.mn
        if model.transport(mn, protocol) == "json":
            assert mqtt_out is not None
            await mqtt_out.publish(em.topic, encode_payload(em.reading), em)
            return
        flag = model.hj212_flag(mn)
        packet = hj212_packet(em.reading, em.outlet, flag=flag)
        if bridge_out is not None:
            await bridge_out.send(em, packet, flag)
        else:
            assert mqtt_out is not None
            # one MQTT message is one packet: no CRLF terminator needed
            await mqtt_out.publish(f"{prefix}/{mn}/hj212", packet.rstrip("\r\n").encode("ascii"), em)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    s0 = _epoch(begin)
    end = None if duration_s is None else s0 + duration_s
    fast = math.isinf(speed)
    sim = s0
    try:
        while not (stop_event is not None and stop_event.is_set()):
            target = sim + 600.0 if fast else s0 + (loop.time() - t0) * speed
            if end is not None:
                target = min(target, end)
            for em in model.advance(_dt(target)):
                await dispatch(em)
            sim = target
            if end is not None and target >= end:
                break
            if fast:
                await asyncio.sleep(0)
            else:
                await _sleep_or_stop(stop_event, tick_s)
    finally:
        stats.sim_end = _dt(sim)
        if bridge_out is not None:
            await bridge_out.close(drain_timeout_s)
        if mqtt_out is not None:
            await mqtt_out.close(drain_timeout_s)
        stats.elapsed_s = loop.time() - t0
    return stats
