"""Assessment period from the registry, not from the first record (issue 12 item 4).

Expected hours start at the start of the day/month assessed, or at the outlet's ``since``; only documented
stops remove hours.  Live ``cems_rate`` (RateCounter over a day window), ``cems report`` (build_report) and
replay (replay_window) give one figure for the same outlet and day.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from cems.model import BEIJING, NOX, PM, SO2
from cems.registry import Registry, parse_registry
from cems.report import Period, build_report
from cems.rules.hourly import HourlyRecord
from cems.rules.transmission import RateCounter, day_bounds, month_bounds

H = timedelta(hours=1)
NOV = datetime(2026, 11, 1, tzinfo=BEIJING)
FACTORS = (PM, SO2, NOX)

REG = """
[city]
name = "c"
[[district]]
code = "D"
name = "d"
[[enterprise]]
id = "E"
name = "e"
district = "D"
[[enterprise.outlet]]
mn = "LATE"
name = "silent until the 30th, no since"
profile = "coal_power_ultra_low"
[[enterprise.outlet]]
mn = "NEVER"
name = "never reported, no since"
profile = "coal_power_ultra_low"
[[enterprise.outlet]]
mn = "NEW"
name = "monitored from the 30th"
profile = "coal_power_ultra_low"
since = 2026-11-30
[[enterprise.outlet]]
mn = "STOPPED"
name = "declared stop 1st-29th"
profile = "coal_power_ultra_low"
[[enterprise.outlet.stop]]
from = 2026-11-01
to = 2026-11-30
reason = "停产"
"""


def registry() -> Registry:
    return parse_registry(REG)


def rec(mn: str, code: str, hour: datetime, valid: bool = True) -> HourlyRecord:
    return HourlyRecord(
        mn=mn, pollutant=code, hour_start=hour, avg=1.0, o2_avg=6.0, zs_avg=1.0, das_zs_avg=None,
        zs_source="computed", valid=valid, flag="N" if valid else "D", source="minutes", valid_minutes=60,
        limit=35.0, ref_o2=6.0, profile="coal_power_ultra_low", exceeds=False,
    )  # fmt: skip


def day30_records() -> list[HourlyRecord]:
    """LATE, NEW and STOPPED send every hour of the 30th, all valid; NEVER sends nothing."""
    d30 = NOV + 29 * 24 * H
    return [rec(mn, f, d30 + h * H) for mn in ("LATE", "NEW", "STOPPED") for h in range(24) for f in FACTORS]


def test_outlet_silent_until_the_30th_is_not_100_percent() -> None:
    rc = RateCounter(registry())
    rc.add_all(day30_records())
    months = {m.mn: m for m in rc.outlet_months(*month_bounds(2026, 11))}
    late = months["LATE"]
    assert (late.expected, late.received, late.valid) == (30 * 24 * 3, 24 * 3, 24 * 3)
    assert late.effective_rate is not None and abs(late.effective_rate - 1 / 30) < 1e-12
    assert late.meets_target is False
    # since and a declared stop are documented: they remove the hours before
    assert (months["NEW"].expected, months["NEW"].effective_rate) == (72, 1.0)
    assert (months["STOPPED"].expected, months["STOPPED"].effective_rate) == (72, 1.0)


def test_outlet_that_never_reported_is_assessed() -> None:
    rc = RateCounter(registry())
    rc.add_all(day30_records())
    days = {(d.mn, d.day): d for d in rc.outlet_days(*day_bounds(date(2026, 11, 5)))}
    never = days[("NEVER", date(2026, 11, 5))]
    assert (never.expected, never.received, never.valid, never.effective_rate) == (72, 0, 0, 0.0)
    assert ("NEW", date(2026, 11, 5)) not in days  # before its since: not assessed
    months = {m.mn: m for m in rc.outlet_months(*month_bounds(2026, 11))}
    assert (months["NEVER"].expected, months["NEVER"].effective_rate) == (30 * 72, 0.0)
    # nothing at all received yet: every registered outlet is still due (live writes 0 %, not nothing)
    empty = RateCounter(registry())
    assert {d.mn for d in empty.outlet_days(*day_bounds(date(2026, 11, 5)))} == {"LATE", "NEVER", "STOPPED"}


def test_replay_counts_the_month_to_date() -> None:
    rc = RateCounter(registry())
    rc.add_all(day30_records())
    assert rc.replay_window() == (NOV, NOV + 30 * 24 * H)
    late = next(m for m in rc.outlet_months() if m.mn == "LATE")
    assert late.effective_rate is not None and late.effective_rate < 0.9


def test_report_and_live_counter_give_one_figure_per_outlet_and_day() -> None:
    """A crafted day: data 08:00-10:00 only (hour 10 invalid), counted to 11:00 like the live service."""
    day = NOV + 29 * 24 * H
    recs = [rec("LATE", f, day + h * H, valid=h != 10) for h in (8, 9, 10) for f in FACTORS]
    until = day + 11 * H
    live = RateCounter(registry())  # what the compliance runtime writes to cems_rate
    live.add_all(recs)
    live_rows = {d.mn: d for d in live.outlet_days(day, until)}
    report = build_report(registry(), Period.day("2026-11-30"), recs, [], {}, until=until)
    report_rows = {r.mn: r for r in report.outlets}
    for mn in ("LATE", "NEVER", "STOPPED", "NEW"):
        a, b = live_rows[mn], report_rows[mn]
        assert (a.expected, a.received, a.valid, a.effective_rate) == (
            b.expected,
            b.received,
            b.valid,
            b.effective_rate,
        ), mn
    assert (live_rows["LATE"].expected, live_rows["LATE"].received, live_rows["LATE"].valid) == (33, 9, 6)
    assert report_rows["NEVER"].silent and not report_rows["LATE"].silent


def test_report_does_not_start_an_outlet_at_its_first_record() -> None:
    """first_seen (the first record ever) no longer moves the start of the assessed period."""
    recs = [rec("LATE", f, NOV + 29 * 24 * H + h * H) for h in range(24) for f in FACTORS]
    first_seen = {"LATE": NOV + 29 * 24 * H}
    report = build_report(registry(), Period.month("2026-11"), recs, [], first_seen)
    late = next(r for r in report.outlets if r.mn == "LATE")
    assert (late.expected, late.valid) == (30 * 72, 72)
    assert late in report.below_target
