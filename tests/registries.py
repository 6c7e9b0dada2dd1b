"""The small registry most tests use: one district, one enterprise, outlet MN0001 (coal power ultra-low,
HJ 212 PW 123456).  Tests add what they need at the marked places."""

from __future__ import annotations

from datetime import datetime

from cems.protocol.hj212 import encode


def one_outlet(*, city: str = "", enterprise: str = "", outlet: str = "", tail: str = "") -> str:
    return (
        '\ntimezone = "Asia/Shanghai"\n[city]\nname = "测试市"\n'
        + city
        + '[[district]]\ncode = "130602"\nname = "竞秀区"\n'
        + '[[enterprise]]\nid = "E001"\nname = "示例热电有限公司"\ndistrict = "130602"\n'
        + enterprise
        + '[[enterprise.outlet]]\nmn = "MN0001"\nname = "1#机组排放口"\nprofile = "coal_power_ultra_low"\n'
        + 'password = "123456"\n'
        + outlet
        + tail
    )


def emergency_line(*, line: str = "", staggered: str = "") -> str:
    """An emergency-list line (issue 16) for :func:`one_outlet`'s ``enterprise``: kiln1 on MN0001 with SO2/NOx
    baselines 10/40 kg/h, running state SB1, production power ep01 and treatment power et01 on MN0001."""
    return (
        'grade = "C"\n[[enterprise.line]]\nid = "kiln1"\nname = "1#熟料生产线"\noutlets = ["MN0001"]\n'
        "baseline = { a21026 = 10.0, a21002 = 40.0 }\n"
        'running_codes = ["SB1"]\nproduction_power = { code = "ep01" }\ntreatment_power = { code = "et01" }\n'
        "idle_flow_m3_s = 1.0\nidle_power_kw = 5.0\ntreatment_idle_power_kw = 2.0\n" + line + staggered
    )


def many_outlets(n: int, *, city: str = "") -> str:
    """:func:`one_outlet` (MN0001, enterprise E001) and ``n`` more outlets ``MN1000``… (PW 123456) of enterprise
    E002 in the same district: a city whose outlets spread over several shards (issue 20)."""
    extra = '[[enterprise]]\nid = "E002"\nname = "示例水泥有限公司"\ndistrict = "130602"\n' + "".join(
        f'[[enterprise.outlet]]\nmn = "MN{1000 + i}"\nname = "{i}#窑尾"\nprofile = "coal_power_ultra_low"\n'
        'password = "123456"\n'
        for i in range(n)
    )
    return one_outlet(city=city, tail=extra)


#: Two coal-power outlets MN1 and MN2 of one enterprise (HJ 212 PW 123456): the rules-guard and alert-commit
#: tests feed them minute records of :func:`minute_packet`.
TWO_OUTLETS = (
    '[city]\nname="c"\n[[district]]\ncode="D"\nname="d"\n[[enterprise]]\nid="E"\nname="e"\ndistrict="D"\n'
    '[[enterprise.outlet]]\nmn="MN1"\nname="o"\nprofile="coal_power_ultra_low"\npassword="123456"\n'
    '[[enterprise.outlet]]\nmn="MN2"\nname="p"\nprofile="coal_power_ultra_low"\npassword="123456"\n'
)


def minute_packet(mn: str, t: datetime, so2: float) -> str:
    """An HJ 212 minute record (CN=2051) of ``mn`` at ``t``: SO2 ``so2`` mg/m³ and O2 6 %, both flag N."""
    return encode(
        cn="2051", st="31", pw="123456", mn=mn, flag=4, qn=t.strftime("%Y%m%d%H%M%S000"), data_time=t,
        values={"a21026": {"Avg": so2, "Flag": "N"}, "a19001": {"Avg": 6.0, "Flag": "N"}}, crlf=False,
    )  # fmt: skip
