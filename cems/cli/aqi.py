"""``cems aqi``: the air quality index of given concentrations (HJ 633-2026 or HJ 633-2012)."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.errors import ConfigError
from cems.model import BEIJING
from cems.rules.aqi import aqi, standard_for


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    p = sub.add_parser(
        "aqi",
        help="air quality index of given concentrations (HJ 633-2026 / HJ 633-2012)",
        description="Print one JSON object: aqi (int, or null when it cannot be computed), level (1-6), "
        "category, colour, primary (pollutants as named here, sorted; empty when AQI <= 50), iaqi per "
        "pollutant, missing, beyond_scale, standard, period. Concentrations in µg/m³, CO in mg/m³.",
        epilog=examples(
            "cems aqi --period 1h pm25=80 pm10=120 so2=10 no2=40 co=0.8 o3=100",
            "cems aqi --standard 2012 --period 24h pm25=75 pm10=150 so2=10 no2=40 co=1 o3=100",
        ),
        formatter_class=Formatter,
    )
    p.add_argument(
        "--standard",
        choices=["2026", "2012"],
        default=None,
        help="HJ 633-2026 or HJ 633-2012 (default: the one in force on --date; 2026 from 2026-03-01)",
    )
    p.add_argument(
        "--period", choices=["1h", "24h"], default="1h", help="1h: real-time AQI; 24h: daily AQI (default 1h)"
    )
    p.add_argument("--date", default=None, help="the data's Beijing date, YYYY-MM-DD (default: today)")
    p.add_argument(
        "values",
        nargs="+",
        metavar="NAME=VALUE",
        help="so2, no2, co, o3 (daily: max 8-h mean), o3_8h, o3_1h, pm10, pm25",
    )
    p.set_defaults(func=cmd_aqi)


def cmd_aqi(a: argparse.Namespace, env: Env) -> int:
    values: dict[str, str] = {}
    for item in a.values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{item!r}: expected NAME=VALUE, e.g. pm25=80")
        values[name.strip()] = value.strip()
    if a.standard is not None:
        standard = a.standard
    else:
        try:
            day = date.fromisoformat(a.date) if a.date else datetime.now(BEIJING).date()
        except ValueError:
            raise ConfigError(f"--date {a.date!r}: expected YYYY-MM-DD") from None
        standard = standard_for(day)
    try:
        result = aqi(values, period=a.period, standard=standard)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0
