"""``cems services`` (project-owned local Mosquitto and InfluxDB) and ``cems query`` (InfluxQL)."""

from __future__ import annotations

import argparse
import json

from cems.cli._common import Formatter, add_influx_read_args, examples, local_url, services_dir
from cems.config import Env
from cems.devtools.local import LocalServices, format_status
from cems.sinks.influx import influx_query


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    s = sub.add_parser(
        "services",
        help="start/stop the project-owned local Mosquitto and InfluxDB",
        description="Project-owned Mosquitto and InfluxDB on free loopback ports (never the system's "
        "1883/8086), under STATE_DIR/services. `status` exits 3 when they are not both running.",
        epilog=examples("cems services up", "cems services status", "cems services down"),
        formatter_class=Formatter,
    )
    s.add_argument("action", choices=["up", "down", "status"], help="up: start; down: stop; status: show URLs")
    s.add_argument("--influx-db", default="cems", help="database to create (default cems)")
    s.set_defaults(func=cmd_services)

    q = sub.add_parser(
        "query",
        help="run an InfluxQL query (default: against the local InfluxDB)",
        epilog=examples(
            "cems query 'SELECT count(a21026_Rtd) FROM cems_reading GROUP BY district'",
            "cems query --influx-url http://influxdb:8086 'SHOW MEASUREMENTS'",
        ),
        formatter_class=Formatter,
    )
    q.add_argument("query", help="InfluxQL; one JSON object per result row is printed")
    add_influx_read_args(q, env)
    q.set_defaults(func=cmd_query)


def cmd_services(a: argparse.Namespace, env: Env) -> int:
    svc = LocalServices(services_dir(env))
    if a.action == "up":
        infos = svc.up(influx_db=a.influx_db)
        print(format_status(infos))
    elif a.action == "down":
        svc.down()
        print("local services stopped")
    else:
        status = svc.status()
        print(format_status(status))
        core = [status.get("mosquitto"), status.get("influxdb")]
        return 0 if all(core) else 3
    return 0


def cmd_query(a: argparse.Namespace, env: Env) -> int:
    for row in influx_query(a.influx_url or local_url("influxdb", env), a.influx_db, a.query):
        print(json.dumps(row, ensure_ascii=False, default=str))
    return 0
