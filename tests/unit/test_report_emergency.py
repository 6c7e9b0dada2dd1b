"""The report's heavy-pollution section (issue 16): each warning, the listed enterprises, verdict and evidence."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from registries import emergency_line, one_outlet  # tests/registries.py

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.report import Period, build_report, render_html, write_report
from cems.report._emergency import history_from_events
from cems.rules.emergency import WarningLevel, WarningPeriod
from cems.rules.emergency_tracker import warning_event
from cems.rules.events import Event

T0 = datetime(2026, 12, 1, tzinfo=BEIJING)
REG = parse_registry(
    one_outlet(enterprise=emergency_line(line='measure = { orange = { cut = { a21026 = 0.2 } }, red = "stop" }\n'))
)


def violation(start: datetime, hours: int) -> Event:
    return Event(
        "emergency_noncompliance", "MN0001", "E001", "130602", "a21026", start, start + timedelta(hours=hours),
        hours, 9.0, 8.0, None, "orange warning: cut 20% of baseline 10 kg/h → allowed 8.000 kg/h", "closed",
    )  # fmt: skip


def settings() -> list[Event]:
    orange = WarningPeriod(WarningLevel.ORANGE, T0, T0 + timedelta(days=3), "张三", T0 - timedelta(hours=5))
    lift = WarningPeriod(WarningLevel.NONE, T0 + timedelta(days=2), None, "李四", T0 + timedelta(days=2))
    red = WarningPeriod(
        WarningLevel.RED, T0 + timedelta(days=10), T0 + timedelta(days=11), "张三", T0 + timedelta(days=9)
    )
    return [warning_event(p) for p in (lift, red, orange)]  # any order: the settings' times order them


def test_history_from_events_orders_settings_by_when_they_were_made() -> None:
    h = history_from_events(settings())
    assert [(a, b, lv) for a, b, lv, _ in h.warnings()] == [
        (T0, T0 + timedelta(days=2), WarningLevel.ORANGE),
        (T0 + timedelta(days=10), T0 + timedelta(days=11), WarningLevel.RED),
    ]


def test_warning_section(tmp_path: Path) -> None:
    events = [*settings(), violation(T0 + timedelta(hours=8), 2)]
    r = build_report(REG, Period.month("2026-12"), [], [], emergency_events=events)
    assert [(w.level, w.set_by, w.not_compliant) for w in r.warnings] == [
        (WarningLevel.ORANGE, "张三", 1),
        (WarningLevel.RED, "张三", 0),
    ]
    e = r.warnings[0].enterprises[0]
    assert e.enterprise_id == "E001" and e.grade == "C" and e.lines == ("kiln1",) and not e.compliant
    assert e.events[0].peak == 9.0 and r.warnings[1].enterprises[0].compliant
    html = render_html(r)
    assert "重污染天气应急响应" in html and "橙色预警" in html and "减排未落实" in html and "未落实" in html
    paths = write_report(r, tmp_path)
    csv = (tmp_path / "emergency.csv").read_text(encoding="utf-8-sig")
    assert tmp_path / "emergency.csv" in paths and "emergency_noncompliance" in csv and "orange" in csv
    # a month without warnings: no section rows, no emergency.csv
    quiet = build_report(REG, Period.month("2026-10"), [], [], emergency_events=events)
    assert quiet.warnings == () and "本期无重污染天气预警" in render_html(quiet)
