"""Late data that extend, or move the peak of, an event already closed (issue 12 follow-up): the runtime
stores the revision (SQLite ``events``, the ``cems_event`` point, the same event id, ``late``) and alerts it
once; a redelivery of the same update is neither stored nor alerted again."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from registries import one_outlet  # tests/registries.py

from cems.engine import EngineOutput
from cems.model import BEIJING, SO2
from cems.registry import parse_registry
from cems.rules.events import ExceedanceTracker
from cems.rules.hourly import HourlyRecord
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.compliance._state import load_events

REG = parse_registry(one_outlet())
MN = "MN0001"
H0 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)
H = timedelta(hours=1)


def rec(hour: int, zs: float) -> HourlyRecord:
    return HourlyRecord(
        mn=MN, pollutant=SO2, hour_start=H0 + hour * H, avg=zs, o2_avg=6.0, zs_avg=zs, das_zs_avg=None,
        zs_source="computed", valid=True, flag="N", source="minutes", valid_minutes=60,
        limit=35.0, ref_o2=6.0, profile="coal_power_ultra_low", exceeds=zs > 35.0,
    )  # fmt: skip


async def test_a_late_extension_of_a_closed_event_is_stored_and_alerted_once(tmp_path: Path) -> None:
    written: list[str] = []

    async def write(lines: list[str], stop: asyncio.Event | None) -> bool:
        written.extend(lines)
        return True

    async def publish(topic: str, body: bytes) -> None:
        return None

    rt = ComplianceRuntime(REG, ComplianceConfig(state_dir=tmp_path), write=write, publish=publish)
    await rt.open()
    try:
        tr = ExceedanceTracker(MN, "E001", "130602")
        first = [*tr.on_hour(rec(0, 40.0)), *tr.on_hour(rec(2, 20.0))]  # hour 1 missing: run 08-09, closed
        assert [u.kind for u in first] == ["opened", "closed"]
        assert await rt._commit(EngineOutput(events=first), None)
        eid = first[0].event.event_id

        async def alerts() -> list[dict[str, object]]:
            q = "SELECT body FROM outbox WHERE event_id = ? ORDER BY id"
            rows = await rt.db.call(lambda c: c.execute(q, (eid,)).fetchall())
            return [json.loads(r[0]) for r in rows]

        assert [(a["update"], a["hours"]) for a in await alerts()] == [("opened", 1), ("closed", 1)]

        # hour 1 arrives late (back-filled), exceeding: the closed run is extended to 08-10
        ext = tr.on_hour(rec(1, 50.0))
        assert [(u.kind, u.event.hours, u.event.late) for u in ext] == [("closed", 2, True)]
        written.clear()
        assert await rt._commit(EngineOutput(events=ext), None)
        row = (await rt.db.call(lambda c: load_events(c, [eid])))[eid]
        assert (row.json["hours"], row.json["end"], row.json["peak"], row.json["late"]) == (
            2, (H0 + 2 * H).isoformat(), 50.0, True,
        )  # fmt: skip
        (line,) = [ln for ln in written if ln.startswith("cems_event")]
        assert "hours=2.0," in line and "late=true" in line and f'event_id="{eid}"' in line
        got = await alerts()
        assert [(a["update"], a["hours"], a["late"]) for a in got[2:]] == [("closed", 2, True)]
        assert len({a["alert_id"] for a in got}) == 3  # a new alert id for the revision

        # redelivery of the same update (e.g. after a crash before the engine state was saved): nothing new
        written.clear()
        dup = rt.stats.duplicates_suppressed
        assert await rt._commit(EngineOutput(events=[replace(u) for u in ext]), None)
        assert written == [] and len(await alerts()) == 3 and rt.stats.duplicates_suppressed == dup + 1

        # a late revision that only moves the peak of the closed run: stored and alerted too
        peak = tr.on_hour(rec(0, 70.0))
        assert [(u.kind, u.event.peak, u.event.hours) for u in peak] == [("closed", 70.0, 2)]
        assert await rt._commit(EngineOutput(events=peak), None)
        row = (await rt.db.call(lambda c: load_events(c, [eid])))[eid]
        assert row.json["peak"] == 70.0
        assert [(a["update"], a["peak"]) for a in (await alerts())[3:]] == [("closed", 70.0)]
    finally:
        await rt.close()
