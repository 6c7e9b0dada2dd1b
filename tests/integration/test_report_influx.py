"""``cems report`` against the real InfluxDB: a month of HJ 212 hourly data → replay → store → report, and
the report's figures equal the replay's own RateCounter figures."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cems.cli import main as cli_main
from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.registry import Registry, parse_registry
from cems.replay import ReplayResult, replay
from cems.report import Period, influx_loader, load_report
from cems.report._tables import PARTIAL_STOP, STOP
from cems.rules.events import HOURLY_EXCEEDANCE
from cems.sinks.influx import InfluxConfig
from cems.sinks.store import store_replay

pytestmark = pytest.mark.integration

REGISTRY = """
timezone = "Asia/Shanghai"
[city]
name = "测试市"
transmission_rate_target = 0.90
supervision_enterprise_threshold = 2

[[district]]
code = "130602"
name = "竞秀区"
[[district]]
code = "130606"
name = "莲池区"

[[enterprise]]
id = "E001"
name = "示例热电有限公司"
district = "130602"
[[enterprise.outlet]]
mn = "MN0001"
name = "1#机组排放口"
profile = "coal_power_ultra_low"
password = "123456"
[[enterprise.outlet]]
mn = "MN0002"
name = "2#机组排放口"
profile = "coal_power_ultra_low"
password = "123456"

[[enterprise]]
id = "E002"
name = "华北钢铁集团"
district = "130606"
[[enterprise.outlet]]
mn = "MN0003"
name = "烧结机头"
profile = "coal_power_ultra_low"
password = "123456"

[[enterprise]]
id = "E003"
name = "保定水泥有限公司"
district = "130606"
[[enterprise.outlet]]
mn = "MN0004"
name = "窑尾排放口"
profile = "coal_power_ultra_low"
password = "123456"
[[enterprise.outlet.stop]]
from = 2025-11-12T12:00:00
to = 2025-11-15
reason = "停产检修"
"""

MONTH_START = datetime(2025, 11, 1, tzinfo=BEIJING)
HOURS = 30 * 24
NORMAL = {"a21026": 20.0, "a21002": 30.0, "a34013": 5.0}
# MN0003: (day, hour) → {code: corrected value}; O2 = 6 % = the reference, so corrected = measured.
EXCEED = {
    (5, 8): {"a21026": 60.0},
    (5, 9): {"a21026": 70.0},
    (5, 10): {"a21026": 50.0},
    (20, 14): {"a21026": 40.0},
    (20, 15): {"a21026": 45.0},
    (25, 3): {"a21002": 80.0},
}


def _packet(mn: str, t: datetime, values: dict[str, float], flags: dict[str, str]) -> str:
    vals: dict[str, dict[str, float | str]] = {
        code: {"Avg": v, "Flag": flags.get(code, "N")} for code, v in values.items()
    }
    vals["a19001"] = {"Avg": 6.0, "Flag": flags.get("a19001", "N")}
    return encode(
        cn="2061",
        st="31",
        pw="123456",
        mn=mn,
        flag=5,
        qn=t.strftime("%Y%m%d%H%M%S000"),
        data_time=t,
        values=vals,
        crlf=False,
    )


def month_packets() -> list[str]:
    """One CN=2061 packet per outlet per hour for November 2025 (Beijing; a past month, so the
    wall clock does not cut the report short), with the scenario's defects."""
    out: list[str] = []
    stop_a = datetime(2025, 11, 12, 12, tzinfo=BEIJING)
    stop_b = datetime(2025, 11, 15, tzinfo=BEIJING)
    for i in range(HOURS):
        t = MONTH_START + timedelta(hours=i)
        day = t.day
        # MN0001: days 1-4 in maintenance (flag M): 624 of 720 hours valid = 86.7 %.
        m = "M" if day <= 4 else "N"
        out.append(_packet("MN0001", t, NORMAL, dict.fromkeys([*NORMAL, "a19001"], m)))
        # MN0002: silent on days 10-16 (7 days): 552 of 720 = 76.7 %.
        if not 10 <= day <= 16:
            out.append(_packet("MN0002", t, NORMAL, {}))
        # MN0003: exceedances, and NOx flagged D for 10 hours of day 2.
        vals = dict(NORMAL)
        vals.update(EXCEED.get((day, t.hour), {}))
        flags = {"a21002": "D"} if day == 2 and t.hour < 10 else {}
        out.append(_packet("MN0003", t, vals, flags))
        # MN0004: declared stop from 12th 12:00 to 15th 00:00; the DAS sends F-flagged records meanwhile.
        f = "F" if stop_a <= t < stop_b else "N"
        out.append(_packet("MN0004", t, NORMAL, dict.fromkeys([*NORMAL, "a19001"], f)))
    return out


@pytest.fixture(scope="module")
def registry() -> Registry:
    return parse_registry(REGISTRY)


@pytest.fixture(scope="module")
def replayed(registry: Registry) -> ReplayResult:
    return replay(registry, month_packets(), "hj212", keep_readings=True)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    return list(csv.DictReader(io.StringIO(raw[3:].decode("utf-8"))))


def test_month_report_matches_replay(
    registry: Registry, replayed: ReplayResult, influxdb: Any, influx_db: str, tmp_path: Path
) -> None:
    res = replayed
    assert not res.rejected
    asyncio.run(store_replay(InfluxConfig(url=influxdb.url, db=influx_db), res))

    period = Period.month("2025-11")
    rep = load_report(registry, period, influx_loader(influxdb.url, influx_db))

    # The same RateCounter figures as the replay, per outlet and day and per district and month.
    assert list(rep.outlet_days) == res.outlet_days
    by_code = {d.district: d for d in res.district_months}
    assert len(res.district_months) == 2
    for row in rep.districts:
        assert row.months == (by_code[row.code],)
        dm = by_code[row.code]
        assert (row.expected, row.received, row.valid) == (dm.expected, dm.received, dm.valid)
        assert row.outlets == dm.outlets
        assert row.supervised == dm.supervised and row.reasons == dm.reasons

    # Hand-computed figures of the scenario.
    outlets = {o.mn: o for o in rep.outlets}
    assert outlets["MN0001"].valid == 624 * 3 and outlets["MN0001"].expected == 720 * 3
    assert outlets["MN0002"].received == 552 * 3 and outlets["MN0002"].expected == 720 * 3
    assert outlets["MN0003"].valid == 720 * 3 - 10
    assert outlets["MN0004"].expected == (720 - 60) * 3 and outlets["MN0004"].effective_rate == 1.0
    assert [d.code for d in rep.districts] == ["130606", "130602"]
    assert [d.supervised for d in rep.districts] == [False, True]
    assert [o.mn for o in rep.below_target] == ["MN0002", "MN0001"]

    exc = [e for e in res.events if e.type == HOURLY_EXCEEDANCE]
    assert len(exc) == 3
    assert len(rep.exceedances) == 1
    e = rep.exceedances[0]
    assert e.enterprise == "华北钢铁集团" and e.events == 3 and e.hours == 6.0
    assert e.by_pollutant == {"a21002": (1, 1.0), "a21026": (2, 5.0)}
    assert (e.worst_pollutant, e.peak, e.limit) == ("a21026", 70.0, 35.0)  # 70/35 = 2.0 beats 80/50 = 1.6
    heat = {a.mn: {c.day.day: c for c in a.cells} for a in rep.availability}
    assert heat["MN0004"][13].state == STOP and heat["MN0004"][14].state == STOP
    assert heat["MN0004"][12].state == PARTIAL_STOP and heat["MN0004"][12].expected == 12 * 3
    assert heat["MN0002"][11].effective_rate == 0.0 and heat["MN0002"][9].effective_rate == 1.0

    # The CLI writes the files and they say the same.
    cfg = tmp_path / "registry.toml"
    cfg.write_text(REGISTRY, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["report", "--config", str(cfg), "--month", "2025-11", "--out", str(out), "--influx-url", influxdb.url,
            "--influx-db", influx_db]  # fmt: skip
    assert cli_main(argv) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "测试市" in page and "2025年11月" in page
    assert page.index("莲池区") < page.index("竞秀区")
    below = page[page.index('<tr class="below">') :]
    assert below.index("MN0002") < below.index("MN0001")
    assert "华北钢铁集团" in page and '<td class="n">3</td><td class="n">6</td>' in page
    assert "挂牌督办" in page and "传输有效率低于考核目标" in page

    districts = _csv_rows(out / "districts.csv")
    assert [(r["区县"], r["传输有效率(%)"], r["挂牌督办"]) for r in districts] == [
        ("莲池区", f"{by_code['130606'].effective_rate * 100:.2f}", "否"),  # type: ignore[operator]
        ("竞秀区", f"{by_code['130602'].effective_rate * 100:.2f}", "是"),  # type: ignore[operator]
    ]
    assert [r["MN"] for r in _csv_rows(out / "outlets_below_target.csv")] == ["MN0002", "MN0001"]
    assert [(r["企业"], r["超标次数"]) for r in _csv_rows(out / "exceedances.csv")] == [("华北钢铁集团", "3")]
    assert len(_csv_rows(out / "availability.csv")) == 4 * 30
