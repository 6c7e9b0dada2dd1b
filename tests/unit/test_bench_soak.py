"""``cems bench --soak``'s pure parts: the exceedance schedule of the load generator and the drift figures
(the run itself is tests/e2e/test_bench.py)."""

from __future__ import annotations

import time

import pytest

from cems.devtools.bench._data import accelerated_clock
from cems.devtools.bench._soak import Sample, drift
from cems.devtools.bench.loadgen import soak_exceeds


def test_every_nth_outlet_exceeds_three_rounds_in_a_row_per_period() -> None:
    rounds = [r for r in range(90) if soak_exceeds(50, r, 50, 30)]
    assert rounds == [0, 1, 29, 30, 31, 59, 60, 61, 89]  # staggered by the outlet: (r + 1) % 30 < 3
    assert not any(soak_exceeds(i, r, 50, 30) for i in (1, 49, 51) for r in range(90))
    assert not any(soak_exceeds(0, r, 0, 30) for r in range(90))


def _sample(t: float, rss: float) -> Sample:
    return Sample(t, 0, 0, 0, 0, None, None, None, None, rss, 0, None)


def test_drift_compares_the_last_quarter_with_the_first() -> None:
    samples = [_sample(10.0 * (k + 1), 100.0 + k) for k in range(8)]  # 10 … 80 s
    # (cems CPU s, cems messages, bare consumer CPU s, bare consumer messages) per interval
    cpu = (
        [(0.5, 10_000.0, 0.2, 10_000.0)] * 2
        + [(0.6, 10_000.0, 0.2, 10_000.0)] * 4
        + [(0.75, 10_000.0, 0.25, 10_000.0)] * 2
    )
    d = drift(samples, cpu)
    assert d["cems_cpu_us_per_msg_first_quarter"] == pytest.approx(50.0)  # samples at 10 and 20 s
    assert d["cems_cpu_us_per_msg_last_quarter"] == pytest.approx(75.0)  # samples at 70 and 80 s
    assert d["cpu_per_msg_drift"] == pytest.approx(1.5)
    assert d["ratio_first_quarter"] == pytest.approx(2.5) and d["ratio_last_quarter"] == pytest.approx(3.0)
    assert d["ratio_drift"] == pytest.approx(1.2)
    assert d["rss_mb_end_of_first_quarter"] == 101.0 and d["rss_mb_end"] == 107.0
    assert d["rss_growth_mb"] == pytest.approx(6.0)


def test_too_few_samples_give_no_drift() -> None:
    assert "note" in drift([_sample(1.0, 1.0)] * 3, [(0.0, 0.0, 0.0, 0.0)] * 3)


def test_the_accelerated_clock_reads_data_at_wall_and_runs_speed_times_faster() -> None:
    wall = time.time()
    clock = accelerated_clock(f"{wall},{wall - 86_400},30")
    a = clock().timestamp()
    time.sleep(0.2)
    b = clock().timestamp()
    assert wall - 86_400 <= a < wall - 86_400 + 30 * 5  # the start of the data time, ± a loaded machine
    assert 30 * 0.2 <= b - a < 30 * 5
    for bad in ("1,2", "1,2,0", "1,2,-3", "a,b,c", "1,2,nan"):
        with pytest.raises(ValueError):
            accelerated_clock(bad)
