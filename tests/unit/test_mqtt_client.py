"""The ingester's MQTT 3.1.1 client without a broker: packet encoding, framing of any byte split,
acknowledgement only on the connection a message arrived on and in receive order, back-pressure, and against a
fake broker on loopback: a CONNACK that never comes, a client id taken over again and again (real-broker behaviour is in
tests/integration: reconnection, TLS, ACLs, at-least-once under SIGKILL)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.service.mqtt import (
    MqttConnection,
    MqttSettings,
    _connect_packet,
    _Protocol,
    _publish_packet,
    _remaining_length,
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _decode_length(b: bytes) -> tuple[int, int]:
    n, mult, i = 0, 1, 0
    while True:
        n += (b[i] & 0x7F) * mult
        i += 1
        if b[i - 1] < 0x80:
            return n, i
        mult *= 128


@given(st.integers(0, 268_435_455))
def test_remaining_length_round_trips(n: int) -> None:
    enc = _remaining_length(n)
    assert _decode_length(enc) == (n, len(enc))
    assert len(enc) == 1 + (n >= 128) + (n >= 16384) + (n >= 2097152)


def test_connect_packet_is_mqtt_3_1_1_with_persistent_session_and_credentials() -> None:
    s = MqttSettings(url="mqtt://u%40x:p%3Aw@127.0.0.1:1883", client_id="cems-ingester", keepalive_s=30)
    # remaining length 35 = 10 header + 15 client id + 5 user + 5 password
    assert _connect_packet(s) == (
        b"\x10\x23" + b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40,)) + b"\x00\x1e"
        + b"\x00\x0dcems-ingester" + b"\x00\x03u@x" + b"\x00\x03p:w"
    )  # fmt: skip
    clean = MqttSettings(client_id="a", clean_session=True)
    assert _connect_packet(clean) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x1e\x00\x01a"


def _connection(queue_size: int = 20000) -> tuple[MqttConnection, _Protocol, FakeTransport]:
    conn = MqttConnection(MqttSettings(), [("cems/v1/+/+", 1)], queue_size=queue_size)
    proto = _Protocol(conn, 1)
    t = FakeTransport()
    proto.connection_made(t)
    conn._proto = proto
    return conn, proto, t


def _stream(messages: list[tuple[str, bytes, int, int]]) -> bytes:
    out = b"\xd0\x00"  # a PINGRESP first
    for topic, payload, qos, mid in messages:
        out += _publish_packet(topic, payload, qos, mid, retain=False, dup=False)
    return out


messages = st.lists(
    st.tuples(
        st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
        st.binary(max_size=3000),
        st.sampled_from([0, 1]),
        st.integers(1, 65535),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.lists(st.integers(1, 4000), max_size=20))
def test_any_split_of_the_byte_stream_gives_the_same_messages(
    msgs: list[tuple[str, bytes, int, int]], cuts: list[int]
) -> None:
    async def run() -> list[tuple[str, bytes, int, int]]:
        conn, proto, _ = _connection()
        data = _stream(msgs)
        points = sorted({c % (len(data) + 1) for c in cuts})
        for a, b in zip([0, *points], [*points, len(data)], strict=True):
            proto.data_received(data[a:b])
        got = []
        while not conn.queue.empty():
            m = conn.queue.get_nowait()
            got.append((m.topic, m.payload, m.qos, m.mid if m.qos else 0))
            assert m.connection == 1
        return got

    expected = [(t, p, q, mid if q else 0) for t, p, q, mid in msgs]
    assert asyncio.run(run()) == expected


def test_acks_go_out_in_one_write_and_only_on_the_connection_of_the_message() -> None:
    async def run() -> None:
        conn, proto, t = _connection()
        conn._connected.set()
        proto.data_received(_stream([("a/b", b"1", 1, 7), ("a/b", b"2", 1, 300), ("a/b", b"3", 0, 0)]))
        ms = [conn.queue.get_nowait() for _ in range(3)]
        for m in ms:
            conn.ack(m)
        assert t.written == b""  # one write per burst, after the loop turns
        await asyncio.sleep(0)
        assert bytes(t.written) == b"\x40\x02\x00\x07" + b"\x40\x02\x01\x2c"
        # the connection dropped and came back: an old message is not acknowledged on the new one (the broker
        # redelivers it with the same packet identifier, and the copy is acknowledged)
        t.written.clear()
        proto2 = _Protocol(conn, 2)
        proto2.connection_made(t2 := FakeTransport())
        conn._proto = proto2
        conn.ack(ms[0])
        await asyncio.sleep(0)
        assert t2.written == b""
        proto2.data_received(_stream([("a/b", b"1", 1, 7)]))
        copy = conn.queue.get_nowait()
        conn.ack(copy)
        await asyncio.sleep(0)
        assert bytes(t2.written) == b"\x40\x02\x00\x07"

    asyncio.run(run())


def test_a_full_inbox_stops_reading_until_half_is_taken() -> None:
    async def run() -> None:
        conn, proto, t = _connection(queue_size=10)
        proto.data_received(_stream([("t", bytes([i]), 1, i + 1) for i in range(25)]))
        assert t.paused and conn.queue.qsize() == 10  # the rest waits in the buffer, unparsed
        taken = [conn.queue.get_nowait() for _ in range(4)]
        assert t.paused  # 6 left: more than half
        taken.append(conn.queue.get_nowait())  # 5 left: room again, the buffer is parsed
        assert conn.queue.qsize() == 10 and t.paused  # and it filled up again
        while not conn.queue.empty():
            taken.append(await conn.queue.get())
        assert not t.paused
        assert [m.payload for m in taken] == [bytes([i]) for i in range(25)]

    asyncio.run(run())


def test_a_qos_1_publish_is_sent_again_with_dup_after_a_reconnection_until_acknowledged() -> None:
    async def run() -> None:
        conn, _, t = _connection()
        conn._connected.set()
        task = asyncio.create_task(conn.publish("cems/alerts/v1/x", b"{}", qos=1))
        await asyncio.sleep(0)
        first = bytes(t.written)
        assert first[0] == 0x32 and first.endswith(b"{}")
        # connection lost before the PUBACK; a new one is accepted (CONNACK, session present)
        conn._connected.clear()
        proto2 = _Protocol(conn, 2)
        proto2.connection_made(t2 := FakeTransport())
        conn._proto = proto2
        proto2.data_received(b"\x20\x02\x01\x00")
        assert conn.connected and conn.connects == 1
        assert bytes(t2.written).endswith(bytes((0x3A,)) + first[1:])  # the same packet, DUP set
        assert not task.done()
        mid = first[2 + 2 + len("cems/alerts/v1/x") : 2 + 2 + len("cems/alerts/v1/x") + 2]
        proto2.data_received(b"\x40\x02" + mid)
        await asyncio.wait_for(task, 1)
        await conn.stop()

    asyncio.run(run())


def test_acknowledgements_go_out_in_the_order_the_messages_were_received() -> None:
    """MQTT-4.6.0-2: PUBACKs in the order of the PUBLISH packets, whatever order the pipeline finishes in."""

    async def run() -> None:
        conn, proto, t = _connection()
        conn._connected.set()
        proto.data_received(_stream([("a/b", bytes([i]), 1, mid) for i, mid in enumerate((5, 9, 2, 7))]))
        m5, m9, m2, m7 = (conn.queue.get_nowait() for _ in range(4))
        conn.ack(m9)
        conn.ack(m2)
        await asyncio.sleep(0)
        assert t.written == b""  # 5 came first and is not acknowledged yet
        conn.ack(m5)
        await asyncio.sleep(0)
        assert bytes(t.written) == b"\x40\x02\x00\x05" + b"\x40\x02\x00\x09" + b"\x40\x02\x00\x02"
        t.written.clear()
        conn.ack(m5)  # twice: nothing more
        conn.ack(m7)
        await asyncio.sleep(0)
        assert bytes(t.written) == b"\x40\x02\x00\x07"
        # the broker may reuse an acknowledged identifier at once: the new message is a different one
        t.written.clear()
        proto.data_received(_stream([("a/b", b"again", 1, 5)]))
        again = conn.queue.get_nowait()
        conn.ack(m5)  # a stale acknowledgement of the old message with that identifier
        await asyncio.sleep(0)
        assert t.written == b""
        conn.ack(again)
        await asyncio.sleep(0)
        assert bytes(t.written) == b"\x40\x02\x00\x05"

    asyncio.run(run())


class FakeBroker:
    """An MQTT broker on loopback that answers each connection as ``behaviour(n)`` says: "silent" (accepts TCP,
    never sends CONNACK), "kick" (CONNACK, then closes at once, as when another client takes the client id),
    "ok" (CONNACK and PINGRESPs)."""

    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour
        self.accepted: list[float] = []
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_a: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self._writers:
            w.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"mqtt://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._writers.append(w)
        self.accepted.append(asyncio.get_running_loop().time())
        what = self.behaviour(len(self.accepted))
        await r.readexactly(2)  # CONNECT (short: no remaining-length continuation)
        if what == "silent":
            await r.read()
            return
        w.write(b"\x20\x02\x01\x00")  # CONNACK, session present
        await w.drain()
        if what == "kick":
            w.close()
            return
        while data := await r.read(4096):
            if b"\xc0\x00" in data:
                w.write(b"\xd0\x00")


def _client_for(url: str, **kw: Any) -> MqttConnection:
    conn = MqttConnection(MqttSettings(url=url, client_id="cems-ingester-7", keepalive_s=30, **kw), [])
    conn.min_delay_s, conn.max_delay_s = 0.05, 1.0
    return conn


def test_a_broker_that_never_sends_connack_is_given_up_and_connected_to_again() -> None:
    async def run() -> None:
        async with FakeBroker(lambda n: "silent" if n == 1 else "ok") as broker:
            conn = _client_for(broker.url, connect_timeout_s=0.3)
            await conn.start(wait_s=3.0)  # today: waits for the first CONNACK forever
            assert conn.connected and len(broker.accepted) == 2
            await conn.stop()

    asyncio.run(run())


def test_a_client_id_taken_over_again_and_again_is_an_error_and_backs_off_increasingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> list[float]:
        async with FakeBroker(lambda n: "kick") as broker:
            conn = _client_for(broker.url)
            with caplog.at_level(logging.WARNING, logger="cems.service.mqtt"):
                await conn.start(wait_s=3.0)
                while len(broker.accepted) < 6:
                    await asyncio.sleep(0.01)
            await conn.stop()
            assert conn.takeovers >= 3
            return broker.accepted

    accepted = asyncio.run(run())
    gaps = [b - a for a, b in itertools.pairwise(accepted)]
    assert gaps[3] > 1.5 * gaps[0] and gaps[4] > gaps[1]  # 0.1, 0.2, 0.4, 0.8, 1.0 (±20 % jitter)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and all("'cems-ingester-7'" in r.getMessage() for r in errors)
    assert "same client id" in errors[0].getMessage()


def _subscribes(written: bytes) -> list[tuple[int, list[str]]]:
    """The SUBSCRIBE packets in a byte stream: (packet identifier, topic filters)."""
    out: list[tuple[int, list[str]]] = []
    i = 0
    while i < len(written):
        n, k = _decode_length(written[i + 1 :])
        body = written[i + 1 + k : i + 1 + k + n]
        if written[i] == 0x82:
            filters, j = [], 2
            while j < len(body):
                ln = (body[j] << 8) | body[j + 1]
                filters.append(body[j + 2 : j + 2 + ln].decode())
                j += 2 + ln + 1
            out.append(((body[0] << 8) | body[1], filters))
        i += 1 + k + n
    return out


def test_a_refused_subscription_is_subscribed_again_after_a_back_off(caplog: pytest.LogCaptureFixture) -> None:
    """A NATS cluster node refuses a subscription while its JetStream consumer cannot be created (a peer
    rejoining): the filter is subscribed again, and the ones granted are not (issue 20)."""

    async def run() -> None:
        conn = MqttConnection(MqttSettings(), [("cems/v1/s0/+/+", 1), ("cems/cmd/v1/ack", 1)])
        proto = _Protocol(conn, 1)
        proto.connection_made(t := FakeTransport())
        conn._proto = proto
        proto.data_received(b"\x20\x02\x00\x00")  # CONNACK
        ((mid, filters),) = _subscribes(bytes(t.written))
        assert filters == ["cems/v1/s0/+/+", "cems/cmd/v1/ack"]
        t.written.clear()
        with caplog.at_level(logging.ERROR, logger="cems.service.mqtt"):
            proto.data_received(b"\x90\x04" + mid.to_bytes(2, "big") + b"\x01\x80")  # the second refused
        assert conn.subscriptions_refused == 1 and "cems/cmd/v1/ack" in caplog.text
        assert not t.written  # not at once: after the back-off (1 s the first time)
        await asyncio.sleep(1.2)
        ((mid2, again),) = _subscribes(bytes(t.written))
        assert again == ["cems/cmd/v1/ack"] and mid2 != mid
        t.written.clear()
        proto.data_received(b"\x90\x03" + mid2.to_bytes(2, "big") + b"\x01")  # granted now
        await asyncio.sleep(2.2)
        assert not _subscribes(bytes(t.written))  # nothing more
        assert conn.subscriptions_refused == 1

    asyncio.run(run())
