"""Outlets over several ingesters (issue 20): the MN → shard mapping, the shard's registry and topics, and the
``cems run --shard`` / ``--share-group`` options."""

from __future__ import annotations

import argparse
import binascii
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from registries import many_outlets  # tests/registries.py

from cems.cli import build_parser
from cems.cli.run import DEFAULT_CLIENT_ID, scale_options
from cems.config import Env
from cems.errors import ConfigError
from cems.registry import parse_registry
from cems.registry.shard import (
    Shard,
    check_share_group,
    data_subscriptions,
    outlet_topic,
    shard_of,
    shard_registry,
    shared,
)

MNS = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=24)


def _crc32_bitwise(data: bytes) -> int:
    """CRC-32 (ISO-HDLC) computed bit by bit from its definition, as a gateway without zlib would."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_the_documented_check_value() -> None:
    # the CRC-32 check value every implementation must give (the documented test vector in shard.py)
    assert _crc32_bitwise(b"123456789") == 0xCBF43926
    assert shard_of("123456789", 0xCBF43926 + 1) == 0xCBF43926


@given(MNS, st.integers(min_value=1, max_value=64))
def test_shard_of_is_crc32_mod_n(mn: str, n: int) -> None:
    expected = _crc32_bitwise(mn.encode()) % n
    assert shard_of(mn, n) == expected == binascii.crc32(mn.encode()) % n
    assert 0 <= shard_of(mn, n) < n


def test_shards_spread_real_mns_evenly() -> None:
    # 4 000 random 14-digit MNs (as HJ 212 devices carry): each of 4 shards gets about a quarter
    rng = random.Random(20)
    mns = [f"{rng.randrange(10**14):014d}" for _ in range(4000)]
    counts = [sum(shard_of(mn, 4) == k for mn in mns) for k in range(4)]
    assert sum(counts) == 4000
    assert min(counts) > 900, counts


@given(MNS, st.integers(min_value=1, max_value=16))
def test_exactly_one_shard_owns_an_outlet(mn: str, n: int) -> None:
    owners = [k for k in range(n) if Shard(k, n).owns(mn)]
    assert owners == [shard_of(mn, n)]


@pytest.mark.parametrize(("text", "shard"), [("0/2", Shard(0, 2)), ("1/2", Shard(1, 2)), (" 3 / 8 ", Shard(3, 8))])
def test_parse(text: str, shard: Shard) -> None:
    assert Shard.parse(text) == shard
    assert Shard.parse(str(shard)) == shard


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3", ""])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard.parse(text)


def test_topics() -> None:
    s = Shard(1, 2)
    assert s.topic_prefix("cems/v1") == "cems/v1/s1"
    mn = next(f"MN{i:04d}" for i in range(100) if shard_of(f"MN{i:04d}", 2) == 1)
    assert outlet_topic("cems/v1", mn, "hj212", 2) == f"cems/v1/s1/{mn}/hj212"
    assert outlet_topic("cems/v1", mn, "hj212") == f"cems/v1/{mn}/hj212"
    assert shared("cems/v1/+/+", "cems") == "$share/cems/cems/v1/+/+"
    assert shared("cems/v1/+/+", None) == "cems/v1/+/+"


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#", "x" * 65])
def test_bad_share_group(group: str) -> None:
    with pytest.raises(ValueError, match="share group"):
        check_share_group(group)


def test_shard_registry_partitions_the_outlets() -> None:
    reg = parse_registry(many_outlets(40))
    parts = [shard_registry(reg, Shard(k, 3)) for k in range(3)]
    mns = [sorted(i.outlet.mn for i in p.outlets()) for p in parts]
    assert sorted(mn for m in mns for mn in m) == sorted(i.outlet.mn for i in reg.outlets())
    for k, (p, m) in enumerate(zip(parts, mns, strict=True)):
        assert m and all(shard_of(mn, 3) == k for mn in m)
        assert p.topics.prefix == f"cems/v1/s{k}"
        assert p.topics.command_prefix == reg.topics.command_prefix
        assert p.topics.grid_prefix == reg.topics.grid_prefix
        assert p.district == reg.district
        for mn in m:  # the outlet's enterprise and district, as in the whole registry
            info, whole = p.outlet(mn), reg.outlet(mn)
            assert info is not None and whole is not None
            assert (info.enterprise.id, info.district.code) == (whole.enterprise.id, whole.district.code)
        assert all(e.outlet for e in p.enterprise)  # no enterprise without an outlet of the shard
    assert reg.topics.prefix == "cems/v1"  # the original is unchanged


def test_subscriptions() -> None:
    reg = parse_registry(many_outlets(2))
    assert data_subscriptions(reg.topics) == ["cems/v1/+/+", "grid/v1/+"]
    assert data_subscriptions(shard_registry(reg, Shard(1, 2)).topics, share_group="g", grid=False) == [
        "$share/g/cems/v1/s1/+/+"
    ]


def _args(*extra: str, env: dict[str, str] | None = None) -> tuple[argparse.Namespace, Env]:
    e = Env(env or {})
    return build_parser(e).parse_args(["run", "--config", "r.toml", *extra]), e


def test_shard_option_gives_per_shard_client_id_and_state_dir(tmp_path: Path) -> None:
    a, env = _args("--shard", "1/2", env={"CEMS_STATE_DIR": str(tmp_path)})
    shard, group = scale_options(a, env)
    assert shard == Shard(1, 2) and group is None
    assert a.client_id == f"{DEFAULT_CLIENT_ID}-s1"
    assert a.state_dir == str(tmp_path / "ingester-s1")
    assert scale_options(a, env) == (shard, None)  # idempotent
    assert a.client_id == f"{DEFAULT_CLIENT_ID}-s1"


def test_shard_from_the_environment_and_explicit_ids_kept(tmp_path: Path) -> None:
    a, env = _args(
        "--client-id", "prov-a", "--state-dir", str(tmp_path / "a"), env={"CEMS_SHARD": "0/3", "CEMS_SHARE_GROUP": "g"}
    )
    assert scale_options(a, env) == (Shard(0, 3), "g")
    assert (a.client_id, a.state_dir) == ("prov-a", str(tmp_path / "a"))


def test_share_group_needs_its_own_client_id() -> None:
    a, env = _args("--share-group", "cems")
    with pytest.raises(ConfigError, match="own --client-id"):
        scale_options(a, env)
    a, env = _args("--share-group", "cems", "--client-id", "cems-a")
    assert scale_options(a, env) == (None, "cems")


@pytest.mark.parametrize("value", ["2/2", "x", "0/0"])
def test_bad_shard_option(value: str) -> None:
    a, env = _args("--shard", value)
    with pytest.raises(ConfigError, match="--shard"):
        scale_options(a, env)
