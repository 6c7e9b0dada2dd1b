"""The decoded HJ 212 :class:`Packet` and the protocol constants the decoder, encoder and framer share.

Pure, no I/O.  Kept apart so that decoding, encoding and framing each depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

#: Maximum data-segment length in the standard (bytes).
MAX_DATA_BYTES: Final = 1024

# QnRtn codes of CN 9011 (request reply).
QNRTN_READY: Final = 1
QNRTN_REJECTED: Final = 2
QNRTN_PW_ERROR: Final = 3
QNRTN_MN_ERROR: Final = 4
QNRTN_ST_ERROR: Final = 5
QNRTN_FLAG_ERROR: Final = 6
QNRTN_QN_ERROR: Final = 7
QNRTN_CN_ERROR: Final = 8
QNRTN_CRC_ERROR: Final = 9
QNRTN_UNKNOWN: Final = 100

CN_HEARTBEAT: Final = "9015"

_VERSIONS: Final = {0: "2005", 1: "2017", 2: "2025"}
_VERSION_BITS: Final = {v: k for k, v in _VERSIONS.items()}
_HEADER_ORDER: Final = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_HEADER_RANK: Final = {k: i for i, k in enumerate(_HEADER_ORDER)}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_DIGITS: Final = frozenset("0123456789")
#: Suffixes whose value is text, never a number.
_TEXT_SUFFIXES: Final = frozenset({"Flag", "EFlag", "SampleTime", "Info"})
#: Characters that cannot appear in a written name or value.
_RESERVED: Final = frozenset(";,=&\r\n")


# ------------------------------------------------------------------------------------------ Packet


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded HJ 212 packet.

    ``values`` maps a pollutant code to ``{suffix: value}`` with the suffix exactly as sent (``Rtd``,
    ``Avg``, ``ZsAvg``, ``Cou``, ``Flag``, ``RS``, ...): numbers as ``float``, flags (and values of unknown
    suffixes that are not numbers) as ``str``.  ``cp_other`` holds CP items that are not ``code-suffix``
    pairs (``QnRtn``, ``ExeRtn``, ``RtdInterval``, ``SystemTime``, ``PolId`` ...).  ``raw`` is the data
    segment (what the CRC covers).  ``crc_ok`` is true only when the HJ 212 CRC matched.  ``dropped`` names
    the numeric items left out because their value was not a finite number.
    """

    cn: str
    qn: str | None = None
    st: str | None = None
    pw: str | None = None
    mn: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    data_time: datetime | None = None
    values: dict[str, dict[str, float | str]] = field(default_factory=dict)
    cp_other: dict[str, str] = field(default_factory=dict)
    crc_ok: bool = True
    deviations: list[str] = field(default_factory=list)
    raw: str = ""
    #: ``code-suffix`` of the numeric items whose value was not a finite number (``nan``, ``inf``, ``abc``):
    #: left out of ``values`` (each also in ``deviations``) and counted by the ingester and ``cems replay``.
    dropped: tuple[str, ...] = ()

    @property
    def version(self) -> str | None:
        """ "2005", "2017" or "2025" from the Flag version bits; ``None`` without Flag or for unknown bits."""
        if self.flag is None:
            return None
        return _VERSIONS.get(self.flag >> 2)

    @property
    def needs_reply(self) -> bool:
        """The Flag's A bit: the sender expects a reply (9014 for data)."""
        return self.flag is not None and bool(self.flag & 1)

    @property
    def is_split(self) -> bool:
        return self.pnum is not None

    @property
    def value_count(self) -> int:
        return sum(len(v) for v in self.values.values())


def _snippet(s: str, n: int = 40) -> str:
    return repr(s if len(s) <= n else s[:n] + "...")


def _is_digits(s: str) -> bool:
    return bool(s) and s.isascii() and s.isdigit()
