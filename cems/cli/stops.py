"""``cems stops add|list``: declared stops (停产/停运) kept beside the registry in ``<registry>.stops.toml``."""

from __future__ import annotations

import argparse
import json

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.stops import add_stop, declared_stops, parse_when


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    stp = sub.add_parser(
        "stops",
        help="declare and list outlet stops (停产/停运) beside the registry",
        epilog=examples(
            "cems stops add --config registry.toml --mn MN --from 2026-12-01 --to 2026-12-05 \\",
            "    --reason 停产检修 --by 张三",
            "cems stops list --config registry.toml",
        ),
        formatter_class=Formatter,
    )
    sub2 = stp.add_subparsers(dest="stops_action", required=True, metavar="ACTION")
    a = sub2.add_parser(
        "add",
        help="declare a stop of an outlet (hours inside are not expected)",
        epilog=examples(
            "cems stops add --config registry.toml --mn 13060200000001 --from 2026-12-01 --to 2026-12-05 \\",
            "    --reason 停产检修 --by 张三",
        ),
        formatter_class=Formatter,
    )
    a.add_argument("--config", required=True, help="registry TOML")
    a.add_argument("--mn", required=True, help="the outlet's MN")
    a.add_argument("--from", required=True, help="start, ISO 8601 (Beijing time without an offset), e.g. 2026-12-01")
    a.add_argument("--to", required=True, help="end (exclusive), ISO 8601, e.g. 2026-12-05T08:00")
    a.add_argument("--reason", required=True, help="e.g. 停产检修, 错峰生产")
    a.add_argument("--by", required=True, help="who declares it")
    a.set_defaults(func=cmd_stops_add)
    ls = sub2.add_parser(
        "list",
        help="declared stops (registry and stops file), one JSON object per line",
        epilog=examples("cems stops list --config registry.toml"),
        formatter_class=Formatter,
    )
    ls.add_argument("--config", required=True, help="registry TOML")
    ls.set_defaults(func=cmd_stops_list)


def cmd_stops_add(a: argparse.Namespace, env: Env) -> int:
    path = add_stop(a.config, a.mn, parse_when(getattr(a, "from")), parse_when(a.to), a.reason, a.by)
    print(f"stop of {a.mn} declared in {path}; restart running ingesters to apply it")
    return 0


def cmd_stops_list(a: argparse.Namespace, env: Env) -> int:
    stops = declared_stops(a.config)
    for s in stops:
        print(json.dumps(s, ensure_ascii=False))
    if not stops:
        print("no declared stops")
    return 0
