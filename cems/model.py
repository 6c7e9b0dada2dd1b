"""The domain model shared by every pipeline stage: readings from an outlet (排放口).

A *reading* is what one DAS message carries: the values of several pollutant codes for one outlet, one
stream (real-time, minute, hour, day) and one data time.  It is the same whether it arrived as JSON over
MQTT or as an HJ 212 packet; decoders produce it, the validator checks it, rules and sinks consume it.

Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Final, NamedTuple

#: Beijing time: the Chinese standards (HJ 212, HJ 75) use UTC+8 without daylight saving.
BEIJING: Final = timezone(timedelta(hours=8), "Asia/Shanghai")


def unix_time(t: datetime) -> float:
    """``t.timestamp()``, remembered for aware datetimes (by identity; a naive ``t`` is local time, as
    ``timestamp()`` reads it, and not remembered).  An aware datetime's ``timestamp()`` costs ≈ 6 000
    instructions (callgrind), and a reading's data time is converted by the time check, the statistics, its
    line, the batch's sort and every rules tracker it is fed to; the decoders share one datetime among the
    readings of one data time text, so a city's readings bring a few datetime objects at a time (HJ 212 and
    JSON ones, interleaved: hence a table, not the last one)."""
    got = _TIMES.get(id(t))
    if got is not None and got[0] is t:  # (the entry holds ``t``: its id is not reused while it is there)
        return got[1]
    ts = t.timestamp()
    if t.tzinfo is not None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        _TIMES[id(t)] = (t, ts)
    return ts


def beijing_ts(t: datetime) -> float:
    """:func:`unix_time` with a naive ``t`` read as Beijing time (the rules' convention)."""
    got = _TIMES.get(id(t))
    if got is not None and got[0] is t:
        return got[1]
    if t.tzinfo is None:
        return t.replace(tzinfo=BEIJING).timestamp()
    return unix_time(t)


#: id → (the aware datetime, its ``timestamp()``) for :func:`unix_time` and :func:`beijing_ts` (which agree
#: on aware datetimes); bounded (a few hundred bytes an entry).
_TIMES: dict[int, tuple[datetime, float]] = {}
_TIMES_MAX: Final = 4096


class Stream(StrEnum):
    """Kind of DAS record.  HJ 212 command numbers in brackets (DOMAIN.md §2)."""

    RTD = "rtd"  # real-time data, CN=2011; DataTime is the sampling instant
    MIN = "min"  # minute data, CN=2051; DataTime is the start of the period
    HOUR = "hour"  # hourly data, CN=2061
    DAY = "day"  # daily data, CN=2031


#: HJ 212 CN → stream.
CN_STREAM: Final[dict[str, Stream]] = {
    "2011": Stream.RTD,
    "2051": Stream.MIN,
    "2061": Stream.HOUR,
    "2031": Stream.DAY,
}
STREAM_CN: Final[dict[Stream, str]] = {v: k for k, v in CN_STREAM.items()}

#: HJ 212 data flags (DOMAIN.md §2).  Only N is valid for averages.
DATA_FLAGS: Final[dict[str, str]] = {
    "N": "normal",
    "F": "stopped (停运)",
    "M": "maintenance",
    "S": "manual value",
    "D": "fault",
    "C": "calibration",
    "T": "over range",
    "B": "analyser-logger communication failure",
}
VALID_FLAG: Final = "N"

#: Suffixes that carry a number (the rest, e.g. ``Flag``, carry text).  ``RS`` is a facility state.
NUMERIC_SUFFIXES: Final = frozenset(
    {"Rtd", "Min", "Avg", "Max", "ZsRtd", "ZsMin", "ZsAvg", "ZsMax", "Cou", "RS", "ValidNum", "TotalNum"}
)

#: Key pollutant codes (DOMAIN.md §2).
O2: Final = "a19001"
SO2: Final = "a21026"
NOX: Final = "a21002"
PM: Final = "a34013"
FLOW: Final = "a00000"


class Measurement(NamedTuple):
    """The values of one pollutant code in one reading, e.g. ``a21026: Avg=12.5, ZsAvg=15.1, Flag=N``.

    ``values`` maps the suffix exactly as sent (``Rtd``, ``Avg``, ``ZsAvg``, ``Cou``, ...) to a number.
    ``flag`` is the data flag (``N`` normal, ...), or ``None`` when the device sent none.

    Immutable; a named tuple rather than a frozen dataclass because decoders make several per message and a
    tuple is built in half the time (docs/benchmark.md).
    """

    code: str
    values: dict[str, float]
    flag: str | None = None

    @property
    def valid(self) -> bool:
        """A value is valid for averaging only when flagged N (a missing flag counts as N)."""
        return self.flag is None or self.flag == VALID_FLAG

    def primary(self, stream: Stream) -> float | None:
        """The main value for the stream: ``Rtd`` for real-time data, ``Avg`` otherwise."""
        return self.values.get("Rtd" if stream is Stream.RTD else "Avg")

    def corrected(self, stream: Stream) -> float | None:
        """The DAS's own reference-O2-corrected (折算) value, if it sent one."""
        return self.values.get("ZsRtd" if stream is Stream.RTD else "ZsAvg")


@dataclass(frozen=True, slots=True)
class Reading:
    """One DAS record of one outlet: a stream, a data time and the measurements of several codes.

    ``data_time`` is timezone-aware.  For minute/hour/day streams it is the start of the period.
    """

    mn: str
    stream: Stream
    data_time: datetime
    measurements: dict[str, Measurement]
    qn: str | None = None
    origin: str = "json"  # "json" or "hj212"
    extra: dict[str, str] = field(default_factory=dict)
    #: ``code-suffix`` of values the device sent that were left out as invalid: not finite numbers (HJ 212
    #: ``nan``, ``inf``), or out of the code's plausible range (:func:`cems.validate.check_values`).  Not in
    #: ``measurements``, the values beside them kept and judged; counted (``values_dropped``) by the ingester
    #: and replay, and stored as the point's ``dropped`` field.
    dropped: tuple[str, ...] = ()

    @property
    def timestamp_s(self) -> int:
        """Data time as whole Unix seconds (the InfluxDB point time)."""
        return int(self.data_time.timestamp())

    @property
    def value_count(self) -> int:
        return sum(len(m.values) for m in self.measurements.values())

    def key(self) -> tuple[str, Stream, int]:
        """The identity of the record: (outlet, stream, data time).  Writes with the same key overwrite."""
        return (self.mn, self.stream, self.timestamp_s)


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    """The ``__set__`` of the slots ``names`` of a frozen, slotted dataclass, in this order, which must be its
    fields' (checked at import: a field added to the class must be added to its fast constructor)."""
    if tuple(f.name for f in fields(cls)) != names:  # pragma: no cover - a programming error, at import
        raise AssertionError(f"{cls.__name__}'s fields are not {names}")
    return tuple(cls.__dict__[n].__set__ for n in names)


_new_object: Final = object.__new__
_R_MN, _R_STREAM, _R_TIME, _R_MEAS, _R_QN, _R_ORIGIN, _R_EXTRA, _R_DROPPED = slot_setters(
    Reading, ("mn", "stream", "data_time", "measurements", "qn", "origin", "extra", "dropped")
)


def new_reading(
    mn: str,
    stream: Stream,
    data_time: datetime,
    measurements: dict[str, Measurement],
    qn: str | None,
    origin: str,
    extra: dict[str, str],
    dropped: tuple[str, ...] = (),
) -> Reading:
    """``Reading(mn, stream, data_time, measurements, qn, origin, extra, dropped)`` for the decoders' hot paths
    (one a message): the slots set directly, ≈ 7 000 instructions instead of ≈ 12 900 for the frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field; callgrind, issue 20).  The same object."""
    r = _new_object(Reading)
    _R_MN(r, mn)
    _R_STREAM(r, stream)
    _R_TIME(r, data_time)
    _R_MEAS(r, measurements)
    _R_QN(r, qn)
    _R_ORIGIN(r, origin)
    _R_EXTRA(r, extra)
    _R_DROPPED(r, dropped)
    return r


#: Display names of common codes (DOMAIN.md §2).
POLLUTANT_NAMES: Final[dict[str, str]] = {
    "a34013": "颗粒物",
    "a21026": "二氧化硫",
    "a21002": "氮氧化物",
    "a00000": "烟气流量",
    "a19001": "氧含量",
    "a21005": "一氧化碳",
    "a24088": "非甲烷总烃",
    "a20057": "汞",
    "a21024": "氯化氢",
}
