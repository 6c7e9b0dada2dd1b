from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from cems.errors import RegistryError
from cems.limits import builtin_profiles
from cems.model import BEIJING
from cems.registry import load_registry, parse_registry, registry_warnings, with_credentials

BASE = """
timezone = "Asia/Shanghai"
[city]
name = "示例市"
transmission_rate_target = 0.90
supervision_enterprise_threshold = 5
ack_sla_hours = 2
[[district]]
code = "130602"
name = "竞秀区"
[[enterprise]]
id = "E001"
name = "示例热电有限公司"
district = "130602"
sector = "power"
[[enterprise.outlet]]
mn = "010000A8900016F000169DC0"
name = "1#机组排放口"
profile = "coal_power_ultra_low"
password = "123456"
rtd_interval_s = 30
[enterprise.outlet.limits]
a34013 = 5.0
[enterprise.outlet.units]
a00000 = "m3/h"
[[enterprise.outlet.stop]]
from = 2026-02-01
to = 2026-02-03T12:00:00
reason = "停产检修"
"""


def test_issue_example_loads_with_lookups() -> None:
    r = parse_registry(BASE)
    info = r.outlet("010000A8900016F000169DC0")
    assert info is not None
    assert info.enterprise.id == "E001" and info.district.name == "竞秀区"
    assert info.outlet.limits == {"a34013": 5.0} and info.outlet.units == {"a00000": "m3/h"}
    assert r.city.assessed_factors == ["a34013", "a21026", "a21002"]
    assert r.outlet("nope") is None


def test_stop_dates_are_beijing_time_and_end_exclusive() -> None:
    o = parse_registry(BASE).enterprise[0].outlet[0]
    assert o.in_stop(datetime(2026, 2, 1, 0, 0, tzinfo=BEIJING))
    assert o.in_stop(datetime(2026, 2, 3, 11, 59, tzinfo=BEIJING))
    assert not o.in_stop(datetime(2026, 2, 3, 12, 0, tzinfo=BEIJING))
    # 2026-01-31T16:00Z is Beijing midnight of 02-01
    assert o.in_stop(datetime.fromisoformat("2026-01-31T16:00:00+00:00"))
    assert not o.in_stop(datetime.fromisoformat("2026-01-31T15:59:59+00:00"))


def test_interruption_threshold_default_is_max_of_10_minutes_and_3_intervals() -> None:
    o = parse_registry(BASE).enterprise[0].outlet[0]
    assert o.interruption_threshold == 600
    o2 = parse_registry(BASE.replace("rtd_interval_s = 30", "rtd_interval_s = 300")).enterprise[0].outlet[0]
    assert o2.interruption_threshold == 900


def test_every_problem_is_reported_with_its_location() -> None:
    bad = (
        BASE.replace('profile = "coal_power_ultra_low"', 'profile = "nope"').replace(
            "rtd_interval_s = 30", "rtd_interval_s = -5"
        )
        + '\n[[enterprise]]\nid = "E002"\nname = "x"\n'
    )
    with pytest.raises(RegistryError) as e:
        parse_registry(bad, "r.toml")
    problems = e.value.problems
    assert any(
        p.startswith("enterprise[0](E001).outlet[0](010000A8900016F000169DC0).profile: unknown") for p in problems
    )
    assert any(p.startswith("enterprise[0](E001).outlet[0](010000A8900016F000169DC0).rtd_interval_s") for p in problems)
    assert any(p.startswith("enterprise[1](E002).district: Field required") for p in problems)
    assert "r.toml" in str(e.value)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (('district = "130602"\nsector', 'district = "999"\nsector'), "'999' is not a [[district]] code"),
        (('mn = "010000A8900016F000169DC0"', 'mn = "bad MN with spaces"'), "must be 1-24 letters"),
        (("to = 2026-02-03T12:00:00", "to = 2026-01-01"), "stop ends"),
        (('timezone = "Asia/Shanghai"', 'timezone = "Mars/Base"'), "unknown time zone"),
        (("transmission_rate_target = 0.90", "transmission_rate_target = 1.5"), "less than or equal to 1"),
        (("a34013 = 5.0", "a34013 = -5.0"), "greater than 0"),
        (("[city]", "unknown_key = 1\n[city]"), "Extra inputs are not permitted"),
    ],
)
def test_invalid_registries(mutation: tuple[str, str], expected: str) -> None:
    old, new = mutation
    assert old in BASE
    with pytest.raises(RegistryError) as e:
        parse_registry(BASE.replace(old, new, 1))
    assert expected in str(e.value)


def test_duplicate_mn_across_enterprises() -> None:
    dup = BASE + (
        '\n[[enterprise]]\nid = "E002"\nname = "y"\ndistrict = "130602"\n[[enterprise.outlet]]\n'
        'mn = "010000A8900016F000169DC0"\nname = "x"\nprofile = "cement_kiln"\n'
    )
    with pytest.raises(RegistryError, match="duplicate MN '010000A8900016F000169DC0' \\(also in enterprise 'E001'\\)"):
        parse_registry(dup)


def test_toml_syntax_error_and_missing_file(tmp_path: object) -> None:
    with pytest.raises(RegistryError, match="TOML syntax"):
        parse_registry("[city\nname=")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry("/nonexistent/registry.toml")


def test_password_from_environment() -> None:
    text = BASE.replace('password = "123456"', 'password_env = "PW_E001"')
    resolved = with_credentials(parse_registry(text), {"PW_E001": "s3cret"})
    assert resolved.enterprise[0].outlet[0].hj212_password == "s3cret"


def test_registry_check_warns_where_a_profile_change_ends_an_explicit_ref_o2() -> None:
    text = BASE.replace(
        'profile = "coal_power_ultra_low"',
        'profile = "boiler_coal_special"\nref_o2 = 9.0\nlimit_change = ['
        '{from = 2026-06-01, profile = "boiler_gas_special", reason = "煤改气"}, {from = 2026-08-01, ref_o2 = 4.0}, '
        '{from = 2026-09-01, profile = "boiler_oil_special"}]',
        1,
    )
    warnings = [w for w in registry_warnings(parse_registry(text)) if "ref_o2" in w]
    assert len(warnings) == 2
    assert warnings[0].startswith("enterprise[0](E001).outlet[0](010000A8900016F000169DC0).limit_change[0]")
    assert "9 % (outlet.ref_o2) ends here and 'boiler_gas_special''s 3.5 % applies" in warnings[0]
    assert "4 % (limit_change[1].ref_o2)" in warnings[1]
    assert not [w for w in registry_warnings(parse_registry(BASE)) if "ref_o2" in w]


def test_a_timezone_other_than_beijing_is_refused_unless_allowed() -> None:
    """Issue 12 item 10: HJ 212 DataTime is Beijing time; another zone would shift every hour."""
    berlin = BASE.replace('timezone = "Asia/Shanghai"', 'timezone = "Europe/Berlin"')
    with pytest.raises(RegistryError, match="timezone: 'Europe/Berlin' is not Beijing time"):
        parse_registry(berlin)
    allowed = parse_registry(berlin.replace("[city]", "allow_non_beijing_timezone = true\n[city]", 1))
    assert allowed.timezone == "Europe/Berlin"
    assert any(w.startswith("timezone: 'Europe/Berlin'") for w in registry_warnings(allowed))
    assert parse_registry(BASE.replace('timezone = "Asia/Shanghai"', 'timezone = "PRC"')).timezone == "PRC"


def test_profiles_cite_their_source_and_mark_unverified_values() -> None:
    p = builtin_profiles()
    gt = p["gas_turbine_ultra_low"]
    assert "GB 13223-2011" in gt.citation and "15 %" in gt.citation and not gt.verify
    pellet = p["steel_pellet_roasting_ultra_low"]
    assert pellet.ref_o2 == 18.0 and pellet.verify and "verify" in pellet.citation
    reg = parse_registry(BASE.replace('"coal_power_ultra_low"', '"steel_pellet_roasting_ultra_low"', 1))
    assert any("'steel_pellet_roasting_ultra_low'" in w and "verify" in w for w in registry_warnings(reg))


def test_builtin_profiles_match_domain_table() -> None:
    """DOMAIN.md §4 (mg/m³ at reference O2): spot-check the profiles the issue names."""
    p = builtin_profiles()
    expect = {
        "coal_power_ultra_low": (6.0, 10, 35, 50),
        "gas_turbine_ultra_low": (15.0, 5, 35, 50),
        "thermal_power_special": (6.0, 20, 50, 100),
        "boiler_coal_special": (9.0, 30, 200, 200),
        "boiler_oil_special": (3.5, 30, 100, 200),
        "boiler_gas_special": (3.5, 20, 50, 150),
        "cement_kiln_special": (10.0, 20, 100, 320),
        "cement_kiln": (10.0, 30, 200, 400),
        "steel_sinter_ultra_low": (16.0, 10, 35, 50),
        "glass_furnace": (8.0, 50, 400, 700),
    }
    for name, (o2, pm, so2, nox) in expect.items():
        prof = p[name]
        assert (prof.ref_o2, prof.limits["a34013"], prof.limits["a21026"], prof.limits["a21002"]) == (o2, pm, so2, nox)
        assert prof.citation and prof.basis == "hourly"


def test_registry_and_stops_files_give_clear_errors_not_tracebacks(tmp_path: Path) -> None:
    """Issue 13, item 12: encodings, malformed stops, clashing ids, wildcard prefixes, strict types."""
    gbk = tmp_path / "gbk.toml"
    gbk.write_bytes(BASE.encode("gbk"))
    with pytest.raises(RegistryError, match=r"line \d+: not UTF-8 .*save the file as UTF-8"):
        load_registry(gbk)
    good = tmp_path / "r.toml"
    good.write_text(BASE, encoding="utf-8")
    stops = tmp_path / "r.stops.toml"
    for text, expect in (
        ("stop = 5\n", "must be an array of tables"),
        ("stop = [1, 2]\n", r"stop\[0\]: must be a table"),
        ("[[stop]]\nfrom = 2026-01-01\nto = 2026-01-02\n", r"stop\[0\].mn: must be the MN string"),
        ("[[stop]\n", "TOML syntax"),
    ):
        stops.write_text(text, encoding="utf-8")
        with pytest.raises(RegistryError, match=expect) as exc:
            load_registry(good)
        assert str(stops) in str(exc.value)
    stops.write_bytes('# 停产\n[[stop]]\nmn = "x"\n'.encode("gbk"))
    with pytest.raises(RegistryError, match="not UTF-8"):
        load_registry(good)
    stops.unlink()

    mn = "010000A8900016F000169DC0"
    grid = BASE + f'\n[[grid_sensor]]\nid = "{mn}"\ndistrict = "130602"\n'
    with pytest.raises(RegistryError, match=r"grid_sensor\[0\].id: .* is also an outlet MN"):
        parse_registry(grid)
    for prefix in ("cems/+/v1", "cems/#", "/cems", "cems//v1", ""):
        with pytest.raises(RegistryError, match=r"topics.prefix: .*wildcards"):
            parse_registry(BASE + f'\n[topics]\nprefix = "{prefix}"\n')
    with pytest.raises(RegistryError, match=r"enterprise\[0\]\(E001\).outlet\[0\]\(.*\).rtd_interval_s"):
        parse_registry(BASE.replace("rtd_interval_s = 30", 'rtd_interval_s = "30"'))
