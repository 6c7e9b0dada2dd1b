"""The benchmark's load generator, run as a separate process: ``python -m cems.devtools.bench.loadgen``.

QoS 1 on cems's asyncio MQTT client, a bounded window of unacknowledged publishes; counts published and
acknowledged (PUBACK) messages and writes a JSON summary to ``--out`` (or stdout)::

    python -m cems.devtools.bench.loadgen publish --mqtt-url mqtt://127.0.0.1:PORT --file msgs.txt [--rate 2000]
    python -m cems.devtools.bench.loadgen alert --mqtt-url ... --outlets 2000 --rate 1500 --rounds 20 \
        --alert-outlets 400

    python -m cems.devtools.bench.loadgen soak --mqtt-url ... --outlets 2000 --rate 2000 --duration 600 \
        --status status.json

``publish`` sends the messages of a file (``topic SPACE payload`` per line, see ``cems.devtools.bench._data``) as
fast as possible or at ``--rate`` messages/s.  ``alert`` sends real-time readings round robin over the
outlets at ``--rate``; each of ``--alert-outlets`` outlets sends three consecutive readings with SO2 three
times its limit, starting at a staggered round, and the summary gives for each of them the wall-clock
time (``time.time()``) just before the third exceeding reading was published — the reading that opens a
real-time warning (3 consecutive values above the limit).  ``soak`` (``cems bench --soak``) publishes
round robin over the outlets at ``--rate`` for ``--duration`` seconds; a round's data time is ``--clock``
(``WALL,DATA,SPEED``: the accelerated clock that ``cems run --accelerated-clock`` is given too; default the
wall clock), one second after the previous round's at least;
every ``--exceed-every``-th outlet sends three exceeding readings every ``--exceed-period`` rounds (real-time
warnings open and close); ``--status`` is rewritten every second with the counts so far.
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
from collections.abc import Callable, Iterable, Iterator
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


def _write_status(path: str, pub: Publisher, rounds: int, data_time: datetime | None) -> None:
    doc = {"time": time.time(), "published": pub.published, "acked": pub.acked, "rounds": rounds,
           "data_time": data_time.isoformat() if data_time else None}  # fmt: skip
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def soak_exceeds(index: int, rnd: int, every: int, period: int) -> bool:
    """Whether outlet ``index`` sends an exceeding reading in round ``rnd``: every ``every``-th outlet, three
    rounds in a row out of each ``period`` (staggered over the outlets), so a real-time warning opens at the
    third and closes after it.  ``every`` = 0: never."""
    if every <= 0 or index % every:
        return False
    return (rnd + index // every) % max(period, 4) < 3


async def run_soak(pub: Publisher, n_outlets: int, rate: float, duration_s: float, status: str | None,
                   exceed_every: int, exceed_period: int, seed: int,
                   clock: Callable[[], datetime] | None = None) -> dict[str, Any]:  # fmt: skip
    rng = random.Random(seed)
    outlets = [_data.outlet(i) for i in range(n_outlets)]
    t0 = time.monotonic()
    w0 = time.time()
    i = rnd = 0
    data_time: datetime | None = None
    next_status = t0
    while time.monotonic() - t0 < duration_s:
        now = (clock() if clock is not None else datetime.now(UTC)).replace(microsecond=0)
        data_time = now if data_time is None else max(now, data_time + timedelta(seconds=1))
        for o in outlets:
            await _pace(t0, i, rate)
            exceed = soak_exceeds(o.index, rnd, exceed_every, exceed_period)
            topic, payload = _data.message(o, data_time, rng, hj212_packet=(o.index + rnd) % 2 == 0, exceed=exceed)
            await pub.publish(topic, payload)
            i += 1
            if status and time.monotonic() >= next_status:
                _write_status(status, pub, rnd, data_time)
                next_status += 1.0
        rnd += 1
    t_sent = time.time()
    res = _summary(pub, w0, t_sent, await pub.finish())
    res.update(rounds=rnd, outlets=n_outlets, rate=rate, last_data_time=data_time.isoformat() if data_time else None)
    if status:
        _write_status(status, pub, rnd, data_time)
    return res


def _file_messages(path: str) -> Iterator[tuple[str, bytes]]:
    yield from _data.read_messages(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cems.devtools.bench.loadgen", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("publish", "alert", "soak"):
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
    k = sub.choices["soak"]
    k.add_argument("--outlets", type=int, required=True)
    k.add_argument("--clock", help="WALL,DATA,SPEED: data times from this accelerated clock (default: the wall clock)")
    k.add_argument("--duration", type=float, required=True, help="seconds of publishing")
    k.add_argument("--status", help="rewrite this JSON file every second with the counts so far")
    k.add_argument("--exceed-every", type=int, default=50, help="every N-th outlet sends exceeding readings (0: none)")
    k.add_argument("--exceed-period", type=int, default=30, help="rounds between an outlet's exceedances")
    k.add_argument("--seed", type=int, default=4)
    args = p.parse_args(argv)
    clock = None
    if args.mode == "soak":
        if not args.rate or args.outlets < 1:
            p.error("soak needs a --rate and --outlets")
        try:
            clock = _data.accelerated_clock(args.clock) if args.clock else None
        except ValueError as e:
            p.error(f"--clock {e}")
    host = args.mqtt_url.split("://", 1)[-1].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        p.error("the load generator only talks to a loopback broker")
    rate = args.rate or None

    async def run() -> dict[str, Any]:
        pub = Publisher(args.mqtt_url, args.client_id, args.window)
        await pub.start()
        if args.mode == "publish":
            return await run_publish(pub, _file_messages(args.file), rate)
        if args.mode == "soak":
            return await run_soak(pub, args.outlets, args.rate, args.duration, args.status, args.exceed_every,
                                  args.exceed_period, args.seed, clock)  # fmt: skip
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
