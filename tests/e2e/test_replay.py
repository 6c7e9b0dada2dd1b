"""``cems replay`` end to end on recorded HJ 212 minute data with hand-computed expectations."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from registries import one_outlet  # tests/registries.py

from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.protocol.hj212._crc import crc16

REGISTRY = one_outlet(outlet="rtd_interval_s = 60\n")

# Hour (Beijing) → (SO2 measured mg/m³, O2 %, number of valid minutes).  Reference O2 6 %:
# corrected = C × (21 − 6) / (21 − O2).  With O2 = 11 %, the factor is 1.5.
HOURS = {
    8: (30.0, 11.0, 60),  # 45.0 > 35: exceeds
    9: (28.0, 11.0, 60),  # 42.0 > 35: exceeds
    10: (20.0, 11.0, 60),  # 30.0: compliant → the run 08:00–10:00 closes
    11: (40.0, 11.0, 44),  # 60.0 but only 44 valid minutes → invalid hour, no exceedance
    12: (40.0, 11.0, 45),  # 45 valid minutes → valid, 60.0 > 35: a new run, still open at the end
}


def packets() -> list[str]:
    out = []
    for hour, (so2, o2, valid) in HOURS.items():
        for minute in range(60):
            t = datetime(2026, 11, 20, hour, minute, tzinfo=BEIJING)
            flag = "N" if minute < valid else "M"
            out.append(
                encode(
                    cn="2051",
                    st="31",
                    pw="123456",
                    mn="MN0001",
                    flag=5,
                    qn=t.strftime("%Y%m%d%H%M%S000"),
                    data_time=t,
                    values={"a21026": {"Avg": so2, "Flag": flag}, "a19001": {"Avg": o2, "Flag": flag}},
                    crlf=False,
                )
            )
    # shuffled order in the file: replay orders by data time
    wrong_pw = encode(
        cn="2051",
        st="31",
        pw="000000",
        mn="MN0001",
        flag=5,
        data_time="20261120080000",
        values={"a21026": {"Avg": 999.0, "Flag": "N"}},
        crlf=False,
    )
    return out[::2] + out[1::2] + ["garbage line", wrong_pw]


def cems(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``cems`` command as a user would."""
    return subprocess.run([sys.executable, "-m", "cems", *args], capture_output=True, text=True, timeout=120)


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The registry (unless already written) and the recorded packets."""
    reg = tmp_path / "r.toml"
    if not reg.exists():
        reg.write_text(REGISTRY, encoding="utf-8")
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(packets()) + "\n", encoding="utf-8")
    return reg, inp


def run_replay(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    reg, inp = write_inputs(tmp_path)
    out = {name: str(tmp_path / f"{name}.jsonl") for name in ("ev", "h", "rates", "d")}
    r = cems("replay", "--config", str(reg), "--input", str(inp), "--format", "auto",
             "--events-out", out["ev"], "--hourly-out", out["h"],
             "--rates-out", out["rates"], "--districts-out", out["d"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    hourly = [json.loads(x) for x in (tmp_path / "h.jsonl").read_text().splitlines()]
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    return hourly, events, r.stderr


def test_replay_hourly_records_and_events(tmp_path: Path) -> None:
    hourly, events, summary = run_replay(tmp_path)
    so2 = {h["hour_start"]: h for h in hourly if h["pollutant"] == "a21026"}
    assert sorted(so2) == [f"2026-11-20T{h:02d}:00:00+08:00" for h in HOURS]
    h8 = so2["2026-11-20T08:00:00+08:00"]
    assert h8["avg"] == 30.0 and h8["o2_avg"] == 11.0 and abs(h8["zs_avg"] - 45.0) < 1e-9
    assert h8["valid"] is True and h8["limit"] == 35.0 and h8["exceeds"] is True
    assert so2["2026-11-20T10:00:00+08:00"]["exceeds"] is False
    h11 = so2["2026-11-20T11:00:00+08:00"]
    assert h11["valid"] is False and h11["exceeds"] is False
    assert so2["2026-11-20T12:00:00+08:00"]["valid"] is True and so2["2026-11-20T12:00:00+08:00"]["exceeds"] is True

    exc = [e for e in events if e["type"] == "hourly_exceedance"]
    assert [(e["start"], e["end"], e["hours"], e["status"]) for e in exc] == [
        ("2026-11-20T08:00:00+08:00", "2026-11-20T10:00:00+08:00", 2, "closed"),
        ("2026-11-20T12:00:00+08:00", None, 1, "open"),
    ]
    first = exc[0]
    assert first["peak"] == 45.0 and first["limit"] == 35.0 and first["ref_o2"] == 6.0
    assert first["profile"] == "coal_power_ultra_low" and first["mn"] == "MN0001"
    assert first["enterprise"] == "E001" and first["district"] == "130602" and first["pollutant"] == "a21026"
    assert len(first["event_id"]) >= 12
    assert "rejected: bad_password 1, malformed_json 1" in summary


def test_replay_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run_replay(tmp_path / "a")
    b = run_replay(tmp_path / "b")
    assert a[0] == b[0] and a[1] == b[1]


def test_replay_rates_and_district_supervision(tmp_path: Path) -> None:
    run_replay(tmp_path)
    rates = [json.loads(x) for x in (tmp_path / "rates.jsonl").read_text().splitlines()]
    # the month to date (issue 12 item 4): Nov 1-19 due and silent, then Nov 20: 3 assessed factors × 24 hours
    # expected; only SO2 was sent for 5 hours, 4 of them valid
    assert len(rates) == 20
    assert all((x["expected"], x["received"]) == (72, 0) for x in rates[:19])
    r = rates[-1]
    assert (r["mn"], r["date"], r["expected"], r["received"], r["valid"]) == ("MN0001", "2026-11-20", 72, 5, 4)
    assert abs(r["transmission_rate"] - 5 / 72) < 1e-12 and abs(r["validity_rate"] - 4 / 5) < 1e-12
    assert abs(r["effective_rate"] - 4 / 72) < 1e-12
    (d,) = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert (d["district"], d["month"], d["expected"], d["received"], d["valid"]) == ("130602", "2026-11", 20 * 72, 5, 4)
    assert d["enterprises_exceeding"] == 1 and d["supervision"] is True
    assert len(d["reasons"]) == 1 and "低于考核目标 90%" in d["reasons"][0]


def test_declared_stop_removes_hours_from_expected(tmp_path: Path) -> None:
    reg = tmp_path / "r.toml"
    reg.write_text(REGISTRY, encoding="utf-8")
    add = cems("stops", "add", "--config", str(reg), "--mn", "MN0001", "--from", "2026-11-20T00:00",
               "--to", "2026-11-20T08:00", "--reason", "停产检修", "--by", "值班员")  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert (tmp_path / "r.stops.toml").exists()
    bad = cems("stops", "add", "--config", str(reg), "--mn", "NOPE", "--from", "2026-11-20",
               "--to", "2026-11-21", "--reason", "x", "--by", "y")  # fmt: skip
    assert bad.returncode == 2 and "'NOPE' is not an outlet" in bad.stderr
    listed = cems("stops", "list", "--config", str(reg))
    (row,) = [json.loads(x) for x in listed.stdout.splitlines()]
    assert row["from"] == "2026-11-20T00:00:00+08:00" and row["reason"] == "停产检修"
    reg, inp = write_inputs(tmp_path)
    r = cems("replay", "--config", str(reg), "--input", str(inp), "--rates-out", str(tmp_path / "rates.jsonl"))
    assert r.returncode == 0, r.stderr
    *_, day = [json.loads(x) for x in (tmp_path / "rates.jsonl").read_text().splitlines()]  # month to date
    # 8 stopped hours are not expected: (24 − 8) × 3 factors
    assert (day["expected"], day["received"], day["valid"]) == (48, 5, 4)


def test_replay_goes_on_past_impossible_data_times(tmp_path: Path) -> None:
    """Issue 13: a line dated month 13 (JSON or HJ 212) is counted as rejected; the lines after it are replayed."""
    reg, inp = write_inputs(tmp_path)
    seg = "QN=20261120080000000;ST=31;CN=2051;PW=123456;MN=MN0001;Flag=5;CP=&&DataTime=20261399000000;a21026-Avg=1&&"
    poison = [
        '{"mn":"MN0001","stream":"min","data_time":"20261399000000","values":{"a21026":{"Avg":1.0}}}',
        f"##{len(seg):04d}{seg}{crc16(seg.encode()):04X}",
    ]
    lines = packets()
    inp.write_text("\n".join(poison[:1] + lines[:150] + poison[1:] + lines[150:]) + "\n", encoding="utf-8")
    h = tmp_path / "h.jsonl"
    r = cems("replay", "--config", str(reg), "--input", str(inp), "--hourly-out", str(h))
    assert r.returncode == 0, r.stderr
    assert "bad_data_time 1" in r.stderr and "hj212_datatime 1" in r.stderr
    so2 = [json.loads(x) for x in h.read_text().splitlines() if json.loads(x)["pollutant"] == "a21026"]
    assert len(so2) == len(HOURS)  # every good line was replayed


def test_replay_of_recorded_grid_messages_writes_grid_hours_days_and_a_hotspot(tmp_path: Path) -> None:
    """Issue 15: ``cems replay`` of ``grid/v1/{id} PAYLOAD`` lines, as a user runs it: hours and the real-time AQI,
    days with their upload rate, and the hotspot (with its neighbours' values) in --events-out."""
    sensors = "".join(
        f'[[grid_sensor]]\nid = "G{i}"\ndistrict = "130602"\ntownship = "先锋街道"\ninterval_s = 300\n'
        for i in (1, 2, 3)
    )
    reg = tmp_path / "r.toml"
    reg.write_text(one_outlet(tail=sensors + "[grid.hotspot]\nhours = 2\n"), encoding="utf-8")
    lines = []
    for k in range(24 * 12):  # one day, a reading every 5 minutes
        t = datetime(2026, 11, 20, tzinfo=BEIJING).timestamp() + 300 * k
        dt = datetime.fromtimestamp(t, BEIJING)
        for sid in ("G1", "G2", "G3"):
            pm25 = 100.0 if sid == "G1" and dt.hour in (9, 10) else 40.0
            body = {"data_time": dt.isoformat(), "values": {"a34004": {"Rtd": pm25, "Flag": "N"}}}
            lines.append(f"grid/v1/{sid} {json.dumps(body)}")
    inp = tmp_path / "grid.txt"
    inp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = {name: tmp_path / f"{name}.jsonl" for name in ("gh", "gd", "ev")}
    r = cems("replay", "--config", str(reg), "--input", str(inp), "--grid-hourly-out", str(out["gh"]),
             "--grid-daily-out", str(out["gd"]), "--events-out", str(out["ev"]))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "grid: 864 readings, 72 hours, 3 days" in r.stderr
    hours = [json.loads(x) for x in out["gh"].read_text().splitlines()]
    g1 = {h["hour_start"][11:13]: h for h in hours if h["sensor"] == "G1"}
    assert g1["09"]["values"]["pm25"] == {"mean": 100.0, "minutes": 60, "valid": True}
    # PM2.5 alone (the other five missing): 100 µg/m³ gives ⌈100 + 50 × 40/55⌉ = 137 > 100, an AQI known whatever
    # the others add; 40 µg/m³ gives 60 ≤ 100: not computable (HJ 633, DOMAIN.md §6)
    assert (g1["09"]["aqi"], g1["09"]["category"], g1["09"]["primary"]) == (137, "轻度污染", ["pm25"])
    assert (g1["08"]["aqi"], g1["08"]["level"], g1["08"]["standard"]) == (None, None, "HJ 633-2026")
    days = [json.loads(x) for x in out["gd"].read_text().splitlines()]
    d1 = next(d for d in days if d["sensor"] == "G1")
    assert d1["means"]["pm25"] == (22 * 40.0 + 2 * 100.0) / 24 and d1["upload_rate"] == 1.0
    (ev,) = [json.loads(x) for x in out["ev"].read_text().splitlines()]
    assert (ev["type"], ev["mn"], ev["start"], ev["end"], ev["status"]) == (
        "grid_hotspot", "G1", "2026-11-20T09:00:00+08:00", "2026-11-20T11:00:00+08:00", "closed"
    )  # fmt: skip
    assert ev["evidence"]["hours"][0]["neighbours"] == {"G2": 40.0, "G3": 40.0}
