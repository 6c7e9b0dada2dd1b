"""Emergency lists, power meters and staggered windows in the registry (issue 16)."""

from __future__ import annotations

import pytest
from registries import emergency_line, one_outlet  # tests/registries.py

from cems.errors import RegistryError
from cems.registry import CutMeasure, parse_registry


def test_line_loads() -> None:
    reg = parse_registry(
        one_outlet(
            city="",
            enterprise=emergency_line(
                line='measure = { yellow = "profile", orange = { cut = { a21026 = 0.25 } }, red = "stop" }\n',
                staggered='[[enterprise.line.staggered]]\nfrom = 2021-12-22\nto = 2022-02-09\nreason = "砖瓦窑"\n'
                '[[enterprise.line.staggered]]\nwarning_at_least = "orange"\n',
            ),
            tail='[emergency]\nprofile = "xinmi_langfang"\n',
        )
    )
    e = reg.enterprise[0]
    assert e.grade == "C"
    ln = e.line[0]
    assert ln.outlets == ["MN0001"] and ln.baseline == {"a21026": 10.0, "a21002": 40.0}
    assert ln.measure["red"] == "stop" and isinstance(ln.measure["orange"], CutMeasure)
    assert ln.production_power is not None and ln.production_power.code == "ep01"
    assert ln.staggered[0].start is not None and ln.staggered[1].warning_at_least == "orange"
    assert reg.emergency.profile == "xinmi_langfang"


@pytest.mark.parametrize(
    ("enterprise", "tail", "message"),
    [
        (
            emergency_line(line='outlets = ["NOPE"]\n').replace('outlets = ["MN0001"]\n', ""),
            "",
            r"line\[0\]\(kiln1\)\.outlets: 'NOPE' is not an outlet MN",
        ),
        (
            emergency_line(line="measure = { orange = { cut = { a34013 = 0.2 } } }\n"),
            "",
            r"line\[0\]\(kiln1\): measure\.orange: cut of a34013 without a baseline",
        ),
        (emergency_line(line="measure = { orange = { cut = { a21026 = 1.5 } } }\n"), "", r"less than or equal to 1"),
        (emergency_line(line='measure = { yellow = "profile" }\n'), "", r"\"profile\" but no profile"),
        (emergency_line(line='profile = "atlantis"\n'), "", r"unknown emergency profile 'atlantis'"),
        (
            emergency_line(staggered="[[enterprise.line.staggered]]\nfrom = 2022-02-09\nto = 2021-12-22\n"),
            "",
            r"staggered\[0\].*ends .* before it starts",
        ),
        (
            emergency_line(staggered='[[enterprise.line.staggered]]\nreason = "x"\n'),
            "",
            r"needs from/to dates, warning_at_least",
        ),
        (emergency_line() + '[[enterprise.line]]\nid = "kiln1"\n', "", r"line\[1\]\(kiln1\)\.id: duplicate line id"),
        ('grade = "E"\n', "", r"grade"),
        ("", '[emergency]\nprofile = "nowhere"\n', r"emergency.*unknown emergency profile"),
    ],
)
def test_problems_with_location(enterprise: str, tail: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        parse_registry(one_outlet(enterprise=enterprise, tail=tail))


def test_stop_without_operation_signs() -> None:
    text = (
        '[[enterprise.line]]\nid = "mill"\noutlets = ["MN0001"]\n[[enterprise.line.staggered]]\n'
        'warning_at_least = "blue"\n'
    )
    with pytest.raises(RegistryError, match=r"line\[0\]\(mill\): must stop .* no sign of operation"):
        parse_registry(one_outlet(enterprise=text))
