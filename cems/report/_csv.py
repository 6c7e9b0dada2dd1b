"""CSV versions of the report's tables: UTF-8 with a BOM so that Excel opens Chinese text correctly."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

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
            ]
        )
    return _csv_text(header, rows)


CSV_FILES = {
    "districts.csv": districts_csv,
    "outlets_below_target.csv": outlets_below_target_csv,
    "exceedances.csv": exceedances_csv,
    "availability.csv": availability_csv,
    "monthly.csv": monthly_csv,
}


def write_csvs(r: Report, out_dir: Path) -> list[Path]:
    paths: list[Path] = []
    for name, fn in CSV_FILES.items():
        p = out_dir / name
        p.write_text(BOM + fn(r), encoding="utf-8", newline="")
        paths.append(p)
    return paths
