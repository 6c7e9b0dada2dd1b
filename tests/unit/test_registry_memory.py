"""Memory of the registry at 100 000 outlets (issue 20): outlets and enterprises keep their fields in the object
(shared key table) and share their empty containers.  These check that the compact models stay equal to what
pydantic validated, and that the shared empty containers are never written to."""

from __future__ import annotations

import sys

from cems.devtools.bench import _data
from cems.engine import ComplianceEngine
from cems.registry import Outlet, Registry, parse_registry, with_credentials
from cems.registry._model import _EMPTY_DICT, _EMPTY_LIST

TOML = """
[city]
name = "测试市"

[[district]]
code = "130602"
name = "竞秀区"

[[enterprise]]
id = "E1"
name = "企业一"
district = "130602"

[[enterprise.outlet]]
mn = "MN1"
name = "1#排放口"
profile = "coal_power_ultra_low"
password_env = "PW_MN1"

[[enterprise.outlet]]
mn = "MN2"
name = "2#排放口"
profile = "boiler_coal_special"
limits = { a21026 = 30.0 }
units = { a00000 = "m3/h" }

[[enterprise.outlet.stop]]
from = 2026-03-01
to = 2026-03-02
reason = "检修"
"""


def _plain(o: Outlet) -> Outlet:
    """The outlet as pydantic alone makes it (its own ``__dict__``)."""
    return Outlet.model_validate(o.model_dump(by_alias=True, exclude_unset=True))


def test_compact_outlets_equal_what_pydantic_validated_and_keep_no_dict_of_their_own() -> None:
    reg = parse_registry(TOML)
    for info in reg.outlets():
        o = info.outlet
        plain = _plain(o)
        assert o == plain and o.model_dump() == plain.model_dump()
        assert o.model_fields_set == plain.model_fields_set
        # fields in the object: the dict pydantic reads is made on demand and shares the class's keys
        assert sys.getsizeof(o.__dict__) < sys.getsizeof(dict(o.__dict__))
    mn2 = reg.outlet("MN2")
    assert mn2 is not None
    assert mn2.outlet.limits == {"a21026": 30.0} and mn2.outlet.stop[0].reason == "检修"
    assert mn2.enterprise is reg.enterprise[0] and reg.enterprise[0].outlet[1] is mn2.outlet


def test_empty_containers_are_shared_and_stay_empty() -> None:
    reg = parse_registry(_data.registry_toml(20))
    outlets = [i.outlet for i in reg.outlets()]
    assert all(o.limits is _EMPTY_DICT and o.stop is _EMPTY_LIST for o in outlets)
    # what the service does with a registry: credentials, an engine fed a reading per outlet
    reg = with_credentials(reg, {})
    engine = ComplianceEngine(reg)
    from cems.decode import decode_message

    for topic, payload in _data.throughput_messages(20, 40):
        engine.on_reading(decode_message(topic, payload, reg).reading)
    assert _EMPTY_DICT == {} and _EMPTY_LIST == []


def test_resolved_credentials_give_compact_equal_outlets() -> None:
    reg = parse_registry(TOML)
    resolved: Registry = with_credentials(reg, {"PW_MN1": "s3cret"})
    info = resolved.outlet("MN1")
    assert info is not None and info.outlet.hj212_password == "s3cret"
    assert info.outlet == info.outlet.model_copy()  # pydantic's copy has a dict of its own
    assert sys.getsizeof(info.outlet.__dict__) < sys.getsizeof(dict(info.outlet.__dict__))
    assert resolved.outlet("MN2").outlet == reg.outlet("MN2").outlet  # type: ignore[union-attr]
