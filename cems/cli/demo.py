"""``cems demo``: the main job on a sample city — local services, a simulated fleet, the ingester."""

from __future__ import annotations

import argparse

from cems.cli._common import Formatter, examples
from cems.config import Env, state_dir
from cems.devtools.demo import DemoOptions, run_demo


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    d = sub.add_parser(
        "demo",
        help="start local services, a sample fleet and the ingester; show live figures",
        description="Start a project-owned Mosquitto and InfluxDB on free loopback ports, a sample city "
        "(STATE_DIR/demo/registry.toml), the fleet simulator and the ingester with every rule on; print the "
        "figures every 2 s and each alert as it happens.",
        epilog=examples("cems demo --duration 300 --speed 120", "cems demo --protocol hj212 --stop-services"),
        formatter_class=Formatter,
    )
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    d.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    d.add_argument("--enterprises", type=int, default=12, help="size of the sample fleet (default 12)")
    d.add_argument(
        "--protocol", choices=["json", "hj212", "mixed"], default="mixed", help="what the plants send (default mixed)"
    )
    d.add_argument("--stop-services", action="store_true", help="stop the local services at the end")
    d.set_defaults(func=cmd_demo)


def cmd_demo(a: argparse.Namespace, env: Env) -> int:
    options = DemoOptions(
        duration=a.duration,
        speed=a.speed,
        enterprises=a.enterprises,
        protocol=a.protocol,
        stop_services=a.stop_services,
    )
    return run_demo(options, state_dir(env))
