"""``cems districts``: the district months of a sharded deployment, merged from every ingester's part (issue 20).

Each ``cems run --shard K/N`` writes its part of a district month (``cems_rate``, ``level=district_shard``);
this command reads the parts of a month, checks that every shard's is there, adds them up and takes the
supervision (挂牌督办) decision once (:mod:`cems.rules.district_parts`).  It prints one JSON object per district;
with ``--write`` it also writes the merged figures as ``level=district`` points, where the dashboards read
them (run it from cron, e.g. every 5 minutes: the aggregator role of docs/scaling.md).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime

from cems.cli._common import Formatter, add_influx_read_args, examples, local_url
from cems.config import Env
from cems.errors import ConfigError
from cems.model import BEIJING
from cems.registry import load_registry
from cems.rules.district_parts import PART_LEVEL, IncompleteParts, merge_parts, part_from_row
from cems.sinks.influx import influx_query, influx_write
from cems.sinks.lineprotocol import district_month_rate_line


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    p = sub.add_parser(
        "districts",
        help="district months of several `cems run --shard K/N` ingesters, merged and decided once (挂牌督办)",
        epilog=examples(
            "cems districts --config registry.toml --month 2026-11 --influx-url http://influxdb:8086",
            "cems districts --config registry.toml --month 2026-11 --write     # as level=district points too",
        ),
        formatter_class=Formatter,
    )
    p.add_argument("--config", required=True, help="registry TOML (the whole city's), e.g. deploy/registry.toml")
    p.add_argument("--month", required=True, help="Beijing calendar month, YYYY-MM, e.g. 2026-11")
    p.add_argument(
        "--write",
        action="store_true",
        help="also write the merged figures to cems_rate (level=district), where a single ingester writes them",
    )
    add_influx_read_args(p, env)
    p.set_defaults(func=cmd_districts)


def cmd_districts(a: argparse.Namespace, env: Env) -> int:
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", a.month):
        raise ConfigError(f"--month {a.month!r}: expected YYYY-MM, e.g. 2026-11")
    registry = load_registry(a.config)
    url = a.influx_url or local_url("influxdb", env)
    y, m = (int(x) for x in a.month.split("-"))
    start = datetime(y, m, 1, tzinfo=BEIJING)
    q = (
        f"SELECT * FROM cems_rate WHERE \"level\" = '{PART_LEVEL}' AND time = {int(start.timestamp())}s "
        'GROUP BY "district", "shard"'
    )
    rows = influx_query(url, a.influx_db, q, epoch="s")
    try:
        merged = merge_parts(registry.city, (part_from_row(r) for r in rows))
    except IncompleteParts as e:
        raise ConfigError(f"cannot merge the district figures of {a.month}: {e}") from e
    for r in merged:
        print(json.dumps(r.to_json(), ensure_ascii=False))
    if a.write and merged:
        influx_write(url, a.influx_db, [district_month_rate_line(r) for r in merged], precision="ms")
    return 0
