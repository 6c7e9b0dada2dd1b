"""Grafana cannot run here: prove the dashboards by running every panel query (and template-variable query)
exactly as Grafana would send it (tests/grafana.py expands ``$timeFilter``, ``$__interval``, variables with
All and multi-select) against the real InfluxDB holding a known data set — a simulated fleet replayed
through the engine (``cems replay --store``'s writer) — and checking the **values** each panel shows
against what the data set implies, computed here independently from the replay's inputs and results.

Every panel must have a check in ``CHECKS``: a new panel without one fails ``test_every_panel_has_a_check``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from grafana import (
    ALL,
    Context,
    Variable,
    bucket,
    calculate_interval,
    expand,
    expand_promql,
    panel_resolution,
    utc_ms,
)  # tests/grafana.py
from registries import emergency_line  # tests/registries.py

from cems.devtools.demo import sample_registry_toml
from cems.protocol.mark import MarkRecord
from cems.protocol.payload import encode_payload
from cems.registry import Registry, parse_registry
from cems.replay import ReplayResult, replay
from cems.report import Period, influx_loader, load_report
from cems.rules.events import Event
from cems.rules.ranking import Ranking, RankPeriod
from cems.sinks.gridrank import rank_and_write
from cems.sinks.influx import InfluxConfig
from cems.sinks.lineprotocol import SOURCE_RANK, event_line, grid_hourly_line, hourly_line
from cems.sinks.registryinfo import registry_lines
from cems.sinks.store import store_replay
from gateways.simulator import FleetModel, SimConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
BJ = ZoneInfo("Asia/Shanghai")


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def test_dashboard_json_structure() -> None:
    assert len(DASHBOARDS) >= 2
    uids = set()
    for path in DASHBOARDS:
        dash = _load(path)
        assert dash["uid"] not in uids and dash["title"] and dash["schemaVersion"] >= 30
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for p in dash["panels"]:
            if p["datasource"]["type"] == "prometheus":  # service metrics: the provisioned Prometheus
                assert p["datasource"]["uid"] == "cems-prometheus" and all(t["expr"] for t in p["targets"])
                continue
            # every panel follows the dashboard's datasource variable (InfluxDB 1.x or 2.x/3.x v1 compatibility)
            assert p["datasource"]["uid"] == "${datasource}" and p["type"] and p["targets"]
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            for t in p["targets"]:
                assert t["rawQuery"] is True and t["query"].lstrip().upper().startswith("SELECT")
                bounded = "$timeFilter" in t["query"] or "time > now() - " in t["query"]
                assert bounded, f"{path.name}: {p['title']} has no time bound"
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}"
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if "µg/m³" in p["title"]:
                assert unit == "conμgm3", f"{path.name}: {p['title']} is in µg/m³ but its unit is {unit}"
            if "mg/m³" in p["title"]:
                assert unit == "conmgm3", f"{path.name}: {p['title']} is in mg/m³ but its unit is {unit}"


# ---------------------------------------------------------------------------------------------------------
# the data set


@dataclass
class DataSet:
    db: str
    now: datetime
    res: ReplayResult
    grid: list[tuple[str, str, datetime, dict[str, float]]]  # sensor, district, time, fields
    districts: list[str]
    registry: Registry
    #: acknowledgement fields written on some events (event id → fields), as the ingester writes them
    acks: dict[str, dict[str, str]]
    ranking: Ranking

    def readings(
        self, districts: set[str], lo: int, hi: int, stream: str | None = None, mns: set[str] | None = None
    ) -> list[Any]:
        out = []
        for r, info in self.res.accepted:
            t = utc_ms(r.data_time)
            wanted = (stream is None or r.stream.value == stream) and (mns is None or r.mn in mns)
            if info.district.code in districts and lo <= t <= hi and wanted:
                out.append((r, info))
        return out

    def hours(
        self, districts: set[str], lo: int, hi: int, mns: set[str] | None = None
    ) -> dict[tuple[str, str, datetime], Any]:
        """The record of each (outlet, pollutant, hour): the highest ``source`` (docs/influxdb.md)."""
        best: dict[tuple[str, str, datetime], Any] = {}
        for h in self.res.hourly:
            if self.district_of(h.mn) not in districts or not lo <= utc_ms(h.hour_start) <= hi:
                continue
            if mns is not None and h.mn not in mns:
                continue
            k = (h.mn, h.pollutant, h.hour_start)
            if k not in best or SOURCE_RANK[h.source] > SOURCE_RANK[best[k].source]:
                best[k] = h
        return best

    def district_of(self, mn: str) -> str:
        return next(i.district.code for _, i in self.res.accepted if i.outlet.mn == mn)


@pytest.fixture(scope="module")
def data(influxdb: Any) -> DataSet:
    """Twelve hours of a simulated fleet (6 enterprises, 4 districts) with frequent events, replayed."""
    db = "dashboards_test"
    influxdb.drop_db(db)
    influxdb.create_db(db)
    # the sample city, its first enterprise on the emergency list (tests/registries.py's line, on its first outlet)
    toml = sample_registry_toml(6)
    first_sector = toml.index("\n", toml.index("sector = ")) + 1
    toml = toml[:first_sector] + emergency_line().replace("MN0001", "13060200001001") + toml[first_sector:]
    registry = parse_registry(toml)
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    cfg = SimConfig(exceedances_per_day=6, calibrations_per_day=6, maintenance_per_day=3, gaps_per_day=2)
    model = FleetModel(registry, seed=7, start=end - timedelta(hours=12), config=cfg)
    emissions = model.advance(end)
    plant = [e for e in emissions if e.outlet is not None]
    lines = [encode_payload(e.reading).decode() for e in plant]
    # the grid sensors from an hour before yesterday's Beijing midnight (36 hours at least), so that yesterday is a
    # whole Beijing day whatever hour the test runs at (CI of 2026-12-01 ran after 08:00 UTC, when 36 hours
    # started after yesterday's midnight and the township ranking had no valid day), as the ingester receives them:
    # `grid/v1/{id} {json}` lines, replayed with the plant's by the same engine (grid_reading, grid_hourly,
    # grid_daily and grid events stored by the replay's writer, as `cems replay --store` does)
    # one sensor made a hotspot (as `cems-gateway simulate --grid-hotspot` does), so that real grid_hotspot
    # events are in the data set whatever hour the test runs at
    hot = SimConfig(grid_hotspots=(registry.grid_sensor[0].id,))
    yesterday_midnight = (now.astimezone(BJ) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    grid_start = min(end - timedelta(hours=36), yesterday_midnight.astimezone(UTC) - timedelta(hours=1))
    grid_model = FleetModel(registry, seed=7, start=grid_start, config=hot)
    grid_readings = [e.reading for e in grid_model.advance(end) if e.outlet is None]
    prefix = registry.topics.grid_prefix
    lines += [f"{prefix}/{r.mn} {encode_payload(r).decode()}" for r in grid_readings]
    marks = _marks(registry, end)
    res = replay(registry, lines, "auto", keep_readings=True, marks=marks)
    assert res.readings == len(plant) + len(grid_readings) and res.grid_readings == len(grid_readings)
    assert not res.rejected and len(res.marks) == len(marks) and res.grid_hourly and res.grid_daily
    asyncio.run(store_replay(InfluxConfig(url=influxdb.url, db=db), res))
    # a grid hour revised to having no AQI (late data made it invalid): InfluxDB keeps the old `aqi` beside the
    # revision's `unset` (docs/influxdb.md); the air panels must not show it. Each sensor's latest hour with an
    # AQI, so that the map's `last` would pick the stale value.
    latest: dict[str, Any] = {}
    for h in res.grid_hourly:
        if h.aqi is not None and (h.sensor not in latest or h.hour_start > latest[h.sensor].hour_start):
            latest[h.sensor] = h
    revised = [dataclasses.replace(h, aqi=None, level=None, category=None, primary=()) for h in latest.values()][::2]
    assert revised
    influxdb.write(db, [grid_hourly_line(h) for h in revised], precision="ms")
    gone = {(h.sensor, h.hour_start) for h in revised}
    res.grid_hourly[:] = [h for h in res.grid_hourly if (h.sensor, h.hour_start) not in gone] + revised
    sensors = {g.id: g for g in registry.grid_sensor}
    grid = []
    for r in grid_readings:
        fields = {f"{c}_{s}": v for c, m in r.measurements.items() for s, v in m.values.items()}
        grid.append((r.mn, sensors[r.mn].district, r.data_time, fields))
    districts = sorted({i.district.code for _, i in res.accepted})
    # the data set has what the panels are about, so that the checks below check something
    kinds = Counter((e.type, e.status) for e in res.events)
    assert kinds[("hourly_exceedance", "open")] and kinds[("hourly_exceedance", "closed")]
    # what a live ingester leaves beside a revised hour (docs/influxdb.md, cems_hourly `source`): the point of
    # the lower source it computed first from real-time data, with other figures. Every tenth DAS hour gets one;
    # the panels must show the DAS's record, never the stale one, nor both.
    stale = [
        dataclasses.replace(
            h, source="realtime", zs_avg=(h.zs_avg or 1.0) * 3, exceeds=not h.exceeds, valid=not h.valid, limit=h.limit
        )
        for h in res.hourly[::10]
        if h.source == "das_2061"
    ]
    where = {i.outlet.mn: (i.enterprise.id, i.district.code) for _, i in res.accepted}
    influxdb.write(db, [hourly_line(h, *where[h.mn]) for h in stale], precision="ms")
    res.hourly.extend(stale)
    assert len(stale) > 20
    # an exceedance opened five days ago and still open (hand-built, as the engine stores it): outside every
    # default range, yet the room must see it among the open ones
    first = next(e for e in res.events if e.type == "hourly_exceedance")
    old = dataclasses.replace(first, start=end - timedelta(days=5), end=None, status="open", hours=120.0)
    influxdb.write(db, [event_line(old)], precision="ms")
    res.events.append(old)
    # acknowledgement state as the ingester writes it (ComplianceRuntime: acked_by/acked_at on `cems events ack`,
    # escalated_at when the city's ack SLA passed unacknowledged); the replay has no duty officer, so three
    # open events get hand-built states: escalated, escalated then acknowledged, acknowledged in time
    opened = [e for e in res.events if e.status == "open" and e.type != "warning_level"]
    assert len(opened) >= 3
    # `opened_at` (when the ingester first alerted: the SLA counts from it, docs/influxdb.md) differs from the
    # start on purpose; `case_status` as the console's actions leave it (dispatched after the acknowledgement)
    acks = {
        opened[0].event_id: {
            "escalated_at": (end - timedelta(hours=1)).isoformat(),
            "opened_at": (end - timedelta(hours=5)).isoformat(),
        },
        opened[1].event_id: {
            "escalated_at": (end - timedelta(hours=2)).isoformat(),
            "acked_by": "张三",
            "acked_at": (end - timedelta(minutes=30)).isoformat(),
            "opened_at": (end - timedelta(hours=6)).isoformat(),
            "case_status": "dispatched",
        },
        opened[2].event_id: {
            "acked_by": "李四",
            "acked_at": (end - timedelta(minutes=10)).isoformat(),
            "opened_at": (end - timedelta(hours=1)).isoformat(),
            "case_status": "acknowledged",
        },
    }
    influxdb.write(db, [event_line(e, **acks[e.event_id]) for e in opened[:3]], precision="ms")
    # heavy-pollution warnings as `cems warning set` leaves them (docs/events.md, warning_level): a red
    # warning that ended, then orange in force
    w: dict[str, Any] = dict(mn="city", enterprise="city", district="city", limit=None, ref_o2=None, profile="test")
    red = Event("warning_level", pollutant="red", start=end - timedelta(hours=30), end=end - timedelta(hours=20),
                hours=10.0, peak=4.0, status="closed", **w)  # fmt: skip
    orange = Event("warning_level", pollutant="orange", start=end - timedelta(hours=3), end=None, hours=3.0,
                   peak=3.0, status="open", **w)  # fmt: skip
    influxdb.write(db, [event_line(red), event_line(orange)], precision="ms")
    res.events += [red, orange]
    # data-quality signals (docs/events.md, issue 17; hand-built: the simulated fleet raises none), one of each
    # type on outlets of several districts, open and closed, one open since three days, two acknowledged
    quality = _quality_events(res, end)
    qacks = {quality[0].event_id: {"acked_by": "王五", "acked_at": (end - timedelta(hours=1)).isoformat(),
                                   "opened_at": (end - timedelta(hours=2)).isoformat(), "case_status": "acknowledged"},
             quality[2].event_id: {"acked_by": "赵六", "acked_at": (end - timedelta(minutes=20)).isoformat(),
                                   "opened_at": (end - timedelta(days=3)).isoformat()}}  # fmt: skip
    influxdb.write(db, [event_line(e, **qacks.get(e.event_id, {})) for e in quality], precision="ms")
    res.events += quality
    acks.update(qacks)
    # the registry's names and places (`cems dashboards registry`)
    influxdb.write(db, registry_lines(registry, end - timedelta(hours=1)), precision="ms")
    # heavy-pollution response events (docs/events.md; hand-built: a replay without a warning file has none)
    e1 = next(i for _, i in res.accepted if i.enterprise.id == "E001")
    e2 = next(i for _, i in res.accepted if i.district.code != e1.district.code)
    response = [
        Event("emergency_noncompliance", e1.outlet.mn, "E001", e1.district.code, "a21026", end - timedelta(hours=2),
              None, 2.0, 12.5, 8.0, None, "速率 12.5 kg/h > 允许 8.0 kg/h", "open"),
        Event("staggered_production_violation", e2.outlet.mn, e2.enterprise.id, e2.district.code, None,
              end - timedelta(hours=5), end - timedelta(hours=4), 1.0, 3.0, 1.0, None, "错峰期间运行", "closed"),
    ]  # fmt: skip
    influxdb.write(db, [event_line(e) for e in response], precision="ms")
    res.events += response
    # the township ranking of yesterday (a whole day of the replayed grid_daily), by cems's own ranking
    yesterday = (now.astimezone(BJ) - timedelta(days=1)).date()
    assert {d.sensor for d in res.grid_daily if d.day == yesterday and "pm25" in d.means} == set(sensors)

    def query(q: str, epoch: str | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = influxdb.query(db, q, epoch=epoch)
        return rows

    ranking = rank_and_write(
        query,
        lambda lines: influxdb.write(db, lines, precision="ms"),
        RankPeriod.containing("day", yesterday),
    )
    assert ranking is not None and ranking.city
    # the replay raises real grid_hotspot events; a retracted one (late data undid it: docs/events.md) is
    # hand-built, at half past (real ones start on the hour, so it never shares their key)
    assert any(e.type == "grid_hotspot" for e in res.events)
    g = registry.grid_sensor[0]
    spots = [Event("grid_hotspot", g.id, "", g.district, "pm25", end - timedelta(hours=3, minutes=30),
                   end - timedelta(hours=1, minutes=30), 2.0, 160.0, None, None, None, "retracted")]  # fmt: skip
    influxdb.write(db, [event_line(e) for e in spots], precision="ms")
    res.events += spots
    return DataSet(db, now, res, grid, districts, registry, acks, ranking)


QUALITY = ("flatline", "o2_anomaly", "zs_inconsistent", "hourly_inconsistent", "limit_hugging", "out_of_range",
           "operation_mismatch")  # fmt: skip


def _quality_events(res: ReplayResult, end: datetime) -> list[Event]:
    """One event of each data-quality signal (docs/events.md's fields and evidence in words), spread over the
    outlets of every district; the first four open (the third since three days), the others closed."""
    outlets = list({i.outlet.mn: i for _, i in res.accepted}.values())
    out = []
    for k, kind in enumerate(QUALITY):
        i = outlets[(k * 5) % len(outlets)]
        start = end - (timedelta(days=3) if k == 2 else timedelta(hours=2 + k))
        closed = k >= 4
        out.append(
            Event(kind, i.outlet.mn, i.enterprise.id, i.district.code, "a19001" if kind == "o2_anomaly" else "a21026",
                  start, start + timedelta(hours=1) if closed else None, 1.0 + k, 20.5 + k, 20.0, None,
                  i.outlet.profile, "closed" if closed else "open", evidence=f"信号 {kind}：数值 {20.5 + k}，阈值 20")
        )  # fmt: skip
    return out


def _marks(registry: Registry, end: datetime) -> list[MarkRecord]:
    """Marks as enterprises and the bureau submit them (docs/influxdb.md ``cems_mark``), applied by the replay
    (``cems replay --marks``) and stored by its writer: two on the first outlet, one in another district."""
    outlets = registry.outlets()
    first = outlets[0]
    other = next(i for i in outlets if i.district.code != first.district.code)
    out = []
    for k, (info, kind, typ) in enumerate(
        ((first, "mark", "calibration"), (first, "mark", "maintenance"), (other, "mark", "fault"))
    ):
        start = end - timedelta(hours=6 - k)
        out.append(
            MarkRecord(record_id=f"R{k:03d}", kind=kind, mn=info.outlet.mn, type=typ, start=start,  # type: ignore[arg-type]
                       end=start + timedelta(hours=1), reason=f"第{k + 1}号标记理由", attachment=f"附件{k}.pdf",
                       submitter="企业环保员" if k < 2 else "区局", received_at=start - timedelta(minutes=30),
                       via=f"cems/v1/{info.outlet.mn}/mark")
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------------------
# checks: (rows the query returned, the data set, districts selected, range, interval) → assert


@dataclass
class Run:
    rows: list[dict[str, Any]]
    data: DataSet
    districts: set[str]
    lo: int
    hi: int
    interval_ms: int
    ref: str = "A"  # the panel target's refId
    mns: set[str] | None = None  # the outlets selected (None: All)


Check = Callable[[Run], None]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _scalar(run: Run) -> float:
    assert len(run.rows) <= 1, run.rows
    return run.rows[0][next(k for k in run.rows[0] if k != "time")] if run.rows else 0


def _t(row: dict[str, Any]) -> int:
    return int(row["time"])


def count_rtd(code: str) -> Check:
    def check(run: Run) -> None:
        rs = run.data.readings(run.districts, run.lo, run.hi, "rtd")
        assert _scalar(run) == sum(1 for r, _ in rs if "Rtd" in r.measurements.get(code, _NONE).values)

    return check


@dataclass
class _Absent:
    """A code the reading does not carry."""

    values: dict[str, float] = dataclasses.field(default_factory=dict)
    flag: str | None = None


_NONE = _Absent()


def reporting_outlets(run: Run) -> None:
    want = {i.outlet.mn for _, i in run.data.readings(run.districts, run.lo, run.hi)}
    assert want and _scalar(run) == len(want)


def grid_sensors(run: Run) -> None:
    want = {
        s for s, d, t, f in run.data.grid if d in run.districts and run.lo <= utc_ms(t) <= run.hi and "a34004_Rtd" in f
    }
    assert _scalar(run) == len(want)


def bad_flags(run: Run) -> None:
    rs = run.data.readings(run.districts, run.lo, run.hi, "rtd")
    want = sum(1 for r, _ in rs if r.measurements.get("a21026", _NONE).flag not in (None, "N"))
    assert _scalar(run) == want


def series_mean(field: str, stream: str, by_hour: bool = False, column: str = "mean") -> Check:
    """``mean(field) GROUP BY time(...), "mn"``: every bucket's mean, per outlet."""
    code, suffix = field.split("_")

    def check(run: Run) -> None:
        step = 3_600_000 if by_hour else run.interval_ms
        acc: dict[tuple[str, int], list[float]] = defaultdict(list)
        for r, i in run.data.readings(run.districts, run.lo, run.hi, stream, run.mns):
            v = r.measurements.get(code, _NONE).values.get(suffix)
            if v is not None:
                acc[(i.outlet.mn, bucket(utc_ms(r.data_time), step))].append(v)
        got = {(row["mn"], _t(row)): row[column] for row in run.rows if row[column] is not None}
        assert got.keys() == acc.keys() and (acc or not _all(run))
        for k, vs in acc.items():
            assert math.isclose(got[k], sum(vs) / len(vs), rel_tol=1e-9), k

    return check


def grid_mean(field: str) -> Check:
    def check(run: Run) -> None:
        acc: dict[tuple[str, int], list[float]] = defaultdict(list)
        for s, d, t, f in run.data.grid:
            if d in run.districts and run.lo <= utc_ms(t) <= run.hi and field in f:
                acc[(s, bucket(utc_ms(t), run.interval_ms))].append(f[field])
        got = {(row["sensor"], _t(row)): row["mean"] for row in run.rows if row["mean"] is not None}
        assert got.keys() == acc.keys() and acc
        for k, vs in acc.items():
            assert math.isclose(got[k], sum(vs) / len(vs), rel_tol=1e-9), k

    return check


def latest_values(run: Run) -> None:
    last: dict[str, Any] = {}
    for r, i in run.data.readings(run.districts, run.lo, run.hi, "rtd"):
        last[i.outlet.mn] = r  # data-time order
    got = {row["mn"]: row for row in run.rows}
    assert got.keys() == last.keys()
    for mn, r in last.items():
        assert _close(got[mn]["SO2 折算"], r.measurements["a21026"].values.get("ZsRtd"))
        assert _close(got[mn]["O2 %"], r.measurements["a19001"].values.get("Rtd"))
        assert got[mn]["flag"] == r.measurements["a21026"].flag


def open_events(kind: str) -> Check:
    def check(run: Run) -> None:
        want = [e for e in run.data.res.events if e.type == kind and e.status == "open" and e.district in run.districts]
        # whenever they started: an exceedance open since before the range still counts
        assert _scalar(run) == len(want)

    return check


def events_started(kind: str | None) -> Check:
    def check(run: Run) -> None:
        want = {
            e.event_id
            for e in run.data.res.events
            if (kind is None or e.type == kind) and e.district in run.districts and run.lo <= utc_ms(e.start) <= run.hi
        }
        if kind is None:
            got = {row["event_id"]: row for row in run.rows}
            assert got.keys() == want
            for e in run.data.res.events:
                if e.event_id in want:
                    assert got[e.event_id]["status"] == e.status and _close(got[e.event_id]["peak"], e.peak)
        else:
            assert _scalar(run) == len(want)

    return check


def hourly_vs_limit(pollutant: str) -> Check:
    def check(run: Run) -> None:
        want = {
            (mn, utc_ms(h)): rec
            for (mn, p, h), rec in run.data.hours(run.districts, run.lo, run.hi, run.mns).items()
            if p == pollutant
        }
        got = {(row["mn"], _t(row)): row for row in run.rows}
        assert got.keys() == want.keys() and want
        for k, rec in want.items():
            assert got[k]["source_rank"] == SOURCE_RANK[rec.source]
            assert _close(got[k]["zs_avg"], rec.zs_avg) and _close(got[k]["limit"], rec.limit), k

    return check


def exceeding_hours(run: Run) -> None:
    want = Counter(
        next(i.enterprise.id for _, i in run.data.res.accepted if i.outlet.mn == mn)
        for (mn, _, _), rec in run.data.hours(run.districts, run.lo, run.hi).items()
        if rec.exceeds
    )
    assert {row["enterprise"]: row["count"] for row in run.rows} == dict(want)


def valid_hours(run: Run) -> None:
    want = Counter(
        (run.data.district_of(mn), utc_ms(h))
        for (mn, _, h), rec in run.data.hours(run.districts, run.lo, run.hi).items()
        if rec.valid
    )
    got = {(row["district"], _t(row)): row["count"] for row in run.rows if row["count"]}
    assert got == dict(want) and want


def district_rate(run: Run) -> None:
    latest = {}
    for r in sorted(run.data.res.district_months, key=lambda r: r.month):
        if r.district in run.districts:
            latest[r.district] = r
    got = {row["district"]: row["last"] for row in run.rows}
    assert got.keys() == latest.keys()
    for d, r in latest.items():
        assert _close(got[d], r.valid / r.expected), d


def outlets_below_90(run: Run) -> None:
    month = run.data.now.astimezone(BJ).strftime("%Y-%m")
    exp: dict[str, int] = Counter()
    val: dict[str, int] = Counter()
    for r in run.data.res.outlet_days:
        if r.district in run.districts and r.day.strftime("%Y-%m") == month:
            exp[r.mn] += r.expected
            val[r.mn] += r.valid
    want = {mn: val[mn] / exp[mn] for mn in exp if exp[mn] and val[mn] / exp[mn] < 0.9}
    got = {row["mn"]: row for row in run.rows}
    assert got.keys() == want.keys() and want
    for mn, rate in want.items():
        assert _close(got[mn]["effective_rate"], rate) and got[mn]["expected"] == exp[mn]


# ---- cems-room (值班总览)


def _open(run: Run, types: set[str]) -> list[Event]:
    return [e for e in run.data.res.events if e.type in types and e.status == "open" and e.district in run.districts]


def open_count(*types: str) -> Check:
    def check(run: Run) -> None:
        assert _scalar(run) == len(_open(run, set(types)))

    return check


def _all(run: Run) -> bool:
    return "city" in run.districts


def escalated_unacked(run: Run) -> None:
    """Open events escalated (the ack SLA passed) and, of them, acknowledged since; the panel shows the
    difference (Grafana calculateField, an empty count as 0)."""
    kinds = {e.type for e in run.data.res.events} - {"warning_level"}
    esc = [e for e in _open(run, kinds) if "escalated_at" in run.data.acks.get(e.event_id, {})]
    acked = [e for e in esc if "acked_at" in run.data.acks[e.event_id]]
    if _all(run):
        assert len(esc) - len(acked) == 1, "the data set has one escalated, unacknowledged event"
    if not esc:
        assert not run.rows
        return
    (row,) = run.rows
    assert (row["escalated"], row["acked"] or 0) == (len(esc), len(acked))
    assert row["escalated"] - (row["acked"] or 0) == len(esc) - len(acked)


def warning_level_now(run: Run) -> None:
    in_force = [e for e in run.data.res.events if e.type == "warning_level" and e.status == "open"]
    assert run.rows[0]["last"] == max(in_force, key=lambda e: e.start).peak == 3


def _outlet_names(run: Run, cols: dict[str, str]) -> None:
    want = {i.outlet.mn: i for i in run.data.registry.outlets()}
    got = {row["mn"]: row for row in run.rows}
    assert got.keys() == want.keys()
    for mn, i in want.items():
        for col, attr in cols.items():
            value = {"name": f"{i.enterprise.name} {i.outlet.name}", "district": i.district.name}[attr]
            assert got[mn][col] == value, (mn, col)


def open_events_table(run: Run) -> None:
    if run.ref == "B":
        _outlet_names(run, {"排口": "name", "区县": "district"})
        return
    kinds = {e.type for e in run.data.res.events} - {"warning_level"}
    want = {(e.type, e.mn, e.pollutant or "", utc_ms(e.start)): e for e in _open(run, kinds)}
    got = {(r["type"], r["mn"], r["pollutant"], _t(r)): r for r in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run))
    for k, e in want.items():
        acks = run.data.acks.get(e.event_id, {})
        for f in ("acked_by", "acked_at", "escalated_at", "opened_at", "case_status"):
            assert got[k][f] == acks.get(f), (k, f)
        assert _close(got[k]["peak"], e.peak) and got[k]["start"] == e.start.astimezone(BJ).isoformat()


def today_by_district(run: Run) -> None:
    if run.ref == "B":
        names = {d.code: d.name for d in run.data.registry.district}
        assert {r["district"]: r["区县"] for r in run.rows} == names
        return
    want = Counter(
        (e.district, e.type)
        for e in run.data.res.events
        if e.type != "warning_level" and e.district in run.districts and run.lo <= utc_ms(e.start) <= run.hi
    )
    assert {(r["district"], r["type"]): r["count"] for r in run.rows} == dict(want)


def outlet_map(run: Run) -> None:
    if run.ref == "A":
        want = {i.outlet.mn: i for i in run.data.registry.outlets() if i.district.code in run.districts}
        got = {r["mn"]: r for r in run.rows}
        assert got.keys() == want.keys()
        for mn, i in want.items():
            assert (got[mn]["lat"], got[mn]["lon"]) == (i.outlet.lat, i.outlet.lon) and i.outlet.lat is not None
        return
    kinds = {"hourly_exceedance", "daily_exceedance", "realtime_warning", "data_interruption"}
    per_mn = Counter(e.mn for e in _open(run, kinds))
    assert {r["mn"]: r["open_events"] for r in run.rows} == dict(per_mn) and (per_mn or not _all(run))


# ---- cems-outlet (排口详情)


def several(*checks: Check) -> Check:
    def check(run: Run) -> None:
        for c in checks:
            c(run)

    return check


FLAGGED = {"SO2": "a21026", "NOx": "a21002", "颗粒物": "a34013", "O2": "a19001"}


def flags_table(run: Run) -> None:
    want = {}
    for r, _ in run.data.readings(run.districts, run.lo, run.hi, "rtd", run.mns):
        flags = {col: r.measurements.get(code, _NONE).flag for col, code in FLAGGED.items()}
        if any(f not in (None, "N") for f in flags.values()):
            want[(r.mn, utc_ms(r.data_time))] = flags
    got = {(row["mn"], _t(row)): {col: row[col] for col in FLAGGED} for row in run.rows}
    assert got == want and (want or not _all(run))


def event_annotations(run: Run) -> None:
    want = {
        e.event_id
        for e in run.data.res.events
        if e.district in run.districts and (run.mns is None or e.mn in run.mns) and run.lo <= utc_ms(e.start) <= run.hi
    }
    assert {row["event_id"] for row in run.rows} == want and want


def _marks_in(run: Run) -> list[MarkRecord]:
    where = {i.outlet.mn: i.district.code for i in run.data.registry.outlets()}
    return [
        m
        for m in run.data.res.marks
        if where[m.mn] in run.districts and (run.mns is None or m.mn in run.mns)
        and run.lo <= utc_ms(m.received_at) <= run.hi
    ]  # fmt: skip


def mark_annotations(run: Run) -> None:
    want = {m.record_id: m for m in _marks_in(run)}
    got = {row["record_id"]: row for row in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run) or run.mns is not None)
    for rid, m in want.items():
        assert (got[rid]["type"], got[rid]["reason"], _t(got[rid])) == (m.type, m.reason, utc_ms(m.received_at))


def marks_table(run: Run) -> None:
    if run.ref == "B":
        _outlet_names(run, {"排口": "name", "区县": "district"})
        return
    want = {(m.mn, m.record_id): m for m in _marks_in(run)}
    got = {(row["mn"], row["record_id"]): row for row in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run) or run.mns is not None)
    for k, m in want.items():
        row = got[k]
        assert (row["kind"], row["type"], row["status"], row["submitter"], row["attachment"]) == (
            m.kind, m.type, m.status, m.submitter, m.attachment
        )  # fmt: skip
        assert (row["from"], row["to"]) == (m.start.astimezone(BJ).isoformat(), m.end.astimezone(BJ).isoformat())


# ---- cems-quality (数据质量)


def _signals(run: Run, *, open_only: bool) -> list[Event]:
    return [
        e
        for e in run.data.res.events
        if e.type in QUALITY and e.district in run.districts
        and (e.status == "open" if open_only else run.lo <= utc_ms(e.start) <= run.hi)
    ]  # fmt: skip


def quality_open(run: Run) -> None:
    want = _signals(run, open_only=True)
    acked = [e for e in want if "acked_at" in run.data.acks.get(e.event_id, {})]
    if _all(run):
        assert (len(want), len(acked)) == (4, 2), "the data set: four open signals, two acknowledged"
    if not want:
        assert not run.rows
        return
    (row,) = run.rows
    assert (row["未关闭"], row["已签收"] or 0) == (len(want), len(acked))


def quality_by_type(run: Run) -> None:
    want = Counter(e.type for e in _signals(run, open_only=False))
    assert {r["type"]: r["信号数"] for r in run.rows} == dict(want) and (want or not _all(run))


def quality_open_table(run: Run) -> None:
    if run.ref == "B":
        _outlet_names(run, {"排口": "name", "区县": "district"})
        return
    want = {(e.type, e.mn, e.pollutant, utc_ms(e.start)): e for e in _signals(run, open_only=True)}
    got = {(r["type"], r["mn"], r["pollutant"], _t(r)): r for r in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run))
    for k, e in want.items():
        acks = run.data.acks.get(e.event_id, {})
        assert got[k]["evidence"] == e.evidence and _close(got[k]["peak"], e.peak), k
        for f in ("opened_at", "acked_by", "acked_at", "case_status"):
            assert got[k][f] == acks.get(f), (k, f)


def quality_by_enterprise(run: Run) -> None:
    if run.ref == "B":
        _registry_names(run, "enterprise")
        return
    want = Counter(e.enterprise for e in _signals(run, open_only=False))
    assert {r["enterprise"]: r["信号数"] for r in run.rows} == dict(want) and (want or not _all(run))


def quality_in_range(run: Run) -> None:
    if run.ref == "B":
        _outlet_names(run, {"排口": "name", "区县": "district"})
        return
    want = {(e.type, e.mn, utc_ms(e.start)): e for e in _signals(run, open_only=False)}
    got = {(r["type"], r["mn"], _t(r)): r for r in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run))
    for k, e in want.items():
        end = e.end.astimezone(BJ).isoformat() if e.end is not None else ""
        assert (got[k]["status"], got[k]["end"], got[k]["evidence"]) == (e.status, end, e.evidence), k
        assert got[k]["case_status"] == run.data.acks.get(e.event_id, {}).get("case_status"), k


# ---- cems-transmission (传输有效率)


def _day_ms(d: Any) -> int:
    return utc_ms(datetime.combine(d, datetime.min.time(), BJ))


def _registry_names(run: Run, key: str) -> None:
    reg = run.data.registry
    want = {
        "district": {d.code: d.name for d in reg.district},
        "enterprise": {e.id: e.name for e in reg.enterprise},
        "mn": {i.outlet.mn: f"{i.enterprise.name} {i.outlet.name}" for i in reg.outlets()},
    }[key]
    assert {r[key]: r["名称"] for r in run.rows} == want


def rate_by(key: str) -> Check:
    """Σ valid ÷ Σ expected of the outlet days in the range (the replay's RateCounter), per ``key``."""

    def check(run: Run) -> None:
        if run.ref == "B":
            _registry_names(run, key)
            return
        exp: Counter[str] = Counter()
        val: Counter[str] = Counter()
        for r in run.data.res.outlet_days:
            if r.district in run.districts and run.lo <= _day_ms(r.day) <= run.hi:
                k = {"district": r.district, "enterprise": r.enterprise, "mn": r.mn}[key]
                exp[k] += r.expected
                val[k] += r.valid
        want = {k: val[k] / exp[k] for k in exp if exp[k]}
        if key == "mn":
            want = {k: v for k, v in want.items() if v < 0.9}
        got = {r[key]: r["effective_rate"] for r in run.rows}
        assert got.keys() == want.keys() and want
        for k, v in want.items():
            assert _close(got[k], v), k

    return check


def supervised_districts(run: Run) -> None:
    if run.ref == "B":
        _registry_names(run, "district")
        return
    want = {}
    for m in run.data.res.district_months:
        start = utc_ms(datetime.strptime(m.month + "-01", "%Y-%m-%d").replace(tzinfo=BJ))
        if m.supervised and m.district in run.districts and run.lo <= start <= run.hi:
            want[m.district] = m
    got = {r["district"]: r for r in run.rows}
    assert got.keys() == want.keys() and want
    for d, m in want.items():
        assert got[d]["reasons"] == "；".join(m.reasons) or m.reasons[0] in got[d]["reasons"]
        assert got[d]["enterprises_exceeding"] == len(m.exceeding_enterprises)


# ---- cems-emergency (重污染天气应急)

RESPONSE = {"emergency_noncompliance", "emergency_stop_violation", "staggered_production_violation", "treatment_off"}


def warning_history(run: Run) -> None:
    want = {e.pollutant: e for e in run.data.res.events if e.type == "warning_level"}
    got = {r["pollutant"]: r for r in run.rows}
    assert got.keys() == want.keys() and len(want) == 2
    for level, e in want.items():
        assert got[level]["peak"] == e.peak and got[level]["status"] == e.status
        assert got[level]["start"] == e.start.astimezone(BJ).isoformat()


def _response_in_range(run: Run) -> list[Event]:
    return [
        e
        for e in run.data.res.events
        if e.type in RESPONSE and e.district in run.districts and run.lo <= utc_ms(e.start) <= run.hi
    ]


def response_by_type(run: Run) -> None:
    want = Counter(e.type for e in _response_in_range(run))
    assert {r["type"]: r["count"] for r in run.rows} == dict(want) and (want or not _all(run))


def response_table(run: Run) -> None:
    if run.ref == "B":
        reg = run.data.registry
        names = {i.outlet.mn: f"{i.enterprise.name} {i.outlet.name}" for i in reg.outlets()}
        names |= {g.id: g.name or g.id for g in reg.grid_sensor}
        assert {r["mn"]: r["名称"] for r in run.rows} == names
        return
    want = {(e.type, e.mn): e for e in _response_in_range(run)}
    got = {(r["type"], r["mn"]): r for r in run.rows}
    assert got.keys() == want.keys()
    for k, e in want.items():
        assert (got[k]["peak"], got[k]["limit"], got[k]["profile"]) == (e.peak, e.limit, e.profile)


def listed_enterprises(run: Run) -> None:
    if run.ref == "B":
        want = Counter(e.enterprise for e in _response_in_range(run))
        assert {r["enterprise"]: r["违规事件"] for r in run.rows} == dict(want)
        return
    listed = {
        e.id: e
        for e in run.data.registry.enterprise
        if e.line and e.district in run.districts and any(o.mn in line.outlets for line in e.line for o in e.outlet)
    }
    got = {r["enterprise"]: r for r in run.rows}
    assert got.keys() == listed.keys() and (listed or not _all(run))
    for eid, e in listed.items():
        assert (got[eid]["企业"], got[eid]["绩效分级"]) == (e.name, e.grade)


# ---- cems-air (空气质量)


def _sensors(run: Run) -> dict[str, Any]:
    return {g.id: g for g in run.data.registry.grid_sensor if g.district in run.districts}


def _hourly_aqi(run: Run) -> dict[tuple[str, int], int]:
    """The replayed grid hours in the range with an AQI: (sensor, hour start) → AQI."""
    return {
        (h.sensor, utc_ms(h.hour_start)): h.aqi
        for h in run.data.res.grid_hourly
        if h.aqi is not None and h.sensor in _sensors(run) and run.lo <= utc_ms(h.hour_start) <= run.hi
    }


def aqi_map(run: Run) -> None:
    if run.ref == "B":
        want = _sensors(run)
        got = {r["sensor"]: r for r in run.rows}
        assert got.keys() == want.keys() and want
        for sid, g in want.items():
            assert (got[sid]["lat"], got[sid]["lon"]) == (g.lat, g.lon) and g.lat is not None
        return
    latest: dict[str, tuple[int, int]] = {}
    for (sid, t), a in _hourly_aqi(run).items():
        if sid not in latest or t > latest[sid][0]:
            latest[sid] = (t, a)
    assert {r["sensor"]: r["aqi"] for r in run.rows} == {s: a for s, (_, a) in latest.items()} and latest


def aqi_series(run: Run) -> None:
    want = {(s, bucket(t, 3_600_000)): a for (s, t), a in _hourly_aqi(run).items()}
    assert {(r["sensor"], _t(r)): r["last"] for r in run.rows} == want and want


def township_ranking(run: Run) -> None:
    want = {(e.figures.township, e.figures.district): e for e in run.data.ranking.city}
    want = {k: e for k, e in want.items() if k[1] in run.districts}
    got = {(r["township"], r["district"]): r for r in run.rows}
    assert got.keys() == want.keys() and want
    daily = [d for d in run.data.res.grid_daily if d.day == run.data.ranking.period.first and "pm25" in d.means]
    for k, e in want.items():
        assert got[k]["rank"] == e.rank and got[k]["of"] == e.of and _close(got[k]["index"], e.index)
        assert _close(got[k]["pm25"], e.figures.pm25)
        # the township's PM2.5 of the day: the mean of its micro-stations' replayed daily means
        pm25 = [
            v
            for d in daily
            if (d.township, d.district) == k and d.kind == "micro_station" and (v := d.means.get("pm25")) is not None
        ]
        assert pm25 and math.isclose(got[k]["pm25"], sum(pm25) / len(pm25), rel_tol=1e-9), k
    ranks = sorted(got.values(), key=lambda r: r["index"])
    assert [r["rank"] for r in ranks] == sorted(r["rank"] for r in ranks)  # cleanest first


def hotspots(run: Run) -> None:
    if run.ref == "B":
        assert {r["mn"]: r["网格站"] for r in run.rows} == {g.id: g.name or g.id for g in run.data.registry.grid_sensor}
        return
    want = {
        (e.mn, e.pollutant, utc_ms(e.start)): e
        for e in run.data.res.events
        if e.type == "grid_hotspot"
        and e.status != "retracted"
        and e.district in run.districts
        and run.lo <= utc_ms(e.start) <= run.hi
    }
    got = {(r["mn"], r["pollutant"], _t(r)): r for r in run.rows}
    assert got.keys() == want.keys() and (want or not _all(run))
    for k, e in want.items():
        assert got[k]["status"] == e.status and _close(got[k]["peak"], e.peak) and _close(got[k]["hours"], e.hours)


# ---- cems-service (数据接入状态)


def last_data(run: Run) -> None:
    if run.ref == "B":
        _outlet_names(run, {"排口": "name", "区县": "district"})
        return
    last: dict[str, int] = {}
    for r, i in run.data.res.accepted:
        if i.district.code in run.districts:
            last[r.mn] = max(last.get(r.mn, 0), utc_ms(r.data_time))
    assert {r["mn"]: _t(r) for r in run.rows} == last and last


def silent_outlets(run: Run) -> None:
    registered = [i for i in run.data.registry.outlets() if i.district.code in run.districts]
    if run.ref == "A":
        assert _scalar(run) == len(registered)
        return
    hour_ago = utc_ms(run.data.now) - 3_600_000
    reporting = {
        r.mn for r, i in run.data.res.accepted if i.district.code in run.districts and utc_ms(r.data_time) > hour_ago
    }
    assert _scalar(run) == len(reporting)


def records_per_bucket(run: Run) -> None:
    want: Counter[tuple[str, int]] = Counter()
    for r, _ in run.data.readings(run.districts, run.lo, run.hi):
        want[(r.stream.value, bucket(utc_ms(r.data_time), run.interval_ms))] += 1
    got = {(row["stream"], _t(row)): row["count"] for row in run.rows if row["count"]}
    assert got == dict(want) and want


def _check_names(variable: str, names: dict[str, str], data: DataSet) -> None:
    """A label variable shows the registry's names and sends the codes."""
    if variable == "district":
        assert names == {d.name: d.code for d in data.registry.district if d.code in data.districts} or names == {
            d.name: d.code for d in data.registry.district
        }
    elif variable == "enterprise":
        assert names == {e.name: e.id for e in data.registry.enterprise if e.district == data.districts[0]}
    elif variable == "outlet":
        assert names == {
            f"{i.enterprise.name} {i.outlet.name}": i.outlet.mn
            for i in data.registry.outlets()
            if i.district.code == data.districts[0]
        }
    else:
        raise AssertionError(f"no name check for variable {variable}")


CHECKS: dict[tuple[str, int], Check] = {
    ("cems-overview", 1): count_rtd("a21026"),
    ("cems-overview", 2): reporting_outlets,
    ("cems-overview", 3): grid_sensors,
    ("cems-overview", 4): bad_flags,
    ("cems-overview", 5): series_mean("a21026_ZsRtd", "rtd"),
    ("cems-overview", 6): series_mean("a21026_ZsAvg", "hour", by_hour=True),
    ("cems-overview", 7): series_mean("a21002_ZsRtd", "rtd"),
    ("cems-overview", 8): series_mean("a21002_ZsAvg", "hour", by_hour=True),
    ("cems-overview", 9): series_mean("a34013_ZsRtd", "rtd"),
    ("cems-overview", 10): series_mean("a34013_ZsAvg", "hour", by_hour=True),
    ("cems-overview", 11): series_mean("a19001_Rtd", "rtd"),
    ("cems-overview", 12): series_mean("a00000_Rtd", "rtd"),
    ("cems-overview", 13): latest_values,
    ("cems-overview", 14): grid_mean("a34004_Rtd"),
    ("cems-overview", 15): grid_mean("a34002_Rtd"),
    ("cems-compliance", 1): open_events("hourly_exceedance"),
    ("cems-compliance", 2): events_started("hourly_exceedance"),
    ("cems-compliance", 3): events_started("realtime_warning"),
    ("cems-compliance", 4): events_started("data_interruption"),
    ("cems-compliance", 5): events_started(None),
    ("cems-compliance", 6): hourly_vs_limit("a21026"),
    ("cems-compliance", 7): hourly_vs_limit("a21002"),
    ("cems-compliance", 8): exceeding_hours,
    ("cems-compliance", 9): valid_hours,
    ("cems-compliance", 10): district_rate,
    ("cems-compliance", 11): outlets_below_90,
    ("cems-room", 1): open_count("hourly_exceedance", "daily_exceedance"),
    ("cems-room", 2): open_count("realtime_warning"),
    ("cems-room", 3): open_count("data_interruption"),
    ("cems-room", 4): escalated_unacked,
    ("cems-room", 5): warning_level_now,
    ("cems-room", 6): open_events_table,
    ("cems-room", 7): today_by_district,
    ("cems-room", 8): outlet_map,
    ("cems-outlet", 1): hourly_vs_limit("a21026"),
    ("cems-outlet", 2): hourly_vs_limit("a21002"),
    ("cems-outlet", 3): hourly_vs_limit("a34013"),
    ("cems-outlet", 4): several(
        series_mean("a21026_ZsRtd", "rtd", column="SO2"),
        series_mean("a21002_ZsRtd", "rtd", column="NOx"),
        series_mean("a34013_ZsRtd", "rtd", column="颗粒物"),
    ),
    ("cems-outlet", 5): series_mean("a19001_Rtd", "rtd"),
    ("cems-outlet", 6): series_mean("a00000_Rtd", "rtd"),
    ("cems-outlet", 7): flags_table,
    ("cems-outlet", 8): marks_table,
    ("cems-quality", 1): quality_open,
    ("cems-quality", 2): quality_by_type,
    ("cems-quality", 3): quality_open_table,
    ("cems-quality", 4): quality_by_enterprise,
    ("cems-quality", 5): quality_in_range,
    ("cems-transmission", 1): rate_by("district"),
    ("cems-transmission", 2): rate_by("enterprise"),
    ("cems-transmission", 3): rate_by("mn"),
    ("cems-transmission", 4): supervised_districts,
    ("cems-emergency", 1): warning_level_now,
    ("cems-emergency", 2): warning_history,
    ("cems-emergency", 3): response_by_type,
    ("cems-emergency", 4): response_table,
    ("cems-emergency", 5): listed_enterprises,
    ("cems-air", 1): aqi_map,
    ("cems-air", 2): aqi_series,
    ("cems-air", 3): township_ranking,
    ("cems-air", 4): hotspots,
    ("cems-service", 1): last_data,
    ("cems-service", 2): silent_outlets,
    ("cems-service", 3): records_per_bucket,
}
ANNOTATIONS: dict[tuple[str, str], Check] = {
    ("cems-outlet", "事件"): event_annotations,
    ("cems-outlet", "标记"): mark_annotations,
}


def test_every_panel_has_a_check() -> None:
    panels = {(_load(p)["uid"], panel["id"]) for p in DASHBOARDS for panel in _load(p)["panels"]}
    checked = set(CHECKS) | set(PROM_CHECKS)
    assert panels == checked, f"panels without a value check: {panels - checked}"


def _variables(dash: dict[str, Any], selected: list[str] | None, all_districts: list[str]) -> dict[str, Variable]:
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "datasource":
            continue
        opts = all_districts if v["name"] == "district" else []
        vals = selected if (v["name"] == "district" and selected) else [ALL]
        out[v["name"]] = Variable(
            v["name"], vals, opts, v.get("multi", False), v.get("includeAll", False), v.get("allValue")
        )
    return out


SELECTIONS = {"all": None, "one district": 1, "two districts": 2, "two outlets": 0}


def _has_outlet_variable(path: Path) -> bool:
    return any(v["name"] == "outlet" for v in _load(path).get("templating", {}).get("list", []))


CASES = [
    pytest.param(path, sel, id=f"{path.name}-{sel}")
    for path in DASHBOARDS
    for sel in SELECTIONS
    if sel != "two outlets" or _has_outlet_variable(path)
]


@pytest.mark.parametrize(("path", "selection"), CASES)
def test_panel_values(path: Path, selection: str, data: DataSet, influxdb: Any) -> None:
    """Every panel, as Grafana sends it for the dashboard's default range, shows what the data imply."""
    dash = _load(path)
    n = SELECTIONS[selection]
    chosen = data.districts[:n] if n else None
    # All (.*) matches every district tag, the city-wide warning events' `city` too
    districts = set(chosen) if chosen else {*data.districts, "city"}
    variables = _variables(dash, chosen, data.districts)
    mns = None
    if selection == "two outlets":  # multi-select across districts: "mn" =~ /^(a|b)$/
        mns = {data.res.accepted[0][1].outlet.mn, next(i.outlet.mn for _, i in data.res.accepted
               if i.district.code != data.res.accepted[0][1].district.code)}  # fmt: skip
        variables["outlet"] = dataclasses.replace(variables["outlet"], values=sorted(mns))
    failures = []
    for ann in dash.get("annotations", {}).get("list", []):
        ctx = Context(dash["time"]["from"], dash["time"]["to"], data.now, variables=variables)
        lo, hi = ctx.range_ms()
        rows = influxdb.query(data.db, expand(ann["query"], ctx), epoch="ms")
        try:
            ANNOTATIONS[(dash["uid"], ann["name"])](Run(rows, data, districts, lo, hi, 0, "annotation", mns))
        except AssertionError as e:
            failures.append(f"annotation {ann['name']}: {e}")
    for panel in dash["panels"]:
        if panel["datasource"]["type"] == "prometheus":
            continue  # test_service_metrics_panels
        frm, to = dash["time"]["from"], dash["time"]["to"]
        if panel.get("timeFrom"):  # the panel's relative-time override (Grafana's applyPanelTimeOverrides)
            tf = panel["timeFrom"]
            frm, to = (tf, tf) if "/" in tf else (f"now-{tf}", "now")
        ctx = Context(frm, to, data.now, variables=variables)
        lo, hi = ctx.range_ms()
        interval_ms, _ = calculate_interval(hi - lo, panel_resolution(panel), panel.get("interval") or ctx.min_interval)
        for target in panel["targets"]:
            rows = influxdb.query(data.db, expand(target["query"], ctx, panel), epoch="ms")
            try:
                run = Run(rows, data, districts, lo, hi, interval_ms, target["refId"], mns)
                CHECKS[(dash["uid"], panel["id"])](run)
            except AssertionError as e:
                failures.append(f"panel {panel['id']} {panel['title']} {target['refId']}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_variable_queries(path: Path, data: DataSet, influxdb: Any) -> None:
    dash = _load(path)
    ctx = Context(dash["time"]["from"], "now", data.now, variables=_variables(dash, data.districts[:1], data.districts))
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "datasource":
            continue
        rows = influxdb.query(data.db, expand(v["query"], ctx))
        values = {row["value"] for row in rows}
        if v.get("regex"):  # Grafana's named groups: the text shown, the value sent
            pattern = re.compile(v["regex"].strip("/").replace("(?<", "(?P<"))
            matched = [pattern.match(x) for x in values]
            assert all(matched), values
            names = {m.group("text"): m.group("value") for m in matched if m}
            values = set(names.values())
            _check_names(v["name"], names, data)
        if v["name"] == "district":
            assert values == set(data.districts)
        elif v["name"] == "mn":  # outlets of the selected district only
            assert values == {i.outlet.mn for _, i in data.res.accepted if i.district.code == data.districts[0]}


@pytest.fixture(scope="module")
def full_day(influxdb: Any) -> tuple[str, Registry, date, datetime]:
    """A simulated fleet over the whole of yesterday (Beijing) and a little around it, replayed and stored."""
    db = "dashboards_day_test"
    influxdb.drop_db(db)
    influxdb.create_db(db)
    registry = parse_registry(sample_registry_toml(3))
    now = datetime.now(UTC)
    midnight = now.astimezone(BJ).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = (midnight - timedelta(days=1)).date()
    cfg = SimConfig(exceedances_per_day=4, calibrations_per_day=4, maintenance_per_day=2, gaps_per_day=3)
    model = FleetModel(registry, seed=11, start=midnight - timedelta(hours=27), config=cfg)
    emissions = model.advance(min(midnight + timedelta(hours=1), now.replace(minute=0, second=0, microsecond=0)))
    lines = [encode_payload(e.reading).decode() for e in emissions if e.outlet is not None]
    res = replay(registry, lines, "jsonl", keep_readings=True)
    asyncio.run(store_replay(InfluxConfig(url=influxdb.url, db=db), res))
    influxdb.write(db, registry_lines(registry, now - timedelta(hours=1)), precision="ms")
    return db, registry, yesterday, now


def test_transmission_dashboard_shows_the_figures_of_cems_report(full_day: Any, influxdb: Any) -> None:
    """The Transmission dashboard for a whole day (Grafana's "Yesterday", now-1d/d) shows what `cems report`
    reports for that day: per district, per enterprise and the outlets below 90 %, figure for figure."""
    db, registry, yesterday, now = full_day
    report = load_report(registry, Period.day(yesterday.isoformat()), influx_loader(influxdb.url, db))
    dash = _load(ROOT / "dashboards" / "cems-transmission.json")
    ctx = Context("now-1d/d", "now-1d/d", now, variables=_variables(dash, None, []))
    panels = {p["id"]: p for p in dash["panels"]}

    def run(pid: int) -> list[dict[str, Any]]:
        q = next(t["query"] for t in panels[pid]["targets"] if t["refId"] == "A")
        rows: list[dict[str, Any]] = influxdb.query(db, expand(q, ctx, panels[pid]))
        return rows

    by_district = {r["district"]: r["effective_rate"] for r in run(1)}
    want_d = {d.code: d.effective_rate for d in report.districts if d.effective_rate is not None}
    assert by_district.keys() == want_d.keys() and want_d
    for code, rate in want_d.items():
        assert _close(by_district[code], rate), code
    exp: Counter[str] = Counter()
    val: Counter[str] = Counter()
    for o in report.outlets:
        exp[o.enterprise_id] += o.expected
        val[o.enterprise_id] += o.valid
    by_enterprise = {r["enterprise"]: r["effective_rate"] for r in run(2)}
    assert by_enterprise.keys() == {e for e in exp if exp[e]}
    for e in by_enterprise:
        assert _close(by_enterprise[e], val[e] / exp[e]), e
    below = {r["mn"]: r for r in run(3)}
    assert below.keys() == {o.mn for o in report.below_target} and below
    for o in report.below_target:
        assert _close(below[o.mn]["effective_rate"], o.effective_rate) and below[o.mn]["expected"] == o.expected


# ---------------------------------------------------------------------------------------------------------
# Prometheus panels (cems-service): PromQL on VictoriaMetrics (a PromQL engine) loaded with known series of
# the metrics `cems run --health-port` exports

SCRAPE_S = 15
PROM_CHECKS: dict[tuple[str, int], Callable[[list[Any]], None]] = {}


def _series_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(v) for r in result for _, v in r["values"]]


def _prom(pid: int) -> Callable[[Callable[[list[Any]], None]], Callable[[list[Any]], None]]:
    def register(f: Callable[[list[Any]], None]) -> Callable[[list[Any]], None]:
        PROM_CHECKS[("cems-service", pid)] = f
        return f

    return register


@_prom(4)
def _messages_rate(results: list[Any]) -> None:
    received, accepted = results
    assert all(math.isclose(v, 12.0, rel_tol=1e-6) for v in _series_values(received)) and received
    assert all(math.isclose(v, 11.0, rel_tol=1e-6) for v in _series_values(accepted)) and accepted


@_prom(5)
def _rejects(results: list[Any]) -> None:
    (by_reason,) = results
    got = {r["metric"]["reason"]: float(r["value"][1]) for r in by_reason}
    assert got.keys() == {"bad_crc", "unknown_mn"}
    assert math.isclose(got["bad_crc"], 0.5 * 3600, rel_tol=0.02) and math.isclose(got["unknown_mn"], 360, rel_tol=0.02)


@_prom(6)
def _write_latency(results: list[Any]) -> None:
    (mean,) = results
    assert all(math.isclose(v, 0.05, rel_tol=1e-6) for v in _series_values(mean)) and mean


@_prom(7)
def _spool(results: list[Any]) -> None:
    spool, queue = results
    assert set(_series_values(spool)) == {4096.0} and set(_series_values(queue)) == {3.0}


@_prom(8)
def _lag(results: list[Any]) -> None:
    (lag,) = results
    assert {r["metric"]["mn"]: round(float(r["value"][1])) for r in lag} == {"MN_A": 30, "MN_B": 600}


def test_service_metrics_panels(victoria: Any) -> None:
    """Known series of the ingester's metrics (12 messages/s received, 11 accepted, rejects 0.5/s bad_crc and
    0.1/s unknown_mn, writes 2/s taking 0.05 s each, 4096 spool bytes, queue 3, outlets 30 s and 600 s behind)
    every 15 s for an hour; each panel's PromQL, expanded as Grafana does, shows those figures."""
    end_s = (int(time.time()) // SCRAPE_S) * SCRAPE_S - SCRAPE_S
    lines = []
    for k in range(0, 3600 // SCRAPE_S + 1):
        t = end_s - 3600 + k * SCRAPE_S
        s = t - (end_s - 3600)
        ms = t * 1000
        lines += [
            f'cems_messages_received_total{{job="dash"}} {12 * s} {ms}',
            f'cems_messages_accepted_total{{job="dash"}} {11 * s} {ms}',
            f'cems_messages_rejected_total{{job="dash",reason="bad_crc"}} {0.5 * s} {ms}',
            f'cems_messages_rejected_total{{job="dash",reason="unknown_mn"}} {0.1 * s} {ms}',
            f'cems_write_latency_seconds_sum{{job="dash"}} {0.1 * s} {ms}',
            f'cems_write_latency_seconds_count{{job="dash"}} {2 * s} {ms}',
            f'cems_spool_bytes{{job="dash"}} 4096 {ms}',
            f'cems_queue_depth{{job="dash"}} 3 {ms}',
            f'cems_last_data_time_seconds{{job="dash",mn="MN_A"}} {t - 30} {ms}',
            f'cems_last_data_time_seconds{{job="dash",mn="MN_B"}} {t - 600} {ms}',
        ]
    httpx.post(f"{victoria.url}/api/v1/import/prometheus", content="\n".join(lines).encode()).raise_for_status()
    httpx.get(f"{victoria.url}/internal/resetRollupResultCache")
    httpx.get(f"{victoria.url}/internal/force_flush")
    dash = _load(ROOT / "dashboards" / "cems-service.json")
    now = datetime.fromtimestamp(end_s, UTC)
    ctx = Context("now-1h", "now", now)
    failures = []
    for panel in (p for p in dash["panels"] if p["datasource"]["type"] == "prometheus"):
        results = []
        for t in panel["targets"]:
            q = expand_promql(t["expr"], ctx, panel, f"{SCRAPE_S}s")
            if t.get("instant"):
                params: dict[str, Any] = {"query": q, "time": end_s}
                path = "query"
            else:  # the middle of the range, away from the first samples (a rate needs two)
                params = {"query": q, "start": end_s - 2400, "end": end_s - 600, "step": SCRAPE_S}
                path = "query_range"
            deadline = time.monotonic() + 15
            while True:
                body = httpx.get(f"{victoria.url}/api/v1/{path}", params=params, timeout=10).json()
                if body["data"]["result"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
                httpx.get(f"{victoria.url}/internal/force_flush")
            results.append(body["data"]["result"])
        try:
            PROM_CHECKS[(dash["uid"], panel["id"])](results)
        except AssertionError as e:
            failures.append(f"panel {panel['id']} {panel['title']}: {e}")
    assert not failures, "\n".join(failures)


def test_service_panels_use_metrics_cems_exports() -> None:
    """Every metric the Prometheus panels read is one `cems run --health-port` exports."""
    from prometheus_client import CollectorRegistry, generate_latest

    from cems.service.health import StatsCollector
    from cems.service.ingest import IngestStats

    class Conn:
        connected = True
        queue: asyncio.Queue[object] = asyncio.Queue()

    class Service:
        stats = IngestStats()
        conn = Conn()

    Service.stats.last_data_time["MN_A"] = 1.0
    Service.stats.rejected["bad_crc"] += 1
    reg = CollectorRegistry()
    reg.register(StatsCollector(Service()))
    exported = set(re.findall(r"^(\w+)", generate_latest(reg).decode(), re.M))
    dash = _load(ROOT / "dashboards" / "cems-service.json")
    used = {
        m
        for p in dash["panels"]
        if p["datasource"]["type"] == "prometheus"
        for t in p["targets"]
        for m in re.findall(r"\b(cems_\w+)", t["expr"])
    }
    assert used and used <= exported, used - exported
