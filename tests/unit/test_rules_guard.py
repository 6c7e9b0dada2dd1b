"""A bug the rules meet on one reading must not stop ingestion or replay: that reading is logged, counted
(``rules_errors``) and left unjudged; the readings beside it are judged as usual."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import TWO_OUTLETS, minute_packet  # tests/registries.py

from cems.engine import ComplianceEngine
from cems.model import BEIJING, Reading
from cems.registry import OutletInfo, parse_registry
from cems.replay import load_readings, replay
from cems.service.compliance import ComplianceConfig, ComplianceRuntime

REG = parse_registry(TWO_OUTLETS)
H8 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)

minute = minute_packet


LINES = [minute(mn, H8 + timedelta(minutes=i), 20.0) for i in range(60) for mn in ("MN1", "MN2")]
LINES.append(minute("MN1", H8 + timedelta(hours=1), 20.0))  # closes hour 08:00 in replay
LINES.append(minute("MN2", H8 + timedelta(hours=1), 20.0))


@pytest.fixture
def broken_for_mn2(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ComplianceEngine.on_reading

    def on_reading(
        self: ComplianceEngine, reading: Reading, info: OutletInfo | None = None, *, now: datetime | None = None
    ) -> Any:
        if reading.mn == "MN2":
            raise ZeroDivisionError("a bug in the rules")
        return real(self, reading, info, now=now)

    real_batch = ComplianceEngine.on_readings

    def on_readings(
        self: ComplianceEngine, items: list[tuple[Reading, OutletInfo]], *, now: datetime | None = None
    ) -> Any:
        if any(r.mn == "MN2" for r, _ in items):
            raise ZeroDivisionError("a bug in the rules")
        return real_batch(self, items, now=now)

    monkeypatch.setattr(ComplianceEngine, "on_reading", on_reading)
    monkeypatch.setattr(ComplianceEngine, "on_readings", on_readings)


def test_replay_goes_on_past_a_rules_bug(broken_for_mn2: None) -> None:
    res = replay(REG, LINES, "hj212")
    assert res.rules_errors == 61
    assert {h.mn for h in res.hourly} == {"MN1"}  # MN1 is judged as usual


def test_live_rules_judge_the_rest_of_the_batch(broken_for_mn2: None, tmp_path: Path) -> None:
    async def noop_write(lines: list[str], stop: asyncio.Event | None) -> bool:
        return True

    async def noop_publish(topic: str, body: bytes) -> None:
        return None

    # the service's clock when it judges the batch: the data's hour (data past their repair deadline at it would
    # be refused, late_beyond_window)
    config = ComplianceConfig(state_dir=tmp_path, clock=lambda: H8 + timedelta(hours=1))
    runtime = ComplianceRuntime(REG, config, write=noop_write, publish=noop_publish)
    runtime._judge(load_readings(REG, LINES, "hj212"))
    assert runtime.stats.rules_errors == 61
    closed = runtime.engine.on_clock(H8 + timedelta(hours=2))  # live: the clock emits the hour
    assert {h.mn for h in closed.hourly} == {"MN1"}
