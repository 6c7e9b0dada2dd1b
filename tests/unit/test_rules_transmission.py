"""The 90 % data-transmission effective rate and district supervision (DOMAIN.md §5)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from cems.model import BEIJING, NOX, PM, SO2
from cems.registry import Registry, parse_registry
from cems.rules.hourly import HourlyRecord
from cems.rules.transmission import RateCounter, month_bounds

FACTORS = (PM, SO2, NOX)
H = timedelta(hours=1)
D1 = datetime(2026, 1, 1, tzinfo=BEIJING)


def registry(extra_outlet: str = "", threshold: int = 2, extra: str = "") -> Registry:
    return parse_registry(
        f"""
[city]
name = "Test"
transmission_rate_target = 0.9
supervision_enterprise_threshold = {threshold}

[[district]]
code = "D1"
name = "One"
[[district]]
code = "D2"
name = "Two"

[[enterprise]]
id = "E1"
name = "Plant 1"
district = "D1"
[[enterprise.outlet]]
mn = "M1"
name = "M1"
profile = "coal_power_ultra_low"
since = 2026-01-01
{extra_outlet}
[[enterprise.outlet]]
mn = "M1B"
name = "M1B"
profile = "coal_power_ultra_low"
since = 2030-01-01

[[enterprise]]
id = "E2"
name = "Plant 2"
district = "D1"
[[enterprise.outlet]]
mn = "M2"
name = "M2"
profile = "coal_power_ultra_low"
since = 2030-01-01

[[enterprise]]
id = "E3"
name = "Plant 3"
district = "D2"
[[enterprise.outlet]]
mn = "M3"
name = "M3"
profile = "coal_power_ultra_low"
since = 2030-01-01
{extra}
"""
    )


def rec(
    mn: str,
    code: str,
    hour: datetime,
    *,
    valid: bool = True,
    flag: str = "N",
    source: str = "minutes",
    exceeds: bool = False,
) -> HourlyRecord:
    return HourlyRecord(
        mn=mn, pollutant=code, hour_start=hour, avg=1.0, o2_avg=6.0, zs_avg=1.0, das_zs_avg=None,
        zs_source="computed", valid=valid, flag=flag, source=source, valid_minutes=None, limit=35.0,
        ref_o2=6.0, profile="coal_power_ultra_low", exceeds=exceeds,
    )  # fmt: skip


def full_day(rc: RateCounter, mn: str, day: datetime, hours: range = range(24)) -> None:
    for h in hours:
        for f in FACTORS:
            rc.add(rec(mn, f, day + h * H))


def test_one_day_counts_duplicates_invalid_and_flags() -> None:
    rc = RateCounter(registry())
    full_day(rc, "M1", D1, range(22))  # hours 0–21 of all three factors
    full_day(rc, "M1", D1, range(5))  # duplicates count once
    rc.add(rec("M1", SO2, D1 + 22 * H, valid=False, flag="D"))  # received, not valid
    rc.add(rec("M1", NOX, D1 + 22 * H, valid=True, flag="D"))  # valid hour flagged D: not valid (flag N only)
    rc.add(rec("M1", "a00000", D1 + 23 * H))  # flow is not an assessed factor here
    [day] = rc.outlet_days(D1, D1 + 24 * H)
    # expected 24 × 3 = 72; received 66 + 2 = 68; valid 66.
    assert (day.day, day.expected, day.received, day.valid) == (date(2026, 1, 1), 72, 68, 66)
    assert day.transmission_rate == pytest.approx(68 / 72)
    assert day.validity_rate == pytest.approx(66 / 68)
    assert day.effective_rate == pytest.approx(66 / 72)
    assert day.effective_rate == pytest.approx(day.transmission_rate * day.validity_rate)  # type: ignore[operator]
    assert (day.by_factor[SO2].expected, day.by_factor[SO2].received, day.by_factor[SO2].valid) == (24, 23, 22)
    assert (day.mn, day.enterprise, day.district) == ("M1", "E1", "D1")


def test_das_record_outranks_a_computed_one_and_late_arrivals_count_once() -> None:
    rc = RateCounter(registry())
    rc.add(rec("M1", SO2, D1 + 5 * H, valid=False, flag="D", source="realtime"))
    rc.add(rec("M1", SO2, D1 + 5 * H, source="das_2061"))  # the DAS record wins: valid
    rc.add(rec("M1", SO2, D1 + 6 * H, source="das_2061"))
    rc.add(rec("M1", SO2, D1 + 6 * H, valid=False, flag="D", source="minutes"))  # does not override the DAS
    rc.add(rec("M1", SO2, D1 + 1 * H))  # late (earlier hour after later ones)
    rc.add(rec("M1", SO2, D1 + 1 * H))
    [day] = rc.outlet_days(D1, D1 + 24 * H)
    assert (day.by_factor[SO2].received, day.by_factor[SO2].valid) == (3, 3)


def test_declared_stops_are_removed_from_expected() -> None:
    # Stop 10:00–14:00: 4 hours × 3 factors removed; what arrives during the stop is not counted.
    reg = registry(extra_outlet="stop = [{ from = 2026-01-01T10:00:00, to = 2026-01-01T14:00:00 }]")
    rc = RateCounter(reg)
    full_day(rc, "M1", D1)
    [day] = rc.outlet_days(D1, D1 + 24 * H)
    assert (day.expected, day.received, day.valid) == (60, 60, 60)
    assert day.effective_rate == 1.0


@pytest.mark.parametrize(("end_minute", "expected"), [(15, 3 * 23), (16, 3 * 22), (30, 3 * 22)])
def test_partly_stopped_hour_needs_45_minutes_outside_the_stop(end_minute: int, expected: int) -> None:
    # Stop 09:00–10:MM: hour 9 removed; hour 10 stays expected only with ≥ 45 minutes outside the stop.
    stop = f"stop = [{{ from = 2026-01-01T09:00:00, to = 2026-01-01T10:{end_minute:02d}:00 }}]"
    [day] = RateCounter(registry(extra_outlet=stop)).outlet_days(D1, D1 + 24 * H)
    assert day.expected == expected


def test_day_boundaries_are_beijing_time() -> None:
    rc = RateCounter(registry())
    # 23:00+08:00 on Jan 1 given in UTC (15:00Z) is Jan 1; 16:00Z is Beijing midnight of Jan 2.
    rc.add(rec("M1", SO2, datetime(2026, 1, 1, 15, tzinfo=UTC)))
    rc.add(rec("M1", SO2, datetime(2026, 1, 1, 16, tzinfo=UTC)))
    days = rc.outlet_days(D1, D1 + 48 * H)
    assert [(d.day, d.received) for d in days] == [(date(2026, 1, 1), 1), (date(2026, 1, 2), 1)]


def test_february_month_and_leap_year() -> None:
    for year, days in ((2026, 28), (2024, 29)):
        reg = registry(
            extra=f'[[enterprise.outlet]]\nmn = "MF"\nname = "MF"\nprofile = "cement_kiln"\nsince = {year}-02-01\n'
        )
        rc = RateCounter(reg)
        start, end = month_bounds(year, 2)
        assert (start.isoformat(), end.isoformat()) == (f"{year}-02-01T00:00:00+08:00", f"{year}-03-01T00:00:00+08:00")
        # A record in the last hour of February and one at Beijing midnight of March 1 (outside).
        rc.add(rec("MF", SO2, end - H))
        rc.add(rec("MF", SO2, end))
        months = {m.mn: m for m in rc.outlet_months(start, end)}
        assert months["MF"].month == f"{year}-02"
        assert (months["MF"].expected, months["MF"].received) == (days * 24 * 3, 1)
        assert months["MF"].meets_target is False


def test_replay_window_is_the_months_to_date() -> None:
    rc = RateCounter(registry())
    rc.add(rec("M1", SO2, D1 + 5 * H))
    rc.add(rec("M1", SO2, D1 + 58 * H))  # Jan 3, 10:00
    w = rc.replay_window()
    assert w is not None and w == (D1, D1 + 72 * H)
    rc = RateCounter(registry())
    rc.add(rec("M1", SO2, D1 + 30 * H))  # Jan 2, 06:00: the window still starts on the 1st of the month
    assert rc.replay_window() == (D1, D1 + 48 * H)
    # Outlet without since: from the window start, not from its first record (issue 12 item 4).
    reg = registry(extra='[[enterprise.outlet]]\nmn = "MX"\nname = "MX"\nprofile = "cement_kiln"\n')
    rc = RateCounter(reg)
    rc.add(rec("MX", SO2, D1 + 30 * H))  # Jan 2, 06:00
    rc.add(rec("MX", SO2, D1 + 40 * H))
    days = [d for d in rc.outlet_days() if d.mn == "MX"]
    assert [(d.day, d.expected, d.received) for d in days] == [(date(2026, 1, 1), 72, 0), (date(2026, 1, 2), 72, 2)]
    assert [d.expected for d in rc.outlet_days(D1, D1 + 48 * H) if d.mn == "MX"] == [72, 72]


def test_no_expected_gives_none_and_unknown_outlets_are_ignored() -> None:
    rc = RateCounter(registry())
    rc.add(rec("NOPE", SO2, D1))
    assert rc.unknown == 1
    assert rc.outlet_days(D1, D1 + 24 * H)[0].expected == 72  # M1 (since 2026-01-01), nothing received
    assert rc.outlet_days(D1, D1 + 24 * H)[0].effective_rate == 0.0
    assert rc.outlet_days(D1, D1 + 24 * H)[0].validity_rate is None
    d2 = next(d for d in rc.district_months(D1, D1 + 24 * H) if d.district == "D2")
    assert (d2.expected, d2.transmission_rate, d2.effective_rate, d2.supervised) == (0, None, None, False)


def test_district_month_sums_counts_before_dividing() -> None:
    # Two more outlets of E3 in D2: M4 since Jan 21 (11 days = 264 h), M5 since Jan 1 (744 h).
    extra = (
        '[[enterprise.outlet]]\nmn = "M4"\nname = "M4"\nprofile = "cement_kiln"\nsince = 2026-01-21\n'
        '[[enterprise.outlet]]\nmn = "M5"\nname = "M5"\nprofile = "cement_kiln"\nsince = 2026-01-01\n'
    )
    rc = RateCounter(registry(extra=extra))
    for i in range(20 * 24, 20 * 24 + 200):  # M4: 200 of 264 hours → 75.8 %
        for f in FACTORS:
            rc.add(rec("M4", f, D1 + i * H))
    for i in range(744):  # M5: every hour → 100 %
        for f in FACTORS:
            rc.add(rec("M5", f, D1 + i * H))
    start, end = month_bounds(2026, 1)
    d2 = next(d for d in rc.district_months(start, end) if d.district == "D2")
    assert (d2.expected, d2.received, d2.valid, d2.outlets) == ((264 + 744) * 3, 944 * 3, 944 * 3, 2)
    # Sum first: 944 / 1008 = 93.7 % ≥ 90 % (the mean of the two rates, 87.9 %, would be below).
    assert d2.effective_rate == pytest.approx(944 / 1008)
    assert not d2.supervised and d2.reasons == ()
    months = {m.mn: m for m in rc.outlet_months(start, end)}
    assert months["M4"].effective_rate == pytest.approx(200 / 264) and months["M4"].meets_target is False
    assert months["M5"].meets_target is True


def test_supervision_rate_threshold_is_strict_below_90() -> None:
    reg = registry()
    start, end = D1, D1 + 10 * 24 * H  # 10 days of M1 = 240 hours
    rc = RateCounter(reg)
    for i in range(216):  # exactly 90 %
        for f in FACTORS:
            rc.add(rec("M1", f, D1 + i * H))
    d1 = next(d for d in rc.district_months(start, end) if d.district == "D1")
    assert d1.effective_rate == pytest.approx(0.9) and not d1.supervised
    rc.add(rec("M1", SO2, D1 + 216 * H, valid=False, flag="D"))  # received but not valid: still 90 %
    d1 = next(d for d in rc.district_months(start, end) if d.district == "D1")
    assert d1.effective_rate == pytest.approx(0.9) and d1.validity_rate == pytest.approx(648 / 649)
    assert not d1.supervised
    rc2 = RateCounter(reg)
    for i in range(215):
        for f in FACTORS:
            rc2.add(rec("M1", f, D1 + i * H))
    d1 = next(d for d in rc2.district_months(start, end) if d.district == "D1")
    assert d1.supervised and len(d1.reasons) == 1 and "89.58%" in d1.reasons[0]


def test_supervision_by_distinct_exceeding_enterprises_inclusive() -> None:
    start, end = month_bounds(2026, 1)
    reg = registry(threshold=2)
    rc = RateCounter(reg)
    # E1 exceeds on two outlets (M1, M1B): one enterprise.  Not supervised by this reason.
    rc.add(rec("M1", SO2, D1 + 3 * H, exceeds=True))
    rc.add(rec("M1B", NOX, D1 + 4 * H, exceeds=True))
    # E3 (district D2) exceeds: other district.
    rc.add(rec("M3", SO2, D1 + 4 * H, exceeds=True))
    # E2 exceeds on Feb 1 00:00 Beijing (Jan 31 16:00Z): February, not January.
    rc.add(rec("M2", SO2, datetime(2026, 1, 31, 16, tzinfo=UTC), exceeds=True))
    months = {(d.district, d.month): d for d in rc.district_months(start, month_bounds(2026, 2)[1])}
    jan = months[("D1", "2026-01")]
    assert jan.exceeding_enterprises == ("E1",)
    assert not any("企业" in r for r in jan.reasons)
    feb = months[("D1", "2026-02")]
    assert feb.exceeding_enterprises == ("E2",)
    # Now E2 also exceeds in January (Jan 31 23:00 Beijing = 15:00Z): 2 distinct = threshold (含) → supervised.
    rc.add(rec("M2", SO2, datetime(2026, 1, 31, 15, tzinfo=UTC), exceeds=True))
    jan = next(d for d in rc.district_months(start, end) if d.district == "D1")
    assert jan.exceeding_enterprises == ("E1", "E2") and jan.supervised
    assert any("2 家企业" in r and "阈值 2 家" in r for r in jan.reasons)
    # Both reasons at once: M1 has received almost nothing in January.
    assert len(jan.reasons) == 2


def test_snapshot_restore() -> None:
    rc = RateCounter(registry())
    full_day(rc, "M1", D1, range(10))
    rc.add(rec("M2", SO2, D1, exceeds=True))
    rc2 = RateCounter(registry())
    rc2.restore(json.loads(json.dumps(rc.snapshot())))
    a, b = rc.district_months(D1, D1 + 24 * H), rc2.district_months(D1, D1 + 24 * H)
    assert a == b and rc.outlet_days() == rc2.outlet_days()


def test_silent_outlet_is_assessed_at_zero() -> None:
    """An outlet with no `since` and no data in the window is expected (0 % received), not skipped (live and
    replay alike, issue 12 item 4)."""
    from cems.registry import parse_registry
    from cems.rules import RateCounter
    from cems.rules.hourly import HourlyRecord

    reg = parse_registry(
        '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
        '[[enterprise.outlet]]\nmn="A"\nname="a"\nprofile="cement_kiln"\n'
        '[[enterprise.outlet]]\nmn="SILENT"\nname="s"\nprofile="cement_kiln"\n'
    )
    from datetime import datetime

    from cems.model import BEIJING

    def rec(h: int) -> HourlyRecord:
        return HourlyRecord(
            "A",
            "a21026",
            datetime(2026, 3, 1, h, tzinfo=BEIJING),
            1.0,
            8.0,
            1.0,
            None,
            "computed",
            True,
            "N",
            "minutes",
            60,
            200.0,
            10.0,
            "cement_kiln",
            False,
        )

    rc = RateCounter(reg)
    rc.add(rec(0))
    rc.add(rec(1))
    days = rc.outlet_days()
    assert sorted(d.mn for d in days) == ["A", "SILENT"]
    silent = [d for d in days if d.mn == "SILENT"]
    assert (silent[0].expected, silent[0].received, silent[0].effective_rate) == (72, 0, 0.0)


def test_prune_forgets_old_months_only() -> None:
    from datetime import datetime

    from cems.model import BEIJING
    from cems.registry import parse_registry
    from cems.rules import RateCounter
    from cems.rules.hourly import HourlyRecord

    reg = parse_registry(
        '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
        '[[enterprise.outlet]]\nmn="A"\nname="a"\nprofile="cement_kiln"\nsince=2026-01-01\n'
    )

    def rec(month: int, exceeds: bool) -> HourlyRecord:
        return HourlyRecord(
            "A",
            "a21026",
            datetime(2026, month, 10, 5, tzinfo=BEIJING),
            1.0,
            8.0,
            1.0,
            None,
            "computed",
            True,
            "N",
            "minutes",
            60,
            200.0,
            10.0,
            "cement_kiln",
            exceeds,
        )

    rc = RateCounter(reg)
    for m in (1, 2, 3):
        rc.add(rec(m, True))
    assert rc.prune(datetime(2026, 2, 1, tzinfo=BEIJING)) == 1
    march = datetime(2026, 3, 1, tzinfo=BEIJING), datetime(2026, 4, 1, tzinfo=BEIJING)
    (d,) = rc.district_months(*march)
    assert d.received == 1 and d.exceeding_enterprises == ("E",)
    (jan,) = rc.district_months(datetime(2026, 1, 1, tzinfo=BEIJING), datetime(2026, 2, 1, tzinfo=BEIJING))
    assert jan.received == 0 and jan.exceeding_enterprises == ()
