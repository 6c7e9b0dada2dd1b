"""``cems warning set|list``: the city's heavy-pollution warning level (重污染天气预警), set by an operator."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cems.cli._common import (
    Formatter,
    add_command_client_args,
    add_influx_read_args,
    command_client,
    examples,
    local_url,
)
from cems.config import Env
from cems.errors import CemsError
from cems.rules.emergency import WarningLevel
from cems.service.compliance import list_events
from cems.service.warnings import publish_warning, read_history
from cems.stops import parse_when


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    w = sub.add_parser(
        "warning",
        help="set or list the city's heavy-pollution warning level (emergency response, issue 16)",
        epilog=examples(
            "cems warning set orange --from 2026-12-01T00:00 --to 2026-12-04T00:00 --by 张三 --config registry.toml",
            "cems warning list",
        ),
        formatter_class=Formatter,
    )
    w_sub = w.add_subparsers(dest="warning_action", required=True, metavar="ACTION")
    ws = w_sub.add_parser(
        "set",
        help="set the level for a period (sent to the ingester over MQTT, QoS 1, retained)",
        description="Publish a warning setting on {command_prefix}/warning (retained: a restarted ingester "
        "learns it again). The ingester keeps the history, raises a warning_level event and judges the "
        "emergency lists under the level (emergency_noncompliance, emergency_stop_violation, "
        "staggered_production_violation). A later setting overrides an earlier one for the time it covers; "
        "lift a warning with level none. Only the broker's command user may publish there. Exit 0 when the "
        "ingester confirmed it, 1 when no confirmation came within --wait seconds.",
        epilog=examples(
            "cems warning set orange --from 2026-12-01T00:00 --to 2026-12-04T00:00 --by 张三 \\",
            "    --note 市重污染天气应急指挥部办公室通知 --config registry.toml",
            "cems warning set none --from 2026-12-03T12:00 --by 张三   # lift early",
        ),
        formatter_class=Formatter,
    )
    ws.add_argument("level", choices=[lv.label for lv in WarningLevel], help="the level: none, blue … red")
    ws.add_argument(
        "--from", dest="start", required=True, help="start, ISO 8601 (Beijing time without an offset), e.g. 2026-12-01"
    )
    ws.add_argument("--to", dest="end", default=None, help="end, exclusive (default: until further notice)")
    ws.add_argument("--by", required=True, help="who sets it (the operator), e.g. 张三")
    ws.add_argument("--note", default="", help="the notice it follows, e.g. its 文号 (≤ 1000 characters)")
    ws.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the ingester's confirmation (default 10; 0: only wait for the broker)",
    )
    add_command_client_args(ws, env)
    ws.set_defaults(func=cmd_warning_set)
    wl = w_sub.add_parser(
        "list",
        help="the warning settings: from InfluxDB (warning_level events), or from a history file",
        epilog=examples(
            "cems warning list",
            "cems warning list --file ~/.local/state/cems/warnings.json --json",
        ),
        formatter_class=Formatter,
    )
    wl.add_argument(
        "--file",
        default=None,
        help="a warning history file (the ingester's warnings.json, or one for cems replay --warnings)",
    )
    wl.add_argument("--json", action="store_true", help="one JSON object per line")
    add_influx_read_args(wl, env)
    wl.set_defaults(func=cmd_warning_list)


def cmd_warning_set(a: argparse.Namespace, env: Env) -> int:
    topics, settings = command_client(a, env)
    start = parse_when(a.start)
    end = None if a.end is None else parse_when(a.end)
    if end is not None and end <= start:
        raise CemsError(f"the warning ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    level = WarningLevel.parse(a.level)
    reply = asyncio.run(
        publish_warning(settings, topics, level, start, end, a.by, note=a.note, confirm_s=max(a.wait, 0.0))
    )
    what = f"{level.label} from {start.isoformat()} to {end.isoformat() if end else 'further notice'} by {a.by}"
    if a.wait <= 0:
        print(f"warning {what} sent to the broker (retained; not waiting for the ingester)")
        return 0
    if reply is None:
        print(
            f"cems: warning {what} sent (retained), but the ingester did not confirm it within {a.wait:g} s "
            "(is `cems run` running and connected to this broker?); check with: cems warning list",
            file=sys.stderr,
        )
        return 1
    result = reply.get("result")
    if result in ("set", "already_set"):
        print(f"warning {what}: {'recorded' if result == 'set' else 'already recorded'} by the ingester")
        return 0
    print(f"cems: the ingester refused the warning: {reply.get('detail') or result}", file=sys.stderr)
    return 1


def cmd_warning_list(a: argparse.Namespace, env: Env) -> int:
    rows: list[dict[str, Any]]
    if a.file:
        rows = read_history(Path(a.file)).to_json()
    else:
        url = a.influx_url or local_url("influxdb", env)
        rows = [
            {"level": r.get("pollutant"), "from": r.get("start"), "to": r.get("end"), "by": r.get("profile")}
            for r in list_events(url, a.influx_db, only_open=False)
            if r.get("type") == "warning_level"
        ]
    if a.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    if not rows:
        print("no warnings set")
        return 0
    cols = ["level", "from", "to", "by"]
    table = [[c.upper() for c in cols]] + [[str(r.get(c) or "-") for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    print("\n".join("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table))
    return 0
