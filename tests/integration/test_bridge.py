"""HJ 212 bridge over real TCP with the real Mosquitto of the test session (``mosquitto`` fixture)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from registries import one_outlet  # tests/registries.py

from cems.protocol.hj212 import decode, encode
from cems.registry import Registry, parse_registry
from gateways.hj212_bridge import HJ212Bridge, TokenBucket

pytestmark = pytest.mark.integration

REGISTRY = one_outlet(
    tail='[[enterprise.outlet]]\nmn = "MN0002"\nname = "2#机组排放口"\n'
    'profile = "coal_power_ultra_low"\npassword = "654321"\n'
)


def packet(qn: str, *, mn: str = "MN0001", pw: str = "123456", flag: int = 5, cn: str = "2011") -> bytes:
    return encode(
        qn=qn,
        st="31",
        cn=cn,
        pw=pw,
        mn=mn,
        flag=flag,
        data_time="20260101080000",
        values={"a21026": {"Rtd": 12.5, "Flag": "N"}, "a34013": {"Rtd": 3.1, "Flag": "N"}},
    ).encode()


def qn(i: int) -> str:
    return f"20260101080000{i:03d}"


class Sub:
    """Collects the messages of ``{prefix}/+/hj212``."""

    def __init__(self, url: str, prefix: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.c.on_message = self._msg
        self.c.on_subscribe = lambda *_a: self.ready.set()
        self.c.on_connect = lambda c, *_a: c.subscribe(f"{prefix}/+/hj212", qos=1)
        self.c.connect(host, int(port))
        self.c.loop_start()
        assert self.ready.wait(10), "subscription not acknowledged"

    def _msg(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((m.topic, bytes(m.payload)))

    def messages(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.got)

    async def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.messages()
            if len(got) >= n:
                return got
            await asyncio.sleep(0.02)
        return self.messages()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}/v1"


@pytest.fixture
def sub(mosquitto: Any, prefix: str) -> Iterator[Sub]:
    s = Sub(mosquitto.url, prefix)
    yield s
    s.close()


async def start_bridge(registry: Registry, url: str, prefix: str, **kw: Any) -> HJ212Bridge:
    kw.setdefault("ack_timeout_s", 3.0)
    b = HJ212Bridge(registry, url, topic_prefix=prefix, **kw)
    await b.start("127.0.0.1", 0)
    end = time.monotonic() + 10
    while not b.publisher.connected.is_set() and time.monotonic() < end:
        await asyncio.sleep(0.02)
    return b


@pytest.fixture
async def bridge(registry: Registry, mosquitto: Any, prefix: str) -> AsyncIterator[HJ212Bridge]:
    b = await start_bridge(registry, mosquitto.url, prefix)
    yield b
    await b.close()


async def connect(b: HJ212Bridge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", b.port)


async def read_reply(r: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(r.readline(), timeout)


async def test_fragmented_stream_is_published_then_acked(bridge: HJ212Bridge, sub: Sub, prefix: str) -> None:
    r, w = await connect(bridge)
    data = packet(qn(1))
    for i in range(0, len(data), 7):
        w.write(data[i : i + 7])
        await w.drain()
        await asyncio.sleep(0.002)
    reply = await read_reply(r)
    assert reply.endswith(b"\r\n")
    p = decode(reply)
    assert (p.cn, p.st, p.qn, p.mn, p.pw, p.flag, p.raw.endswith("CP=&&&&")) == (
        "9014",
        "91",
        qn(1),
        "MN0001",
        "123456",
        4,
        True,
    )
    got = await sub.wait_for(1)
    # the ack came after the PUBACK, so the message is already at the broker
    assert got[0] == (f"{prefix}/MN0001/hj212", data.rstrip(b"\r\n"))
    w.close()


async def test_several_packets_in_one_write_and_garbage(bridge: HJ212Bridge, sub: Sub) -> None:
    r, w = await connect(bridge)
    w.write(b"noise" + packet(qn(1)) + packet(qn(2)) + b"\r\n" + packet(qn(3), mn="MN0002", pw="654321"))
    await w.drain()
    replies = [decode(await read_reply(r)) for _ in range(3)]
    assert [x.qn for x in replies] == [qn(1), qn(2), qn(3)]
    assert [x.mn for x in replies] == ["MN0001", "MN0001", "MN0002"]
    got = await sub.wait_for(3)
    assert [decode(p).qn for _, p in got] == [qn(1), qn(2), qn(3)]
    assert bridge.stats["hj212_garbage"] == 1 and bridge.stats["published"] == 3
    w.close()


async def test_bad_crc_gets_9011_qnrtn_9_and_nothing_published(bridge: HJ212Bridge, sub: Sub) -> None:
    r, w = await connect(bridge)
    bad = packet(qn(1))
    bad = bad[:-6] + (b"0000" if bad[-6:-2] != b"0000" else b"1111") + b"\r\n"
    w.write(bad)
    reply = decode(await read_reply(r))
    assert (reply.cn, reply.qn, reply.cp_other) == ("9011", qn(1), {"QnRtn": "9"})
    # a good packet after it is the first (and only) message published
    w.write(packet(qn(2)))
    assert decode(await read_reply(r)).qn == qn(2)
    got = await sub.wait_for(1)
    await asyncio.sleep(0.2)
    assert [decode(p).qn for _, p in sub.messages()] == [qn(2)] and len(got) == 1
    w.close()


async def test_wrong_password_and_unknown_mn(bridge: HJ212Bridge, sub: Sub) -> None:
    r, w = await connect(bridge)
    w.write(packet(qn(1), pw="000000"))
    reply = decode(await read_reply(r))
    assert (reply.cn, reply.qn, reply.mn, reply.cp_other) == ("9011", qn(1), "MN0001", {"QnRtn": "3"})
    w.write(packet(qn(2), mn="NOPE"))
    reply = decode(await read_reply(r))
    assert (reply.cn, reply.mn, reply.cp_other) == ("9011", "NOPE", {"QnRtn": "4"})
    await asyncio.sleep(0.3)
    assert sub.messages() == []
    assert bridge.stats["wrong_password"] == 1 and bridge.stats["unknown_mn"] == 1
    w.close()


async def test_no_reply_without_a_bit_and_heartbeat(bridge: HJ212Bridge, sub: Sub) -> None:
    r, w = await connect(bridge)
    w.write(packet(qn(1), flag=4))  # A bit clear: published, not answered
    w.write(packet(qn(2), flag=9, cn="9015"))  # 2025 heartbeat: answered, not published
    w.write(packet(qn(3), flag=9))  # 2025 data with A bit: answered with Flag 8
    first, second = decode(await read_reply(r)), decode(await read_reply(r))
    assert (first.qn, first.cn) == (qn(2), "9014")
    assert (second.qn, second.cn, second.flag) == (qn(3), "9014", 8)
    got = await sub.wait_for(2)
    assert [decode(p).qn for _, p in got] == [qn(1), qn(3)]
    w.close()


async def test_broker_down_means_no_ack(registry: Registry, mosquitto: Any, prefix: str) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, ack_timeout_s=1.0)
    try:
        r, w = await connect(b)
        w.write(packet(qn(1)))
        assert decode(await read_reply(r)).qn == qn(1)  # broker up: acked
        mosquitto.stop()
        try:
            w.write(packet(qn(2)))
            with pytest.raises(TimeoutError):
                await read_reply(r, timeout=2.5)
            assert b.stats["publish_failed"] >= 1
        finally:
            mosquitto.start()
        # the device retries (HJ 212: 3 retries); once the broker is back it is acknowledged
        sub = Sub(mosquitto.url, prefix)
        try:
            end = time.monotonic() + 40
            reply = None
            while reply is None and time.monotonic() < end:
                w.write(packet(qn(3)))
                try:
                    reply = decode(await read_reply(r, timeout=2.0))
                except TimeoutError:
                    continue
            assert reply is not None and reply.qn == qn(3)
            end = time.monotonic() + 10
            while qn(3) not in [decode(p).qn for _, p in sub.messages()] and time.monotonic() < end:
                await asyncio.sleep(0.05)
            assert qn(3) in [decode(p).qn for _, p in sub.messages()]
        finally:
            sub.close()
        w.close()
    finally:
        await b.close()


async def test_idle_timeout_and_max_connections(registry: Registry, mosquitto: Any, prefix: str) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, idle_timeout_s=0.5, max_connections=1)
    try:
        r1, w1 = await connect(b)
        await asyncio.sleep(0.1)
        r2, w2 = await connect(b)  # over the limit: closed at once
        assert await asyncio.wait_for(r2.read(), 2.0) == b""
        assert b.stats["connections_refused"] == 1
        assert await asyncio.wait_for(r1.read(), 3.0) == b""  # idle: closed
        assert b.stats["idle_closed"] == 1
        w1.close()
        w2.close()
    finally:
        await b.close()


async def test_rate_limit_slows_a_flooding_device(registry: Registry, mosquitto: Any, prefix: str) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, max_packets_per_s=10.0)
    try:
        r, w = await connect(b)
        t0 = time.monotonic()
        w.write(b"".join(packet(qn(i)) for i in range(30)))  # burst 20, then 10/s
        replies = [decode(await read_reply(r)).qn for _ in range(30)]
        elapsed = time.monotonic() - t0
        assert replies == [qn(i) for i in range(30)]
        assert elapsed >= 0.8 and b.stats["rate_limited"] >= 9
        w.close()
    finally:
        await b.close()


def test_token_bucket() -> None:
    tb = TokenBucket(2.0, burst=2)
    assert tb.reserve(0.0) == 0 and tb.reserve(0.0) == 0
    assert tb.reserve(0.0) == pytest.approx(0.5)
    assert tb.reserve(10.0) == 0
