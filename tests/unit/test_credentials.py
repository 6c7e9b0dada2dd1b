"""HJ 212 passwords from ``password_env``: resolved by one function for the bridge and the ingester, and a
missing variable fails closed (issue 13, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from registries import one_outlet  # tests/registries.py

from cems.cli import main as cems_main
from cems.config import Env
from cems.decode import decode_hj212
from cems.errors import ConfigError, RegistryError, RejectedMessage
from cems.protocol.hj212 import encode
from cems.registry import Registry, check_credentials, expected_password, parse_registry, with_credentials
from gateways.cli import main as gateway_main
from gateways.hj212_bridge import HJ212Bridge

ENV_REGISTRY = one_outlet().replace('password = "123456"', 'password_env = "PW_MN0001"')


def packet(pw: str | None) -> bytes:
    return encode(
        cn="2011",
        qn="20260301100000000",
        st="31",
        pw=pw,
        mn="MN0001",
        flag=5,
        data_time="20260301100000",
        values={"a34013": {"Rtd": 3.1, "Flag": "N"}},
    ).encode()


def registry() -> Registry:
    return parse_registry(ENV_REGISTRY)


def test_an_unresolved_password_env_rejects_every_pw_in_the_ingester(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PW_MN0001", raising=False)
    for pw in ("anything", None):
        with pytest.raises(RejectedMessage) as exc:
            decode_hj212(packet(pw), "MN0001", registry())
        assert exc.value.reason == "bad_password"


def test_the_model_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_MN0001", "s3cret")
    with pytest.raises(RejectedMessage, match="bad_password"):
        decode_hj212(packet("s3cret"), "MN0001", registry())  # only with_credentials resolves it


def test_resolved_credentials_check_the_pw() -> None:
    r = with_credentials(registry(), {"PW_MN0001": "s3cret"})
    assert decode_hj212(packet("s3cret"), "MN0001", r).mn == "MN0001"
    with pytest.raises(RejectedMessage, match="bad_password"):
        decode_hj212(packet("wrong"), "MN0001", r)
    assert r.outlet("MN0001") is not None and r.outlets()[0].outlet.hj212_password == "s3cret"
    # a registry without password_env is returned as it is
    plain = parse_registry(one_outlet())
    assert with_credentials(plain, {}) is plain


def test_missing_variables_are_named_and_refused() -> None:
    with pytest.raises(ConfigError, match="outlet MN0001: password_env 'PW_MN0001' is not set"):
        with_credentials(registry(), {})
    with pytest.raises(ConfigError, match="PW_MN0001"):
        check_credentials(registry(), {"PW_MN0001": ""})
    lenient = with_credentials(registry(), {}, strict=False)
    with pytest.raises(RejectedMessage, match="bad_password"):
        decode_hj212(packet("x"), "MN0001", lenient)


def test_bridge_and_ingester_resolve_with_the_same_function() -> None:
    outlet = registry().outlets()[0].outlet
    assert expected_password(outlet, {"PW_MN0001": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError):
        expected_password(outlet, {})
    bridge = HJ212Bridge(registry(), "mqtt://127.0.0.1:1", environ={"PW_MN0001": "s3cret"})
    assert bridge._password("MN0001") == (True, "s3cret")


def test_the_bridge_refuses_to_start_without_the_variable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PW_MN0001"):
        HJ212Bridge(registry(), "mqtt://127.0.0.1:1")
    path = tmp_path / "r.toml"
    path.write_text(ENV_REGISTRY, encoding="utf-8")
    assert gateway_main(["hj212-bridge", "--config", str(path), "--listen", "127.0.0.1:0"]) == 2
    assert "password_env 'PW_MN0001' is not set" in capsys.readouterr().err


def test_cems_run_and_registry_check_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PW_MN0001", raising=False)
    path = tmp_path / "r.toml"
    path.write_text(ENV_REGISTRY, encoding="utf-8")
    argv = ["run", "--config", str(path), "--mqtt-url", "mqtt://127.0.0.1:1", "--influx-url", "http://127.0.0.1:1"]
    assert cems_main(argv) == 2
    assert "enterprise E001 outlet MN0001: password_env 'PW_MN0001' is not set" in capsys.readouterr().err
    assert cems_main(["registry", "check", str(path)]) == 2
    assert "PW_MN0001" in capsys.readouterr().err
    assert cems_main(["registry", "check", "--no-credentials", str(path)]) == 0
    monkeypatch.setenv("PW_MN0001", "s3cret")
    assert cems_main(["registry", "check", str(path)]) == 0
    assert Env().get("PW_MN0001") == "s3cret"


def test_password_and_password_env_together_are_ambiguous() -> None:
    with pytest.raises(RegistryError, match="password and password_env"):
        parse_registry(one_outlet(outlet='password_env = "PW"\n'))
