"""CPU of the state commit (issue 20, fourth session): the states of trackers not made yet are built without
making them, and equal the made trackers' snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cems.model import BEIJING
from cems.rules.events import ExceedanceTracker, O2InvalidTracker

_UNTILS = [
    None,
    datetime(2026, 3, 2, 4, 20, tzinfo=UTC),
    datetime(2026, 3, 2, 5, 0, tzinfo=BEIJING),  # on the hour
    datetime(2026, 3, 2, 5, 59, 59, 999_999, tzinfo=BEIJING),
    datetime(2026, 3, 2, 12, 30),  # naive: Beijing time, as the trackers read it
    datetime(1970, 1, 1, 0, 30, tzinfo=UTC) - timedelta(days=3),  # before the epoch
]


@pytest.mark.parametrize("cls", [ExceedanceTracker, O2InvalidTracker])
@pytest.mark.parametrize("until", _UNTILS)
def test_untouched_snapshot_equals_a_fresh_trackers_after_on_clock(
    cls: type[ExceedanceTracker], until: datetime | None
) -> None:
    t = cls("MN1", "ent", "dist")
    if until is not None:
        assert t.on_clock(until) == []
    expected = t.snapshot()
    got = cls.untouched_snapshot("MN1", until)
    assert got == expected
    assert list(got) == list(expected)  # the same key order: the same JSON text in the state row
    if until is not None:
        assert got["decided"] != ExceedanceTracker("MN1", "e", "d").snapshot()["decided"]  # moved by the clock
