"""Late data older than the hold (issue 12): an emitted hour leaves memory after the hold (3 h) but goes to an
archive (:mod:`cems.hour_archive`) until its repair deadline, so data late by hours or days — a DAS
back-filling (补传) a day-old outage, its CN=2061 sent a day late, a re-sent hour — revise it exactly, live
and in replay, and the final records, events and rates are those of the sorted replay."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_event_time import (  # same directory (pytest prepend import mode)
    H8,
    HOUR,
    MIN,
    REG,
    SO2,
    Live,
    das_hour,
    decoded,
    minute,
    replayed,
    rtd,
)

from cems.engine import ComplianceEngine, EngineOutput
from cems.hour_archive import PendingHourArchive, TempHourArchive
from cems.model import BEIJING
from cems.replay import load_readings, replay
from cems.rules import DEFAULT_HOLD
from cems.rules.daily import DailyRecord
from cems.rules.hourly import _BAD, _LOWER_BOUND, _OK, _HourAcc, pack_hour, unpack_hour

DAY = timedelta(days=1)


class ArchivedLive(Live):
    """The live engine with an archive of emitted hours, as ``cems run`` and ``cems replay`` have."""

    def __init__(self, hold: timedelta = DEFAULT_HOLD, held: int | None = None) -> None:
        super().__init__()
        self.archive = TempHourArchive() if held is None else TempHourArchive(held=held)
        self.engine = ComplianceEngine(REG, hold=hold, archive=self.archive)
        self.daily: dict[tuple[str, object], DailyRecord] = {}

    def take(self, out: EngineOutput) -> None:
        super().take(out)
        for d in out.daily:
            self.daily[(d.pollutant, d.day)] = d


def _rates(engine: ComplianceEngine, start: datetime, end: datetime) -> list[dict[str, object]]:
    return [d.to_json() for d in engine.rates.outlet_days(start, end)]


# -- packing ----------------------------------------------------------------------------------------------


@given(
    st.dictionaries(
        st.sampled_from(["a21026", "a19001", "a21002"]),
        st.dictionaries(
            st.integers(0, 3599),
            st.tuples(
                st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(math.nan)),
                st.sampled_from([_BAD, _OK, _LOWER_BOUND]),
            ),
            max_size=40,
        ),
        max_size=3,
    ),
    st.dictionaries(
        st.sampled_from(["a21026", "a19001"]),
        st.tuples(
            st.one_of(st.none(), st.floats(-1e6, 1e6)),
            st.one_of(st.none(), st.floats(0, 1e3)),
            st.sampled_from(["N", "D", "T"]),
        ),
        max_size=2,
    ),
)
def test_a_packed_hour_unpacks_to_the_same_sub_values(
    subs: dict[str, dict[int, tuple[float, int]]], das: dict[str, tuple[float | None, float | None, str]]
) -> None:
    acc = _HourAcc()
    for kind, streams in (("rtd", subs), ("mins", dict(list(subs.items())[:1]))):
        for code, d in streams.items():
            for s, (v, ok) in d.items():
                acc.add(kind, code, s, v, ok)
    if das:
        acc.das_writable().update(das)
    back = unpack_hour(pack_hour(acc))
    assert back.das == acc.das
    for got, want in ((back.rtd, {c: d for c, d in subs.items() if d}), (back.mins, dict(list(subs.items())[:1]))):
        want = {c: d for c, d in want.items() if d}
        assert got.keys() == want.keys()
        for code in want:
            assert sorted(got[code]) == sorted(want[code])
            for s, (v, ok) in want[code].items():
                gv, gok = got[code][s]
                assert gok == ok and (gv == v or (math.isnan(gv) and math.isnan(v)))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a21026", "a19001", "a21002"]),
            st.integers(0, 3599),
            st.floats(-1e6, 1e6),
            st.sampled_from([_BAD, _OK, _LOWER_BOUND]),
        )
    )
)
def test_the_compact_log_of_sub_values_groups_back_as_a_dict_per_code_would(
    rows: list[tuple[str, int, float, int]],
) -> None:
    """The compact log (issue 20, memory) gives what the dict per code it replaces kept: a re-sent second
    replaces the earlier value, codes and seconds in order of first arrival."""
    want: dict[str, dict[int, tuple[float, int]]] = {}
    acc = _HourAcc()
    for code, s, v, ok in rows:
        want.setdefault(code, {})[s] = (v, ok)
        acc.add("rtd", code, s, v, ok)
    got = acc.rtd
    assert list(got) == list(want)
    assert all(list(got[c].items()) == list(want[c].items()) for c in want)
    assert acc.mins == {}


#: An hour packed by the layout before the compact log (issue 20): hours archived by an older cems.
_OLD_PACKED = bytes.fromhex(
    "0178010b666060a8564a51b2aa564a343234303253b28a3632d033d0313205124a7e4ab1b53a4ab940c168b0bc8191928e616cac8e"
    "52115c08a845c7385607286f686960600896af8d60029acbc0d0e0e0c0c8c020c71005e63130fca88730341dc0b4828b030323442590afecc008003ecf18cf"
)


def test_an_hour_archived_by_an_older_version_unpacks_and_packs_to_the_same_bytes() -> None:
    acc = unpack_hour(_OLD_PACKED)
    assert acc.das == {"a21026": (20.0, 25.0, "N")}
    rtd = acc.rtd
    assert rtd["a19001"] == {0: (9.5, _OK)}
    assert sorted((s, ok) for s, (_, ok) in rtd["a21026"].items()) == [(0, _BAD), (30, _OK), (90, _LOWER_BOUND)]
    assert math.isnan(rtd["a21026"][0][0]) and (rtd["a21026"][30][0], rtd["a21026"][90][0]) == (12.5, 40.25)
    assert acc.mins == {"a21002": {600: (33.0, _OK)}}
    assert pack_hour(acc) == _OLD_PACKED


# -- the cases of the issue -------------------------------------------------------------------------------


@pytest.mark.parametrize("held", [None, 0, 200])
def test_a_day_late_backfill_of_a_partly_received_hour_revises_it_exactly(held: int | None) -> None:
    """08:00 got 30 minutes on time; the other 30 are back-filled a day later.  Before the archive the hour
    stayed invalid (late_unrevised); now it is rebuilt from the archived half plus the back-fill — whether
    the archive kept the hour unpacked in memory (``None``: the default bound) or packed it to its file (0:
    every hour; 200: all but the newest few)."""
    live = ArchivedLive(held=held)
    on_time = [minute(H8 + i * MIN, 20.0) for i in range(30)]
    for i, line in enumerate(on_time):
        live.arrive(line, H8 + i * MIN)
    live.clock(H8 + DAY)
    assert not live.hourly[(SO2, H8)].valid
    assert H8 not in live.engine._outlets["MN1"].hourly.held_hours  # out of memory, archived
    backfill = [minute(H8 + i * MIN, 20.0) for i in range(30, 60)]
    for i, line in enumerate(backfill):
        live.arrive(line, H8 + DAY + i * timedelta(seconds=2))
    rec = live.hourly[(SO2, H8)]
    assert rec.valid and rec.valid_minutes == 60
    counts = live.engine.late_counts()
    assert counts["late_unrevised"] == 0 and counts["late_readings"] == 30
    hourly, _ = replayed(on_time + backfill)
    assert hourly[(SO2, H8)] == rec


def test_a_das_hourly_record_a_day_late_opens_the_exceedance() -> None:
    lines = [rtd(H8 + i * MIN, 30.0) for i in range(120)]  # 08:00 and 09:00 compliant (30 < 35)
    live = ArchivedLive()
    for i, line in enumerate(lines):
        live.arrive(line, H8 + i * MIN)
    live.clock(H8 + DAY)
    assert live.hourly[(SO2, H8)].exceeds is False
    late = das_hour(H8, 37.5, 37.5)
    live.arrive(late, H8 + DAY + MIN)
    rec = live.hourly[(SO2, H8)]
    assert (rec.source, rec.exceeds) == ("das_2061", True)
    hourly, events = replayed([*lines, late])
    assert hourly[(SO2, H8)] == rec and live.judged() == events and len(events) == 1


def test_without_an_archive_such_data_are_counted_unrevised() -> None:
    """The engine alone (no archive: state lost) still counts what it cannot revise."""
    live = Live()
    for i in range(30):
        live.arrive(minute(H8 + i * MIN, 20.0), H8 + i * MIN)
    live.clock(H8 + DAY)
    live.arrive(minute(H8 + 40 * MIN, 20.0), H8 + DAY)
    assert live.engine.late_counts()["late_unrevised"] == 1


def test_a_resent_value_replaces_the_archived_one() -> None:
    """A DAS re-sending an hour a day later with a corrected value: the later value of a second wins, as in a
    replay of the packets in arrival order."""
    live = ArchivedLive()
    first = [minute(H8 + i * MIN, 20.0) for i in range(60)]
    for i, line in enumerate(first):
        live.arrive(line, H8 + i * MIN)
    live.clock(H8 + DAY)
    resent = [minute(H8 + i * MIN, 50.0) for i in range(60)]
    for line in resent:
        live.arrive(line, H8 + DAY + MIN)
    rec = live.hourly[(SO2, H8)]
    assert rec.avg == pytest.approx(50.0) and rec.exceeds
    hourly, _ = replayed(first + resent)
    assert hourly[(SO2, H8)] == rec


def test_data_after_the_repair_deadline_still_move_nothing() -> None:
    live = ArchivedLive()
    for i in range(30):
        live.arrive(minute(H8 + i * MIN, 20.0), H8 + i * MIN)
    live.clock(H8 + 11 * DAY)
    before = dict(live.hourly)
    live.arrive(minute(H8 + 40 * MIN, 20.0), H8 + 11 * DAY)
    assert live.hourly == before
    assert live.engine.late_counts()["late_beyond_window"] == 1


def test_memory_holds_only_the_hold_whatever_the_delay() -> None:
    """Bounded memory: after a day of data, only the hold's hours are in memory; the rest is archived."""
    live = ArchivedLive()
    for k in range(24):
        for i in range(0, 60, 5):
            t = H8 + k * HOUR + i * MIN
            live.arrive(minute(t, 20.0), t)
    hourly = live.engine._outlets["MN1"].hourly
    assert len(hourly.held_hours) <= DEFAULT_HOLD / HOUR + 1
    assert live.archive.puts >= 24 - DEFAULT_HOLD / HOUR - 1


def _acc(k: int) -> _HourAcc:
    acc = _HourAcc()
    for s in range(0, 3600, 60 * (1 + k % 3)):
        acc.add("rtd", SO2, s, float(k * 1000 + s), _OK)
        acc.add("rtd", "a19001", s, 10.0 + k, _BAD if s % 7 else _OK)
    if k % 2:
        acc.add("mins", SO2, 60, math.nan, _BAD)
    return acc


@pytest.mark.parametrize("held", [0, 300, 1000, 10_000])
def test_the_temp_archive_packs_only_what_its_bound_leaves_out_and_gives_every_hour_back(held: int) -> None:
    """TempHourArchive keeps put_hour's hours unpacked up to ``held`` sub-values (plus an overhead an hour),
    the oldest first packed to its file beyond: whichever way, get gives the bytes pack_hour gives, a hour put
    again (or put as bytes) replaces the former, and what is kept stays within the bound."""
    archive = TempHourArchive(held=held)
    expected: dict[tuple[str, int], bytes] = {}
    for k in range(30):
        key = (f"MN{k % 3}", 3600 * (k // 3))
        acc = _acc(k)
        expected[key] = pack_hour(acc)
        archive.put_hour(*key, acc)
        assert archive._held_cost <= held
        assert archive._held_cost == sum(c for _, c in archive._held.values())
    archive.put_hour("MN0", 0, _acc(99))  # the same hour again: the newer wins
    expected[("MN0", 0)] = pack_hour(_acc(99))
    archive.put("MN1", 3600, b"bytes")  # put as bytes over a kept (or written) hour
    expected[("MN1", 3600)] = b"bytes"
    assert archive.puts == 32
    for (mn, hour), data in expected.items():
        assert archive.get(mn, hour) == data
    assert archive.get("MN9", 0) is None
    assert archive.size_bytes() == sum(len(d) for d in expected.values())
    n_written = 0 if archive._conn is None else archive._conn.execute("SELECT COUNT(*) FROM hour_archive").fetchone()[0]
    if held == 10_000:
        assert n_written == 1  # only the bytes
    elif held == 0:
        assert not archive._held and n_written == len(expected)
    else:
        assert archive._held and 1 < n_written < len(expected)
    archive.close()


def test_pending_archive_serves_evicted_hours_until_the_commit_and_then_from_sqlite() -> None:
    """The live archive: evicted hours wait for the commit; a batch that revises a committed one has it
    loaded beforehand (``archived_wanted``)."""
    archive = PendingHourArchive()
    engine = ComplianceEngine(REG, archive=archive)
    for i in range(30):
        engine.on_readings([decoded(minute(H8 + i * MIN, 20.0))])
    engine.on_clock(H8 + DAY)
    committed = archive.take()
    assert (("MN1", int(H8.timestamp()))) in committed
    late = [decoded(minute(H8 + i * MIN, 20.0)) for i in range(30, 60)]
    want = engine.archived_wanted(late)
    # the hour, and its closed day (the day's slots wait in the archive too: key MN#daily, its last hour)
    day_key = ("MN1#daily", int((H8.replace(hour=23)).timestamp()))
    assert want == {("MN1", int(H8.timestamp())), day_key} and archive.missing(want) == sorted(want)
    assert day_key in committed
    archive.loaded({k: committed[k] for k in want})
    out = engine.on_readings(late)
    (rec,) = [r for r in out.hourly if r.pollutant == SO2]
    assert rec.valid and rec.valid_minutes == 60 and engine.late_counts()["late_unrevised"] == 0
    (day,) = [d for d in out.daily if d.pollutant == SO2]  # the closed day, revised
    assert day.received_hours == 1 and day.valid_hours == 1


# -- the property: live equals the sorted replay for delays of days ---------------------------------------

hour_plan = st.tuples(
    st.sampled_from(["minutes", "rtd", "das", "minutes+das", "partial", "none", "o2_bad"]),
    st.sampled_from([20.0, 34.0, 36.0, 50.0]),
    # how late the hour's data come: on time, inside the hold, or hours to days later (inside the window)
    st.sampled_from([0, 10, 170, 300, 1440, 3 * 1440, 9 * 1440]),
)


def _hour_lines(h: datetime, kind: str, level: float) -> list[str]:
    out: list[str] = []
    if kind in ("minutes", "minutes+das", "o2_bad"):
        o2 = 22.0 if kind == "o2_bad" else 6.0
        out += [minute(h + i * MIN, level, o2) for i in range(0, 60, 2)]
        out += [minute(h + i * MIN, level, o2) for i in range(1, 60, 2)]
    elif kind == "partial":
        out += [minute(h + i * MIN, level) for i in range(0, 60, 2)]
    elif kind == "rtd":
        out += [rtd(h + i * MIN, level) for i in range(60)]
    if kind in ("das", "minutes+das"):
        out.append(das_hour(h, level + 1.0, level + 1.0))
    return out


@settings(max_examples=30, deadline=None)
@given(
    plan=st.lists(hour_plan, min_size=1, max_size=6),
    split=st.lists(st.booleans(), min_size=1, max_size=6),
)
def test_live_with_delays_of_days_equals_the_sorted_replay(
    plan: list[tuple[str, float, int]], split: list[bool]
) -> None:
    """Each hour's data arrive late by its delay (minutes to 9 days, inside the 10-day window); with
    ``split`` the first half of an hour's packets come on time and only the rest late (a partly received hour
    back-filled later).  Final hourly records, judged events and transmission rates equal the sorted replay,
    and nothing is left unrevised."""
    arrivals: list[tuple[datetime, int, str]] = []
    lines: list[str] = []
    for k, (kind, level, delay) in enumerate([*plan, ("minutes", 10.0, 0)]):
        h = H8 + k * HOUR
        hour_lines = _hour_lines(h, kind, level)
        for j, line in enumerate(hour_lines):
            r, _ = decoded(line)
            t = r.data_time if r.data_time.tzinfo else r.data_time.replace(tzinfo=BEIJING)
            if r.stream.value == "hour":
                t += HOUR  # the DAS sends an hour's record after the hour
            on_time = split[k % len(split)] and j < len(hour_lines) // 2
            arrivals.append((t if on_time else t + delay * MIN, len(lines), line))
            lines.append(line)
    arrivals.sort()
    live = ArchivedLive()
    for t, _, line in arrivals:
        live.arrive(line, t)
    live.take(live.engine.finish())
    hourly, events = replayed(lines)
    assert live.hourly == hourly
    assert live.judged() == events
    assert live.daily == {(d.pollutant, d.day): d for d in replay(REG, lines, "hj212").daily}
    start, end = H8, H8 + (len(plan) + 1) * HOUR
    sorted_engine = ComplianceEngine(REG)
    for reading, info in load_readings(REG, lines, "hj212"):  # sorted by data time
        sorted_engine.on_reading(reading, info)
    sorted_engine.finish()
    assert _rates(live.engine, start, end) == _rates(sorted_engine, start, end)
    counts = live.engine.late_counts()
    assert counts["late_unrevised"] == 0 and counts["late_beyond_window"] == 0


#: State an older cems (before the compact log, issue 20) saved for the benchmark outlet after its first three
#: real-time packets of the day (`cems.devtools.bench._data.replay_lines`).
_OLD_SNAPSHOT = (
    '{"version":1,"mn":"130602BN00000000","closed_before":1772290800,"min_interval":60,"late_readings":0,"late'
    '_unrevised":0,"late_beyond_window":0,"now":1772294520,"evicted":[],"dirty":[],"touched":[],"memory":[1772'
    '294400],"open":{"1772294400":{"das":{},"mins":{},"rtd":{"a34013":[[0,1.13,1],[60,2.6,1],[120,2.42,1]],"a2'
    '1026":[[0,13.81,1],[60,11.64,1],[120,14.42,1]],"a21002":[[0,14.31,1],[60,22.8,1],[120,26.86,1]],"a19001":'
    '[[0,7.46,1],[60,6.81,1],[120,7.22,1]],"a01012":[[0,130.13,1],[60,89.5,1],[120,106.69,1]],"a01014":[[0,10.'
    '15,1],[60,8.01,1],[120,6.88,1]],"a00000":[[0,284.41,1],[60,187.74,1],[120,62.57,1]]}}}}'
)


def test_state_saved_by_an_older_version_restores_and_gives_the_records_of_an_uninterrupted_run() -> None:
    from cems.decode import decode_message
    from cems.devtools.bench import _data
    from cems.registry import parse_registry
    from cems.rules.hourly import OutletHourly

    reg = parse_registry(_data.registry_toml(1))
    outlet = reg.outlets()[0].outlet
    readings = [
        decode_message(f"cems/v1/{outlet.mn}/hj212", line.encode(), reg).reading
        for line in list(_data.replay_lines(1))[:200]
    ]
    uninterrupted = OutletHourly(outlet)
    want = [r for reading in readings for r in uninterrupted.feed(reading)] + uninterrupted.flush()
    restored = OutletHourly(outlet)
    restored.restore(json.loads(_OLD_SNAPSHOT))
    assert restored.snapshot() == json.loads(_OLD_SNAPSHOT)  # the same layout, read and written back
    got = [r for reading in readings[3:] for r in restored.feed(reading)] + restored.flush()
    assert len(want) == 28 and [r.to_json() for r in got] == [r.to_json() for r in want]
