"""Issue 13, item 6: pollutant codes and suffixes follow a grammar, values are finite and of a sane magnitude,
a reading carries a bounded number of fields, and HJ 212 values that are not numbers are counted, not silent."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from registries import one_outlet  # tests/registries.py

from cems.decode import decode_message
from cems.errors import RejectedMessage
from cems.model import Measurement, Reading, Stream
from cems.protocol.hj212._crc import crc16
from cems.registry import parse_registry
from cems.replay import replay
from cems.service.ingest import IngestService
from cems.service.mqtt import InboundMessage, MqttSettings
from cems.sinks.influx import InfluxConfig
from cems.validate import MAX_FIELDS, check_values, validate

REG = parse_registry(one_outlet(tail='[[grid_sensor]]\nid = "G001"\ndistrict = "130602"\ntownship = "先锋街道"\n'))
NOW = datetime(2026, 11, 22, 0, 30, tzinfo=UTC)


def reading(values: dict[str, dict[str, float]]) -> Reading:
    return Reading("MN0001", Stream.RTD, NOW, {c: Measurement(c, v, "N") for c, v in values.items()})


@pytest.mark.parametrize(
    "code", ["a21026", "a34013", "w01018", "a00000", "01", "011", "S01", "B02", "LA", "SB1", "ua19004", "pms_rules"]
)
@pytest.mark.parametrize("suffix", ["Rtd", "Avg", "Min", "Max", "ZsRtd", "ZsAvg", "ZsCou", "Cou", "RS", "td"])
def test_legitimate_codes_and_suffixes_pass(code: str, suffix: str) -> None:
    check_values(reading({code: {suffix: 1.0}}))


@pytest.mark.parametrize(
    ("code", "suffix"),
    [
        ("a21026", "Rtd\\"),  # InfluxDB refused the whole batch: found by bisection, ×58 slower for everyone
        ("a21026", "R td"),
        ("a21026", "Rtd,x=1"),
        ("a21026", "Rtd_Avg"),
        ("a21026", ""),
        ("a21026", "1Rtd"),
        ("a21026", "R" * 17),
        ("a21 026", "Rtd"),
        ("a21026\\", "Rtd"),
        ('a"1', "Rtd"),
        ("", "Rtd"),
        ("a" * 25, "Rtd"),
        ("二氧化硫", "Rtd"),
    ],
)
def test_ill_formed_names_are_bad_field(code: str, suffix: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        check_values(reading({code: {suffix: 1.0}}))
    assert e.value.reason == "bad_field"


def test_too_many_fields_is_bad_field() -> None:
    ok = {f"a{i:05d}": {"Rtd": 1.0} for i in range(MAX_FIELDS // 2)}  # + a flag each: exactly the bound
    check_values(reading(ok))
    with pytest.raises(RejectedMessage) as e:
        check_values(reading({**ok, "a99999": {"Rtd": 1.0}}))
    assert e.value.reason == "bad_field" and str(MAX_FIELDS) in e.value.detail


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"x99999": {"Rtd": 1e308}}, "absurd_value"),  # stored before: no range for an unknown code
        ({"w01018": {"Avg": -1e300}}, "absurd_value"),
        ({"a21026": {"Cou": 1e300}}, "absurd_value"),  # Cou was only checked for finiteness
        ({"w01018": {"Avg": float("inf")}}, "not_finite"),
        ({"a21026": {"Rtd": float("nan")}}, "not_finite"),
        ({"a21026": {"Rtd": -50.0}}, "negative_value"),
        ({"a34013": {"Avg": 2e6}}, "absurd_value"),
    ],
)
def test_absurd_and_non_finite_values_are_rejected(values: dict[str, dict[str, float]], reason: str) -> None:
    with pytest.raises(RejectedMessage) as e:
        check_values(reading(values))
    assert e.value.reason == reason


def test_a_bad_value_beside_good_ones_is_left_out_not_rejected() -> None:
    r = check_values(reading({"x99999": {"Rtd": 1e308}, "a21026": {"Rtd": 80.0}, "a34013": {"Avg": 2e6}}))
    assert r.dropped == ("x99999-Rtd", "a34013-Avg")
    assert r.measurements["a21026"].values == {"Rtd": 80.0} and r.measurements["x99999"].values == {}


def test_large_but_plausible_values_pass() -> None:
    check_values(reading({"a00000": {"Cou": 9.9e11, "Rtd": 1e6}, "w00000": {"Cou": -1e11}}))


def packet(cp: str) -> bytes:
    seg = f"QN=20261122083000000;ST=31;CN=2011;PW=123456;MN=MN0001;Flag=5;CP=&&DataTime=20261122083000;{cp}&&"
    return f"##{len(seg):04d}{seg}{crc16(seg.encode()):04X}".encode()


def test_hj212_nan_and_inf_are_dropped_counted_and_the_values_beside_them_kept() -> None:
    cp = "a21026-Rtd=nan,a21026-Flag=N;a19001-Rtd=inf;a34013-Rtd=5.0,a34013-Flag=N"
    r = decode_message("cems/v1/MN0001/hj212", packet(cp), REG).reading
    assert r.dropped == ("a21026-Rtd", "a19001-Rtd")
    assert r.measurements["a34013"].values == {"Rtd": 5.0} and r.measurements["a21026"].values == {}
    validate(r, REG, NOW)
    svc = IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"))
    p = svc.prepare([InboundMessage("cems/v1/MN0001/hj212", packet(cp), 1, 1, time.time())])
    assert len(p.good) == 1 and "a34013_Rtd=5.0" in p.lines[0] and "a21026_Rtd" not in p.lines[0]
    assert svc.stats.values_dropped == 2 and svc.stats.as_dict()["values_dropped"] == 2
    res = replay(REG, [packet(cp).decode()])
    assert res.readings == 1 and res.values_dropped == 2


def test_hj212_field_name_with_a_backslash_is_bad_field_live() -> None:
    svc = IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"))
    msgs = [
        InboundMessage("cems/v1/MN0001/hj212", packet("a21026-Rtd\\=1.0"), 1, 1, time.time()),
        InboundMessage("cems/v1/MN0001/hj212", packet("x99999-Rtd=1e308"), 2, 1, time.time()),
        InboundMessage("cems/v1/MN0001/hj212", packet("a21026-Rtd=1.0"), 3, 1, time.time()),
    ]
    p = svc.prepare(msgs)
    assert [m.mid for m in p.good] == [3]
    assert [(m.mid, e.reason) for m, e in p.rejects] == [(1, "bad_field"), (2, "absurd_value")]


def grid(body: dict[str, object]) -> InboundMessage:
    return InboundMessage("grid/v1/G001", json.dumps(body).encode(), 1, 1, time.time())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"data_time": "2099-01-01T00:00:00+08:00", "values": {"a34004": {"Rtd": 35.0}}}, "future_data_time"),
        ({"data_time": "2000-01-01T00:00:00+08:00", "values": {"a34004": {"Rtd": 35.0}}}, "stale_data_time"),
        ({"data_time": "2026-11-22T08:00:00+08:00", "values": {"a34004": {"Rtd": 1e300}}}, "absurd_value"),
        ({"data_time": "2026-11-22T08:00:00+08:00", "values": {"a34004": {"Rtd": -40.0}}}, "negative_value"),
        ({"data_time": "2026-11-22T08:00:00+08:00", "values": {"a34004": {"Rtd\\": 1.0}}}, "bad_field"),
    ],
)
def test_grid_readings_get_the_same_validation(body: dict[str, object], reason: str) -> None:
    svc = IngestService(REG, MqttSettings(), InfluxConfig(url="http://127.0.0.1:9", db="x"))
    now = datetime.now(UTC)
    ok = grid({"data_time": now.isoformat(), "values": {"a34004": {"Rtd": 35.0}}})
    p = svc.prepare([grid(body), ok])
    assert [e.reason for _, e in p.rejects] == [reason] and len(p.good) == 1
