"""cems.security without a broker: ACL text, usernames, secrets, config snippets, file writers."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cems.errors import CemsError, RegistryError, ServiceError
from cems.registry import Registry, parse_registry
from cems.security import (
    BrokerConfigOptions,
    broker_users,
    generate_test_ca,
    load_secrets,
    mosquitto_acl,
    mosquitto_auth_conf,
    parse_secrets,
    secret_env_var,
    write_broker_config,
    write_password_file,
)

BASE = """
[city]
name = "c"

[[district]]
code = "130602"
name = "D"

[[enterprise]]
id = "E001"
name = "plant"
district = "130602"

[[enterprise.outlet]]
mn = "13060200001001"
name = "1#"
profile = "coal_power_ultra_low"
password = "hj212-pw-is-not-a-broker-secret"

[[enterprise.outlet]]
mn = "13060200001002"
name = "2#"
profile = "coal_power_ultra_low"
"""


def registry(extra: str = "") -> Registry:
    return parse_registry(BASE + extra)


def rules(acl: str) -> list[str]:
    return [line for line in acl.splitlines() if line and not line.startswith("#")]


# ---- ACL


def test_acl_default_rules() -> None:
    acl = mosquitto_acl(registry('[[grid_sensor]]\nid = "G1"\ndistrict = "130602"\n'))
    assert rules(acl) == [
        "pattern write cems/v1/%u/+",
        "pattern read cems/cmd/v1/reply/%u/+",  # an MN reads only the answers to its own marks (issue 14)
        "pattern write grid/v1/%u",
        "user cems-ingester",
        "topic read cems/v1/+/+",
        "topic read grid/v1/+",
        "topic read cems/cmd/v1/#",
        "topic write cems/cmd/v1/reply/#",
        "topic write cems/alerts/v1/#",
        "topic write cems/deadletter/v1/#",
        "topic deny cems/v1/cems-ingester/#",
        "topic deny grid/v1/cems-ingester",
        "user cems-bridge",
        "topic write cems/v1/+/hj212",
        "topic deny cems/v1/cems-bridge/#",
        "topic deny grid/v1/cems-bridge",
    ]
    # every rule is documented by a comment, and nothing is granted to anonymous clients
    lines = acl.splitlines()
    first_user = lines.index("user cems-ingester")
    assert not any(line.startswith("topic") for line in lines[:first_user])
    for i, line in enumerate(lines):
        if line.startswith(("pattern", "topic")) and not lines[i - 1].startswith(("#", "topic", "user")):
            pytest.fail(f"undocumented ACL line {line!r}")
    assert "2 outlet(s)" in acl and "1 in the registry" in acl


def test_acl_optional_users_and_custom_prefixes() -> None:
    reg = registry(
        '[topics]\nprefix = "city/cems"\ngrid_prefix = "city/grid"\nalerts_prefix = "city/alerts"\n'
        'deadletter_prefix = "city/dead"\ncommand_prefix = "city/cmd"\n'
    )
    acl = mosquitto_acl(reg, ingester_user="ing", bridge_user=None, monitor_user="room", command_user="operator")
    r = rules(acl)
    assert "pattern write city/cems/%u/+" in r and "pattern write city/grid/%u" in r
    assert "topic write city/alerts/#" in r and "topic write city/dead/#" in r
    assert "user cems-bridge" not in r and not any("hj212" in line for line in r)
    assert r[r.index("user room") + 1] == "topic read city/alerts/#"
    assert r[r.index("user operator") + 1] == "topic write city/cmd/#"
    assert "topic deny city/cems/room/#" in r and "topic deny city/grid/operator" in r
    # the monitor never reads readings or dead letters
    room = r[r.index("user room") + 1 : r.index("user operator")]
    assert not any(line.startswith("topic read city/cems") or "dead" in line for line in room)


def test_ingester_is_read_only_on_data() -> None:
    r = rules(mosquitto_acl(registry()))
    ingester = r[r.index("user cems-ingester") + 1 : r.index("user cems-bridge")]
    assert not any(line.startswith(("topic write cems/v1", "topic readwrite", "topic write grid")) for line in ingester)
    assert {line for line in ingester if line.startswith("topic write")} == {
        "topic write cems/alerts/v1/#",
        "topic write cems/deadletter/v1/#",
        "topic write cems/cmd/v1/reply/#",
    }


def test_secrets_never_come_from_the_registry() -> None:
    acl = mosquitto_acl(registry())
    assert "hj212-pw-is-not-a-broker-secret" not in acl


@pytest.mark.parametrize(
    ("extra", "kwargs", "match"),
    [
        ('[[grid_sensor]]\nid = "13060200001001"\ndistrict = "130602"\n', {}, "also an outlet MN"),
        ('[[grid_sensor]]\nid = "a/b"\ndistrict = "130602"\n', {}, "cannot be a broker username"),
        ("", {"ingester_user": "13060200001002"}, "ingester user '13060200001002' is also an outlet MN"),
        ("", {"ingester_user": "x", "bridge_user": "x"}, "also the ingester user"),
        ("", {"monitor_user": "room #1"}, "cannot be a broker username"),
        ("", {"ingester_user": ""}, "must be named"),
        ('[topics]\nalerts_prefix = "cems/+/alerts"\n', {}, "wildcards"),
    ],
)
def test_invalid_usernames_and_prefixes(extra: str, kwargs: dict[str, str], match: str) -> None:
    # a grid id equal to an MN and a wildcard prefix are refused by the registry already (RegistryError)
    with pytest.raises((ValueError, RegistryError), match=match):
        mosquitto_acl(registry(extra), **kwargs)


def test_broker_users_lists_everyone() -> None:
    users = broker_users(
        registry('[[grid_sensor]]\nid = "G1"\ndistrict = "130602"\n'), monitor_user="room", bridge_user=None
    )
    assert users.gateways == ("13060200001001", "13060200001002")
    assert users.grid_sensors == ("G1",)
    assert dict(users.services) == {"cems-ingester": "ingester", "room": "monitor"}
    assert users.all() == ["13060200001001", "13060200001002", "G1", "cems-ingester", "room"]


# ---- secrets


def test_secret_env_var_names() -> None:
    assert secret_env_var("13060200001001") == "CEMS_SECRET_13060200001001"
    assert secret_env_var("cems-ingester") == "CEMS_SECRET_CEMS_INGESTER"
    assert secret_env_var("ab.c") == "CEMS_SECRET_AB_C"


def test_parse_secrets() -> None:
    text = "# broker passwords\n\n 13060200001001 = s3cret \ncems-ingester=a=b=c\n"
    assert parse_secrets(text) == {"13060200001001": "s3cret", "cems-ingester": "a=b=c"}
    with pytest.raises(ValueError, match=r"x:2: expected NAME=secret"):
        parse_secrets("a=1\nno-equals-sign\n", "x")
    with pytest.raises(ValueError, match="duplicate entry for 'a'"):
        parse_secrets("a=1\na=2\n")
    with pytest.raises(ValueError, match="expected NAME=secret"):
        parse_secrets("a=\n")


def test_load_secrets_file_and_environment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "secrets"
    f.write_text("13060200001001=from-file\ncems-ingester=file-ingester\n")
    f.chmod(0o600)
    env = {"CEMS_SECRET_CEMS_INGESTER": "env-ingester", "CEMS_SECRET_13060200001002": "env-2", "OTHER": "x"}
    with caplog.at_level(logging.WARNING, logger="cems.security"):
        got = load_secrets(f, names=["13060200001001", "13060200001002", "cems-ingester", "absent"], environ=env)
    assert got == {"13060200001001": "from-file", "13060200001002": "env-2", "cems-ingester": "env-ingester"}
    assert not caplog.records  # 0600: no warning
    # without names: every CEMS_SECRET_* variable, named by its suffix
    assert load_secrets(environ=env) == {"CEMS_INGESTER": "env-ingester", "13060200001002": "env-2"}
    assert load_secrets(environ={}) == {}


def test_load_secrets_warns_on_readable_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "secrets"
    f.write_text("a=1\n")
    f.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="cems.security"):
        assert load_secrets(f, environ={}) == {"a": "1"}
    assert "chmod 600" in caplog.text and "644" in caplog.text


def test_load_secrets_errors(tmp_path: Path) -> None:
    with pytest.raises(CemsError, match="cannot read secrets file"):
        load_secrets(tmp_path / "missing", environ={})
    bad = tmp_path / "bad"
    bad.write_text("garbage\n")
    bad.chmod(0o600)
    with pytest.raises(CemsError, match="invalid secrets file"):
        load_secrets(bad, environ={})


# ---- config snippets and files


def test_auth_conf_with_tls() -> None:
    conf = mosquitto_auth_conf(
        passwd_file="/etc/mosquitto/cems/passwd",
        acl_file="/etc/mosquitto/cems/acl",
        port=1883,
        tls=("/c/ca.crt", "/c/server.crt", "/c/server.key"),
        tls_port=8883,
    )
    r = rules(conf)
    assert r[:4] == [
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file /etc/mosquitto/cems/passwd",
        "acl_file /etc/mosquitto/cems/acl",
    ]
    assert r[4:] == [
        "listener 1883",
        "listener 8883",
        "cafile /c/ca.crt",
        "certfile /c/server.crt",
        "keyfile /c/server.key",
        "require_certificate false",
        "tls_version tlsv1.2",
    ]


def test_auth_conf_tls_only_and_bind() -> None:
    conf = mosquitto_auth_conf(passwd_file="p", acl_file="a", port=None, bind="10.0.0.1", tls=("c", "s", "k"))
    assert "listener 8883 10.0.0.1" in conf and "listener 1883" not in conf
    with pytest.raises(ValueError, match="no listener"):
        mosquitto_auth_conf(passwd_file="p", acl_file="a", port=None)


def _need(exe: str) -> None:
    if shutil.which(exe, path="/usr/bin:/usr/sbin:/bin") is None and shutil.which(exe) is None:
        pytest.skip(f"{exe} not installed")


def test_write_password_file_hashes(tmp_path: Path) -> None:
    _need("mosquitto_passwd")
    path = write_password_file(tmp_path / "sub" / "passwd", {"13060200001001": "s3cret:x", "cems-ingester": "pw"})
    text = path.read_text()
    lines = text.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["13060200001001", "cems-ingester"]
    assert "s3cret" not in text and all(line.split(":", 1)[1].startswith("$7$") for line in lines)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["passwd"]  # no plain-text leftovers


def test_write_password_file_rejects_bad_entries(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="contains ':'"):
        write_password_file(tmp_path / "p", {"a:b": "x"})
    with pytest.raises(ValueError, match="password of 'a' is empty"):
        write_password_file(tmp_path / "p", {"a": ""})
    with pytest.raises(ValueError, match="line break"):
        write_password_file(tmp_path / "p", {"a": "x\ny"})


def test_write_password_file_without_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEMS_MOSQUITTO_PASSWD_BIN", str(tmp_path / "nope"))
    with pytest.raises(ServiceError, match="not an executable"):
        write_password_file(tmp_path / "p", {"a": "b"})
    monkeypatch.delenv("CEMS_MOSQUITTO_PASSWD_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("cems.security.shutil.which", lambda *_a, **_k: None)
    with pytest.raises(ServiceError, match="apt-get install mosquitto"):
        write_password_file(tmp_path / "p", {"a": "b"})


def test_generate_test_ca(tmp_path: Path) -> None:
    _need("openssl")
    ca, cert, key = generate_test_ca(tmp_path / "tls")
    assert {p.name for p in (tmp_path / "tls").iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key"}
    assert key.stat().st_mode & 0o777 == 0o600
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(cert)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-ext", "subjectAltName"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text


# ---- cems broker-config


def _args(tmp_path: Path, **kw: Any) -> BrokerConfigOptions:
    reg = tmp_path / "registry.toml"
    reg.write_text(BASE)
    return BrokerConfigOptions(config=str(reg), out_dir=str(tmp_path / "out"), **kw)


def test_broker_config_requires_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEMS_SECRET_13060200001001", "pw1")
    with pytest.raises(CemsError, match="no broker password for: 13060200001002, cems-ingester, cems-bridge"):
        write_broker_config(_args(tmp_path))
    assert not (tmp_path / "out").exists()


def test_broker_config_writes_three_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _need("mosquitto_passwd")
    secrets = tmp_path / "secrets"
    secrets.write_text("13060200001001=pw1\ncems-ingester=pwi\n")
    secrets.chmod(0o600)
    monkeypatch.setenv("CEMS_SECRET_CEMS_INGESTER", "from-env")
    args = _args(
        tmp_path,
        secrets=str(secrets),
        bridge_user="",
        skip_missing=True,
        install_dir="/etc/mosquitto/cems",
        port=0,
        tls_port=8884,
        tls_ca="/etc/ssl/ca.crt",
        tls_cert="/etc/ssl/srv.crt",
        tls_key="/etc/ssl/srv.key",
    )
    summary = write_broker_config(args)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["acl", "mosquitto-secure.conf", "passwd"]
    assert [line.split(":")[0] for line in (out / "passwd").read_text().splitlines()] == [
        "13060200001001",
        "cems-ingester",
    ]
    assert "user cems-bridge" not in (out / "acl").read_text()
    conf = (out / "mosquitto-secure.conf").read_text()
    assert "password_file /etc/mosquitto/cems/passwd" in conf and "acl_file /etc/mosquitto/cems/acl" in conf
    assert "listener 8884" in conf and "listener 1883" not in conf and "certfile /etc/ssl/srv.crt" in conf
    assert summary.endswith("; 1 user(s) without a secret left out")


def test_broker_config_tls_options_go_together(tmp_path: Path) -> None:
    with pytest.raises(CemsError, match="go together"):
        write_broker_config(_args(tmp_path, tls_ca="ca.crt"))


def _matches(filt: str, topic: str) -> bool:
    """MQTT topic-filter matching (+ one level, # the rest)."""
    f, t = filt.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


def test_only_operators_may_set_the_warning_level() -> None:
    """Issue 16: the retained warning setting on {command_prefix}/warning decides which enterprises must cut or
    stop: only the command user (operators) may write it; devices, the bridge, the monitor and the ingester not."""
    acl = mosquitto_acl(registry(), monitor_user="room", command_user="operator")
    user = None
    writers: set[str] = set()
    for line in rules(acl):
        if line.startswith("user "):
            user = line.split()[1]
        elif line.startswith(("topic write ", "topic readwrite ")) and _matches(line.split()[2], "cems/cmd/v1/warning"):
            writers.add(user or "(anonymous)")
        elif line.startswith(("pattern write ", "pattern readwrite ")):  # per-device patterns: %u is the device
            assert not _matches(line.split()[2].replace("%u", "MN0001"), "cems/cmd/v1/warning")
    assert writers == {"operator"}
