"""The report as one self-contained HTML file: inline CSS, inline SVG charts, no external resources.

Every text that comes from data (registry names, MNs, reasons) goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
from datetime import datetime

from cems.model import BEIJING
from cems.report._cases import cases_html
from cems.report._csv import num, pct
from cems.report._quality import quality_html
from cems.report._tables import (
    NOT_ASSESSED,
    PARTIAL_STOP,
    STOP,
    AvailabilityCell,
    DistrictRow,
    Report,
    pollutant_label,
)

FONT_STACK = '"Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif'

#: Heat-map colour bins of the daily effective rate: (lower bound, colour, legend label).
BINS: tuple[tuple[float, str, str], ...] = (
    (0.90, "#1a9850", "≥ 90 %"),
    (0.75, "#fee08b", "75–90 %"),
    (0.50, "#fdae61", "50–75 %"),
    (1e-9, "#f46d43", "0–50 %"),
    (0.0, "#a50026", "0 %（无有效数据）"),
)
STOP_FILL = "url(#stop-hatch)"
NA_FILL = "#ffffff"
NO_EXPECTED_FILL = "#d9d9d9"

_KIND_TITLE = {"month": "月报", "week": "周报", "day": "日报"}

CSS = f"""
body {{ font-family: {FONT_STACK}; color: #222; margin: 24px auto; max-width: 1200px; padding: 0 16px;
  line-height: 1.5; }}
h1 {{ font-size: 1.6em; margin-bottom: 0.2em; }}
h2 {{ font-size: 1.25em; border-left: 4px solid #1f5fa8; padding-left: 8px; margin-top: 2em; }}
.sub {{ color: #555; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 10px 14px; min-width: 150px; background: #fafafa; }}
.card .v {{ font-size: 1.5em; font-weight: bold; }}
.card .k {{ color: #555; font-size: 0.9em; }}
.bad {{ color: #b2182b; }}
.good {{ color: #1a7f37; }}
table {{ border-collapse: collapse; width: 100%; margin: 8px 0 16px; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: top; }}
th {{ background: #eef3fa; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
tr.supervised td {{ background: #fdecea; }}
.tag {{ display: inline-block; background: #b2182b; color: #fff; border-radius: 3px; padding: 0 6px;
  font-size: 0.85em; white-space: nowrap; }}
.reasons {{ margin: 0; padding-left: 1.2em; font-size: 0.9em; }}
.mono {{ font-family: ui-monospace, Consolas, monospace; }}
.legend span.sw {{ display: inline-block; width: 14px; height: 14px; border: 1px solid #999;
  vertical-align: middle; margin: 0 4px 0 12px; }}
.note {{ color: #555; font-size: 0.88em; }}
svg text {{ font-family: {FONT_STACK}; }}
"""


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def rate_color(rate: float | None) -> str:
    if rate is None:
        return NO_EXPECTED_FILL
    for lo, colour, _ in BINS:
        if rate >= lo:
            return colour
    return BINS[-1][1]


def _pct_cell(v: float | None) -> str:
    return f'<td class="n">{esc(pct(v) + " %" if v is not None else "—")}</td>'


def _reason_zh(reason: str) -> str:
    """A Chinese heading for one of RateCounter's supervision reasons."""
    if "传输有效率" in reason and "低于考核目标" in reason:
        return "传输有效率低于考核目标"
    if "家企业小时均值超标" in reason:
        return "超标企业数达到督办门槛"
    return "督办"


# ---------------------------------------------------------------------------------------------- charts


def text_width(text: str, size: float) -> float:
    """Rough rendered width of ``text`` at font ``size`` px (CJK and other wide characters: 1 em)."""
    return sum(size if ord(ch) > 0x2E7F else size * 0.6 for ch in text)


def fit(text: str, size: float, max_w: float) -> str:
    """``text`` shortened with an ellipsis to about ``max_w`` px."""
    if text_width(text, size) <= max_w:
        return text
    out = ""
    for ch in text:
        if text_width(out + ch + "…", size) > max_w:
            break
        out += ch
    return out + "…"


def district_chart(r: Report) -> str:
    """Horizontal bars of the districts' effective rates, with the target as a dashed line."""
    rows = r.districts
    bar_w, row_h, top = 520, 26, 30
    label_w = int(min(240.0, max([80.0, *(text_width(d.name, 13) for d in rows)]))) + 16
    width = label_w + bar_w + 90
    height = top + row_h * max(1, len(rows)) + 24
    x0 = label_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc("各区县传输有效率")}">'
    ]
    for p in (0, 25, 50, 75, 100):
        x = x0 + bar_w * p / 100
        parts.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 20}" stroke="#e0e0e0"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">{p}%</text>')
    for i, d in enumerate(rows):
        y = top + i * row_h
        eff = d.effective_rate
        w = 0.0 if eff is None else bar_w * max(0.0, min(1.0, eff))
        colour = "#d6604d" if d.supervised else "#4393c3"
        label = "—" if eff is None else f"{pct(eff)} %"
        parts.append(
            f'<text x="{x0 - 8}" y="{y + row_h / 2 + 4:.1f}" font-size="13" text-anchor="end">'
            f"{esc(fit(d.name, 13, label_w - 16))}</text>"
        )
        parts.append(
            f'<rect x="{x0}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{esc(d.name + ': ' + label)}</title></rect>"
        )
        parts.append(f'<text x="{x0 + w + 6:.1f}" y="{y + row_h / 2 + 4:.1f}" font-size="12">{esc(label)}</text>')
    tx = x0 + bar_w * r.target
    parts.append(
        f'<line x1="{tx:.1f}" y1="{top - 10}" x2="{tx:.1f}" y2="{height - 20}" stroke="#b2182b" '
        'stroke-width="2" stroke-dasharray="6,4"/>'
    )
    parts.append(
        f'<text x="{tx:.1f}" y="{top - 14}" font-size="12" fill="#b2182b" text-anchor="middle">'
        f"{esc(f'考核目标 {r.target * 100:g} %')}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _cell_title(name: str, c: AvailabilityCell) -> str:
    day = c.day.isoformat()
    if c.state == NOT_ASSESSED:
        return f"{name} {day}: 不在考核期"
    if c.state == STOP:
        return f"{name} {day}: 申报停运（不计应收）"
    text = (
        f"{name} {day}: 应收 {c.expected}，实收 {c.received}，有效 {c.valid}，"
        f"传输有效率 {pct(c.effective_rate) or '—'} %"
    )
    if c.state == PARTIAL_STOP:
        text += "（部分时段申报停运）"
    return text


def heat_map(r: Report) -> str:
    """Outlets × days, coloured by the daily effective rate; declared-stop days hatched."""
    days = r.period.days
    cell, top = 18, 34
    names = [f"{row.enterprise} · {row.outlet} ({row.mn})" for row in r.availability]
    label_w = int(min(420.0, max([120.0, *(text_width(n, 11) for n in names)]))) + 12
    width = label_w + cell * len(days) + 10
    height = top + cell * max(1, len(r.availability)) + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc("数据可用性热力图")}">',
        '<defs><pattern id="stop-hatch" patternUnits="userSpaceOnUse" width="6" height="6" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#bdbdbd"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#636363" stroke-width="2"/></pattern>'
        '<pattern id="partial-hatch" patternUnits="userSpaceOnUse" width="6" height="6" '
        'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#636363" '
        'stroke-width="1.2"/></pattern></defs>',
    ]
    for j, d in enumerate(days):
        x = label_w + j * cell + cell / 2
        if j == 0 or d.day == 1:
            parts.append(f'<text x="{x - cell / 2:.1f}" y="{top - 20}" font-size="10">{d.year}-{d.month:02d}</text>')
        parts.append(f'<text x="{x:.1f}" y="{top - 8}" font-size="10" text-anchor="middle">{d.day}</text>')
    for i, row in enumerate(r.availability):
        y = top + i * cell
        name = names[i]
        parts.append(
            f'<text x="{label_w - 6}" y="{y + cell - 5}" font-size="11" text-anchor="end">'
            f"{esc(fit(name, 11, label_w - 12))}<title>{esc(name)}</title></text>"
        )
        for j, c in enumerate(row.cells):
            x = label_w + j * cell
            if c.state == STOP:
                fill = STOP_FILL
            elif c.state == NOT_ASSESSED:
                fill = NA_FILL
            else:
                fill = rate_color(c.effective_rate)
            cls = f' class="cell {c.state}"'
            parts.append(
                f'<rect{cls} x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{fill}" '
                f'stroke="#999" stroke-width="0.5"><title>{esc(_cell_title(name, c))}</title></rect>'
            )
            if c.state == PARTIAL_STOP:
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="url(#partial-hatch)"/>'
                )
    parts.append("</svg>")
    return "".join(parts)


def legend() -> str:
    items = [(colour, label) for _, colour, label in BINS]
    sw = [f'<span class="sw" style="background:{c}"></span>{esc(lbl)}' for c, lbl in items]
    sw.append(
        '<span class="sw" style="background: repeating-linear-gradient(45deg, #bdbdbd 0 3px, #636363 3px 5px)">'
        "</span>申报停运日（不计应收）"
    )
    sw.append(
        '<span class="sw" style="background: repeating-linear-gradient(45deg, transparent 0 3px, #636363 3px 4px)">'
        "</span>部分时段申报停运"
    )
    sw.append(f'<span class="sw" style="background:{NO_EXPECTED_FILL}"></span>无应收记录')
    sw.append(f'<span class="sw" style="background:{NA_FILL}"></span>不在考核期')
    return '<p class="legend">日传输有效率：' + "".join(sw) + "</p>"


# ---------------------------------------------------------------------------------------------- tables


def _district_table(r: Report) -> str:
    out = [
        "<table><thead><tr><th>排名</th><th>区县</th><th>考核排放口</th><th>应收</th><th>实收</th><th>有效</th>"
        "<th>传输率</th><th>有效率</th><th>传输有效率</th><th>超标企业</th><th>挂牌督办</th><th>原因</th>"
        "</tr></thead><tbody>"
    ]
    for d in r.districts:
        out.append(_district_row(d))
    out.append("</tbody></table>")
    return "".join(out)


def _district_row(d: DistrictRow) -> str:
    tr = ' class="supervised"' if d.supervised else ""
    reasons = "".join(f"<li><b>{esc(_reason_zh(x))}</b>：{esc(x)}</li>" for x in d.reasons)
    ents = "、".join(esc(e) for e in d.exceeding_enterprises)
    ents_cell = f"{len(d.exceeding_enterprises)}" + (f"（{ents}）" if ents else "")
    tag = '<span class="tag">挂牌督办</span>' if d.supervised else "—"
    reasons_html = f'<ul class="reasons">{reasons}</ul>' if reasons else ""
    return (
        f'<tr{tr}><td class="n">{d.rank}</td><td>{esc(d.name)} <span class="mono">{esc(d.code)}</span></td>'
        f'<td class="n">{d.outlets}</td><td class="n">{d.expected}</td><td class="n">{d.received}</td>'
        f'<td class="n">{d.valid}</td>{_pct_cell(d.transmission_rate)}{_pct_cell(d.validity_rate)}'
        f"{_pct_cell(d.effective_rate)}<td>{ents_cell}</td>"
        f"<td>{tag}</td><td>{reasons_html}</td></tr>"
    )


def _below_table(r: Report) -> str:
    if not r.below_target:
        return f'<p class="good">所有考核排放口传输有效率均达到 {r.target * 100:g} %。</p>'
    out = [
        "<table><thead><tr><th>序号</th><th>区县</th><th>企业</th><th>排放口</th><th>MN</th><th>应收</th>"
        "<th>实收</th><th>有效</th><th>传输率</th><th>有效率</th><th>传输有效率</th></tr></thead><tbody>"
    ]
    for i, o in enumerate(r.below_target, start=1):
        silent = ' <span class="tag">无任何数据</span>' if o.silent else ""
        out.append(
            f'<tr class="below"><td class="n">{i}</td><td>{esc(o.district)}</td><td>{esc(o.enterprise)}</td>'
            f'<td>{esc(o.outlet)}{silent}</td><td class="mono">{esc(o.mn)}</td><td class="n">{o.expected}</td>'
            f'<td class="n">{o.received}</td><td class="n">{o.valid}</td>{_pct_cell(o.transmission_rate)}'
            f"{_pct_cell(o.validity_rate)}{_pct_cell(o.effective_rate)}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _exceedance_table(r: Report) -> str:
    if not r.exceedances:
        return '<p class="good">本期无小时均值超标。</p>'
    out = [
        "<table><thead><tr><th>企业</th><th>区县</th><th>超标次数</th><th>超标小时数</th><th>分因子</th>"
        "<th>最大超标（排放口 · 因子）</th><th>峰值 / 限值（mg/m³，折算）</th><th>倍数</th></tr></thead><tbody>"
    ]
    for e in r.exceedances:
        detail = "<br>".join(f"{esc(pollutant_label(p))}：{n} 次 / {h:g} 小时" for p, (n, h) in e.by_pollutant.items())
        ratio = e.peak_ratio
        out.append(
            f'<tr class="exceedance"><td>{esc(e.enterprise)}</td><td>{esc(e.district)}</td>'
            f'<td class="n">{e.events}</td><td class="n">{e.hours:g}</td><td>{detail}</td>'
            f"<td>{esc(e.worst_outlet)} · {esc(pollutant_label(e.worst_pollutant))}</td>"
            f'<td class="n">{esc(num(e.peak) or "—")} / {esc(num(e.limit) or "—")}</td>'
            f'<td class="n">{"—" if ratio is None else f"{ratio:.2f}"}</td></tr>'
        )
    out.append("</tbody></table>")
    return "".join(out)


#: Rows of the township ranking shown (the worst) and of the hotspot list shown; the CSVs hold all.
WORST_TOWNSHIPS = 10
HOTSPOTS_SHOWN = 20
NO_GRID_DATA = "无网格监测数据。"


def _change_cell(v: float | None) -> str:
    if v is None:
        return '<td class="n">—</td>'
    cls = "good" if v < 0 else "bad" if v > 0 else ""
    return f'<td class="n {cls}">{esc(f"{v * 100:+.1f} %")}</td>'


def _num_cell(v: float | None, fmt: str) -> str:
    return f'<td class="n">{"—" if v is None else esc(format(v, fmt))}</td>'


def _ranking_section(r: Report) -> str:
    g = r.grid
    if g is None:
        return ""
    out = ["<h2>乡镇（街道）环境空气质量排名</h2>"]
    rk = g.ranking
    if rk is None:
        return out[0] + f'<p class="note">{NO_GRID_DATA}</p>'
    prev = rk.previous.key if rk.previous else "—"
    ly = rk.last_year.key if rk.last_year else "—"
    out.append(
        f'<p class="note">依据：{esc(rk.basis)}。按网格微站（{esc("、".join(rk.kinds))}）日均值计算，'
        f"乡镇日均值为其点位有效日均值的算术平均；综合指数越小空气质量越好，排名第 1 为最好。"
        f"参与排名 {len(rk.city)} 个乡镇（街道），以下列出综合指数最高的 {WORST_TOWNSHIPS} 个（完整排名见 "
        f"township_ranking.csv）。环比（与 {esc(prev)} 比）、同比（与 {esc(ly)} 比）为综合指数变化率，负值为改善；"
        "优良天为日 AQI ≤ 100（HJ 633）。</p>"
    )
    if g.city:
        out.append(
            "<table><thead><tr><th>全市排名</th><th>乡镇（街道）</th><th>区县</th><th>综合指数</th>"
            "<th>PM2.5（µg/m³）</th><th>PM10（µg/m³）</th><th>优良天数比例</th><th>环比</th><th>同比</th>"
            "<th>点位数</th></tr></thead><tbody>"
        )
        for row in g.worst(WORST_TOWNSHIPS):
            e, f = row.entry, row.entry.figures
            out.append(
                f'<tr class="township"><td class="n">{e.rank} / {e.of}</td><td>{esc(f.township)}</td>'
                f"<td>{esc(row.district)}</td>{_num_cell(f.index, '.2f')}{_num_cell(f.pm25, '.1f')}"
                f"{_num_cell(f.pm10, '.1f')}{_pct_cell(f.good_day_share)}{_change_cell(e.change_vs_previous)}"
                f'{_change_cell(e.change_vs_last_year)}<td class="n">{len(f.sensors)}</td></tr>'
            )
        out.append("</tbody></table>")
    if rk.unranked:
        items = "".join(
            f"<li>{esc(f.township)}（{esc(g.district_names.get(f.district, f.district))}）："
            f"{esc('；'.join(f.incomplete))}</li>"
            for f in rk.unranked
        )
        out.append(f'<p class="note">数据不足未参与排名：</p><ul class="reasons">{items}</ul>')
    return "".join(out)


def _hotspot_section(r: Report) -> str:
    g = r.grid
    if g is None:
        return ""
    head = "<h2>网格热点点位（明显高于周边，按热点小时数）</h2>"
    if g.ranking is None and not g.hotspots:
        return head + f'<p class="note">{NO_GRID_DATA}</p>'
    if not g.hotspots:
        return head + '<p class="good">本期无网格热点。</p>'
    out = [
        head,
        f'<p class="note">前 {HOTSPOTS_SHOWN} 个点位（完整列表见 grid_hotspots.csv）；热点小时数为 grid_hotspot '
        "事件落在本期内的小时数。</p>",
        "<table><thead><tr><th>序号</th><th>点位</th><th>区县</th><th>乡镇（街道）</th><th>热点小时数</th>"
        "<th>热点次数</th><th>因子</th><th>最高小时值</th></tr></thead><tbody>",
    ]
    for i, h in enumerate(g.hotspots[:HOTSPOTS_SHOWN], start=1):
        name = f"{h.name} " if h.name else ""
        out.append(
            f'<tr class="hotspot"><td class="n">{i}</td><td>{esc(name)}<span class="mono">{esc(h.sensor)}</span></td>'
            f"<td>{esc(h.district)}</td><td>{esc(h.township)}</td>"
            f'<td class="n">{h.hours:g}</td><td class="n">{h.events}</td><td>{esc("、".join(h.pollutants))}</td>'
            f"{_num_cell(h.peak, 'g')}</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


_LEVEL_ZH = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色", "none": "无"}
_VIOLATION_ZH = {
    "emergency_noncompliance": "减排未落实",
    "emergency_stop_violation": "应停未停",
    "staggered_production_violation": "错峰期间生产",
    "treatment_off": "治污设施未运行",
}


def _when(t: datetime | None) -> str:
    return "解除前" if t is None else t.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def _warning_section(r: Report) -> str:
    """Heavy-pollution warnings (issue 16): each warning, the listed enterprises, compliant or not, evidence."""
    if not r.warnings:
        return '<p class="note">本期无重污染天气预警。</p>'
    out: list[str] = []
    for w in r.warnings:
        out.append(
            f"<h3>{esc(_LEVEL_ZH.get(w.level.label, w.level.label))}预警：{esc(_when(w.start))} 至 {esc(_when(w.end))}"
            f"（发布：{esc(w.set_by or '—')}；清单企业 {len(w.enterprises)} 家，未落实 {w.not_compliant} 家）</h3>"
        )
        if not w.enterprises:
            out.append('<p class="note">应急减排清单中无企业。</p>')
            continue
        out.append(
            "<table><thead><tr><th>企业</th><th>区县</th><th>绩效分级</th><th>生产线</th><th>结论</th>"
            "<th>证据（类型 · 因子/生产线 · 开始 · 小时数 · 实测 / 允许 · 依据）</th></tr></thead><tbody>"
        )
        for e in w.enterprises:
            evidence = "<br>".join(
                f"{esc(_VIOLATION_ZH.get(ev.type, ev.type))} · {esc(pollutant_label(ev.pollutant))} · "
                f"{esc(_when(ev.start))} · {ev.hours:g} h · {esc(num(ev.peak) or '—')} / {esc(num(ev.limit) or '—')}"
                f" · {esc(ev.profile or '')}"
                for ev in e.events
            )
            verdict = '<span class="good">未发现违规</span>' if e.compliant else '<span class="bad">未落实</span>'
            out.append(
                f"<tr><td>{esc(e.enterprise)}</td><td>{esc(e.district)}</td><td>{esc(e.grade or '—')}</td>"
                f"<td>{esc('、'.join(e.lines))}</td><td>{verdict}</td><td>{evidence or '—'}</td></tr>"
            )
        out.append("</tbody></table>")
    out.append(
        '<p class="note">排放速率 = 实测干基标态浓度 × 标干流量（HJ 75-2017），kg/h；减排要求为应急减排基数 × '
        "（1 − 减排比例）。应停未停依据烟气流量、设施运行状态（SBxxx-RS）或生产用电（分表计电）判断。"
        "无数据的小时不作判断。</p>"
    )
    return "".join(out)


def _marks_tables(r: Report) -> str:
    """Marked hours per outlet and type, caps used, late declarations (issue 14)."""
    m = r.marks
    if not (m.marked or m.caps or m.late):
        return '<p class="note">本期无企业标记、停产申报或修约。</p>'
    out: list[str] = []
    rate_zh = {"as_measured": "按实际数据", "removed": "不计应收", "invalid": "计为无效", "valid": "计为有效"}
    if m.marked:
        out.append(
            "<table><thead><tr><th>企业</th><th>排放口（MN）</th><th>标记类型</th><th>标记小时数</th>"
            "<th>超标判定</th><th>传输有效率</th><th>记录</th></tr></thead><tbody>"
        )
        for row in m.marked:
            out.append(
                f"<tr><td>{esc(row.enterprise)}</td><td>{esc(row.outlet)}（{esc(row.mn)}）</td>"
                f'<td>{esc(row.type_name)}（{esc(row.type)}）</td><td class="n">{row.hours}</td>'
                f"<td>{'参与' if row.judged else '不参与'}</td><td>{esc(rate_zh.get(row.rate, row.rate))}</td>"
                f"<td>{esc('、'.join(row.records))}</td></tr>"
            )
        out.append("</tbody></table>")
    if m.caps:
        out.append(
            "<h3>年度累计时长上限</h3><table><thead><tr><th>企业</th><th>排放口（MN）</th><th>上限类别</th><th>年度</th>"
            "<th>已用小时</th><th>上限（小时）</th><th>超出上限小时（照常判定）</th></tr></thead><tbody>"
        )
        for c in m.caps:
            cap = "未设定" if c.cap is None else f"{c.cap:g}" + ("" if c.verified else "（待核实）")
            cls = ' class="exceedance"' if c.over else ""
            out.append(
                f"<tr{cls}><td>{esc(c.enterprise)}</td><td>{esc(c.outlet)}（{esc(c.mn)}）</td><td>{esc(c.name)}</td>"
                f'<td class="n">{c.year}</td><td class="n">{c.used}</td><td class="n">{esc(cap)}</td>'
                f'<td class="n">{c.over}</td></tr>'
            )
        out.append("</tbody></table>")
    if m.late:
        out.append(
            "<h3>逾期停产申报（保留记录，不产生效力）</h3><table><thead><tr><th>企业</th><th>排放口（MN）</th>"
            "<th>申报时段</th><th>收到时间</th><th>申报人</th><th>说明</th></tr></thead><tbody>"
        )
        for d in m.late:
            span = f"{d.start.astimezone(BEIJING):%Y-%m-%d %H:%M} 至 {d.end.astimezone(BEIJING):%Y-%m-%d %H:%M}"
            out.append(
                f"<tr><td>{esc(d.enterprise)}</td><td>{esc(d.outlet)}（{esc(d.mn)}）</td><td>{esc(span)}</td>"
                f"<td>{d.received_at.astimezone(BEIJING):%Y-%m-%d %H:%M}</td><td>{esc(d.submitter)}</td>"
                f"<td>{esc(d.note)}</td></tr>"
            )
        out.append("</tbody></table>")
    return "".join(out)


def _monthly_table(r: Report) -> str:
    """Monthly results per outlet (``cems_monthly``): month validity and the monthly rule."""
    if not r.monthly:
        return '<p class="note">数据库中尚无本时段所涉月份的月度结果（月份结束后写入，次月 10 日后为最终结果）。</p>'
    out = [
        "<table><thead><tr><th>区县</th><th>企业</th><th>排放口</th><th>MN</th><th>因子</th><th>月份</th>"
        "<th>有效日数 / 应有</th><th>月有效</th><th>有效小时</th><th>达标小时 / 考核小时</th><th>达标比例</th>"
        "<th>要求</th><th>月度考核</th><th>依据</th></tr></thead><tbody>"
    ]
    for row in r.monthly:
        m = row.result
        meets = {True: '<td class="good">达标</td>', False: '<td class="bad">未达标</td>', None: "<td>—</td>"}
        rule = f"{m.hours_within_limit} / {m.rule_hours}" if m.rule_hours else "—"
        if m.marked_hours:  # MEE 公告2022年第21号: marked hours are not judged
            rule += f"（另 {m.marked_hours} 小时标记不参与判定）"
        out.append(
            f"<tr><td>{esc(row.district)}</td><td>{esc(row.enterprise)}</td><td>{esc(row.outlet)}</td>"
            f'<td class="mono">{esc(m.mn)}</td><td>{esc(pollutant_label(m.pollutant))}</td><td>{esc(m.month)}</td>'
            f'<td class="n">{m.valid_days} / {m.days_needed}</td>'
            f'<td class="{"good" if m.month_valid else "bad"}">{"是" if m.month_valid else "否"}</td>'
            f'<td class="n">{m.valid_hours}</td><td class="n">{esc(rule)}</td>{_pct_cell(m.share_within_limit)}'
            f'<td class="n">{"—" if m.share_required is None else f"≥ {m.share_required * 100:g} %"}</td>'
            f"{meets[m.meets_monthly_rule]}<td>{esc(m.citation or 'HJ 75-2017')}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _card(value: str, key: str, cls: str = "") -> str:
    c = f" {cls}" if cls else ""
    return f'<div class="card"><div class="v{c}">{esc(value)}</div><div class="k">{esc(key)}</div></div>'


def render_html(r: Report, *, generated: datetime | None = None) -> str:
    s = r.summary
    kind = _KIND_TITLE.get(r.period.kind, "报告")
    title = f"{r.city}重点排污单位自动监控数据传输有效率{kind}（{r.period.label}）"
    eff_cls = "bad" if s.effective_rate is not None and s.effective_rate < r.target else "good"
    cards = "".join(
        [
            _card(f"{pct(s.effective_rate) or '—'} %", "全市传输有效率", eff_cls),
            _card(f"{pct(s.transmission_rate) or '—'} %", "传输率"),
            _card(f"{pct(s.validity_rate) or '—'} %", "有效率"),
            _card(f"{s.outlets_meeting_target} / {s.outlets}", f"达标（≥ {r.target * 100:g} %）排放口"),
            _card(str(s.outlets_below_target), "未达标排放口", "bad" if s.outlets_below_target else "good"),
            _card(
                f"{s.supervised_districts} / {s.districts}",
                "挂牌督办区县",
                "bad" if s.supervised_districts else "good",
            ),
            _card(str(s.exceedance_events), "小时超标次数"),
            _card(f"{s.exceedance_hours:g}", "超标小时数"),
            _card(str(s.exceeding_enterprises), "超标企业数"),
        ]
    )
    factors = "、".join(pollutant_label(f) for f in r.factors)
    gen = f"；生成时间 {generated.astimezone(BEIJING).strftime('%Y-%m-%d %H:%M')}" if generated is not None else ""
    period_text = f"{r.period.first.isoformat()} 至 {r.period.last.isoformat()}（北京时间）"
    if r.end < r.period.end:
        period_text += f"，统计截至 {r.end.astimezone(BEIJING).strftime('%Y-%m-%d %H:%M')}（时段未结束）"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="sub">统计时段：{esc(period_text)}；考核因子：{esc(factors)}{esc(gen)}</p>',
        f'<div class="cards">{cards}</div>',
        "<h2>各区县传输有效率排名与挂牌督办</h2>",
        f'<p class="note">区县传输有效率低于 {r.target * 100:g} %，或当月有 {r.enterprise_threshold} 家（含）'
        "以上企业小时均值超标的，实行挂牌督办。</p>",
        district_chart(r),
        _district_table(r),
        f"<h2>传输有效率未达 {r.target * 100:g} % 的排放口（由低到高）</h2>",
        _below_table(r),
        "<h2>企业超标情况</h2>",
        _exceedance_table(r),
        "<h2>月度结果（月有效性、月度考核）</h2>",
        '<p class="note">月有效：有效日数 ≥ 25 日（2 月 ≥ 23 日），HJ 75-2017；有效日为有效小时 ≥ 20 的日。'
        "钢铁超低排放月度考核：当月有效小时中折算浓度不超过限值的比例 ≥ 95 %（环大气〔2019〕35号）；"
        "单个小时超过限值仍为小时超标（HJ 76-2017），但不单独构成未达到该政策要求。月份结束后写入，"
        "至次月 10 日前随修约数据更新。</p>",
        _monthly_table(r),
        quality_html(r.quality),
        _ranking_section(r),
        _hotspot_section(r),
        "<h2>重污染天气应急响应</h2>",
        _warning_section(r),
        "<h2>企业标记、停产申报与修约</h2>",
        '<p class="note">标记不参与超标判定的小时不计为超标（生态环境部公告2022年第21号）；标记、修约须在 10 日内提交，'
        "当月数据于次月 10 日后终结；逾期的停产申报保留记录但不产生效力。</p>",
        _marks_tables(r),
        *(["<h2>电子督办：事件签收、督办与办结</h2>", cases_html(r.cases, r.case_sla_hours)] if r.cases else []),
        "<h2>数据可用性（排放口 × 日）</h2>",
        legend(),
        f'<div style="overflow-x:auto">{heat_map(r)}</div>',
        '<h2>说明</h2><p class="note">传输有效率 = 传输率 × 有效率；传输率 = 实收小时记录数 ÷ 应收小时记录数；'
        "有效率 = 有效（标记 N）小时记录数 ÷ 实收小时记录数。按排放口、考核因子、小时（北京时间）计数；"
        "申报停运时段不计应收。区县、全市数字为先汇总记录数再相除。周报、日报的挂牌督办判定仅供参考，"
        "以月度结果为准。</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
