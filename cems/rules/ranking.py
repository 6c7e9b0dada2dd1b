"""Township (乡镇/街道) ranking on grid air quality, daily, weekly (ISO week, Monday–Sunday) and monthly,
Beijing time: the figures of each township, ranked per district and for the city, with the change against
the previous period and the same period last year. Pure: ``AmbientDay`` records in, rankings out; no I/O,
no clock (DOMAIN.md §6, §9; seed 000: 以网格化监测数据对乡镇（街道）空气质量按日、周、月排名).

What counts (documented choices, each with its reason):

* **Sensors** (``RANKED_KINDS``): grid micro-stations (``micro_station``) only.
  ``construction_site`` PM10 monitors stand at a site's fence: they measure the site's own dust, not the
  township's ambient air, and would rank a township by its building sites. ``national_station``
  (国控/省控站) is left out too, although its data are of better quality: few townships have one, so counting
  it would rank those townships on a different instrument mix from the others (one basis for all is what
  makes a rank fair), and the station already serves the city's own assessment (环办监测〔2018〕19号 ranks
  cities on those stations). A city that wants them passes ``kinds`` (``cems grid rank --kinds``).
* **Township daily value** of a pollutant: the arithmetic mean of its sensors' valid daily values of that
  day (as HJ 663-2013 takes a city's value as the mean of its stations'): 24-h means of PM2.5, PM10, SO2,
  NO2, CO (valid from 20 hourly values, GB 3095-2012 table 4), the O3 daily maximum 8-h mean (HJ 663-2013
  §5.2) and the O3 maximum 1-h value. A sensor without a valid value that day simply does not enter it.
* **Township daily AQI**: HJ 633 (standard by the day's date, :func:`cems.rules.aqi.standard_for`) of the
  township daily values (``aqi(..., period="24h")``), not an average of the sensors' AQIs (the AQI is not
  linear in the concentrations; a city's daily AQI is computed the same way from its mean concentrations).
  The values are rounded to 6 decimals first, so floating-point noise of a mean (34.9999999) does not move
  an IAQI across a breakpoint. A day whose AQI cannot be computed (a pollutant missing and the others ≤ 100,
  DOMAIN.md §6) is not an assessed day.
* **Good day** (优良天): daily AQI ≤ 100. ``good_day_share`` = good days ÷ days with an AQI (HJ 663-2013
  达标天数比例 = 达标天数 ÷ 有效监测天数); ``None`` without any such day.
* **Composite index** (综合指数, 《城市环境空气质量排名技术规定》环办监测〔2018〕19号; DOMAIN.md §9):
  Σ Cᵢ/Sᵢ over SO2, NO2, PM10, PM2.5 (period means of the township daily values), CO (95th percentile of the
  daily values) and O3 (90th percentile of the daily maximum 8-h means), over the grade-II limits of
  GB 3095-2012 table 1 (annual 60/40/70/35 µg/m³, CO 24-h 4 mg/m³, O3 8-h 160 µg/m³:
  :data:`cems.rules.ambient.GRADE_II`, :func:`cems.rules.ambient.composite_index`). GB 3095-2026
  (DOMAIN.md §9: PM2.5 grade II 25 annual [verify]) is not used until its figures are confirmed.
  A city whose grid measures fewer pollutants ranks on those (``pollutants``, e.g. PM2.5 and PM10); the
  ``basis`` names them, and every township of one ranking is indexed on the same pollutants.
* **Completeness** (a township-period is ranked only if every index pollutant has township daily values on
  at least ``min_days`` days): month — 27 days (25 in February), GB 3095-2012 table 4 (每月至少有27个日平均
  浓度值，二月至少有25个); ISO week — 6 of 7 days (our choice: at most one day missing, the monthly rule's
  allowance of 3–4 days in 30–31 scaled to 7); day — the day's value. For a period in progress (``until``)
  the days not yet over are forgiven: the minimum is lowered by them (at least 1 day).
* **Ranks**: lowest index first (rank 1 = cleanest); ranked on the index rounded to 2 decimals, as indices
  are published (环办监测〔2018〕19号: 综合指数保留两位小数 [verify]), so townships with the same published
  index share the better rank (1, 2, 2, 4); listed by district code and name within a tie.
* **Change** (变化率): (index − baseline) ÷ baseline, negative = improved; the baseline is the same
  township's (same district) index of the previous period (previous day / ISO week / month) and of the same
  period last year (same date — none for 29 February —, same ISO week number, same month), computed with the
  same rules and only when that period was complete.

Every figure is traceable: the sensors that entered it and the days each pollutant had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Final, Literal

from cems.model import BEIJING
from cems.rules.ambient import GRADE_II, AmbientDay, composite_index, percentile
from cems.rules.aqi import aqi, standard_for

PeriodKind = Literal["day", "week", "month"]
PERIOD_KINDS: Final[tuple[PeriodKind, ...]] = ("day", "week", "month")

#: Sensor kinds whose data enter the ranking (module docstring).
RANKED_KINDS: Final = frozenset({"micro_station"})
#: The six pollutants of the composite index (环办监测〔2018〕19号), by their :data:`GRADE_II` names.
INDEX_POLLUTANTS: Final[tuple[str, ...]] = ("so2", "no2", "pm10", "pm25", "co", "o3")
#: Index pollutant → the ``AmbientDay.means`` key of its daily value (O3: the daily maximum 8-h mean).
DAILY_KEY: Final[dict[str, str]] = {
    "so2": "so2",
    "no2": "no2",
    "pm10": "pm10",
    "pm25": "pm25",
    "co": "co",
    "o3": "o3_8h",
}
#: ``AmbientDay.means`` keys a township daily value is kept for.
DAY_KEYS: Final[tuple[str, ...]] = ("pm25", "pm10", "so2", "no2", "co", "o3_8h", "o3")
#: Good day (优良天): daily AQI at most 100 (HJ 633: levels 优 and 良).
GOOD_AQI: Final = 100
#: GB 3095-2012 table 4: at least 27 daily values a month (25 in February).
MONTH_MIN_DAYS: Final = 27
FEBRUARY_MIN_DAYS: Final = 25
#: Our choice for an ISO week: at most one of its 7 days missing (module docstring).
WEEK_MIN_DAYS: Final = 6
#: Decimals of the published index, on which ranks are decided (ties).
INDEX_DECIMALS: Final = 2
BASIS: Final = "综合指数=ΣCi/Si（环办监测〔2018〕19号；GB 3095-2012二级浓度限值）"


# ------------------------------------------------------------------------------------------------ periods


@dataclass(frozen=True, slots=True)
class RankPeriod:
    """A Beijing day, ISO week (Monday–Sunday) or calendar month: ``first`` … ``last`` (inclusive)."""

    kind: PeriodKind
    first: date
    last: date

    @classmethod
    def containing(cls, kind: str, day: date) -> RankPeriod:
        """The period of ``kind`` (day, week, month) that contains ``day``."""
        if kind == "day":
            return cls("day", day, day)
        if kind == "week":
            first = day - timedelta(days=day.weekday())
            return cls("week", first, first + timedelta(days=6))
        if kind == "month":
            first = day.replace(day=1)
            nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
            return cls("month", first, nxt - timedelta(days=1))
        raise ValueError(f"period {kind!r}: expected one of {', '.join(PERIOD_KINDS)}")

    @property
    def key(self) -> str:
        """``2026-11-20``, ``2026-W47`` or ``2026-11``."""
        if self.kind == "day":
            return self.first.isoformat()
        if self.kind == "week":
            y, w, _ = self.first.isocalendar()
            return f"{y:04d}-W{w:02d}"
        return f"{self.first.year:04d}-{self.first.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(0), BEIJING)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), BEIJING)

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]

    @property
    def min_days(self) -> int:
        """Days with a value each index pollutant needs for the township to be ranked (module docstring)."""
        if self.kind == "month":
            return FEBRUARY_MIN_DAYS if self.first.month == 2 else MONTH_MIN_DAYS
        if self.kind == "week":
            return WEEK_MIN_DAYS
        return 1

    def required_days(self, until: date | None = None) -> int:
        """:attr:`min_days`, lowered by the days after ``until`` (a period in progress), at least 1."""
        if until is None or until >= self.last:
            return self.min_days
        pending = (self.last - max(until, self.first - timedelta(days=1))).days
        return max(1, self.min_days - pending)

    def previous(self) -> RankPeriod:
        """The period just before (the previous day, ISO week or month)."""
        return RankPeriod.containing(self.kind, self.first - timedelta(days=1))

    def last_year(self) -> RankPeriod | None:
        """The same period a year before: same date (none for 29 February), same ISO week number (none if
        the previous ISO year has no week 53), same month."""
        if self.kind == "day":
            try:
                return RankPeriod.containing("day", self.first.replace(year=self.first.year - 1))
            except ValueError:
                return None
        if self.kind == "week":
            y, w, _ = self.first.isocalendar()
            try:
                return RankPeriod.containing("week", date.fromisocalendar(y - 1, w, 1))
            except ValueError:
                return None
        return RankPeriod.containing("month", self.first.replace(year=self.first.year - 1))


def periods_closed_by(day: date) -> list[RankPeriod]:
    """The periods that end with Beijing day ``day``: the day itself, its ISO week when ``day`` is a Sunday,
    its month when it is the last day of the month (what the service ranks when a day closes)."""
    out = [RankPeriod.containing("day", day)]
    for kind in ("week", "month"):
        p = RankPeriod.containing(kind, day)
        if p.last == day:
            out.append(p)
    return out


def periods_to_rank(days: Iterable[date], closed_through: date) -> list[RankPeriod]:
    """The periods to (re-)rank when the ``grid_daily`` points of ``days`` are written and every Beijing day
    up to ``closed_through`` has closed: each day itself, and its ISO week and month once they have ended
    (a day closing a period ranks the period, as :func:`periods_closed_by`; a revised day re-ranks the
    periods it belongs to that have already ended). Ordered by their last day (a day before the week and
    month it ends), without repeats."""
    out: set[RankPeriod] = set()
    for d in days:
        out.add(RankPeriod.containing("day", d))
        for kind in ("week", "month"):
            p = RankPeriod.containing(kind, d)
            if p.last <= max(closed_through, d):
                out.add(p)
    order = {k: i for i, k in enumerate(PERIOD_KINDS)}
    return sorted(out, key=lambda p: (p.last, order[p.kind]))


# ----------------------------------------------------------------------------------------- township days


@dataclass(frozen=True, slots=True)
class TownshipDay:
    """A township's daily values: ``values`` keyed like ``AmbientDay.means`` (only keys with at least one
    sensor's valid value), ``sensors``: for each key, the sensors whose values were averaged."""

    district: str
    township: str
    day: date
    values: Mapping[str, float]
    sensors: Mapping[str, tuple[str, ...]]
    aqi: int | None
    level: int | None
    primary: tuple[str, ...]
    standard: str

    @property
    def good(self) -> bool | None:
        """AQI ≤ 100; ``None`` when the AQI cannot be computed."""
        return None if self.aqi is None else self.aqi <= GOOD_AQI


def township_days(days: Iterable[AmbientDay], kinds: Iterable[str] = RANKED_KINDS) -> list[TownshipDay]:
    """Township daily values from the sensors' days (only sensors of ``kinds``; a sensor counted once per
    day: a repeated ``AmbientDay`` of the same sensor and day replaces the earlier one)."""
    allowed = frozenset(kinds)
    latest: dict[tuple[str, date], AmbientDay] = {}
    for d in days:
        if d.kind in allowed and d.township:
            latest[(d.sensor, d.day)] = d
    groups: dict[tuple[str, str, date], list[AmbientDay]] = {}
    for d in latest.values():
        groups.setdefault((d.district, d.township, d.day), []).append(d)
    out: list[TownshipDay] = []
    for (district, township, day), members in sorted(groups.items()):
        values: dict[str, float] = {}
        sensors: dict[str, tuple[str, ...]] = {}
        for key in DAY_KEYS:
            got = sorted(
                (m.sensor, float(v))
                for m in members
                if (v := m.means.get(key)) is not None and math.isfinite(float(v)) and float(v) >= 0
            )
            if got:
                values[key] = sum(v for _, v in got) / len(got)
                sensors[key] = tuple(s for s, _ in got)
        std = standard_for(day)
        conc: dict[str, float] = {}
        for key, name in (("pm25", "pm25"), ("pm10", "pm10"), ("so2", "so2"), ("no2", "no2"), ("co", "co")):
            if key in values:
                conc[name] = round(values[key], 6)
        if "o3_8h" in values:
            conc["o3"] = round(values["o3_8h"], 6)
        if "o3" in values:
            conc["o3_1h"] = round(values["o3"], 6)
        result = aqi(conc, period="24h", standard=std) if conc else None
        out.append(
            TownshipDay(
                district=district,
                township=township,
                day=day,
                values=values,
                sensors=sensors,
                aqi=None if result is None else result.aqi,
                level=None if result is None else result.level,
                primary=() if result is None else tuple(result.primary),
                standard=f"HJ 633-{std}",
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- figures


@dataclass(frozen=True, slots=True)
class TownshipFigures:
    """One township's figures for a period. ``index`` is ``None`` when the township cannot be ranked
    (``incomplete`` says why). ``concentrations``: the statistic of each index pollutant (mean, CO P95,
    O3 P90); ``shares``: Cᵢ/Sᵢ; ``days``: days with a township value per index pollutant."""

    district: str
    township: str
    period: RankPeriod
    sensors: tuple[str, ...]
    days: Mapping[str, int]
    pm25: float | None
    pm10: float | None
    concentrations: Mapping[str, float]
    shares: Mapping[str, float]
    index: float | None
    aqi_days: int
    good_days: int
    incomplete: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.district, self.township)

    @property
    def good_day_share(self) -> float | None:
        return self.good_days / self.aqi_days if self.aqi_days else None

    @property
    def ranked(self) -> bool:
        return self.index is not None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _statistic(pollutant: str, values: Sequence[float]) -> float:
    """What :func:`composite_index` divides by the limit: CO's 95th, O3's 90th percentile, else the mean."""
    if pollutant == "co":
        return percentile(values, 95)
    if pollutant == "o3":
        return percentile(values, 90)
    return sum(values) / len(values)


def township_figures(
    tdays: Iterable[TownshipDay],
    period: RankPeriod,
    *,
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
    until: date | None = None,
) -> list[TownshipFigures]:
    """The figures of every township with data in ``period`` (days outside it are ignored). ``until``: the
    last day over, for a period in progress (the completeness minimum is lowered by the days after it)."""
    unknown = [p for p in pollutants if p not in GRADE_II]
    if unknown or not pollutants:
        raise ValueError(f"index pollutants {list(pollutants)!r}: expected some of {', '.join(INDEX_POLLUTANTS)}")
    need = period.required_days(until)
    by_town: dict[tuple[str, str], list[TownshipDay]] = {}
    for td in tdays:
        if period.first <= td.day <= period.last:
            by_town.setdefault((td.district, td.township), []).append(td)
    out: list[TownshipFigures] = []
    for (district, township), tds in sorted(by_town.items()):
        series: dict[str, list[float]] = {}
        for td in sorted(tds, key=lambda t: t.day):
            for key, v in td.values.items():
                series.setdefault(key, []).append(v)
        sensors = sorted({s for td in tds for ss in td.sensors.values() for s in ss})
        daily = {p: series.get(DAILY_KEY[p], []) for p in pollutants}
        days = {p: len(v) for p, v in daily.items()}
        incomplete = tuple(f"{p}: {days[p]} < {need} days" for p in pollutants if days[p] < need)
        index: float | None = None
        shares: dict[str, float] = {}
        conc: dict[str, float] = {}
        if not incomplete:
            index, shares = composite_index(daily)
            conc = {p: _statistic(p, daily[p]) for p in shares}
        assessed = [td for td in tds if td.aqi is not None]
        out.append(
            TownshipFigures(
                district=district,
                township=township,
                period=period,
                sensors=tuple(sensors),
                days=days,
                pm25=_mean(series.get("pm25", [])),
                pm10=_mean(series.get("pm10", [])),
                concentrations=conc,
                shares=shares,
                index=index,
                aqi_days=len(assessed),
                good_days=sum(1 for td in assessed if td.good),
                incomplete=incomplete,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ ranking


@dataclass(frozen=True, slots=True)
class RankEntry:
    """A ranked township in one scope (``city`` or a district code): ``rank`` of ``of``, and the baselines."""

    scope: str
    rank: int
    of: int
    figures: TownshipFigures
    previous_index: float | None = None
    last_year_index: float | None = None

    @property
    def index(self) -> float:
        assert self.figures.index is not None
        return self.figures.index

    @property
    def change_vs_previous(self) -> float | None:
        return _change(self.index, self.previous_index)

    @property
    def change_vs_last_year(self) -> float | None:
        return _change(self.index, self.last_year_index)


def _change(index: float, base: float | None) -> float | None:
    return None if base is None or base <= 0 else (index - base) / base


@dataclass(frozen=True)
class Ranking:
    """A period's township ranking: the city's list, each district's, the townships not ranked."""

    period: RankPeriod
    pollutants: tuple[str, ...]
    city: tuple[RankEntry, ...]
    districts: Mapping[str, tuple[RankEntry, ...]]
    unranked: tuple[TownshipFigures, ...]
    basis: str = BASIS
    previous: RankPeriod | None = None
    last_year: RankPeriod | None = None
    kinds: tuple[str, ...] = field(default=tuple(sorted(RANKED_KINDS)))

    def entries(self) -> list[RankEntry]:
        """The city's entries, then each district's (by district code)."""
        return [*self.city, *(e for code in sorted(self.districts) for e in self.districts[code])]

    def worst(self, n: int) -> list[RankEntry]:
        """The ``n`` highest-index townships of the city, worst first."""
        return list(reversed(self.city))[:n]


def _published(index: float) -> float:
    return round(index, INDEX_DECIMALS)


def _ranked(
    scope: str,
    figs: Sequence[TownshipFigures],
    previous: Mapping[tuple[str, str], float],
    last_year: Mapping[tuple[str, str], float],
) -> tuple[RankEntry, ...]:
    order = sorted(figs, key=lambda f: (_published(f.index or 0.0), f.district, f.township))
    out: list[RankEntry] = []
    rank = 0
    last: float | None = None
    for pos, f in enumerate(order, start=1):
        pub = _published(f.index or 0.0)
        if last is None or pub != last:
            rank, last = pos, pub
        out.append(RankEntry(scope, rank, len(order), f, previous.get(f.key), last_year.get(f.key)))
    return tuple(out)


def rank_figures(
    figures: Iterable[TownshipFigures],
    *,
    previous: Iterable[TownshipFigures] = (),
    last_year: Iterable[TownshipFigures] = (),
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
    kinds: Iterable[str] = RANKED_KINDS,
) -> Ranking:
    """Rank ``figures`` (one period) in the city and in each district; baselines from the ranked figures of
    the previous period and the same period last year (same district and township)."""
    figs = list(figures)
    if not figs:
        raise ValueError("no township figures to rank")
    period = figs[0].period
    if any(f.period != period for f in figs):
        raise ValueError("township figures of different periods")
    prev_list, ly_list = list(previous), list(last_year)
    prev = {f.key: f.index for f in prev_list if f.index is not None}
    ly = {f.key: f.index for f in ly_list if f.index is not None}
    ranked = [f for f in figs if f.ranked]
    by_district: dict[str, list[TownshipFigures]] = {}
    for f in ranked:
        by_district.setdefault(f.district, []).append(f)
    return Ranking(
        period=period,
        pollutants=tuple(pollutants),
        city=_ranked("city", ranked, prev, ly),
        districts={d: _ranked(d, fs, prev, ly) for d, fs in sorted(by_district.items())},
        unranked=tuple(f for f in figs if not f.ranked),
        basis=basis(pollutants),
        previous=prev_list[0].period if prev_list else period.previous(),
        last_year=ly_list[0].period if ly_list else period.last_year(),
        kinds=tuple(sorted(frozenset(kinds))),
    )


def basis(pollutants: Sequence[str] = INDEX_POLLUTANTS) -> str:
    """The rule cited on every ``grid_rank`` point, naming the index pollutants when not all six."""
    if tuple(pollutants) == INDEX_POLLUTANTS:
        return BASIS
    return f"{BASIS}；仅计{','.join(pollutants)}"


def rank_period(
    days: Iterable[AmbientDay],
    period: RankPeriod,
    *,
    kinds: Iterable[str] = RANKED_KINDS,
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
    until: date | None = None,
) -> Ranking | None:
    """The township ranking of ``period`` from sensors' days covering it, the previous period and the same
    period last year (days outside the three are ignored). ``None`` when no township has data in
    ``period``. ``until``: the last day over, for a period in progress."""
    kinds = frozenset(kinds)
    tdays = township_days(days, kinds)
    current = township_figures(tdays, period, pollutants=pollutants, until=until)
    if not current:
        return None
    prev = township_figures(tdays, period.previous(), pollutants=pollutants)
    ly_period = period.last_year()
    ly = township_figures(tdays, ly_period, pollutants=pollutants) if ly_period is not None else []
    return rank_figures(current, previous=prev, last_year=ly, pollutants=pollutants, kinds=kinds)
