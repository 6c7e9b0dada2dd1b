"""tests/live_clock.py: the days and hours live tests pick are closed by `cems run`'s clock whenever they start."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from live_clock import LATENESS, TICK, closed_day, probe_outlet  # tests/live_clock.py
from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules.hourly import repair_deadline


def test_closed_day_is_closed_at_any_start_minute() -> None:
    """Every 20 s of two days across a month's and a year's end (Beijing), given in UTC or Beijing time: the day
    ended more than the lateness and a tick ago (its last hour is decided), is at most two days back (within
    its repair window), and is yesterday except in a day's first minutes."""
    start = datetime(2026, 12, 31, tzinfo=BEIJING)
    for k in range(2 * 24 * 180):
        now = start + timedelta(seconds=20 * k)
        for given in (now, now.astimezone(UTC)):
            day = closed_day(given)
            end = datetime.combine(day, time(), BEIJING) + timedelta(days=1)
            assert end + LATENESS + TICK < now, now
            assert (now.date() - day).days in (1, 2), now
            assert now.timestamp() < repair_deadline(int((end - timedelta(hours=1)).timestamp()))
            if now.time() >= time(0, 7):
                assert day == now.date() - timedelta(days=1), now


def test_yesterday_is_not_closed_in_a_days_first_minutes() -> None:
    """What the helper avoids: at 00:03 (Beijing) yesterday's 23:00 hour is still open (decided after 00:05)."""
    now = datetime(2027, 1, 1, 0, 3, tzinfo=BEIJING)
    yesterday_end = datetime(2027, 1, 1, tzinfo=BEIJING)
    assert yesterday_end + LATENESS > now
    assert closed_day(now) == now.date() - timedelta(days=2)


def test_the_probe_outlet_is_a_registry_outlet_of_its_own() -> None:
    """wait_for_a_tick's outlet: in the district given, its own enterprise, beside the test's outlets."""
    reg = parse_registry(one_outlet(tail=probe_outlet("130602")))
    info = reg.outlet("MN9999")
    assert info is not None and info.district.code == "130602" and info.enterprise.id == "EMN9999"
    assert {i.outlet.mn for i in reg.outlets()} == {"MN0001", "MN9999"}
