"""``cems bench``'s verdicts use issue 20's targets: CPU per message ≤ 2.5× the bare consumer's, alert p99 ≤
0.5 s at half the sustained rate, peak RSS ≤ 512 MB at 100 000 outlets."""

from __future__ import annotations

from typing import Any

from cems.devtools.bench._run import evaluate


def _verdicts(fig: dict[str, Any]) -> dict[str, str]:
    return {name: result for name, _value, _target, result in evaluate(fig)}


def test_targets_met_pass() -> None:
    v = _verdicts({"lost": 0, "cpu_per_msg_vs_baseline": 2.5, "alert_latency_p99_s": 0.5, "rss_mb": {"100000": 512.0}})
    assert v["cpu_per_msg_vs_baseline"] == "PASS"
    assert v["alert_latency_p99_s"] == "PASS"
    assert v["rss_mb (100,000 outlets)"] == "PASS"


def test_targets_missed_fail() -> None:
    v = _verdicts(
        {
            "lost": 0,
            "cpu_per_msg_vs_baseline": 2.51,
            "alert_latency_p99_s": 0.501,
            "rss_mb": {"10000": 600.0, "100000": 546.2},
        }
    )
    assert v["cpu_per_msg_vs_baseline"] == "FAIL"
    assert v["alert_latency_p99_s"] == "FAIL"
    assert v["rss_mb (100,000 outlets)"] == "FAIL"
    assert v["rss_mb (10,000 outlets)"] == "-"  # no target below 100 000 outlets


def test_unmeasured_figures_have_no_verdict() -> None:
    v = _verdicts({"lost": 0})
    assert v["cpu_per_msg_vs_baseline"] == "-"
    assert v["alert_latency_p99_s"] == "-"


def test_the_month_end_memory_is_judged_against_the_same_target() -> None:
    v = _verdicts({"rss_mb": {"100000": 490.0}, "rss_mb_month_end": {"10000": 90.0, "100000": 530.0}})
    assert v["rss_mb (100,000 outlets)"] == "PASS"
    assert v["rss_mb at a month's end (100,000 outlets)"] == "FAIL"
    assert v["rss_mb at a month's end (10,000 outlets)"] == "-"
    assert _verdicts({"rss_mb_month_end": {"100000": 511.0}})["rss_mb at a month's end (100,000 outlets)"] == "PASS"


def test_the_month_end_option_reaches_the_config_and_the_cli() -> None:
    import argparse

    from cems.cli.bench import add_bench_arguments, bench_config

    p = argparse.ArgumentParser()
    add_bench_arguments(p)
    assert bench_config(p.parse_args(["--rss-month-end"])).rss_month_end
    assert not bench_config(p.parse_args([])).rss_month_end
