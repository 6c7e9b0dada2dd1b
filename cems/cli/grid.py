"""``cems grid``: grid air quality. ``cems grid rank``: the township ranking of a day, ISO week or month from
``grid_daily`` in InfluxDB (cems/rules/ranking.py), printed, and with ``--write`` stored as ``grid_rank``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, timedelta
from typing import Any

from cems.cli._common import Formatter, add_influx_read_args, examples, local_url
from cems.config import Env
from cems.errors import ConfigError
from cems.model import BEIJING
from cems.report._csv import pct
from cems.rules.ranking import (
    INDEX_POLLUTANTS,
    PERIOD_KINDS,
    RANKED_KINDS,
    RankEntry,
    Ranking,
    RankPeriod,
    TownshipFigures,
)
from cems.sinks.gridrank import rank_from_influx
from cems.sinks.influx import influx_query, influx_write
from cems.sinks.lineprotocol import grid_rank_lines

KINDS = ("micro_station", "national_station", "construction_site")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    grid = sub.add_parser(
        "grid",
        help="grid air quality (micro-stations): township ranking",
        epilog=examples("cems grid rank --period month --date 2026-11-01"),
        formatter_class=Formatter,
    )
    gsub = grid.add_subparsers(dest="grid_command", required=True, metavar="SUBCOMMAND")
    rank = gsub.add_parser(
        "rank",
        help="rank townships on grid_daily (composite index, PM2.5, PM10, good days, change) per district and city",
        description="Rank the townships (乡镇/街道) of the period containing --date on the grid_daily points in "
        "InfluxDB: composite index ΣCi/Si (环办监测〔2018〕19号, GB 3095-2012 grade II), mean PM2.5 and PM10, "
        "share of good days (AQI ≤ 100, HJ 633), change against the previous period and the same period last "
        "year; rank 1 = cleanest. Prints the city ranking, then each district's, then the townships not "
        "ranked (too few days) with the reason. --write stores them as grid_rank points.",
        epilog=examples(
            "cems grid rank --period day --date 2026-11-20",
            "cems grid rank --period week --date 2026-11-20 --json",
            "cems grid rank --period month --date 2026-11-01 --write --influx-url http://influxdb:8086",
        ),
        formatter_class=Formatter,
    )
    rank.add_argument(
        "--period",
        choices=PERIOD_KINDS,
        default="day",
        help="day, ISO week (Monday-Sunday) or calendar month, Beijing time (default day)",
    )
    rank.add_argument(
        "--date",
        default=None,
        help="a Beijing date YYYY-MM-DD in the period (default: yesterday); a period still in progress is "
        "ranked on its days so far",
    )
    rank.add_argument("--write", action="store_true", help="also write the rankings to InfluxDB as grid_rank points")
    rank.add_argument("--json", action="store_true", help="print JSON lines (one per township and scope) instead")
    rank.add_argument(
        "--kinds",
        default=",".join(sorted(RANKED_KINDS)),
        help="sensor kinds that count, comma-separated, of micro_station, national_station, construction_site "
        "(default micro_station: see docs/influxdb.md grid_rank)",
    )
    rank.add_argument(
        "--pollutants",
        default=",".join(INDEX_POLLUTANTS),
        help="pollutants of the composite index, comma-separated (default all six: so2,no2,pm10,pm25,co,o3; "
        "e.g. pm25,pm10 for a PM-only grid)",
    )
    add_influx_read_args(rank, env)
    rank.set_defaults(func=cmd_rank)


def _split(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return items


def entry_json(e: RankEntry, r: Ranking) -> dict[str, Any]:
    return {"scope": e.scope, "rank": e.rank, "of": e.of, **figures_json(e.figures, r)} | {
        "previous_index": e.previous_index,
        "last_year_index": e.last_year_index,
        "change_vs_previous": e.change_vs_previous,
        "change_vs_last_year": e.change_vs_last_year,
    }


def figures_json(f: TownshipFigures, r: Ranking) -> dict[str, Any]:
    return {
        "period": r.period.kind,
        "key": r.period.key,
        "district": f.district,
        "township": f.township,
        "index": f.index,
        "pm25": f.pm25,
        "pm10": f.pm10,
        "good_day_share": f.good_day_share,
        "good_days": f.good_days,
        "aqi_days": f.aqi_days,
        "shares": dict(f.shares),
        "concentrations": dict(f.concentrations),
        "days": dict(f.days),
        "sensors": list(f.sensors),
        "incomplete": list(f.incomplete),
        "basis": r.basis,
    }


def _n(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _change(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:+.1f}%"


def _table(title: str, entries: tuple[RankEntry, ...]) -> list[str]:
    out = [title, "排名  乡镇/街道        区县      综合指数  PM2.5   PM10  优良天%   环比     同比  点位  天数"]
    for e in entries:
        f = e.figures
        share = pct(f.good_day_share)
        out.append(
            f"{e.rank:>4}/{e.of:<3} {f.township:<12} {f.district:<8} {e.index:>8.2f} {_n(f.pm25, '6.1f'):>6} "
            f"{_n(f.pm10, '6.1f'):>6} {share or '—':>7} {_change(e.change_vs_previous):>8} "
            f"{_change(e.change_vs_last_year):>8} {len(f.sensors):>5} {min(f.days.values(), default=0):>5}"
        )
    return out


def render_table(r: Ranking) -> str:
    lines = [
        f"乡镇（街道）空气质量排名 {r.period.key}（{r.period.kind}，{r.period.first} 至 {r.period.last}）",
        f"依据：{r.basis}；点位类型：{','.join(r.kinds)}；环比 {r.previous.key if r.previous else '—'}，"
        f"同比 {r.last_year.key if r.last_year else '—'}",
        "",
        *_table("全市", r.city),
    ]
    for code, entries in r.districts.items():
        lines += ["", *_table(f"区县 {code}", entries)]
    if r.unranked:
        lines += ["", "未排名（数据不足）："]
        lines += [f"  {f.township}（{f.district}）：{'；'.join(f.incomplete)}" for f in r.unranked]
    return "\n".join(lines)


def cmd_rank(a: argparse.Namespace, env: Env) -> int:
    today = datetime.now(BEIJING).date()
    try:
        day = date.fromisoformat(a.date) if a.date else today - timedelta(days=1)
    except ValueError:
        raise ConfigError(f"--date {a.date!r}: expected YYYY-MM-DD") from None
    kinds = _split(a.kinds, KINDS, "--kinds")
    pollutants = _split(a.pollutants, INDEX_POLLUTANTS, "--pollutants")
    period = RankPeriod.containing(a.period, day)
    if period.first >= today:
        raise ConfigError(f"--date {day}: the {a.period} {period.key} has not started a full day yet")
    until = today - timedelta(days=1) if period.last >= today else None
    url = a.influx_url or local_url("influxdb", env)

    def query(text: str, epoch: str | None) -> list[dict[str, Any]]:
        return influx_query(url, a.influx_db, text, epoch=epoch)

    ranking = rank_from_influx(query, period, kinds=kinds, pollutants=pollutants, until=until)
    if ranking is None:
        print(f"cems: no grid_daily data for {period.key} in {a.influx_db!r} at {url}: nothing to rank")
        return 1
    if a.json:
        for e in ranking.entries():
            print(json.dumps(entry_json(e, ranking), ensure_ascii=False))
        for f in ranking.unranked:
            print(json.dumps({"scope": None, "rank": None, "of": None, **figures_json(f, ranking)}, ensure_ascii=False))
    else:
        print(render_table(ranking))
    if a.write:
        lines = grid_rank_lines(ranking)
        influx_write(url, a.influx_db, lines, precision="ms")
        print(f"wrote {len(lines)} grid_rank points", file=sys.stderr)
    return 0
