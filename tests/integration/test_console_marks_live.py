"""An enterprise's marks (标记), stop declarations (停产申报), repairs (修约) and withdrawals from the duty console,
through a real ``cems run`` (subprocess) over the session's Mosquitto and InfluxDB: each goes on the bureau's
command topic with the enterprise user as submitter, the ingester decides (accepted / late / refused with its
reason) and the page shows its answer; accepted records are stored in ``cems_mark`` and listed on the page."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_compliance_live import wait_until  # same directory (pytest prepend import mode)
from test_console_browser import _spawn, _stop, _wait_http
from test_console_web import PASSWORD, TWO_DISTRICTS, csrf
from test_reliability import _free_port

from cems.console import ConsoleSettings, UserStore, create_app
from cems.model import BEIJING
from cems.protocol.mark import MarkRecord
from cems.registry import parse_registry
from cems.service.compliance import list_marks
from cems.service.mqtt import MqttSettings

pytestmark = pytest.mark.integration


@pytest.fixture
def console(tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str) -> Iterator[tuple[TestClient, Any]]:
    reg = tmp_path / "registry.toml"
    reg.write_text(TWO_DISTRICTS, encoding="utf-8")
    env = {**os.environ, "CEMS_STATE_DIR": str(tmp_path / "state")}
    health = _free_port()
    log = tmp_path / "run.log"
    run = _spawn(
        ["run", "--config", str(reg), "--mqtt-url", mosquitto.url, "--influx-url", influxdb.url, "--influx-db",
         influx_db, "--client-id", f"cems-cm-{uuid.uuid4().hex[:6]}", "--health-port", str(health)], env, log,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{health}/healthz", run, log)
        users = UserStore(tmp_path / "console" / "users.sqlite3")
        users.add("qiye2", PASSWORD, "enterprise", "E002", "莲池水泥")
        settings = ConsoleSettings(
            registry=parse_registry(TWO_DISTRICTS),
            influx_url=influxdb.url,
            influx_db=influx_db,
            mqtt=MqttSettings(url=mosquitto.url, client_id="cems-console-test"),
            users_file=users.path,
            secret_key="test-secret-key-test-secret-key",
            secure_cookies=False,
            confirm_s=20,
        )
        c = TestClient(create_app(settings), follow_redirects=False)
        r = c.post("/login", data={"username": "qiye2", "password": PASSWORD, "csrf_token": csrf(c)})
        assert r.status_code == 303
        yield c, settings
    finally:
        _stop(run)


def submit(c: TestClient, **form: str) -> str:
    """Post a marks form; the flash of the page it leads to (the ingester's answer)."""
    r = c.post("/marks", data={"mn": "MN0002", "csrf_token": csrf(c, "/marks"), **form})
    assert r.status_code == 303 and r.headers["location"] == "/marks", r.text
    m = re.search(r'id="flash">([^<]*)<', c.get("/marks").text)
    assert m
    return m.group(1)


def local(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M")


def test_an_enterprise_marks_declares_repairs_and_withdraws(
    console: tuple[TestClient, ConsoleSettings], influxdb: Any, influx_db: str
) -> None:
    c, settings = console
    hour = datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0)
    mark = {
        "kind": "mark",
        "type": "cp_fault",
        "from": local(hour - timedelta(hours=3)),
        "to": local(hour - timedelta(hours=1)),
    }
    flash = submit(c, **mark, reason="引风机跳闸", attachment="DOC-118", request_id="req-mark-0001")
    assert flash.startswith("工况标记已受理：记录 "), flash
    mark_id = flash.split("记录 ")[1].strip()
    # the same form sent again (a browser's resubmit): stored once
    assert "重复提交" in submit(c, **mark, reason="引风机跳闸", request_id="req-mark-0001")
    # a period already final: refused with the ingester's reason
    old = hour - timedelta(days=400)
    flash = submit(
        c, kind="mark", type="cp_fault", **{"from": local(old), "to": local(old + timedelta(hours=2))}, reason="补报"
    )
    assert "未被受理：已过标记/修约期限" in flash and "mark_too_late" in flash, flash
    # a stop declaration of a past period: kept, without effect (DOMAIN.md §5/§9)
    old = hour - timedelta(days=60)  # (within the page's look-back)
    flash = submit(
        c,
        kind="declaration",
        type="production_stop",
        **{"from": local(old), "to": local(old + timedelta(days=2))},
        reason="停产检修",
    )
    assert flash.startswith("停产申报逾期申报：记录已保留，不产生效力"), flash
    flash = submit(
        c, kind="repair", pollutant="a21026", hour=local(hour - timedelta(hours=2)), value="28.5", reason="比对监测修约"
    )
    assert flash.startswith("修约已受理"), flash
    assert submit(c, kind="withdrawal", target=mark_id, reason="标记有误").startswith("撤回已受理")
    assert "没有可撤回的这条记录" in submit(c, kind="withdrawal", target=mark_id, reason="再撤")

    # stored by the ingester in cems_mark, with the enterprise user as submitter, sent on the command topic
    def all_four() -> list[MarkRecord] | None:
        recs = list_marks(influxdb.url, influx_db, mn="MN0002")
        return recs if len(recs) >= 4 else None

    recs: list[MarkRecord] = wait_until(all_four)
    assert sorted(r.kind for r in recs) == ["declaration", "mark", "repair", "withdrawal"]
    stored = next(r for r in recs if r.record_id == mark_id)
    assert (stored.type, stored.reason, stored.attachment, stored.submitter) == (
        "cp_fault",
        "引风机跳闸",
        "DOC-118",
        "莲池水泥（企业 qiye2）",
    )
    assert stored.via == f"{settings.registry.topics.command_prefix}/mark" and stored.client == "cems-console"
    assert next(r for r in recs if r.kind == "declaration").status == "late"
    # the page lists them with their status
    page = c.get("/marks").text
    row = re.search(rf'<tr data-record="{mark_id}">.*?</tr>', page, re.S)
    assert row and "已撤回" in row.group(0) and "莲池水泥（企业 qiye2）" in row.group(0)
    assert "二氧化硫 修约为 28.5" in page and "逾期，无效力" in page
