"""The small registry most tests use: one district, one enterprise, outlet MN0001 (coal power ultra-low,
HJ 212 PW 123456).  Tests add what they need at the marked places."""

from __future__ import annotations


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
