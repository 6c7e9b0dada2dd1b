"""The report's data-quality section (issue 17): the data-quality and falsification signals
(:mod:`cems.rules.quality`) raised in the period, per enterprise, with how many are still open and how many
the duty room has acknowledged.

Input: the ``cems_event`` points of the quality types (the live service writes the acknowledgement into the
same point: ``acked_by``/``acked_at``, docs/influxdb.md); retracted signals are left out.  Loading, building
(pure) and rendering (HTML table, ``data_quality.csv``) are here so that the report's other modules only call
three functions.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from cems.model import BEIJING
from cems.registry import Registry
from cems.report._data import Query, event_from_row
from cems.report._period import Period
from cems.rules.events import RETRACTED_STATUS, Event
from cems.rules.quality import QUALITY_TYPES
from cems.sinks.influxql import quote_ident, quote_literal
from cems.sinks.lineprotocol import EVENT_MEASUREMENT

#: How far before the period a signal may start and still overlap it (flatline runs last hours, limit
#: hugging days).
QUALITY_LOOKBACK: Final = timedelta(days=31)
CSV_FILE: Final = "data_quality.csv"

#: Display names of the signals (Chinese, for the report).
SIGNAL_NAMES: Final[dict[str, str]] = {
    "flatline": "恒值",
    "o2_anomaly": "氧含量异常",
    "zs_inconsistent": "折算值不一致",
    "hourly_inconsistent": "小时值与分钟值不一致",
    "limit_hugging": "卡线",
    "out_of_range": "数值超出物理范围",
    "operation_mismatch": "生产与治污设施状态不符",
}


@dataclass(frozen=True, slots=True)
class QualitySignal:
    """One signal of the period with its acknowledgement (``acked_at``: ``None`` until acknowledged)."""

    event: Event
    acked_by: str | None = None
    acked_at: str | None = None


@dataclass(frozen=True, slots=True)
class QualityRow:
    """One enterprise: signals per type, how many are open, how many were acknowledged."""

    enterprise_id: str
    enterprise: str
    district: str
    by_type: tuple[int, ...]  # counts in :data:`QUALITY_TYPES` order
    total: int
    open: int
    acknowledged: int


@dataclass(frozen=True, slots=True)
class QualitySection:
    rows: tuple[QualityRow, ...]  # most signals first
    signals: tuple[QualitySignal, ...]  # by start

    @property
    def total(self) -> int:
        return len(self.signals)


def load_quality_signals(query: Query, period: Period) -> list[QualitySignal]:
    """The quality signals overlapping ``period`` from ``cems_event`` (retracted ones left out)."""
    types = " OR ".join(f'"type" = {quote_literal(t)}' for t in QUALITY_TYPES)
    start, end = period.start, period.end
    a = int((start - QUALITY_LOOKBACK).timestamp()) * 1_000_000_000
    b = int(end.timestamp()) * 1_000_000_000
    rows = query(f"SELECT * FROM {quote_ident(EVENT_MEASUREMENT)} WHERE ({types}) AND time >= {a} AND time < {b}", "s")
    out: list[QualitySignal] = []
    for r in rows:
        ev = event_from_row(r)
        if ev.status == RETRACTED_STATUS or ev.type not in QUALITY_TYPES:
            continue
        ev_end = ev.end if ev.end is not None else ev.start + timedelta(hours=ev.hours)
        if ev_end > start or ev.status == "open":
            out.append(QualitySignal(ev, _opt_str(r.get("acked_by")), _opt_str(r.get("acked_at"))))
    out.sort(key=lambda s: (s.event.start, s.event.mn, s.event.type, s.event.pollutant or ""))
    return out


def _opt_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def build_quality_section(registry: Registry, signals: Iterable[QualitySignal]) -> QualitySection:
    """Signals per enterprise (an outlet not in the registry is listed under its MN)."""
    sigs = tuple(signals)
    acc: dict[str, list[Any]] = {}
    sigs = tuple(s for s in sigs if s.event.type in QUALITY_TYPES)
    for s in sigs:
        ev = s.event
        info = registry.outlet(ev.mn)
        if info is not None:
            key, name, district = info.enterprise.id, info.enterprise.name, info.district.name
        else:
            key, name, district = ev.enterprise or ev.mn, ev.enterprise or ev.mn, ev.district
        row = acc.setdefault(key, [name, district, [0] * len(QUALITY_TYPES), 0, 0])
        row[2][QUALITY_TYPES.index(ev.type)] += 1
        row[3] += ev.is_open
        row[4] += s.acked_at is not None
    rows = [QualityRow(k, v[0], v[1], tuple(v[2]), sum(v[2]), v[3], v[4]) for k, v in acc.items()]
    rows.sort(key=lambda r: (-r.total, -r.open, r.enterprise_id))
    return QualitySection(tuple(rows), sigs)


def quality_html(q: QualitySection | None) -> str:
    """The HTML of the section ("" when the report has none)."""
    if q is None:
        return ""
    esc = html.escape
    head = "<h2>数据质量与弄虚作假线索</h2>"
    note = (
        '<p class="note">自动识别的数据异常线索（恒值、氧含量异常、折算值或小时值不一致、卡线、超出物理范围、'
        "生产与治污设施状态不符），每条附触发依据，须人工核查，不等同于超标或违法认定。阈值见 docs/events.md。</p>"
    )
    if not q.rows:
        return head + note + '<p class="good">本期无数据质量线索。</p>'
    th = "".join(f"<th>{esc(SIGNAL_NAMES[t])}</th>" for t in QUALITY_TYPES)
    out = [head, note, f"<table><thead><tr><th>企业</th><th>区县</th>{th}<th>合计</th><th>未结束</th><th>已确认</th>"]
    out.append("</tr></thead><tbody>")
    for r in q.rows:
        cells = "".join(f'<td class="n">{n or ""}</td>' for n in r.by_type)
        out.append(
            f"<tr><td>{esc(r.enterprise)}</td><td>{esc(r.district)}</td>{cells}<td class='n'>{r.total}</td>"
            f"<td class='n'>{r.open}</td><td class='n'>{r.acknowledged}</td></tr>"
        )
    out.append("</tbody></table>")
    out.append("<table><thead><tr><th>开始</th><th>排放口</th><th>线索</th><th>因子</th><th>小时数</th><th>状态</th>")
    out.append("<th>触发依据</th></tr></thead><tbody>")
    for s in q.signals:
        ev = s.event
        state = ("未结束" if ev.is_open else "已结束") + ("，已确认" if s.acked_at else "")
        out.append(
            f"<tr><td>{ev.start.astimezone(BEIJING).strftime('%Y-%m-%d %H:%M')}</td>"
            f'<td class="mono">{esc(ev.mn)}</td><td>{esc(SIGNAL_NAMES.get(ev.type, ev.type))}</td>'
            f"<td>{esc(ev.pollutant or '')}</td><td class='n'>{ev.hours:g}</td><td>{esc(state)}</td>"
            f"<td>{esc(str(ev.evidence or ''))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def quality_csv_rows(q: QualitySection) -> tuple[list[str], list[list[object]]]:
    """``data_quality.csv``: one row per signal."""
    header = ["开始", "结束", "企业", "区县", "排放口", "线索", "类型", "因子", "小时数", "状态", "确认人", "确认时间",
              "触发依据"]  # fmt: skip
    rows: list[list[object]] = []
    for s in q.signals:
        ev = s.event
        info_end = "" if ev.end is None else ev.end.astimezone(BEIJING).isoformat()
        rows.append(
            [
                ev.start.astimezone(BEIJING).isoformat(),
                info_end,
                ev.enterprise,
                ev.district,
                ev.mn,
                SIGNAL_NAMES.get(ev.type, ev.type),
                ev.type,
                ev.pollutant or "",
                f"{ev.hours:g}",
                ev.status,
                s.acked_by or "",
                s.acked_at or "",
                ev.evidence or "",
            ]
        )
    return header, rows
