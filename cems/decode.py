"""Decode stage: MQTT topic + payload → domain objects.  Pure; raises RejectedMessage with a reason.

Topics (defaults; the registry's ``[topics]`` table changes the prefixes):
- ``cems/v1/{mn}/{rtd|min|hour|day}``: JSON reading (schema ``cems.reading/1``, docs/payload.md)
- ``cems/v1/{mn}/hj212``: a raw HJ 212 packet (its MN must match the topic; password checked)
- ``grid/v1/{sensor_id}``: a grid air-quality micro-station reading (same JSON schema, stream rtd), or a raw
  HJ 212 packet of ambient air (ST=22; ST=39 construction dust from a construction-site monitor) whose MN is the
  sensor id (issue 15)
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from cems.errors import RejectedMessage
from cems.model import Reading, Stream
from cems.protocol import hj212
from cems.protocol.payload import decode_payload
from cems.registry import GridSensor, OutletInfo, Registry

_STREAMS = {s.value: s for s in Stream}


class Decoded(NamedTuple):
    """A decoded message: a plant reading or a grid-sensor reading.  (A named tuple, built per message in
    less than half the time of a frozen dataclass with ``tuple.__new__``: docs/benchmark.md, issue 20.)"""

    reading: Reading
    grid: bool = False


_new: Final = tuple.__new__


def decode_message(topic: str, payload: bytes, registry: Registry, *, require_crc: bool = True) -> Decoded:
    c = _context(registry)
    if topic.startswith(c.prefix):
        mn, slash, kind = topic[len(c.prefix) :].partition("/")
        if not slash or not mn or "/" in kind:
            p = registry.topics.prefix
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {p}/{{mn}}/{{stream}}")
        if kind == "hj212":
            return _new(Decoded, (_decode_hj212_text(hj212_text(payload), mn, registry, c.tz, require_crc)[0], False))
        stream = _STREAMS.get(kind)
        if stream is None:
            raise RejectedMessage("bad_topic", f"topic {topic!r}: stream {kind!r} is not rtd|min|hour|day|hj212")
        return _new(Decoded, (decode_payload(payload, mn=mn, stream=stream, tz=c.tz), False))
    if topic.startswith(c.grid_prefix):
        sensor = topic[len(c.grid_prefix) :]
        if not sensor or "/" in sensor:
            p = registry.topics.grid_prefix
            raise RejectedMessage("bad_topic", f"topic {topic!r} is not {p}/{{sensor_id}}")
        if payload.lstrip()[:2] == b"##":  # a raw HJ 212 packet (a JSON reading starts with '{')
            packet = hj212.decode(hj212_text(payload), require_crc=require_crc)
            check_grid_packet(packet, sensor, registry)
            return Decoded(hj212.to_reading(packet, tz=c.tz), grid=True)
        return Decoded(decode_payload(payload, mn=sensor, stream=Stream.RTD, tz=c.tz), grid=True)
    raise RejectedMessage("bad_topic", f"topic {topic!r} is not a data topic")


class _Context(NamedTuple):
    """What :func:`decode_message` reads of a registry for every message: the topic prefixes (with their
    ``/``) and the time zone (``Registry.tz`` builds a ``ZoneInfo`` per call)."""

    registry: Registry
    prefix: str
    grid_prefix: str
    tz: Any


def _context(registry: Registry) -> _Context:
    """The :class:`_Context` of ``registry``, remembered for the last registry (by identity: registries are
    frozen, so their topics and time zone never change; one tuple, read and replaced whole)."""
    global _last_context
    c = _last_context
    if c is not None and c.registry is registry:
        return c
    t = registry.topics
    c = _last_context = _Context(registry, t.prefix + "/", t.grid_prefix + "/", registry.tz)
    return c


_last_context: _Context | None = None


def decode_hj212(payload: bytes, topic_mn: str | None, registry: Registry, *, require_crc: bool = True) -> Reading:
    """Decode a raw HJ 212 packet (published for ``topic_mn``, when given); check MN, registry and password."""
    return _decode_hj212_text(hj212_text(payload), topic_mn, registry, _context(registry).tz, require_crc)[0]


def decode_hj212_text(
    text: str, topic_mn: str | None, registry: Registry, *, require_crc: bool = True
) -> tuple[Reading, OutletInfo]:
    """:func:`decode_hj212` of the packet's text; also returns the outlet (``cems replay``)."""
    return _decode_hj212_text(text, topic_mn, registry, _context(registry).tz, require_crc)


def _decode_hj212_text(
    text: str, topic_mn: str | None, registry: Registry, tz: Any, require_crc: bool
) -> tuple[Reading, OutletInfo]:
    fast = hj212.fast_reading(text, tz)
    if fast is not None:  # the common, well-formed data packet: same checks, no intermediate Packet
        mn, pw, reading = fast
        if topic_mn is not None and mn != topic_mn:
            raise RejectedMessage("mn_mismatch", f"packet MN {mn!r} does not match topic MN {topic_mn!r}")
        info = registry.outlet(mn)
        if info is None:
            raise RejectedMessage("unknown_mn", f"MN {mn!r} is not in the registry")
        expected = info.outlet.hj212_password
        if expected is not None and pw != expected:
            raise RejectedMessage("bad_password", f"wrong HJ 212 password (PW) for MN {mn!r}")
        return reading, info
    packet = hj212.decode(text, require_crc=require_crc)
    info = check_packet(packet, topic_mn, registry)
    return hj212.to_reading(packet, tz=tz), info


def check_packet(packet: hj212.Packet, topic_mn: str | None, registry: Registry) -> OutletInfo:
    """The checks of a decoded packet before its data are read: MN as on the topic, in the registry, PW."""
    if topic_mn is not None and packet.mn != topic_mn:
        raise RejectedMessage("mn_mismatch", f"packet MN {packet.mn!r} does not match topic MN {topic_mn!r}")
    mn = packet.mn or ""
    info = registry.outlet(mn)
    if info is None:
        raise RejectedMessage("unknown_mn", f"MN {mn!r} is not in the registry")
    expected = info.outlet.hj212_password
    if expected is not None and packet.pw != expected:
        raise RejectedMessage("bad_password", f"wrong HJ 212 password (PW) for MN {mn!r}")
    return info


#: HJ 212 system codes (ST) a grid sensor's packets may carry: 22 ambient air; 39 construction dust (扬尘), for a
#: construction-site monitor only (HJ 212-2017 table 5, DOMAIN.md §2).
GRID_ST: Final = "22"
CONSTRUCTION_ST: Final = "39"


def find_grid_sensor(registry: Registry, sensor_id: str | None) -> GridSensor | None:
    """The ``[[grid_sensor]]`` of this id (the registry keeps sensor ids apart from every outlet MN), or ``None``."""
    return next((g for g in registry.grid_sensor if g.id == sensor_id), None) if registry.grid_sensor else None


def grid_sensor_of(packet: hj212.Packet, registry: Registry) -> GridSensor | None:
    """The grid sensor an HJ 212 packet comes from (its MN is the sensor's id), else ``None``."""
    return find_grid_sensor(registry, packet.mn)


def check_grid_packet(packet: hj212.Packet, topic_sensor: str | None, registry: Registry) -> GridSensor:
    """The checks of an ambient packet of a grid sensor: MN as on the topic, in the registry, ST, PW."""
    if topic_sensor is not None and packet.mn != topic_sensor:
        raise RejectedMessage("mn_mismatch", f"packet MN {packet.mn!r} does not match topic sensor {topic_sensor!r}")
    g = grid_sensor_of(packet, registry)
    if g is None:
        raise RejectedMessage("unknown_sensor", f"grid sensor {packet.mn!r} is not in the registry")
    allowed = (GRID_ST, CONSTRUCTION_ST) if g.kind == "construction_site" else (GRID_ST,)
    if packet.st not in allowed:
        raise RejectedMessage(
            "hj212_field", f"ST={packet.st} from grid sensor {g.id!r}: expected ST={' or '.join(allowed)} (ambient air)"
        )
    if g.hj212_password is not None and packet.pw != g.hj212_password:
        raise RejectedMessage("bad_password", f"wrong HJ 212 password (PW) for grid sensor {g.id!r}")
    return g


def hj212_text(payload: bytes) -> str:
    """The text of a raw HJ 212 packet: ASCII, else GBK (some DAS send Chinese text in vendor fields)."""
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError:
        try:
            return payload.decode("gbk")
        except UnicodeDecodeError:
            raise RejectedMessage("hj212_encoding", "packet is neither ASCII nor GBK text") from None
