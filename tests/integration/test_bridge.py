"""HJ 212 bridge over real TCP with the real Mosquitto of the test session (``mosquitto`` fixture): framing,
replies after the PUBACK, rejections; password guessing (bans per peer and per MN), junk floods, idle and
per-IP limits, and validation before the 9014 (issue 13)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from registries import one_outlet  # tests/registries.py

from cems.evidence import verify_archive
from cems.model import BEIJING
from cems.protocol.hj212 import decode, encode
from cems.registry import Registry, parse_registry
from cems.registry.shard import shard_of
from cems.sinks.archive import ArchiveSettings
from gateways.hj212_bridge import FailureGuard, HJ212Bridge, TokenBucket

pytestmark = pytest.mark.integration

REGISTRY = one_outlet(
    tail='[[enterprise.outlet]]\nmn = "MN0002"\nname = "2#机组排放口"\n'
    'profile = "coal_power_ultra_low"\npassword = "654321"\n'
)


def packet(
    qn: str,
    *,
    mn: str = "MN0001",
    pw: str = "123456",
    flag: int = 5,
    cn: str = "2011",
    data_time: str = "20260101080000",
) -> bytes:
    return encode(
        qn=qn,
        st="31",
        cn=cn,
        pw=pw,
        mn=mn,
        flag=flag,
        data_time=data_time,
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


async def connect(b: HJ212Bridge, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` (any 127.x.y.z: on Linux the whole of 127/8 is loopback)."""
    return await asyncio.open_connection("127.0.0.1", b.port, local_addr=(source, 0))


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


# -- issue 13: password guessing, resource limits, validation before the 9014 ------------------------------


def now_beijing(minutes_ago: int = 1) -> str:
    return (datetime.now(BEIJING) - timedelta(minutes=minutes_ago)).strftime("%Y%m%d%H%M%S")


async def closed_by_bridge(r: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True when the bridge closes the connection (EOF or reset) within ``timeout`` without answering."""
    try:
        return await asyncio.wait_for(r.read(), timeout) == b""
    except ConnectionError:
        return True


async def test_password_guessing_bans_the_peer_and_alerts(
    registry: Registry, mosquitto: Any, prefix: str, sub: Sub, caplog: pytest.LogCaptureFixture
) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, auth_max_failures=3, auth_ban_s=1.0)
    try:
        # a DAS of the same address that logged in before the attack keeps working through it
        r0, w0 = await connect(b)
        w0.write(packet(qn(0), data_time=now_beijing()))
        assert decode(await read_reply(r0)).cn == "9014"
        r, w = await connect(b)
        with caplog.at_level(logging.WARNING, logger="gateways.hj212_bridge"):
            for i, pw in enumerate(("000001", "000002")):
                w.write(packet(qn(i + 1), pw=pw))
                assert decode(await read_reply(r)).cp_other == {"QnRtn": "3"}
            w.write(packet(qn(3), pw="000003"))  # the third failure within the window: banned
            assert await closed_by_bridge(r)
        errors = [x.getMessage() for x in caplog.records if x.levelno == logging.ERROR]
        assert any("peer 127.0.0.1 banned" in e for e in errors)
        assert any("MN MN0001 locked" in e for e in errors)
        assert b.stats["peer_bans"] == 1 and b.stats["mn_bans"] == 1
        # no oracle: during the ban even the right password gets no answer (the connection is refused)
        r2, w2 = await connect(b)
        w2.write(packet(qn(4), data_time=now_beijing()))
        assert await closed_by_bridge(r2)
        assert b.stats["connections_refused_banned"] >= 1
        w0.write(packet(qn(5), data_time=now_beijing()))
        assert decode(await read_reply(r0)).qn == qn(5)  # the logged-in connection is unaffected
        await asyncio.sleep(1.2)  # the ban ends
        r3, w3 = await connect(b)
        w3.write(packet(qn(6), data_time=now_beijing()))
        assert decode(await read_reply(r3)).cn == "9014"
        got = await sub.wait_for(3)
        assert [decode(p).qn for _, p in got] == [qn(0), qn(5), qn(6)]
        for x in (w, w0, w2, w3):
            x.close()
    finally:
        await b.close()


async def test_guesses_for_one_mn_from_many_peers_lock_the_mn(
    registry: Registry, mosquitto: Any, prefix: str, sub: Sub
) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, auth_max_failures=3, auth_ban_s=30.0)
    try:
        for k in range(3):  # one guess per address: no peer reaches the limit
            r, w = await connect(b, f"127.0.0.{k + 2}")
            w.write(packet(qn(k), mn="MN0002", pw=f"00000{k}"))
            if k < 2:
                assert decode(await read_reply(r)).cp_other == {"QnRtn": "3"}
            else:
                with pytest.raises(TimeoutError):  # no answer: the MN is locked now
                    await read_reply(r, 0.5)
            w.close()
        assert b.stats["mn_bans"] == 1 and b.stats["peer_bans"] == 0
        r, w = await connect(b, "127.0.0.9")
        w.write(packet(qn(7), mn="MN0002", pw="654321", data_time=now_beijing()))  # right, but locked: no answer
        w.write(packet(qn(8), mn="MN0001", data_time=now_beijing()))  # another MN on it works
        assert decode(await read_reply(r)).qn == qn(8)
        await asyncio.sleep(0.3)
        assert [decode(p).qn for _, p in sub.messages()] == [qn(8)]
        assert b.stats["banned_packets"] == 1
        w.close()
    finally:
        await b.close()


async def test_a_flood_of_junk_logs_once_and_is_closed(
    registry: Registry, mosquitto: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, max_junk_bytes=10_000)
    try:
        r, w = await connect(b)
        with caplog.at_level(logging.INFO, logger="gateways.hj212_bridge"):
            with contextlib.suppress(ConnectionError):
                for _ in range(16):
                    w.write(b"##" * 32768)  # 1 MB in all
                    await w.drain()
            assert await closed_by_bridge(r)
            await asyncio.sleep(0.2)
        warnings = [x for x in caplog.records if x.levelno >= logging.WARNING]
        assert 1 <= len(warnings) <= 3, [x.getMessage() for x in warnings]
        assert b.stats["junk_closed"] == 1 and b.stats["hj212_truncated"] <= 10_000
        w.close()
    finally:
        await b.close()


async def test_bytes_without_packets_do_not_keep_a_connection_open(
    registry: Registry, mosquitto: Any, prefix: str
) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, idle_timeout_s=1.0)
    try:
        r, w = await connect(b)
        t0 = time.monotonic()
        with contextlib.suppress(ConnectionError):
            while not r.at_eof() and time.monotonic() - t0 < 4.0:
                w.write(b"#")  # one byte every 0.2 s: never a packet
                await w.drain()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(r.read(), 0.2)
        assert r.at_eof() and time.monotonic() - t0 < 2.5
        assert b.stats["idle_closed"] == 1
        w.close()
    finally:
        await b.close()


async def test_connections_per_ip_are_capped(registry: Registry, mosquitto: Any, prefix: str) -> None:
    b = await start_bridge(registry, mosquitto.url, prefix, max_connections_per_ip=2)
    try:
        held = [await connect(b) for _ in range(2)]
        r, w = await connect(b)
        assert await closed_by_bridge(r)
        assert b.stats["connections_refused_per_ip"] == 1
        r2, w2 = await connect(b, "127.0.0.2")  # another address is not affected
        w2.write(packet(qn(1), data_time=now_beijing()))
        assert decode(await read_reply(r2)).cn == "9014"
        for _, x in [*held, (r, w), (r2, w2)]:
            x.close()
    finally:
        await b.close()


async def test_data_the_ingester_would_reject_is_not_confirmed(bridge: HJ212Bridge, sub: Sub) -> None:
    r, w = await connect(bridge)
    w.write(packet(qn(1), data_time="20990101000000"))
    reply = decode(await read_reply(r))
    assert (reply.cn, reply.qn, reply.cp_other) == ("9011", qn(1), {"QnRtn": "2"})
    w.write(packet(qn(2), data_time=now_beijing()))
    assert decode(await read_reply(r)).cn == "9014"
    got = await sub.wait_for(1)
    await asyncio.sleep(0.2)
    assert [decode(p).qn for _, p in got] == [qn(2)] and len(sub.messages()) == 1
    assert bridge.stats["future_data_time"] == 1
    w.close()


def test_failure_guard_bans_grow_and_are_bounded() -> None:
    g = FailureGuard(max_failures=2, window_s=10.0, ban_s=5.0, max_ban_s=12.0, max_keys=3)
    assert g.failure("a", 0.0) == 0 and g.failure("a", 11.0) == 0  # outside the window
    assert g.failure("a", 12.0) == 5.0 and g.banned("a", 13.0) == pytest.approx(4.0)
    assert g.failure("a", 17.0) == 0 and g.failure("a", 18.0) == 10.0  # twice as long
    assert g.failure("a", 28.5) == 0 and g.failure("a", 29.0) == 12.0  # at most max_ban_s
    for k in "bcdef":
        g.failure(k, 100.0)
    assert len(g) <= 3


async def test_split_packet_parts_are_answered_and_published_once_reassembled(bridge: HJ212Bridge, sub: Sub) -> None:
    """Issue 12 item 11: each part gets its 9014 (HJ 212), the broker gets one reassembled packet."""
    when = (datetime.now(BEIJING) - timedelta(minutes=1)).strftime("%Y%m%d%H%M%S")
    parts = [{"a19001": {"Rtd": 6.0, "Flag": "N"}}, {"a21002": {"Rtd": 80.0, "Flag": "N"}}, {"a21026": {"Rtd": 9.0}}]
    r, w = await connect(bridge)
    for pno, values in enumerate(parts, 1):
        w.write(encode(qn=qn(7), st="31", cn="2011", pw="123456", mn="MN0001", flag=7, pnum=3, pno=pno,
                       data_time=when, values=values).encode())  # type: ignore[arg-type]  # fmt: skip
        await w.drain()
        reply = decode(await read_reply(r))
        assert (reply.cn, reply.qn) == ("9014", qn(7))
        if pno < 3:
            await asyncio.sleep(0.2)
            assert sub.messages() == []  # part 1 of 3 is not a reading: nothing published
    got = await sub.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(sub.messages()) == 1
    whole = decode(got[0][1])
    assert whole.pnum is None and whole.pno is None and whole.flag == 5 and whole.qn == qn(7)
    assert sorted(whole.values) == ["a19001", "a21002", "a21026"] and whole.values["a21002"]["Rtd"] == 80.0
    assert bridge.stats["split_reassembled"] == 1 and bridge.stats["published"] == 1
    w.close()


# -- issue 14 item 6: the bridge's evidence archive -----------------------------------------------------------


async def test_bridge_archives_every_frame_with_the_plants_address_before_the_reply(
    registry: Registry, mosquitto: Any, prefix: str, sub: Sub, tmp_path: Path
) -> None:
    evidence = ArchiveSettings(tmp_path, "hj212-bridge", topic_prefixes=(prefix,))
    b = await start_bridge(registry, mosquitto.url, prefix, evidence=evidence)
    try:
        r, w = await connect(b, "127.0.0.7")
        good = packet(qn(1), data_time=now_beijing())
        w.write(good)
        assert decode(await read_reply(r)).cn == "9014"
        # the 9014 came after the frame was durable in the archive
        seg = next((tmp_path / "hj212-bridge").glob("*.jsonl"))
        assert base64.b64encode(good.rstrip(b"\r\n")) in seg.read_bytes()
        w.write(packet(qn(2), pw="000000", data_time=now_beijing()))
        assert decode(await read_reply(r)).cn == "9011"
        (topic, published), *_ = await sub.wait_for(1)
        w.close()
    finally:
        await b.close()
    assert verify_archive(tmp_path)[0] == []
    lines = [json.loads(x) for x in seg.read_bytes().splitlines()]
    msgs = [x for x in lines if x["kind"] == "msg"]
    assert [(m["status"], m.get("reason"), m["mn"]) for m in msgs] == [
        ("published", None, "MN0001"),
        ("rejected", "bad_password", "MN0001"),
    ]
    assert all(m["via"]["peer"].startswith("127.0.0.7:") for m in msgs)
    assert msgs[0]["topic"] == topic
    # the link to the ingester's archive: the published payload is the archived frame, byte for byte
    assert msgs[0]["sha256"] == hashlib.sha256(published).hexdigest()


async def test_an_st22_packet_of_a_grid_sensor_is_published_on_its_grid_topic(mosquitto: Any, prefix: str) -> None:
    """Issue 15: ambient packets (ST=22) whose MN is a grid sensor go to ``{grid_prefix}/{MN}``, checked as the
    ingester checks them there (ST, the sensor's password)."""
    from test_ingest import Mqtt  # same directory (pytest prepend import mode)

    grid_prefix = f"{prefix}-grid"
    reg = parse_registry(
        one_outlet(
            tail='[[grid_sensor]]\nid = "G001"\ndistrict = "130602"\npassword = "654321"\n'
            f'[topics]\ngrid_prefix = "{grid_prefix}"\n'
        )
    )
    watcher = Mqtt(mosquitto.url)
    watcher.subscribe(f"{grid_prefix}/#")
    b = await start_bridge(reg, mosquitto.url, prefix)
    try:
        r, w = await connect(b)
        t = datetime.now(BEIJING).replace(microsecond=0) - timedelta(minutes=1)
        dt = t.strftime("%Y%m%d%H%M%S")

        def ambient(q: str, st: str = "22", pw: str = "654321") -> bytes:
            vals: dict[str, dict[str, float | int | str]] = {
                "a34004": {"Rtd": 35.0, "Flag": "N"},
                "a34002": {"Rtd": 70.0, "Flag": "N"},
            }
            return encode(qn=q, st=st, cn="2011", pw=pw, mn="G001", flag=5, data_time=dt, values=vals).encode()

        w.write(ambient(qn(1)))
        assert decode(await read_reply(r)).cn == "9014"
        w.write(ambient(qn(2), st="31"))  # a flue-gas packet from an ambient sensor: refused
        assert decode(await read_reply(r)).cp_other == {"QnRtn": "2"}
        w.write(ambient(qn(3), pw="000000"))
        assert decode(await read_reply(r)).cp_other == {"QnRtn": "3"}
        end = time.monotonic() + 10
        while not watcher.got and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert [(topic, decode(p).qn) for topic, p in watcher.got] == [(f"{grid_prefix}/G001", qn(1))]
        w.close()
    finally:
        watcher.close()
        await b.close()


async def test_with_shards_an_outlet_is_published_under_its_shard(
    registry: Registry, mosquitto: Any, prefix: str
) -> None:
    """``cems-gateway hj212-bridge --shards N`` (issue 20): MN0001's packets go to ``{prefix}/s{k}/MN0001/hj212``
    with k = CRC-32("MN0001") mod N, the topics ``cems run --shard k/N`` takes."""
    k = shard_of("MN0001", 3)
    s = Sub(mosquitto.url, f"{prefix}/s{k}")
    b = await start_bridge(registry, mosquitto.url, prefix, shards=3)
    try:
        r, w = await connect(b)
        data = packet(qn(1))
        w.write(data)
        await w.drain()
        assert decode(await read_reply(r)).cn == "9014"
        got = await s.wait_for(1)
        assert got == [(f"{prefix}/s{k}/MN0001/hj212", data.rstrip(b"\r\n"))]
        w.close()
    finally:
        await b.close()
        s.close()
