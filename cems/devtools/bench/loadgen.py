"""The benchmark's load generator, run as a separate process: ``python -m cems.devtools.bench.loadgen``.

QoS 1 on cems's asyncio MQTT client, a bounded window of unacknowledged publishes; counts published and
acknowledged (PUBACK) messages and writes a JSON summary to ``--out`` (or stdout)::

    python -m cems.devtools.bench.loadgen publish --mqtt-url mqtt://127.0.0.1:PORT --file msgs.txt [--rate 2000]
    python -m cems.devtools.bench.loadgen alert --mqtt-url ... --outlets 2000 --rate 1500 --rounds 20 \
        --alert-outlets 400

``publish`` sends the messages of a file (``topic SPACE payload`` per line, see ``cems.devtools.bench._data``) as
fast as possible or at ``--rate`` messages/s.  ``alert`` sends real-time readings round robin over the
outlets at ``--rate``; each of ``--alert-outlets`` outlets sends three consecutive readings with SO2 three
times its limit, starting at a staggered round, and the summary gives for each of them the wall-clock
time (``time.time()``) just before the third exceeding reading was published — the reading that opens a
real-time warning (3 consecutive values above the limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cems.devtools.bench import _data
from cems.errors import ServiceError
from cems.service.mqtt import MqttConnection, MqttSettings


class Publisher:
    """QoS 1 publisher with at most ``window`` unacknowledged messages, on cems's own asyncio MQTT client
    (paho's publish path costs ≈ 90 µs of CPU per message, which would take half a core from the machine
    under test at the alert run's rate; this one costs a few µs)."""

    def __init__(self, url: str, client_id: str, window: int = 1000) -> None:
        self.window = window
        self.conn = MqttConnection(MqttSettings(url=url, client_id=client_id, clean_session=True), [],
                                   manual_ack=False)  # fmt: skip
        self.published = 0
        self.failed = 0

    @property
    def acked(self) -> int:
        return self.conn.acknowledged

    async def start(self, timeout_s: float = 30.0) -> None:
        try:
            await self.conn.start(wait_s=timeout_s)
        except ServiceError as e:
            raise SystemExit(f"loadgen: {e}") from None

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.conn.unacknowledged >= self.window:
            with contextlib.suppress(TimeoutError):  # bounded: the broker stopped acknowledging; go on
                await asyncio.wait_for(self.conn.wait_unacknowledged_below(self.window), 60.0)
        self.conn.publish_nowait(topic, payload, qos=1)
        self.published += 1

    async def finish(self, timeout_s: float = 120.0) -> float:
        """Wait for every acknowledgement (bounded); returns the wall-clock time of the last one."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.conn.wait_unacknowledged_below(1), timeout_s)
        last = time.time()
        await self.conn.stop()
        return last


async def _pace(t0: float, i: int, rate: float | None) -> None:
    """Wait until message ``i`` is due at ``rate`` messages/s; without a rate, let the loop run now and then
    (acknowledgements are read on it)."""
    if not rate:
        if i % 500 == 0:
            await asyncio.sleep(0)
        return
    ahead = t0 + i / rate - time.monotonic()
    if ahead > 0.002:
        await asyncio.sleep(ahead)
    elif i % 500 == 0:
        await asyncio.sleep(0)


def _summary(pub: Publisher, w0: float, t_sent: float, last_ack: float) -> dict[str, Any]:
    elapsed = max(last_ack, t_sent) - w0
    return {
        "published": pub.published,
        "acked": pub.acked,
        "failed": pub.failed,
        "elapsed_s": elapsed,
        "msgs_per_s": pub.acked / elapsed if elapsed > 0 else None,
        "first_publish": w0,
        "last_ack": last_ack,
    }


async def run_publish(pub: Publisher, messages: Iterable[tuple[str, bytes]], rate: float | None) -> dict[str, Any]:
    msgs = list(messages)
    t0 = time.monotonic()
    w0 = time.time()
    for i, (topic, payload) in enumerate(msgs):
        await _pace(t0, i, rate)
        await pub.publish(topic, payload)
    t_sent = time.time()
    return _summary(pub, w0, t_sent, await pub.finish())


def alert_schedule(n_outlets: int, rounds: int, alert_outlets: int) -> dict[int, int]:
    """outlet index → first round of its three exceeding readings (staggered over the run)."""
    if rounds < 6:
        raise SystemExit("loadgen: alert mode needs at least 6 rounds")
    k = max(1, min(alert_outlets, n_outlets))
    stride = max(1, n_outlets // k)
    span = rounds - 5  # first exceeding round in 1 .. rounds-5; the 3 normal rounds after it close the event
    return {j * stride: 1 + (j % span) for j in range(k)}


async def run_alert(pub: Publisher, n_outlets: int, rounds: int, alert_outlets: int, rate: float | None,
                    step_s: float, seed: int) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    outlets = [_data.outlet(i) for i in range(n_outlets)]
    schedule = alert_schedule(n_outlets, rounds, alert_outlets)
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(seconds=step_s * rounds)
    # every message is built before the first is sent: the run itself only publishes
    plan: list[tuple[str, bytes, str | None]] = []
    for r in range(rounds):
        t = base + timedelta(seconds=step_s * r)
        for o in outlets:
            first = schedule.get(o.index)
            exceed = first is not None and first <= r < first + 3
            topic, payload = _data.message(o, t, rng, hj212_packet=(o.index + r) % 2 == 0, exceed=exceed)
            third = o.mn if exceed and first is not None and r == first + 2 else None
            plan.append((topic, payload, third))
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    w0 = time.time()
    for i, (topic, payload, mark) in enumerate(plan):
        await _pace(t0, i, rate)
        if mark is not None:
            marks[mark] = time.time()
        await pub.publish(topic, payload)
    t_sent = time.time()
    res = _summary(pub, w0, t_sent, await pub.finish())
    res["third_exceeding_publish"] = marks
    return res


def _file_messages(path: str) -> Iterator[tuple[str, bytes]]:
    yield from _data.read_messages(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cems.devtools.bench.loadgen", description=__doc__.split("\n\n")[0])
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
    rate = args.rate or None

    async def run() -> dict[str, Any]:
        pub = Publisher(args.mqtt_url, args.client_id, args.window)
        await pub.start()
        if args.mode == "publish":
            return await run_publish(pub, _file_messages(args.file), rate)
        return await run_alert(pub, args.outlets, args.rounds, args.alert_outlets, rate, args.step_s, args.seed)

    res = asyncio.run(run())
    text = json.dumps(res)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
