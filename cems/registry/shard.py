"""Outlets spread over several ingesters: the shard of an outlet, the topics of a shard (docs/scaling.md).

The mapping is fixed and simple enough for a gateway, the HJ 212 bridge or a broker rule to compute:

    shard(mn) = CRC-32(mn as UTF-8) mod N

with CRC-32 the ISO-HDLC / zlib / ``binascii.crc32`` / ``hash/crc32.ChecksumIEEE`` one (polynomial
0x04C11DB7 reflected, initial and final XOR 0xFFFFFFFF; ``crc32(b"123456789") == 0xCBF43926``), read as an
unsigned 32-bit integer.  It depends on the MN alone, so an outlet keeps its shard as long as N is unchanged.

With sharding on, gateways publish an outlet's data under a shard level, ``{prefix}/s{k}/{mn}/{stream}``
(e.g. ``cems/v1/s1/{mn}/hj212``), and ingester *k* of *N* (``cems run --shard k/N``) subscribes to
``{prefix}/s{k}/+/+`` only: any MQTT broker can route that, none needs to hash.  Its registry is narrowed to
the outlets of its shard, so its transmission counts, silence checks and district figures cover exactly the
outlets it owns.

Shared subscriptions (``--share-group G``) put ``$share/G/`` in front of the data filters: the broker then
gives each message to one member of the group (MQTT 5 §4.8.2; Mosquitto, NATS, EMQX, HiveMQ and RabbitMQ
accept the filter from MQTT 3.1.1 clients too).  Per-outlet affinity needs a broker that hashes the topic
(EMQX ``hash_topic``); combined with ``--shard`` a group is a set of hot stand-ins for one shard.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from cems.registry._model import Registry, Topics

_SHARD = re.compile(r"^\s*(\d{1,4})\s*/\s*(\d{1,4})\s*$")
#: A shared subscription's group name: one topic level, without wildcards (MQTT 5 §4.8.2).
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def shard_of(mn: str, count: int) -> int:
    """The shard (0 … count-1) of the outlet ``mn``: CRC-32 of its UTF-8 bytes, mod ``count``."""
    if count < 1:
        raise ValueError(f"shard count {count}: must be at least 1")
    return zlib.crc32(mn.encode("utf-8")) % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (``cems run --shard index/count``)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard {self.index}/{self.count}: the count must be at least 1")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index must be 0 … {self.count - 1}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` → ``Shard(K, N)``; anything else raises ``ValueError`` saying what is expected."""
        m = _SHARD.match(text)
        if m is None:
            raise ValueError(f"shard {text!r}: expected K/N, e.g. 0/2 (shard K of N, K from 0)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def level(self) -> str:
        """The topic level of this shard: ``s{index}``."""
        return f"s{self.index}"

    def owns(self, mn: str) -> bool:
        return shard_of(mn, self.count) == self.index

    def topic_prefix(self, prefix: str) -> str:
        """Where gateways publish this shard's outlets: ``{prefix}/s{index}``."""
        return f"{prefix}/{self.level}"


def outlet_topic(prefix: str, mn: str, stream: str, count: int | None = None) -> str:
    """The topic a gateway publishes ``mn``'s ``stream`` on: ``{prefix}/{mn}/{stream}``, or with ``count``
    shards ``{prefix}/s{shard_of(mn, count)}/{mn}/{stream}``."""
    if count is None:
        return f"{prefix}/{mn}/{stream}"
    return f"{prefix}/s{shard_of(mn, count)}/{mn}/{stream}"


def check_share_group(group: str) -> str:
    """A valid shared-subscription group name, or ``ValueError``."""
    if not _GROUP.match(group):
        raise ValueError(f"share group {group!r}: 1-64 characters of A-Z a-z 0-9 _ . - (one topic level)")
    return group


def shared(topic_filter: str, group: str | None) -> str:
    """``topic_filter`` as a shared subscription of ``group`` (``$share/{group}/{filter}``), or unchanged."""
    return topic_filter if group is None else f"$share/{group}/{topic_filter}"


def data_subscriptions(topics: Topics, *, share_group: str | None = None, grid: bool = True) -> list[str]:
    """The ingester's data topic filters for a registry's ``topics`` (already narrowed by :func:`shard_registry`
    when sharded): outlets ``{prefix}/+/+`` and, with ``grid``, grid sensors ``{grid_prefix}/+``."""
    subs = [shared(f"{topics.prefix}/+/+", share_group)]
    if grid:
        subs.append(shared(f"{topics.grid_prefix}/+", share_group))
    return subs


def shard_registry(registry: Registry, shard: Shard) -> Registry:
    """The registry one ingester of a sharded deployment runs with: only the outlets of ``shard`` (an
    enterprise keeps its outlets of this shard, and is left out when it has none), and the outlets' topic
    prefix ``{prefix}/s{k}``.  Districts, grid sensors, the other prefixes and every setting are unchanged."""
    enterprises = []
    for e in registry.enterprise:
        mine = [o for o in e.outlet if shard.owns(o.mn)]
        if mine:
            enterprises.append(e.model_copy(update={"outlet": mine}))
    narrowed = registry.reindexed(enterprises)
    topics = registry.topics.model_copy(update={"prefix": shard.topic_prefix(registry.topics.prefix)})
    return narrowed.model_copy(update={"topics": topics})
