"""Event time (issue 12 item 1): the live engine, fed in arrival order with the wall clock ticking, gives the
same hourly records and judgement events as ``cems replay`` of the same packets, whatever the arrival order
and delay inside the window; a late CN=2061 and back-filled (补传) data revise what was already emitted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.engine import ComplianceEngine, EngineOutput
from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.registry import OutletInfo, parse_registry
from cems.replay import load_readings, replay
from cems.rules import DEFAULT_HOLD, HOURLY_EXCEEDANCE, O2_INVALID, RETRACTED, Event, HourlyRecord
from cems.rules.hourly import repair_deadline

REG = parse_registry(
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="MN1"\nname="o"\nprofile="coal_power_ultra_low"\npassword="123456"\n'
    "rtd_interval_s=60\n"
)
H8 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
SO2, O2 = "a21026", "a19001"
#: the judgement events (real-time warnings and data interruptions are arrival-time signals: docs/events.md)
JUDGED = {HOURLY_EXCEEDANCE, O2_INVALID}


def packet(cn: str, t: datetime, values: dict[str, dict[str, float | str]]) -> str:
    return encode(
        cn=cn, st="31", pw="123456", mn="MN1", flag=4, qn=t.strftime("%Y%m%d%H%M%S000"), data_time=t, values=values,
        crlf=False,
    )  # fmt: skip


def rtd(t: datetime, so2: float, o2: float = 6.0) -> str:
    return packet("2011", t, {SO2: {"Rtd": so2, "Flag": "N"}, O2: {"Rtd": o2, "Flag": "N"}})


def minute(t: datetime, so2: float, o2: float = 6.0) -> str:
    return packet("2051", t, {SO2: {"Avg": so2, "Flag": "N"}, O2: {"Avg": o2, "Flag": "N"}})


def das_hour(t: datetime, avg: float, zs: float, o2: float = 6.0) -> str:
    return packet("2061", t, {SO2: {"Avg": avg, "ZsAvg": zs, "Flag": "N"}, O2: {"Avg": o2, "Flag": "N"}})


def decoded(line: str) -> tuple[Any, OutletInfo]:
    items = load_readings(REG, [line], "hj212")
    assert len(items) == 1
    return items[0]


class Live:
    """The live engine as ``cems run`` drives it: batches in arrival order, the clock ticking; what it writes
    to InfluxDB is kept as the stores keep it (the last point of a key wins)."""

    def __init__(self) -> None:
        self.engine = ComplianceEngine(REG)
        self.hourly: dict[tuple[str, datetime], HourlyRecord] = {}
        self.events: dict[str, Event] = {}
        self.updates: list[tuple[str, Event]] = []

    def take(self, out: EngineOutput) -> None:
        for r in out.hourly:
            self.hourly[(r.pollutant, r.hour_start)] = r
        for u in out.events:
            self.events[u.event.event_id] = u.event
            self.updates.append((u.kind, u.event))

    def arrive(self, line: str, now: datetime) -> None:
        self.take(self.engine.on_clock(now))
        self.take(self.engine.on_readings([decoded(line)]))

    def clock(self, now: datetime) -> None:
        self.take(self.engine.on_clock(now))

    def judged(self) -> list[dict[str, Any]]:
        return _events(e for e in self.events.values() if e.status != RETRACTED)


def _events(evs: Any) -> list[dict[str, Any]]:
    out = []
    for e in evs:
        if e.type in JUDGED:
            j = e.to_json()
            j.pop("late")
            out.append(j)
    return sorted(out, key=lambda j: (j["start"], j["type"], j["pollutant"] or ""))


def replayed(lines: list[str]) -> tuple[dict[tuple[str, datetime], HourlyRecord], list[dict[str, Any]]]:
    res = replay(REG, lines, "hj212")
    assert not res.rejected
    return {(r.pollutant, r.hour_start): r for r in res.hourly}, _events(res.events)


# -- the two audit cases ---------------------------------------------------------------------------------


def test_late_das_hourly_record_revises_the_hour_and_opens_the_exceedance() -> None:
    """Real-time data of 08:00–09:00 give a corrected SO2 of 30 (< 35); the DAS's CN=2061 for 08:00, sent after
    the hour, says 37.5 > 35.  Live used to ignore it once the clock had closed the hour."""
    lines = [rtd(H8 + i * MIN, 30.0) for i in range(60)]
    live = Live()
    for i, line in enumerate(lines):
        live.arrive(line, H8 + i * MIN)
    live.clock(H8 + HOUR + 6 * MIN)  # the clock closes 08:00 from the real-time data
    first = live.hourly[(SO2, H8)]
    assert (first.source, first.exceeds) == ("realtime", False)
    late = das_hour(H8, 37.5, 37.5)
    live.arrive(late, H8 + HOUR + 8 * MIN)
    rec = live.hourly[(SO2, H8)]
    assert (rec.source, rec.zs_avg, rec.exceeds) == ("das_2061", 37.5, True)
    opened = [e for k, e in live.updates if k == "opened" and e.type == HOURLY_EXCEEDANCE]
    assert len(opened) == 1 and opened[0].late and opened[0].start == H8
    # the same packets replayed: the same record and the same event
    hourly, events = replayed([*lines, late])
    assert hourly[(SO2, H8)] == rec
    assert live.judged() == events and len(events) == 1


def test_backfilled_minutes_of_an_outage_count_for_the_transmission_rate() -> None:
    """Hour 10:00 is lost to a link outage; the DAS back-fills (补传) its minute records at 13:30."""
    hours = [H8 + i * HOUR for i in range(5)]  # 08:00 … 12:00
    outage = hours[2]
    live = Live()
    on_time = [minute(h + i * MIN, 20.0) for h in hours if h != outage for i in range(60)]
    for h in hours:
        if h == outage:
            continue
        for i in range(60):
            live.arrive(minute(h + i * MIN, 20.0), h + i * MIN)
    live.clock(H8 + 5 * HOUR + 30 * MIN)
    start, end = H8, H8 + 5 * HOUR

    def so2_rate() -> float | None:
        days = live.engine.rates.outlet_days(start, end)
        assert len(days) == 1
        return days[0].by_factor[SO2].transmission_rate

    assert so2_rate() == 0.8 and (SO2, outage) not in live.hourly
    backfill = [minute(outage + i * MIN, 20.0) for i in range(60)]
    for i, line in enumerate(backfill):
        live.arrive(line, H8 + 5 * HOUR + 30 * MIN + i * timedelta(seconds=2))
    assert so2_rate() == 1.0
    rec = live.hourly[(SO2, outage)]
    assert rec.valid and rec.valid_minutes == 60
    hourly, _ = replayed(on_time + backfill)
    assert {k: v for k, v in hourly.items() if k[0] == SO2} == {k: v for k, v in live.hourly.items() if k[0] == SO2}
    assert live.engine.late_counts()["late_readings"] == 60


def test_data_after_the_repair_deadline_are_counted_and_move_nothing() -> None:
    live = Live()
    for i in range(60):
        live.arrive(minute(H8 + i * MIN, 20.0), H8 + i * MIN)
    later = H8 + timedelta(days=11)
    live.clock(later)
    before = dict(live.hourly)
    live.arrive(das_hour(H8, 90.0, 90.0), later + MIN)
    assert live.hourly == before and live.engine.late_counts()["late_beyond_window"] == 1
    assert not [e for e in live.events.values() if e.type == HOURLY_EXCEEDANCE]


def test_repair_deadline_is_ten_days_and_the_tenth_of_next_month() -> None:
    ts = int(H8.timestamp())
    assert repair_deadline(ts) == ts + 3600 + 10 * 86400  # 1 May → 11 May 09:00
    end_of_may = int(datetime(2026, 5, 31, 23, 0, tzinfo=BEIJING).timestamp())
    assert repair_deadline(end_of_may) == int(datetime(2026, 6, 11, 0, 0, tzinfo=BEIJING).timestamp())


# -- the property: live equals replay --------------------------------------------------------------------

#: per hour: how the DAS reports it, and the SO2 level (mg/m³ at reference O2; the limit is 35)
hour_plan = st.tuples(
    st.sampled_from(["minutes", "rtd", "das", "minutes+das", "partial", "none", "o2_bad"]),
    st.sampled_from([20.0, 34.0, 36.0, 50.0]),
)


def _lines(plan: list[tuple[str, float]]) -> list[str]:
    out: list[str] = []
    for k, (kind, level) in enumerate([*plan, ("minutes", 10.0)]):  # a final compliant hour ends every run
        h = H8 + k * HOUR
        if kind in ("minutes", "minutes+das", "o2_bad"):
            o2 = 22.0 if kind == "o2_bad" else 6.0
            out += [minute(h + i * MIN, level, o2) for i in range(60)]
        elif kind == "partial":
            out += [minute(h + i * MIN, level) for i in range(0, 60, 2)]
        elif kind == "rtd":
            out += [rtd(h + i * MIN, level) for i in range(60)]
        if kind in ("das", "minutes+das"):
            out.append(das_hour(h, level + 1.0, level + 1.0))
    return out


@settings(max_examples=25, deadline=None)
@given(
    plan=st.lists(hour_plan, min_size=1, max_size=4),
    delays=st.lists(st.integers(0, int((DEFAULT_HOLD - 10 * MIN) / MIN)), min_size=1, max_size=50),
    burst=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_live_in_any_arrival_order_equals_replay(
    plan: list[tuple[str, float]], delays: list[int], burst: list[bool]
) -> None:
    lines = _lines(plan)
    # each packet arrives at its data time plus a delay inside the window (delays and bursts cycle)
    arrivals = []
    for i, line in enumerate(lines):
        r, _ = decoded(line)
        delay = delays[i % len(delays)] * MIN if burst[i % len(burst)] else timedelta(0)
        t = r.data_time if r.data_time.tzinfo else r.data_time.replace(tzinfo=BEIJING)
        if r.stream.value == "hour":
            t += HOUR  # the DAS sends an hour's record after the hour
        arrivals.append((t + delay, i, line))
    arrivals.sort()
    live = Live()
    for t, _, line in arrivals:
        live.arrive(line, t)
    live.take(live.engine.finish())
    hourly, events = replayed(lines)
    assert live.hourly == hourly
    assert live.judged() == events


def test_a_longer_hold_revises_a_partly_received_hour_later() -> None:
    """Hour 08:00 got 30 minutes on time; the other 30 are back-filled at 15:00 (7 h later). With the default
    3-hour hold they are counted (late_unrevised) but the hour stays invalid; with --late-hold-hours 24 the
    hour is rebuilt exactly."""

    def run(hold: timedelta) -> tuple[HourlyRecord, dict[str, int]]:
        live = Live()
        live.engine = ComplianceEngine(REG, hold=hold)
        for i in range(30):
            live.arrive(minute(H8 + i * MIN, 20.0), H8 + i * MIN)
        live.clock(H8 + 7 * HOUR)
        assert not live.hourly[(SO2, H8)].valid
        for i in range(30, 60):
            live.arrive(minute(H8 + i * MIN, 20.0), H8 + 7 * HOUR + i * timedelta(seconds=2))
        return live.hourly[(SO2, H8)], live.engine.late_counts()

    short, counts = run(DEFAULT_HOLD)
    assert not short.valid and counts["late_unrevised"] == 30
    long, counts = run(timedelta(hours=24))
    assert long.valid and long.valid_minutes == 60 and counts["late_unrevised"] == 0
