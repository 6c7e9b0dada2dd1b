"""An outlet moving between ingesters (issue 20 item 3): its state exported from the old owner's SQLite state
(``cems state export --remove``) and imported into the new owner's (``cems state import``) gives the same
hourly results, events and alerts as one ingester that never lost the outlet, and no alert twice."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import many_outlets  # tests/registries.py

from cems.cli import main
from cems.errors import ConfigError, ServiceError
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.registry.shard import Shard, shard_registry
from cems.replay import replay
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.compliance._transfer import export_outlets, import_outlets, outlets_in, stopped_state
from cems.sinks.lineprotocol import hourly_line

CITY = parse_registry(many_outlets(5))
MN = "MN0001"
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=BEIJING)
#: the move: data up to 10:25 (Beijing) reach the old owner, the rest the new one — mid-hour, mid-exceedance
CUT = 145


def so2(i: int) -> float:
    """SO2 exceeding 35 mg/m³ (GB 13223-2011 ultra-low, at 6 % O2) from 09:00 to 11:59, clean around it."""
    return 50.0 + i % 7 if 60 <= i < 240 else 10.0


def readings(n: int = 330) -> list[Reading]:
    """Minute data of MN0001 from 08:00 to 13:29 (the exceedance opens on the old owner, closes on the new one)."""
    return [
        Reading(MN, Stream.MIN, T0 + timedelta(minutes=i), {
            "a21026": Measurement("a21026", {"Avg": so2(i)}, "N"),
            "a19001": Measurement("a19001", {"Avg": 8.0}, "N"),
        })
        for i in range(n)
    ]  # fmt: skip


def recorded(n: int = 330) -> list[str]:
    """The same data as ``cems replay`` reads them (``cems.reading/1`` JSON lines)."""
    return [
        json.dumps({"schema": "cems.reading/1", "mn": MN, "stream": "min",
                    "data_time": (T0 + timedelta(minutes=i)).isoformat(),
                    "values": {"a21026": {"Avg": so2(i), "Flag": "N"}, "a19001": {"Avg": 8.0, "Flag": "N"}}})
        for i in range(n)
    ]  # fmt: skip


class Run:
    """One ingester's compliance runtime over a state directory: its InfluxDB lines and its alerts."""

    def __init__(self, state: Path, shard: Shard | None = None) -> None:
        self.registry = CITY if shard is None else shard_registry(CITY, shard)
        self.state = state
        self.lines: list[str] = []

    async def feed(self, rs: list[Reading]) -> None:
        async def write(lines: list[str], stop: asyncio.Event | None) -> bool:
            self.lines.extend(lines)
            return True

        async def publish(topic: str, body: bytes) -> None:
            return None

        clock = lambda: rs[-1].data_time + timedelta(minutes=1)  # noqa: E731
        rt = ComplianceRuntime(
            self.registry, ComplianceConfig(state_dir=self.state, clock=clock), write=write, publish=publish
        )
        await rt.open()
        try:
            for r in rs:
                info = self.registry.outlet(r.mn)
                assert info is not None  # the shard owns the outlet
                assert await rt.on_batch([(r, info)], [], None) == []
            await rt.shutdown()
        finally:
            await rt.close()

    def hourly(self) -> list[str]:
        return [ln for ln in self.lines if ln.startswith("cems_hourly")]

    def alerts(self) -> list[dict[str, Any]]:
        with stopped_state(self.state) as c:
            return [json.loads(b) for (b,) in c.execute("SELECT body FROM outbox ORDER BY id")]

    def events(self) -> dict[str, dict[str, Any]]:
        with stopped_state(self.state) as c:
            return {e: json.loads(j) for e, j in c.execute("SELECT event_id, json FROM events")}


def owners() -> tuple[Shard, Shard]:
    """A shard of N = 2 and one of N = 3 that both own MN0001 (a resharding from 2 to 3 ingesters)."""
    two = next(s for k in range(2) if (s := Shard(k, 2)).owns(MN))
    three = next(s for k in range(3) if (s := Shard(k, 3)).owns(MN))
    return two, three


async def test_a_moved_outlet_gives_the_results_of_an_unmoved_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rs = readings()
    whole = Run(tmp_path / "whole")
    await whole.feed(rs)
    assert whole.events() and whole.alerts()  # the data do raise an exceedance (else the test proves nothing)

    two, three = owners()
    old, new = Run(tmp_path / "old", two), Run(tmp_path / "new", three)
    await old.feed(rs[:CUT])
    # the move, through the commands an operator runs (both ingesters stopped)
    moved_file = tmp_path / "mn.json"
    argv = ["state", "export", "--state-dir", str(old.state), "--mn", MN, "--remove", "--out", str(moved_file)]
    assert main(argv) == 0
    with stopped_state(old.state) as c:  # removed from the old owner
        assert c.execute("SELECT COUNT(*) FROM outlet_state").fetchone() == (0,)
        assert c.execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    assert main(["state", "import", "--state-dir", str(new.state), str(moved_file)]) == 0
    assert "imported MN0001" in capsys.readouterr().out
    await new.feed(rs[CUT:])

    assert sorted(old.hourly() + new.hourly()) == sorted(whole.hourly())
    assert new.events() == whole.events()
    # and to `cems replay` of all the data (which also closes the last, unfinished hour: left out)
    res = replay(CITY, recorded(), "jsonl")
    e = CITY.enterprise[0]
    replayed = [hourly_line(h, e.id, e.district) for h in res.hourly if h.hour_start < T0 + timedelta(hours=5)]
    assert sorted(old.hourly() + new.hourly()) == sorted(replayed)
    assert new.events() == {ev.event_id: ev.to_json() for ev in res.events}
    assert old.alerts() and new.alerts()  # the run was alerted on both sides of the move
    moved = old.alerts() + new.alerts()
    ids = [a["alert_id"] for a in moved]
    assert len(ids) == len(set(ids)), "an alert sent twice"
    assert sorted(ids) == sorted(a["alert_id"] for a in whole.alerts())


async def test_without_the_import_the_new_owner_starts_afresh_and_differs(tmp_path: Path) -> None:
    """The control: the new owner without the old one's state does not reproduce the unmoved run."""
    rs = readings()
    whole = Run(tmp_path / "whole")
    await whole.feed(rs)
    two, three = owners()
    old, new = Run(tmp_path / "old", two), Run(tmp_path / "new", three)
    await old.feed(rs[:CUT])
    await new.feed(rs[CUT:])
    assert sorted(old.hourly() + new.hourly()) != sorted(whole.hourly()) or new.events() != whole.events()


async def test_import_is_refused_over_existing_state_and_export_of_an_unknown_outlet(tmp_path: Path) -> None:
    rs = readings(90)
    a, b = Run(tmp_path / "a"), Run(tmp_path / "b")
    await a.feed(rs)
    await b.feed(rs)
    with stopped_state(a.state) as c:
        doc = export_outlets(c, [MN])
        with pytest.raises(ConfigError, match="no engine state"):
            export_outlets(c, ["MN9999"])
    with stopped_state(b.state) as c, pytest.raises(ConfigError, match="already has state"):
        import_outlets(c, doc)
    with stopped_state(b.state) as c, pytest.raises(ConfigError, match="format"):
        import_outlets(c, {"format": "other"})


def test_a_running_ingesters_state_is_refused(tmp_path: Path) -> None:
    with stopped_state(tmp_path), pytest.raises(ServiceError, match="in use"), stopped_state(tmp_path):
        pass


def all_readings(n: int = 330) -> list[Reading]:
    """The minute data of every outlet of the city (MN0001, MN1000 … MN1004), in data-time order."""
    mns = [o.mn for e in CITY.enterprise for o in e.outlet]
    return [Reading(mn, r.stream, r.data_time, r.measurements) for r in readings(n) for mn in mns]


async def test_resharding_two_to_three_with_state_adopt_gives_the_unmoved_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ingesters (shards of N = 2, STATE_DIR/ingester-s0 and -s1) ingest every outlet up to 10:25; all stop;
    `cems state adopt --shard K/3` runs for K = 0, 1, 2 with the default directories; the three go on. The
    city's hourly lines, events and alerts equal one ingester's that never resharded, none alerted twice."""
    rs = all_readings()
    whole = Run(tmp_path / "whole")
    await whole.feed(rs)
    assert len({e["mn"] for e in whole.events().values()}) == len({r.mn for r in rs}) == 6  # each has its exceedance

    base = tmp_path / "state"
    monkeypatch.setenv("CEMS_STATE_DIR", str(base))
    cut = T0 + timedelta(minutes=CUT)
    old = [Run(base / f"ingester-s{k}", Shard(k, 2)) for k in range(2)]
    for run in old:
        await run.feed([r for r in rs if r.data_time < cut and run.registry.outlet(r.mn) is not None])
    lines_before = [ln for run in old for ln in run.hourly()]
    alerts_before = [a for run in old for a in run.alerts()]

    # a dry run moves nothing
    assert main(["state", "adopt", "--shard", "2/3", "--dry-run"]) == 0
    assert "would move" in capsys.readouterr().out
    assert not (base / "ingester-s2").exists() or not Run(base / "ingester-s2").events()
    moved = 0
    for k in range(3):
        assert main(["state", "adopt", "--shard", f"{k}/3"]) == 0
        out = capsys.readouterr().out
        moved += sum(line.startswith("moved ") for line in out.splitlines())
    assert moved >= 2  # outlets did change owner (else the test proves nothing)
    new = [Run(base / f"ingester-s{k}", Shard(k, 3)) for k in range(3)]
    for k, run in enumerate(new):
        with stopped_state(run.state) as c:  # each holds exactly its own outlets now
            assert all(Shard(k, 3).owns(mn) for (mn,) in c.execute("SELECT mn FROM outlet_state"))
            assert all(Shard(k, 3).owns(mn) for (mn,) in c.execute("SELECT mn FROM events"))
    # a second adoption finds nothing left to move
    assert main(["state", "adopt", "--shard", "0/3"]) == 0
    assert "0 outlet(s) moved" in capsys.readouterr().out

    for run in new:
        run.lines.clear()
        await run.feed([r for r in rs if r.data_time >= cut and run.registry.outlet(r.mn) is not None])
    assert sorted(lines_before + [ln for run in new for ln in run.hourly()]) == sorted(whole.hourly())
    events: dict[str, dict[str, Any]] = {}
    for run in new:
        events |= run.events()
    assert events == whole.events()
    # alerts: the old owners' outboxes keep theirs (sent when they ran); the new ones add only new transitions
    sent = alerts_before + [a for run in new for a in run.alerts() if a not in alerts_before]
    ids = [a["alert_id"] for a in sent]
    assert len(ids) == len(set(ids)), "an alert sent twice"
    assert sorted(ids) == sorted(a["alert_id"] for a in whole.alerts())


def test_adopt_refuses_two_histories_of_one_outlet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rs = readings(90)
    a, b, c = Run(tmp_path / "a"), Run(tmp_path / "b"), Run(tmp_path / "c")
    asyncio.run(a.feed(rs))
    asyncio.run(b.feed(rs[:60]))
    owner = next(s for k in range(2) if (s := Shard(k, 2)).owns(MN))
    argv = ["state", "adopt", "--shard", str(owner), "--state-dir", str(c.state), "--from", str(a.state)]
    assert main([*argv, "--from", str(b.state)]) != 0
    assert "has state in both" in capsys.readouterr().err
    with stopped_state(a.state) as conn:  # refused before anything moved
        assert outlets_in(conn) == [MN]
    # an adoption interrupted after the import (the outlet in both, the same rows) is completed
    with stopped_state(a.state) as src, stopped_state(c.state) as dst:
        import_outlets(dst, export_outlets(src, [MN]))
    assert main(argv) == 0
    with stopped_state(a.state) as src, stopped_state(c.state) as dst:
        assert outlets_in(src) == [] and outlets_in(dst) == [MN]
    # but a different history here and there is refused
    assert main(["state", "adopt", "--shard", str(owner), "--state-dir", str(c.state), "--from", str(b.state)]) != 0
    assert "they differ" in capsys.readouterr().err
