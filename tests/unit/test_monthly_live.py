"""Monthly results live (issue 12): month validity and the steel ultra-low monthly rule come out of the engine
when a month closes, are revised by late hours and days until the month is final (the 10th of the next
month), and equal :func:`cems.rules.daily.month_results` of the final records, whatever the arrival order."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from test_daily import das_hour, registry

from cems.engine import ComplianceEngine, EngineOutput
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
