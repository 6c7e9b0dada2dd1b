"""``cems replay --store`` writes what the live service writes (issue 12 follow-up): ``cems_daily`` and
``cems_monthly`` besides readings, hours and events, so that ``cems report`` after a back-fill shows the
monthly table.  A month of a sinter outlet's DAS hourly records (steel ultra-low monthly rule, 环大气〔2019〕
35号: ≥ 95 % of the valid hours within the hourly limit)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING

pytestmark = pytest.mark.integration

REGISTRY = one_outlet().replace('"coal_power_ultra_low"', '"steel_sinter_ultra_low"')
SO2, O2 = "a21026", "a19001"
START = datetime(2026, 9, 1, tzinfo=BEIJING)
END = datetime(2026, 10, 1, tzinfo=BEIJING)


def cems(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cems", *args], capture_output=True, text=True, timeout=300)


def test_replay_store_writes_daily_and_monthly_and_the_report_shows_the_month(
    tmp_path: Path, influxdb: Any, influx_db: str
) -> None:
    hours = int((END - START) / timedelta(hours=1))
    lines = []
    for k in range(hours):
        # 40 hours at 50 > 35 (the limit; sinter's reference O2 is 16 %, so corrected = measured)
        so2 = 50.0 if k % 17 == 0 and k < 40 * 17 else 20.0
        vals = {SO2: {"Avg": so2, "Flag": "N"}, O2: {"Avg": 16.0, "Flag": "N"}}
        t = START + k * timedelta(hours=1)
        lines.append(json.dumps({"mn": "MN0001", "stream": "hour", "data_time": t.isoformat(), "values": vals}))
    reg, inp = tmp_path / "r.toml", tmp_path / "in.jsonl"
    reg.write_text(REGISTRY, encoding="utf-8")
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    influx = ("--influx-url", influxdb.url, "--influx-db", influx_db)
    r = cems("replay", "--config", str(reg), "--input", str(inp), "--format", "jsonl", "--store", *influx)
    assert r.returncode == 0, r.stderr

    days = influxdb.query(influx_db, f"SELECT * FROM cems_daily WHERE \"pollutant\" = '{SO2}'")
    assert len(days) == 30 and all(d["valid"] is True and d["valid_hours"] == 24 for d in days)
    (month,) = influxdb.query(influx_db, f"SELECT * FROM cems_monthly WHERE \"pollutant\" = '{SO2}'")
    assert (month["valid_days"], month["month_valid"]) == (30, True)
    assert (month["rule_hours"], month["hours_within_limit"], month["meets_monthly_rule"]) == (
        hours, hours - 40, False,
    )  # fmt: skip

    out = tmp_path / "report"
    r = cems("report", "--config", str(reg), "--month", "2026-09", "--out", str(out), *influx)
    assert r.returncode == 0, r.stderr
    text = (out / "monthly.csv").read_text(encoding="utf-8-sig")
    rows = [x for x in csv.DictReader(io.StringIO(text)) if x["MN"] == "MN0001" and SO2 in x["因子"]]
    assert len(rows) == 1 and rows[0]["月度考核"] == "未达标" and rows[0]["达标小时数"] == str(hours - 40)
    assert (rows[0]["有效日数"], rows[0]["月有效"]) == ("30", "是")
    assert "月度结果" in (out / "report.html").read_text(encoding="utf-8")
