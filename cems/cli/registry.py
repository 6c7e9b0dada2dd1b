"""``cems registry check``: validate a registry file, every problem with its TOML location."""

from __future__ import annotations

import argparse
import sys

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.errors import RegistryError
from cems.registry import load_registry, missing_credentials, registry_warnings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    g = sub.add_parser(
        "registry",
        help="validate a registry file",
        epilog=examples("cems registry check deploy/registry.toml"),
        formatter_class=Formatter,
    )
    g.add_argument(
        "action",
        choices=["check"],
        help="check: load and validate; exit 2 with every problem listed; warnings (e.g. a dated profile change "
        "that ends an explicit ref_o2, values still to verify) on stderr, exit 0",
    )
    g.add_argument("config", help="registry TOML")
    g.add_argument(
        "--no-credentials",
        action="store_true",
        help="do not check that every password_env variable is set here (checking on a machine without secrets)",
    )
    g.set_defaults(func=cmd_registry_check)


def cmd_registry_check(a: argparse.Namespace, env: Env) -> int:
    r = load_registry(a.config)
    if not a.no_credentials:
        missing = missing_credentials(r, env.values)
        if missing:  # what `cems run` and the bridge would refuse to start with
            raise RegistryError(a.config, [f"{m} (cems run and the bridge refuse to start)" for m in missing])
    warnings = registry_warnings(r)
    for w in warnings:
        print(f"{a.config}: warning: {w}", file=sys.stderr)
    n = len(r.outlets())
    print(
        f"{a.config}: OK — {len(r.district)} districts, {len(r.enterprise)} enterprises, {n} outlets, "
        f"{len(r.grid_sensor)} grid sensors"
        + (f", {lines} emergency-list lines" if (lines := sum(len(e.line) for e in r.enterprise)) else "")
        + (f", {len(warnings)} warning(s) above" if warnings else "")
    )
    return 0
