"""Daily and monthly results through a real ``cems run`` (issue 12): a late hour rewrites the stored day and its
daily exceedance; a month of a sinter outlet's DAS hourly records back-filled past its repair window: refused
live (stored raw, counted ``late_beyond_window``) whatever the clock's ticks, judged by ``cems replay --store`` of
the same packets (no arrival times) → ``cems_monthly`` (month validity, steel ultra-low monthly rule,
环大气〔2019〕35号), shown by ``cems report``."""

from __future__ import annotations

import csv
import io
import json
import signal
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from live_clock import probe_outlet, wait_for_a_tick  # tests/live_clock.py
from registries import one_outlet  # tests/registries.py
from test_event_time_live import _health_up
from test_ingest import Mqtt, wait_until  # same directory (pytest prepend import mode)
from test_reliability import _cems_run, _free_port

from cems.cli import main as cli_main
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.replay import replay

pytestmark = pytest.mark.integration

#: MN0001 and, for wait_for_a_tick (a barrier: the back-fill judged), a probe outlet
REGISTRY = one_outlet(tail=probe_outlet("130602")).replace('"coal_power_ultra_low"', '"steel_sinter_ultra_low"')
SO2, O2 = "a21026", "a19001"


def _hour(t: datetime, so2: float) -> dict[str, Any]:
    # at the reference O2 of sinter (16 %): the corrected value is the measured one
    vals = {SO2: {"Avg": so2, "Flag": "N"}, O2: {"Avg": 16.0, "Flag": "N"}}
    return {"data_time": t.isoformat(), "values": vals}


def test_a_month_back_filled_past_its_repair_window_is_refused_live_and_replay_judges_it(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A month that ended more than its repair window ago (10 days, and the 10th of the next month: DOMAIN.md §5),
    back-filled to ``cems run`` by a new outlet: every reading is stored raw (``cems_reading``) and refused by the
    rules (``late_beyond_window``) — no hourly record, day or month — whatever the clock ticks before or between
    the readings.  ``cems replay --store`` of the same packets (a file has no arrival times: taken as arrived in
    time) gives the month's ``cems_monthly`` (steel ultra-low monthly rule, 环大气〔2019〕35号), and ``cems report``
    shows it."""
    this_month = datetime.now(BEIJING).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (this_month - timedelta(days=40)).replace(day=1)  # a month that ended ≥ 40 days ago: all of it final
    end = (start + timedelta(days=32)).replace(day=1)
    hours = int((end - start) / timedelta(hours=1))
    # 40 hours above the 35 mg/m³ limit: (hours - 40) / hours < 95 %: the monthly rule is not met
    docs = [_hour(start + k * timedelta(hours=1), 50.0 if k % 17 == 0 and k < 40 * 17 else 20.0) for k in range(hours)]
    reg = tmp_path / "registry.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, f"cems-month-{uuid.uuid4().hex[:6]}", port)
    pub = Mqtt(mosquitto.url)
    mn1 = "\"mn\" = 'MN0001'"
    q = f"SELECT * FROM cems_monthly WHERE \"pollutant\" = '{SO2}' AND {mn1}"
    try:
        wait_until(lambda: _health_up(port), 30)
        # a tick may come anywhere in the back-fill (before the fix it decided how much of it counted)
        for i, doc in enumerate(docs):
            pub.publish("cems/v1/MN0001/hour", json.dumps(doc))
            if i == len(docs) // 2:
                time.sleep(6.0)  # at least one tick of the service's clock (every 5 s) between its readings
        stored = f"SELECT count(a21026_Avg) FROM cems_reading WHERE {mn1}"
        wait_until(lambda: _count(influxdb, influx_db, stored) == hours, 90)
        # the probe's hour is written by a tick after its reading, judged after the back-fill's: all judged by then
        wait_for_a_tick(pub.publish, lambda text: list(influxdb.query(influx_db, text)), wait_until)
        for what in ("cems_hourly", "cems_daily", "cems_monthly"):
            assert not influxdb.query(influx_db, f"SELECT * FROM {what} WHERE {mn1}"), what
        # the same packets replayed (no arrival times: taken as arrived in time) give the month's result
        lines = [json.dumps({"mn": "MN0001", "stream": "hour", **d}) for d in docs]
        res = replay(parse_registry(REGISTRY), lines, "jsonl")
        assert res.late_beyond_window == 0
        (m,) = [x for x in res.months if x.pollutant == SO2]
        days = (end - start).days
        assert (m.valid_days, m.month_valid, m.rule_hours, m.hours_within_limit, m.meets_monthly_rule) == (
            days, True, hours, hours - 40, False,
        )  # fmt: skip
        src = tmp_path / "backfill.jsonl"
        src.write_text("\n".join(lines) + "\n", encoding="utf-8")
        code = cli_main([
            "replay", "--config", str(reg), "--input", str(src), "--format", "jsonl", "--store",
            "--influx-url", influxdb.url, "--influx-db", influx_db,
        ])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        (row,) = influxdb.query(influx_db, q)
        assert (row["valid_days"], row["month_valid"]) == (days, True)
        assert (row["rule_hours"], row["hours_within_limit"]) == (hours, hours - 40)
        assert row["meets_monthly_rule"] is False and row["share_required"] == 0.95
        assert "环大气〔2019〕35号" in row["citation"]
        # cems report shows it
        out = tmp_path / "report"
        code = cli_main([
            "report", "--config", str(reg), "--month", f"{start.year:04d}-{start.month:02d}",
            "--influx-url", influxdb.url, "--influx-db", influx_db, "--out", str(out),
        ])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        text = (out / "monthly.csv").read_text(encoding="utf-8-sig")
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r["MN"] == "MN0001" and SO2 in r["因子"]]
        assert len(rows) == 1 and rows[0]["月度考核"] == "未达标" and rows[0]["达标小时数"] == str(hours - 40)
        assert "月度结果" in (out / "report.html").read_text(encoding="utf-8")
    finally:
        pub.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _count(influxdb: Any, db: str, text: str) -> int:
    rows = influxdb.query(db, text)
    return int(next(iter(v for k, v in rows[0].items() if k.startswith("count")))) if rows else 0


def _daily(influxdb: Any, db: str, day: datetime) -> dict[str, Any] | None:
    ms = int(day.timestamp() * 1000)
    rows = influxdb.query(db, f"SELECT * FROM cems_daily WHERE \"pollutant\" = '{SO2}' AND time = {ms}ms")
    return rows[0] if rows else None


def test_a_late_hour_revises_the_stored_day_and_its_daily_exceedance(
    tmp_path: Path, mosquitto: Any, influxdb: Any, influx_db: str
) -> None:
    """Waste incineration (24-h SO2 limit 80 at 11 % O2, GB 18485-2014): a day two days ago closes live on 23
    hours at 83 (daily exceedance); its 23:00 record (50) comes late → the cems_daily point is rewritten
    (81.625) and the event's peak updated, late; a re-sent 0 → 79.54: the event is retracted."""
    registry = one_outlet().replace('"coal_power_ultra_low"', '"waste_incineration"')
    day = datetime.now(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)

    def hour(k: int, so2: float) -> str:
        vals = {SO2: {"Avg": so2, "Flag": "N"}, O2: {"Avg": 11.0, "Flag": "N"}}
        return json.dumps({"data_time": (day + k * timedelta(hours=1)).isoformat(), "values": vals})

    reg = tmp_path / "registry.toml"
    reg.write_text(registry, encoding="utf-8")
    port = _free_port()
    proc = _cems_run(reg, tmp_path, mosquitto, influxdb, influx_db, f"cems-day-{uuid.uuid4().hex[:6]}", port)
    pub = Mqtt(mosquitto.url)
    alerts = Mqtt(mosquitto.url)
    alerts.subscribe("cems/alerts/v1/#")
    q = "SELECT * FROM cems_event WHERE \"type\" = 'daily_exceedance'"
    try:
        wait_until(lambda: _health_up(port), 30)
        for k in range(23):
            pub.publish("cems/v1/MN0001/hour", hour(k, 83.0))
        wait_until(lambda: (_daily(influxdb, influx_db, day) or {}).get("valid_hours") == 23, 60)
        first = _daily(influxdb, influx_db, day)
        assert first is not None and first["exceeds"] is True and first["zs_avg"] == 83.0
        wait_until(lambda: bool(influxdb.query(influx_db, q)), 30)
        pub.publish("cems/v1/MN0001/hour", hour(23, 50.0))
        wait_until(lambda: (_daily(influxdb, influx_db, day) or {}).get("valid_hours") == 24, 60)
        rec = _daily(influxdb, influx_db, day)
        assert rec is not None and abs(rec["zs_avg"] - 81.625) < 1e-9 and rec["exceeds"] is True
        peak = rec["zs_avg"]
        wait_until(lambda: (influxdb.query(influx_db, q) or [{}])[0].get("peak") == peak, 30)
        (ev,) = influxdb.query(influx_db, q)
        assert ev["late"] is True and ev["status"] == "closed"
        pub.publish("cems/v1/MN0001/hour", hour(23, 0.0))
        wait_until(lambda: (influxdb.query(influx_db, q) or [{}])[0].get("status") == "retracted", 60)
        rec = _daily(influxdb, influx_db, day)
        assert rec is not None and rec["exceeds"] is False
        wait_until(lambda: any(t.endswith("/daily_exceedance") and b"retracted" in b for t, b in alerts.got), 30)
        updates = [json.loads(b)["update"] for t, b in alerts.got if t.endswith("/daily_exceedance")]
        assert updates == ["opened", "closed", "updated", "retracted"]
    finally:
        pub.close()
        alerts.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
