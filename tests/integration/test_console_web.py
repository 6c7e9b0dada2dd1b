"""The duty console through Starlette's TestClient (httpx) over the real InfluxDB: login, throttling, CSRF on
every form, security headers and cookies, and every permission rule (who sees which event, who may take
which action). The actions' round trip through the ingester is in tests/e2e/test_console_browser.py."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py
from starlette.testclient import TestClient

from cems.console import ConsoleSettings, User, UserStore, create_app
from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import Registry, parse_registry
from cems.service.mqtt import MqttSettings

pytestmark = pytest.mark.integration

TWO_DISTRICTS = one_outlet(
    city="ack_sla_hours = 2.0\n",
    tail='[[district]]\ncode = "130606"\nname = "莲池区"\n'
    '[[enterprise]]\nid = "E002"\nname = "莲池水泥有限公司"\ndistrict = "130606"\n'
    '[[enterprise.outlet]]\nmn = "MN0002"\nname = "窑尾排放口"\nprofile = "coal_power_ultra_low"\n'
    'password = "654321"\n',
)
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=BEIJING)
PASSWORD = "correct horse battery"


def event_point(eid: str, mn: str, ent: str, dist: str, start: datetime, **fields: str) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in fields.items())
    return (
        f"cems_event,type=hourly_exceedance,mn={mn},enterprise={ent},district={dist},pollutant=a21026 "
        f'event_id="{eid}",status="open",start="{start.isoformat()}",hours=2.0,peak=50.0,limit=35.0,'
        f'opened_at="{start.isoformat()}"{extra} {int(start.timestamp() * 1000)}'
    )


@pytest.fixture
def registry() -> Registry:
    return parse_registry(TWO_DISTRICTS)


@pytest.fixture
def setup(registry: Registry, influxdb: Any, influx_db: str, mosquitto: Any, tmp_path: Path) -> Iterator[Any]:
    start1 = NOW - timedelta(hours=3)  # unacknowledged for 3 h: overdue (SLA 2 h)
    start2 = NOW - timedelta(hours=1)
    lines = [
        event_point("e1000000000000a1", "MN0001", "E001", "130602", start1),
        event_point("e2000000000000b2", "MN0002", "E002", "130606", start2, acked_by="张三", acked_at=NOW.isoformat(),
                    case_status="dispatched", dispatched_to="130606", deadline=(NOW + timedelta(hours=20)).isoformat()),
        # hourly values of the first event (H-5 .. H-1): two exceed
        *[
            f"cems_hourly,mn=MN0001,pollutant=a21026,enterprise=E001,district=130602,source=minute "
            f"zs_avg={v},avg={v / 1.25},exceeds={'true' if v > 35 else 'false'},limit=35 "
            f"{int((NOW - timedelta(hours=h)).timestamp() * 1000)}"
            for h, v in [(5, 20.0), (4, 22.0), (3, 50.0), (2, 45.0), (1, 25.0)]
        ],
    ]  # fmt: skip
    influxdb.write(influx_db, lines, precision="ms")
    users = UserStore(tmp_path / "console" / "users.sqlite3")
    users.add("duty", PASSWORD, "duty", None, "张三")
    users.add("jingxiu", PASSWORD, "district", "130602", "竞秀区分局")
    users.add("lianchi", PASSWORD, "district", "130606", "莲池区分局")
    users.add("qiye2", PASSWORD, "enterprise", "E002", "莲池水泥")
    users.add("viewer", PASSWORD, "viewer", None, "大气办")
    settings = ConsoleSettings(
        registry=registry,
        influx_url=influxdb.url,
        influx_db=influx_db,
        mqtt=MqttSettings(url=mosquitto.url, client_id="cems-console-test"),
        users_file=users.path,
        secret_key="test-secret-key-test-secret-key",
        secure_cookies=False,
        confirm_s=0.5,
        clock=lambda: NOW,
    )
    yield settings, users


def client(settings: ConsoleSettings) -> TestClient:
    return TestClient(create_app(settings), follow_redirects=False)


def csrf(c: TestClient, path: str = "/login") -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', c.get(path).text)
    assert m, path
    return m.group(1)


def login(settings: ConsoleSettings, user: str, password: str = PASSWORD) -> TestClient:
    c = client(settings)
    r = c.post("/login", data={"username": user, "password": password, "csrf_token": csrf(c)})
    assert r.status_code == 303, r.text
    return c


def test_login_required_and_wrong_passwords_are_throttled(setup: Any) -> None:
    settings, _ = setup
    c = client(settings)
    assert c.get("/").headers["location"] == "/login"
    assert c.get("/events/e1000000000000a1").status_code == 303
    assert c.get("/queue/rows").status_code == 401
    for _ in range(5):
        r = c.post("/login", data={"username": "duty", "password": "wrong password", "csrf_token": csrf(c)})
        assert r.status_code == 401 and "用户名或密码错误" in r.text
    # locked now, even with the right password
    r = c.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": csrf(c)})
    assert r.status_code == 429
    # (another user from another address is not affected: the throttle is per name and per address)
    other = TestClient(create_app(settings), follow_redirects=False, client=("10.0.0.9", 5000))
    r = other.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf(other)})
    assert r.status_code == 303


def test_csrf_is_required_on_every_form(setup: Any) -> None:
    settings, _ = setup
    c = client(settings)
    assert c.post("/login", data={"username": "duty", "password": PASSWORD}).status_code == 403
    assert c.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": "x"}).status_code == 403
    c = login(settings, "duty")
    token = csrf(c, "/events/e1000000000000a1")
    for data in ({}, {"csrf_token": "forged"}):
        r = c.post("/events/e1000000000000a1/action", data={"action": "ack", "note": "看到了", **data})
        assert r.status_code == 403
        assert c.post("/logout", data=data).status_code == 403
    # the token is bound to the session: another session's token is refused
    other = login(settings, "viewer")
    r = other.post("/logout", data={"csrf_token": token})
    assert r.status_code == 403
    assert c.post("/logout", data={"csrf_token": token}).status_code == 303
    assert c.get("/").status_code == 303  # logged out


def test_headers_and_cookie(setup: Any) -> None:
    settings, _ = setup
    c = client(settings)
    r = c.get("/login")
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'self'" in r.headers["content-security-policy"]
    r = c.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": csrf(c)})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    secure = client(ConsoleSettings(**{**settings.__dict__, "secure_cookies": True}))
    r = secure.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": csrf(secure)})
    assert "; secure" in r.headers["set-cookie"].lower()


def queue_ids(c: TestClient) -> set[str]:
    return set(re.findall(r'data-event="([0-9a-f]+)"', c.get("/queue/rows").text))


def test_who_sees_what(setup: Any, influxdb: Any, influx_db: str) -> None:
    settings, _ = setup
    both = {"e1000000000000a1", "e2000000000000b2"}
    assert queue_ids(login(settings, "duty")) == both
    assert queue_ids(login(settings, "viewer")) == both
    assert queue_ids(login(settings, "jingxiu")) == {"e1000000000000a1"}
    assert queue_ids(login(settings, "lianchi")) == {"e2000000000000b2"}
    assert queue_ids(login(settings, "qiye2")) == {"e2000000000000b2"}
    # an event of another district/enterprise does not exist for them
    assert login(settings, "jingxiu").get("/events/e2000000000000b2").status_code == 404
    assert login(settings, "qiye2").get("/events/e1000000000000a1").status_code == 404
    page = login(settings, "duty").get("/").text
    # names, value against the limit, the overdue SLA in red (class), the dispatched case
    assert "示例热电有限公司" in page and "1#机组排放口" in page and "竞秀区" in page and "50 / 35" in page
    row = re.search(r'<tr class="overdue" data-event="e1000000000000a1">.*?</tr>', page, re.S)
    assert row and "超时 1小时00分" in row.group(0)
    assert "督办中 → 莲池区" in page
    assert "当前无重污染天气预警" in page
    set_at = NOW - timedelta(hours=2)
    influxdb.write(
        influx_db,
        "cems_event,type=warning_level,mn=city,enterprise=city,district=city,pollutant=orange "
        f'event_id="w1",status="open",start="{set_at.isoformat()}",hours=0.0,peak=3.0 {int(set_at.timestamp() * 1000)}',
        precision="ms",
    )
    assert "当前重污染天气预警：<b>橙色预警</b>" in login(settings, "qiye2").get("/").text


def forms(c: TestClient, eid: str) -> set[str]:
    return set(re.findall(r'id="form-([a-z_]+)"', c.get(f"/events/{eid}").text))


def test_who_may_do_what(setup: Any) -> None:
    settings, _ = setup
    assert forms(login(settings, "duty"), "e1000000000000a1") == {"ack", "dispatch", "send_back", "close"}
    assert forms(login(settings, "viewer"), "e1000000000000a1") == set()
    # a district answers only what was dispatched to it
    assert forms(login(settings, "jingxiu"), "e1000000000000a1") == set()
    assert forms(login(settings, "lianchi"), "e2000000000000b2") == {"feedback"}
    assert forms(login(settings, "qiye2"), "e2000000000000b2") == {"feedback"}
    denied = [
        ("viewer", "e1000000000000a1", "ack"),
        ("jingxiu", "e1000000000000a1", "ack"),
        ("jingxiu", "e1000000000000a1", "feedback"),  # not dispatched to it
        ("jingxiu", "e2000000000000b2", "feedback"),  # another district's
        ("lianchi", "e2000000000000b2", "close"),
        ("qiye2", "e2000000000000b2", "dispatch"),
        ("duty", "e2000000000000b2", "feedback"),
        ("duty", "e1000000000000a1", "approve"),
    ]
    for user, eid, action in denied:
        c = login(settings, user)
        r = c.post(f"/events/{eid}/action", data={"action": action, "note": "x", "csrf_token": csrf(c, "/")})
        assert r.status_code == 403 and "无权" in r.text, (user, eid, action)


def test_an_action_needs_a_note_and_shows_when_the_ingester_does_not_confirm(setup: Any) -> None:
    settings, _ = setup
    c = login(settings, "duty")
    tok = csrf(c, "/")
    r = c.post("/events/e1000000000000a1/action", data={"action": "ack", "note": " ", "csrf_token": tok})
    assert r.status_code == 303
    assert "请填写意见" in c.get("/events/e1000000000000a1").text
    # no ingester listens here: the action is sent, and the page says it was not confirmed
    r = c.post("/events/e1000000000000a1/action", data={"action": "ack", "note": "已电话通知", "csrf_token": tok})
    assert "未在规定时间内确认" in c.get(r.headers["location"]).text


def test_event_page_chart_and_silent_outlets(setup: Any, influxdb: Any, influx_db: str) -> None:
    settings, _ = setup
    c = login(settings, "duty")
    page = c.get("/events/e1000000000000a1").text
    assert page.count('class="bar over"') == 2 and page.count('class="bar"') == 3
    assert 'class="limit"' in page and "限值 35" in page
    assert "尚无处理记录" in page
    assert "当前没有数据中断" in c.get("/silent").text
    start = NOW - timedelta(hours=4)
    influxdb.write(
        influx_db,
        f"cems_event,type=data_interruption,mn=MN0002,enterprise=E002,district=130606 "
        f'event_id="d1",status="open",start="{start.isoformat()}",hours=4.0 {int(start.timestamp() * 1000)}',
        precision="ms",
    )
    assert "窑尾排放口" in c.get("/silent").text
    assert "窑尾排放口" not in login(settings, "jingxiu").get("/silent").text


def test_disabling_a_user_ends_its_session(setup: Any) -> None:
    settings, users = setup
    c = login(settings, "jingxiu")
    assert c.get("/").status_code == 200
    users.disable("jingxiu")
    assert c.get("/").status_code == 303
    r = c.post("/login", data={"username": "jingxiu", "password": PASSWORD, "csrf_token": csrf(c)})
    assert r.status_code == 401
    users.passwd("jingxiu", "another long password")
    c = login(settings, "jingxiu", "another long password")
    assert c.get("/").status_code == 200
    # a password change ends the sessions that began before it (a copied cookie too)
    other = login(settings, "lianchi")
    copied = client(settings)
    copied.cookies.update(other.cookies)
    assert copied.get("/").status_code == 200
    users.passwd("lianchi", "a brand new password")
    assert other.get("/").status_code == 303 and copied.get("/").status_code == 303


def test_accounts(tmp_path: Path) -> None:
    users = UserStore(tmp_path / "users.sqlite3")
    with pytest.raises(CemsError, match="at least 10"):
        users.add("a", "short", "duty", None, None)
    with pytest.raises(CemsError, match="role must be"):
        users.add("a", PASSWORD, "admin", None, None)
    with pytest.raises(CemsError, match="needs --scope"):
        users.add("a", PASSWORD, "district", None, None)
    with pytest.raises(CemsError, match="takes no --scope"):
        users.add("a", PASSWORD, "viewer", "130602", None)
    users.add("a", PASSWORD, "district", "130602", "竞秀区")
    with pytest.raises(CemsError, match="exists"):
        users.add("a", PASSWORD, "duty", None, None)
    with sqlite3.connect(users.path) as c:
        (stored,) = c.execute("SELECT password_hash FROM users").fetchone()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert users.authenticate("a", PASSWORD) == User("a", "district", "130602", "竞秀区")
    assert users.authenticate("a", "wrong password") is None and users.authenticate("nobody", PASSWORD) is None
    assert oct(users.path.stat().st_mode & 0o777) == "0o600"


def test_supervision_page(setup: Any) -> None:
    settings, _ = setup
    # November so far: MN0001 sent 5 of its expected hours, MN0002 none: both districts below 90 %
    page = login(settings, "duty").get("/supervision").text
    assert "2026年11月" in page and "竞秀区" in page and "莲池区" in page and "传输有效率" in page
    own = login(settings, "jingxiu").get("/supervision").text
    assert "竞秀区" in own and "莲池区" not in own


def test_logout_ends_the_session_on_the_server(setup: Any) -> None:
    settings, users = setup
    c = login(settings, "duty")
    copied = client(settings)
    copied.cookies.update(c.cookies)  # a cookie copied off the machine
    assert copied.get("/").status_code == 200
    with sqlite3.connect(users.path) as db:
        assert db.execute("SELECT username FROM sessions").fetchall() == [("duty",)]
    assert c.post("/logout", data={"csrf_token": csrf(c, "/")}).status_code == 303
    assert copied.get("/").status_code == 303 and copied.get("/queue/rows").status_code == 401
    with sqlite3.connect(users.path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
    # ending the user's sessions on the server (what passwd and disable do) refuses its cookie
    fresh = login(settings, "duty")
    assert fresh.get("/").status_code == 200
    assert users.end_sessions("duty") == 1
    assert fresh.get("/").status_code == 303
    # and an expired session is refused even though its cookie still verifies
    c = login(settings, "viewer")
    with sqlite3.connect(users.path) as db:
        db.execute("UPDATE sessions SET expires_ts = 0 WHERE username = 'viewer'")
    assert c.get("/").status_code == 303


def test_the_login_throttle_survives_a_restart(setup: Any) -> None:
    settings, _ = setup
    c = client(settings)
    for _ in range(5):
        r = c.post("/login", data={"username": "duty", "password": "wrong password", "csrf_token": csrf(c)})
        assert r.status_code == 401
    restarted = client(settings)  # a new app on the same accounts file: the console restarted
    r = restarted.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": csrf(restarted)})
    assert r.status_code == 429
    # after the window the failures are forgotten
    later = client(ConsoleSettings(**{**settings.__dict__, "failure_window_s": 0.001}))
    r = later.post("/login", data={"username": "duty", "password": PASSWORD, "csrf_token": csrf(later)})
    assert r.status_code == 303


def mark_forms(c: TestClient) -> set[str]:
    return set(re.findall(r'id="form-([a-z]+-MN\d+)"', c.get("/marks").text))


def test_only_an_enterprise_marks_and_only_its_own_outlets(setup: Any) -> None:
    settings, _ = setup
    qiye = login(settings, "qiye2")
    page = qiye.get("/marks").text
    assert mark_forms(qiye) == {"mark-MN0002", "declaration-MN0002", "repair-MN0002"}
    assert "窑尾排放口" in page and "1#机组排放口" not in page  # another enterprise's outlet is not listed
    # its outlet's industry (coal power) only: cp_* and the device marks, no waste-incineration type
    form = re.search(r'id="form-mark-MN0002".*?</form>', page, re.S)
    assert form and 'value="cp_fault"' in form.group(0) and 'value="wi_fault"' not in form.group(0)
    for user in ("duty", "viewer", "lianchi"):  # they see the outlets' marks, read-only
        assert mark_forms(login(settings, user)) == set(), user
    assert "1#机组排放口" in login(settings, "duty").get("/marks").text
    assert "1#机组排放口" not in login(settings, "lianchi").get("/marks").text
    mark = {"kind": "mark", "type": "cp_fault", "from": "2026-11-30T06:00", "to": "2026-11-30T08:00", "reason": "跳闸"}
    denied = [
        ("qiye2", "MN0001"),
        ("qiye2", "NOSUCHMN"),
        ("lianchi", "MN0002"),
        ("viewer", "MN0002"),
        ("duty", "MN0002"),
    ]
    for user, mn in denied:  # crafted requests: the server checks, the hidden form is not the guard
        c = login(settings, user)
        r = c.post("/marks", data={**mark, "mn": mn, "csrf_token": csrf(c, "/marks")})
        assert r.status_code == 403 and "无权" in r.text, (user, mn)
    # CSRF on the marks form
    assert qiye.post("/marks", data={**mark, "mn": "MN0002"}).status_code == 403
    assert qiye.post("/marks", data={**mark, "mn": "MN0002", "csrf_token": "forged"}).status_code == 403
    # refused before sending: another industry's type, no reason, end before start, a pollutant without a limit
    tok = csrf(qiye, "/marks")
    for bad, words in [
        ({"type": "wi_fault"}, "不能使用此类型"),
        ({"reason": " "}, "请填写原因"),
        ({"to": "2026-11-30T05:00"}, "结束时间须晚于开始时间"),
        ({"from": "yesterday"}, "格式不正确"),
        ({"kind": "repair", "pollutant": "a99999", "hour": "2026-11-30T06:00", "value": "1"}, "没有此因子的限值"),
        ({"kind": "repair", "pollutant": "a21026", "hour": "2026-11-30T06:00", "value": "-1"}, "非负数"),
        ({"kind": "withdrawal", "target": ""}, "请指定要撤回的记录"),
        ({"kind": "approve"}, "未知的提交类型"),
    ]:
        r = qiye.post("/marks", data={**mark, "mn": "MN0002", "csrf_token": tok, **bad})
        assert r.status_code == 303
        assert words in qiye.get("/marks").text, bad
    # no ingester listens here: sent, and the page says there was no answer
    qiye.post("/marks", data={**mark, "mn": "MN0002", "csrf_token": tok})
    assert "未在规定时间内答复" in qiye.get("/marks").text


def test_the_event_page_shows_the_marks_that_touched_it(setup: Any, influxdb: Any, influx_db: str) -> None:
    from cems.protocol.mark import MarkRecord
    from cems.sinks.lineprotocol import mark_line

    settings, _ = setup
    start = NOW - timedelta(hours=3)
    rec = MarkRecord(
        "m1a2b3c4d5e6f7a8", "mark", "MN0001", "cp_fault", start, start + timedelta(hours=2), "引风机跳闸", "DOC-1",
        "示例热电（企业 qiye1）", NOW - timedelta(hours=1), "cems/command/v1/mark",
    )  # fmt: skip
    other = MarkRecord(**{**{f: getattr(rec, f) for f in rec.__slots__}, "record_id": "m9", "reason": "别的"})
    influxdb.write(influx_db, [mark_line(rec, "E001", "130602"), mark_line(other, "E001", "130602")], precision="ms")
    assert "引风机跳闸" not in login(settings, "duty").get("/events/e1000000000000a1").text
    influxdb.write(
        influx_db, event_point("e1000000000000a1", "MN0001", "E001", "130602", start, marks="m1a2b3c4d5e6f7a8"),
        precision="ms",
    )  # fmt: skip
    page = login(settings, "duty").get("/events/e1000000000000a1").text
    marks = re.search(r'id="event-marks".*?</table>', page, re.S)
    assert marks, page
    assert "m1a2b3c4d5e6f7a8" in marks.group(0) and "引风机跳闸" in marks.group(0) and "已受理" in marks.group(0)
    assert "别的" not in marks.group(0)  # only the records the event names
    assert "<form" not in marks.group(0)  # read-only
