"""The fleet simulator (gateways.simulator): pure model, encoders, and the TCP bridge sender (no broker)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from cems.decode import decode_message
from cems.model import BEIJING, FLOW, NOX, O2, SO2, Reading, Stream
from cems.protocol import hj212
from cems.protocol.payload import decode_payload, encode_payload
from cems.registry import Registry, parse_registry
from cems.rules.hourly import HourlyRecord, OutletHourly
from cems.rules.limits import LimitSchedule, limit_at, ref_o2_at
from gateways.cli import add_simulate_arguments
from gateways.simulator import (
    POLLUTANTS,
    Emission,
    FleetModel,
    SimConfig,
    correct,
    hj212_packet,
    run_simulator,
)

REGISTRY = """
timezone = "Asia/Shanghai"
[city]
name = "示例市"
[[district]]
code = "130602"
name = "竞秀区"
[[district]]
code = "130606"
name = "莲池区"

[[enterprise]]
id = "E001"
name = "示例热电有限公司"
district = "130602"
sector = "power"
[[enterprise.outlet]]
mn = "010000A8900016F000169DC0"
name = "1#机组排放口"
profile = "coal_power_ultra_low"
password = "123456"
rtd_interval_s = 30
[enterprise.outlet.units]
a00000 = "m3/h"
[[enterprise.outlet]]
mn = "GT01"
name = "燃机排放口"
profile = "gas_turbine_ultra_low"
password = "654321"
rtd_interval_s = 60

[[enterprise]]
id = "E002"
name = "示例水泥有限公司"
district = "130606"
[[enterprise.outlet]]
mn = "CEM01"
name = "窑尾"
profile = "cement_kiln_special"
rtd_interval_s = 60
[enterprise.outlet.limits]
a21002 = 100.0
[[enterprise.outlet.limit_change]]
from = 2026-03-02
profile = "cement_kiln_deep_treatment"
reason = "深度治理改造完成"
[[enterprise.outlet]]
mn = "SIN01"
name = "烧结机头"
profile = "steel_sinter_ultra_low"
rtd_interval_s = 60
[[enterprise.outlet]]
mn = "BOIL01"
name = "燃气锅炉"
profile = "boiler_gas_special"
rtd_interval_s = 60
[[enterprise.outlet.stop]]
from = 2026-03-02T02:00:00
to = 2026-03-02T04:00:00
reason = "停炉"

[[grid_sensor]]
id = "G001"
district = "130602"
township = "韩村"
[[grid_sensor]]
id = "G002"
district = "130606"
"""

COAL = "010000A8900016F000169DC0"
START = datetime(2026, 3, 1, 10, 17, 23, tzinfo=BEIJING)
OUTLETS = (COAL, "GT01", "CEM01", "SIN01", "BOIL01")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return parse_registry(REGISTRY)


def _run(registry: Registry, hours: float, config: SimConfig, seed: int = 0) -> tuple[FleetModel, list[Emission]]:
    m = FleetModel(registry, seed=seed, start=START, config=config)
    return m, m.run_for(hours * 3600)


@pytest.fixture(scope="module")
def quiet(registry: Registry) -> tuple[FleetModel, list[Emission]]:
    return _run(registry, 48, SimConfig.quiet())


@pytest.fixture(scope="module")
def eventful(registry: Registry) -> tuple[FleetModel, list[Emission]]:
    cfg = SimConfig(
        exceedances_per_day=1.0,
        gaps_per_day=2.0,
        maintenance_per_day=2.0,
        calibrations_per_day=2.0,
        faults_per_day=1.0,
        large_skew_fraction=0.3,
    )
    return _run(registry, 72, cfg, seed=7)


def _records(ems: list[Emission], mn: str, stream: Stream) -> list[Reading]:
    return [e.reading for e in ems if e.reading.mn == mn and e.reading.stream is stream]


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_however_time_is_split(registry: Registry) -> None:
    cfg = SimConfig(exceedances_per_day=2.0, gaps_per_day=2.0, calibrations_per_day=2.0)
    a = FleetModel(registry, seed=3, start=START, config=cfg)
    whole = [(e.at, e.topic, encode_payload(e.reading)) for e in a.run_for(6 * 3600)]
    b = FleetModel(registry, seed=3, start=START, config=cfg)
    parts: list[Emission] = []
    t = START
    while t < START + timedelta(hours=6):
        t += timedelta(seconds=137)
        parts.extend(b.advance(min(t, START + timedelta(hours=6))))
    assert [(e.at, e.topic, encode_payload(e.reading)) for e in parts] == whole
    c = FleetModel(registry, seed=4, start=START, config=cfg)
    assert [encode_payload(e.reading) for e in c.run_for(6 * 3600)] != [w[2] for w in whole]


def test_emissions_are_ordered_and_start_at_the_start(quiet: tuple[FleetModel, list[Emission]]) -> None:
    _, ems = quiet
    assert ems and all(e.at >= START for e in ems)
    assert [e.at for e in ems] == sorted(e.at for e in ems)
    kinds = Counter((e.reading.stream, e.grid) for e in ems)
    # 48 h: every outlet sends 48 hourly and 288 ten-minute records, each grid sensor one value a minute
    assert kinds[(Stream.HOUR, False)] == 48 * len(OUTLETS)
    assert kinds[(Stream.MIN, False)] == 288 * len(OUTLETS)  # 10:10–10:20 on day 1 … 10:00–10:10 on day 3
    assert kinds[(Stream.RTD, True)] == 2 * 48 * 60


# ------------------------------------------------------------------------------------------ times


def test_data_times_are_aligned_beijing_period_starts(quiet: tuple[FleetModel, list[Emission]]) -> None:
    _, ems = quiet
    for e in ems:
        dt = e.reading.data_time
        assert dt.utcoffset() == timedelta(hours=8)
        if e.reading.stream is Stream.HOUR:
            assert (dt.minute, dt.second) == (0, 0)
            assert e.at >= dt + timedelta(hours=1)  # sent after the hour ended
        elif e.reading.stream is Stream.MIN:
            assert dt.minute % 10 == 0 and dt.second == 0
            assert e.at >= dt + timedelta(minutes=10)
        elif e.outlet is not None:
            assert int(dt.timestamp()) % e.outlet.rtd_interval_s == 0  # no skew in the quiet config
        else:
            assert dt.second == 0
    first_hour = next(e.reading for e in ems if e.reading.stream is Stream.HOUR)
    # warm start: the hour in progress at the start is complete
    assert first_hour.data_time == datetime(2026, 3, 1, 10, 0, tzinfo=BEIJING)


def test_clock_skew_shifts_data_time_against_send_time(eventful: tuple[FleetModel, list[Emission]]) -> None:
    m, ems = eventful
    skews = {mn: m.clock_skew(mn) for mn in OUTLETS}
    assert any(abs(s) >= 45 for s in skews.values()) and any(abs(s) <= 5 for s in skews.values())
    for e in ems:
        if e.reading.stream is Stream.RTD and not e.grid:
            offset = (e.reading.data_time - e.at).total_seconds()
            assert offset == pytest.approx(skews[e.reading.mn], abs=1.0)


# ------------------------------------------------------------------------------------------ values


def test_corrected_values_mostly_30_to_80_percent_of_limit_and_never_above_when_quiet(
    quiet: tuple[FleetModel, list[Emission]],
) -> None:
    m, ems = quiet
    for mn in OUTLETS:
        outlet = m.registry.outlet(mn)
        assert outlet is not None
        fractions = []
        for r in _records(ems, mn, Stream.HOUR):
            if r.measurements[SO2].flag == "F":
                continue  # declared stop
            for code in POLLUTANTS:
                al = limit_at(outlet.outlet, code, r.data_time)
                assert al is not None
                zs = r.measurements[code].values["ZsAvg"]
                fractions.append(zs / al.limit)
        assert max(fractions) < 1.0, mn
        inside = sum(0.3 <= f <= 0.8 for f in fractions) / len(fractions)
        assert inside >= 0.85, (mn, inside)


def test_permit_limit_and_limit_changes_scale_the_values(quiet: tuple[FleetModel, list[Emission]]) -> None:
    _, ems = quiet
    change = datetime(2026, 3, 2, tzinfo=BEIJING)
    hours = _records(ems, "CEM01", Stream.HOUR)
    # CEM01: permit NOx 100 is stricter than the profile's 320
    nox = [r.measurements[NOX].values["ZsAvg"] for r in hours]
    assert 20 < statistics.mean(nox) < 80
    # from 2 March the deep-treatment limits apply (SO2 100 → 50): the plant emits less
    before = [r.measurements[SO2].values["ZsAvg"] for r in hours if r.data_time < change]
    after = [r.measurements[SO2].values["ZsAvg"] for r in hours if r.data_time >= change]
    assert statistics.mean(after) < 0.7 * statistics.mean(before)
    assert max(after) < 50.0


def test_das_corrections_follow_the_formula(quiet: tuple[FleetModel, list[Emission]]) -> None:
    _, ems = quiet
    for e in ems:
        if e.grid:
            continue
        r = e.reading
        assert e.outlet is not None
        ref = ref_o2_at(e.outlet, r.data_time)
        key, zkey = ("Rtd", "ZsRtd") if r.stream is Stream.RTD else ("Avg", "ZsAvg")
        o2 = r.measurements[O2].values[key]
        for code in POLLUTANTS:
            vals = r.measurements[code].values
            expect = correct(vals[key], o2, ref)
            if expect is None:  # air in the duct during the declared stop: no valid correction
                assert r.measurements[code].flag == "F" and zkey not in vals
            else:
                assert vals[zkey] == pytest.approx(expect, abs=6e-4)


def test_o2_moves_inversely_with_load_and_flow_with_it(quiet: tuple[FleetModel, list[Emission]]) -> None:
    m, ems = quiet
    for mn in (COAL, "GT01"):
        rtd = _records(ems, mn, Stream.RTD)
        load = [m.load_curve(mn, r.data_time) for r in rtd]
        o2 = [r.measurements[O2].values["Rtd"] for r in rtd]
        flow = [r.measurements[FLOW].values["Rtd"] for r in rtd]
        assert statistics.correlation(load, o2) < -0.6, mn
        assert statistics.correlation(load, flow) > 0.6, mn
    # coal power O2 stays around 5–9 %, gas turbine around 15 %
    coal_o2 = [r.measurements[O2].values["Rtd"] for r in _records(ems, COAL, Stream.RTD)]
    assert min(coal_o2) > 4.5 and max(coal_o2) < 9.5
    gt_o2 = statistics.mean(r.measurements[O2].values["Rtd"] for r in _records(ems, "GT01", Stream.RTD))
    assert 14.0 < gt_o2 < 16.5
    # coal power load is lower at night than in the afternoon
    assert m.load_curve(COAL, datetime(2026, 3, 2, 3, 30, tzinfo=BEIJING)) < m.load_curve(
        COAL, datetime(2026, 3, 2, 15, 30, tzinfo=BEIJING)
    )


def test_flow_units_follow_the_registry(quiet: tuple[FleetModel, list[Emission]]) -> None:
    _, ems = quiet
    coal = statistics.mean(r.measurements[FLOW].values["Rtd"] for r in _records(ems, COAL, Stream.RTD))
    gt = statistics.mean(r.measurements[FLOW].values["Rtd"] for r in _records(ems, "GT01", Stream.RTD))
    assert coal > 100_000  # m³/h as configured
    assert 50 < gt < 1000  # m³/s, the standard's unit
    hour = _records(ems, "GT01", Stream.HOUR)[3]
    # Cou is m³ for flow: the hour's mean flow × 3600 s
    assert hour.measurements[FLOW].values["Cou"] == pytest.approx(
        hour.measurements[FLOW].values["Avg"] * 3600, rel=2e-3
    )


# ------------------------------------------------------------------------------------------ aggregation


def test_minute_and_hourly_records_are_the_means_of_their_sub_values(
    quiet: tuple[FleetModel, list[Emission]],
) -> None:
    _, ems = quiet
    for mn in OUTLETS:
        rtd: dict[datetime, list[Reading]] = defaultdict(list)
        for r in _records(ems, mn, Stream.RTD):
            ts = int(r.data_time.timestamp())
            rtd[datetime.fromtimestamp(ts - ts % 600, BEIJING)].append(r)
        mins: dict[datetime, list[Reading]] = defaultdict(list)
        for r in _records(ems, mn, Stream.MIN):
            if r.data_time in rtd:  # periods fully after the start
                sub = [x.measurements[SO2].values["Rtd"] for x in rtd[r.data_time]]
                if len(rtd[r.data_time]) * r.measurements[SO2].values.get("Avg", 0) and len(sub) >= 10:
                    assert r.measurements[SO2].values["Avg"] == pytest.approx(statistics.mean(sub), abs=6e-4)
                    assert r.measurements[SO2].values["Min"] == min(sub)
                    assert r.measurements[SO2].values["Max"] == max(sub)
            mins[r.data_time.replace(minute=0)].append(r)
        hours = _records(ems, mn, Stream.HOUR)
        assert len(hours) == 48
        for h in hours:
            sub_min = mins[h.data_time]
            assert len(sub_min) == 6 or h.data_time == datetime(2026, 3, 1, 10, tzinfo=BEIJING)
            for code in (FLOW, O2, *POLLUTANTS):
                hv = h.measurements[code]
                avgs = [x.measurements[code].values["Avg"] for x in sub_min]
                if len(sub_min) == 6:
                    assert hv.values["Avg"] == pytest.approx(statistics.mean(avgs), abs=6e-3)
                    assert hv.values["Min"] == min(x.measurements[code].values["Min"] for x in sub_min)
                    assert hv.values["Max"] == max(x.measurements[code].values["Max"] for x in sub_min)
                assert hv.flag == (
                    "F" if mn == "BOIL01" and h.data_time.hour in (2, 3) and h.data_time.day == 2 else "N"
                )
            cou = sum(x.measurements[SO2].values["Cou"] for x in sub_min)
            if len(sub_min) == 6:
                assert h.measurements[SO2].values["Cou"] == pytest.approx(cou, abs=1e-3)


def test_rules_engine_computes_the_same_hours_from_the_minute_data(
    eventful: tuple[FleetModel, list[Emission]],
) -> None:
    m, ems = eventful
    for mn in OUTLETS:
        info = m.registry.outlet(mn)
        assert info is not None
        engine = OutletHourly(info.outlet)
        computed: dict[tuple[datetime, str], HourlyRecord] = {}
        for r in _records(ems, mn, Stream.MIN):
            for rec in engine.feed(r):
                computed[(rec.hour_start, rec.pollutant)] = rec
        for rec in engine.flush():
            computed[(rec.hour_start, rec.pollutant)] = rec
        checked = 0
        for h in _records(ems, mn, Stream.HOUR)[1:]:  # the first hour began before the start
            for code in (O2, *POLLUTANTS):
                got = computed.get((h.data_time, code))
                assert got is not None
                rec = got
                das = h.measurements[code]
                # A pollutant hour without a valid O2 hour has no valid corrected value, so the rules do
                # not count it valid even where the DAS flags it N (issue 12 item 2).
                if rec.o2_invalid:
                    assert h.measurements[O2].flag != "N" and das.flag == "N", (mn, h.data_time, code, rec)
                assert (das.flag == "N" and not rec.o2_invalid) == rec.valid, (mn, h.data_time, code, das.flag, rec)
                if rec.valid and rec.avg is not None:
                    assert das.values["Avg"] == pytest.approx(rec.avg, abs=6e-3)
                    if code != O2 and rec.zs_avg is not None:
                        assert das.values["ZsAvg"] == pytest.approx(rec.zs_avg, rel=2e-3, abs=2e-3)
                    checked += 1
        assert checked > 100, mn


# ------------------------------------------------------------------------------------------ events


def test_quiet_config_has_only_normal_flags_and_no_gaps(quiet: tuple[FleetModel, list[Emission]]) -> None:
    m, ems = quiet
    flags = Counter(ms.flag for e in ems for ms in e.reading.measurements.values())
    # BOIL01 is in a declared stop 02:00–04:00 on 2 March: flag F (停运), not silence
    assert set(flags) == {"N", "F"}
    stopped = [r for r in _records(ems, "BOIL01", Stream.RTD) if r.measurements[SO2].flag == "F"]
    assert len(stopped) == 120
    assert all(r.measurements[FLOW].values["Rtd"] < 2 and r.measurements[O2].values["Rtd"] > 20 for r in stopped)
    assert all("ZsRtd" not in r.measurements[SO2].values for r in stopped)  # air: no valid correction
    stop_hours = [h for h in _records(ems, "BOIL01", Stream.HOUR) if h.measurements[SO2].flag == "F"]
    assert [h.data_time.hour for h in stop_hours] == [2, 3]
    for mn in OUTLETS:
        assert m.episodes(mn) == []
        times = [r.data_time for r in _records(ems, mn, Stream.RTD)]
        step = timedelta(seconds=m.registry.outlet(mn).outlet.rtd_interval_s)  # type: ignore[union-attr]
        assert all(b - a == step for a, b in itertools.pairwise(times))


def test_exceedances_present_when_enabled_absent_when_disabled(registry: Registry) -> None:
    cfg = SimConfig.quiet(exceedances_per_day=1.5, grid=False)
    on, ems_on = _run(registry, 48, cfg, seed=11)
    off, ems_off = _run(registry, 48, replace(cfg, exceedances_per_day=0.0), seed=11)

    def over(m: FleetModel, ems: list[Emission]) -> set[tuple[str, str, datetime]]:
        out = set()
        schedules: dict[str, LimitSchedule] = {}
        for e in ems:
            if e.reading.stream is not Stream.HOUR:
                continue
            assert e.outlet is not None
            sched = schedules.setdefault(e.reading.mn, LimitSchedule(e.outlet))
            for code in POLLUTANTS:
                al = sched.at(code, e.reading.data_time)
                assert al is not None
                if e.reading.measurements[code].values.get("ZsAvg", 0.0) > al.limit:
                    out.add((e.reading.mn, code, e.reading.data_time))
        return out

    hot = over(on, ems_on)
    assert len(hot) >= 5
    assert over(off, ems_off) == set()
    # every exceeding hour lies in an exceedance episode of that outlet and pollutant, at 1.2–2× the limit
    for mn, code, hour in hot:
        eps = [e for e in on.episodes(mn) if e.kind == "exceedance" and e.code == code]
        assert any(e.start < hour + timedelta(hours=1) and e.end > hour for e in eps)
        assert all(1.2 <= e.factor <= 2.0 and 3600 <= (e.end - e.start).total_seconds() <= 3 * 3600 for e in eps)
    # the baseline (other codes, other times) is the same random stream: equal outside episodes
    first_on = _records(ems_on, COAL, Stream.RTD)[0].measurements[O2].values
    first_off = _records(ems_off, COAL, Stream.RTD)[0].measurements[O2].values
    assert first_on == first_off
    # with defaults, corrected hourly values are mostly below the limits
    dm, dems = _run(registry, 48, SimConfig(grid=False), seed=11)
    n_hours = sum(1 for e in dems if e.reading.stream is Stream.HOUR) * len(POLLUTANTS)
    assert len(over(dm, dems)) <= 0.1 * n_hours


def test_maintenance_calibration_fault_and_gaps(eventful: tuple[FleetModel, list[Emission]]) -> None:
    m, ems = eventful
    rtd_flags = Counter(
        ms.flag for e in ems if e.reading.stream is Stream.RTD and not e.grid for ms in e.reading.measurements.values()
    )
    assert rtd_flags["M"] > 0 and rtd_flags["C"] > 0 and rtd_flags["D"] > 0 and rtd_flags["N"] > 0
    assert rtd_flags["N"] > 0.8 * sum(rtd_flags.values())
    kinds = Counter(ep.kind for mn in OUTLETS for ep in m.episodes(mn))
    assert {"gap", "maintenance", "calibration", "fault", "exceedance"} <= set(kinds)
    for mn in OUTLETS:
        for ep in m.episodes(mn):
            minutes = (ep.end - ep.start).total_seconds() / 60
            if ep.kind == "gap":
                assert 5 <= minutes <= 60
            elif ep.kind in ("maintenance", "calibration"):
                assert 10 <= minutes <= 30
    # a gap of ≥ 5 min is silence in the real-time data
    for mn in OUTLETS:
        gaps = [ep for ep in m.episodes(mn) if ep.kind == "gap" and ep.end < START + timedelta(hours=71)]
        if not gaps:
            continue
        ep = gaps[0]
        skew = timedelta(seconds=m.clock_skew(mn))
        inside = [r for r in _records(ems, mn, Stream.RTD) if ep.start + skew <= r.data_time < ep.end + skew]
        assert inside == []
    # minute/hour records carry the dominant non-N flag of their period; C periods are C or N
    min_flags = Counter(r.measurements[SO2].flag for mn in OUTLETS for r in _records(ems, mn, Stream.MIN))
    assert min_flags["M"] > 0 and min_flags["C"] > 0
    hour_flags = Counter(r.measurements[SO2].flag for mn in OUTLETS for r in _records(ems, mn, Stream.HOUR))
    assert hour_flags["N"] > 0.6 * sum(hour_flags.values()) and len(hour_flags) > 1


def test_facility_state_is_optional(registry: Registry) -> None:
    _, ems = _run(registry, 1, SimConfig.quiet(facility_state=True))
    rtd = next(e.reading for e in ems if e.reading.stream is Stream.RTD and not e.grid)
    assert rtd.measurements["SB1"].values == {"RS": 1.0}
    _, ems = _run(registry, 1, SimConfig.quiet())
    assert all("SB1" not in e.reading.measurements for e in ems)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SimConfig(min_period_s=420)
    with pytest.raises(ValueError):
        SimConfig(gaps_per_day=-1)
    assert SimConfig(min_period_s=60).min_period_s == 60


def test_one_minute_records_when_configured(registry: Registry) -> None:
    _, ems = _run(registry, 3, SimConfig.quiet(min_period_s=60))
    mins = _records(ems, "GT01", Stream.MIN)
    assert {r.data_time.second for r in mins} == {0} and len(mins) >= 170
    h = _records(ems, "GT01", Stream.HOUR)[1]
    sub = [r.measurements[NOX].values["Avg"] for r in mins if r.data_time.replace(minute=0) == h.data_time]
    assert len(sub) == 60
    assert h.measurements[NOX].values["Avg"] == pytest.approx(statistics.mean(sub), abs=6e-4)


# ------------------------------------------------------------------------------------------ grid


def test_grid_sensors(quiet: tuple[FleetModel, list[Emission]], registry: Registry) -> None:
    _, ems = quiet
    grid = [e for e in ems if e.grid]
    assert {e.topic for e in grid} == {"grid/v1/G001", "grid/v1/G002"}
    for e in grid[:500]:
        d = decode_message(e.topic, encode_payload(e.reading), registry)
        assert d.grid and d.reading.measurements == e.reading.measurements
    pm25 = [e.reading.measurements["a34004"].values["Rtd"] for e in grid]
    pm10 = [e.reading.measurements["a34002"].values["Rtd"] for e in grid]
    assert 5 < statistics.mean(pm25) < 150
    assert all(b >= a for a, b in zip(pm25, pm10, strict=True))
    o3 = defaultdict(list)
    for e in grid:
        o3[e.reading.data_time.hour].append(e.reading.measurements["a05024"].values["Rtd"])
    assert statistics.mean(o3[15]) > 2 * statistics.mean(o3[4])  # afternoon ozone peak


# ------------------------------------------------------------------------------------------ encoders


def test_json_payloads_round_trip(eventful: tuple[FleetModel, list[Emission]], registry: Registry) -> None:
    _, ems = eventful
    seen = set()
    for e in ems[::7]:
        payload = encode_payload(e.reading)
        if e.grid:
            back = decode_payload(payload, mn=e.reading.mn, stream=Stream.RTD)
        else:
            prefix, mn, stream = e.topic.split("/")[0:2], e.topic.split("/")[2], e.topic.split("/")[3]
            assert "/".join(prefix) == registry.topics.prefix and mn == e.reading.mn
            back = decode_payload(payload, mn=mn, stream=Stream(stream))
        assert back.data_time == e.reading.data_time
        assert back.measurements == e.reading.measurements
        assert back.qn == e.reading.qn and back.qn is not None and len(back.qn) == 17
        seen.add(e.reading.stream)
    assert seen == {Stream.RTD, Stream.MIN, Stream.HOUR}


def test_hj212_packets_round_trip(eventful: tuple[FleetModel, list[Emission]], registry: Registry) -> None:
    m, ems = eventful
    flags = set()
    for e in ems[::11]:
        if e.outlet is None:
            continue
        flag = m.hj212_flag(e.reading.mn)
        flags.add(flag)
        text = hj212_packet(e.reading, e.outlet, flag=flag)
        assert text.startswith("##") and text.endswith("\r\n")
        seg = text[6:-6]
        assert int(text[2:6]) == len(seg.encode()) <= 1024
        assert text[-6:-2] == f"{hj212.crc16(seg.encode()):04X}"
        p = hj212.decode(text)
        assert (p.st, p.cn, p.mn, p.flag, p.qn) == (
            "31",
            {"rtd": "2011", "min": "2051", "hour": "2061"}[e.reading.stream.value],
            e.reading.mn,
            flag,
            e.reading.qn,
        )
        assert p.pw == (e.outlet.password or "123456")
        assert p.needs_reply
        # through the ingest decoder (password and MN checked against the registry)
        back = decode_message(f"{registry.topics.prefix}/{e.reading.mn}/hj212", text.encode(), registry).reading
        assert back.stream is e.reading.stream and back.data_time == e.reading.data_time
        for code, ms in e.reading.measurements.items():
            assert back.measurements[code].flag == ms.flag
            for k, v in ms.values.items():
                assert back.measurements[code].values[k] == pytest.approx(v)
    assert flags <= {5, 9}


def test_mixed_protocol_is_a_stable_per_outlet_choice(registry: Registry) -> None:
    m = FleetModel(registry, seed=0, start=START, config=SimConfig(mixed_hj212_fraction=0.5))
    choice = {mn: m.transport(mn, "mixed") for mn in OUTLETS}
    again = FleetModel(registry, seed=0, start=START, config=SimConfig(mixed_hj212_fraction=0.5))
    assert choice == {mn: again.transport(mn, "mixed") for mn in OUTLETS}
    assert all(m.transport(mn, "json") == "json" and m.transport(mn, "hj212") == "hj212" for mn in OUTLETS)
    all_hj = FleetModel(registry, seed=0, start=START, config=SimConfig(mixed_hj212_fraction=1.0))
    assert {all_hj.transport(mn, "mixed") for mn in OUTLETS} == {"hj212"}


# ------------------------------------------------------------------------------------------ TCP bridge


class _FakeBridge:
    """A minimal HJ 212 platform: answers 9014 to every data packet, except the first ``drop`` ones
    (no answer), or 9011 QnRtn=3 (wrong password) to all when ``reject``."""

    def __init__(self, drop: int = 0, reject: bool = False) -> None:
        self.drop = drop
        self.reject = reject
        self.packets: list[hj212.Packet] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                p = hj212.decode(line.strip())
                self.packets.append(p)
                if self.drop > 0:
                    self.drop -= 1
                    continue
                writer.write((hj212.reply_9011(p, 3) if self.reject else hj212.reply_9014(p)).encode())
                await writer.drain()
        finally:
            writer.close()


async def test_bridge_mode_sends_hj212_over_tcp_and_resends_without_reply(registry: Registry) -> None:
    fake = _FakeBridge(drop=1)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    published: list[Emission] = []
    try:
        stats = await run_simulator(
            registry,
            None,
            speed=math.inf,
            duration_s=1800,
            protocol="hj212",
            bridge=f"127.0.0.1:{port}",
            start=START,
            config=SimConfig.quiet(),
            on_publish=published.append,
            reply_timeout_s=0.3,
        )
    finally:
        server.close()
        await server.wait_closed()
    expected = FleetModel(registry, seed=0, start=START, config=SimConfig.quiet()).run_for(1800)
    outlet_ems = [e for e in expected if not e.grid]
    assert stats.failed == 0 and stats.resent == 1
    assert stats.published == len(outlet_ems) == len(published)
    assert stats.skipped == len(expected) - len(outlet_ems)  # grid sensors need MQTT
    assert fake.connections == len(OUTLETS)
    assert len(fake.packets) == len(outlet_ems) + 1  # one packet sent twice
    assert Counter(p.cn for p in fake.packets) >= Counter({"2011": 1, "2051": 1})
    assert {p.qn for p in fake.packets} == {e.reading.qn for e in outlet_ems}


async def test_bridge_down_counts_failures_after_retries(registry: Registry) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    one = parse_registry(REGISTRY.split('[[enterprise]]\nid = "E002"')[0])
    stats = await run_simulator(
        one,
        None,
        speed=math.inf,
        duration_s=60,
        protocol="hj212",
        bridge=f"127.0.0.1:{port}",
        start=START.replace(second=0) + timedelta(seconds=1),
        config=SimConfig.quiet(grid=False),
        reply_timeout_s=0.2,
        retries=1,
        drain_timeout_s=30,
    )
    assert stats.published == 0 and stats.failed > 0 and stats.resent == stats.failed


async def test_argument_errors(registry: Registry) -> None:
    from cems.errors import CemsError

    with pytest.raises(CemsError):
        await run_simulator(registry, None, protocol="json", start=START, duration_s=1)
    with pytest.raises(CemsError):
        await run_simulator(registry, "mqtt://127.0.0.1:1", protocol="json", bridge="x:1", duration_s=1)
    with pytest.raises(CemsError):
        await run_simulator(registry, "mqtt://127.0.0.1:1", protocol="xml", duration_s=1)


async def test_bridge_rejection_is_not_retried(registry: Registry) -> None:
    fake = _FakeBridge(reject=True)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stats = await run_simulator(
            registry,
            None,
            speed=math.inf,
            duration_s=120,
            protocol="hj212",
            bridge=f"127.0.0.1:{port}",
            start=START,
            config=SimConfig.quiet(grid=False),
            reply_timeout_s=5.0,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert stats.published == 0 and stats.resent == 0
    assert stats.failed == len(fake.packets) > 0


def test_command_line_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEMS_CONFIG", "/etc/cems/registry.toml")
    monkeypatch.setenv("CEMS_MQTT_URL", "mqtt://broker:1883")
    p = argparse.ArgumentParser()
    add_simulate_arguments(p)
    a = p.parse_args(["--speed", "60", "--duration", "3600", "--protocol", "mixed", "--seed", "9"])
    assert (a.config, a.mqtt_url, a.speed, a.duration, a.protocol, a.seed, a.bridge, a.start) == (
        "/etc/cems/registry.toml",
        "mqtt://broker:1883",
        60.0,
        3600.0,
        "mixed",
        9,
        None,
        None,
    )
    assert math.isinf(p.parse_args(["--speed", "inf"]).speed)
    with pytest.raises(SystemExit):
        p.parse_args(["--speed", "0"])
    with pytest.raises(SystemExit):
        p.parse_args(["--protocol", "xml"])
    monkeypatch.delenv("CEMS_CONFIG")
    p2 = argparse.ArgumentParser()
    add_simulate_arguments(p2)
    with pytest.raises(SystemExit):
        p2.parse_args([])  # --config is required without CEMS_CONFIG


def test_the_demo_fleet_shows_grid_hours_and_its_hotspot_sensor_raises_grid_hotspot() -> None:
    """Issue 15 item 5: the demo's sample city and simulator give grid hourly values, and the sensor the demo
    makes a hotspot (``--grid-hotspot``) raises ``grid_hotspot`` in the grid engine, the others not."""
    from cems.devtools.demo import DEMO_HOTSPOT, sample_registry_toml
    from cems.rules.grid import GRID_HOTSPOT, GridEngine

    reg = parse_registry(sample_registry_toml(2))
    model = FleetModel(
        reg,
        seed=1,
        start=datetime(2026, 11, 20, 6, tzinfo=BEIJING),
        config=SimConfig.quiet(grid_hotspots=(DEMO_HOTSPOT,)),
    )
    engine = GridEngine(reg)
    hours = 0
    hotspots: set[str] = set()
    for em in model.run_for(6 * 3600):
        if em.grid:
            out = engine.on_reading(em.reading)
            hours += len(out.hourly)
            hotspots |= {u.event.mn for u in out.events if u.event.type == GRID_HOTSPOT}
    assert hours >= 16 * 5  # 16 sensors, the first 5 hours decided
    assert hotspots == {DEMO_HOTSPOT}
