"""The console's pure parts: who may see and do what (every role × action × whose event), the SLA shown in
the queue, the SVG chart."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from registries import one_outlet  # tests/registries.py

from cems.console import ROLE_ACTIONS, User, can_act, can_see
from cems.console._access import can_mark, sees_outlet
from cems.console._data import (
    HourPoint,
    Names,
    event_marks,
    mark_types,
    open_cases,
    present,
    present_marks,
    repair_pollutants,
    svg_chart,
    warning_in_force,
)
from cems.model import BEIJING
from cems.protocol.mark import MarkRecord
from cems.registry import parse_registry
from cems.service.compliance import ACTIONS

DUTY = User("d", "duty", None, "张三")
VIEWER = User("v", "viewer", None, "大气办")
DIST = User("j", "district", "130602", "竞秀区")
OTHER_DIST = User("l", "district", "130606", "莲池区")
ENT = User("e", "enterprise", "E001", "热电")
OTHER_ENT = User("f", "enterprise", "E002", "水泥")

EVENT = {"district": "130602", "enterprise": "E001", "dispatched_to": None}
DISPATCHED = {**EVENT, "dispatched_to": "130602"}
DISPATCHED_ELSEWHERE = {**EVENT, "dispatched_to": "130606"}


@pytest.mark.parametrize(
    ("user", "event", "sees"),
    [
        (DUTY, EVENT, True),
        (VIEWER, EVENT, True),
        (DIST, EVENT, True),
        (OTHER_DIST, EVENT, False),
        (OTHER_DIST, DISPATCHED_ELSEWHERE, True),  # a case handed to another district is that district's too
        (ENT, EVENT, True),
        (OTHER_ENT, EVENT, False),
        (User("x", "auditor", None, "?"), EVENT, False),  # an unknown role sees nothing
    ],
)
def test_who_sees_an_event(user: User, event: dict[str, str | None], sees: bool) -> None:
    assert can_see(user, event) is sees


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("user", [DUTY, VIEWER, DIST, OTHER_DIST, ENT, OTHER_ENT])
@pytest.mark.parametrize("event", [EVENT, DISPATCHED, DISPATCHED_ELSEWHERE])
def test_who_may_act(action: str, user: User, event: dict[str, str | None]) -> None:
    expected = {
        "duty": action in ("ack", "dispatch", "send_back", "close"),
        "viewer": False,
        "district": action == "feedback" and event["dispatched_to"] == user.scope,
        "enterprise": action == "feedback" and event["enterprise"] == user.scope,
    }[user.role]
    assert can_act(user, action, event) is expected
    assert not can_act(user, "approve", event)


def test_role_actions_are_actions() -> None:
    assert set().union(*ROLE_ACTIONS.values()) <= set(ACTIONS)


NOW = datetime(2026, 11, 30, 10, 0, tzinfo=BEIJING)


def row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1", "type": "hourly_exceedance", "status": "open", "mn": "MN0001", "enterprise": "E001",
        "district": "130602", "pollutant": "a21026", "start": (NOW - timedelta(hours=2)).isoformat(), "end": None,
        "profile": None, "opened_at": (NOW - timedelta(minutes=90)).isoformat(), "acked_by": None, "acked_at": None,
        "ack_note": None, "escalated_at": None, "case_status": "new", "dispatched_to": None, "dispatched_at": None,
        "deadline": None, "hours": 1.0, "peak": 50.0, "limit": 35.0, "ref_o2": 6.0,
    }  # fmt: skip
    return {**base, **kw}


def test_present_names_and_sla() -> None:
    names = Names(parse_registry(one_outlet()))
    p = present(row(), names, NOW, 2.0)
    assert (p["enterprise_name"], p["outlet_name"]) == ("示例热电有限公司", "1#机组排放口")
    assert p["district_name"] == "竞秀区"
    assert (p["pollutant_name"], p["value"], p["limit_text"]) == ("二氧化硫", "50", "35")
    assert (p["sla_text"], p["overdue"]) == ("剩余 0小时30分", False)
    late = present(row(opened_at=(NOW - timedelta(hours=2, minutes=5)).isoformat()), names, NOW, 2.0)
    assert (late["sla_text"], late["overdue"]) == ("超时 0小时05分", True)
    acked = present(row(acked_at=NOW.isoformat(), case_status="acknowledged"), names, NOW, 2.0)
    assert (acked["sla_text"], acked["overdue"]) == ("", False)
    overdue_answer = row(
        acked_at=NOW.isoformat(), case_status="dispatched", deadline=(NOW - timedelta(minutes=1)).isoformat()
    )
    assert present(overdue_answer, names, NOW, 2.0)["overdue"] is True


def test_the_queue_leaves_out_closed_cases_and_retracted_events() -> None:
    rows = [row(event_id="a"), row(event_id="b", case_status="closed"), row(event_id="c", status="retracted")]
    assert [r["event_id"] for r in open_cases(rows)] == ["a"]


def test_chart_bars_and_limit() -> None:
    pts = [HourPoint(NOW + timedelta(hours=i), v, v > 35) for i, v in enumerate([20.0, 50.0, 45.0])]
    pts.append(HourPoint(NOW + timedelta(hours=3), None, False))  # an invalid hour: no bar
    svg = str(svg_chart(pts, 35.0))
    assert svg.count('class="bar over"') == 2 and svg.count('class="bar"') == 1
    assert 'class="limit"' in svg and "限值 35" in svg
    assert "无小时数据" in str(svg_chart([], 35.0))


def warning(level: int, start: datetime, end: datetime | None = None) -> dict[str, object]:
    return {
        "type": "warning_level", "status": "open" if end is None else "closed", "start": start.isoformat(),
        "end": end.isoformat() if end else None, "peak": float(level), "pollutant": "orange",
    }  # fmt: skip


def test_the_warning_in_force() -> None:
    assert warning_in_force([], NOW) is None
    orange = warning(3, NOW - timedelta(hours=5), NOW + timedelta(hours=19))  # declared end still ahead
    w = warning_in_force([orange], NOW)
    assert w is not None and (w["level"], w["label"]) == (3, "橙色预警")
    later = warning(4, NOW + timedelta(hours=1))  # announced, not yet in force
    w = warning_in_force([orange, later], NOW)
    assert w is not None and w["level"] == 3
    w = warning_in_force([orange, later], NOW + timedelta(hours=2))
    assert w is not None and w["label"] == "红色预警"
    assert warning_in_force([orange], NOW + timedelta(days=1)) is None  # ended
    assert warning_in_force([orange, warning(0, NOW - timedelta(hours=1))], NOW) is None  # lifted


# -- marks (issue 14): who may submit, which types an outlet offers, how records are shown ---------------------


@pytest.mark.parametrize(
    ("user", "enterprise", "may"),
    [
        (ENT, "E001", True),
        (OTHER_ENT, "E001", False),  # another enterprise's outlet
        (DUTY, "E001", False),  # the bureau enters marks with `cems marks … --on-behalf`, not here
        (DIST, "E001", False),
        (VIEWER, "E001", False),
    ],
)
def test_who_may_mark(user: User, enterprise: str, may: bool) -> None:
    assert can_mark(user, enterprise) is may


def test_who_sees_an_outlets_marks() -> None:
    assert sees_outlet(DUTY, "E001", "130602") and sees_outlet(VIEWER, "E002", "130606")
    assert sees_outlet(DIST, "E001", "130602") and not sees_outlet(DIST, "E002", "130606")
    assert sees_outlet(ENT, "E001", "130602") and not sees_outlet(ENT, "E002", "130602")


def test_an_outlet_offers_its_industrys_mark_types_and_the_device_marks() -> None:
    reg = parse_registry(one_outlet())
    info = reg.outlet("MN0001")
    assert info is not None
    marks, decls = mark_types(reg.mark_catalog, info)
    codes = {t.code for t in marks}
    # coal power (coal_power_ultra_low): its 1 + N types and the device marks, no other industry's
    assert {"cp_fault", "cp_startup", "maintenance", "calibration"} <= codes
    assert not any(c.startswith(("wi_", "ce_", "pa_")) for c in codes)
    assert all(reg.mark_catalog.allowed(t.code, "coal_power") is not None for t in marks)
    assert [t.code for t in decls] == ["production_stop"] and "production_stop" not in codes
    pols = dict(repair_pollutants(info, datetime(2026, 11, 20, 9, tzinfo=BEIJING)))
    assert {"a21026", "a21002", "a34013"} <= set(pols) and pols["a21026"] == "二氧化硫"


def record(rid: str, kind: str = "mark", **kw: object) -> MarkRecord:
    t = datetime(2026, 11, 20, 8, tzinfo=BEIJING)
    base: dict[str, object] = {
        "record_id": rid,
        "kind": kind,
        "mn": "MN0001",
        "type": "cp_fault",
        "start": t,
        "end": t + timedelta(hours=3),
        "reason": "引风机跳闸",
        "attachment": "",
        "submitter": "王工",
        "received_at": t + timedelta(hours=int(rid[-1])),
        "via": "cems/command/v1/mark",
    }
    return MarkRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_records_as_shown_newest_first_with_their_status() -> None:
    catalog = parse_registry(one_outlet()).mark_catalog
    recs = [
        record("r1"),
        record("r2", "declaration", type="production_stop", status="late", note="逾期申报"),
        record(
            "r3", "repair", type="repair", pollutant="a21026", value=28.5, end=record("x1").start + timedelta(hours=1)
        ),
        record("r4", "withdrawal", type="withdrawal", target="r1", reason="标记有误"),
    ]
    shown = present_marks(recs, catalog)
    assert [r["record_id"] for r in shown] == ["r4", "r3", "r2", "r1"]
    by = {r["record_id"]: r for r in shown}
    assert by["r1"]["status"] == "已撤回（r4）" and not by["r1"]["withdrawable"]
    assert by["r1"]["what"] == catalog.types["cp_fault"].name and by["r1"]["period"] == "11-20 08:00 — 11-20 11:00"
    assert by["r2"]["status"] == "逾期，无效力" and not by["r2"]["withdrawable"]
    assert (
        by["r3"]["what"] == "二氧化硫 修约为 28.5" and by["r3"]["withdrawable"] and by["r3"]["period"] == "11-20 08时"
    )
    assert by["r4"]["what"] == "撤回 r1" and not by["r4"]["withdrawable"]
    # an event shows the records its `marks` field names, and their withdrawals
    assert [r.record_id for r in event_marks(recs, "r1,r9")] == ["r1", "r4"]
    assert event_marks(recs, None) == [] and [r.record_id for r in event_marks(recs, "r3")] == ["r3"]
