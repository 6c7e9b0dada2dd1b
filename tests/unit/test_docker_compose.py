"""docker-compose.yml is for users (no Docker engine here): check that it is valid and consistent with the
code — services, images, commands the CLI accepts, environment variables the CLI reads, files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cems.cli import build_parser
from gateways.cli import build_parser as gateway_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def test_services_and_images() -> None:
    s = COMPOSE["services"]
    assert {"mosquitto", "influxdb", "cems", "hj212-bridge", "grafana", "simulator"} <= set(s)
    assert s["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert s["influxdb"]["image"].startswith("influxdb:1.")
    for name in ("cems", "hj212-bridge", "simulator"):
        assert s[name]["build"] == "."
    assert (ROOT / "Dockerfile").exists()


def test_mounted_files_exist() -> None:
    for svc in COMPOSE["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{src} is mounted but missing"


def test_commands_parse_with_the_real_cli() -> None:
    s = COMPOSE["services"]
    env_cems = s["cems"]["environment"]
    # `cems run` with the compose environment must parse (CEMS_CONFIG etc. come from the environment)
    import os

    old = dict(os.environ)
    try:
        os.environ.update({k: str(v) for k, v in env_cems.items()})
        a = build_parser().parse_args(s["cems"]["command"])
        assert a.mqtt_url == "mqtt://mosquitto:1883" and a.influx_url == "http://influxdb:8086"
        assert a.config == "/etc/cems/registry.toml"
        for name in ("hj212-bridge", "simulator"):
            os.environ.update({k: str(v) for k, v in s[name]["environment"].items()})
            gateway_parser().parse_args(s[name]["command"])
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_environment_variables_are_ones_the_code_reads() -> None:
    code = "".join(
        p.read_text(encoding="utf-8") for p in [*(ROOT / "cems").rglob("*.py"), *(ROOT / "gateways").rglob("*.py")]
    )
    for name in ("cems", "hj212-bridge", "simulator"):
        for var in COMPOSE["services"][name]["environment"]:
            assert re.search(rf"[\"']{var}[\"']", code), f"{var} is set in compose but never read"


def test_sample_registry_and_grafana_provisioning() -> None:
    from cems.registry import load_registry

    reg = load_registry(ROOT / "deploy" / "registry.toml")
    assert len(reg.outlets()) > 10
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/influxdb.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://influxdb:8086"
    assert ds["datasources"][0]["jsonData"]["dbName"] == COMPOSE["services"]["influxdb"]["environment"]["INFLUXDB_DB"]
    conf = (ROOT / "deploy/mosquitto.conf").read_text()
    assert "max_inflight_messages" in conf and "persistence true" in conf


def test_dockerfile_installs_pinned_versions() -> None:
    """The image installs exactly the tested versions: every runtime dependency, and theirs, is pinned."""
    import tomllib
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "constraints.txt" in dockerfile and "-c constraints.txt" in dockerfile
    pinned: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(r).name for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        assert name in pinned, f"runtime dependency {name} is not pinned in constraints.txt"
        for r in distribution(name).requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    assert "numpy" not in seen, "numpy is not used at run time"
