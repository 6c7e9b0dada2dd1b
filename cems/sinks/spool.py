"""A bounded on-disk spool (write-ahead log) of line-protocol batches for when InfluxDB is down.

Batches are appended to segment files and fsync'd before :meth:`Spool.append` returns, so a message whose
data are in the spool may be acknowledged to the broker: a crash (even SIGKILL) loses nothing, the spool
is replayed on start.  The drainer writes segments to InfluxDB in order, oldest first, and deletes a
segment only after all of it was written.  Writes are idempotent (same point key overwrites), so a
segment partly written before a crash is simply written again.

Bounded: when the spool holds ``max_bytes``, :meth:`append` raises :class:`SpoolFull`, and the service
stops acknowledging (back-pressure to the broker) instead of losing data.  ``warn_fraction`` of the bound
logs a warning.

Format of a segment: records of ``<length:8 hex>\\n<payload>\\n`` where payload is UTF-8 line protocol;
a torn last record (crash mid-write, before fsync returned) is detected and ignored — its messages were
never acknowledged, the broker redelivers them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from cems.config import private_dir
from cems.errors import SpoolFull as SpoolFull  # declared in cems.errors, re-exported

log = logging.getLogger(__name__)

_SEGMENT_BYTES = 8 * 1024 * 1024


class Spool:
    """Blocking file operations: call them from a worker thread (``asyncio.to_thread``).  Thread-safe: the
    writer appends while the drainer reads and removes segments; sizes are tracked in memory, so
    :meth:`empty` and :attr:`size_bytes` cost no I/O."""

    def __init__(self, directory: Path, *, max_bytes: int = 1 << 30, warn_fraction: float = 0.8) -> None:
        self.dir = directory
        private_dir(self.dir)  # 0700: readings waiting for InfluxDB
        self.max_bytes = max_bytes
        self.warn_bytes = int(max_bytes * warn_fraction)
        self._warned = False
        self._current: Path | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in self._segments()}
        for p in [p for p, n in self._sizes.items() if n == 0]:
            p.unlink()
            del self._sizes[p]
        self._seq = max((self._seq_of(p) for p in self._sizes), default=0)

    @staticmethod
    def _seq_of(p: Path) -> int:
        return int(p.stem.split("-")[-1])

    def _segments(self) -> list[Path]:
        return sorted(self.dir.glob("spool-*.seg"), key=self._seq_of)

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._sizes)

    def empty(self) -> bool:
        return not self._sizes

    def append(self, lines: list[str]) -> None:
        """Append one batch durably (fsync).  Raises :class:`SpoolFull` at the bound."""
        with self._lock:
            self._append(lines)

    def _append(self, lines: list[str]) -> None:
        payload = "\n".join(lines).encode("utf-8")
        size = self.size_bytes
        if size + len(payload) > self.max_bytes:
            raise SpoolFull(f"spool {self.dir} holds {size} bytes of at most {self.max_bytes}")
        if size + len(payload) > self.warn_bytes and not self._warned:
            self._warned = True
            log.warning(
                "spool %s is above %d%% of its bound (%d bytes): InfluxDB has been down for a while",
                self.dir,
                round(100 * self.warn_bytes / self.max_bytes),
                self.max_bytes,
            )
        if self._fd is None or self._current is None or self._sizes.get(self._current, 0) > _SEGMENT_BYTES:
            self._roll()
        assert self._fd is not None and self._current is not None
        record = f"{len(payload):08x}\n".encode() + payload + b"\n"
        os.write(self._fd, record)
        os.fsync(self._fd)
        self._sizes[self._current] = self._sizes.get(self._current, 0) + len(record)

    def _roll(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._seq += 1
        self._current = self.dir / f"spool-{self._seq:012d}.seg"
        self._fd = os.open(self._current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sizes[self._current] = 0
        dfd = os.open(self.dir, os.O_RDONLY)  # make the new file's directory entry durable too
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def oldest(self) -> tuple[Path, list[list[str]]] | None:
        """The oldest segment and its batches.  If it is the one being appended to, it is closed first, so
        later appends go to a new segment and nothing is appended to a segment after it was read."""
        with self._lock:
            for seg in sorted(self._sizes, key=self._seq_of):
                if seg == self._current and self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                    self._current = None
                batches = list(self._read(seg))
                if batches:
                    return seg, batches
                seg.unlink(missing_ok=True)  # nothing complete in it (torn write only): never acknowledged
                del self._sizes[seg]
            return None

    @staticmethod
    def _read(seg: Path) -> Iterator[list[str]]:
        data = seg.read_bytes()
        pos = 0
        while pos + 9 <= len(data):
            try:
                n = int(data[pos : pos + 8], 16)
            except ValueError:
                log.error("spool segment %s is corrupt at byte %d; the rest is skipped", seg, pos)
                return
            start, end = pos + 9, pos + 9 + n
            if end + 1 > len(data):
                return  # torn record: never acknowledged
            yield data[start:end].decode("utf-8").split("\n")
            pos = end + 1

    def remove(self, seg: Path) -> None:
        """Delete a drained segment."""
        with self._lock:
            seg.unlink(missing_ok=True)
            self._sizes.pop(seg, None)
            if self.size_bytes < self.warn_bytes:
                self._warned = False

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self._current is not None and self._sizes.get(self._current) == 0:
                    self._current.unlink(missing_ok=True)
                    del self._sizes[self._current]
                self._current = None
