"""InfluxDB line protocol, built by hand (faster than per-point client objects; the format is simple).

Schema (docs/influxdb.md):
``cems_reading,mn=…,stream=rtd,enterprise=E001,district=130602 a21026_Rtd=12.5,a21026_Flag="N" <ms>``
One point per (outlet, stream, DataTime): the same key written twice overwrites (idempotent writes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from cems.model import Reading

READING_MEASUREMENT: Final = "cems_reading"

_TAG_ESCAPE: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": "", "\r": ""})
_STR_ESCAPE: Final = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": "", "\r": ""})


def escape_tag(v: str) -> str:
    """Escape a measurement name, tag key, tag value or field key."""
    return v.translate(_TAG_ESCAPE)


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


def reading_line(reading: Reading, enterprise: str, district: str) -> str:
    """The ``cems_reading`` point of a reading.  Fields are ``{code}_{suffix}`` and ``{code}_Flag``."""
    tags = (
        f"{READING_MEASUREMENT},district={escape_tag(district)},enterprise={escape_tag(enterprise)}"
        f",mn={escape_tag(reading.mn)},stream={reading.stream.value}"
    )
    fields: list[str] = []
    for code, m in reading.measurements.items():
        c = escape_tag(code)
        for suffix, v in m.values.items():
            fields.append(f"{c}_{escape_tag(suffix)}={v!r}")
        if m.flag is not None:
            fields.append(f'{c}_Flag="{escape_str(m.flag)}"')
    if reading.qn:
        fields.append(f'qn="{escape_str(reading.qn)}"')
    ts_ms = round(reading.data_time.timestamp() * 1000)
    return f"{tags} {','.join(fields)} {ts_ms}"
