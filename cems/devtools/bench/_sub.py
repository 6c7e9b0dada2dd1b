"""Baseline consumer: a bare paho-mqtt QoS 1 subscriber that only counts (``python -m cems.devtools.bench._sub``).

It resumes a persistent session (``clean_session=False``, fixed client id) whose backlog the benchmark
queued, counts messages until ``--count`` or ``--timeout``, and writes a JSON summary (count, wall-clock
time of the first and last message) to ``--out``.  This is the limit for a Python consumer on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cems.devtools.bench._sub")
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--topic", action="append", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--status", help="rewrite this JSON file every second with the count so far (cems bench --soak)")
    a = p.parse_args(argv)
    host, _, port = a.mqtt_url.split("://", 1)[-1].partition(":")
    state: dict[str, Any] = {"count": 0, "first": None, "last": None, "connected": None}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.client_id, clean_session=False,
                         protocol=mqtt.MQTTv311)  # fmt: skip

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        state["connected"] = time.time()
        c.subscribe([(t, 1) for t in a.topic])

    def on_message(c: mqtt.Client, _u: Any, _m: mqtt.MQTTMessage) -> None:
        now = time.time()
        if state["first"] is None:
            state["first"] = now
        state["last"] = now
        state["count"] += 1
        if state["count"] >= a.count:
            c.disconnect()

    client.on_connect = on_connect
    client.on_message = on_message
    timer = threading.Timer(a.timeout, client.disconnect)
    timer.daemon = True
    timer.start()
    done = threading.Event()
    if a.status:
        threading.Thread(target=_status_loop, args=(a.status, state, done), daemon=True).start()
    client.connect(host or "127.0.0.1", int(port or 1883), keepalive=60)
    client.loop_forever()
    done.set()
    timer.cancel()
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(state, f)
    return 0


def _status_loop(path: str, state: dict[str, Any], done: threading.Event) -> None:
    while not done.wait(1.0):
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({**state, "time": time.time()}, f)
        os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
