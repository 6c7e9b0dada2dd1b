"""The township ranking against InfluxDB: ``grid_daily`` points (as the grid pipeline writes them,
docs/influxdb.md) read back as :class:`~cems.rules.ambient.AmbientDay`, ranked by the pure
:mod:`cems.rules.ranking`, written as ``grid_rank`` points.

The database is reached through two injected functions, so the command line (synchronous ``/query`` and
``/write``) and the service (its async writer) share the code and tests can pass fakes:

* ``query(text, epoch) -> rows`` — InfluxQL, e.g. :func:`cems.sinks.influx.influx_query` bound to a URL and
  database (the same shape as ``cems.report``'s ``Query``);
* ``write(lines)`` — line protocol with millisecond timestamps.

A ranking needs the period, the previous period and the same period last year: three reads of ``grid_daily``
(one per window, fetched a week at a time to keep each answer bounded).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

from cems.model import BEIJING
from cems.rules.ambient import AmbientDay
from cems.rules.ranking import (
    DAY_KEYS,
    INDEX_POLLUTANTS,
    RANKED_KINDS,
    Ranking,
    RankPeriod,
    periods_closed_by,
    rank_period,
)
from cems.sinks.influxql import quote_ident
from cems.sinks.lineprotocol import grid_rank_lines

#: ``(q, epoch) -> rows``.
Query = Callable[[str, str | None], list[dict[str, Any]]]
#: Writes line-protocol lines (millisecond precision).
Write = Callable[[list[str]], None]

GRID_DAILY_MEASUREMENT: Final = "grid_daily"
#: ``grid_daily`` is read this many days at a time.
CHUNK: Final = timedelta(days=7)


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def ambient_day_from_row(row: dict[str, Any]) -> AmbientDay | None:
    """An :class:`AmbientDay` from a ``grid_daily`` row queried with ``epoch="s"`` and grouped by its tags;
    ``None`` for a row without a sensor. Absent fields are absent pollutants (or not valid that day)."""
    sensor = row.get("sensor")
    if not sensor or row.get("time") is None:
        return None
    means = {k: v for k in DAY_KEYS if (v := _num(row.get(k))) is not None}
    hours = {k: int(h) for k in DAY_KEYS if (h := _num(row.get(f"{k}_hours"))) is not None}
    aqi = _num(row.get("aqi"))
    level = _num(row.get("level"))
    primary = tuple(p for p in str(row.get("primary") or "").split(",") if p)
    return AmbientDay(
        sensor=str(sensor),
        district=str(row.get("district") or ""),
        township=str(row.get("township") or ""),
        kind=str(row.get("kind") or "micro_station"),
        day=datetime.fromtimestamp(int(row["time"]), BEIJING).date(),
        means=means,
        hours=hours,
        aqi=None if aqi is None else int(aqi),
        level=None if level is None else int(level),
        primary=primary,
        upload_rate=_num(row.get("upload_rate")) or 0.0,
    )


def load_grid_days(query: Query, first: date, last: date) -> list[AmbientDay]:
    """Every ``grid_daily`` point of Beijing days ``first`` … ``last``."""
    start = datetime(first.year, first.month, first.day, tzinfo=BEIJING)
    end = datetime(last.year, last.month, last.day, tzinfo=BEIJING) + timedelta(days=1)
    out: list[AmbientDay] = []
    t = start
    while t < end:
        u = min(end, t + CHUNK)
        rows = query(
            f"SELECT * FROM {quote_ident(GRID_DAILY_MEASUREMENT)} WHERE time >= {_ns(t)} AND time < {_ns(u)} "
            'GROUP BY "sensor", "district", "township", "kind"',
            "s",
        )
        out.extend(d for r in rows if (d := ambient_day_from_row(r)) is not None)
        t = u
    return out


def load_ranking_days(query: Query, period: RankPeriod) -> list[AmbientDay]:
    """The ``grid_daily`` days a ranking of ``period`` needs: the period, the previous one, last year's."""
    windows = [period, period.previous()]
    ly = period.last_year()
    if ly is not None:
        windows.append(ly)
    out: list[AmbientDay] = []
    for w in windows:
        out.extend(load_grid_days(query, w.first, w.last))
    return out


def rank_from_influx(
    query: Query,
    period: RankPeriod,
    *,
    kinds: Iterable[str] = RANKED_KINDS,
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
    until: date | None = None,
) -> Ranking | None:
    """The ranking of ``period`` from ``grid_daily`` (``None`` when no township has data in it)."""
    return rank_period(load_ranking_days(query, period), period, kinds=kinds, pollutants=pollutants, until=until)


def rank_and_write(
    query: Query,
    write: Write,
    period: RankPeriod,
    *,
    kinds: Iterable[str] = RANKED_KINDS,
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
    until: date | None = None,
) -> Ranking | None:
    """Rank ``period`` from ``grid_daily`` and write its ``grid_rank`` points (nothing without data)."""
    ranking = rank_from_influx(query, period, kinds=kinds, pollutants=pollutants, until=until)
    if ranking is not None:
        lines = grid_rank_lines(ranking)
        if lines:
            write(lines)
    return ranking


async def rank_closed_day(
    query: Query,
    write: Callable[[list[str]], Awaitable[object]],
    day: date,
    *,
    kinds: Iterable[str] = RANKED_KINDS,
    pollutants: Sequence[str] = INDEX_POLLUTANTS,
) -> list[Ranking]:
    """For the service, once Beijing day ``day`` has closed and its ``grid_daily`` points are written: rank
    the day, and its ISO week / month when ``day`` ends them (:func:`periods_closed_by`), and write the
    ``grid_rank`` points with the service's async writer. The (blocking) reads run in a worker thread."""
    out: list[Ranking] = []
    kinds = frozenset(kinds)
    for period in periods_closed_by(day):
        ranking = await asyncio.to_thread(rank_from_influx, query, period, kinds=kinds, pollutants=pollutants)
        if ranking is None:
            continue
        lines = grid_rank_lines(ranking)
        if lines:
            await write(lines)
        out.append(ranking)
    return out
