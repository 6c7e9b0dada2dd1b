"""CSV versions of the report's tables: UTF-8 with a BOM so that Excel opens Chinese text correctly."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from cems.report._cases import CASES_CSV, cases_rows
from cems.report._quality import CSV_FILE as QUALITY_CSV
from cems.report._quality import quality_csv_rows
from cems.report._tables import (
    NOT_ASSESSED,
    PARTIAL_STOP,
    STOP,
    Report,
    pollutant_label,
)

BOM = "\ufeff"

STATE_LABELS: dict[str, str] = {
    "data": "",
    STOP: "停运申报",
    PARTIAL_STOP: "部分停运申报",
    NOT_ASSESSED: "不考核",
}


def pct(v: float | None) -> str:
    """A rate as a percentage with two decimals ("" when undefined)."""
    return "" if v is None else f"{v * 100:.2f}"


def num(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def districts_csv(r: Report) -> str:
    header = [
        "排名",
        "区县代码",
        "区县",
        "考核排放口数",
        "应收记录数",
        "实收记录数",
        "有效记录数",
        "传输率(%)",
        "有效率(%)",
        "传输有效率(%)",
        "超标企业数",
        "超标企业",
        "挂牌督办",
        "督办原因",
    ]
    rows = [
        [
            d.rank,
            d.code,
            d.name,
            d.outlets,
            d.expected,
            d.received,
            d.valid,
            pct(d.transmission_rate),
            pct(d.validity_rate),
            pct(d.effective_rate),
            len(d.exceeding_enterprises),
            "；".join(d.exceeding_enterprises),
            "是" if d.supervised else "否",
            "；".join(d.reasons),
        ]
        for d in r.districts
    ]
    return _csv_text(header, rows)


def outlets_below_target_csv(r: Report) -> str:
    header = [
        "序号",
        "区县",
        "企业",
        "排放口",
        "MN",
        "应收记录数",
        "实收记录数",
        "有效记录数",
        "传输率(%)",
        "有效率(%)",
        "传输有效率(%)",
        "备注",
    ]
    rows = [
        [
            i,
            o.district,
            o.enterprise,
            o.outlet,
            o.mn,
            o.expected,
            o.received,
            o.valid,
            pct(o.transmission_rate),
            pct(o.validity_rate),
            pct(o.effective_rate),
            "无任何数据" if o.silent else "",
        ]
        for i, o in enumerate(r.below_target, start=1)
    ]
    return _csv_text(header, rows)


def exceedances_csv(r: Report) -> str:
    header = [
        "企业编号",
        "企业",
        "区县",
        "超标次数",
        "超标小时数",
        "分因子(次数/小时)",
        "最大超标排放口",
        "MN",
        "因子",
        "峰值(mg/m3)",
        "限值(mg/m3)",
        "超标倍数",
    ]
    rows = []
    for e in r.exceedances:
        detail = "；".join(f"{pollutant_label(p)} {n}次/{h:g}小时" for p, (n, h) in e.by_pollutant.items())
        ratio = e.peak_ratio
        rows.append(
            [
                e.enterprise_id,
                e.enterprise,
                e.district,
                e.events,
                f"{e.hours:g}",
                detail,
                e.worst_outlet,
                e.worst_mn,
                pollutant_label(e.worst_pollutant),
                num(e.peak),
                num(e.limit),
                "" if ratio is None else f"{ratio:.2f}",
            ]
        )
    return _csv_text(header, rows)


def availability_csv(r: Report) -> str:
    header = [
        "区县",
        "企业",
        "排放口",
        "MN",
        "日期",
        "状态",
        "应收记录数",
        "实收记录数",
        "有效记录数",
        "传输有效率(%)",
    ]
    rows = [
        [
            a.district,
            a.enterprise,
            a.outlet,
            a.mn,
            c.day.isoformat(),
            STATE_LABELS.get(c.state, c.state),
            c.expected,
            c.received,
            c.valid,
            pct(c.effective_rate),
        ]
        for a in r.availability
        for c in a.cells
    ]
    return _csv_text(header, rows)


def monthly_csv(r: Report) -> str:
    header = [
        "区县",
        "企业",
        "排放口",
        "MN",
        "因子",
        "月份",
        "有效日数",
        "应有有效日数",
        "月有效",
        "有效小时数",
        "考核小时数",
        "达标小时数",
        "达标比例(%)",
        "要求(%)",
        "月度考核",
        "依据",
        "标记不判定小时数",
    ]
    rows = []
    for row in r.monthly:
        m = row.result
        rows.append(
            [
                row.district,
                row.enterprise,
                row.outlet,
                m.mn,
                pollutant_label(m.pollutant),
                m.month,
                m.valid_days,
                m.days_needed,
                "是" if m.month_valid else "否",
                m.valid_hours,
                m.rule_hours,
                m.hours_within_limit,
                pct(m.share_within_limit),
                pct(m.share_required),
                {True: "达标", False: "未达标", None: ""}[m.meets_monthly_rule],
                m.citation,
                m.marked_hours,
            ]
        )
    return _csv_text(header, rows)


def _change(v: float | None) -> str:
    return "" if v is None else f"{v * 100:.1f}"


def _index(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def _conc(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def township_ranking_csv(r: Report) -> str:
    """The city ranking of townships (best first), then the townships not ranked with the reason."""
    header = [
        "全市排名",
        "参与排名数",
        "区县代码",
        "区县",
        "乡镇(街道)",
        "综合指数",
        "PM2.5(µg/m3)",
        "PM10(µg/m3)",
        "优良天数",
        "AQI有效天数",
        "优良天数比例(%)",
        "上期综合指数",
        "环比变化率(%)",
        "去年同期综合指数",
        "同比变化率(%)",
        "点位数",
        "点位",
        "有效天数(最少)",
        "备注",
    ]
    rows: list[list[object]] = []
    g = r.grid
    if g is None:
        return _csv_text(header, rows)
    for row in g.city:
        e, f = row.entry, row.entry.figures
        rows.append(
            [
                e.rank,
                e.of,
                f.district,
                row.district,
                f.township,
                _index(f.index),
                _conc(f.pm25),
                _conc(f.pm10),
                f.good_days,
                f.aqi_days,
                pct(f.good_day_share),
                _index(e.previous_index),
                _change(e.change_vs_previous),
                _index(e.last_year_index),
                _change(e.change_vs_last_year),
                len(f.sensors),
                " ".join(f.sensors),
                min(f.days.values(), default=0),
                "",
            ]
        )
    for f in g.ranking.unranked if g.ranking is not None else ():
        rows.append(
            [
                "",
                "",
                f.district,
                g.district_names.get(f.district, f.district),
                f.township,
                "",
                _conc(f.pm25),
                _conc(f.pm10),
                f.good_days,
                f.aqi_days,
                pct(f.good_day_share),
                "",
                "",
                "",
                "",
                len(f.sensors),
                " ".join(f.sensors),
                min(f.days.values(), default=0),
                "数据不足，未排名：" + "；".join(f.incomplete),
            ]
        )
    return _csv_text(header, rows)


def grid_hotspots_csv(r: Report) -> str:
    """Grid sensors by hotspot hours in the period (most first)."""
    header = ["序号", "点位", "名称", "区县代码", "区县", "乡镇(街道)", "热点小时数", "热点次数", "因子", "最高小时值"]
    rows = [
        [
            i,
            h.sensor,
            h.name,
            h.district_code,
            h.district,
            h.township,
            f"{h.hours:g}",
            h.events,
            "；".join(h.pollutants),
            num(h.peak),
        ]
        for i, h in enumerate(r.grid.hotspots if r.grid is not None else (), start=1)
    ]
    return _csv_text(header, rows)


def marks_csv(r: Report) -> str:
    header = ["企业", "排放口", "MN", "标记类型", "类型代码", "标记小时数", "超标判定", "传输有效率", "记录"]
    rows = [
        [
            m.enterprise,
            m.outlet,
            m.mn,
            m.type_name,
            m.type,
            m.hours,
            "参与" if m.judged else "不参与",
            m.rate,
            " ".join(m.records),
        ]
        for m in r.marks.marked
    ]
    return _csv_text(header, rows)


#: Written only when the report has grid sections (``Report.grid``).
GRID_CSV_FILES = {
    "township_ranking.csv": township_ranking_csv,
    "grid_hotspots.csv": grid_hotspots_csv,
}


def mark_caps_csv(r: Report) -> str:
    header = ["企业", "排放口", "MN", "上限类别", "年度", "已用小时", "上限小时", "超出上限小时", "上限已核实"]
    rows = [
        [
            c.enterprise,
            c.outlet,
            c.mn,
            c.name,
            c.year,
            c.used,
            "" if c.cap is None else f"{c.cap:g}",
            c.over,
            "是" if c.verified else "否",
        ]
        for c in r.marks.caps
    ]
    return _csv_text(header, rows)


def late_declarations_csv(r: Report) -> str:
    header = ["记录", "企业", "排放口", "MN", "类型", "开始", "结束", "收到时间", "申报人", "说明"]
    rows = [
        [
            d.record_id,
            d.enterprise,
            d.outlet,
            d.mn,
            d.type,
            d.start.isoformat(),
            d.end.isoformat(),
            d.received_at.isoformat(),
            d.submitter,
            d.note,
        ]
        for d in r.marks.late
    ]
    return _csv_text(header, rows)


CSV_FILES = {
    "districts.csv": districts_csv,
    "outlets_below_target.csv": outlets_below_target_csv,
    "exceedances.csv": exceedances_csv,
    "availability.csv": availability_csv,
    "monthly.csv": monthly_csv,
    "marks.csv": marks_csv,
    "mark_caps.csv": mark_caps_csv,
    "late_declarations.csv": late_declarations_csv,
}


def write_csvs(r: Report, out_dir: Path) -> list[Path]:
    paths: list[Path] = []
    files = {**CSV_FILES, **(GRID_CSV_FILES if r.grid is not None else {})}
    for name, fn in files.items():
        p = out_dir / name
        p.write_text(BOM + fn(r), encoding="utf-8", newline="")
        paths.append(p)
    if r.cases:  # the events' cases (电子督办, issue 19)
        p = out_dir / CASES_CSV
        p.write_text(BOM + _csv_text(*cases_rows(r.cases)), encoding="utf-8", newline="")
        paths.append(p)
    if r.warnings:  # heavy-pollution warnings of the period (issue 16)
        p = out_dir / EMERGENCY_CSV
        p.write_text(BOM + emergency_csv(r), encoding="utf-8", newline="")
        paths.append(p)
    if r.quality is not None:  # the data-quality section (issue 17)
        p = out_dir / QUALITY_CSV
        p.write_text(BOM + _csv_text(*quality_csv_rows(r.quality)), encoding="utf-8", newline="")
        paths.append(p)
    return paths


EMERGENCY_CSV = "emergency.csv"


def emergency_csv(r: Report) -> str:
    """One row per warning, listed enterprise and violation (an enterprise without violations: one row)."""
    header = ["预警级别", "开始", "结束", "发布人", "企业ID", "企业", "区县", "绩效分级", "结论", "违规类型",
              "因子/生产线", "违规开始", "小时数", "实测", "允许", "依据"]  # fmt: skip
    rows: list[list[object]] = []
    for w in r.warnings:
        head: list[object] = [w.level.label, w.start.isoformat(), "" if w.end is None else w.end.isoformat(), w.set_by]
        for e in w.enterprises:
            ent: list[object] = [
                e.enterprise_id,
                e.enterprise,
                e.district,
                e.grade or "",
                "合规" if e.compliant else "未落实",
            ]
            if not e.events:
                rows.append([*head, *ent, "", "", "", "", "", "", ""])
            for ev in e.events:
                rows.append(
                    [
                        *head,
                        *ent,
                        ev.type,
                        ev.pollutant or "",
                        ev.start.isoformat(),
                        f"{ev.hours:g}",
                        num(ev.peak),
                        num(ev.limit),
                        ev.profile or "",
                    ]
                )
    return _csv_text(header, rows)
