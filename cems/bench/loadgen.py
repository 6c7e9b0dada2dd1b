"""The benchmark's load generator, run as a separate process: ``python -m cems.bench.loadgen``.

paho-mqtt, QoS 1, a bounded window of unacknowledged publishes; counts published (accepted by paho) and
acknowledged (PUBACK) messages and writes a JSON summary to ``--out`` (or stdout)::

    python -m cems.bench.loadgen publish --mqtt-url mqtt://127.0.0.1:PORT --file msgs.txt [--rate 2000]
    python -m cems.bench.loadgen alert --mqtt-url ... --outlets 2000 --rate 1500 --rounds 20 --alert-outlets 400

``publish`` sends the messages of a file (``topic SPACE payload`` per line, see ``cems.bench._data``) as
fast as possible or at ``--rate`` messages/s.  ``alert`` sends real-time readings round robin over the
outlets at ``--rate``; each of ``--alert-outlets`` outlets sends three consecutive readings with SO2 three
times its limit, starting at a staggered round, and the summary gives for each of them the wall-clock
time (``time.time()``) just before the third exceeding reading was published — the reading that opens a
real-time warning (3 consecutive values above the limit).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cems.bench import _data


class Publisher:
    """QoS 1 publisher with at most ``window`` unacknowledged messages."""

    def __init__(self, url: str, client_id: str, window: int = 1000) -> None:
        host_port = url.split("://", 1)[-1]
        host, _, port = host_port.partition(":")
        self.host, self.port = host or "127.0.0.1", int(port or 1883)
        self.window = window
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
        )
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.published = 0
        self.acked = 0
        self.failed = 0
        self.last_ack = 0.0
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not getattr(rc, "is_failure", False):
            self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        with self.cond:
            self.acked += 1
            self.last_ack = time.time()
            self.cond.notify_all()

    def start(self, timeout_s: float = 30.0) -> None:
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()
        if not self.connected.wait(timeout_s):
            self.client.loop_stop()
            raise SystemExit(f"loadgen: MQTT broker {self.host}:{self.port} did not accept a connection")

    def publish(self, topic: str, payload: bytes) -> None:
        with self.cond:
            deadline = time.monotonic() + 60.0
            while self.published - self.acked >= 2 * self.window:
                if not self.cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    break  # bounded: the broker stopped acknowledging; go on (paho queues)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            with self.cond:
                self.published += 1
        else:
            self.failed += 1

    def finish(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while self.acked < self.published and time.monotonic() < deadline:
                self.cond.wait(timeout=0.5)
        self.client.disconnect()
        self.client.loop_stop()


def _pace(t0: float, i: int, rate: float | None) -> None:
    """Sleep until message ``i`` is due at ``rate`` messages/s (no-op without a rate)."""
    if not rate:
        return
    due = t0 + i / rate
    ahead = due - time.monotonic()
    if ahead > 0.002:
        time.sleep(ahead)


def run_publish(pub: Publisher, messages: Iterable[tuple[str, bytes]], rate: float | None) -> dict[str, Any]:
    msgs = list(messages)
    t0 = time.monotonic()
    w0 = time.time()
    for i, (topic, payload) in enumerate(msgs):
        _pace(t0, i, rate)
        pub.publish(topic, payload)
    t_sent = time.time()
    pub.finish()
    elapsed = max(pub.last_ack, t_sent) - w0
    return {
        "published": pub.published,
        "acked": pub.acked,
        "failed": pub.failed,
        "elapsed_s": elapsed,
        "msgs_per_s": pub.acked / elapsed if elapsed > 0 else None,
        "first_publish": w0,
        "last_ack": pub.last_ack,
    }


def alert_schedule(n_outlets: int, rounds: int, alert_outlets: int) -> dict[int, int]:
    """outlet index → first round of its three exceeding readings (staggered over the run)."""
    if rounds < 6:
        raise SystemExit("loadgen: alert mode needs at least 6 rounds")
    k = max(1, min(alert_outlets, n_outlets))
    stride = max(1, n_outlets // k)
    span = rounds - 5  # first exceeding round in 1 .. rounds-5; the 3 normal rounds after it close the event
    return {j * stride: 1 + (j % span) for j in range(k)}


def run_alert(pub: Publisher, n_outlets: int, rounds: int, alert_outlets: int, rate: float | None,
              step_s: float, seed: int) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    outlets = [_data.outlet(i) for i in range(n_outlets)]
    schedule = alert_schedule(n_outlets, rounds, alert_outlets)
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(seconds=step_s * rounds)
    third: dict[str, float] = {}
    t0 = time.monotonic()
    w0 = time.time()
    i = 0
    for r in range(rounds):
        t = base + timedelta(seconds=step_s * r)
        for o in outlets:
            first = schedule.get(o.index)
            exceed = first is not None and first <= r < first + 3
            topic, payload = _data.message(o, t, rng, hj212_packet=(o.index + r) % 2 == 0, exceed=exceed)
            _pace(t0, i, rate)
            if exceed and first is not None and r == first + 2:
                third[o.mn] = time.time()
            pub.publish(topic, payload)
            i += 1
    t_sent = time.time()
    pub.finish()
    elapsed = max(pub.last_ack, t_sent) - w0
    return {
        "published": pub.published,
        "acked": pub.acked,
        "failed": pub.failed,
        "elapsed_s": elapsed,
        "msgs_per_s": pub.acked / elapsed if elapsed > 0 else None,
        "first_publish": w0,
        "last_ack": pub.last_ack,
        "third_exceeding_publish": third,
    }


def _file_messages(path: str) -> Iterator[tuple[str, bytes]]:
    yield from _data.read_messages(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cems.bench.loadgen", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("publish", "alert"):
        s = sub.add_parser(name)
        s.add_argument("--mqtt-url", required=True, help="mqtt://127.0.0.1:PORT (loopback only)")
        s.add_argument("--rate", type=float, default=0.0, help="messages/s (0: as fast as possible)")
        s.add_argument("--window", type=int, default=1000, help="most unacknowledged QoS 1 publishes")
        s.add_argument("--client-id", default=f"cems-loadgen-{os.getpid()}")
        s.add_argument("--out", help="write the JSON summary here (default: stdout)")
    sub.choices["publish"].add_argument("--file", required=True, help="messages: topic SPACE payload per line")
    a = sub.choices["alert"]
    a.add_argument("--outlets", type=int, required=True)
    a.add_argument("--rounds", type=int, required=True, help="readings per outlet")
    a.add_argument("--alert-outlets", type=int, default=400)
    a.add_argument("--step-s", type=float, default=2.0, help="data-time step between rounds, seconds")
    a.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    host = args.mqtt_url.split("://", 1)[-1].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        p.error("the load generator only talks to a loopback broker")
    pub = Publisher(args.mqtt_url, args.client_id, args.window)
    pub.start()
    rate = args.rate or None
    if args.mode == "publish":
        res = run_publish(pub, _file_messages(args.file), rate)
    else:
        res = run_alert(pub, args.outlets, args.rounds, args.alert_outlets, rate, args.step_s, args.seed)
    text = json.dumps(res)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
