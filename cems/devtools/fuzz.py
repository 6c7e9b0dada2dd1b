"""Long-running fuzz of the service's decode and validate stages: ``python -m cems.devtools.fuzz --count 1000000``.

Feeds random and mutated messages (JSON readings and HJ 212 packets, on valid and invalid topics) through
exactly what the ingester runs per message — :func:`cems.decode.decode_message`, then
:func:`cems.validate.validate` and the line-protocol builder — and fails on anything but a clean
:class:`cems.errors.RejectedMessage`.  Deterministic for a seed.  The CI variant is tests/unit/test_fuzz_service.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from cems.decode import decode_message
from cems.errors import RejectedMessage
from cems.protocol.hj212 import encode
from cems.registry import Registry, parse_registry
from cems.sinks.lineprotocol import reading_line
from cems.validate import validate

REGISTRY = """
[city]
name = "fuzz"
[[district]]
code = "D1"
name = "d"
[[enterprise]]
id = "E1"
name = "e"
district = "D1"
[[enterprise.outlet]]
mn = "MN0001"
name = "o"
profile = "coal_power_ultra_low"
password = "123456"
[[grid_sensor]]
id = "G1"
district = "D1"
"""

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
_TOPICS = [
    "cems/v1/MN0001/rtd",
    "cems/v1/MN0001/min",
    "cems/v1/MN0001/hour",
    "cems/v1/MN0001/hj212",
    "cems/v1/MN0002/rtd",
    "cems/v1//rtd",
    "cems/v1/MN0001",
    "grid/v1/G1",
    "grid/v1/",
    "other/x",
]


def seeds() -> list[bytes]:
    j = {
        "schema": "cems.reading/1",
        "mn": "MN0001",
        "data_time": "2026-11-22T08:00:00+08:00",
        "values": {"a21026": {"Rtd": 12.5, "ZsRtd": 15.0, "Flag": "N"}, "a19001": {"Rtd": 8.0}},
    }
    p = encode(
        cn="2011",
        st="31",
        pw="123456",
        mn="MN0001",
        flag=5,
        data_time="20261122080000",
        values={"a21026": {"Rtd": 12.5, "Flag": "N"}, "a34013": {"Rtd": 3.0, "Flag": "N"}},
        crlf=False,
    )
    return [json.dumps(j).encode(), p.encode()]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(pos, len(b) - 1)]
        elif op == 1:
            b.insert(pos, rng.randrange(256))
        elif op == 2 and b:
            b[min(pos, len(b) - 1)] = rng.choice(b'{}[]",:;=&#-.0123456789NaeE \\\x00\xff')
        elif op == 3:
            b[pos:pos] = rng.choice([b"NaN", b"1e999", b"-1", b"null", b'"x"', b"&&", b";;", b"==", b"##"])
        elif op == 4 and len(b) > 2:
            del b[pos : pos + rng.randint(1, 20)]
        else:
            b[pos:pos] = b[: rng.randint(0, len(b))]
    return bytes(b)


def one(registry: Registry, topic: str, payload: bytes) -> str:
    """Run one message through the per-message stages; return 'ok' or the rejection reason."""
    try:
        d = decode_message(topic, payload, registry)
        if d.grid:
            return "ok"
        r, info = validate(d.reading, registry, NOW)
        reading_line(r, info.enterprise.id, info.district.code)
        return "ok"
    except RejectedMessage as e:
        return e.reason


def run(count: int, seed: int = 0, *, progress: bool = False) -> Counter[str]:
    rng = random.Random(seed)
    registry = parse_registry(REGISTRY)
    base = seeds()
    outcomes: Counter[str] = Counter()
    t0 = time.monotonic()
    for i in range(count):
        r = rng.random()
        payload = rng.randbytes(rng.randint(0, 300)) if r < 0.1 else mutate(rng, rng.choice(base))
        topic = rng.choice(_TOPICS)
        try:
            outcomes[one(registry, topic, payload)] += 1
        except Exception as e:  # the point of the exercise: report and stop
            raise AssertionError(f"input #{i} crashed: topic={topic!r} payload={payload!r}: {e!r}") from e
        if progress and i and i % 100_000 == 0:
            print(
                f"{i:,} inputs, {i / (time.monotonic() - t0):,.0f}/s, {dict(outcomes.most_common(5))}", file=sys.stderr
            )
    return outcomes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cems.devtools.fuzz", description=__doc__)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    out = run(a.count, a.seed, progress=True)
    print(f"{a.count:,} inputs in {time.monotonic() - t0:.0f}s, no crash; outcomes: {dict(out.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
