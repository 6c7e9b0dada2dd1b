"""Event actions (电子督办, issue 19) through the live ingester, the real Mosquitto and InfluxDB: ack with a note,
dispatch to the district with a deadline, the district's feedback, send back, feedback again, close; each
confirmed on the reply topic, in the append-only history (SQLite), in ``cems_event_action`` and in the
event's case fields of ``cems_event``; refused when out of order; a redelivered command is answered, not
recorded twice."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_compliance_live import (  # same directory (pytest prepend import mode)
    T0,
    FakeClock,
    Mqtt,
    alerts,
    config,
    minutes,
    registry,
    start_service,
    wait_until,
)

from cems.registry import Registry
from cems.report import Period, influx_loader, load_report, write_report
from cems.service.compliance import send_action
from cems.service.mqtt import MqttSettings

pytestmark = pytest.mark.integration

__all__ = ["alerts", "registry"]  # fixtures, re-used


async def test_dispatch_feedback_send_back_close(
    registry: Registry, mosquitto: Any, influxdb: Any, influx_db: str, tmp_path: Path, alerts: Mqtt
) -> None:
    clock = FakeClock(T0)
    run = await start_service(
        registry, mosquitto, influxdb, influx_db, config(tmp_path, clock), f"cems-act-{uuid.uuid4().hex[:6]}"
    )
    pub = Mqtt(mosquitto.url)
    await asyncio.to_thread(pub.publish_docs, minutes(0, 2 * 60 + 9))
    opened = await asyncio.to_thread(wait_until, lambda: alerts.alerts("opened"))
    eid = opened[0][1]["event_id"]
    mqtt = MqttSettings(url=mosquitto.url)
    clock.t = T0 + timedelta(hours=2, minutes=30)

    async def act(**body: Any) -> dict[str, Any]:
        reply = await send_action(mqtt, registry.topics, {"event_id": eid, **body}, confirm_s=20)
        assert reply is not None
        return reply

    # out of order: dispatch before the acknowledgement; a note is required
    early = await act(action="dispatch", by="张三", note="请核查", deadline=(clock.t + timedelta(hours=4)).isoformat())
    assert early["result"] == "invalid_state" and early["case_status"] == "new"
    no_note = await act(action="ack", by="张三", note="  ")
    assert no_note["result"] == "bad_command" and "note" in no_note["detail"]
    ack = await act(action="ack", by="张三", note="已电话通知企业核查")
    assert (ack["result"], ack["case_status"], ack["at"]) == ("done", "acknowledged", clock.t.isoformat())
    past = await act(action="dispatch", by="张三", note="请核查", deadline=T0.isoformat())
    assert past["result"] == "bad_command" and "deadline" in past["detail"]
    nowhere = await act(action="dispatch", by="张三", note="请核查", deadline="2099-01-01T00:00", dispatched_to="999")
    assert nowhere["result"] == "bad_command"
    deadline = (clock.t + timedelta(hours=24)).isoformat()
    disp = await act(action="dispatch", by="张三", note="请核查超标原因并反馈", deadline=deadline)
    assert (disp["result"], disp["case_status"], disp["dispatched_to"], disp["deadline"]) == (
        "done",
        "dispatched",
        "130602",
        deadline,
    )
    closing_early = await act(action="close", by="张三", note="办结")
    assert closing_early["result"] == "invalid_state" and closing_early["case_status"] == "dispatched"
    clock.t += timedelta(hours=1)
    fb = await act(action="feedback", by="李四(竞秀区)", note="脱硫塔循环泵故障，已修复")
    assert fb["case_status"] == "answered"
    back = await act(action="send_back", by="张三", note="请补充现场照片")
    assert back["case_status"] == "dispatched" and back["deadline"] == deadline
    fb2 = await act(action="feedback", by="李四(竞秀区)", note="已补充照片")
    assert fb2["case_status"] == "answered"
    # the CLI sends the same command and reports the ingester's answer
    cli = [sys.executable, "-m", "cems", "events", "close", eid, "--by", "张三", "--note", "整改到位，办结"]
    done = await asyncio.to_thread(
        subprocess.run, [*cli, "--mqtt-url", mosquitto.url, "--wait", "20"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "case closed" in done.stdout, done.stderr
    again = await asyncio.to_thread(
        subprocess.run, [*cli, "--mqtt-url", mosquitto.url, "--wait", "20"], capture_output=True, text=True
    )
    assert again.returncode == 1 and "not possible on a case that is closed" in again.stderr

    # a redelivered command (same request id) is answered as before, not recorded twice
    raw = Mqtt(mosquitto.url)
    await asyncio.to_thread(raw.subscribe, "cems/cmd/v1/reply/dup-1")
    body = json.dumps({"action": "close", "event_id": eid, "by": "x", "note": "y", "reply_to": "dup-1"})
    for _ in range(2):
        raw.c.publish("cems/cmd/v1/event_action", body, qos=1).wait_for_publish(10)
    replies = await asyncio.to_thread(wait_until, lambda: len(raw.got) >= 2 and raw.got)
    assert [r["result"] for _, r in replies] == ["invalid_state", "invalid_state"]
    raw.close()

    # the alerts carry each action (a district can subscribe to its 督办单)
    dispatched = await asyncio.to_thread(wait_until, lambda: alerts.alerts("dispatch"))
    assert dispatched[0][0] == "cems/alerts/v1/130602/E001/hourly_exceedance"
    assert dispatched[0][1]["deadline"] == deadline and dispatched[0][1]["action_note"] == "请核查超标原因并反馈"
    await run.stop()

    with sqlite3.connect(tmp_path / "state" / "compliance.sqlite3") as c:
        hist = c.execute(
            "SELECT action, by, note, case_status FROM event_actions WHERE event_id=? ORDER BY seq", (eid,)
        )
        assert [tuple(r) for r in hist] == [
            ("ack", "张三", "已电话通知企业核查", "acknowledged"),
            ("dispatch", "张三", "请核查超标原因并反馈", "dispatched"),
            ("feedback", "李四(竞秀区)", "脱硫塔循环泵故障，已修复", "answered"),
            ("send_back", "张三", "请补充现场照片", "dispatched"),
            ("feedback", "李四(竞秀区)", "已补充照片", "answered"),
            ("close", "张三", "整改到位，办结", "closed"),
        ]
    acts = influxdb.query(influx_db, f"SELECT * FROM cems_event_action WHERE event_id = '{eid}'")
    assert [(a["action"], a["by"], a["case_status"]) for a in acts] == [
        ("ack", "张三", "acknowledged"),
        ("dispatch", "张三", "dispatched"),
        ("feedback", "李四(竞秀区)", "answered"),
        ("send_back", "张三", "dispatched"),
        ("feedback", "李四(竞秀区)", "answered"),
        ("close", "张三", "closed"),
    ]
    (ev,) = influxdb.query(influx_db, f"SELECT * FROM cems_event WHERE event_id = '{eid}'")
    assert (ev["case_status"], ev["dispatched_to"], ev["deadline"]) == ("closed", "130602", deadline)
    assert (ev["acked_by"], ev["ack_note"], ev["opened_at"]) == ("张三", "已电话通知企业核查", T0.isoformat())
    pub.close()

    # cems report: the case of the event (acknowledged 2 h 30 after the alert: beyond the 2-hour SLA)
    period = Period("month", f"{T0:%Y-%m}", T0.date().replace(day=1), T0.date() + timedelta(days=1))
    report = load_report(registry, period, influx_loader(influxdb.url, influx_db))
    assert report.cases is not None
    (case,) = [c for c in report.cases if c.event_id == eid]
    assert (case.ack_in_sla, case.acked_by, case.dispatched_to) == (False, "张三", "竞秀区")
    assert (case.answered_in_time, case.case_status, case.actions) == (True, "closed", 6)
    assert (case.enterprise, case.outlet) == ("示例热电有限公司", "1#机组排放口")
    assert case.closed_at == T0 + timedelta(hours=3, minutes=30)
    written = write_report(report, tmp_path / "report")
    assert tmp_path / "report" / "cases.csv" in written
    csv_text = (tmp_path / "report" / "cases.csv").read_text(encoding="utf-8-sig")
    assert eid in csv_text and "已签收" not in csv_text and ",否," in csv_text
    assert "电子督办" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
