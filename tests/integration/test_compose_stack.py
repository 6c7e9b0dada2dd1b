"""docker-compose.yml's configuration on the real programs (Docker is not on these machines, so build-free):
the files it mounts, the commands it runs and the environment it sets, with the secrets of .env.example.

- the broker: ``deploy/mosquitto.conf`` (the file compose mounts) + what the ``broker-config`` service's
  command writes (``cems broker-config`` with compose's arguments): anonymous clients are refused, the
  ingester logs in, and compose's own health-check command succeeds;
- InfluxDB with authentication and the users the influxdb image creates from compose's variables (admin;
  INFLUXDB_USER with ALL on INFLUXDB_DB; INFLUXDB_READ_USER with READ): the ingester (not an admin) writes,
  Grafana's datasource user reads and cannot write;
- the image's entry point as an unprivileged user: ``cems run`` with the ``cems`` service's command and
  environment (hosts pointed at the test's services) runs as uid 65534 with its CEMS_STATE_DIR and answers
  ``/healthz``; without a writable state directory it stops with a ConfigError naming the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from compose import env_example, interpolate  # tests/compose.py
from paho.mqtt.enums import CallbackAPIVersion

from cems.cli import build_parser
from cems.registry import load_registry
from cems.security import BrokerConfigOptions, write_broker_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
NOBODY = 65534


def _service_env(name: str) -> dict[str, str]:
    env = env_example()
    return {k: interpolate(str(v), env) for k, v in COMPOSE["services"][name].get("environment", {}).items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@dataclass
class Stack:
    mqtt_port: int
    influx_url: str
    auth_dir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for exe in ("mosquitto", "mosquitto_passwd", "influxd", "mosquitto_sub"):
        if shutil.which(exe) is None:
            pytest.skip(f"{exe} is not installed")
    base = tmp_path_factory.mktemp("compose")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # the broker: compose's broker-config command, then the mounted mosquitto.conf including its output
        mqtt_port = _free_port()
        auth = base / "auth"
        bc = COMPOSE["services"]["broker-config"]["command"]
        a = build_parser().parse_args(bc)
        write_broker_config(
            BrokerConfigOptions(
                config=str(ROOT / "deploy" / "registry.toml"),
                out_dir=str(auth),
                secrets=None,
                ingester_user=a.ingester_user,
                bridge_user=a.bridge_user,
                monitor_user=a.monitor_user,
                command_user=a.command_user,
                skip_missing=a.skip_missing,
                install_dir=str(auth),
                port=mqtt_port,  # compose: 1883 inside the container
                bind=a.bind,
                tls_port=a.tls_port,
            ),
            env_example(),
        )
        conf = (ROOT / "deploy" / "mosquitto.conf").read_text(encoding="utf-8")
        mounts = {v.split(":")[0]: v.split(":")[1] for v in COMPOSE["services"]["mosquitto"]["volumes"]}
        (base / "data").mkdir()
        conf = conf.replace(mounts["mosquitto-data"].rstrip("/") + "/", f"{base / 'data'}/")
        conf = conf.replace(f"include_dir {mounts['broker-auth']}", f"include_dir {auth}")
        assert str(auth) in conf and str(base / "data") in conf
        if os.geteuid() == 0:  # mosquitto would drop to user 'mosquitto', which cannot read the 0600 files
            conf = "user root\n" + conf
        (base / "mosquitto.conf").write_text(conf, encoding="utf-8")
        procs.append(subprocess.Popen(["mosquitto", "-c", str(base / "mosquitto.conf")], stderr=subprocess.PIPE))
        _wait_port(mqtt_port)

        # InfluxDB with authentication and the users the influxdb image creates from compose's variables
        http_port, rpc_port = _free_port(), _free_port()
        for d in ("meta", "data", "wal"):
            (base / "influx" / d).mkdir(parents=True)
        (base / "influx.conf").write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc_port}"\n'
            f'[meta]\n  dir = "{base}/influx/meta"\n[data]\n  dir = "{base}/influx/data"\n'
            f'  wal-dir = "{base}/influx/wal"\n[http]\n  bind-address = "127.0.0.1:{http_port}"\n'
            "  auth-enabled = true\n  log-enabled = false\n",
            encoding="utf-8",
        )
        procs.append(subprocess.Popen(["influxd", "-config", str(base / "influx.conf")], stderr=subprocess.DEVNULL))
        _wait_port(http_port)
        url = f"http://127.0.0.1:{http_port}"
        ienv = _service_env("influxdb")
        assert ienv["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
        _wait_ping(url)
        admin = (ienv["INFLUXDB_ADMIN_USER"], ienv["INFLUXDB_ADMIN_PASSWORD"])
        httpx.post(
            f"{url}/query", data={"q": f"CREATE USER {admin[0]} WITH PASSWORD '{admin[1]}' WITH ALL PRIVILEGES"}
        ).raise_for_status()
        db = ienv["INFLUXDB_DB"]
        stmts = (
            f"CREATE DATABASE {db}; "
            f"CREATE USER {ienv['INFLUXDB_USER']} WITH PASSWORD '{ienv['INFLUXDB_USER_PASSWORD']}'; "
            f"GRANT ALL ON {db} TO {ienv['INFLUXDB_USER']}; "
            f"CREATE USER {ienv['INFLUXDB_READ_USER']} WITH PASSWORD '{ienv['INFLUXDB_READ_USER_PASSWORD']}'; "
            f"GRANT READ ON {db} TO {ienv['INFLUXDB_READ_USER']}"
        )
        httpx.post(f"{url}/query", data={"q": stmts}, auth=admin).raise_for_status()
        yield Stack(mqtt_port, url, auth)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def _wait_ping(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(f"{url}/ping").status_code == 204:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def _connect(port: int, user: str | None, password: str | None) -> int:
    """The CONNACK reason code of a login (0 = accepted)."""
    result: list[int] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{time.monotonic_ns()}")
    if user is not None:
        c.username_pw_set(user, password)
    c.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc.value)
    c.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while not result and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()
    assert result, "no CONNACK"
    return result[0]


def test_broker_refuses_anonymous_and_accepts_the_ingester(stack: Stack) -> None:
    assert _connect(stack.mqtt_port, None, None) != 0
    env = _service_env("cems")
    assert _connect(stack.mqtt_port, env["CEMS_MQTT_USERNAME"], "wrong") != 0
    assert _connect(stack.mqtt_port, env["CEMS_MQTT_USERNAME"], env["CEMS_MQTT_PASSWORD"]) == 0
    bridge = _service_env("hj212-bridge")
    assert _connect(stack.mqtt_port, bridge["CEMS_MQTT_USERNAME"], bridge["CEMS_MQTT_PASSWORD"]) == 0
    # the ACL file is the one compose's broker-config writes: the ingester may not publish readings
    acl = (stack.auth_dir / "acl").read_text(encoding="utf-8")
    assert f"user {env['CEMS_MQTT_USERNAME']}" in acl and "allow_anonymous false" in (
        stack.auth_dir / "mosquitto-secure.conf"
    ).read_text(encoding="utf-8")


def test_compose_broker_health_check_logs_in(stack: Stack) -> None:
    svc = COMPOSE["services"]["mosquitto"]
    kind, cmd = svc["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    cmd = interpolate(cmd, {}).replace("-p 1883", f"-p {stack.mqtt_port}")
    env = {**os.environ, **_service_env("mosquitto")}
    assert subprocess.run(["sh", "-c", cmd], env=env, timeout=20).returncode == 0
    bad = {**env, "CEMS_MONITOR_PASSWORD": "wrong"}
    assert subprocess.run(["sh", "-c", cmd], env=bad, timeout=20, capture_output=True).returncode != 0


def test_influx_users_as_compose_configures_them(stack: Stack) -> None:
    ienv = _service_env("influxdb")
    db = ienv["INFLUXDB_DB"]
    # anonymous: refused
    anonymous = httpx.post(f"{stack.influx_url}/query", params={"db": db}, data={"q": "SHOW MEASUREMENTS"})
    assert anonymous.status_code == 401
    # Grafana's datasource: the provisioned user, its password from Grafana's environment; read-only
    ds = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/influxdb.yml").read_text(encoding="utf-8"))
    v1 = next(d for d in ds["datasources"] if d["uid"] == "cems-influxdb")
    genv = _service_env("grafana")
    pw = interpolate(v1["secureJsonData"]["password"].replace("$", "${", 1) + "}", genv)
    assert v1["user"] == ienv["INFLUXDB_READ_USER"] and pw == ienv["INFLUXDB_READ_USER_PASSWORD"]
    assert v1["jsonData"]["dbName"] == db
    w = httpx.post(f"{stack.influx_url}/write", params={"db": db}, content=b"m v=1", auth=(v1["user"], pw))
    assert w.status_code == 403


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory uid 65534 can reach (pytest's tmp dirs are under a 0700 directory of root)."""
    d = Path(tempfile.mkdtemp(prefix="cems-compose-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_entry_point_runs_as_an_unprivileged_user(stack: Stack, world_dir: Path) -> None:
    """``cems run`` as compose runs it (command, environment) as uid 65534 with the image's CEMS_STATE_DIR."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    svc = COMPOSE["services"]["cems"]
    env = _service_env("cems")
    env["CEMS_MQTT_URL"] = f"mqtt://127.0.0.1:{stack.mqtt_port}"
    env["CEMS_INFLUX_URL"] = stack.influx_url
    env["CEMS_CONFIG"] = str(ROOT / "deploy" / "registry.toml")
    state = world_dir / "state"  # the cems-state volume: owned by the image's user, 0700
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    env["CEMS_STATE_DIR"] = str(state)
    health = _free_port()
    prefix, extra = _unprivileged_cems()
    cmd = [*prefix, *svc["command"]]
    cmd[cmd.index("--health-port") + 1] = str(health)
    base_env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", **extra}
    p = subprocess.Popen(
        cmd, env={**base_env, **env}, user=NOBODY, group=NOBODY, extra_groups=[], stderr=subprocess.PIPE, cwd="/"
    )
    try:
        deadline = time.monotonic() + 30
        status = 0
        while time.monotonic() < deadline and p.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=2).status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                break
            time.sleep(0.3)
        assert status == 200, p.stderr.read().decode() if p.poll() is not None and p.stderr else "not healthy"
        assert (state / "ingester").stat().st_uid == NOBODY
        # the ingester's account reached the database (not an admin: CREATE DATABASE is refused, writes work)
        ienv = _service_env("influxdb")
        user = (ienv["INFLUXDB_USER"], ienv["INFLUXDB_USER_PASSWORD"])
        influx_write_auth(stack.influx_url, ienv["INFLUXDB_DB"], user)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    # without a writable state directory: a ConfigError naming it, exit 2, no traceback
    del env["CEMS_STATE_DIR"]
    r = subprocess.run(
        cmd, env={**base_env, **env}, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, timeout=30
    )
    err = r.stderr.decode()
    assert r.returncode == 2 and "CEMS_STATE_DIR" in err and "Traceback" not in err, err


def _unprivileged_cems() -> tuple[list[str], dict[str, str]]:
    """The ``cems`` entry point as uid 65534 can run it: the venv's console script when its interpreter is
    reachable, else (an interpreter under a 0700 home, as on these machines) ``python3.11 -m cems`` — the same
    ``cems.cli.main`` — with a world-readable system Python and the venv's packages on PYTHONPATH."""
    script = Path(sys.executable).parent / "cems"
    candidates: list[tuple[list[str], dict[str, str]]] = [([str(script)], {})]
    system = shutil.which("python3.11", path="/usr/local/bin:/usr/bin")
    if system:
        site = next((Path(p) for p in sys.path if p.endswith("site-packages") and ".venv" in p), None)
        candidates.append(([system, "-m", "cems"], {"PYTHONPATH": f"{ROOT}:{site}" if site else str(ROOT)}))
    for argv, env in candidates:
        try:
            r = subprocess.run(
                [*argv, "--version"], env={"PATH": "/usr/bin:/bin", **env}, user=NOBODY, group=NOBODY,
                extra_groups=[], capture_output=True, timeout=30, cwd="/",
            )  # fmt: skip
        except PermissionError:
            continue
        if r.returncode == 0:
            return argv, env
    pytest.skip("no Python interpreter this machine lets uid 65534 run")


def influx_write_auth(url: str, db: str, auth: tuple[str, str]) -> None:
    r = httpx.post(f"{url}/write", params={"db": db}, content=b"compose_check v=1", auth=auth)
    assert r.status_code == 204, r.text


def test_dashboards_registry_service_publishes_names(stack: Stack) -> None:
    """The dashboards-registry service's command with its environment: the writer account (not an admin, so
    CREATE DATABASE is refused) publishes cems_registry, which Grafana's read-only account then reads."""
    svc = COMPOSE["services"]["dashboards-registry"]
    env = _service_env("dashboards-registry")
    env["CEMS_INFLUX_URL"] = stack.influx_url
    env["CEMS_CONFIG"] = str(ROOT / "deploy" / "registry.toml")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "cems"), *svc["command"]],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr.decode()
    ienv = _service_env("influxdb")
    reader = (ienv["INFLUXDB_READ_USER"], ienv["INFLUXDB_READ_USER_PASSWORD"])
    resp = httpx.post(
        f"{stack.influx_url}/query",
        params={"db": ienv["INFLUXDB_DB"]},
        data={"q": 'SELECT count("name") FROM "cems_registry" WHERE "kind" = \'outlet\''},
        auth=reader,
    )
    values = resp.json()["results"][0]["series"][0]["values"]
    assert values[0][1] == len(load_registry(ROOT / "deploy" / "registry.toml").outlets())


def test_the_ingesters_reads_use_its_write_credentials(stack: Stack) -> None:
    """The live township ranking reads ``grid_daily`` back (cems.sinks.influx.config_query) with the account the
    ingester writes with; on an InfluxDB with authentication a read without it is refused."""
    from cems.errors import InfluxQueryError
    from cems.sinks.influx import InfluxConfig, config_query

    ienv = _service_env("influxdb")
    user = (ienv["INFLUXDB_USER"], ienv["INFLUXDB_USER_PASSWORD"])
    influx_write_auth(stack.influx_url, ienv["INFLUXDB_DB"], user)
    config = InfluxConfig(url=stack.influx_url, db=ienv["INFLUXDB_DB"], token=":".join(user))
    rows = config_query(config)("SELECT count(v) FROM compose_check", None)
    assert rows and rows[0]["count"] >= 1
    with pytest.raises(InfluxQueryError, match="401"):
        config_query(InfluxConfig(url=stack.influx_url, db=ienv["INFLUXDB_DB"]))("SELECT v FROM compose_check", None)
