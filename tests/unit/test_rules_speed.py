"""Issue 20 (rules speed): the faster hour building gives exactly what the former code gave."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import pytest

from cems.registry import Outlet
from cems.rules import hourly
from cems.rules.cadence import hour_cadence
from cems.rules.hourly import _LOWER_BOUND, MIN_VALID_MINUTES_PER_HOUR, MIN_VALUES_PER_MINUTE, N_FLAG_SHARE


def _reference_rtd_value(agg: hourly.OutletHourly, d: dict[int, tuple[float, int]]) -> tuple[object, ...]:
    """The real-time hour value as computed before issue 20's speed work (a copy of the former code)."""
    cadence = hour_cadence(d, agg._rtd_hint)
    if cadence > 60 and agg._need is None:
        return agg._minutes_value(d, min(cadence, 3600), hourly.SOURCE_REALTIME)
    minutes: dict[int, list[float]] = {}
    for s, (v, ok) in d.items():
        acc = minutes.get(s // 60)
        if acc is None:
            acc = minutes[s // 60] = [0.0, 0.0, 0.0, 0.0]
        acc[0] += 1.0
        if ok:
            acc[1] += 1.0
            acc[2] += v
            if ok == _LOWER_BOUND:
                acc[3] += 1.0
    need = agg._need or min(MIN_VALUES_PER_MINUTE, max(1, 60 // cadence))
    valid_minutes = 0
    wsum = 0.0
    lower_bound = False
    for total, n, s_, n_t in minutes.values():
        if n >= need and n >= N_FLAG_SHARE * total:
            valid_minutes += 1
            wsum += s_ / n
            lower_bound = lower_bound or n_t > 0
    valid = valid_minutes >= MIN_VALID_MINUTES_PER_HOUR
    avg = wsum / valid_minutes if valid_minutes else None
    return (avg, valid, hourly._hour_flag(valid, lower_bound), hourly.SOURCE_REALTIME, valid_minutes, None)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Equal, bit for bit (the sign of a zero, NaN)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if math.copysign(1.0, x) != math.copysign(1.0, y) or (x != y and not (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


@pytest.mark.parametrize("need", [None, 1, 3])
@pytest.mark.parametrize("hint", [5, 30, 60, 90])
def test_rtd_value_equals_the_former_code(need: int | None, hint: int) -> None:
    rng = random.Random(hash((need, hint)) & 0xFFFF)
    outlet = Outlet(mn="T0000001", name="t", profile="boiler_coal_new", rtd_interval_s=hint)
    agg = hourly.OutletHourly(outlet, min_rtd_per_minute=need, lateness=timedelta(0))
    for _ in range(400):
        step = rng.choice([1, 5, 10, 20, 30, 59, 60, 61, 90, 120, 600])
        n = rng.choice([1, 2, 3, 5, 30, 60, 200, 720])
        secs = sorted({min(3599, int(k * step + rng.choice([0, 0, 0, rng.randint(-20, 20)]))) % 3600 for k in range(n)})
        rng.shuffle(secs)  # arrival order
        d: dict[int, tuple[float, int]] = {}
        for s in secs:
            r = rng.random()
            ok = 1 if r < 0.8 else 2 if r < 0.9 else 0
            v = rng.choice([0.0, -0.0, rng.uniform(-5, 500), rng.uniform(0, 1e-3)]) if ok else math.nan
            d[s] = (v, ok)
        assert _same(agg._rtd_value(d), _reference_rtd_value(agg, d)), (need, hint, d)
