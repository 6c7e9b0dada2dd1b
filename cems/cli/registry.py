"""``cems registry check``: validate a registry file, every problem with its TOML location."""

from __future__ import annotations

import argparse

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.registry import load_registry


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    g = sub.add_parser(
        "registry",
        help="validate a registry file",
        epilog=examples("cems registry check deploy/registry.toml"),
        formatter_class=Formatter,
    )
    g.add_argument("action", choices=["check"], help="check: load and validate; exit 2 with every problem listed")
    g.add_argument("config", help="registry TOML")
    g.set_defaults(func=cmd_registry_check)


def cmd_registry_check(a: argparse.Namespace, env: Env) -> int:
    r = load_registry(a.config)
    n = len(r.outlets())
    print(
        f"{a.config}: OK — {len(r.district)} districts, {len(r.enterprise)} enterprises, {n} outlets, "
        f"{len(r.grid_sensor)} grid sensors"
    )
    return 0
