"""``cems bench --alert-rate``: the alert-latency run at a given rate (two versions compared at the same load)
instead of half the sustained rate measured by the throughput run."""

from __future__ import annotations

import argparse

import pytest

from cems.cli.bench import add_bench_arguments, bench_config
from cems.devtools.bench import BenchConfig
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
