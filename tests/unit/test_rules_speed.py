"""Issue 20 (rules speed): the faster hour building gives exactly what the former code gave."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

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


def _reference_pack(acc: hourly._HourAcc) -> bytes:
    """:func:`cems.rules.hourly.pack_hour` before issue 20's speed work (a copy of the former code)."""
    import json
    import zlib
    from array import array

    head: dict[str, Any] = {"d": {c: list(v) for c, v in acc.das.items()}, "m": [], "r": []}
    body = bytearray()
    for key, subs in (("m", acc.mins), ("r", acc.rtd)):
        for code, d in subs.items():
            secs = sorted(d)
            head[key].append([code, len(secs)])
            a_secs, a_vals = array("H", secs), array("d", [d[s][0] for s in secs])
            body += a_secs.tobytes()
            body += a_vals.tobytes()
            body += bytes(d[s][1] for s in secs)
    raw = json.dumps(head, separators=(",", ":")).encode()
    return bytes([1]) + zlib.compress(len(raw).to_bytes(4, "little") + raw + bytes(body), 1)


def _random_hour(rng: random.Random) -> hourly._HourAcc:
    acc = hourly._HourAcc()
    if rng.random() < 0.3:
        acc.das = {"a21026": (rng.uniform(0, 50), None, "N"), "a19001": (None, None, "D")}
    for kind in ("rtd", "mins"):
        if rng.random() < 0.3:
            continue
        codes = rng.sample(["a21026", "a21002", "a34013", "a19001", "a00000", "a01012"], rng.randint(1, 6))
        for _ in range(rng.randint(1, 400)):  # arrival order, re-sent seconds included
            ok = rng.choice([0, 1, 1, 1, 2])
            v = math.nan if ok == 0 and rng.random() < 0.5 else rng.choice([-0.0, rng.uniform(-1, 900)])
            acc.add(kind, rng.choice(codes), rng.randrange(3600), v, ok)
    return acc


def test_pack_and_unpack_equal_the_former_code() -> None:
    rng = random.Random(20)
    for _ in range(300):
        acc = _random_hour(rng)
        data = hourly.pack_hour(acc)
        assert data == _reference_pack(acc)
        back = hourly.unpack_hour(data)
        # the former unpack: every sub-value added one by one, code after code, in header order
        want = hourly._HourAcc()
        want.das = back.das
        for kind, subs in (("mins", acc.mins), ("rtd", acc.rtd)):
            for code, d in subs.items():
                for s in sorted(d):
                    want.add(kind, code, s, *d[s])
        for name in ("mins_codes", "rtd_codes"):
            assert getattr(back, name) == getattr(want, name)
        for name in ("mins_log", "rtd_log"):
            got, exp = getattr(back, name), getattr(want, name)
            assert (got is None and exp is None) or (
                got is not None and exp is not None and got.tobytes() == exp.tobytes()
            )
        assert dict(back.das) == dict(acc.das)


def _reference_correct(c: float, o2: float, ref: float, max_o2: float) -> float | None:
    """:func:`cems.rules.o2.correct` before issue 20's speed work."""
    if not (math.isfinite(c) and math.isfinite(o2) and math.isfinite(ref)):
        return None
    if o2 < 0.0 or o2 >= 21.0 or o2 > max_o2:
        return None
    if ref < 0.0 or ref >= 21.0:
        return None
    return c * (21.0 - ref) / (21.0 - o2)


def test_correct_equals_the_former_code() -> None:
    from cems.rules.o2 import correct

    specials = [math.nan, math.inf, -math.inf, -0.0, 0.0, 21.0, 19.5, 20.999, -1e-9, 1e308, -5.0]
    rng = random.Random(3)
    for _ in range(20000):
        c = rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-10, 900)
        o2 = rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-1, 22)
        ref = rng.choice([*specials, 3.0, 6.0, 9.0, 16.0])
        max_o2 = rng.choice([19.5, 21.0, 15.0, math.nan])
        got, want = correct(c, o2, ref, max_o2=max_o2), _reference_correct(c, o2, ref, max_o2)
        assert (got is None and want is None) or (got is not None and want is not None and _same((got,), (want,))), (
            c,
            o2,
            ref,
            max_o2,
        )


def test_limit_lookups_without_dated_changes_equal_limit_at() -> None:
    from datetime import datetime

    from cems.model import BEIJING
    from cems.rules.limits import LimitSchedule, limit_at, ref_o2_at

    outlet = Outlet(mn="T0000002", name="t", profile="boiler_coal_new", limits={"a21026": 35.0})
    sched = LimitSchedule(outlet)
    for code in ("a21026", "a21002", "a34013", "a99999", "a21026"):
        for t in (datetime(2020, 1, 1, tzinfo=BEIJING), datetime(2026, 6, 1)):
            assert sched.at(code, t) == limit_at(outlet, code, t)
            al = limit_at(outlet, code, t)
            want = (ref_o2_at(outlet, t), None) if al is None else (al.ref_o2, al.limit)
            assert sched.ref_and_limit(code, t) == want


def test_replay_reorder_buffer_releases_what_one_heap_released() -> None:
    """``cems replay``'s buffer (a FIFO for in-order readings beside a heap) gives the order of one heap."""
    import heapq
    from datetime import datetime

    from cems.model import BEIJING, Reading, Stream
    from cems.replay import _in_order

    def reference(items: list[tuple[Reading, Any]], window: int) -> list[list[int]]:
        """The former buffer: one heap of (time, position)."""
        heap: list[tuple[float, int]] = []
        out: list[list[int]] = []

        def run() -> list[int]:
            t, k = heapq.heappop(heap)
            got = [k]
            while heap and heap[0][0] == t:
                got.append(heapq.heappop(heap)[1])
            return got

        for seq, (r, _) in enumerate(items):
            heapq.heappush(heap, (r.data_time.timestamp(), seq))
            if len(heap) > window:
                out.append(run())
        while heap:
            out.append(run())
        return out

    rng = random.Random(5)
    t0 = datetime(2026, 3, 1, tzinfo=BEIJING).timestamp()
    for _ in range(60):
        n = rng.randint(1, 300)
        times = sorted(rng.randrange(0, 200) * 30 for _ in range(n))
        for _ in range(rng.randint(0, n)):  # some late, some early, some shuffled
            i, j = rng.randrange(n), rng.randrange(n)
            times[i], times[j] = times[j], times[i]
        # one outlet per reading: merge_parts leaves each run's readings apart, so a run is their positions
        items = [
            (
                Reading(
                    mn=f"M{k:04d}",
                    stream=Stream.RTD,
                    data_time=datetime.fromtimestamp(t0 + t, BEIJING),
                    measurements={},
                ),
                None,
            )
            for k, t in enumerate(times)
        ]
        pos = {id(r): k for k, (r, _) in enumerate(items)}
        for window in (1, 2, 7, 50, 1000):
            got = [[pos[id(r)] for r, _ in run] for run in _in_order(items, window)]  # type: ignore[arg-type]
            assert got == reference(items, window), (window, times)
