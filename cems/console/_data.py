"""What the console shows, read from InfluxDB (the ingester writes it; several ingesters may write, the
console only reads): events with their case (``cems_event``), actions (``cems_event_action``), hourly values
(``cems_hourly``), the monthly 挂牌督办 list (``cems report``'s loaders), the heavy-pollution warning.

Plain functions over a :data:`Query` (blocking: the app calls them in worker threads); the presentation
helpers (names, SLA, the SVG chart) are pure.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from markupsafe import Markup, escape

from cems.limits import MarkCatalog, MarkType
from cems.model import BEIJING, POLLUTANT_NAMES
from cems.protocol.mark import MarkRecord
from cems.registry import OutletInfo, Registry
from cems.rules.limits import LimitSchedule
from cems.service.compliance import ACTION_LABELS, CASE_LABELS
from cems.sinks.influxql import quote_literal

Query = Callable[[str, str | None], list[dict[str, Any]]]

#: How far back the queue looks for cases not yet closed (older open cases are listed by `cems events list`).
QUEUE_LOOKBACK: Final = timedelta(days=62)

EVENT_LABELS: Final = {
    "hourly_exceedance": "小时均值超标",
    "daily_exceedance": "日均值超标",
    "realtime_warning": "实时预警",
    "data_interruption": "数据中断",
    "o2_invalid": "氧含量无效",
    "emergency_noncompliance": "应急减排未落实",
    "emergency_stop_violation": "应急停产违规",
    "staggered_production_violation": "错峰生产违规",
    "treatment_off": "治污设施未运行",
    "warning_level": "重污染天气预警",
    "grid_hotspot": "网格热点",
}
STATUS_LABELS: Final = {"open": "持续中", "closed": "已结束", "retracted": "已撤销"}
WARNING_LEVELS: Final = {0: "无预警", 1: "蓝色预警", 2: "黄色预警", 3: "橙色预警", 4: "红色预警"}

_TEXT: Final = (
    "event_id",
    "type",
    "status",
    "mn",
    "enterprise",
    "district",
    "pollutant",
    "start",
    "end",
    "profile",
    "opened_at",
    "acked_by",
    "acked_at",
    "ack_note",
    "escalated_at",
    "case_status",
    "dispatched_to",
    "dispatched_at",
    "deadline",
    "marks",
)


def _norm(r: dict[str, Any]) -> dict[str, Any]:
    row = {k: (r.get(k) or None) for k in _TEXT}
    for k in ("hours", "peak", "limit", "ref_o2"):
        v = r.get(k)
        row[k] = float(v) if isinstance(v, int | float) else None
    if row["case_status"] is None:
        row["case_status"] = "acknowledged" if row["acked_at"] else "new"
    return row


def load_events(query: Query, now: datetime, lookback: timedelta = QUEUE_LOOKBACK) -> list[dict[str, Any]]:
    """The latest state of the events that started within ``lookback`` before ``now``, newest first."""
    since = int((now - lookback).timestamp() * 1e9)
    rows = [_norm(r) for r in query(f"SELECT * FROM cems_event WHERE time >= {since}", None)]
    rows.sort(key=lambda r: (str(r.get("opened_at") or r.get("start") or ""), str(r["event_id"])), reverse=True)
    return rows


def open_cases(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The duty queue: events whose case is not closed (retracted events and warning settings left out)."""
    return [
        r
        for r in rows
        if r["case_status"] != "closed" and r["status"] != "retracted" and r["type"] not in ("warning_level",)
    ]


def load_event(query: Query, event_id: str) -> dict[str, Any] | None:
    rows = query(f"SELECT * FROM cems_event WHERE event_id = {quote_literal(event_id)}", None)
    return _norm(rows[-1]) if rows else None


def load_actions(query: Query, event_id: str) -> list[dict[str, Any]]:
    """The event's actions, oldest first (``cems_event_action``)."""
    rows = query(f"SELECT * FROM cems_event_action WHERE event_id = {quote_literal(event_id)}", None)
    out = [
        {
            "action": r.get("action"),
            "label": ACTION_LABELS.get(str(r.get("action")), str(r.get("action"))),
            "by": r.get("by"),
            "at": r.get("at") or r.get("time"),
            "note": r.get("note"),
            "case_status": CASE_LABELS.get(str(r.get("case_status")), r.get("case_status")),
            "dispatched_to": r.get("dispatched_to"),
            "deadline": r.get("deadline"),
        }
        for r in rows
    ]
    return out


@dataclass(frozen=True, slots=True)
class HourPoint:
    hour: datetime
    value: float | None
    exceeds: bool


def load_hours(query: Query, event: dict[str, Any]) -> list[HourPoint]:
    """The outlet's hourly corrected values of the event's pollutant, from 6 h before to 6 h after the event."""
    if not event.get("pollutant") or not event.get("start"):
        return []
    start = datetime.fromisoformat(str(event["start"]))
    hours = timedelta(hours=event["hours"] or 1)
    end = datetime.fromisoformat(str(event["end"])) if event.get("end") else start + hours
    a, b = start - timedelta(hours=6), max(end, start + timedelta(hours=1)) + timedelta(hours=6)
    q = (
        'SELECT "zs_avg", "avg", "exceeds" FROM cems_hourly WHERE '
        f'"mn" = {quote_literal(str(event["mn"]))} AND "pollutant" = {quote_literal(str(event["pollutant"]))} '
        f"AND time >= {int(a.timestamp() * 1e9)} AND time < {int(b.timestamp() * 1e9)}"
    )
    out: list[HourPoint] = []
    for r in query(q, "s"):
        v = r.get("zs_avg") if r.get("zs_avg") is not None else r.get("avg")
        out.append(HourPoint(datetime.fromtimestamp(int(r["time"]), BEIJING), _f(v), bool(r.get("exceeds"))))
    out.sort(key=lambda p: p.hour)
    return out


def _f(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def current_warning(query: Query, now: datetime) -> dict[str, Any] | None:
    """The heavy-pollution warning in force (issue 16: the ``warning_level`` events, one per setting), or
    ``None``."""
    return warning_in_force(query("SELECT * FROM cems_event WHERE \"type\" = 'warning_level'", None), now)


def warning_in_force(rows: Sequence[dict[str, Any]], now: datetime) -> dict[str, Any] | None:
    """Of the warning settings, the latest that has started by ``now``; ``None`` when it has ended, lifts the
    warning (level 0) or none has started."""
    started = [_norm(r) for r in rows if r.get("start") and datetime.fromisoformat(str(r["start"])) <= now]
    started = [r for r in started if r["status"] != "retracted"]
    if not started:
        return None
    w = max(started, key=lambda r: datetime.fromisoformat(str(r["start"])))
    level = int(w["peak"] or 0)
    if level <= 0 or (w["end"] is not None and datetime.fromisoformat(str(w["end"])) <= now):
        return None
    return {**w, "level": level, "label": WARNING_LEVELS.get(level, str(w.get("pollutant")))}


def month_supervision(registry: Registry, query: Query, now: datetime) -> tuple[str, list[dict[str, Any]]]:
    """The districts under 挂牌督办 this month so far, with reasons (``cems report``'s rule and loaders)."""
    from cems.errors import CemsError
    from cems.report import Period, load_report

    today = now.astimezone(BEIJING).date()
    first = date(today.year, today.month, 1)
    last = date(today.year, today.month, calendar.monthrange(today.year, today.month)[1])
    period = Period("month", f"{today.year}-{today.month:02d}", first, last)
    try:
        report = load_report(registry, period, query, now=now)
    except CemsError as e:
        return period.label, [{"code": "", "name": "", "reasons": (str(e),), "rate": None, "note": True}]
    rows = [
        {
            "code": d.code,
            "name": d.name,
            "reasons": d.reasons,
            "rate": d.effective_rate,
            "exceeding": d.exceeding_enterprises,
            "note": False,
        }
        for d in report.districts
        if d.supervised
    ]
    return period.label, rows


# ------------------------------------------------------------------------------------------------ presentation


class Names:
    """Registry names for codes (enterprise, outlet, district)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.districts = {d.code: d.name for d in registry.district}
        self.enterprises = {e.id: e.name for e in registry.enterprise}

    def outlet(self, mn: str) -> str:
        info = self.registry.outlet(mn)
        return info.outlet.name if info is not None and info.outlet.name else mn

    def district(self, code: str | None) -> str:
        return self.districts.get(code or "", code or "")

    def enterprise(self, ent: str | None) -> str:
        return self.enterprises.get(ent or "", ent or "")


def fmt_time(iso: Any) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).astimezone(BEIJING).strftime("%m-%d %H:%M")
    except ValueError:
        return str(iso)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def present(row: dict[str, Any], names: Names, now: datetime, sla_hours: float) -> dict[str, Any]:
    """A row for the templates: names, labels, value against the limit, the acknowledgement SLA."""
    out = dict(row)
    out["type_label"] = EVENT_LABELS.get(str(row["type"]), str(row["type"]))
    out["status_label"] = STATUS_LABELS.get(str(row["status"]), str(row["status"]))
    out["case_label"] = CASE_LABELS.get(str(row["case_status"]), str(row["case_status"]))
    out["enterprise_name"] = names.enterprise(row["enterprise"])
    out["outlet_name"] = names.outlet(str(row["mn"]))
    out["district_name"] = names.district(row["district"])
    out["dispatched_name"] = names.district(row["dispatched_to"]) if row["dispatched_to"] else ""
    pol = row.get("pollutant")
    out["pollutant_name"] = POLLUTANT_NAMES.get(str(pol), str(pol or "")) if pol else ""
    out["value"] = _num(row["peak"])
    out["limit_text"] = _num(row["limit"])
    out["start_text"] = fmt_time(row["start"])
    out["opened_text"] = fmt_time(row["opened_at"] or row["start"])
    out["deadline_text"] = fmt_time(row["deadline"])
    out["overdue"] = False
    out["sla_text"] = ""
    if row["acked_at"] is None:
        opened = datetime.fromisoformat(str(row["opened_at"] or row["start"]))
        left = opened + timedelta(hours=sla_hours) - now
        out["overdue"] = left <= timedelta(0)
        mins = int(abs(left.total_seconds()) // 60)
        out["sla_text"] = ("超时 " if out["overdue"] else "剩余 ") + f"{mins // 60}小时{mins % 60:02d}分"
    elif row["case_status"] == "dispatched" and row["deadline"]:
        left = datetime.fromisoformat(str(row["deadline"])) - now
        out["overdue"] = left <= timedelta(0)
        out["sla_text"] = ("反馈超期 " if out["overdue"] else "反馈期限 ") + fmt_time(row["deadline"])
    return out


def svg_chart(points: Sequence[HourPoint], limit: float | None, *, width: int = 640, height: int = 200) -> Markup:
    """The hourly values against the limit as an inline SVG (server-rendered, no script): a bar per hour,
    red when it exceeds, and the limit as a dashed line."""
    if not points:
        return Markup('<p class="muted">无小时数据</p>')
    pad_l, pad_b, pad_t = 48, 28, 10
    values = [p.value for p in points if p.value is not None]
    top = max([*values, limit or 0.0, 1.0]) * 1.15
    n = len(points)
    bw = (width - pad_l - 4) / n
    plot_h = height - pad_b - pad_t

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - v / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="小时均值与限值" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width}" y2="{pad_t + plot_h}" class="axis"/>',
        f'<text x="{pad_l - 6}" y="{y(top / 1.15):.1f}" class="tick" text-anchor="end">{top / 1.15:.4g}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, p in enumerate(points):
        x = pad_l + i * bw
        if p.value is not None:
            h = plot_h * p.value / top
            cls = "bar over" if p.exceeds else "bar"
            title = escape(f"{p.hour:%m-%d %H}时 {p.value:.4g}")
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y(p.value):.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
                f'class="{cls}"><title>{title}</title></rect>'
            )
        if i % max(1, n // 8) == 0:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{p.hour:%H}时</text>'
            )
    if limit is not None:
        parts.append(f'<line x1="{pad_l}" y1="{y(limit):.1f}" x2="{width}" y2="{y(limit):.1f}" class="limit"/>')
        parts.append(
            f'<text x="{width - 4}" y="{y(limit) - 4:.1f}" class="tick lim" text-anchor="end">限值 {limit:.4g}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


# ------------------------------------------------------------------------------------------------ marks (issue 14)

#: How far back the marks page lists records (by their period): the repair window is days, not months.
MARKS_LOOKBACK: Final = timedelta(days=92)
MARK_KIND_LABELS: Final = {"mark": "工况标记", "declaration": "停产申报", "repair": "修约", "withdrawal": "撤回"}
#: The ingester's answer to a submission (docs/payload.md "Marks"; cems.rules.marks.MarkBook.check).
MARK_RESULT_LABELS: Final = {
    "accepted": "已受理",
    "duplicate": "已受理（重复提交，只存一条）",
    "late": "逾期申报：记录已保留，不产生效力",
    "mark_too_late": "已过标记/修约期限，不予受理",
    "unknown_mark_type": "该排放口所属行业不能使用此类型",
    "unknown_mark": "没有可撤回的这条记录（或已撤回）",
    "unknown_mn": "排放口不在登记表中",
    "bad_mark": "内容不符合要求",
    "bad_schema": "内容不符合要求",
    "mn_mismatch": "排放口不符",
}


def mark_types(catalog: MarkCatalog, info: OutletInfo) -> tuple[list[MarkType], list[MarkType]]:
    """The mark types and the stop-declaration types the outlet may use (its industry's and the device
    marks: "1 + N", MEE 公告2022年第21号; the same rule as the ingester's :meth:`MarkCatalog.allowed`)."""
    industry = catalog.industry_of(info.outlet.profile, info.outlet.mark_industry)
    types = sorted(catalog.types.values(), key=lambda t: (t.industry == "all", t.code))
    marks = [t for t in types if catalog.allowed(t.code, industry) is not None]
    decls = [t for t in types if catalog.allowed(t.code, industry, declaration=True) is not None]
    return marks, decls


def repair_pollutants(info: OutletInfo, at: datetime) -> list[tuple[str, str]]:
    """(code, name) of the pollutants with a limit at the outlet at ``at``: what a repair may correct."""
    sched = LimitSchedule(info.outlet)
    return [(code, name) for code, name in POLLUTANT_NAMES.items() if sched.at(code, at) is not None]


def present_marks(records: Sequence[MarkRecord], catalog: MarkCatalog) -> list[dict[str, Any]]:
    """Records for the templates, newest first: labels, period, status (a withdrawn record names the
    withdrawal that took it out of force)."""
    gone = {r.target: r.record_id for r in records if r.kind == "withdrawal" and r.target}
    out: list[dict[str, Any]] = []
    for r in sorted(records, key=lambda r: (r.received_at, r.record_id), reverse=True):
        t = catalog.types.get(r.type)
        if r.kind == "repair":
            what = f"{POLLUTANT_NAMES.get(r.pollutant or '', r.pollutant or '')} 修约为 {_num(r.value)}"
            period = f"{r.start.astimezone(BEIJING):%m-%d %H}时"
        elif r.kind == "withdrawal":
            what, period = f"撤回 {r.target}", ""
        else:
            what = t.name if t is not None else r.type
            period = f"{r.start.astimezone(BEIJING):%m-%d %H:%M} — {r.end.astimezone(BEIJING):%m-%d %H:%M}"
        if r.record_id in gone:
            status, live = f"已撤回（{gone[r.record_id]}）", False
        elif r.status == "late":
            status, live = "逾期，无效力", False
        else:
            status, live = ("已受理" if r.kind != "withdrawal" else "已生效"), r.kind != "withdrawal"
        out.append(
            {
                "record_id": r.record_id,
                "mn": r.mn,
                "kind": r.kind,
                "kind_label": MARK_KIND_LABELS.get(r.kind, r.kind),
                "what": what,
                "period": period,
                "reason": r.reason,
                "attachment": r.attachment,
                "submitter": r.submitter,
                "received": f"{r.received_at.astimezone(BEIJING):%m-%d %H:%M}",
                "status": status,
                "withdrawable": live,
                "note": r.note,
            }
        )
    return out


def event_marks(records: Sequence[MarkRecord], ids: str | None) -> list[MarkRecord]:
    """Of an outlet's records, those an event names in its ``marks`` field (comma-separated record ids),
    with the withdrawals of them."""
    wanted = {i for i in (ids or "").split(",") if i}
    return [r for r in records if r.record_id in wanted or (r.kind == "withdrawal" and r.target in wanted)]
