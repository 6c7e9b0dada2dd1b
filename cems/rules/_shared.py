"""Settings objects shared by the outlets that have the same settings (memory, issue 20).

Every per-outlet tracker keeps its settings (limits, unit factors, tolerances, …) in one small object; at
100 000 outlets most of them have the same, so the trackers share one object per distinct set of values
instead of each holding its own (docs/benchmark.md, *memory at 100 000 outlets*).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Generic, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Compared by value in a key; any other argument (a limit schedule, a mapping, a config model) by identity.
_BY_VALUE = (bool, int, float, str, timedelta, type(None))


class SharedSettings(Generic[_P, _T]):
    """A bounded table of the settings objects ``make`` has made, one per distinct set of arguments.

    Arguments that are plain values are compared by value, the others by identity: the table holds the
    arguments of each kept object, so an identity is not reused while its entry exists.  Once ``size`` objects
    are kept, new ones are made but not kept (correct, only not shared).
    """

    __slots__ = ("_kept", "_make", "_size")

    def __init__(self, make: Callable[_P, _T], size: int = 4096) -> None:
        self._make = make
        self._size = size
        self._kept: dict[tuple[Hashable, ...], tuple[_T, tuple[object, ...]]] = {}

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """The shared object made from these arguments (made when new)."""
        key = (*map(_key, args), *((name, _key(v)) for name, v in kwargs.items()))
        kept = self._kept.get(key)
        if kept is not None:
            return kept[0]
        obj = self._make(*args, **kwargs)
        if len(self._kept) < self._size:
            self._kept[key] = (obj, (*args, *kwargs.values()))
        return obj

    def __len__(self) -> int:
        return len(self._kept)


def _key(a: object) -> Hashable:
    return a if isinstance(a, _BY_VALUE) else id(a)


#: The hour starts :func:`shared_hour` has kept, each value once (bounded: emptied when full).
_HOURS: dict[int, int] = {}
_HOURS_MAX = 4096


def shared_hour(hour: int) -> int:
    """An int equal to ``hour``: the object kept for that value (kept now if new).

    Memory (issue 20): an hour start (epoch s) is an int object of 32 bytes, and every outlet keeps a few (its
    open hour, the hour before which every hour is emitted, the newest hour of its quality summaries), made
    from its own readings; in a city the outlets are in the same few hours, so they share one object per hour
    instead of each keeping its own.  Called where an outlet keeps a new hour (once an hour), never per
    reading.  Ints are immutable and compared by value: sharing one changes nothing else."""
    kept = _HOURS.get(hour)
    if kept is None:
        if len(_HOURS) >= _HOURS_MAX:
            _HOURS.clear()
        kept = _HOURS[hour] = hour
    return kept
