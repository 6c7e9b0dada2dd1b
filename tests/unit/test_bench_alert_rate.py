"""``cems bench --alert-rate``: the alert-latency run at a given rate (two versions compared at the same load)
instead of half the sustained rate measured by the throughput run; and it starts with the database quiet."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from cems.cli.bench import add_bench_arguments, bench_config
from cems.devtools.bench import BenchConfig
from cems.devtools.bench._run import Bench
from cems.errors import CemsError


def parse(*argv: str) -> BenchConfig:
    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    return bench_config(p.parse_args(list(argv)))


def test_the_alert_rate_is_given_or_left_to_the_throughput_run() -> None:
    assert parse("--alert-rate", "1500").alert_rate == 1500.0
    assert parse().alert_rate is None


@pytest.mark.parametrize("rate", [0.0, -5.0])
def test_the_alert_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(CemsError, match="--alert-rate"):
        BenchConfig.create(alert_rate=rate)


def test_the_alert_run_waits_for_the_database_to_be_quiet_and_no_longer_than_its_limit(tmp_path: Path) -> None:
    """The alert-latency run starts once InfluxDB has been idle for a few seconds in a row (its compactions of the
    throughput run's burst over), and does not wait past the limit for a database that stays busy."""
    bench = Bench(BenchConfig.create(), tmp_path, lambda _m: None)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        bench.influx_pid = idle.pid
        assert 2.0 <= bench._database_quiet(limit_s=10.0, run_s=2) < 5.0
        bench.influx_pid = busy.pid
        assert bench._database_quiet(limit_s=3.0, run_s=2) >= 3.0
    finally:
        for p in (idle, busy):
            p.kill()
            p.wait()
