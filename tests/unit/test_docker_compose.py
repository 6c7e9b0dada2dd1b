"""docker-compose.yml is for users (no Docker engine here): check that it is valid and consistent with the
code — services, images, commands the CLI accepts, environment variables the CLI reads, files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from compose import env_example, interpolate  # tests/compose.py

from cems.cli import build_parser
from cems.config import Env
from gateways.cli import build_parser as gateway_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


SERVICES = {
    "broker-config",
    "mosquitto",
    "influxdb",
    "cems",
    "dashboards-registry",
    "hj212-bridge",
    "grafana",
    "prometheus",
    "simulator",
}
LONG_RUNNING = SERVICES - {"broker-config", "simulator", "dashboards-registry"}


def _variables(node: object) -> set[str]:
    text = yaml.safe_dump(node)
    return set(re.findall(r"\$\{(\w+)", text))


def test_services_and_pinned_images() -> None:
    s = COMPOSE["services"]
    assert set(s) >= SERVICES
    for name, svc in s.items():
        if "image" in svc and "build" not in svc:
            # a full version: no floating tag such as :2.0, :1.8 or :latest
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", svc["image"]), f"{name}: {svc['image']} is not pinned"
    for name in ("cems", "hj212-bridge", "simulator", "broker-config", "dashboards-registry"):
        assert s[name]["build"] == "."
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1)), "the base image is not pinned"


def test_secrets_only_from_env_file() -> None:
    """Every secret is a required ${VAR:?} from .env; .env.example lists every variable compose reads; .env is
    never committed."""
    example = env_example()
    used = _variables(COMPOSE)
    listed = set(re.findall(r"^#?\s*(\w+)=", (ROOT / ".env.example").read_text(encoding="utf-8"), re.M))
    assert used <= listed, f"variables compose reads but .env.example does not list: {used - listed}"
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for secret in re.findall(r"\$\{(\w*(?:PASSWORD|SECRET)\w*)", text):
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} must be required (${{{secret}:?...}})"
    for name, svc in COMPOSE["services"].items():
        for k, v in (svc.get("environment") or {}).items():
            if re.search("PASSWORD|SECRET|TOKEN", k) and k != "INFLUXDB_V2_TOKEN":
                assert "${" in str(v), f"{name}: {k} is written into docker-compose.yml"
    # with nothing set, compose refuses to start (every required secret fails)
    with pytest.raises(KeyError):
        interpolate(str(COMPOSE["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]), {})
    assert example["GRAFANA_ADMIN_PASSWORD"] != "admin"
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    assert not (ROOT / ".env").exists() or ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8")


def test_ports_on_loopback_unless_opted_in() -> None:
    for name, svc in COMPOSE["services"].items():
        for port in svc.get("ports", []):
            spec = str(port)
            assert interpolate(spec, {}).count(":") == 2, f"{name}: {spec} must name the address it binds"
            assert interpolate(spec, {}).startswith("127.0.0.1:"), f"{name}: {spec} is not on loopback"
            opt_in = re.match(r"\$\{(CEMS_BIND_\w+):-127\.0\.0\.1\}:", spec)
            assert opt_in, f"{name}: {spec}: the address must come from a CEMS_BIND_* variable"
            assert interpolate(spec, {opt_in.group(1): "0.0.0.0"}).startswith("0.0.0.0:")


def test_health_checks_and_start_order() -> None:
    s = COMPOSE["services"]
    for name in LONG_RUNNING:
        hc = s[name].get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    for name, svc in s.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must give a condition"
        for dep, cond in deps.items():
            want = "service_completed_successfully" if dep == "broker-config" else "service_healthy"
            assert cond == {"condition": want}, f"{name} → {dep}: {cond}"
            if want == "service_healthy":
                assert "healthcheck" in s[dep]
    assert set(s["cems"]["depends_on"]) == {"mosquitto", "influxdb"}


def test_broker_has_no_anonymous_access() -> None:
    """The broker's listener, password file and ACL come only from `cems broker-config` (the broker-config
    service, run with the real CLI's arguments), written into the volume the broker includes."""
    conf = (ROOT / "deploy/mosquitto.conf").read_text(encoding="utf-8")
    directives = [line.split()[0] for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert "listener" not in directives and "allow_anonymous" not in directives and "port" not in directives
    assert "max_inflight_messages" in conf and "persistence true" in conf
    mosq = {v.split(":")[0]: v.split(":")[1] for v in COMPOSE["services"]["mosquitto"]["volumes"]}
    assert f"include_dir {mosq['broker-auth']}" in conf
    bc = COMPOSE["services"]["broker-config"]
    a = build_parser().parse_args(bc["command"])
    assert a.func.__name__ == "cmd_broker_config" and a.install_dir == mosq["broker-auth"]
    out = {v.split(":")[0]: v.split(":")[1] for v in bc["volumes"]}
    assert out["broker-auth"] == a.out_dir and a.monitor_user == "cems-monitor"
    assert "CEMS_SECRET_CEMS_MONITOR" in str(COMPOSE["services"]["mosquitto"]["environment"])
    example = env_example()
    for user in ("CEMS_INGESTER", "CEMS_BRIDGE", "CEMS_MONITOR"):
        assert f"CEMS_SECRET_{user}" in example
    assert bc["env_file"] == [".env"] and bc["user"] == "1883:1883"
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"install -d -o 1883 -g 1883 -m 0700 {a.out_dir}" in dockerfile and "mosquitto" in dockerfile


def test_influxdb_with_authentication_and_least_privilege() -> None:
    s = COMPOSE["services"]
    env = {k: str(v) for k, v in s["influxdb"]["environment"].items()}
    assert env["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    # the ingester writes as INFLUXDB_USER (v1 user:password), Grafana reads as INFLUXDB_READ_USER
    token = str(s["cems"]["environment"]["CEMS_INFLUX_TOKEN"])
    assert token.startswith(env["INFLUXDB_USER"] + ":${INFLUXDB_USER_PASSWORD")
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/influxdb.yml").read_text(encoding="utf-8"))
    v1 = next(d for d in ds["datasources"] if d["uid"] == "cems-influxdb")
    assert v1["user"] == env["INFLUXDB_READ_USER"] and v1["url"] == "http://influxdb:8086"
    assert v1["jsonData"]["dbName"] == env["INFLUXDB_DB"] == s["cems"]["environment"]["CEMS_INFLUX_DB"]
    # every $VAR the provisioning reads is in Grafana's environment
    ds_text = (ROOT / "dashboards/provisioning/datasources/influxdb.yml").read_text(encoding="utf-8")
    active = "\n".join(x for x in ds_text.splitlines() if not x.lstrip().startswith("#"))
    provisioned = set(re.findall(r"\$\{?(\w+)", active))
    assert provisioned <= set(s["grafana"]["environment"]), provisioned - set(s["grafana"]["environment"])


def test_grafana_is_not_admin_admin() -> None:
    env = COMPOSE["services"]["grafana"]["environment"]
    assert str(env["GF_SECURITY_ADMIN_PASSWORD"]).startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false" and env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_volumes_for_every_state() -> None:
    s = COMPOSE["services"]
    assert set(COMPOSE["volumes"]) >= {
        "broker-auth",
        "mosquitto-data",
        "influxdb-data",
        "grafana-data",
        "prometheus-data",
        "cems-state",
    }

    def target(svc: str, volume: str) -> str:
        return next(str(v).split(":")[1] for v in s[svc]["volumes"] if v.split(":")[0] == volume)

    assert target("mosquitto", "mosquitto-data") == "/mosquitto/data"
    assert target("influxdb", "influxdb-data") == "/var/lib/influxdb"
    assert target("grafana", "grafana-data") == "/var/lib/grafana"
    assert target("prometheus", "prometheus-data") == "/prometheus"
    # the ingester's state and spool (STATE_DIR/ingester, .../spool) live in the cems-state volume, which is
    # the image's CEMS_STATE_DIR, owned by its unprivileged user
    state = target("cems", "cems-state")
    assert s["cems"]["environment"]["CEMS_STATE_DIR"] == state
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"ENV CEMS_STATE_DIR={state}" in dockerfile
    assert f"install -d -o cems -g cems -m 0700 {state}" in dockerfile
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0"), "the image must not run as root"


def test_mounted_files_exist_and_match_provisioning() -> None:
    for svc in COMPOSE["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{src} is mounted but missing"
        for f in svc.get("env_file", []):
            assert f == ".env" and (ROOT / ".env.example").exists()
    g = {v.split(":")[0]: v.split(":")[1] for v in COMPOSE["services"]["grafana"]["volumes"]}
    prov = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/cems.yml").read_text(encoding="utf-8"))
    assert prov["providers"][0]["options"]["path"] == g["./dashboards"]
    assert g["./dashboards/provisioning"] == "/etc/grafana/provisioning"


def test_commands_parse_with_the_real_cli() -> None:
    s = COMPOSE["services"]
    env_cems = {k: interpolate(str(v), env_example()) for k, v in s["cems"]["environment"].items()}
    import os

    old = dict(os.environ)
    try:
        os.environ.update(env_cems)
        a = build_parser().parse_args(s["cems"]["command"])
        assert a.mqtt_url == "mqtt://mosquitto:1883" and a.influx_url == "http://influxdb:8086"
        assert a.config == "/etc/cems/registry.toml" and a.health_port == 9108
        assert "9108/healthz" in str(s["cems"]["healthcheck"]["test"])
        env_reg = {k: interpolate(str(v), env_example()) for k, v in s["dashboards-registry"]["environment"].items()}
        os.environ.update(env_reg)
        r = build_parser().parse_args(s["dashboards-registry"]["command"])
        assert r.func.__name__ == "cmd_dashboards_registry" and r.influx_url == "http://influxdb:8086"
        assert r.config == "/etc/cems/registry.toml" and r.influx_token.startswith("cems:")
        for name in ("hj212-bridge", "simulator"):
            os.environ.update({k: interpolate(str(v), env_example()) for k, v in s[name]["environment"].items()})
            gateway_parser().parse_args(s[name]["command"])
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_environment_variables_are_ones_the_code_reads() -> None:
    code = "".join(
        p.read_text(encoding="utf-8") for p in [*(ROOT / "cems").rglob("*.py"), *(ROOT / "gateways").rglob("*.py")]
    )
    for name in ("cems", "hj212-bridge", "simulator", "dashboards-registry"):
        for var in COMPOSE["services"][name]["environment"]:
            assert re.search(rf"[\"']{var}[\"']", code), f"{var} is set in compose but never read"


def test_sample_registry() -> None:
    from cems.registry import load_registry

    reg = load_registry(ROOT / "deploy" / "registry.toml")
    assert len(reg.outlets()) > 10


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


def test_prometheus_scrapes_the_ingester_metrics() -> None:
    """Prometheus scrapes the port `cems run --health-port` serves, on an address the compose network reaches,
    and Grafana's Prometheus datasource uses the scrape interval ($__rate_interval depends on it)."""
    s = COMPOSE["services"]
    env = {k: interpolate(str(v), env_example()) for k, v in s["cems"]["environment"].items()}
    a = build_parser(Env(env)).parse_args(s["cems"]["command"])
    assert a.health_host == "0.0.0.0" and "ports" not in s["cems"] and "ports" not in s["prometheus"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text(encoding="utf-8"))
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"cems:{a.health_port}"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in s["prometheus"]["volumes"]}
    assert f"--config.file={mounts['./deploy/prometheus.yml']}" in s["prometheus"]["command"]
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/influxdb.yml").read_text(encoding="utf-8"))
    p = next(d for d in ds["datasources"] if d["type"] == "prometheus")
    assert p["uid"] == "cems-prometheus" and p["url"] == "http://prometheus:9090"
    assert p["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]
