"""``cems dashboards registry``: publish the registry's names and places (``cems_registry``) for Grafana."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from cems.cli._common import Formatter, add_influx_args, examples, influx_config
from cems.config import Env
from cems.registry import load_registry
from cems.sinks.influx import InfluxWriter
from cems.sinks.registryinfo import registry_lines


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    p = sub.add_parser(
        "dashboards",
        help="support for the Grafana dashboards (docs/dashboards.md)",
        epilog=examples("cems dashboards registry --config registry.toml --influx-url http://127.0.0.1:8086"),
        formatter_class=Formatter,
    )
    sub2 = p.add_subparsers(dest="dashboards_action", required=True, metavar="ACTION")
    r = sub2.add_parser(
        "registry",
        help="write the registry's names and map positions to InfluxDB (cems_registry); run it after every "
        "registry change",
        epilog=examples(
            "cems dashboards registry --config registry.toml --influx-url http://127.0.0.1:8086",
            "CEMS_INFLUX_TOKEN=cems:secret cems dashboards registry --config registry.toml \\",
            "    --influx-url http://influxdb:8086",
        ),
        formatter_class=Formatter,
    )
    r.add_argument("--config", default=env.get("CEMS_CONFIG"), required=not env.get("CEMS_CONFIG"),
                   help="registry TOML [CEMS_CONFIG]")  # fmt: skip
    add_influx_args(r, env)
    r.set_defaults(func=cmd_dashboards_registry)


def cmd_dashboards_registry(a: argparse.Namespace, env: Env) -> int:
    registry = load_registry(a.config)
    lines = registry_lines(registry, datetime.now(UTC))
    config = influx_config(a)

    async def main() -> None:
        writer = InfluxWriter(config)
        try:
            await writer.ensure_database()
            await writer.write(lines)
        finally:
            await writer.aclose()

    asyncio.run(main())
    print(f"wrote {len(lines)} cems_registry point(s) to {config.url}")
    return 0
