"""InfluxDB line protocol, built by hand (faster than per-point client objects; the format is simple).

Schema (docs/influxdb.md):
``cems_reading,mn=…,stream=rtd,enterprise=E001,district=130602 a21026_Rtd=12.5,a21026_Flag="N" <ms>``
One point per (outlet, stream, DataTime): the same key written twice overwrites (idempotent writes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Final

import msgspec

from cems.model import BEIJING, Reading, Stream, unix_time
from cems.protocol.mark import MarkRecord
from cems.registry import GridSensor
from cems.rules.ambient import AmbientDay
from cems.rules.aqi import standard_for
from cems.rules.daily import DailyRecord, MonthResult
from cems.rules.district_parts import DistrictPart, part_fields
from cems.rules.events import Event
from cems.rules.grid import GridHour, category_of, grid_day
from cems.rules.hourly import HourlyRecord
from cems.rules.ranking import RankEntry, Ranking
from cems.rules.transmission import DistrictMonthRate, OutletDayRate

READING_MEASUREMENT: Final = "cems_reading"

_TAG_ESCAPE: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": "", "\r": ""})
_STR_ESCAPE: Final = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": "", "\r": ""})


@lru_cache(maxsize=1 << 16)
def escape_tag(v: str) -> str:
    """Escape a measurement name, tag key, tag value or field key (cached: codes, suffixes and MNs repeat)."""
    return v.translate(_TAG_ESCAPE)


def _tag(v: str) -> str:
    """:func:`escape_tag` without its cache: a value with nothing to escape (letters and digits, as MNs and
    enterprise ids are) is the value itself."""
    return v if v.isalnum() else v.translate(_TAG_ESCAPE)


def _reading_prefix(mn: str, stream: str, enterprise: str, district: str) -> str:
    """Not cached (issue 20, memory): a cache by outlet kept ≈ 0.5 KB per outlet for the life of the process
    (≈ 50 MB at 100 000 outlets) to save ≈ 0.2 µs per reading."""
    # (``stream`` is a Stream: a str equal to, hashed and formatted as its value; formatting the enum costs
    # ≈ 1 000 instructions more than its value's text, found by the str hash)
    head = f"{READING_MEASUREMENT},district={_tag(district)},enterprise={_tag(enterprise)}"
    return f"{head},mn={_tag(mn)},stream={_STREAM_TEXT.get(stream) or stream}"


#: Each stream's text (its value), by the stream (equal to, and hashed as, its text).
_STREAM_TEXT: Final[dict[str, str]] = {s: s.value for s in Stream}


@lru_cache(maxsize=1 << 14)
def _field_key(code: str, suffix: str) -> str:
    return f"{escape_tag(code)}_{escape_tag(suffix)}="


@lru_cache(maxsize=1 << 14)
def _flag_field(code: str, flag: str) -> str:
    """``{code}_Flag="{flag}"`` (a handful of codes times a handful of flags: cached)."""
    return f'{_field_key(code, "Flag")}"{escape_str(flag)}"'


def escape_str(v: str) -> str:
    return v.translate(_STR_ESCAPE)


def format_float(v: float) -> str:
    # repr gives the shortest round-tripping form; InfluxDB parses it (incl. exponents).
    return repr(float(v))


def point(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | str | bool | None], ts_ms: int
) -> str:
    """One line of line protocol.  ``None`` and non-finite floats are left out; tags sorted by key."""
    tag_part = "".join(f",{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v != "")
    out: list[str] = []
    for k, v in fields.items():
        if v is None:
            continue
        key = escape_tag(k)
        if isinstance(v, bool):
            out.append(f"{key}={'true' if v else 'false'}")
        elif isinstance(v, int):
            out.append(f"{key}={v}i")
        elif isinstance(v, float):
            if math.isfinite(v):
                out.append(f"{key}={format_float(v)}")
        else:
            out.append(f'{key}="{escape_str(v)}"')
    return f"{escape_tag(measurement)}{tag_part} {','.join(out)} {ts_ms}"


#: Field of the revisable measurements (``cems_hourly``, ``cems_daily``, ``cems_monthly``, ``cems_event``,
#: ``grid_hourly``): the names of their numeric and boolean fields that have no value in this point,
#: comma-separated (``""`` when every one has a value).  Always written (docs/influxdb.md).
UNSET_FIELD: Final = "unset"

Fields = dict[str, float | int | str | bool | None]


def revisable(fields: Fields, strings: frozenset[str]) -> Fields:
    """The fields of a point that a revision (a point with the same key) rewrites.

    InfluxDB 1.x merges the fields of points with the same key, so a field a revision leaves out keeps its
    old value.  So nothing is left out silently: a string field without a value is written as ``""`` (the
    "no value" sentinel; ``strings`` names them); a numeric or boolean field without a value (``None`` or
    not finite) cannot take a sentinel without corrupting means, counts and types, so it is left out and
    named in :data:`UNSET_FIELD`, which readers honour (:func:`present`)."""
    out: Fields = {}
    unset: list[str] = []
    for k, v in fields.items():
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            if k in strings:
                out[k] = ""
            else:
                unset.append(k)
        else:
            out[k] = v
    out[UNSET_FIELD] = ",".join(unset)
    return out


def present(row: Mapping[str, Any]) -> dict[str, Any]:
    """A queried row of a revisable measurement without the fields its :data:`UNSET_FIELD` names (stale
    values that an older version of the point left; rows written before the field existed are as they are)."""
    unset = row.get(UNSET_FIELD)
    gone = set(unset.split(",")) if isinstance(unset, str) and unset else set()
    return {k: v for k, v in row.items() if k not in gone and k != UNSET_FIELD}


def reading_line(reading: Reading, enterprise: str, district: str) -> str:
    """The ``cems_reading`` point of a reading.  Fields are ``{code}_{suffix}`` and ``{code}_Flag``, ``qn`` and
    ``dropped`` (the ``code-suffix`` of values left out as invalid, comma-separated)."""
    tags = _reading_prefix(reading.mn, reading.stream, enterprise, district)  # (a StrEnum: its .value costs)
    templates: list[str] = []
    values: list[float] = []
    get = _TEMPLATES.get
    for code, m in reading.measurements.items():
        vals = m.values
        template = get((code, m.flag, *vals))
        if template is None:
            template = _template(code, m.flag, tuple(vals))
        if template:
            templates.append(template)
            values += vals.values()
    fields = ",".join(templates)
    if values:
        numbers = _FLOATS.encode(values)  # one call for every number (Python's repr: ≈ 0.2 µs each)
        if b"null" in numbers:  # (not finite: validate drops them, keep repr's spelling anyway)
            fields %= tuple(repr(v) for v in values)
        else:
            fields %= tuple(numbers[1:-1].decode("ascii").split(","))
    qn = reading.qn
    if qn:
        q = f'qn="{qn if qn.isalnum() else escape_str(qn)}"'  # (a QN is digits: nothing to escape)
        fields = f"{fields},{q}" if fields else q
    if reading.dropped:  # the values left out as invalid (validate.check_values), named: "a01012-Rtd,..."
        d = f'dropped="{escape_str(",".join(reading.dropped))}"'
        fields = f"{fields},{d}" if fields else d
    ts_ms = round(unix_time(reading.data_time) * 1000)
    return f"{tags} {fields} {ts_ms}"


#: Numbers as JSON: the shortest text that reads back as the same float, as ``repr`` writes it but for the
#: exponent's spelling (``1e16``, ``1e-7``, ``0.000025``: InfluxDB reads them all), several times faster.
_FLOATS: Final = msgspec.json.Encoder()
#: The fields of one measurement as a ``%`` template by (code, flag, suffixes...): ``a21026_Rtd=%s,
#: a21026_ZsRtd=%s,a21026_Flag="N"``, filled with the values' texts.  A handful of codes, suffix sets and
#: flags: one template per measurement instead of a key look-up and an f-string per value (docs/benchmark.md).
#: Bounded against floods of invented names.
_TEMPLATES: dict[tuple[str | None, ...], str] = {}
_TEMPLATES_MAX: Final = 1 << 14


def _template(code: str, flag: str | None, suffixes: tuple[str, ...]) -> str:
    parts = [_field_key(code, s).replace("%", "%%") + "%s" for s in suffixes]
    if flag is not None:
        parts.append(_flag_field(code, flag).replace("%", "%%"))
    template = ",".join(parts)
    if len(_TEMPLATES) >= _TEMPLATES_MAX:
        _TEMPLATES.clear()
    _TEMPLATES[(code, flag, *suffixes)] = template
    return template


HOURLY_MEASUREMENT: Final = "cems_hourly"
EVENT_MEASUREMENT: Final = "cems_event"


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


#: ``cems_hourly`` field ``source_rank``: the precedence of the hour's ``source`` tag (docs/influxdb.md: a
#: revision only raises it, readers take the highest), so that an InfluxQL reader (the Grafana dashboards) can
#: pick each hour's record with the selector ``max("source_rank")`` and the fields beside it.
SOURCE_RANK: Final[dict[str, int]] = {"realtime": 1, "minutes": 2, "das_2061": 3}


_HOURLY_STRINGS: Final = frozenset({"zs_source", "flag", "profile", "note"})


def hourly_line(rec: HourlyRecord, enterprise: str, district: str) -> str:
    """``cems_hourly``: one point per (outlet, pollutant, hour); time = start of the hour."""
    tags = {
        "mn": rec.mn,
        "pollutant": rec.pollutant,
        "enterprise": enterprise,
        "district": district,
        "source": rec.source,
    }
    fields: dict[str, float | int | str | bool | None] = {
        "avg": rec.avg,
        "o2_avg": rec.o2_avg,
        "zs_avg": rec.zs_avg,
        "das_zs_avg": rec.das_zs_avg,
        "zs_source": rec.zs_source,
        "valid": rec.valid,
        "flag": rec.flag,
        "valid_minutes": rec.valid_minutes,
        "limit": rec.limit,
        "ref_o2": rec.ref_o2,
        "profile": rec.profile,
        "exceeds": rec.exceeds,
        "o2_invalid": rec.o2_invalid,
        "note": rec.note or None,
        "source_rank": SOURCE_RANK.get(rec.source, 0),
    }
    return point(HOURLY_MEASUREMENT, tags, revisable(fields, _HOURLY_STRINGS), _ms(rec.hour_start))


_EVENT_STRINGS: Final = frozenset({"event_id", "status", "start", "end", "profile", "evidence"})


def event_line(ev: Event, **extra: float | int | str | bool | None) -> str:
    """``cems_event``: one point per event (its key is type, outlet, pollutant and start, exactly what the
    event id hashes), overwritten by every update so the latest state is what is stored."""
    tags = {
        "type": ev.type,
        "mn": ev.mn,
        "enterprise": ev.enterprise,
        "district": ev.district,
        "pollutant": ev.pollutant or "",
    }
    fields: dict[str, float | int | str | bool | None] = {
        "event_id": ev.event_id,
        "status": ev.status,
        "start": ev.start.astimezone(BEIJING).isoformat(),
        "end": ev.end.astimezone(BEIJING).isoformat() if ev.end is not None else "",
        "hours": float(ev.hours),
        "peak": ev.peak,
        "limit": ev.limit,
        "ref_o2": ev.ref_o2,
        "profile": ev.profile,
        "late": ev.late,
        # a data-quality signal's figures in words; what a grid hotspot was judged on, as JSON
        "evidence": ev.evidence
        if ev.evidence is None or isinstance(ev.evidence, str)
        else json.dumps(ev.evidence, ensure_ascii=False, separators=(",", ":")),
    }
    own = revisable(fields, _EVENT_STRINGS)
    # the marks, declarations or repairs that touched the event (issue 14); "" once none does (a withdrawal)
    own["marks"] = ",".join(ev.marks)
    # the acknowledgement fields (``extra``) are only ever set, never cleared: left out while not set
    return point(EVENT_MEASUREMENT, tags, {**own, **extra}, _ms(ev.start))


DAILY_MEASUREMENT: Final = "cems_daily"


_DAILY_STRINGS: Final = frozenset({"profile", "note"})


def daily_line(rec: DailyRecord, enterprise: str, district: str) -> str:
    """``cems_daily``: one point per (outlet, pollutant, Beijing day); time = the day's Beijing midnight."""
    tags = {
        "mn": rec.mn,
        "pollutant": rec.pollutant,
        "enterprise": enterprise,
        "district": district,
        "source": rec.source,
    }
    fields: dict[str, float | int | str | bool | None] = {
        "avg": rec.avg,
        "zs_avg": rec.zs_avg,
        "das_avg": rec.das_avg,
        "das_zs_avg": rec.das_zs_avg,
        "received_hours": rec.received_hours,
        "valid_hours": rec.valid_hours,
        "valid": rec.valid,
        "limit": rec.limit,
        "ref_o2": rec.ref_o2,
        "profile": rec.profile,
        "exceeds": rec.exceeds,
        "note": rec.note or None,
    }
    return point(DAILY_MEASUREMENT, tags, revisable(fields, _DAILY_STRINGS), _ms(rec.day_start))


MONTHLY_MEASUREMENT: Final = "cems_monthly"


def month_start(month: str) -> datetime:
    """The Beijing midnight starting a ``YYYY-MM`` month."""
    y, m = month.split("-")
    return datetime(int(y), int(m), 1, tzinfo=BEIJING)


def monthly_line(rec: MonthResult, enterprise: str, district: str) -> str:
    """``cems_monthly``: one point per (outlet, pollutant, Beijing month); time = the month's first midnight."""
    tags = {"mn": rec.mn, "pollutant": rec.pollutant, "enterprise": enterprise, "district": district}
    fields: dict[str, float | int | str | bool | None] = {
        "valid_days": rec.valid_days,
        "days_needed": rec.days_needed,
        "month_valid": rec.month_valid,
        "valid_hours": rec.valid_hours,
        "rule_hours": rec.rule_hours,
        "hours_within_limit": rec.hours_within_limit,
        "share_within_limit": rec.share_within_limit,
        "share_required": rec.share_required,
        "meets_monthly_rule": rec.meets_monthly_rule,
        "citation": rec.citation or None,
        "marked_hours": rec.marked_hours,
    }
    return point(MONTHLY_MEASUREMENT, tags, revisable(fields, frozenset({"citation"})), _ms(month_start(rec.month)))


RATE_MEASUREMENT: Final = "cems_rate"


def outlet_day_rate_line(r: OutletDayRate) -> str:
    """``cems_rate`` of one outlet and Beijing day (tag ``level=outlet``); time = the day's Beijing midnight."""
    return outlet_day_line(r.mn, r.enterprise, r.district, r.day, r.expected, r.received, r.valid)


@lru_cache(maxsize=64)
def _day_ms(day: date) -> int:
    return _ms(datetime.combine(day, datetime.min.time(), BEIJING))


def outlet_day_line(
    mn: str, enterprise: str, district: str, day: date, expected: int, received: int, valid: int
) -> str:
    """:func:`outlet_day_rate_line` from the figures (the live write, issue 20: no :class:`OutletDayRate` and no
    :func:`point` per outlet; the same line: tags by key, empty tags and rates without a value left out)."""
    tags = f",district={_tag(district)}" if district else ""
    if enterprise:
        tags += f",enterprise={_tag(enterprise)}"
    tags += f",level=outlet,mn={_tag(mn)}" if mn else ",level=outlet"
    fields = f"expected={expected}i,received={received}i,valid={valid}i"
    if expected:
        fields += f",transmission_rate={received / expected!r}"
    if received:
        fields += f",validity_rate={valid / received!r}"
    if expected:
        fields += f",effective_rate={valid / expected!r}"
    return f"{RATE_MEASUREMENT}{tags} {fields} {_day_ms(day)}"


def district_month_rate_line(r: DistrictMonthRate) -> str:
    """``cems_rate`` of one district and Beijing month (``level=district``), with the supervision decision."""
    y, m = (int(x) for x in r.month.split("-"))
    tags = {"level": "district", "district": r.district}
    fields: dict[str, float | int | str | bool | None] = {
        "expected": r.expected,
        "received": r.received,
        "valid": r.valid,
        "transmission_rate": r.transmission_rate,
        "validity_rate": r.validity_rate,
        "effective_rate": r.effective_rate,
        "enterprises_exceeding": len(r.exceeding_enterprises),
        "supervision": r.supervised,
        "reasons": "; ".join(r.reasons),
    }
    return point(RATE_MEASUREMENT, tags, fields, _ms(datetime(y, m, 1, tzinfo=BEIJING)))


def district_part_line(part: DistrictPart) -> str:
    """``cems_rate`` of one shard's part of a district month (``level=district_shard``, tag ``shard``; issue 20):
    counts, outlets and exceeding enterprises, merged by ``cems districts`` (:mod:`cems.rules.district_parts`)."""
    y, m = (int(x) for x in part.month.split("-"))
    tags, fields = part_fields(part)
    return point(RATE_MEASUREMENT, tags, dict(fields), _ms(datetime(y, m, 1, tzinfo=BEIJING)))


GRID_RANK_MEASUREMENT: Final = "grid_rank"


def grid_rank_line(entry: RankEntry, ranking: Ranking) -> str:
    """``grid_rank``: one point per (period, scope, district, township, period start); time = the period's
    Beijing start. Tags ``period`` (day|week|month), ``scope`` (``city`` or a district code), ``township``,
    ``district``; the figures and what they came from (docs/influxdb.md)."""
    f = entry.figures
    tags = {"period": ranking.period.kind, "scope": entry.scope, "township": f.township, "district": f.district}
    fields: dict[str, float | int | str | bool | None] = {
        "rank": entry.rank,
        "of": entry.of,
        "index": entry.index,
        "pm25": f.pm25,
        "pm10": f.pm10,
        "good_day_share": f.good_day_share,
        "good_days": f.good_days,
        "aqi_days": f.aqi_days,
        "change_vs_previous": entry.change_vs_previous,
        "change_vs_last_year": entry.change_vs_last_year,
        "previous_index": entry.previous_index,
        "last_year_index": entry.last_year_index,
        "sensors": len(f.sensors),
        "sensor_ids": ",".join(f.sensors),
        "days": min(f.days.values(), default=0),
        **{f"{p}_days": n for p, n in f.days.items()},
        **{f"{p}_stat": c for p, c in f.concentrations.items()},
        "pollutants": ",".join(ranking.pollutants),
        "kinds": ",".join(ranking.kinds),
        "basis": ranking.basis,
    }
    return point(GRID_RANK_MEASUREMENT, tags, fields, _ms(ranking.period.start))


def grid_rank_lines(ranking: Ranking) -> list[str]:
    """Every ``grid_rank`` point of a ranking: the city's list and each district's."""
    return [grid_rank_line(e, ranking) for e in ranking.entries()]


MARK_MEASUREMENT: Final = "cems_mark"


def mark_line(rec: MarkRecord, enterprise: str, district: str) -> str:
    """``cems_mark``: one point per mark, stop declaration, repair or withdrawal (issue 14), append-only; time =
    when the ingester received it; ``record_id`` is a tag, so no two records share a point."""
    tags = {
        "mn": rec.mn,
        "enterprise": enterprise,
        "district": district,
        "kind": rec.kind,
        "type": rec.type,
        "record_id": rec.record_id,
    }
    fields: dict[str, float | int | str | bool | None] = {
        "from": rec.start.astimezone(BEIJING).isoformat(),
        "to": rec.end.astimezone(BEIJING).isoformat(),
        "status": rec.status,
        "reason": rec.reason,
        "attachment": rec.attachment,
        "submitter": rec.submitter,
        "received_at": rec.received_at.astimezone(BEIJING).isoformat(),
        "via": rec.via,
        "client": rec.client or None,
        "pollutant": rec.pollutant,
        "value": rec.value,
        "target": rec.target,
        "note": rec.note or None,
    }
    return point(MARK_MEASUREMENT, tags, fields, _ms(rec.received_at))


GRID_READING_MEASUREMENT: Final = "grid_reading"
GRID_HOURLY_MEASUREMENT: Final = "grid_hourly"
GRID_DAILY_MEASUREMENT: Final = "grid_daily"


def _grid_tags(sensor: str, district: str, township: str, kind: str) -> dict[str, str]:
    return {"sensor": sensor, "district": district, "township": township, "kind": kind}


def grid_reading_line(r: Reading, g: GridSensor) -> str:
    """``grid_reading``: one point per (sensor, data time); fields ``{code}_{suffix}``, ``{code}_Flag`` and
    ``dropped``, tags ``sensor``, ``district``, ``township``."""
    fields: dict[str, float | int | str | bool | None] = {}
    for code, m in r.measurements.items():
        for suffix, v in m.values.items():
            fields[f"{code}_{suffix}"] = v
        if m.flag is not None:
            fields[f"{code}_Flag"] = m.flag
    if r.dropped:
        fields["dropped"] = ",".join(r.dropped)
    tags = {"sensor": g.id, "district": g.district, "township": g.township}
    return point(GRID_READING_MEASUREMENT, tags, fields, round(r.data_time.timestamp() * 1000))


def grid_hourly_line(h: GridHour) -> str:
    """``grid_hourly``: one point per (sensor, Beijing hour), time = start of the hour (docs/influxdb.md)."""
    fields: dict[str, float | int | str | bool | None] = {}
    for v in h.values:
        fields[v.pollutant] = v.mean
        fields[f"{v.pollutant}_minutes"] = v.minutes
        fields[f"{v.pollutant}_valid"] = v.valid
    fields |= {
        "aqi": h.aqi,
        "level": h.level,
        "category": h.category,
        "primary": ",".join(h.primary),
        "standard": h.standard,
    }
    fields = revisable(fields, frozenset({"category", "primary", "standard"}))
    return point(
        GRID_HOURLY_MEASUREMENT, _grid_tags(h.sensor, h.district, h.township, h.kind), fields, _ms(h.hour_start)
    )


def grid_daily_line(d: AmbientDay) -> str:
    """``grid_daily``: one point per (sensor, Beijing day), time = the day's Beijing midnight."""
    fields: dict[str, float | int | str | bool | None] = dict(d.means)
    fields |= {f"{p}_hours": n for p, n in d.hours.items()}
    fields |= {
        "aqi": d.aqi,
        "level": d.level,
        "category": category_of(d.level),
        "primary": ",".join(d.primary),
        "standard": f"HJ 633-{standard_for(d.day)}",
        "upload_rate": d.upload_rate,
    }
    return point(
        GRID_DAILY_MEASUREMENT, _grid_tags(d.sensor, d.district, d.township, d.kind), fields, _ms(grid_day(d.day))
    )
