"""The report's 电子督办 section (issue 19): for each event of the period, when it was acknowledged (within the
city's ``ack_sla_hours``? seed 000: 2 hours), dispatched to whom with which deadline, answered (in time?) and
closed — from ``cems_event`` and ``cems_event_action`` (docs/influxdb.md). Loading, building (pure) and
rendering (HTML section, ``cases.csv``)."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from cems.model import BEIJING, POLLUTANT_NAMES
from cems.registry import Registry

Query = Callable[[str, str | None], list[dict[str, Any]]]

CASES_CSV: Final = "cases.csv"
#: Events that are settings or grid signals, not cases of the monitoring room.
NOT_CASES: Final = frozenset({"warning_level", "grid_hotspot"})
_CASE_ZH: Final = {
    "new": "待签收",
    "acknowledged": "已签收",
    "dispatched": "督办中",
    "answered": "已反馈",
    "closed": "已办结",
}


@dataclass(frozen=True, slots=True)
class CaseRow:
    event_id: str
    type: str
    district: str
    enterprise: str
    outlet: str
    pollutant: str
    start: datetime
    opened_at: datetime | None
    acked_at: datetime | None
    acked_by: str
    #: acknowledged within the SLA after the alert; ``None``: not acknowledged and the SLA not yet over
    ack_in_sla: bool | None
    dispatched_to: str
    deadline: datetime | None
    answered_at: datetime | None
    #: the first answer by the (first) deadline; ``None``: not dispatched, or not answered and not yet due
    answered_in_time: bool | None
    closed_at: datetime | None
    case_status: str
    actions: int


def _t(v: Any) -> datetime | None:
    if not v:
        return None
    t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def load_case_input(query: Query, start: datetime, end: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events that started in ``[start, end)`` and every action taken on an event since ``start``."""
    a, b = int(start.timestamp() * 1e9), int(end.timestamp() * 1e9)
    events = query(f"SELECT * FROM cems_event WHERE time >= {a} AND time < {b}", None)
    actions = query(f"SELECT * FROM cems_event_action WHERE time >= {a}", None)
    return events, actions


def build_cases(
    registry: Registry, events: Sequence[dict[str, Any]], actions: Sequence[dict[str, Any]], until: datetime
) -> tuple[CaseRow, ...]:
    """One row per event (oldest first); times after ``until`` are not judged yet."""
    sla = timedelta(hours=registry.city.ack_sla_hours)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for a in actions:
        by_event.setdefault(str(a.get("event_id")), []).append(a)
    districts = {d.code: d.name for d in registry.district}
    enterprises = {e.id: e.name for e in registry.enterprise}
    rows: list[CaseRow] = []
    for e in events:
        if e.get("type") in NOT_CASES or e.get("status") == "retracted" or not e.get("event_id"):
            continue
        eid = str(e["event_id"])
        acts = sorted(by_event.get(eid, []), key=lambda a: str(a.get("at") or a.get("time")))
        opened = _t(e.get("opened_at")) or _t(e.get("start"))
        acked = _t(e.get("acked_at"))
        if acked is not None and opened is not None:
            ack_ok: bool | None = acked - opened <= sla
        elif opened is not None and opened + sla <= until:
            ack_ok = False
        else:
            ack_ok = None
        dispatch = next((a for a in acts if a.get("action") == "dispatch"), None)
        answer = next((a for a in acts if a.get("action") == "feedback"), None)
        close = next((a for a in acts if a.get("action") == "close"), None)
        deadline = _t(dispatch.get("deadline")) if dispatch else None
        answered = _t(answer.get("at") or answer.get("time")) if answer else None
        if deadline is None:
            in_time: bool | None = None
        elif answered is not None:
            in_time = answered <= deadline
        else:
            in_time = False if deadline <= until else None
        info = registry.outlet(str(e.get("mn")))
        status = str(e.get("case_status") or ("acknowledged" if acked else "new"))
        pol = str(e.get("pollutant") or "")
        rows.append(
            CaseRow(
                event_id=eid,
                type=str(e.get("type")),
                district=districts.get(str(e.get("district")), str(e.get("district") or "")),
                enterprise=enterprises.get(str(e.get("enterprise")), str(e.get("enterprise") or "")),
                outlet=info.outlet.name if info is not None and info.outlet.name else str(e.get("mn") or ""),
                pollutant=POLLUTANT_NAMES.get(pol, pol),
                start=_t(e.get("start")) or until,
                opened_at=opened,
                acked_at=acked,
                acked_by=str(e.get("acked_by") or ""),
                ack_in_sla=ack_ok,
                dispatched_to=districts.get(str(e.get("dispatched_to")), str(e.get("dispatched_to") or "")),
                deadline=deadline,
                answered_at=answered,
                answered_in_time=in_time,
                closed_at=_t(close.get("at") or close.get("time")) if close else None,
                case_status=status,
                actions=len(acts),
            )
        )
    rows.sort(key=lambda r: (r.start, r.event_id))
    return tuple(rows)


def _when(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _yes(v: bool | None) -> str:
    return "" if v is None else ("是" if v else "否")


def cases_html(rows: Sequence[CaseRow], sla_hours: float) -> str:
    if not rows:
        return '<p class="note">本期无事件。</p>'
    acked_in = sum(1 for r in rows if r.ack_in_sla)
    late = sum(1 for r in rows if r.ack_in_sla is False)
    dispatched = sum(1 for r in rows if r.deadline is not None)
    answered_late = sum(1 for r in rows if r.answered_in_time is False)
    closed = sum(1 for r in rows if r.case_status == "closed")
    e = html.escape
    out = [
        f'<p class="note">事件 {len(rows)} 件：{sla_hours:g} 小时内签收 {acked_in} 件，超时或未签收 {late} 件'
        f"（签收时限：registry [city] ack_sla_hours；兰州市方案 2 小时，seed 000）；督办 {dispatched} 件，"
        f"逾期反馈 {answered_late} 件；办结 {closed} 件。明细见 {CASES_CSV}。</p>",
        "<table><thead><tr><th>开始</th><th>区县</th><th>企业</th><th>排放口</th><th>类型</th><th>签收</th>"
        "<th>时限内</th><th>督办</th><th>反馈</th><th>按期</th><th>状态</th></tr></thead><tbody>",
    ]
    for r in rows:
        bad = ' class="bad"' if r.ack_in_sla is False or r.answered_in_time is False else ""
        out.append(
            f"<tr{bad}><td>{e(_when(r.start))}</td><td>{e(r.district)}</td>"
            f"<td>{e(r.enterprise)}</td><td>{e(r.outlet)}</td><td>{e(r.type)}</td>"
            f"<td>{e(_when(r.acked_at))} {e(r.acked_by)}</td><td>{_yes(r.ack_in_sla)}</td>"
            f"<td>{e(r.dispatched_to)}{' 期限 ' + e(_when(r.deadline)) if r.deadline else ''}</td>"
            f"<td>{e(_when(r.answered_at))}</td><td>{_yes(r.answered_in_time)}</td>"
            f"<td>{e(_CASE_ZH.get(r.case_status, r.case_status))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def cases_rows(rows: Sequence[CaseRow]) -> tuple[list[str], list[list[object]]]:
    header = ["事件ID", "类型", "区县", "企业", "排放口", "因子", "开始", "告警时间", "签收时间", "签收人",
              "时限内签收", "督办区县", "反馈期限", "反馈时间", "按期反馈", "办结时间", "督办状态",
              "操作数"]  # fmt: skip
    body: list[list[object]] = []
    for r in rows:
        body.append(
            [r.event_id, r.type, r.district, r.enterprise, r.outlet, r.pollutant, _iso(r.start), _iso(r.opened_at),
             _iso(r.acked_at), r.acked_by, _yes(r.ack_in_sla), r.dispatched_to, _iso(r.deadline),
             _iso(r.answered_at), _yes(r.answered_in_time), _iso(r.closed_at), r.case_status, r.actions]
        )  # fmt: skip
    return header, body


def _iso(t: datetime | None) -> str:
    return "" if t is None else t.astimezone(BEIJING).isoformat()
