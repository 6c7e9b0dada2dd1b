"""The compliance engine inside the live ingest service, through the real Mosquitto and InfluxDB.

An outlet (coal power ultra-low: SO2 limit 35 mg/m³ at 6 % O2) sends minute data with O2 = 9 %, so the
corrected value is C × (21 − 6) / (21 − 9) = 1.25 C.  Hours H1 and H2 exceed (C = 40 → 50; C = 36 → 45),
H0 and H3 comply (C = 20 → 25).  The wall clock is injected.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from registries import one_outlet  # tests/registries.py

from cems.cli.events import format_events
from cems.model import BEIJING
from cems.registry import Registry, parse_registry
from cems.replay import replay
from cems.service.compliance import ComplianceConfig, ack_event, list_events
from cems.service.ingest import IngestService
from cems.service.mqtt import MqttSettings
from cems.service.outbox import SIGNATURE_HEADER, verify
from cems.sinks.influx import InfluxConfig

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"

REGISTRY = one_outlet(city="ack_sla_hours = 2.0\n", enterprise='sector = "power"\n')

# Beijing 08:00 two days ago: in the past for the validator, well inside its maximum age.
T0 = (datetime.now(BEIJING) - timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
SO2_BY_HOUR = {0: 20.0, 1: 40.0, 2: 36.0, 3: 20.0, 4: 20.0}


def minute_doc(t: datetime, so2: float, o2: float = 9.0) -> dict[str, Any]:
    return {
        "schema": "cems.reading/1",
        "mn": "MN0001",
        "stream": "min",
        "data_time": t.isoformat(),
        "values": {"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": o2, "Flag": "N"}},
    }


def minutes(first: int, last: int) -> list[dict[str, Any]]:
    """Minute records from minute ``first`` to ``last`` (inclusive) counted from T0."""
    return [minute_doc(T0 + timedelta(minutes=m), SO2_BY_HOUR[m // 60]) for m in range(first, last + 1)]


class Mqtt:
    """A plain paho client: publish QoS 1 and wait; collect messages of subscribed topics."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.c.on_message = lambda _c, _u, m: self._add(m)
        self.c.connect(host, int(port))
        self.c.loop_start()

    def _add(self, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((m.topic, json.loads(m.payload)))

    def alerts(self, update: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return [(t, d) for t, d in self.got if update is None or d.get("update") == update]

    def subscribe(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)
        time.sleep(0.3)

    def publish_docs(self, docs: list[dict[str, Any]]) -> None:
        infos = [self.c.publish("cems/v1/MN0001/min", json.dumps(d), qos=1) for d in docs]
        for i in infos:
            i.wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_until(pred: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass
class Hook:
    """A webhook receiver (http.server in a thread) answering 500 until ``ok`` is set."""

    ok: bool = False
    attempts: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def delivered(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for code, h, b in self.attempts if code == 200]


@pytest.fixture
def hook() -> Iterator[Hook]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            code = 200 if state.ok else 500
            with state.lock:
                state.attempts.append((code, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    state.url = f"http://127.0.0.1:{srv.server_address[1]}/cems-alerts"
    yield state
    srv.shutdown()
    srv.server_close()


class FakeClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY)


class Running:
    """An in-process IngestService with compliance; ``stop()`` shuts it down gracefully."""

    def __init__(self, svc: IngestService, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.svc, self.task, self._stop = svc, task, stop

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self.task, 30)


async def start_service(
    registry: Registry, mosquitto: Any, influxdb: Any, db: str, config: ComplianceConfig, client_id: str
) -> Running:
    svc = IngestService(
        registry,
        MqttSettings(url=mosquitto.url, client_id=client_id),
        InfluxConfig(url=influxdb.url, db=db),
        compliance=config,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    await asyncio.to_thread(wait_until, lambda: svc.conn.connected or task.done())
    if task.done():
        task.result()
    await asyncio.sleep(0.3)  # subscriptions acknowledged
    return Running(svc, task, stop)


def config(tmp_path: Path, clock: FakeClock, hook: Hook | None = None) -> ComplianceConfig:
    return ComplianceConfig(
        state_dir=tmp_path / "state",
        webhooks=(hook.url,) if hook else (),
        webhook_secret=SECRET if hook else b"",
        clock=clock,
        clock_interval_s=0.2,
        outbox_poll_s=0.2,
        webhook_base_delay_s=0.2,
        webhook_max_delay_s=0.5,
    )


@pytest.fixture
async def alerts(mosquitto: Any) -> AsyncIterator[Mqtt]:
    sub = Mqtt(mosquitto.url)
    await asyncio.to_thread(sub.subscribe, "cems/alerts/v1/#")
    yield sub
    sub.close()


async def test_exceedance_lifecycle_with_restart_ack_escalation_and_webhooks(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path, hook: Hook, alerts: Mqtt
) -> None:
    clock = FakeClock(T0)
    cfg = config(tmp_path, clock, hook)
    cid = f"cems-live-{uuid.uuid4().hex[:6]}"
    pub = Mqtt(mosquitto.url)

    # --- phase 1: H0 compliant, H1 and H2 exceed; H3 has started (its first 10 minutes close H2)
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, cid)
    await asyncio.to_thread(pub.publish_docs, minutes(0, 3 * 60 + 9))
    await asyncio.to_thread(wait_until, lambda: alerts.alerts("updated"))
    topic = "cems/alerts/v1/130602/E001/hourly_exceedance"
    opened = alerts.alerts("opened")
    assert [t for t, _ in opened] == [topic]
    ev = opened[0][1]
    eid = ev["event_id"]
    assert (ev["type"], ev["pollutant"], ev["status"], ev["hours"]) == ("hourly_exceedance", "a21026", "open", 1)
    assert ev["start"] == (T0 + timedelta(hours=1)).isoformat()
    assert ev["peak"] == pytest.approx(50.0) and ev["limit"] == 35 and ev["ref_o2"] == 6
    assert ev["opened_at"] == T0.isoformat() and ev["acked_by"] is None
    upd = alerts.alerts("updated")[0][1]
    assert upd["hours"] == 2 and upd["peak"] == pytest.approx(50.0)
    # the receiver is down: nothing delivered yet, the deliveries wait in the outbox
    await asyncio.to_thread(wait_until, lambda: len(hook.attempts) >= 2)
    assert hook.delivered() == []

    # --- restart in the middle of H3 (its open minutes are in the saved engine state)
    await run.stop()
    db_path = tmp_path / "state" / "compliance.sqlite3"
    with sqlite3.connect(db_path) as c:
        pending = c.execute("SELECT count(*) FROM outbox WHERE channel='webhook' AND status='pending'").fetchone()[0]
        row = c.execute("SELECT status, alerted_status, acked_by FROM events WHERE event_id=?", (eid,)).fetchone()
    assert pending == 2
    assert row == ("open", "updated", None)
    hook.ok = True
    clock.t = T0 + timedelta(hours=2, minutes=1)  # past the 2 h acknowledgement SLA of the opening alert
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, cid)

    # --- escalation: exactly once
    esc = await asyncio.to_thread(wait_until, lambda: alerts.alerts("escalated"))
    assert [t for t, _ in esc] == ["cems/alerts/v1/130602/E001/ack_escalation"]
    assert esc[0][1]["event_id"] == eid and esc[0][1]["ack_sla_hours"] == 2.0
    assert esc[0][1]["ack_due_at"] == (T0 + timedelta(hours=2)).isoformat()
    # the pending webhooks were delivered after the restart
    await asyncio.to_thread(wait_until, lambda: len(hook.delivered()) >= 3)

    # --- the rest of H3 and the start of H4: H3 complies, the exceedance closes with 2 hours
    await asyncio.to_thread(pub.publish_docs, minutes(3 * 60 + 10, 4 * 60 + 9))
    closed = await asyncio.to_thread(wait_until, lambda: alerts.alerts("closed"))
    assert closed[0][1]["event_id"] == eid
    assert closed[0][1]["hours"] == 2 and closed[0][1]["end"] == (T0 + timedelta(hours=3)).isoformat()
    assert closed[0][1]["escalated_at"] == clock.t.isoformat()

    # --- acknowledgement through the command topic (the CLI's function)
    # (control characters stripped from by/note; a time before the event opened is clamped to the opening)
    reply = await ack_event(
        MqttSettings(url=mosquitto.url),
        registry.topics,
        eid,
        "值班员\x1b张三\x07\n",
        note="已电话通知\u202e企业核查",
        at=datetime(2000, 1, 1, tzinfo=BEIJING),
        confirm_s=20,
    )
    assert reply is not None and reply["result"] == "acknowledged", reply
    assert (reply["event_id"], reply["acked_by"], reply["ack_note"]) == (eid, "值班员张三", "已电话通知企业核查")
    ack = await asyncio.to_thread(wait_until, lambda: alerts.alerts("acknowledged"))
    assert ack[0][1]["acked_by"] == "值班员张三" and ack[0][1]["acked_at"] == T0.isoformat()
    assert ack[0][1]["ack_note"] == "已电话通知企业核查"
    assert ack[0][0] == topic
    # a second ack is ignored (the first one stands); an ack of an unknown event is dead-lettered
    dl = Mqtt(mosquitto.url)
    await asyncio.to_thread(dl.subscribe, "cems/deadletter/v1/#")
    again = await ack_event(MqttSettings(url=mosquitto.url), registry.topics, eid, "someone else", confirm_s=20)
    assert again is not None and again["result"] == "already_acknowledged" and again["acked_by"] == "值班员张三"
    unknown = await ack_event(MqttSettings(url=mosquitto.url), registry.topics, "0000000000000000", "x", confirm_s=20)
    assert unknown is not None and unknown["result"] == "unknown_event"
    got = await asyncio.to_thread(wait_until, lambda: dl.alerts())
    assert got[0][0] == "cems/deadletter/v1/unknown_event"
    dl.close()

    # more clock ticks (still within the data, so no data interruption): no second escalation
    clock.t = T0 + timedelta(hours=4, minutes=10)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(wait_until, lambda: len(hook.delivered()) >= 5)
    await run.stop()

    # --- exactly one alert per transition across the restart
    # (the replies to the ack commands, on alerts/ack_result/{request}, carry no "update")
    updates = [d for _, d in alerts.alerts() if "update" in d]
    kinds = Counter(d["update"] for d in updates if d["event_id"] == eid)
    assert kinds == {"opened": 1, "updated": 1, "escalated": 1, "closed": 1, "acknowledged": 1}
    assert len(updates) == 5
    # webhooks: every alert delivered once, signed, with the event id header
    ok = hook.delivered()
    assert len(ok) == 5
    bodies = [json.loads(b) for _, b in ok]
    assert len({b["alert_id"] for b in bodies}) == 5
    for headers, body in ok:
        assert verify(
            body,
            SECRET,
            headers[SIGNATURE_HEADER.lower()],
            timestamp=headers["x-cems-timestamp"],
            event_id=headers["x-cems-event-id"],
            alert_id=headers["x-cems-alert-id"],
            now=time.time(),
        )
        assert headers["x-cems-event-id"] == eid
    # per event and receiver, deliveries keep their order: "updated" waited behind the failing "opened"
    assert {json.loads(b)["update"] for code, _, b in hook.attempts if code != 200} == {"opened"}
    assert [b["update"] for b in bodies] == ["opened", "updated", "escalated", "closed", "acknowledged"]

    # --- InfluxDB: hourly records and the event's latest state
    rows = influxdb.query(influx_db, "SELECT * FROM cems_hourly WHERE pollutant = 'a21026'", epoch="s")
    by_hour = {datetime.fromtimestamp(r["time"], BEIJING): r for r in rows}
    assert [by_hour[T0 + timedelta(hours=h)]["exceeds"] for h in range(4)] == [False, True, True, False]
    h1 = by_hour[T0 + timedelta(hours=1)]
    assert h1["zs_avg"] == pytest.approx(50.0) and h1["avg"] == pytest.approx(40.0) and h1["valid"] is True
    assert h1["valid_minutes"] == 60 and h1["limit"] == 35 and h1["enterprise"] == "E001"
    evs = influxdb.query(influx_db, "SELECT * FROM cems_event")
    assert len(evs) == 1
    e = evs[0]
    assert (e["event_id"], e["status"], e["hours"], e["acked_by"]) == (eid, "closed", 2.0, "值班员张三")
    assert e["escalated_at"] and e["acked_at"] == T0.isoformat()  # clamped to the opening
    assert e["ack_note"] == "已电话通知企业核查"
    # the CLI's listing
    assert list_events(influxdb.url, influx_db) == []
    listed = list_events(influxdb.url, influx_db, only_open=False)
    assert [(r["event_id"], r["status"], r["acked_by"], r["ack_note"]) for r in listed] == [
        (eid, "closed", "值班员张三", "已电话通知企业核查")
    ]
    assert list_events(influxdb.url, influx_db, only_open=False, only_unacked=True) == []
    table = format_events(listed)
    assert eid in table and "值班员张三" in table and "hourly_exceedance" in table
    pub.close()


async def test_redelivered_batch_after_a_crash_does_not_alert_twice(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path, alerts: Mqtt
) -> None:
    """The process dies after the state commit but before the MQTT acks: the broker redelivers the batch to
    the restarted service, which must neither re-alert nor lose the close."""
    clock = FakeClock(T0)
    cfg = config(tmp_path, clock)
    cid = f"cems-crash-{uuid.uuid4().hex[:6]}"
    pub = Mqtt(mosquitto.url)
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, cid)
    run.svc.conn.ack = lambda msg: None  # type: ignore[method-assign]  # "crash" before any ack
    await asyncio.to_thread(pub.publish_docs, minutes(0, 3 * 60 + 9))
    await asyncio.to_thread(wait_until, lambda: alerts.alerts("updated"))
    await run.stop()
    # restart: every message of phase 1 comes again
    run = await start_service(registry, mosquitto, influxdb, influx_db, cfg, cid)
    await asyncio.to_thread(wait_until, lambda: run.svc.stats.received >= 3 * 60 + 10, 30)
    await asyncio.to_thread(pub.publish_docs, minutes(3 * 60 + 10, 4 * 60 + 9))
    await asyncio.to_thread(wait_until, lambda: alerts.alerts("closed"))
    await asyncio.sleep(0.5)
    await run.stop()
    pub.close()
    assert Counter(d["update"] for _, d in alerts.alerts()) == {"opened": 1, "updated": 1, "closed": 1}
    assert run.svc.compliance is not None
    # hours already closed by the first run are neither recomputed nor re-alerted
    rows = influxdb.query(influx_db, "SELECT exceeds FROM cems_hourly WHERE pollutant = 'a21026'")
    assert [r["exceeds"] for r in rows] == [False, True, True, False]


async def test_live_service_and_replay_give_the_same_hourly_records_and_events(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path, alerts: Mqtt
) -> None:
    docs = minutes(0, 4 * 60 + 9)
    clock = FakeClock(T0)
    run = await start_service(
        registry, mosquitto, influxdb, influx_db, config(tmp_path, clock), f"cems-rp-{uuid.uuid4().hex[:6]}"
    )
    pub = Mqtt(mosquitto.url)
    await asyncio.to_thread(pub.publish_docs, docs)
    await asyncio.to_thread(wait_until, lambda: alerts.alerts("closed"))
    await asyncio.to_thread(wait_until, lambda: run.svc.stats.accepted >= len(docs))
    await run.stop()
    pub.close()

    res = replay(registry, [json.dumps(d) for d in docs], "jsonl")
    # live closes hours as data (and the clock) move on; replay also closes the last, unfinished hour (H4)
    expected = [h for h in res.hourly if h.hour_start < T0 + timedelta(hours=4)]
    assert len(expected) == 8  # H0..H3 × (SO2, O2)
    rows = influxdb.query(influx_db, "SELECT * FROM cems_hourly", epoch="ms")
    live = {(r["time"], r["pollutant"]): r for r in rows}
    assert len(live) == len(expected)
    for h in expected:
        r = live[(round(h.hour_start.timestamp() * 1000), h.pollutant)]
        assert (r["mn"], r["valid"], r["flag"], r["exceeds"], r["valid_minutes"], r["source"]) == (
            h.mn,
            h.valid,
            h.flag,
            h.exceeds,
            h.valid_minutes,
            h.source,
        )
        assert r["avg"] == pytest.approx(h.avg) and r.get("zs_avg") == pytest.approx(h.zs_avg)
        assert r.get("limit") == h.limit and r.get("ref_o2") == h.ref_o2
    with sqlite3.connect(tmp_path / "state" / "compliance.sqlite3") as c:
        live_events = sorted((json.loads(j) for (j,) in c.execute("SELECT json FROM events")), key=lambda e: e["start"])
    assert live_events == [e.to_json() for e in res.events]
    assert [e["status"] for e in live_events] == ["closed"]


async def test_a_split_reading_with_nox_above_the_limit_raises_the_realtime_warning_once(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path, alerts: Mqtt
) -> None:
    """Issue 12 item 11: O2 in part 1, NOx 80 (limit 50 at 6 %) in part 2 of each real-time packet.  Each part
    alone is no warning (part 1 has no NOx; part 2 has no O2 to correct with); reassembled, the warning opens —
    once."""
    from cems.protocol.hj212 import encode

    t0 = (datetime.now(BEIJING) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    clock = FakeClock(t0 + timedelta(minutes=3))
    run = await start_service(
        registry, mosquitto, influxdb, influx_db, config(tmp_path, clock), f"cems-split-{uuid.uuid4().hex[:6]}"
    )
    pub = Mqtt(mosquitto.url)
    try:
        infos = []
        for i in range(4):
            t = t0 + timedelta(seconds=30 * i)
            for pno, values in (
                (1, {"a19001": {"Rtd": 6.0, "Flag": "N"}}),
                (2, {"a21002": {"Rtd": 80.0, "Flag": "N"}}),
            ):
                text = encode(cn="2011", st="31", pw="123456", mn="MN0001", flag=7, qn=t.strftime("%Y%m%d%H%M%S000"),
                              data_time=t, pnum=2, pno=pno, values=values, crlf=False)  # type: ignore[arg-type]  # fmt: skip
                infos.append(pub.c.publish("cems/v1/MN0001/hj212", text, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        await asyncio.to_thread(wait_until, lambda: alerts.alerts("opened"))
        await asyncio.to_thread(wait_until, lambda: run.svc.stats.split_reassembled == 4)
        await asyncio.sleep(1.0)
        opened = alerts.alerts("opened")
        assert [(d["type"], d["pollutant"]) for _, d in opened] == [("realtime_warning", "a21002")]
        assert opened[0][1]["start"] == t0.isoformat()
        assert run.svc.stats.rejected == {} and run.svc.stats.split_parts_held == 0
    finally:
        pub.close()
        await run.stop()
