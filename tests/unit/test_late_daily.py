"""Daily values revised by late hours (issue 12): an hour revised inside the repair window (a late CN=2061,
a back-fill) rebuilds its closed day — the same ``cems_daily`` key — and its ``daily_exceedance`` (opened,
updated or retracted late, never duplicated); the final days and events equal those of a sorted replay."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_daily import D, das_hour, registry

from cems.engine import ComplianceEngine, EngineOutput
from cems.hour_archive import TempHourArchive
from cems.model import Reading
from cems.replay import replay
from cems.rules.daily import DAILY_EXCEEDANCE, DailyRecord
from cems.rules.events import HOURLY_EXCEEDANCE, RETRACTED_STATUS, Event
from cems.sinks.lineprotocol import daily_line

H = timedelta(hours=1)
JUDGED = {HOURLY_EXCEEDANCE, DAILY_EXCEEDANCE}


class Live:
    def __init__(self) -> None:
        self.engine = ComplianceEngine(registry(), archive=TempHourArchive())
        self.daily: dict[tuple[str, str, Any], DailyRecord] = {}
        self.events: dict[str, Event] = {}
        self.updates: list[tuple[str, Event]] = []

    def take(self, out: EngineOutput) -> None:
        for d in out.daily:
            self.daily[(d.mn, d.pollutant, d.day)] = d
        for u in out.events:
            self.events[u.event.event_id] = u.event
            self.updates.append((u.kind, u.event))

    def arrive(self, r: Reading, now: datetime) -> None:
        self.take(self.engine.on_clock(now))
        self.take(self.engine.on_readings([(r, registry().outlet(r.mn))]))  # type: ignore[list-item]


def _judged(events: Any) -> list[dict[str, Any]]:
    out = []
    for e in events:
        if e.type in JUDGED and e.status != RETRACTED_STATUS:
            j = e.to_json()
            j.pop("late")
            out.append(j)
    return sorted(out, key=lambda j: (j["start"], j["type"], j["pollutant"] or ""))


def _line(r: Reading) -> str:
    vals = {c: {**m.values, "Flag": m.flag or "N"} for c, m in r.measurements.items()}
    return json.dumps({"mn": r.mn, "stream": "hour", "data_time": r.data_time.isoformat(), "values": vals})


def test_a_late_hour_turns_a_closed_day_into_a_daily_exceedance_once() -> None:
    """Waste incineration, SO2 at 11 % O2 (24-h limit 80, GB 18485-2014): the day closes on 23 valid hours at
    83 (exceeds), hour 23:00 missing.  Its DAS record (50) arrives two days later: (23 × 83 + 50) / 24 =
    81.625, still above — the peak is updated, late; a re-sent record at 0 makes it 79.54: retracted."""
    live = Live()
    hours = [das_hour("WI", D + h * H, 83.0, 11.0) for h in range(23)]
    for r in hours:
        live.arrive(r, r.data_time + H + timedelta(minutes=1))
    live.arrive(das_hour("WI", D + 24 * H, 50.0, 11.0), D + 25 * H)  # the next day closes this one
    live.take(live.engine.on_clock(D + 26 * H))
    day = live.daily[("WI", "a21026", D.date())]
    assert day.exceeds and day.valid_hours == 23 and day.zs_avg == 83.0
    opened = [(k, e) for k, e in live.updates if e.type == DAILY_EXCEEDANCE]
    assert [k for k, _ in opened] == ["opened", "closed"]
    live.arrive(das_hour("WI", D + 23 * H, 50.0, 11.0), D + 2 * 24 * H)
    day = live.daily[("WI", "a21026", D.date())]
    assert day.valid_hours == 24 and abs(day.zs_avg - 81.625) < 1e-9 and day.exceeds  # type: ignore[operator]
    ups = [(k, e) for k, e in live.updates if e.type == DAILY_EXCEEDANCE]
    assert [k for k, _ in ups] == ["opened", "closed", "updated"] and ups[-1][1].late
    assert ups[-1][1].peak == day.zs_avg
    live.arrive(das_hour("WI", D + 23 * H, 0.0, 11.0), D + 3 * 24 * H)
    day = live.daily[("WI", "a21026", D.date())]
    assert not day.exceeds
    ups = [(k, e) for k, e in live.updates if e.type == DAILY_EXCEEDANCE]
    assert [k for k, _ in ups][-1] == "retracted" and ups[-1][1].late and ups[-1][1].status == RETRACTED_STATUS
    # the same event id throughout, and the same cems_daily key (InfluxDB overwrites the point)
    assert len({e.event_id for _, e in ups}) == 1
    before = daily_line(day, "E", "D").split(" ")[0]
    assert before.startswith("cems_daily,") and "WI" in before


def test_revisions_after_the_repair_deadline_move_no_day() -> None:
    live = Live()
    for h in range(24):
        live.arrive(das_hour("WI", D + h * H, 85.0, 11.0), D + (h + 1) * H)
    live.take(live.engine.on_clock(D + 12 * 24 * H))
    day = live.daily[("WI", "a21026", D.date())]
    live.arrive(das_hour("WI", D + 5 * H, 0.0, 11.0), D + 12 * 24 * H)
    assert live.daily[("WI", "a21026", D.date())] == day


@settings(max_examples=25, deadline=None)
@given(
    levels=st.lists(st.sampled_from([None, 60.0, 79.0, 85.0, 95.0, 120.0]), min_size=30, max_size=60),
    delays=st.lists(st.sampled_from([0, 0, 0, 30, 300, 1440, 4 * 1440]), min_size=1, max_size=12),
)
def test_live_days_with_hours_late_by_days_equal_the_sorted_replay(
    levels: list[float | None], delays: list[int]
) -> None:
    """DAS hourly records of waste incineration over two to three days, each sent after its hour plus a delay
    of up to four days: the final daily records and the hourly and daily exceedances equal the replay's."""
    # a final compliant hour on time ends every run in both (replay leaves a run at the input's end open)
    plan = [*levels, 60.0]
    readings = [das_hour("WI", D + k * H, lv, 11.0) for k, lv in enumerate(plan) if lv is not None]
    last = readings[-1]
    arrivals = sorted(
        (r.data_time + H + timedelta(minutes=1 + (0 if r is last else delays[i % len(delays)])), i, r)
        for i, r in enumerate(readings)
    )
    live = Live()
    for t, _, r in arrivals:
        live.arrive(r, t)
    live.take(live.engine.finish())
    res = replay(registry(), [_line(r) for r in readings], "jsonl")
    assert not res.rejected
    assert {(d.mn, d.pollutant, d.day): d for d in res.daily} == live.daily
    assert _judged(res.events) == _judged(live.events.values())
    assert live.engine.late_counts()["late_unrevised"] == 0
