"""``cems report``: the city office's transmission-rate and exceedance report (self-contained HTML + CSV)."""

from __future__ import annotations

import argparse
from datetime import datetime

from cems.cli._common import Formatter, add_influx_read_args, examples, local_url
from cems.config import Env
from cems.errors import ConfigError
from cems.model import BEIJING
from cems.registry import load_registry
from cems.report import Period, influx_loader, load_report, write_report


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    rpt = sub.add_parser(
        "report",
        help="monthly/weekly/daily transmission-rate and exceedance report (self-contained HTML + CSV)",
        epilog=examples(
            "cems report --config registry.toml --month 2026-11 --out report/",
            "cems report --config registry.toml --week 2026-W47 --out week47/ --influx-url http://influxdb:8086",
        ),
        formatter_class=Formatter,
    )
    add_report_arguments(rpt, env)
    rpt.set_defaults(func=cmd_report)


def add_report_arguments(parser: argparse.ArgumentParser, env: Env) -> None:
    """Options of ``cems report`` (its own --influx-url/--influx-db, like ``cems query``)."""
    parser.add_argument("--config", required=True, help="registry TOML")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--month", help="Beijing calendar month, YYYY-MM, e.g. 2026-11")
    when.add_argument("--week", help="ISO week, YYYY-Www (Monday to Sunday, Beijing time), e.g. 2026-W47")
    when.add_argument("--day", help="Beijing calendar day, YYYY-MM-DD")
    parser.add_argument("--out", required=True, help="output directory (report.html and CSV files)")
    add_influx_read_args(parser, env)


def period_of(a: argparse.Namespace) -> Period:
    if a.month:
        return Period.month(a.month)
    if a.week:
        return Period.week(a.week)
    if a.day:
        return Period.day(a.day)
    raise ConfigError("one of --month, --week or --day is required")


def cmd_report(a: argparse.Namespace, env: Env) -> int:
    """Load, build, write; print the written paths."""
    registry = load_registry(a.config)
    period = period_of(a)
    query = influx_loader(a.influx_url or local_url("influxdb", env), a.influx_db)
    now = datetime.now(BEIJING)
    report = load_report(registry, period, query, now=now)
    for p in write_report(report, a.out, generated=now):
        print(p)
    return 0
