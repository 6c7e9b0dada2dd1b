"""The service's per-message stages never crash: only clean RejectedMessage results (CI variant of
``python -m cems.devtools.fuzz``, which runs ≥ 1 million inputs)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cems.devtools import fuzz
from cems.registry import parse_registry

REG = parse_registry(fuzz.REGISTRY)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(fuzz._TOPICS), st.binary(max_size=400))
def test_random_bytes_on_any_topic(topic: str, payload: bytes) -> None:
    fuzz.one(REG, topic, payload)  # raises on anything but RejectedMessage


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(fuzz._TOPICS), st.integers(0, 1), st.randoms(use_true_random=False))
def test_mutated_valid_messages(topic: str, which: int, rng: object) -> None:
    import random

    assert isinstance(rng, random.Random)
    fuzz.one(REG, topic, fuzz.mutate(rng, fuzz.seeds()[which]))


def test_seed_messages_are_accepted_and_mutations_mostly_rejected() -> None:
    assert fuzz.one(REG, "cems/v1/MN0001/rtd", fuzz.seeds()[0]) == "ok"
    assert fuzz.one(REG, "cems/v1/MN0001/hj212", fuzz.seeds()[1]) == "ok"
    out = fuzz.run(20_000, seed=1)
    assert sum(out.values()) == 20_000 and out["ok"] < 20_000 and len(out) > 5
