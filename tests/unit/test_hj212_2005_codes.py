"""HJ/T 212-2005 codes become HJ 212-2017 codes when a 2005 packet is decoded (issue 12 item 5): a 2005
device's SO2 (``02``) meets its limit and counts for its rate."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta
from importlib import resources

import pytest

from cems.model import BEIJING
from cems.protocol.hj212 import decode, encode, fast_reading, to_reading
from cems.protocol.hj212._codes import codes_2005
from cems.registry import parse_registry
from cems.replay import replay

REG = parse_registry(
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="MN1"\nname="o"\nprofile="coal_power_ultra_low"\npassword="123456"\n'
)
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=BEIJING)
V2005 = {"02": {"Rtd": 91.0, "Flag": "N"}, "S01": {"Rtd": 6.0, "Flag": "N"}, "01": {"Rtd": 3.0, "Flag": "N"}}


def packet(flag: int | None, t: datetime = T0, values: dict[str, dict[str, object]] = V2005) -> str:
    return encode(cn="2011", st="31", pw="123456", mn="MN1", flag=flag, qn=t.strftime("%Y%m%d%H%M%S000"),
                  data_time=t, values=values, crlf=False)  # type: ignore[arg-type]  # fmt: skip


def test_the_table_is_package_data_with_its_source_cited() -> None:
    text = resources.files("cems.protocol").joinpath("hj212_2005_codes.toml").read_text(encoding="utf-8")
    assert "HJ 212-2017" in text and "附录 B" in text and "HJ/T 212-2005" in text
    table = codes_2005()
    assert {k: table[k].code for k in ("01", "02", "03", "S01", "S03", "B02")} == {
        "01": "a34013",
        "02": "a21026",
        "03": "a21002",
        "S01": "a19001",
        "S03": "a01012",
        "B02": "a00000",
    }
    assert all(c.code[0].isalpha() and len(c.code) == 6 for c in table.values())
    assert set(tomllib.loads(text)["codes"]) == set(table)


@pytest.mark.parametrize("flag", [0, 1, None])
def test_a_2005_packet_decodes_to_2017_codes_on_both_paths(flag: int | None) -> None:
    text = packet(flag)
    r = to_reading(decode(text))
    assert sorted(r.measurements) == ["a19001", "a21026", "a34013"]
    assert r.measurements["a21026"].values == {"Rtd": 91.0} and r.measurements["a21026"].code == "a21026"
    fast = fast_reading(text)
    if flag is not None:  # (a packet without Flag takes the full path)
        assert fast is not None and fast[2] == r


@pytest.mark.parametrize("flag", [4, 5, 9])
def test_2017_and_2025_packets_keep_their_codes(flag: int) -> None:
    r = to_reading(decode(packet(flag)))
    assert sorted(r.measurements) == ["01", "02", "S01"]


def test_a_2017_code_sent_beside_its_2005_code_is_not_overwritten() -> None:
    r = to_reading(decode(packet(1, values={"02": {"Rtd": 1.0}, "a21026": {"Rtd": 2.0}})))
    assert r.measurements["a21026"].values == {"Rtd": 2.0} and r.measurements["02"].values == {"Rtd": 1.0}


def test_a_2005_device_s_so2_meets_its_limit_and_counts_for_its_rate() -> None:
    lines = [packet(1, T0 + timedelta(seconds=30 * i)) for i in range(4)]
    res = replay(REG, lines, "hj212")
    assert not res.rejected and res.readings == 4
    warnings = [e for e in res.events if e.type == "realtime_warning"]
    assert [e.pollutant for e in warnings] == ["a21026"]  # 91 > 35 at 6 % O2 (today: no limit for "02")
    assert {h.pollutant for h in res.hourly} >= {"a21026", "a34013"}
