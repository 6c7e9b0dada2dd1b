"""Monthly results live (issue 12): month validity and the steel ultra-low monthly rule come out of the engine
when a month closes, are revised by late hours and days until the month is final (the 10th of the next
month), and equal :func:`cems.rules.daily.month_results` of the final records, whatever the arrival order."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_daily import das_hour, registry
from test_marks import record

from cems.engine import ComplianceEngine, EngineOutput
from cems.errors import RejectedMessage
from cems.hour_archive import TempHourArchive
from cems.model import BEIJING, Reading
from cems.rules.daily import DailyRecord, MonthResult, month_results
from cems.rules.hourly import HourlyRecord

H = timedelta(hours=1)
#: February 2026 (28 days: 23 valid days needed) and the start of March
FEB = datetime(2026, 2, 1, tzinfo=BEIJING)


class Live:
    def __init__(self) -> None:
        self.engine = ComplianceEngine(registry(), archive=TempHourArchive())
        self.hourly: dict[tuple[str, str, datetime], HourlyRecord] = {}
        self.daily: dict[tuple[str, str, object], DailyRecord] = {}
        self.monthly: dict[tuple[str, str, str], MonthResult] = {}
        self.month_updates: list[MonthResult] = []

    def take(self, out: EngineOutput) -> None:
        for h in out.hourly:
            self.hourly[(h.mn, h.pollutant, h.hour_start)] = h
        for d in out.daily:
            self.daily[(d.mn, d.pollutant, d.day)] = d
        for m in out.monthly:
            self.monthly[(m.mn, m.pollutant, m.month)] = m
            self.month_updates.append(m)

    def arrive(self, r: Reading, now: datetime) -> None:
        self.take(self.engine.on_clock(now))
        self.take(self.engine.on_readings([(r, registry().outlet(r.mn))]))  # type: ignore[list-item]


def _sinter_month(levels: dict[int, float]) -> list[Reading]:
    """DAS hourly records of the sinter outlet (SO2 limit 35 at 16 % O2) for every hour of February with a
    level (hour index → mg/m³ at the reference O2)."""
    return [das_hour("SINTER", FEB + k * H, lv, 16.0) for k, lv in sorted(levels.items())]


def test_the_month_closes_with_its_last_day_and_is_revised_until_the_tenth() -> None:
    # every hour of February at 20 (within 35), except its last 40 hours at 50: 632 / 672 = 94.0 % < 95 %
    hours = 28 * 24
    levels = {k: (50.0 if k >= hours - 40 else 20.0) for k in range(hours)}
    live = Live()
    for r in _sinter_month(levels):
        live.arrive(r, r.data_time + H + timedelta(minutes=1))
    live.take(live.engine.on_clock(FEB + hours * H + 2 * H))  # 1 March 02:00: February's days are all closed
    m = live.monthly[("SINTER", "a21026", "2026-02")]
    assert (m.valid_days, m.days_needed, m.month_valid) == (28, 23, True)
    assert (m.rule_hours, m.hours_within_limit, m.meets_monthly_rule) == (672, 632, False)
    assert m.share_required == 0.95 and "2019" in m.citation
    # on 5 March (inside the 10-day window) the DAS re-sends corrected records of 10 of those hours (within the
    # limit): 642 / 672 = 95.5 %
    fixes = [das_hour("SINTER", FEB + (hours - 40 + k) * H, 20.0, 16.0) for k in range(10)]
    for r in fixes:
        live.arrive(r, datetime(2026, 3, 5, tzinfo=BEIJING))
    m = live.monthly[("SINTER", "a21026", "2026-02")]
    assert (m.hours_within_limit, m.meets_monthly_rule) == (642, True)
    # after the 10th of March the month is final: a later revision moves nothing
    n = len(live.month_updates)
    live.arrive(das_hour("SINTER", FEB + (hours - 1) * H, 20.0, 16.0), datetime(2026, 3, 12, tzinfo=BEIJING))
    assert len(live.month_updates) == n and live.monthly[("SINTER", "a21026", "2026-02")] == m


@settings(max_examples=20, deadline=None)
@given(
    bad=st.sets(st.integers(0, 28 * 24 - 1), max_size=60),
    missing=st.sets(st.integers(0, 28 * 24 - 1), max_size=150),
    late=st.sets(st.integers(0, 28 * 24 - 1), max_size=40),
    delay_days=st.integers(1, 9),
)
def test_live_months_equal_the_month_results_of_the_final_records(
    bad: set[int], missing: set[int], late: set[int], delay_days: int
) -> None:
    hours = 28 * 24 + 24  # February and 1 March (closes February)
    levels = {k: (50.0 if k in bad else 20.0) for k in range(hours) if k not in missing}
    readings = _sinter_month(levels)
    arrivals = sorted(
        (r.data_time + H + (timedelta(days=delay_days) if i in late else timedelta(minutes=1)), i, r)
        for i, r in enumerate(readings)
    )
    live = Live()
    for t, _, r in arrivals:
        live.arrive(r, t)
    live.take(live.engine.finish())
    want = month_results(live.hourly.values(), live.daily.values())
    assert sorted(live.monthly.values(), key=lambda m: (m.mn, m.pollutant, m.month)) == want


def test_marked_hours_are_left_out_of_the_monthly_rule_and_a_late_mark_revises_the_month() -> None:
    """MEE 公告2022年第21号: data marked "not judged" are not used to judge exceedances — nor the steel monthly
    rule's share (环大气〔2019〕35号). A device-fault mark received after February closed (on 5 March, inside
    the 10-day window) over 10 of its 40 bad hours revises the month; its withdrawal restores it."""
    hours = 28 * 24
    levels = {k: (50.0 if k >= hours - 40 else 20.0) for k in range(hours)}
    live = Live()
    for r in _sinter_month(levels):
        live.arrive(r, r.data_time + H + timedelta(minutes=1))
    live.take(live.engine.on_clock(FEB + hours * H + 2 * H))
    key = ("SINTER", "a21026", "2026-02")
    before = live.monthly[key]
    assert (before.rule_hours, before.hours_within_limit, before.meets_monthly_rule) == (672, 632, False)
    assert before.marked_hours == 0

    start = FEB + (hours - 40) * H
    march5 = datetime(2026, 3, 5, tzinfo=BEIJING)
    fault = record("SINTER", "mark", start, start + 10 * H, type_="fault", reply="f1", received=march5)
    live.take(live.engine.on_mark(live.engine.marks.check(fault, march5)))
    m = live.monthly[key]
    # 632 within of 662 judged hours = 95.5 % ≥ 95 %; the marked hours are out of both counts
    assert (m.rule_hours, m.hours_within_limit, m.marked_hours, m.meets_monthly_rule) == (662, 632, 10, True)
    assert m.valid_hours == before.valid_hours  # validity is the 90 % rule's business, not changed here

    # a mark over hours within the limit also takes them out: 20 good hours → 612 / 642 = 95.3 %
    good = record("SINTER", "mark", start - 20 * H, start, type_="calibration", reply="c1", received=march5)
    live.take(live.engine.on_mark(live.engine.marks.check(good, march5)))
    m = live.monthly[key]
    assert (m.rule_hours, m.hours_within_limit, m.marked_hours) == (642, 612, 30)

    undo = record("SINTER", "withdrawal", start, start + 10 * H, reply="w1", received=march5, target=fault.record_id)
    live.take(live.engine.on_mark(live.engine.marks.check(undo, march5)))
    m = live.monthly[key]
    assert (m.rule_hours, m.hours_within_limit, m.marked_hours, m.meets_monthly_rule) == (652, 612, 20, False)

    # once the month is final (after 10 March) a mark over it is refused as too late; the month stays
    late = record("SINTER", "mark", start, start + 10 * H, type_="fault", reply="f2", received=march5)
    with pytest.raises(RejectedMessage, match="mark_too_late"):
        live.engine.marks.check(late, datetime(2026, 3, 12, tzinfo=BEIJING))
    # and the month no longer moves: closing it again returns nothing
    live.take(live.engine.on_clock(datetime(2026, 3, 12, tzinfo=BEIJING)))
    assert live.monthly[key] == m


def test_a_mark_received_before_the_month_closed_counts_as_one_received_after() -> None:
    hours = 28 * 24
    levels = {k: (50.0 if k >= hours - 40 else 20.0) for k in range(hours)}
    start = FEB + (hours - 40) * H
    results = []
    for early in (True, False):
        live = Live()
        fault = record("SINTER", "mark", start, start + 10 * H, type_="fault", reply="f1", received=start + 11 * H)
        if early:
            live.take(live.engine.on_mark(live.engine.marks.check(fault, start + 11 * H)))
        for r in _sinter_month(levels):
            live.arrive(r, r.data_time + H + timedelta(minutes=1))
        live.take(live.engine.on_clock(FEB + hours * H + 2 * H))
        if not early:
            live.take(live.engine.on_mark(live.engine.marks.check(fault, FEB + hours * H + 3 * H)))
        results.append(live.monthly[("SINTER", "a21026", "2026-02")])
    assert results[0] == results[1] and results[0].marked_hours == 10 and results[0].meets_monthly_rule
