"""The InfluxDB writer against real servers: v1 API on InfluxDB 1.6, v2 API on VictoriaMetrics (which serves
``/api/v2/write``; InfluxDB 1.6 answers 404 there)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from cems.model import BEIJING, Measurement, Reading, Stream
from cems.sinks.influx import InfluxConfig, InfluxWriteError, InfluxWriter
from cems.sinks.lineprotocol import reading_line

pytestmark = pytest.mark.integration


def _line() -> str:
    r = Reading(
        mn="MN 1,x",  # needs escaping
        stream=Stream.HOUR,
        data_time=datetime(2026, 11, 22, 8, 0, tzinfo=BEIJING),
        measurements={"a21026": Measurement("a21026", {"Avg": 31.5, "ZsAvg": 33.0}, "N")},
        qn='q"1',
    )
    return reading_line(r, "E 1", "130602")


async def test_v1_write_gzip_and_query_back(influxdb: Any, influx_db: str) -> None:
    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db))
    await w.write([_line()])
    await w.aclose()
    rows = influxdb.query(influx_db, "SELECT * FROM cems_reading", epoch="ms")
    assert rows == [
        {
            "time": 1795305600000,
            "a21026_Avg": 31.5,
            "a21026_Flag": "N",
            "a21026_ZsAvg": 33.0,
            "qn": 'q"1',
            "mn": "MN 1,x",
            "stream": "hour",
            "enterprise": "E 1",
            "district": "130602",
        }
    ]


async def test_v1_reads_every_spelling_of_a_number_back_exactly(influxdb: Any, influx_db: str) -> None:
    """reading_line writes numbers as JSON spells them (``1e-7``, ``1e16``, ``0.000025``, not repr's ``1e-07``):
    InfluxDB reads each back as the same float."""
    values = {"Rtd": 1e-7, "Avg": 1e16, "Min": 2.5e-5, "Max": -0.0, "Cou": 1.2345678901234568e17, "ZsRtd": 123.456}
    r = Reading(
        "MN1", Stream.RTD, datetime(2026, 11, 22, 8, 0, tzinfo=BEIJING), {"a21026": Measurement("a21026", values)}
    )
    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db))
    await w.write([reading_line(r, "E1", "130602")])
    await w.aclose()
    (row,) = influxdb.query(influx_db, "SELECT * FROM cems_reading", epoch="ms")
    assert {k[len("a21026_") :]: v for k, v in row.items() if k.startswith("a21026_")} == values


async def test_v1_bad_line_is_not_retryable_and_unreachable_is_retryable(influxdb: Any, influx_db: str) -> None:
    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db))
    with pytest.raises(InfluxWriteError) as e:
        await w.write(["cems_reading,mn=x this is not line protocol"])
    assert e.value.retryable is False and e.value.status == 400
    await w.aclose()
    w = InfluxWriter(InfluxConfig(url="http://127.0.0.1:9", db=influx_db, timeout_s=2))
    with pytest.raises(InfluxWriteError) as e:
        await w.write([_line()])
    assert e.value.retryable is True
    await w.aclose()


async def test_v2_write_api_on_a_real_v2_server(victoria: Any) -> None:
    w = InfluxWriter(InfluxConfig(url=victoria.url, api="v2", org="bureau", bucket="cems", token="secret"))
    await w.write([_line()])
    await w.aclose()
    deadline = time.monotonic() + 15
    while True:
        httpx.get(f"{victoria.url}/internal/force_flush", timeout=5)
        r = httpx.get(f"{victoria.url}/api/v1/export", params={"match[]": '{__name__="cems_reading_a21026_Avg"}'})
        if r.text.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    series = json.loads(r.text.splitlines()[0])
    assert series["metric"]["mn"] == "MN 1,x" and series["metric"]["stream"] == "hour"
    assert series["values"] == [31.5] and series["timestamps"] == [1795305600000]


async def test_v2_path_on_influxdb_1_6_is_a_clear_retryable_error(influxdb: Any) -> None:
    """A configuration error must never dead-letter data: it is retried (data kept) and explained."""
    w = InfluxWriter(InfluxConfig(url=influxdb.url, api="v2", org="o", bucket="b"))
    with pytest.raises(InfluxWriteError) as e:
        await w.write([_line()])
    assert e.value.status == 404 and e.value.retryable and "--influx-api v1" in str(e.value)
    await w.aclose()


def _lines(n_outlets: int, per_outlet: int, *, rewrite: bool = False) -> list[str]:
    out = []
    for k in range(per_outlet):
        for i in range(n_outlets):
            so2 = float(k) + (0.5 if rewrite else 0.0)
            r = Reading(
                mn=f"MN {i}",  # an escaped space in the series key
                stream=Stream.RTD,
                data_time=datetime(2026, 11, 22, 8, 0, k, tzinfo=BEIJING),
                measurements={"a21026": Measurement("a21026", {"Rtd": so2}, "N")},
            )
            out.append(reading_line(r, "E", "130602"))
    return out


async def test_a_large_batch_is_split_by_series_and_written_whole(influxdb: Any, influx_db: str) -> None:
    """2400 lines go as 3 concurrent requests; every point is stored, and a later batch that rewrites the same
    keys wins everywhere (a series is never split across requests, so its points keep their order)."""
    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db, write_concurrency=3))
    lines = _lines(120, 20)
    # the same key twice in one batch: the later line must win even though the batch is split
    lines.append(_lines(1, 1, rewrite=True)[0])
    await w.write(lines)
    rows = influxdb.query(influx_db, "SELECT count(a21026_Rtd) FROM cems_reading")
    assert rows[0]["count"] == 2400
    first = influxdb.query(influx_db, "SELECT a21026_Rtd FROM cems_reading WHERE mn = 'MN 0' ORDER BY time LIMIT 1")
    assert first[0]["a21026_Rtd"] == 0.5
    await w.write(_lines(120, 20, rewrite=True))
    rows = influxdb.query(influx_db, "SELECT sum(a21026_Rtd) FROM cems_reading")
    assert rows[0]["sum"] == pytest.approx(120 * sum(k + 0.5 for k in range(20)))
    await w.aclose()


async def test_a_bad_line_in_a_split_batch_is_not_retryable(influxdb: Any, influx_db: str) -> None:
    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db, write_concurrency=2, split_min_lines=10))
    lines = _lines(10, 5)
    lines.insert(17, "cems_reading,mn=x this is not line protocol")
    with pytest.raises(InfluxWriteError) as e:
        await w.write(lines)
    assert e.value.retryable is False and e.value.status == 400
    await w.aclose()


async def test_a_write_leaves_nothing_to_the_cyclic_garbage_collector(influxdb: Any, influx_db: str) -> None:
    """Issue 20 (docs/benchmark.md, ninth session): httpx's response and its body stream refer to each other, so
    every write left ≈ 70 objects that only the cyclic collector frees, each of its runs pausing the event loop;
    the writer lets them go at once (:func:`cems.sinks.influx.release`)."""
    import gc

    w = InfluxWriter(InfluxConfig(url=influxdb.url, db=influx_db, gzip=False))
    await w.write([_line()])  # the connection opened (kept alive: not garbage of the writes below)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(5):
            await w.write([_line()])
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith(("httpx", "httpcore"))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        await w.aclose()
    assert left == []
    assert len(influxdb.query(influx_db, "SELECT * FROM cems_reading")) == 1  # (the same point each time)
