"""The report's data-quality section (issue 17): signals per enterprise, open and acknowledged, from the
``cems_event`` points of the quality types; retracted signals and other event types left out."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.report import Period, build_quality_section, build_report, load_quality_signals, render_html, write_report
from cems.report._quality import QualitySignal
from cems.rules.events import Event
from cems.sinks.lineprotocol import event_line

REG = parse_registry(one_outlet())
WEEK = Period.week("2026-W45")  # 2026-11-02 .. 2026-11-08
T = datetime(2026, 11, 3, 8, tzinfo=BEIJING)


def ev(type_: str, start: datetime, status: str = "closed", pollutant: str = "a21026", hours: float = 4) -> Event:
    end = None if status == "open" else start + timedelta(hours=hours)
    return Event(type_, "MN0001", "E001", "130602", pollutant, start, end, hours, 17.25, 0.02, None, None, status,
                 evidence=f"{pollutant}: flat at 17.25")  # fmt: skip


def row(e: Event, **ack: Any) -> dict[str, Any]:
    """The ``cems_event`` row InfluxDB returns for the point ``event_line`` writes (epoch s)."""
    line = event_line(e, **ack)
    assert "evidence=" in line
    d: dict[str, Any] = {"time": int(e.start.timestamp()), "type": e.type, "mn": e.mn, "enterprise": e.enterprise,
                         "district": e.district, "pollutant": e.pollutant, "status": e.status,
                         "start": e.start.isoformat(), "end": e.end.isoformat() if e.end else "", "hours": e.hours,
                         "peak": e.peak, "limit": e.limit, "evidence": e.evidence}  # fmt: skip
    d.update(ack)
    return d


class FakeInflux:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[str] = []

    def __call__(self, q: str, epoch: str | None) -> list[dict[str, Any]]:
        self.queries.append(q)
        return [r for r in self.rows if f"'{r['type']}'" in q]


def test_signals_per_enterprise_open_and_acknowledged() -> None:
    rows = [
        row(ev("flatline", T), acked_by="duty", acked_at="2026-11-03T10:00:00+08:00"),
        row(ev("zs_inconsistent", T + timedelta(hours=5), hours=1)),
        row(ev("operation_mismatch", T + timedelta(days=1), status="open", pollutant="SB1", hours=2)),
        row(ev("flatline", T + timedelta(days=2), status="retracted")),
        row(ev("hourly_exceedance", T)),  # not a quality signal
        row(ev("limit_hugging", T - timedelta(days=40), hours=24)),  # long before the period
    ]
    fake = FakeInflux(rows)
    sigs = load_quality_signals(fake, WEEK)
    assert "hourly_exceedance" not in fake.queries[0] and "'flatline'" in fake.queries[0]
    assert [(s.event.type, s.acked_by) for s in sigs] == [
        ("flatline", "duty"),
        ("zs_inconsistent", None),
        ("operation_mismatch", None),
    ]
    q = build_quality_section(REG, sigs)
    assert q.total == 3
    [r] = q.rows
    assert (r.enterprise_id, r.enterprise, r.district) == ("E001", "示例热电有限公司", "竞秀区")
    assert (r.total, r.open, r.acknowledged) == (3, 1, 1)
    assert r.by_type == (1, 0, 1, 0, 0, 0, 1)


def test_report_html_and_csv_show_the_section_with_evidence(tmp_path: Path) -> None:
    sigs = [QualitySignal(ev("flatline", T), "duty", "2026-11-03T10:00:00+08:00")]
    base = build_report(REG, WEEK, [], [])
    rep = replace(base, quality=build_quality_section(REG, sigs))
    html = render_html(rep)
    assert "数据质量与弄虚作假线索" in html and "恒值" in html and "a21026: flat at 17.25" in html
    paths = write_report(rep, tmp_path)
    p = tmp_path / "data_quality.csv"
    assert p in paths
    got = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
    assert got[1][6:] == ["flatline", "a21026", "4", "closed", "duty", "2026-11-03T10:00:00+08:00",
                          "a21026: flat at 17.25"]  # fmt: skip
    # without signals the section says so; a report built without the section leaves it out
    empty = replace(base, quality=build_quality_section(REG, []))
    assert "本期无数据质量线索" in render_html(empty)
    assert "数据质量与弄虚作假线索" not in render_html(base)
