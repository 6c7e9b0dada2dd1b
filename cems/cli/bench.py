"""``cems bench``: the ingester measured against the broker's, a bare consumer's and InfluxDB's limits on this
machine (docs/benchmark.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.errors import ConfigError

if TYPE_CHECKING:
    from cems.devtools.bench import BenchConfig


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark against the broker's and a bare Python consumer's limits (docs/benchmark.md)",
        description="Measure cems against this machine's limits. Exit 0: every target met (a --smoke run "
        "judges only that nothing was lost); 1: readings lost or a target missed; 2: set-up error. "
        "--soak MINUTES instead runs `cems run` under a steady live load for that long and prints its CPU per "
        "message (and the ratio to a bare consumer receiving the same stream) and RSS every --soak-interval "
        "seconds, then the drift (last quarter ÷ first); exit 0 when nothing was lost, 1 otherwise.",
        epilog=examples(
            "cems bench --smoke",
            "cems bench --json bench.json",
            "cems bench --soak 60 --soak-rate 3000 --json soak.json",
        ),
        formatter_class=Formatter,
    )
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--outlets", type=int, default=None, help="outlets of the throughput and alert runs (2000; smoke 20)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load per throughput/alert run (sets the backlog size, at most 95 000 messages) (30; smoke 2)",
    )
    p.add_argument("--messages", type=int, default=None, help="backlog size of the throughput runs (overrides)")
    p.add_argument(
        "--rss-outlets",
        default=None,
        help="comma-separated registry sizes for the memory runs (default 10000,100000; smoke 200,1000)",
    )
    p.add_argument(
        "--rss-month-end",
        action="store_true",
        help="also each memory run with the rate counter holding a month's end of counted hours (two months of every "
        "outlet, 1 in 20 with odd hours): the figure the 512 MB target must hold at",
    )
    p.add_argument("--replay-days", type=int, default=None, help="days of minute-by-minute HJ 212 to replay (30)")
    p.add_argument(
        "--alert-rate",
        type=float,
        default=None,
        help="messages/s of the alert-latency run (default: half the sustained rate of the throughput run); "
        "fix it to compare two versions at the same load",
    )
    p.add_argument("--json", dest="json_file", default=None, help="write the figures to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark works (well under 1 min)")
    p.add_argument(
        "--skip", default="", help="comma-separated parts to skip: broker,baseline,database,cems,alert,rss,replay"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary state directory (logs, data)")
    p.add_argument("--profile", default=None, help="py-spy raw profile of `cems run` during the throughput run")
    p.add_argument("--cems-arg", action="append", default=[], help="extra argument passed to `cems run` (repeatable)")
    s = p.add_argument_group('soak mode (docs/benchmark.md, "Soak mode")')
    s.add_argument(
        "--soak", type=float, default=None, metavar="MINUTES", help="run the soak mode for this many minutes"
    )
    s.add_argument(
        "--soak-rate",
        type=float,
        default=None,
        help="messages/s of the soak (default: half the sustained rate, measured first by a throughput run)",
    )
    s.add_argument("--soak-interval", type=float, default=None, help="seconds between samples (30; smoke 2)")
    s.add_argument(
        "--soak-speed",
        type=float,
        default=None,
        help="data time and the rules' clock run this many times the wall clock (default: 30 × rate ÷ outlets, "
        "at least 1: each outlet every 30 s of data time)",
    )


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected comma-separated integers") from None


def bench_config(a: argparse.Namespace) -> BenchConfig:
    # imported here: the benchmark's modules (≈ 2 MB) are not loaded by the other commands, `cems run` included
    from cems.devtools.bench import BenchConfig

    return BenchConfig.create(
        smoke=a.smoke,
        outlets=a.outlets,
        duration=a.duration,
        messages=a.messages,
        rss_outlets=_ints(a.rss_outlets, "--rss-outlets"),
        replay_days=a.replay_days,
        skip=[s.strip() for s in a.skip.split(",") if s.strip()],
        keep=a.keep,
        profile=a.profile,
        cems_args=a.cems_arg,
        soak_minutes=a.soak,
        soak_rate=a.soak_rate,
        soak_interval=a.soak_interval,
        soak_speed=a.soak_speed,
        alert_rate=a.alert_rate,
        rss_month_end=a.rss_month_end,
    )


def cmd_bench(a: argparse.Namespace, env: Env) -> int:
    from cems.devtools.bench import run_bench, run_soak

    cfg = bench_config(a)
    if cfg.soak_minutes is not None:
        return run_soak(cfg, a.json_file)
    return run_bench(cfg, a.json_file)
