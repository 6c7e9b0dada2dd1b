"""While received messages wait in a backlog, the ingester's clock closes no hour and declares no silence (the
data it would miss are in the backlog): the hour closes when the backlog is judged, or by data time, or after
``clock_hold_max_s`` (issue 20, found by `cems bench --soak`: a lagging ingester used to close hours early and
then revise them batch after batch)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.service.compliance import ComplianceConfig, ComplianceRuntime

REG = parse_registry(one_outlet())
MN = REG.enterprise[0].outlet[0].mn
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)


def minute(i: int, so2: float = 10.0) -> Reading:
    return Reading(MN, Stream.MIN, T0 + timedelta(minutes=i), {
        "a21026": Measurement("a21026", {"Avg": so2}, "N"),
        "a19001": Measurement("a19001", {"Avg": 8.0}, "N"),
    })  # fmt: skip


def runtime(
    tmp_path: Path, now: list[datetime], behind: list[bool], hold_max_s: float
) -> tuple[ComplianceRuntime, list[str]]:
    """A runtime on ``now[0]``'s clock, behind while ``behind[0]``; the lines it writes."""
    lines: list[str] = []

    async def write(batch: list[str], stop: asyncio.Event | None) -> bool:
        lines.extend(batch)
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    cfg = ComplianceConfig(state_dir=tmp_path, clock=lambda: now[0], clock_hold_max_s=hold_max_s)
    return ComplianceRuntime(REG, cfg, write=write, publish=publish, behind=lambda: behind[0]), lines


async def run(tmp_path: Path, hold_max_s: float) -> tuple[list[str], list[str], int]:
    """Minutes 08:00–08:29 judged; the clock at 09:10 (08:00's hour is due) with a backlog; then without."""
    now = [T0 + timedelta(minutes=30)]
    behind = [False]
    rt, lines = runtime(tmp_path, now, behind, hold_max_s)
    await rt.open()
    try:
        info = REG.outlet(MN)
        assert info is not None
        assert await rt.on_batch([(minute(i), info) for i in range(30)], [], None) == []
        now[0] = T0 + timedelta(hours=1, minutes=10)
        behind[0] = True
        await rt.tick()
        while_behind = [ln for ln in lines if ln.startswith(("cems_hourly", "cems_event"))]
        behind[0] = False
        await rt.tick()
        after = [ln for ln in lines if ln.startswith(("cems_hourly", "cems_event"))]
        return while_behind, after, rt.stats.clock_held
    finally:
        await rt.close()


async def test_the_clock_holds_while_a_backlog_waits(tmp_path: Path) -> None:
    while_behind, after, held = await run(tmp_path, 1800.0)
    assert while_behind == [] and held == 1  # neither the hour nor a data interruption while behind
    hour_ms = str(int(T0.timestamp() * 1000))
    assert any(ln.startswith("cems_hourly") and "pollutant=a21026" in ln and ln.endswith(hour_ms) for ln in after)
    assert any("data_interruption" in ln for ln in after)  # the outlet is silent since 08:29


async def test_the_hold_is_bounded(tmp_path: Path) -> None:
    while_behind, _, held = await run(tmp_path, 0.0)
    assert held == 0 and any(ln.startswith("cems_hourly") for ln in while_behind)


async def test_a_held_clock_judges_repair_deadlines_at_the_time_it_holds(tmp_path: Path) -> None:
    """Data that waited in a backlog are judged at the clock the backlog holds, not at the present one: a deadline
    that passed while they waited does not refuse them (the hour of 2026-04-21 09:00 may be repaired until
    2026-05-01 10:00, DOMAIN.md §5; the clock last closed hours at 09:30, the backlog is judged at 11:30)."""
    hour = datetime(2026, 4, 21, 9, 0, tzinfo=BEIJING)
    now = [datetime(2026, 5, 1, 9, 30, tzinfo=BEIJING)]
    behind = [False]
    rt, lines = runtime(tmp_path, now, behind, 1800.0)
    await rt.open()
    try:
        info = REG.outlet(MN)
        assert info is not None
        await rt.tick()  # closes hours with 09:30
        now[0] = datetime(2026, 5, 1, 11, 30, tzinfo=BEIJING)
        behind[0] = True
        await rt.tick()  # held
        back_fill = [Reading(MN, Stream.MIN, hour + timedelta(minutes=i), minute(i).measurements) for i in range(60)]
        assert await rt.on_batch([(r, info) for r in back_fill], [], None) == []
        behind[0] = False
        await rt.tick()
        hour_ms = str(int(hour.timestamp() * 1000))
        assert any(ln.startswith("cems_hourly") and "pollutant=a21026" in ln and ln.endswith(hour_ms) for ln in lines)
        assert rt.engine.late_counts()["late_beyond_window"] == 0
        # the same data once the backlog is judged (the clock no longer held): past the deadline, refused
        assert await rt.on_batch([(r, info) for r in back_fill[:5]], [], None) == []
        assert rt.engine.late_counts()["late_beyond_window"] == 5
    finally:
        await rt.close()
