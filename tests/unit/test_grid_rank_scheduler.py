"""The live township ranking's pieces without the service: which periods a written day (re-)ranks
(:func:`~cems.rules.ranking.periods_to_rank`), the background scheduler with fake query and write functions
(coalescing, waiting for the spool, errors counted and retried, never raised), and the credentials of the
InfluxDB reads it makes (the writer's: v1 Basic, v2 token)."""

from __future__ import annotations

import asyncio
import base64
from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from registries import one_outlet  # tests/registries.py

from cems.engine import EngineOutput
from cems.errors import InfluxQueryError
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.rules.ambient import AmbientDay
from cems.rules.grid import GridOutput
from cems.rules.ranking import RankPeriod, periods_closed_by, periods_to_rank
from cems.service.compliance import ComplianceConfig, ComplianceRuntime
from cems.service.compliance._gridrank import GridRankScheduler
from cems.sinks.influx import InfluxConfig

_days = st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31))


@given(_days)
def test_a_day_closing_ranks_what_it_closes(d: date) -> None:
    assert periods_to_rank([d], d) == periods_closed_by(d)


@given(_days, st.integers(min_value=0, max_value=70))
def test_a_revised_day_re_ranks_its_ended_periods_only(d: date, later: int) -> None:
    closed = d + timedelta(days=later)
    got = periods_to_rank([d, d], closed)
    assert got[0] == RankPeriod.containing("day", d) and len(got) == len(set(got))
    for kind in ("week", "month"):
        p = RankPeriod.containing(kind, d)
        assert (p in got) == (p.last <= closed)


def test_periods_of_several_days() -> None:
    # Sunday 22 November 2026 closes week 47; the 30th closes November; a revision of the 20th re-ranks week 47
    got = periods_to_rank([date(2026, 11, 20), date(2026, 11, 30)], date(2026, 11, 30))
    assert [(p.kind, p.key) for p in got] == [
        ("day", "2026-11-20"), ("week", "2026-W47"), ("day", "2026-11-30"), ("month", "2026-11"),
    ]  # fmt: skip


ROW = {"district": "130602", "kind": "micro_station", "pm25": 45.0, "pm10": 90.0, "so2": 12.0, "no2": 40.0,
       "co": 1.0, "o3_8h": 110.0}  # fmt: skip
DAY = date(2026, 11, 18)  # a Wednesday


class Fake:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.queries = 0
        self.written: list[list[str]] = []

    def query(self, q: str, epoch: str | None) -> list[dict[str, Any]]:
        self.queries += 1
        if self.fail:
            self.fail -= 1
            raise InfluxQueryError("InfluxDB query failed: connection refused")
        lo = int(q.split("time >= ")[1].split()[0]) // 10**9
        t = int(datetime(DAY.year, DAY.month, DAY.day, tzinfo=BEIJING).timestamp())
        if not lo <= t < lo + 7 * 86400:
            return []
        return [ROW | {"time": t, "sensor": s, "township": tw} for s, tw in (("A", "甲"), ("B", "乙"))]

    async def write(self, lines: list[str], stop: asyncio.Event | None) -> bool:
        self.written.append(lines)
        return True


def test_the_scheduler_ranks_each_period_once_per_pass() -> None:
    fake = Fake()
    s = GridRankScheduler(fake.query, fake.write, delay_s=0.01)

    async def go() -> None:
        s.days_written([DAY])
        s.days_written([DAY])  # every sensor's day in one pass: one ranking
        await s.run_once()

    asyncio.run(go())
    assert len(fake.written) == 1 and len(fake.written[0]) == 4  # city and district lists of 甲, 乙
    assert all(line.startswith("grid_rank,") for line in fake.written[0])
    assert (s.stats.grid_rankings, s.stats.grid_rank_points, s.stats.grid_rank_errors, s.due) == (1, 4, 0, [])


def test_errors_are_counted_and_retried_then_given_up() -> None:
    fake = Fake(fail=1)
    s = GridRankScheduler(fake.query, fake.write, retry_s=0.0, attempts=2)

    async def go() -> None:
        s.days_written([DAY])
        await s.run_once()  # fails: counted, kept for a retry
        assert s.stats.grid_rank_errors == 1 and s.due == [RankPeriod.containing("day", DAY)]
        await s.run_once()  # succeeds
        assert s.stats.grid_rankings == 1 and s.due == []
        fake.fail = 5
        s.days_written([DAY])
        await s.run_once()
        await s.run_once()  # second failure: given up

    asyncio.run(go())
    assert (s.stats.grid_rank_errors, s.stats.grid_rank_abandoned, s.due) == (3, 1, [])


def test_ranking_waits_for_the_spool_and_stops_cleanly() -> None:
    fake = Fake()
    ready = [False]
    s = GridRankScheduler(fake.query, fake.write, ready=lambda: ready[0], delay_s=0.01, retry_s=0.05)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(s.run(stop))
        s.days_written([DAY])
        await asyncio.sleep(0.2)
        assert fake.queries == 0 and s.due  # points still spooled: nothing read yet
        ready[0] = True
        for _ in range(100):
            if fake.written:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(go())
    assert len(fake.written) == 1 and s.stats.grid_rankings == 1


def test_reads_carry_the_writers_credentials() -> None:
    v1 = InfluxConfig(token="cems:s3cret", db="cems")
    assert v1.query_headers() == {"Authorization": "Basic " + base64.b64encode(b"cems:s3cret").decode()}
    assert v1.query_db == "cems"
    v2 = InfluxConfig(api="v2", token="tok", bucket="cems-bucket", org="bureau")
    assert (v2.query_headers(), v2.query_db) == ({"Authorization": "Token tok"}, "cems-bucket")
    assert InfluxConfig().query_headers() == {}


def test_what_is_left_at_shutdown_is_logged(caplog: Any) -> None:
    s = GridRankScheduler(Fake().query, Fake().write)
    s.days_written([date(2026, 11, 22)])  # a Sunday: the day and its ISO week
    s.log_left()
    assert "day 2026-11-22, week 2026-W47" in caplog.text and "cems grid rank --write" in caplog.text
    assert "ranked when the ingester starts again" in caplog.text


async def test_rankings_due_survive_a_restart(tmp_path: Any) -> None:
    """The periods a closed grid day makes due are stored with the day (grid_rank_due, same transaction): an
    ingester stopped before ranking them ranks them when it starts again, then forgets them."""
    sensors = "".join(
        f'[[grid_sensor]]\nid = "{s}"\ndistrict = "130602"\ntownship = "{tw}"\nkind = "micro_station"\n'
        for s, tw in (("A", "甲"), ("B", "乙"))
    )
    reg = parse_registry(one_outlet(tail=sensors))
    sunday = date(2026, 11, 22)  # closes its day and ISO week 47
    days = [
        AmbientDay(s, "130602", tw, "micro_station", sunday, {"pm25": 40.0}, {"pm25": 24}, 57, 2, ("pm25",), 1.0)
        for s, tw in (("A", "甲"), ("B", "乙"))
    ]

    async def publish(topic: str, body: bytes) -> None:
        return None

    down, up = Fake(fail=1000), Fake()
    cfg = ComplianceConfig(state_dir=tmp_path, grid_rank_delay_s=0.0, grid_rank_retry_s=0.0)
    rt = ComplianceRuntime(reg, cfg, write=down.write, publish=publish, rank_query=down.query)
    await rt.open()
    try:
        assert await rt._commit(EngineOutput(), None, GridOutput(daily=days))
        assert rt.ranker is not None and [(p.kind, p.key) for p in rt.ranker.due] == [
            ("day", "2026-11-22"), ("week", "2026-W47")
        ]  # fmt: skip
        await rt.ranker.run_once()  # InfluxDB unreachable: still due
        rows = await rt.db.call(lambda c: c.execute("SELECT kind, first, last FROM grid_rank_due").fetchall())
        assert sorted(rows) == [("day", "2026-11-22", "2026-11-22"), ("week", "2026-11-16", "2026-11-22")]
    finally:
        await rt.close()  # stopped before the ranking was done

    rt = ComplianceRuntime(reg, cfg, write=up.write, publish=publish, rank_query=up.query)
    await rt.open()
    try:
        assert rt.ranker is not None and [(p.kind, p.key) for p in rt.ranker.due] == [
            ("day", "2026-11-22"), ("week", "2026-W47")
        ]  # fmt: skip
        await rt.ranker.run_once()
        assert rt.ranker.due == [] and rt.stats.grid_rankings == 2 and up.queries >= 2
        left = await rt.db.call(lambda c: c.execute("SELECT COUNT(*) FROM grid_rank_due").fetchone()[0])
        assert left == 0
    finally:
        await rt.close()
