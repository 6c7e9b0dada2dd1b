"""Chaos test: under steady load, kill and restart the ingester, the broker and the database in turn, then
prove nothing was lost and no event was duplicated or lost.

    python -m cems.devtools.chaos --outlets 50 --rate 200 --duration 300      # the long run
    (tests/integration/test_chaos.py runs a shortened variant in CI)

Everything runs on loopback with project-owned services in a temporary directory.  Checks:
- the set of (outlet, stream, DataTime) keys in InfluxDB equals the set published;
- the events in InfluxDB are exactly the events ``cems replay`` finds in the published data (none lost,
  none invented), and no event was announced as opened twice on the alert topic.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cems.config import environ
from cems.devtools.local import LocalServices
from cems.registry import parse_registry
from cems.replay import replay
from cems.sinks.influx import influx_query

_PROFILE_LIMIT_SO2 = 35.0  # coal_power_ultra_low SO2 limit at 6 % O2 (cems/limits/profiles.toml)


def registry_toml(outlets: int) -> str:
    out = ['[city]\nname = "chaos"\n[[district]]\ncode = "D1"\nname = "d"']
    for i in range(outlets):
        out.append(
            f'[[enterprise]]\nid = "E{i:04d}"\nname = "e{i}"\ndistrict = "D1"\n[[enterprise.outlet]]\n'
            f'mn = "CH{i:06d}"\nname = "o"\nprofile = "coal_power_ultra_low"\nrtd_interval_s = 30'
        )
    return "\n".join(out) + "\n"


@dataclass
class ChaosReport:
    published: int = 0
    stored: int = 0
    missing: int = 0
    unexpected: int = 0
    events_live: int = 0
    events_replay: int = 0
    events_missing: list[str] = field(default_factory=list)
    events_extra: list[str] = field(default_factory=list)
    opened_alert_duplicates: int = 0
    actions: list[str] = field(default_factory=list)
    action_times: list[float] = field(default_factory=list)
    #: Data times (Unix ms) of the first and last missing keys, to place a loss among the actions.
    missing_span: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.missing == 0
            and self.unexpected == 0
            and not self.events_missing
            and not self.events_extra
            and self.opened_alert_duplicates == 0
            and self.published > 0
        )


class _Publisher(threading.Thread):
    """Steady QoS 1 load; persistent session so that nothing is lost across broker restarts."""

    def __init__(self, url: str, outlets: int, rate: float, duration: float) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("mqtt://").split(":")
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-publisher", clean_session=False)
        self.c.max_queued_messages_set(0)
        self.c.max_inflight_messages_set(200)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect(host, int(port))
        self.c.loop_start()
        self.outlets, self.rate, self.duration = outlets, rate, duration
        self.lines: list[str] = []
        self.keys: set[tuple[str, int]] = set()
        self.sent = 0
        self.acked = 0  # PUBACKs (paho resends unacknowledged QoS 1 messages after a reconnect)
        self.c.on_publish = self._on_publish

    def _on_publish(self, *_: Any) -> None:
        self.acked += 1

    def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < self.duration:
            k = i % self.outlets
            mn = f"CH{k:06d}"
            now_ms = int(time.time() * 1000) // 10 * 10 + (k % 10)  # distinct per outlet even in one tick
            dt = datetime.fromtimestamp(now_ms / 1000, UTC)
            # outlet 0 alternates: 6 readings far above the SO2 limit, then 6 compliant ones → warnings
            so2 = 80.0 if (k == 0 and (i // self.outlets) % 12 < 6) else 12.0
            body = {
                "schema": "cems.reading/1",
                "mn": mn,
                "stream": "rtd",
                "data_time": dt.isoformat(),
                "values": {
                    "a21026": {"Rtd": so2, "ZsRtd": so2, "Flag": "N"},
                    "a19001": {"Rtd": 6.0, "Flag": "N"},
                    "a34013": {"Rtd": 3.0, "ZsRtd": 3.0, "Flag": "N"},
                },
            }
            text = json.dumps(body)
            self.c.publish(f"cems/v1/{mn}/rtd", text, qos=1)
            self.sent += 1
            self.lines.append(text)
            self.keys.add((mn, now_ms))
            i += 1
            time.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))

    def finish(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.1)
        self.c.disconnect()
        self.c.loop_stop()


class _AlertWatcher:
    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.opened: Counter[str] = Counter()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chaos-alerts", clean_session=False)
        self.c.on_message = self._on
        self.c.on_connect = lambda c, *_: c.subscribe("cems/alerts/v1/#", qos=1)
        self.c.reconnect_delay_set(1, 2)
        self.c.connect(host, int(port))
        self.c.loop_start()

    def _on(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        doc = json.loads(m.payload)
        if doc.get("update") == "opened" and not m.dup:
            self.opened[doc.get("alert_id") or doc["event_id"]] += 1

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    time.sleep(0.5)  # SUBACK
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the ingester did not become healthy")


def _stored_keys(url: str) -> set[tuple[str, int]]:
    rows = influx_query(url, "cems", "SELECT a21026_Rtd FROM cems_reading GROUP BY mn", epoch="ms")
    return {(r["mn"], int(r["time"])) for r in rows}


def run_chaos(
    outlets: int = 20, rate: float = 100.0, duration: float = 60.0, workdir: Path | None = None, log: Any = print
) -> ChaosReport:
    tmp = Path(workdir or tempfile.mkdtemp(prefix="cems-chaos-"))
    services = LocalServices(tmp / "services")
    report = ChaosReport()
    reg_path = tmp / "registry.toml"
    reg_text = registry_toml(outlets)
    reg_path.write_text(reg_text, encoding="utf-8")
    infos = services.up(influx_db="cems")
    murl, iurl = infos["mosquitto"].url, infos["influxdb"].url
    env = {**environ(), "CEMS_STATE_DIR": str(tmp / "state")}
    health = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "cems",
        "run",
        "--config",
        str(reg_path),
        "--mqtt-url",
        murl,
        "--influx-url",
        iurl,
        "--influx-db",
        "cems",
        "--client-id",
        "chaos-ingester",
        "--health-port",
        str(health),
    ]
    errlog = open(tmp / "ingester.log", "ab")  # noqa: SIM115

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, env=env, stdout=errlog, stderr=errlog, start_new_session=True)

    ingester = start()
    watcher: _AlertWatcher | None = None
    try:
        watcher = _AlertWatcher(murl)
        _wait_healthy(health, 60)  # subscribed: from now on the broker keeps every message for the ingester
        pub = _Publisher(murl, outlets, rate, duration)
        pub.start()
        step = duration / 4
        time.sleep(step)
        os.killpg(ingester.pid, signal.SIGKILL)
        ingester.wait()
        report.actions.append("ingester SIGKILL")
        report.action_times.append(time.time())
        time.sleep(2)
        ingester = start()
        time.sleep(step - 2)
        services.restart("mosquitto")
        report.actions.append("broker restart")
        report.action_times.append(time.time())
        time.sleep(step)
        services.stop_service("influxdb")
        report.actions.append("database stop")
        report.action_times.append(time.time())
        time.sleep(min(8.0, step / 2))
        services.start("influxdb", infos["influxdb"].port)
        report.actions.append("database start")
        report.action_times.append(time.time())
        pub.join()
        pub.finish()
        report.published = len(pub.keys)
        deadline = time.monotonic() + 120
        stored: set[tuple[str, int]] = set()
        while time.monotonic() < deadline:
            stored = _stored_keys(iurl)
            if len(stored) >= report.published:
                break
            time.sleep(1.0)
        report.stored = len(stored)
        missing = pub.keys - stored
        report.missing = len(missing)
        if missing:
            report.missing_span = [min(t for _, t in missing), max(t for _, t in missing)]
        report.unexpected = len(stored - pub.keys)
        time.sleep(3.0)  # last batch's events and alerts
        live = {r["event_id"] for r in influx_query(iurl, "cems", 'SELECT "event_id", "type" FROM cems_event')}
        res = replay(parse_registry(reg_text), pub.lines, "jsonl")
        expected = {e.event_id for e in res.events if e.type == "realtime_warning"}
        live_warn = {
            r["event_id"]
            for r in influx_query(iurl, "cems", 'SELECT "event_id" FROM cems_event WHERE "type" = \'realtime_warning\'')
        }
        report.events_live, report.events_replay = len(live), len(expected)
        report.events_missing = sorted(expected - live_warn)
        report.events_extra = sorted(live_warn - expected)
        if report.events_missing or report.events_extra:
            by_id = {e.event_id: e.to_json() for e in res.events}
            for eid in report.events_missing:
                log(f"missing live: {json.dumps(by_id[eid])}")
            for r in influx_query(iurl, "cems", "SELECT * FROM cems_event"):
                if r["event_id"] in report.events_extra:
                    log(f"extra live: {json.dumps(r, default=str)}")
        report.opened_alert_duplicates = sum(n - 1 for n in watcher.opened.values() if n > 1)
    finally:
        if watcher is not None:
            watcher.close()
        if ingester.poll() is None:
            ingester.send_signal(signal.SIGTERM)
            try:
                ingester.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(ingester.pid, signal.SIGKILL)
        errlog.close()
        services.down()
    log(json.dumps({**report.__dict__, "ok": report.ok}, ensure_ascii=False))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cems.devtools.chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--outlets", type=int, default=50)
    ap.add_argument("--rate", type=float, default=200.0, help="messages per second")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load")
    a = ap.parse_args(argv)
    return 0 if run_chaos(a.outlets, a.rate, a.duration).ok else 1


if __name__ == "__main__":
    sys.exit(main())
