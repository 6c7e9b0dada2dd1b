"""The ``cems`` command line: one module per command group, each with ``add_parser(sub, env)`` and its
``cmd_*`` functions. Only this package (and :mod:`cems.config`) reads argv and the environment; it turns
them into the library's typed settings. No library module imports it.

Exit codes: 0 ok; 1 the work failed (e.g. ``cems bench`` missed a target or lost readings); 2 a usage or
configuration error (argparse's own errors included, and every :class:`~cems.errors.CemsError`); 130
interrupted. Output piped into ``head`` ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from cems import __version__
from cems.cli import (
    aqi,
    bench,
    broker_config,
    console,
    dashboards,
    demo,
    districts,
    events,
    evidence,
    grid,
    hj212,
    marks,
    registry,
    replay,
    report,
    run,
    services,
    state,
    stops,
    warning,
)
from cems.cli._common import Formatter
from cems.cli._logging import configure as configure_logging
from cems.config import Env
from cems.errors import CemsError

__all__ = ["build_parser", "main"]

#: The command groups, in the order ``cems --help`` lists them.
COMMANDS = (
    run,
    events,
    console,
    evidence,
    marks,
    replay,
    report,
    districts,
    state,
    stops,
    warning,
    registry,
    hj212,
    aqi,
    grid,
    services,
    broker_config,
    dashboards,
    demo,
    bench,
)


def build_parser(env: Env | None = None) -> argparse.ArgumentParser:
    e = env or Env()
    p = argparse.ArgumentParser(
        prog="cems",
        description="cems: continuous-emission monitoring ingester (HJ 212 / MQTT → compliance → InfluxDB).",
        epilog="Exit codes: 0 ok, 1 the work failed, 2 usage or configuration error. "
        "`cems COMMAND --help` shows an example of each command.",
        formatter_class=Formatter,
    )
    p.add_argument("--version", action="version", version=f"cems {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=e.get("CEMS_LOG_FORMAT", "text"),
        help="text for people, json for a log shipper (one object per line) [CEMS_LOG_FORMAT]",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub, e)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    env = Env()
    try:
        parser = build_parser(env)
        a = parser.parse_args(argv)
        configure_logging(a.verbose, a.log_format)
        rc: int = a.func(a, env)
        sys.stdout.flush()
        return rc
    except CemsError as e:
        print(f"cems: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`cems hj212 decode big.txt | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
