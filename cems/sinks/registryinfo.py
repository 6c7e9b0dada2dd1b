"""``cems_registry``: the registry's names and places in InfluxDB, so that Grafana shows names (enterprise,
outlet, district, township, sensor) instead of codes and places outlets and sensors on a map
(docs/dashboards.md explains why names are not tags of the data measurements).

One point per outlet (``kind=outlet``) and per grid sensor (``kind=grid_sensor``), written by
``cems dashboards registry`` at the time it runs; readers take ``last()`` per code. The ``*_label`` tags are
``name|code``: a Grafana query variable shows the name and sends the code (regex
``/^(?<text>[^|]*)\\|(?<value>.*)$/``), so the data measurements keep being filtered by their code tags.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from cems.registry import Registry
from cems.sinks.lineprotocol import point

REGISTRY_MEASUREMENT: Final = "cems_registry"


def label(name: str, code: str) -> str:
    """``name|code`` (the code alone when the registry gives no name); ``|`` in a name becomes ``｜``."""
    return f"{name.replace('|', '｜')}|{code}" if name else f"{code}|{code}"


def registry_lines(registry: Registry, at: datetime) -> list[str]:
    """The ``cems_registry`` points of ``registry``, stamped ``at``."""
    ms = round(at.timestamp() * 1000)
    districts = {d.code: d.name for d in registry.district}
    out = []
    for info in registry.outlets():
        o, e, d = info.outlet, info.enterprise, info.district
        tags = {
            "kind": "outlet",
            "district": d.code,
            "enterprise": e.id,
            "mn": o.mn,
            "district_label": label(d.name, d.code),
            "enterprise_label": label(e.name, e.id),
            "outlet_label": label(f"{e.name} {o.name}", o.mn),
        }
        fields: dict[str, float | int | str | bool | None] = {
            "district_name": d.name,
            "enterprise_name": e.name,
            "outlet_name": o.name,
            "name": f"{e.name} {o.name}",
            "profile": o.profile,
            "grade": e.grade,
            # production lines of the enterprise's emergency list (应急减排清单, issue 16) that include this outlet
            "emergency_lines": sum(1 for line in e.line if o.mn in line.outlets),
            "lat": o.lat,
            "lon": o.lon,
        }
        out.append(point(REGISTRY_MEASUREMENT, tags, fields, ms))
    for g in registry.grid_sensor:
        name = g.name or g.id
        tags = {
            "kind": "grid_sensor",
            "district": g.district,
            "township": g.township,
            "sensor": g.id,
            "mn": g.id,  # as in cems_event (grid_hotspot events carry the sensor id as `mn`)
            "district_label": label(districts.get(g.district, ""), g.district),
            "sensor_label": label(name, g.id),
            "sensor_kind": g.kind,
        }
        fields = {
            "district_name": districts.get(g.district, ""),
            "township": g.township,
            "name": name,
            "lat": g.lat,
            "lon": g.lon,
        }
        out.append(point(REGISTRY_MEASUREMENT, tags, fields, ms))
    return out
