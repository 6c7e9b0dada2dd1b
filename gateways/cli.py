"""The ``cems-gateway`` command line: programs that run at or near the plant.

The entry point of ``gateways/``: the only module here that reads argv and the environment (through
:class:`cems.config.Env`, so a bad value is ``cems-gateway: error: ...``, exit 2, never a traceback).  It turns
them into typed settings and hands those to the library: :func:`gateways.simulator.run_simulator` and
:func:`gateways.hj212_bridge.run_bridge` (with :class:`~cems.service.mqtt.MqttSettings` and an environ
mapping for the registry's ``password_env``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from cems.config import Env, state_dir
from cems.errors import CemsError
from cems.protocol.payload import parse_data_time
from cems.registry import Registry, check_credentials, load_registry, with_credentials
from cems.sinks.archive import DEFAULT_RETENTION_DAYS, ArchiveSettings
from gateways.hj212_bridge import bridge_mqtt_settings, run_bridge
from gateways.simulator import PROTOCOLS, SimConfig, SimStats, run_simulator

Command = Callable[[argparse.Namespace, Env], int]

DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"


# ------------------------------------------------------------------------------------------ simulate


def _speed(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"speed {text!r} must be > 0 (inf: as fast as possible)")
    return v


def add_simulate_arguments(parser: argparse.ArgumentParser, env: Env | None = None) -> None:
    """Options of ``cems-gateway simulate``; defaults from the environment (``env``, else the process's)."""
    e = env or Env()
    env_config = e.get("CEMS_CONFIG")
    parser.add_argument("--config", default=env_config, required=env_config is None, help="registry TOML [CEMS_CONFIG]")
    parser.add_argument(
        "--mqtt-url",
        default=e.string("CEMS_MQTT_URL", DEFAULT_MQTT_URL),
        help="broker URL [CEMS_MQTT_URL] (default mqtt://127.0.0.1:1883)",
    )
    parser.add_argument(
        "--speed", type=_speed, default=1.0, help="simulated seconds per real second (60: a minute per second; inf)"
    )
    parser.add_argument("--duration", type=float, default=None, help="simulated seconds to run (default: forever)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="json", help="what outlets send (default json)")
    parser.add_argument("--bridge", default=None, metavar="HOST:PORT", help="send HJ 212 over TCP to the bridge")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--start", default=None, help="simulated start time, ISO 8601 (default now, Beijing time)")
    parser.add_argument("--no-grid", action="store_true", help="do not simulate grid sensors")
    parser.add_argument(
        "--grid-hotspot",
        action="append",
        default=[],
        metavar="SENSOR_ID",
        help="make this grid sensor clearly higher than its surroundings (PM2.5, PM10 x 2.5): a grid_hotspot "
        "(repeatable)",
    )
    parser.add_argument(
        "--eventful",
        action="store_true",
        help="many more exceedance episodes, gaps, calibrations and maintenance (for demos)",
    )


def _simulate(a: argparse.Namespace, env: Env) -> int:
    """``cems-gateway simulate``: run until --duration is simulated or SIGINT/SIGTERM; print the counters."""
    # the device side needs the PW too: password_env resolved as the bridge and the ingester do
    registry = with_credentials(load_registry(a.config), env.values, strict=False)
    start = parse_data_time(a.start) if a.start else None
    config = SimConfig(grid=not a.no_grid, grid_hotspots=tuple(a.grid_hotspot))
    if a.eventful:
        config = replace(
            config, exceedances_per_day=4.0, gaps_per_day=1.0, calibrations_per_day=2.0, maintenance_per_day=1.0
        )
    grid_only_via_mqtt = (
        a.bridge is not None and a.protocol == "hj212" and (not config.grid or not registry.grid_sensor)
    )
    mqtt_url: str | None = None if grid_only_via_mqtt else a.mqtt_url

    async def main() -> SimStats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await run_simulator(
            registry,
            mqtt_url,
            speed=a.speed,
            duration_s=a.duration,
            protocol=a.protocol,
            bridge=a.bridge,
            seed=a.seed,
            start=start,
            stop_event=stop,
            config=config,
        )

    stats = asyncio.run(main())
    print(stats.summary())
    return 1 if stats.failed else 0


# ------------------------------------------------------------------------------------------ hj212-bridge


def add_bridge_arguments(parser: argparse.ArgumentParser, env: Env | None = None) -> None:
    """Options of ``cems-gateway hj212-bridge``; defaults from the environment (``env``, else the process's)."""
    e = env or Env()
    env_config = e.get("CEMS_CONFIG")
    parser.add_argument(
        "--listen",
        default=e.string("CEMS_BRIDGE_LISTEN", "0.0.0.0:9212"),
        help="HOST:PORT to listen on [CEMS_BRIDGE_LISTEN] (default 0.0.0.0:9212)",
    )
    parser.add_argument(
        "--config", default=env_config, required=env_config is None, help="registry TOML (MN → password) [CEMS_CONFIG]"
    )
    parser.add_argument("--mqtt-url", default=e.string("CEMS_MQTT_URL", DEFAULT_MQTT_URL), help="[CEMS_MQTT_URL]")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=300.0,
        help="close a connection that sent no authenticated packet for this long (s; stray bytes do not count)",
    )
    parser.add_argument("--max-connections", type=int, default=10000, help="connections open at once, in all")
    parser.add_argument(
        "--shards",
        type=int,
        default=e.integer("CEMS_SHARDS", 0, minimum=0) or None,
        metavar="N",
        help="publish each outlet under its shard, {prefix}/s{K}/{mn}/hj212 with K = CRC-32(MN) mod N, for "
        "`cems run --shard K/N` ingesters (docs/scaling.md), e.g. 2 [CEMS_SHARDS]",
    )
    parser.add_argument("--max-connections-per-ip", type=int, default=64, help="connections open at once per peer IP")
    parser.add_argument(
        "--max-junk-bytes",
        type=int,
        default=64 * 1024,
        help="close a connection after this many bytes outside valid frames (default 65536)",
    )
    parser.add_argument(
        "--auth-max-failures",
        type=int,
        default=5,
        help="failed logins (unknown MN, wrong PW) per peer IP, or wrong PWs per MN, within --auth-window "
        "that start a ban (default 5)",
    )
    parser.add_argument("--auth-window", type=float, default=60.0, help="window of --auth-max-failures (s)")
    parser.add_argument(
        "--auth-ban", type=float, default=60.0, help="first ban (s); doubles at each further ban, at most 1 h"
    )
    parser.add_argument("--max-packets-per-s", type=float, default=20.0, help="per-connection rate limit")
    parser.add_argument(
        "--max-data-bytes",
        type=int,
        default=9999,
        help="largest data segment accepted (HJ 212 says 1024, real DAS send more; longer ones are reported)",
    )
    parser.add_argument("--accept-bad-crc", action="store_true", help="accept packets whose CRC does not match")
    g = parser.add_argument_group(
        "evidence archive (every frame as received, with the plant's address; docs/evidence.md)"
    )
    g.add_argument(
        "--evidence-dir",
        default=e.get("CEMS_EVIDENCE_DIR"),
        help="archive root (docs/evidence.md); the bridge writes under --evidence-name in it [CEMS_EVIDENCE_DIR] "
        "(default: STATE_DIR/bridge/evidence)",
    )
    g.add_argument(
        "--evidence-name",
        default="hj212-bridge",
        help="this bridge's sub-directory (one per bridge process; default hj212-bridge)",
    )
    g.add_argument(
        "--evidence-retention-days",
        type=int,
        default=None,
        help=f"days a segment is kept (default {DEFAULT_RETENTION_DAYS}: five years) [CEMS_EVIDENCE_RETENTION_DAYS]",
    )
    g.add_argument("--no-evidence", action="store_true", help="keep no archive of the frames")


def bridge_evidence(a: argparse.Namespace, env: Env, registry: Registry, listen: str) -> ArchiveSettings | None:
    """The bridge's archive settings (``None`` with ``--no-evidence``)."""
    if a.no_evidence:
        return None
    days = a.evidence_retention_days
    if days is None:
        days = env.integer("CEMS_EVIDENCE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
    if days < 1:
        raise CemsError(f"--evidence-retention-days {days}: must be at least 1")
    root = Path(a.evidence_dir) if a.evidence_dir else state_dir(env) / "bridge" / "evidence"
    return ArchiveSettings(
        directory=root,
        source=a.evidence_name,
        retention_days=days,
        topic_prefixes=(registry.topics.prefix,),
        attrs={"listen": listen, "registry": str(a.config)},
    )


def _bridge(a: argparse.Namespace, env: Env) -> int:
    """``cems-gateway hj212-bridge``: serve until SIGINT/SIGTERM."""
    host, _, port = a.listen.rpartition(":")
    if not port.isdigit():
        raise CemsError(f"--listen {a.listen!r} must be HOST:PORT")
    registry = load_registry(a.config)
    check_credentials(registry, env.values)  # fail closed: every password_env must be set (docs/security.md)
    # broker credentials and CA from the environment, never on the command line (docs/security.md)
    mqtt = bridge_mqtt_settings(
        a.mqtt_url,
        username=env.get("CEMS_MQTT_USERNAME"),
        password=env.get("CEMS_MQTT_PASSWORD"),
        ca_file=env.get("CEMS_MQTT_CA_FILE"),
    )
    asyncio.run(
        run_bridge(
            registry,
            host or "0.0.0.0",
            int(port),
            mqtt,
            idle_timeout_s=a.idle_timeout,
            max_connections=a.max_connections,
            max_packets_per_s=a.max_packets_per_s,
            require_crc=not a.accept_bad_crc,
            max_data_bytes=a.max_data_bytes,
            environ=env.values,
            max_connections_per_ip=a.max_connections_per_ip,
            max_junk_bytes=a.max_junk_bytes,
            auth_max_failures=a.auth_max_failures,
            auth_window_s=a.auth_window,
            auth_ban_s=a.auth_ban,
            evidence=bridge_evidence(a, env, registry, a.listen),
            shards=a.shards,
        )
    )
    return 0


# ------------------------------------------------------------------------------------------ parser, main


def build_parser(env: Env | None = None) -> argparse.ArgumentParser:
    """The ``cems-gateway`` parser; option defaults from the environment (``env``, else the process's)."""
    e = env or Env()
    p = argparse.ArgumentParser(
        prog="cems-gateway",
        description="cems plant-side programs: simulator and HJ 212 bridge",
        epilog="example: cems-gateway simulate --help",
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "simulate",
        help="simulate a fleet of plant DAS publishing readings",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: cems-gateway simulate --config registry.toml --speed 60 --duration 86400 --protocol mixed",
    )
    add_simulate_arguments(s, e)
    s.set_defaults(func=_simulate)

    b = sub.add_parser(
        "hj212-bridge",
        help="HJ 212 TCP server for DAS → MQTT (QoS 1)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Broker credentials and TLS CA come from CEMS_MQTT_USERNAME, CEMS_MQTT_PASSWORD, CEMS_MQTT_CA_FILE.\n"
            "example: cems-gateway hj212-bridge --config registry.toml --listen 0.0.0.0:9212"
        ),
    )
    add_bridge_arguments(b, e)
    b.set_defaults(func=_bridge)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        env = Env()
        a = build_parser(env).parse_args(argv)
    except CemsError as e:  # a bad environment variable (ConfigError names it)
        print(f"cems-gateway: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(a.verbose, 2), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        func: Command = a.func
        return func(a, env)
    except CemsError as e:
        print(f"cems-gateway: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
