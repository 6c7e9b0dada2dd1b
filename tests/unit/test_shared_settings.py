"""cems.rules._shared.SharedSettings: one settings object per distinct set of values (memory, issue 20)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cems.rules._shared import SharedSettings


@dataclass(eq=False)
class _S:
    n: int
    tol: float
    window: timedelta
    table: dict[str, float]


def test_same_values_share_one_object_and_other_values_do_not() -> None:
    make = SharedSettings(_S)
    table = {"a": 1.0}
    first = make(3, 0.5, timedelta(hours=1), table)
    assert make(3, 0.5, timedelta(hours=1), table) is first
    assert make(3, 0.5, window=timedelta(hours=1), table=table) is not first  # another way of calling: its own
    assert make(3, 0.5, window=timedelta(hours=1), table=table) is make(3, 0.5, window=timedelta(hours=1), table=table)
    assert make(4, 0.5, timedelta(hours=1), table) is not first
    assert make(3, 0.25, timedelta(hours=1), table) is not first
    assert make(3, 0.5, timedelta(hours=2), table) is not first


def test_objects_other_than_plain_values_are_compared_by_identity() -> None:
    make = SharedSettings(_S)
    a = make(1, 0.0, timedelta(0), {"x": 1.0})
    b = make(1, 0.0, timedelta(0), {"x": 1.0})  # an equal but distinct table
    assert a is not b and a.table == b.table


def test_the_table_keeps_the_arguments_alive_so_an_identity_is_not_reused() -> None:
    make = SharedSettings(_S)
    made = [make(1, 0.0, timedelta(0), {"x": float(i)}) for i in range(200)]  # temporaries, freed at once
    assert len({id(m) for m in made}) == 200
    assert [m.table["x"] for m in made] == [float(i) for i in range(200)]


def test_bounded_new_objects_are_made_but_not_kept_when_full() -> None:
    make = SharedSettings(_S, size=2)
    t = {"a": 1.0}
    s1, s2, s3 = (make(n, 0.0, timedelta(0), t) for n in (1, 2, 3))
    assert len(make) == 2
    assert make(1, 0.0, timedelta(0), t) is s1 and make(2, 0.0, timedelta(0), t) is s2
    assert make(3, 0.0, timedelta(0), t) is not s3 and make(3, 0.0, timedelta(0), t).n == 3
