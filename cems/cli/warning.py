"""``cems warning set|list|suggest``: the city's heavy-pollution warning level (重污染天气预警), set by an operator."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime, timedelta
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
from cems.model import BEIJING
from cems.rules.aqi import POLLUTANTS
from cems.rules.emergency import CityHour, WarningLevel, city_hours, suggest_level
from cems.service.compliance import list_events
from cems.service.warnings import publish_warning, read_history
from cems.sinks.influx import influx_query
from cems.sinks.lineprotocol import present
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
    wg = w_sub.add_parser(
        "suggest",
        help="suggest a level from the city's recent hourly AQI (never applied: an operator decides)",
        description="Compute the city's hourly AQI over the last --hours hours from the stations' grid_hourly "
        "values in InfluxDB (per pollutant the mean of the stations with a valid hourly value, HJ 663-2013 §5; "
        "AQI per HJ 633) and apply the warning criteria of the heavy-pollution plans to the trailing run of "
        "hours with AQI > 200: yellow ≥ 48 h, orange ≥ 72 h, red ≥ 96 h with ≥ 48 h > 300, or red when AQI "
        "reached 500 (DOMAIN.md §6; the plans state forecast durations, applied here to what was observed). "
        "A suggestion only: set a level with `cems warning set`. Exit 0 with a suggestion, 1 when the "
        "stations have no hourly values in the window.",
        epilog=examples(
            "cems warning suggest",
            "cems warning suggest --kinds national_station,micro_station --district 130602 --json",
            "cems warning suggest --at 2026-12-01T08:00 --hours 144",
        ),
        formatter_class=Formatter,
    )
    wg.add_argument("--hours", type=int, default=120, help="hours of AQI to look back (default 120; red needs ≥ 96)")
    wg.add_argument(
        "--kinds",
        default="national_station",
        help="grid sensor kinds whose hours count, comma-separated (default national_station: the 国控 "
        "stations the plans use; micro_station, construction_site)",
    )
    wg.add_argument("--district", default=None, help="only this district's stations (default: the whole city)")
    wg.add_argument(
        "--at",
        default=None,
        help="end of the window, exclusive, ISO 8601 (Beijing time without an offset; default: the start of the "
        "current hour, the last complete hour being the one before)",
    )
    wg.add_argument("--json", action="store_true", help="one JSON object: level, reason and the hourly series")
    add_influx_read_args(wg, env)
    wg.set_defaults(func=cmd_warning_suggest)


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


#: Sensor kinds of the registry (cems/registry: ``[[grid_sensor]] kind``).
_KINDS = ("micro_station", "national_station", "construction_site")


def station_hours(rows: list[dict[str, Any]]) -> dict[datetime, list[dict[str, float]]]:
    """``grid_hourly`` rows (InfluxQL, epoch ms) → hour start → each station's valid hourly values; a value
    counts only when its ``{pollutant}_valid`` is true and a revision did not empty it (``unset``)."""
    out: dict[datetime, list[dict[str, float]]] = {}
    for row in map(present, rows):
        t = datetime.fromtimestamp(int(row["time"]) / 1000, UTC).astimezone(BEIJING)
        values = {
            p: float(row[p])
            for p in POLLUTANTS
            if row.get(f"{p}_valid") is True and isinstance(row.get(p), int | float) and not isinstance(row[p], bool)
        }
        out.setdefault(t, []).append(values)
    return out


def cmd_warning_suggest(a: argparse.Namespace, env: Env) -> int:
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in _KINDS]
    if bad or not kinds:
        raise CemsError(f"--kinds: unknown kind(s) {', '.join(bad) or '(none)'}; known: {', '.join(_KINDS)}")
    if a.hours < 1:
        raise CemsError("--hours must be at least 1")
    end = parse_when(a.at) if a.at else datetime.now(BEIJING).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=a.hours)
    where = [
        f"time >= '{start.astimezone(UTC).isoformat()}'",
        f"time < '{end.astimezone(UTC).isoformat()}'",
        '"kind" =~ /^(' + "|".join(re.escape(k) for k in kinds) + ")$/",
    ]
    if a.district:
        if not re.fullmatch(r"[0-9A-Za-z_-]+", a.district):
            raise CemsError(f"--district: not a district code: {a.district!r}")
        where.append(f"\"district\" = '{a.district}'")
    url = a.influx_url or local_url("influxdb", env)
    rows = influx_query(url, a.influx_db, 'SELECT * FROM "grid_hourly" WHERE ' + " AND ".join(where), epoch="ms")
    stations = station_hours(rows)
    hours = city_hours(stations, start, end)
    sensors = {str(r.get("sensor")) for r in rows}
    if not rows:
        print(
            f"cems: no grid_hourly values of {', '.join(kinds)} stations"
            + (f" in district {a.district}" if a.district else "")
            + f" from {start.isoformat()} to {end.isoformat()} in {a.influx_db!r} (try --kinds micro_station)",
            file=sys.stderr,
        )
        return 1
    level, reason = suggest_level([h.aqi for h in hours])
    if a.json:
        print(
            json.dumps(
                {
                    "level": level.label,
                    "reason": reason,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "kinds": kinds,
                    "district": a.district,
                    "stations": len(sensors),
                    "citation": CITATION,
                    "hours": [h.to_json() for h in hours],
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"suggested level: {level.label} ({reason})")
    print(
        f"from the city's hourly AQI {start.isoformat()} … {end.isoformat()}: {len(sensors)} "
        f"{'/'.join(kinds)} station(s), {sum(h.aqi is not None for h in hours)} of {len(hours)} hours with an AQI"
    )
    print(f"criteria: {CITATION}")
    print("a suggestion only: an operator sets the level with `cems warning set LEVEL --from … --by …`")
    print("last 24 hours (Beijing):")
    print(_series(hours[-24:]))
    return 0


#: Where the suggestion's criteria come from.
CITATION = (
    "heavy-pollution plans (DOMAIN.md §6): yellow AQI > 200 for ≥ 48 h, orange ≥ 72 h, red ≥ 96 h with AQI > 300 "
    "for ≥ 48 h or AQI reaching 500 (forecast durations, applied to the observed trailing run); city value = "
    "mean of the stations (HJ 663-2013 §5), AQI per HJ 633"
)


def _series(hours: list[CityHour]) -> str:
    return "\n".join(
        f"  {h.hour_start.strftime('%m-%d %H:00')}  AQI {h.aqi if h.aqi is not None else '-':>3}  "
        f"({h.stations} station{'s' if h.stations != 1 else ''})"
        for h in hours
    )
