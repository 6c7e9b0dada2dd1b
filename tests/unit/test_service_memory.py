"""Memory of the ingest service at 100 000 outlets (issue 20): the ``cems_reading`` prefix made without a cache by
outlet, the duplicate window kept as a set and a deque, ``last_data_time`` keyed by the registry's MN string, and a
written batch's lines and evidence dropped before its rules.  These check that what is written and what is judged a
duplicate are the same as before; and the live ``cems_rate`` write, made a slice of outlets at a time, gives the
same points."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from registries import many_outlets

from cems.devtools.bench import _data
from cems.engine import ComplianceEngine
from cems.model import BEIJING, Measurement, Reading, Stream
from cems.registry import parse_registry
from cems.replay import load_readings
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import InboundMessage, Inbox, MqttSettings
from cems.sinks.influx import InfluxConfig
from cems.sinks.lineprotocol import READING_MEASUREMENT, _tag, escape_tag, reading_line

REG = parse_registry(_data.registry_toml(4))


class _Conn:
    class _Settings:
        url = "mqtt://fake"

    def __init__(self) -> None:
        self.queue = Inbox(100)
        self.settings = self._Settings()
        self.acked: list[int] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def ack(self, msg: InboundMessage) -> None:
        self.acked.append(msg.mid)

    async def publish(self, topic: str, body: bytes | str, qos: int = 1) -> None:
        pass


class _Writer:
    def __init__(self) -> None:
        self.config = InfluxConfig(url="http://fake", db="x")
        self.lines: list[str] = []

    async def ensure_database(self) -> None:
        pass

    async def write(self, lines: list[str]) -> None:
        self.lines += lines

    async def aclose(self) -> None:
        pass


TRICKY = ["", "MN1", "130602BN00000001", "B0000001", "a b", "a,b", "a=b", "x\ny", "r\r", "保定", "保 定", "², ", "=,= "]


def test_tag_escapes_as_escape_tag() -> None:
    for v in TRICKY:
        assert _tag(v) == escape_tag(v), v


def test_reading_line_prefix_as_before() -> None:
    t = datetime(2026, 12, 1, 4, 0, 30, tzinfo=UTC)
    m = {"a21026": Measurement("a21026", {"Rtd": 12.5}, "N")}
    for mn in TRICKY[1:]:
        for ent in ("B0000001", "企业 1", "e,1"):
            for dist in ("130602", "d=1"):
                for stream in (Stream.RTD, Stream.MIN):
                    line = reading_line(Reading(mn, stream, t, m, "20261201120030000"), ent, dist)
                    old = (
                        f"{READING_MEASUREMENT},district={escape_tag(dist)},enterprise={escape_tag(ent)}"
                        f",mn={escape_tag(mn)},stream={stream.value}"
                    )
                    assert line.split(" a21026_", 1)[0] == old


async def test_duplicate_window_evicts_the_oldest_and_counts_a_fingerprint_once() -> None:
    """``dedupe_window`` 3: a message among the last 3 stored is a duplicate; once 3 others were stored after it,
    it is not (the oldest left the window).  ``last_data_time`` is keyed by the registry's MN strings."""
    settings = IngestSettings(latency_batches=False, dedupe_window=3)
    svc = IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"), settings)
    conn, writer = _Conn(), _Writer()
    svc.conn = conn  # type: ignore[assignment]
    svc.writer = writer  # type: ignore[assignment]
    rng = random.Random(3)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    msgs = []
    for i in range(4):
        topic, payload = _data.message(_data.outlet(i), base, rng, hj212_packet=i % 2 == 0)
        msgs.append(InboundMessage(topic, payload, i + 1, 1, time.time()))

    def again(i: int, mid: int) -> InboundMessage:
        return InboundMessage(msgs[i].topic, msgs[i].payload, mid, 1, time.time())

    async def feed(m: InboundMessage) -> None:
        n = len(conn.acked)
        conn.queue.put(m)
        deadline = time.monotonic() + 10.0
        while len(conn.acked) == n:
            assert time.monotonic() < deadline, "no acknowledgement"
            await asyncio.sleep(0.005)

    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    try:
        for m in msgs[:3]:
            await feed(m)
        await feed(again(0, 100))  # msgs[0] is among the last 3 stored: a duplicate
        await feed(msgs[3])  # msgs[0] leaves the window
        await feed(again(0, 101))  # stored again
        await feed(again(0, 102))  # and a duplicate again
        await feed(again(2, 103))  # the window: msgs[2], msgs[3], msgs[0]
        await feed(again(1, 104))  # msgs[1] left it: stored again
    finally:
        stop.set()
        await asyncio.wait_for(task, 20.0)
    assert svc.stats.rejected == {"duplicate": 3}
    assert len(writer.lines) == 6
    assert len(svc._recent) == len(svc._recent_order) == 3
    assert list(svc._recent_order) == [hash((m.topic, m.payload)) for m in (msgs[3], msgs[0], msgs[1])]
    assert len(svc.stats.last_data_time) == 4
    for mn in svc.stats.last_data_time:
        info = REG.outlet(mn)
        assert info is not None and info.outlet.mn is mn


def _rates_engine() -> tuple[Any, datetime, datetime]:
    """The rate counter of an engine fed 3 hours of minute data of 8 of 10 outlets (one far above its limit), with
    the window [Beijing midnight, the end of the data + 1 h)."""
    reg = parse_registry(many_outlets(9))
    day = datetime(2026, 11, 20, tzinfo=BEIJING)
    silent = {"MN1007", "MN1008"}
    docs = []
    for info in reg.outlets():
        mn = info.outlet.mn
        if mn in silent:
            continue
        for m in range(180):
            so2 = 8.0 + (300.0 if mn == "MN0001" and 60 <= m < 120 else 0.0)
            values = {"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}}
            t = (day + timedelta(hours=8, minutes=m)).isoformat()
            docs.append(json.dumps({"mn": mn, "stream": "min", "data_time": t, "values": values}))
    engine = ComplianceEngine(reg, journal=False)
    for r, info in load_readings(reg, docs, "jsonl"):
        engine.on_reading(r, info)
    engine.on_clock(day + timedelta(hours=12))
    return engine.rates, day, day + timedelta(hours=12)


def test_outlet_day_rates_by_slices_are_the_whole() -> None:
    """The live ``cems_rate`` write takes the outlets a slice at a time: the slices' day rates, in order, are the
    day rates of every outlet."""
    rates, start, end = _rates_engine()
    whole = rates.outlet_days(start, end)
    assert len(whole) == 10 and any(r.received for r in whole) and any(not r.received for r in whole)
    outlets = rates.outlets_by_mn()
    for size in (1, 3, 10, 20):
        parts = [r for i in range(0, len(outlets), size) for r in rates.outlet_days(start, end, outlets[i : i + size])]
        assert parts == whole


def test_district_months_as_summed_over_outlet_months() -> None:
    """``district_months`` sums each outlet's month counts into its district without the per-outlet table: the
    same counts and outlet numbers as summed from ``_monthly`` (the table it used)."""
    rates, start, end = _rates_engine()
    month_start = start.replace(day=1)
    (got,) = rates.district_months(month_start, end)
    monthly = rates._monthly((int(month_start.timestamp()), int(end.timestamp())))
    assert (got.expected, got.received, got.valid, got.outlets) == (
        sum(c.expected for c in monthly.values()),
        sum(c.received for c in monthly.values()),
        sum(c.valid for c in monthly.values()),
        len(monthly),
    )
    assert got.outlets == 10 and got.received < got.expected and got.exceeding_enterprises == ("E001",)
