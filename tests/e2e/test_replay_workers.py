"""``cems replay --workers N`` (issue 20 item 5): the outputs of N processes equal one process's, byte for
byte, on a varied input (several outlets and districts, every line form, grid sensors with a hotspot, an
emergency line under a warning, marks and a repair, rejects, lines out of order and late); a failed worker
ends the replay with an error and no output."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from registries import emergency_line, one_outlet  # tests/registries.py

from cems.cli import main
from cems.model import BEIJING
from cems.protocol.hj212 import encode
from cems.protocol.mark import MarkRecord
from cems.registry import parse_registry
from cems.replay import ReplayResult, replay
from cems.replay_parallel import Router, _Worker, replay_parallel
from cems.rules.emergency import WarningHistory, WarningLevel, WarningPeriod
from cems.rules.grid import day_to_json
from cems.service.warnings import write_history

DAY = datetime(2026, 11, 20, tzinfo=BEIJING)
HOURS = range(6, 14)
E002 = [f"MN{1000 + i}" for i in range(5)]
E003 = ["MN2000", "MN2001"]
OUTLETS = ["MN0001", *E002, *E003]


def _outlets(enterprise: str, district: str, mns: list[str]) -> str:
    return f'[[enterprise]]\nid = "{enterprise}"\nname = "企业{enterprise}"\ndistrict = "{district}"\n' + "".join(
        f'[[enterprise.outlet]]\nmn = "{mn}"\nname = "{mn}排放口"\nprofile = "coal_power_ultra_low"\n'
        'password = "123456"\nrtd_interval_s = 60\n'
        for mn in mns
    )


REGISTRY = one_outlet(
    enterprise=emergency_line(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n"),
    outlet="rtd_interval_s = 60\n",
    tail='[[district]]\ncode = "130603"\nname = "莲池区"\n'
    + _outlets("E002", "130602", E002)
    + _outlets("E003", "130603", E003)
    + "".join(
        f'[[grid_sensor]]\nid = "G{i}"\ndistrict = "130602"\ntownship = "先锋街道"\ninterval_s = 300\n'
        for i in (1, 2, 3)
    )
    + "[grid.hotspot]\nhours = 2\n",
)


def _so2(mn: str, t: datetime) -> float:
    """SO2 (mg/m³, O2 11 %: × 1.5 corrected, limit 35): each outlet exceeds in its own hours."""
    k = OUTLETS.index(mn) if mn in OUTLETS else 0
    return 30.0 if (t.hour + k) % 4 == 0 else 12.0 + k


def _values(mn: str, t: datetime) -> dict[str, dict[str, float | str]]:
    flag = "M" if (t.minute + len(mn) + int(mn[-1])) % 17 == 0 else "N"
    return {
        "a21026": {"Avg": _so2(mn, t), "Flag": flag},
        "a19001": {"Avg": 11.0, "Flag": flag},
        "a00000": {"Avg": 100.0 + t.minute % 7, "Flag": "N"},  # m³/s: 30 mg/m³ is 10.8 kg/h
    }


def _packet(mn: str, t: datetime, pw: str = "123456") -> str:
    return encode(
        cn="2051", st="31", pw=pw, mn=mn, flag=5, qn=t.strftime("%Y%m%d%H%M%S000"), data_time=t,
        values=_values(mn, t), crlf=False,
    )  # fmt: skip


def _json(mn: str, t: datetime, key: str = '"mn"') -> str:
    doc = {"schema": "cems.reading/1", "stream": "min", "data_time": t.isoformat(), "values": _values(mn, t)}
    return "{" + f'{key}: "{mn}", ' + json.dumps(doc)[1:]


def _line(mn: str, t: datetime) -> str:
    """Every line form of the input, by outlet."""
    if mn == "MN1001":
        return f"cems/v1/{mn}/hj212 {_packet(mn, t)}"
    if mn == "MN1002":
        return f"cems/v1/{mn}/min {_json(mn, t)}"
    if mn == "MN1003":
        return _json(mn, t)
    if mn == "MN1004":  # the key escaped: no "mn" to read cheaply, every worker decodes the line
        return _json(mn, t, key='"\\u006dn"')
    return _packet(mn, t)


def _grid(sensor: str, t: datetime) -> str:
    pm25 = 100.0 if sensor == "G1" and t.hour in (9, 10) else 40.0
    return f"grid/v1/{sensor} " + json.dumps(
        {"data_time": t.isoformat(), "values": {"a34004": {"Rtd": pm25, "Flag": "N"}}}
    )


def lines(seed: int = 7) -> list[str]:
    """The input: minute data of every outlet, grid data every 5 minutes, rejects; blocks of 50 lines reversed
    (out of order) and 1 line in 40 moved to the end (hours late)."""
    out: list[str] = []
    for h in HOURS:
        for minute in range(60):
            t = DAY + timedelta(hours=h, minutes=minute)
            out += [_line(mn, t) for mn in OUTLETS]
            if minute % 5 == 0:
                out += [_grid(s, t) for s in ("G1", "G2", "G3")]
    out = [x for i in range(0, len(out), 50) for x in reversed(out[i : i + 50])]
    rng = random.Random(seed)
    late = [i for i in range(len(out)) if rng.random() < 1 / 40]
    out = [x for i, x in enumerate(out) if i not in set(late)] + [out[i] for i in late]
    t = DAY + timedelta(hours=9)
    bad = [
        "garbage line",
        _packet("MN0001", t, pw="000000"),  # bad_password
        _packet("MN9999", t),  # unknown_mn
        "cems/v1/MN1001 {}",  # bad_topic
        "grid/v1/G9 " + json.dumps({"data_time": t.isoformat(), "values": {"a34004": {"Rtd": 1.0}}}),
        '{"mn": "MN1003", "stream": "min", "note": {"mn": "x"}}',  # two "mn": every worker decodes it
        "   ",
        # not rejects: lines split as text mode splits them (a lone CR ends a line), CRLF, white space in front
        _packet("MN2000", t - timedelta(seconds=30)) + "\r" + _packet("MN2001", t - timedelta(seconds=30)),
        _packet("MN1000", t - timedelta(seconds=20)) + "\r",
        "  \t" + _packet("MN0001", t - timedelta(seconds=10)),
    ]
    for i, b in enumerate(bad):
        out.insert(97 * (i + 1), b)
    return out


def marks() -> list[MarkRecord]:
    def rec(rid: str, kind: str, mn: str, start: datetime, hours: int, received: datetime, **kw: Any) -> MarkRecord:
        return MarkRecord(
            record_id=rid, kind=kind, mn=mn, type=kw.pop("type", "cp_fault"), start=start,  # type: ignore[arg-type]
            end=start + timedelta(hours=hours), reason="引风机跳闸", attachment="", submitter="王工",
            received_at=received, via="cems/command/v1/mark", **kw,
        )  # fmt: skip

    return [
        rec("m1", "mark", "MN1000", DAY + timedelta(hours=11), 1, DAY + timedelta(hours=12, minutes=20)),
        rec("m2", "mark", "MN2001", DAY + timedelta(hours=11), 1, DAY + timedelta(hours=6, minutes=30)),
        rec(
            "r1",
            "repair",
            "MN2000",
            DAY + timedelta(hours=12),
            1,
            DAY + timedelta(hours=14),
            type="repair",
            pollutant="a21026",
            value=3.0,
            note="p",
        ),
        rec("x1", "mark", "MN9999", DAY + timedelta(hours=8), 1, DAY + timedelta(hours=9)),  # not in the registry
    ]


def warnings() -> WarningHistory:
    return WarningHistory(
        (WarningPeriod(WarningLevel.ORANGE, DAY + timedelta(hours=8), DAY + timedelta(hours=12), "张三"),)
    )


OUTPUTS = ("hourly", "events", "rates", "districts", "daily", "monthly", "grid-hourly", "grid-daily")


def run_cli(tmp_path: Path, workers: int) -> tuple[dict[str, bytes], str]:
    out = tmp_path / f"w{workers}"
    out.mkdir()
    args = [sys.executable, "-m", "cems", "replay", "--config", str(tmp_path / "r.toml"),
            "--input", str(tmp_path / "in.txt"), "--marks", str(tmp_path / "marks.jsonl"),
            "--warnings", str(tmp_path / "warnings.json"), "--workers", str(workers)]  # fmt: skip
    for name in OUTPUTS:
        args += [f"--{name}-out", str(out / name)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = [x for x in r.stderr.splitlines() if x.startswith("replay: ")]
    assert len(summary) == 1, r.stderr
    # the time and the rate are the only parts that differ
    return {name: (out / name).read_bytes() for name in OUTPUTS}, re.sub(
        r" in [\d.]+s \([\d,]+ values/s\)", "", summary[0]
    )


def write_inputs(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(REGISTRY, encoding="utf-8")
    (tmp_path / "in.txt").write_text("\n".join(lines()) + "\n", encoding="utf-8")
    (tmp_path / "marks.jsonl").write_text("".join(json.dumps(m.to_json()) + "\n" for m in marks()), encoding="utf-8")
    write_history(tmp_path / "warnings.json", warnings())


def test_outputs_of_two_and_three_workers_equal_one_process_byte_for_byte(tmp_path: Path) -> None:
    write_inputs(tmp_path)
    one, summary = run_cli(tmp_path, 1)
    # the data exercise what the partition must keep right
    events = [json.loads(x) for x in one["events"].decode().splitlines()]
    types = {e["type"] for e in events}
    assert {"hourly_exceedance", "grid_hotspot", "warning_level", "emergency_noncompliance"} <= types, types
    assert any(e["status"] == "marked" for e in events)
    assert b'"source": "repair"' in one["hourly"]
    mns = {json.loads(x)["mn"] for x in one["hourly"].decode().splitlines()}
    assert mns == set(OUTLETS)
    districts = [json.loads(x) for x in one["districts"].decode().splitlines()]
    assert {d["district"] for d in districts} == {"130602", "130603"}
    assert one["grid-hourly"] and one["grid-daily"] and one["daily"] and one["rates"] and one["monthly"]
    # 8 outlets × 8 h × 60 min + 3 sensors × 8 h × 12 + the 4 readings of the 3 lines above; 6 rejects
    assert summary.startswith("replay: 4138 lines, 4132 readings"), summary
    for reason in ("bad_password 1", "unknown_mn 1", "bad_topic 1", "unknown_sensor 1", "malformed_json 1"):
        assert reason in summary, summary
    for workers in (2, 3):
        outs, s = run_cli(tmp_path, workers)
        assert s == summary
        for name in OUTPUTS:
            assert outs[name] == one[name], f"--{name}-out differs with {workers} workers"


def _comparable(res: ReplayResult) -> dict[str, Any]:
    return {
        "counts": (res.lines, res.readings, res.values, res.values_dropped, dict(res.rejected), res.rules_errors),
        "late": (res.late_readings, res.late_unrevised, res.late_beyond_window, res.grid_readings),
        "hourly": [h.to_json() for h in res.hourly],
        "events": [e.to_json() for e in res.events],
        "rates": [r.to_json() for r in res.outlet_days],
        "districts": [d.to_json() for d in res.district_months],
        "daily": [d.to_json() for d in res.daily],
        "months": [m.to_json() for m in res.months],
        "grid_hourly": [h.to_json() for h in res.grid_hourly],
        "grid_daily": [day_to_json(d) for d in res.grid_daily],
        "accepted": [(r, info.outlet.mn) for r, info in res.accepted],
        "grid_accepted": res.grid_accepted,
        "marks": res.marks,
    }


@pytest.mark.parametrize("window", [3, 40, 700])
def test_small_reorder_buffers_give_the_one_process_lateness(tmp_path: Path, window: int) -> None:
    """With a buffer much smaller than the disorder, readings come late (some beyond the buffer's reach):
    the workers run the one-process buffer over every worker's keys, so lateness, marks and the readings'
    order (what ``--store`` writes) are the same."""
    reg = parse_registry(REGISTRY)
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines(seed=window)) + "\n", encoding="utf-8")
    kw: dict[str, Any] = {"keep_readings": True, "window": window, "marks": marks(), "warnings": warnings()}
    with open(path, encoding="utf-8") as f:
        one = replay(reg, f, **kw)
    assert one.late_readings > 0 and one.accepted
    expected = _comparable(one)
    for workers in (2, 3):
        assert _comparable(replay_parallel(reg, path, workers=workers, **kw)) == expected


def test_a_recording_of_hj212_packets_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Chunks of HJ 212 packets alone are routed with one regular expression per chunk; a packet with a
    second ``MN=`` (in its CP) next to a line with none does not shift the others."""
    reg = parse_registry(REGISTRY)
    hj = [mn for mn in OUTLETS if mn not in ("MN1001", "MN1002", "MN1003", "MN1004")]
    out = [_packet(mn, DAY + timedelta(hours=h, minutes=m)) for h in HOURS for m in range(60) for mn in hj]
    out = [x for i in range(0, len(out), 300) for x in reversed(out[i : i + 300])]
    t = DAY + timedelta(hours=9, minutes=30, seconds=5)
    two = encode(cn="2051", st="31", pw="123456", mn="MN2000", flag=5, data_time=t, values=_values("MN2000", t),
                 cp_other={"XMN": "MN0001"}, crlf=False)  # fmt: skip
    out[10:10] = [two, "##0010QN=1;CN=2051&&"]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        one = replay(reg, f, keep_readings=True, window=200)
    assert one.late_readings > 0 and sum(one.rejected.values()) == 1
    assert any(r.data_time == t and r.mn == "MN2000" for r, _ in one.accepted)
    expected = _comparable(one)
    for workers in (2, 3):
        assert _comparable(replay_parallel(reg, path, workers=workers, keep_readings=True, window=200)) == expected
    assert "replaying in one process" not in caplog.text


@pytest.mark.parametrize("workers", [2, 3])
def test_a_grid_reading_read_as_another_workers_falls_back_to_one_process(
    tmp_path: Path, workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk with as many ``MN=`` as lines is dealt out by those MNs: a grid sensor's reading (worker 0's)
    whose JSON carries the ``MN=`` of another worker's outlet is caught when decoded, not rejected there."""
    reg = parse_registry(REGISTRY)
    router = Router(reg, "auto", workers)
    other = next(mn for mn in OUTLETS if router.owner_of(mn.encode()) != 0)
    out = [_packet(mn, DAY + timedelta(hours=8, minutes=m)) for m in range(60) for mn in ("MN0001", "MN2000")]
    t = DAY + timedelta(hours=8, minutes=30)
    out.insert(
        100,
        "grid/v1/G1 "
        + json.dumps({"data_time": t.isoformat(), "values": {"a34004": {"Rtd": 40.0}}, "note": f"MN={other};"}),
    )
    path = tmp_path / "in.txt"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        one = replay(reg, f, keep_readings=True)
    assert one.grid_readings == 1 and not one.rejected
    assert _comparable(replay_parallel(reg, path, workers=workers, keep_readings=True)) == _comparable(one)
    assert "replaying in one process" in caplog.text


def test_the_cheap_owner_of_a_line_is_the_owner_of_its_decoded_mn() -> None:
    reg = parse_registry(REGISTRY)
    router = Router(reg, "auto", 3)
    t = DAY + timedelta(hours=8)
    assert {router.owner(_line(mn, t).encode()) for mn in OUTLETS if mn != "MN1004"} == {0, 1, 2}
    for mn in OUTLETS:
        w = router.owner(_line(mn, t).encode())
        assert w == (-1 if mn == "MN1004" else router.owner_of(mn.encode()))
    assert router.owner(_grid("G2", t).encode()) == 0
    # the outlets and meters of an emergency line stay together; the outlets are dealt out evenly
    assert len({router.owner_of(mn.encode()) for mn in OUTLETS}) == 3
    two_mn = _packet("MN1000", t).replace("Flag=5", "Flag=5;XMN=1")
    assert router.owner(two_mn.encode()) == -1


def test_outlets_of_one_emergency_line_go_to_one_worker() -> None:
    line = emergency_line().replace('outlets = ["MN0001"]', 'outlets = ["MN0001", "MN0002"]')
    second = '[[enterprise.outlet]]\nmn = "MN0002"\nname = "2#"\nprofile = "coal_power_ultra_low"\n'
    reg = parse_registry(one_outlet(enterprise=line, outlet=second, tail=_outlets("E002", "130602", E002)))
    for n in (2, 3, 4):
        router = Router(reg, "auto", n)
        assert router.owner_of(b"MN0001") == router.owner_of(b"MN0002")
        assert len({router.owner_of(mn.encode()) for mn in ["MN0001", *E002]}) == n


def test_a_line_read_wrong_cheaply_falls_back_to_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = parse_registry(REGISTRY)
    path = tmp_path / "in.txt"
    path.write_text("\n".join(lines()) + "\n", encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        expected = _comparable(replay(reg, f, window=100))
    monkeypatch.setattr(Router, "owner", lambda self, s: 0)  # every line to worker 0, whatever its MN
    assert _comparable(replay_parallel(reg, path, workers=2, window=100)) == expected


def _crash(how: str) -> Any:
    original = _Worker._decode

    def decode(self: _Worker, first: int, lines: list[bytes], joined: bytes) -> Any:
        if self.w == 1 and first > 0:  # worker 2, after its first chunk
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("a bug in a worker")
        return original(self, first, lines, joined)

    return decode


@pytest.mark.parametrize("how", ["kill", "exception"])
def test_a_failed_worker_is_an_error_with_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    write_inputs(tmp_path)
    (tmp_path / "in.txt").write_text("\n".join(lines() * 3) + "\n", encoding="utf-8")  # several chunks
    monkeypatch.setattr(_Worker, "_decode", _crash(how))
    hourly = tmp_path / "hourly.jsonl"
    rc = main(["replay", "--config", str(tmp_path / "r.toml"), "--input", str(tmp_path / "in.txt"),
               "--workers", "2", "--hourly-out", str(hourly)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0
    code = "killed by signal 9" if how == "kill" else "exit code 1"
    assert f"replay worker 2 of 2 failed ({code}); no output written" in err
    assert not hourly.exists()
    assert "replay: " not in err.replace("replay worker", "")  # no summary


def test_workers_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_inputs(tmp_path)
    rc = main(["replay", "--config", str(tmp_path / "r.toml"), "--input", str(tmp_path / "in.txt"), "--workers", "0"])
    assert rc == 2 and "--workers 0: must be at least 1" in capsys.readouterr().err


@pytest.mark.integration
def test_store_with_workers_writes_the_same_points(tmp_path: Path, influxdb: Any, influx_db: str) -> None:
    """``--store``: every accepted reading in the one-process order, and every result, as one process."""
    write_inputs(tmp_path)
    other = influx_db + "_w2"
    influxdb.create_db(other)
    try:
        for db, workers in ((influx_db, "1"), (other, "2")):
            r = subprocess.run(
                [sys.executable, "-m", "cems", "replay", "--config", str(tmp_path / "r.toml"), "--input",
                 str(tmp_path / "in.txt"), "--marks", str(tmp_path / "marks.jsonl"), "--warnings",
                 str(tmp_path / "warnings.json"), "--workers", workers, "--store", "--influx-url", influxdb.url,
                 "--influx-db", db],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr

        def points(db: str) -> dict[str, list[str]]:
            names = [m["name"] for m in influxdb.query(db, "SHOW MEASUREMENTS")]
            return {
                n: sorted(json.dumps(p, sort_keys=True) for p in influxdb.query(db, f'SELECT * FROM "{n}"', epoch="ns"))
                for n in names
            }

        one = points(influx_db)
        assert {"cems_reading", "cems_hourly", "cems_event", "cems_mark", "cems_rate", "grid_hourly"} <= set(one), (
            sorted(one)
        )
        assert len(one["cems_reading"]) == 3844 and len(one["grid_reading"]) == 288
        assert points(other) == one
    finally:
        influxdb.drop_db(other)
