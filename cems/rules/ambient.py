"""Ambient air from grid micro-stations (网格化监测微站): hourly, daily and 8-hour values with their validity
rules, the AQI of each, upload rates, hotspots and the township ranking's composite index. Pure: readings and
parameters in, records out; no I/O, no clock (DOMAIN.md §6, §9).

Validity (GB 3095-2012 table 4, 数据统计的有效性规定; HJ 663-2013 §5 for the O3 daily maximum 8-h mean):

* **hourly value**: at least 45 minutes of sampling in the hour (``HOUR_MIN_MINUTES``);
* **daily (24-h) mean**: at least 20 valid hourly values in the day (``DAY_MIN_HOURS``);
* **O3 8-h moving mean**: at least 6 valid hourly values in the 8 hours (``O3_8H_MIN_HOURS``), the mean
  ending at each hour (HJ 663-2013: the 8-h window of hour *h* covers *h-7* … *h*);
* **O3 daily maximum 8-h mean**: the maximum of the day's 8-h means labelled 8时 … 24时, i.e. the windows
  whose last hour starts 07:00 … 23:00 (17 windows), valid with at least 14 valid 8-h means.

A reading covers ``interval_s`` seconds from its data time (a sensor that sends every 5 minutes covers 5
minutes with each reading); minutes are counted once, so duplicates or a denser stream do not inflate them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from statistics import median
from typing import Final

from cems.model import BEIJING
from cems.registry import GridSensor
from cems.rules.aqi import Standard, aqi, standard_for

#: GB 3095-2012 table 4: an hourly mean needs at least 45 minutes of sampling.
HOUR_MIN_MINUTES: Final = 45
#: GB 3095-2012 table 4: a 24-hour mean needs at least 20 hourly values.
DAY_MIN_HOURS: Final = 20
#: GB 3095-2012 table 4: an 8-hour mean needs at least 6 hourly values.
O3_8H_MIN_HOURS: Final = 6
#: HJ 663-2013 §5.2: the O3 daily maximum 8-h mean needs at least 14 valid 8-h means in the day.
O3_DAY_MIN_8H: Final = 14
#: Upload (数据上传) rate target per sensor (seed 001: 网格化监测数据上传率 ≥ 90 %).
UPLOAD_TARGET: Final = 0.90

#: Grid codes (HJ 212-2017 appendix B, ambient) → AQI names.
AMBIENT_CODES: Final[dict[str, str]] = {
    "a34004": "pm25",
    "a34002": "pm10",
    "a21026": "so2",
    "a21004": "no2",
    "a21005": "co",
    "a05024": "o3",
}


def covered_minutes(offset_s: int, interval_s: int) -> range:
    """The minutes of its hour a reading ``offset_s`` seconds into the hour covers: ``interval_s`` seconds from
    its data time (at least one minute), cut at the hour's end."""
    start = offset_s // 60
    return range(start, min(60, start + max(1, min(60, interval_s // 60))))


def _hour(t: datetime) -> datetime:
    return t.astimezone(BEIJING).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class AmbientHour:
    """One sensor's hourly value of one pollutant."""

    sensor: str
    pollutant: str  # AQI name: pm25, pm10, so2, no2, co, o3
    hour_start: datetime
    mean: float | None
    minutes: int
    valid: bool

    def to_json(self) -> dict[str, object]:
        return {
            "sensor": self.sensor,
            "pollutant": self.pollutant,
            "hour_start": self.hour_start.isoformat(),
            "mean": self.mean,
            "minutes": self.minutes,
            "valid": self.valid,
        }


@dataclass
class _Acc:
    minutes: set[int] = field(default_factory=set)
    total: float = 0.0
    n: int = 0


def sensor_intervals(sensors: Iterable[GridSensor]) -> dict[str, int]:
    """Sensor id → seconds between its readings, from the registry's ``[[grid_sensor]]`` entries."""
    return {g.id: g.interval_s for g in sensors}


class AmbientHourly:
    """Accumulates grid readings into hourly values per sensor and pollutant (GB 3095-2012: ≥ 45 minutes).

    ``add`` takes one reading's values; ``close_before(t)`` closes and returns every hour that ended at or
    before ``t`` (the caller decides when an hour is final: the data time of later readings plus a lateness,
    so live and replay close the same hours).
    """

    def __init__(self, interval_s: Mapping[str, int] | None = None, default_interval_s: int = 60) -> None:
        self._interval = dict(interval_s or {})
        self._default = default_interval_s
        self._open: dict[tuple[str, datetime], dict[str, _Acc]] = {}

    def add(self, sensor: str, t: datetime, values: Mapping[str, float]) -> None:
        """``values``: code (``a34004``…) or AQI name → concentration (µg/m³; CO mg/m³)."""
        start = _hour(t)
        covered = covered_minutes(
            int((t.astimezone(BEIJING) - start).total_seconds()), self._interval.get(sensor, self._default)
        )
        accs = self._open.setdefault((sensor, start), {})
        for code, v in values.items():
            name = AMBIENT_CODES.get(code, code)
            if name not in AMBIENT_CODES.values():
                continue
            acc = accs.setdefault(name, _Acc())
            acc.minutes.update(covered)
            acc.total += v
            acc.n += 1

    def close_before(self, t: datetime) -> list[AmbientHour]:
        done = sorted(k for k in self._open if k[1] + timedelta(hours=1) <= t)
        out: list[AmbientHour] = []
        for key in done:
            sensor, start = key
            for name, acc in sorted(self._open.pop(key).items()):
                minutes = len(acc.minutes)
                valid = minutes >= HOUR_MIN_MINUTES and acc.n > 0
                out.append(AmbientHour(sensor, name, start, acc.total / acc.n if acc.n else None, minutes, valid))
        return out


@dataclass(frozen=True, slots=True)
class AmbientDay:
    """One sensor's Beijing day: the daily values the township ranking (``grid_rank``) is computed from and
    that ``grid_daily`` stores. ``means`` is keyed by AQI name: ``pm25``, ``pm10``, ``so2``, ``no2``, ``co``
    (24-h means, ``None`` with fewer than 20 valid hours, GB 3095-2012 table 4), ``o3_8h`` (daily maximum 8-h
    mean, HJ 663-2013 §5.2) and ``o3`` (maximum 1-h value, for the daily AQI of HJ 633); a pollutant the
    sensor does not measure is absent. ``hours``: valid hourly values per pollutant (same keys but ``o3_8h``).
    ``aqi``/``level``/``primary``: the daily AQI (HJ 633, standard by the day's date), ``None``/empty when it
    cannot be computed. ``upload_rate``: hours with at least one valid value / 24 (seed 001, ≥ 90 %)."""

    sensor: str
    district: str
    township: str
    kind: str
    day: date
    means: Mapping[str, float | None]
    hours: Mapping[str, int]
    aqi: int | None
    level: int | None
    primary: tuple[str, ...]
    upload_rate: float


def daily_mean(hours: Iterable[AmbientHour]) -> float | None:
    """The day's mean of the valid hourly values, or ``None`` with fewer than 20 (GB 3095-2012 table 4)."""
    values = [h.mean for h in hours if h.valid and h.mean is not None]
    return sum(values) / len(values) if len(values) >= DAY_MIN_HOURS else None


def o3_8h_means(hourly: Mapping[datetime, float | None]) -> dict[datetime, float | None]:
    """8-h moving means of O3 ending at each hour given (the window of hour *h*: *h-7* … *h*), ``None`` with
    fewer than 6 valid hourly values in the window (GB 3095-2012 table 4). ``hourly``: hour start → valid
    hourly mean (``None`` or absent: not valid)."""
    out: dict[datetime, float | None] = {}
    for h in sorted(hourly):
        window = [hourly.get(h - timedelta(hours=k)) for k in range(8)]
        values = [v for v in window if v is not None]
        out[h] = sum(values) / len(values) if len(values) >= O3_8H_MIN_HOURS else None
    return out


def o3_daily_max_8h(day: date, means: Mapping[datetime, float | None]) -> float | None:
    """The O3 daily maximum 8-h mean of ``day`` (Beijing): the maximum over the 8-h windows that start in the
    day's hours 00:00 … 16:00 (they end 07:00 … 23:00 on the same day; HJ 663-2013 §5.2), valid with at
    least 14 valid 8-h means. ``means`` are keyed by the window's last hour (as :func:`o3_8h_means`)."""
    start = datetime(day.year, day.month, day.day, tzinfo=BEIJING)
    values = [means.get(start + timedelta(hours=7 + k)) for k in range(17)]
    valid = [v for v in values if v is not None]
    return max(valid) if len(valid) >= O3_DAY_MIN_8H else None


def hourly_aqi(hours: Sequence[AmbientHour], standard: Standard | None = None) -> dict[str, object]:
    """The real-time AQI of one sensor's hour from its valid hourly values (HJ 633; standard by the date)."""
    values = {h.pollutant: h.mean for h in hours if h.valid and h.mean is not None}
    std: Standard = standard if standard is not None else "2026"
    if standard is None and hours:
        std = standard_for(hours[0].hour_start.date())
    return aqi({k: v for k, v in values.items() if v is not None}, period="1h", standard=std).to_json()


def upload_rate(valid_hours: int, expected_hours: int) -> float:
    """A sensor's upload rate: hours with a valid value / hours expected (target ≥ 90 %, seed 001)."""
    return valid_hours / expected_hours if expected_hours else 0.0


# ------------------------------------------------------------------------------------------------ hotspots


@dataclass(frozen=True)
class HotspotRule:
    """A sensor is a hotspot in an hour when its value is at least ``ratio`` × and ``floor`` µg/m³ above its
    neighbours' median, with at least ``min_neighbours`` neighbours; ``hours`` such hours in a row raise
    ``grid_hotspot`` (明显高于周边, seed 000). Per-city configuration; the defaults are a documented choice,
    not a standard's figure."""

    ratio: float = 1.5
    floor: float = 20.0
    hours: int = 3
    min_neighbours: int = 2


@dataclass(frozen=True)
class HotspotHour:
    sensor: str
    hour_start: datetime
    value: float
    neighbours_median: float
    #: The neighbours' values: the evidence.
    neighbours: dict[str, float]


def hotspot_hours(
    values: Mapping[str, float], neighbours: Mapping[str, Sequence[str]], hour_start: datetime, rule: HotspotRule
) -> list[HotspotHour]:
    """The sensors above their neighbours in one hour. ``values``: sensor → valid hourly value (e.g. PM2.5);
    ``neighbours``: sensor → its neighbours (same township, or within a radius)."""
    out: list[HotspotHour] = []
    for sensor, v in sorted(values.items()):
        around = {n: values[n] for n in neighbours.get(sensor, ()) if n != sensor and n in values}
        if len(around) < rule.min_neighbours:
            continue
        m = median(around.values())
        if v >= m * rule.ratio and v - m >= rule.floor:
            out.append(HotspotHour(sensor, hour_start, v, m, around))
    return out


def hotspot_runs(hours: Iterable[HotspotHour], rule: HotspotRule) -> list[list[HotspotHour]]:
    """Runs of at least ``rule.hours`` consecutive hotspot hours per sensor: each run is one event."""
    by_sensor: dict[str, list[HotspotHour]] = {}
    for h in sorted(hours, key=lambda h: (h.sensor, h.hour_start)):
        by_sensor.setdefault(h.sensor, []).append(h)
    runs: list[list[HotspotHour]] = []
    for seq in by_sensor.values():
        run: list[HotspotHour] = []
        for h in seq:
            if run and h.hour_start - run[-1].hour_start != timedelta(hours=1):
                if len(run) >= rule.hours:
                    runs.append(run)
                run = []
            run.append(h)
        if len(run) >= rule.hours:
            runs.append(run)
    return runs


# ------------------------------------------------------------------------------------------------ ranking

#: GB 3095-2012 table 1, grade II: annual means of SO2, NO2, PM10, PM2.5 (µg/m³); CO 24-h (mg/m³) and O3
#: daily maximum 8-h (µg/m³) limits, the denominators of the composite index (环境空气质量综合指数,
#: 《城市环境空气质量排名技术规定》环办监测〔2018〕19号).
GRADE_II: Final[dict[str, float]] = {"so2": 60.0, "no2": 40.0, "pm10": 70.0, "pm25": 35.0, "co": 4.0, "o3": 160.0}


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile as HJ 663-2013 §5.3 defines it: k = 1 + (n-1)·p/100 on the sorted values, linear
    between the two ranks around k."""
    if not values:
        raise ValueError("no values")
    s = sorted(values)
    k = 1 + (len(s) - 1) * p / 100
    lo = int(k)
    frac = k - lo
    if lo >= len(s):
        return s[-1]
    return s[lo - 1] + (s[lo] - s[lo - 1]) * frac


def composite_index(daily: Mapping[str, Sequence[float]]) -> tuple[float, dict[str, float]]:
    """Σ Cᵢ/Sᵢ over the six pollutants from a period's valid daily values (``daily``: pollutant → daily
    means; for O3 the daily maximum 8-h means): SO2, NO2, PM10, PM2.5 by their period mean, CO by the 95th
    and O3 by the 90th percentile (环办监测〔2018〕19号), each over its grade-II limit. Returns the index and
    each pollutant's share; a pollutant without daily values is left out (and absent from the shares)."""
    shares: dict[str, float] = {}
    for name, limit in GRADE_II.items():
        values = list(daily.get(name, ()))
        if not values:
            continue
        if name == "co":
            c = percentile(values, 95)
        elif name == "o3":
            c = percentile(values, 90)
        else:
            c = sum(values) / len(values)
        shares[name] = c / limit
    return sum(shares.values()), shares


@dataclass(frozen=True)
class TownshipRank:
    """One township's figures for a period, its rank (1 = cleanest) and the change against a baseline."""

    township: str
    district: str
    pm25: float | None
    pm10: float | None
    index: float
    good_day_share: float | None
    rank: int
    #: Relative change of the composite index against the previous period / the same period last year
    #: (negative = improved), ``None`` without a baseline.
    change_vs_previous: float | None = None
    change_vs_last_year: float | None = None


def rank_townships(
    figures: Mapping[tuple[str, str], tuple[float | None, float | None, float, float | None]],
    previous: Mapping[str, float] | None = None,
    last_year: Mapping[str, float] | None = None,
) -> list[TownshipRank]:
    """Rank townships by composite index, lowest (cleanest) first; ties share the better rank.

    ``figures``: (township, district) → (mean PM2.5, mean PM10, composite index, share of good days);
    ``previous``/``last_year``: township → the composite index of the baseline period.
    """
    order = sorted(figures.items(), key=lambda kv: (kv[1][2], kv[0][0]))
    out: list[TownshipRank] = []
    last_index: float | None = None
    rank = 0
    for pos, ((township, district), (pm25, pm10, index, good)) in enumerate(order, start=1):
        if last_index is None or index != last_index:
            rank = pos
            last_index = index

        def change(base: Mapping[str, float] | None, t: str = township, i: float = index) -> float | None:
            b = (base or {}).get(t)
            return (i - b) / b if b else None

        out.append(TownshipRank(township, district, pm25, pm10, index, good, rank, change(previous), change(last_year)))
    return out
