"""Shared fixtures: the project-owned Mosquitto / InfluxDB / VictoriaMetrics of ``cems.devtools.local``.

Everything listens on 127.0.0.1 on free ports (never 1883/8086/8088), with generated configs and data
under a per-session tmp dir. Use the fixtures by name:

``services_dir``    (session) Path of that state dir.
``service_binaries`` (session) skips/fails unless mosquitto and influxd are installed (for tests
                    that run their own ``LocalServices``).
``local_services``  (session) ``LocalServices`` with mosquitto + influxdb up; ``down()`` at session end.
``mosquitto``       (session) handle: ``.host .port .url`` ("mqtt://127.0.0.1:PORT") ``.pid``,
                    ``.stop(kill=False) .start() .restart(kill=False) .running()``. Restarts keep the
                    port and the persistence file (persistent sessions, queued QoS 1/2 messages).
``influxdb``        (session) same handle (``.url`` = "http://127.0.0.1:PORT") plus
                    ``.query(db, q, epoch=None) -> list[dict]``, ``.write(db, lines)``,
                    ``.create_db(name)``, ``.drop_db(name)``. Restarts keep the data.
``victoria``        (session) VictoriaMetrics, started only when a test asks for it; same handle.
``influx_db``       (function) name of a fresh, uniquely named InfluxDB database, dropped afterwards.

A test that stops a service and does not start it again does not break later tests: every service a
test used is started again after it (autouse ``_restore_services``).

Missing binaries skip the tests that need them, with the apt package to install. When the environment
variable ``CI`` is set (and not "false"/"0") they FAIL instead, so CI cannot silently skip them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cems.devtools.local import (
    INFLUXDB,
    MOSQUITTO,
    VICTORIA,
    LocalServices,
    ServiceInfo,
    missing_binaries,
)
from cems.sinks.influx import create_database, drop_database, influx_query, influx_write


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_binaries(*names: str) -> None:
    """Skip the current test (fail it when CI is set) unless every named service binary is installed."""
    missing = missing_binaries(names)
    if missing:
        msg = "local services unavailable: " + "; ".join(missing.values())
        if _in_ci():
            pytest.fail(msg + " (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(msg)


@dataclass
class ServiceHandle:
    """A service of the session; ``host``/``port``/``url`` stay valid while it is stopped."""

    services: LocalServices
    info: ServiceInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def host(self) -> str:
        return self.info.host

    @property
    def port(self) -> int:
        return self.info.port

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def pid(self) -> int:
        return self.info.pid

    def running(self) -> bool:
        return self.services.info(self.name) is not None

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (clean shutdown, state saved) or, with ``kill=True``, SIGKILL."""
        self.services.stop_service(self.name, kill=kill)

    def start(self) -> None:
        """Start again on the same port with the same data dir (no-op if it runs)."""
        self.info = self.services.start(self.name, self.port)

    def restart(self, *, kill: bool = False) -> None:
        self.info = self.services.restart(self.name, kill=kill)


class InfluxHandle(ServiceHandle):
    def query(self, db: str, q: str, *, epoch: str | None = None) -> list[dict[str, Any]]:
        return influx_query(self.url, db, q, epoch=epoch)

    def write(self, db: str, lines: str | Iterable[str], *, precision: str = "ns") -> None:
        influx_write(self.url, db, lines, precision=precision)

    def create_db(self, name: str) -> None:
        create_database(self.url, name)

    def drop_db(self, name: str) -> None:
        drop_database(self.url, name)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def _services_root(services_dir: Path) -> Iterator[LocalServices]:
    services = LocalServices(services_dir)
    yield services
    services.down()


@pytest.fixture(scope="session")
def service_binaries() -> None:
    require_binaries(MOSQUITTO, INFLUXDB)


@pytest.fixture(scope="session")
def local_services(_services_root: LocalServices, service_binaries: None) -> LocalServices:
    _services_root.up((MOSQUITTO, INFLUXDB))
    return _services_root


@pytest.fixture(scope="session")
def mosquitto(local_services: LocalServices) -> ServiceHandle:
    return ServiceHandle(local_services, local_services.start_mosquitto())


@pytest.fixture(scope="session")
def influxdb(local_services: LocalServices) -> InfluxHandle:
    return InfluxHandle(local_services, local_services.start_influxdb())


@pytest.fixture(scope="session")
def victoria(_services_root: LocalServices) -> ServiceHandle:
    require_binaries(VICTORIA)
    return ServiceHandle(_services_root, _services_root.start_victoria())


@pytest.fixture
def influx_db(influxdb: InfluxHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40].strip("_")
    name = f"test_{stem}_{uuid.uuid4().hex[:8]}"
    influxdb.create_db(name)
    yield name
    if influxdb.running():
        influxdb.drop_db(name)


@pytest.fixture(autouse=True)
def _restore_services(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test, start again any session service it used and left stopped."""
    yield
    for name in ("mosquitto", "influxdb", "victoria"):
        if name in request.fixturenames:
            handle = request.getfixturevalue(name)
            if isinstance(handle, ServiceHandle) and not handle.running():
                handle.start()
