"""Framing HJ 212 packets out of a TCP byte stream (:class:`StreamFramer`) and combining split packets
(PNUM/PNO, :class:`Reassembler`).

Pure, no I/O, no wall clock (the caller passes ``now``).  Both are bounded: the framer never buffers more
than one maximum frame, the reassembler holds at most ``max_pending`` incomplete groups, so a misbehaving
device cannot make the bridge grow without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from cems.errors import FramingError, HJ212Error
from cems.protocol.hj212._packet import MAX_DATA_BYTES, Packet

# ---------------------------------------------------------------------------------- split packets


@dataclass(slots=True)
class _Pending:
    pnum: int
    parts: dict[int, Packet]
    first_seq: int
    first_time: float | None


class Reassembler:
    """Combines split packets (PNUM/PNO) of one (MN, QN, CN) into one :class:`Packet`.

    Bounded: at most ``max_pending`` incomplete groups (the oldest is dropped); a group expires after
    ``max_age_packets`` further packets fed, or ``ttl_s`` seconds when the caller passes ``now`` (no wall
    clock inside).  Dropped groups are counted in :attr:`dropped` and listed in :attr:`dropped_keys`
    (the latest 100); ``on_drop``, when given, is called with each dropped group's key (MN, QN, CN) and its
    parts (the ingester dead-letters and acknowledges the messages it held for them).
    """

    def __init__(
        self,
        *,
        max_pending: int = 1000,
        max_age_packets: int = 10_000,
        ttl_s: float | None = None,
        max_parts: int = 100,
        on_drop: Callable[[tuple[str | None, str | None, str], list[Packet]], None] | None = None,
    ) -> None:
        self.max_pending = max_pending
        self.max_age_packets = max_age_packets
        self.ttl_s = ttl_s
        self.max_parts = max_parts
        self.on_drop = on_drop
        #: The parts of the group completed by the last :meth:`feed` (in PNO order), e.g. to feed them again
        #: when what was made of them could not be delivered.
        self.last_parts: list[Packet] = []
        self._pending: OrderedDict[tuple[str | None, str | None, str], _Pending] = OrderedDict()
        self._seq = 0
        self.dropped = 0
        self.dropped_keys: list[tuple[str | None, str | None, str]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _drop(self, key: tuple[str | None, str | None, str]) -> None:
        g = self._pending.pop(key)
        self.dropped += 1
        self.dropped_keys.append(key)
        del self.dropped_keys[:-100]
        if self.on_drop is not None:
            self.on_drop(key, [g.parts[i] for i in sorted(g.parts)])

    def expire(self, now: float | None = None) -> int:
        """Drop expired groups; returns how many."""
        before = self.dropped
        while self._pending:
            key, g = next(iter(self._pending.items()))
            too_old = self._seq - g.first_seq > self.max_age_packets
            timed_out = (
                self.ttl_s is not None
                and now is not None
                and g.first_time is not None
                and now - g.first_time > self.ttl_s
            )
            if not (too_old or timed_out):
                break
            self._drop(key)
        return self.dropped - before

    def feed(self, packet: Packet, now: float | None = None) -> Packet | None:
        """Returns the packet itself when not split, the combined packet when the last part arrives, else
        ``None``.  Raises :class:`HJ212Error` (``hj212_split``) for a packet with too many parts."""
        self._seq += 1
        self.expire(now)
        if packet.pnum is None or packet.pno is None:
            return packet
        if packet.pnum == 1:
            self.last_parts = [packet]
            return _combine([packet])
        if packet.pnum > self.max_parts:
            raise HJ212Error("hj212_split", f"PNUM {packet.pnum} exceeds {self.max_parts} parts")
        key = (packet.mn, packet.qn, packet.cn)
        g = self._pending.get(key)
        if g is not None and g.pnum != packet.pnum:
            self._drop(key)
            g = None
        if g is None:
            while len(self._pending) >= self.max_pending:
                self._drop(next(iter(self._pending)))
            g = self._pending[key] = _Pending(packet.pnum, {}, self._seq, now)
        g.parts[packet.pno] = packet
        if len(g.parts) < g.pnum:
            return None
        del self._pending[key]
        self.last_parts = [g.parts[i] for i in sorted(g.parts)]
        return _combine(self.last_parts)


def _combine(parts: list[Packet]) -> Packet:
    first = parts[0]
    values: dict[str, dict[str, float | str]] = {}
    cp_other: dict[str, str] = {}
    deviations: list[str] = []
    data_time = None
    for p in parts:
        for code, sv in p.values.items():
            values.setdefault(code, {}).update(sv)
        cp_other.update(p.cp_other)
        deviations.extend(f"part {p.pno}: {d}" for d in p.deviations)
        if data_time is None:
            data_time = p.data_time
        elif p.data_time is not None and p.data_time != data_time:
            deviations.append(f"part {p.pno}: DataTime differs from part 1 (kept part 1's)")
    flag = None if first.flag is None else first.flag & ~2
    return replace(
        first,
        flag=flag,
        pnum=None,
        pno=None,
        data_time=data_time,
        values=values,
        cp_other=cp_other,
        crc_ok=all(p.crc_ok for p in parts),
        deviations=deviations,
        raw="\n".join(p.raw for p in parts),
    )


# ------------------------------------------------------------------------------------ stream framer


_WS_BYTES: Final = b" \t\r\n\x00"


class StreamFramer:
    """Frames ``##...\\r\\n`` packets out of a TCP byte stream (pure, no I/O).

    :meth:`feed` returns complete frames (bytes, without the line terminator) and
    :class:`FramingError` values for skipped garbage (``hj212_garbage``), frames cut by a new ``##``
    (``hj212_truncated``) and frames longer than ``max_data_bytes`` + overhead (``hj212_oversize``,
    discarded up to the next ``##``).  A bare ``\\n`` terminator is accepted too.  The buffer never holds
    more than one maximum frame.
    """

    #: ``##`` + 4-digit length + 4 CRC digits + slack for unpadded/stray bytes.
    OVERHEAD: Final = 2 + 4 + 4 + 6

    def __init__(self, max_data_bytes: int = MAX_DATA_BYTES) -> None:
        self.max_frame = max_data_bytes + self.OVERHEAD
        self._buf = bytearray()
        self._discarding = False  # inside an oversize frame: drop silently until the next '##'

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | FramingError]:
        out: list[bytes | FramingError] = []
        buf = self._buf
        buf += data
        while buf:
            start = buf.find(b"##")
            if start != 0:
                # bytes before the next '##' (keep a trailing '#': it may start one)
                cut = start if start > 0 else (len(buf) - 1 if buf.endswith(b"#") else len(buf))
                if cut == 0:
                    break
                junk = bytes(buf[:cut])
                del buf[:cut]
                if not self._discarding and junk.strip(_WS_BYTES):
                    out.append(FramingError("hj212_garbage", f"skipped {cut} bytes outside a packet", junk, cut))
                if start < 0:
                    break
                continue
            self._discarding = False
            limit = self.max_frame + 2
            end = buf.find(b"\n", 2, limit)
            nxt = buf.find(b"##", 2, end if end >= 0 else limit)
            if nxt >= 0:
                junk = bytes(buf[:nxt])
                del buf[:nxt]
                out.append(FramingError("hj212_truncated", f"frame cut after {nxt} bytes by a new '##'", junk, nxt))
                continue
            if end >= 0:
                frame_bytes = bytes(buf[:end])
                del buf[: end + 1]
                if frame_bytes.endswith(b"\r"):
                    frame_bytes = frame_bytes[:-1]
                if len(frame_bytes) > self.max_frame:
                    out.append(
                        FramingError(
                            "hj212_oversize",
                            f"frame of {len(frame_bytes)} bytes longer than {self.max_frame}: discarded",
                            frame_bytes,
                            len(frame_bytes),
                        )
                    )
                else:
                    out.append(frame_bytes)
                continue
            if len(buf) >= limit:
                # no terminator within a maximum frame: drop it and resync on the next '##'
                nxt = buf.find(b"##", 2)
                if nxt >= 0:
                    cut = nxt
                else:
                    cut = len(buf) - 1 if buf.endswith(b"#") else len(buf)
                    self._discarding = True
                junk = bytes(buf[:cut])
                del buf[:cut]
                out.append(
                    FramingError(
                        "hj212_oversize",
                        f"no packet end within {self.max_frame} bytes: discarding up to the next '##'",
                        junk,
                        cut,
                    )
                )
                continue
            break
        return out
