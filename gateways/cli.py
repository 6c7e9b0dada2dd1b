"""The ``cems-gateway`` command line: programs that run at or near the plant."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cems.errors import CemsError


def _bridge(a: argparse.Namespace) -> int:
    import asyncio

    from cems.registry import load_registry
    from gateways.hj212_bridge import run_bridge

    host, _, port = a.listen.rpartition(":")
    if not port.isdigit():
        raise CemsError(f"--listen {a.listen!r} must be HOST:PORT")
    registry = load_registry(a.config)
    asyncio.run(
        run_bridge(
            registry,
            host or "0.0.0.0",
            int(port),
            a.mqtt_url,
            idle_timeout_s=a.idle_timeout,
            max_connections=a.max_connections,
            max_packets_per_s=a.max_packets_per_s,
            require_crc=not a.accept_bad_crc,
            max_data_bytes=a.max_data_bytes,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gateways.simulator import add_simulate_arguments, simulate_command

    p = argparse.ArgumentParser(
        prog="cems-gateway", description="cems plant-side programs: simulator and HJ 212 bridge"
    )
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="simulate a fleet of plant DAS publishing readings")
    add_simulate_arguments(s)
    s.set_defaults(func=simulate_command)

    b = sub.add_parser(
        "hj212-bridge",
        help="HJ 212 TCP server for DAS → MQTT (QoS 1)",
        epilog="Broker credentials and TLS CA come from CEMS_MQTT_USERNAME, CEMS_MQTT_PASSWORD, CEMS_MQTT_CA_FILE.",
    )
    b.add_argument(
        "--listen",
        default=os.environ.get("CEMS_BRIDGE_LISTEN", "0.0.0.0:9212"),
        help="HOST:PORT to listen on [CEMS_BRIDGE_LISTEN] (default 0.0.0.0:9212)",
    )
    b.add_argument(
        "--config",
        default=os.environ.get("CEMS_CONFIG"),
        required=os.environ.get("CEMS_CONFIG") is None,
        help="registry TOML (MN → password) [CEMS_CONFIG]",
    )
    b.add_argument(
        "--mqtt-url", default=os.environ.get("CEMS_MQTT_URL", "mqtt://127.0.0.1:1883"), help="[CEMS_MQTT_URL]"
    )
    b.add_argument("--idle-timeout", type=float, default=300.0, help="close a connection idle this long (s)")
    b.add_argument("--max-connections", type=int, default=10000)
    b.add_argument("--max-packets-per-s", type=float, default=20.0, help="per-connection rate limit")
    b.add_argument(
        "--max-data-bytes",
        type=int,
        default=9999,
        help="largest data segment accepted (HJ 212 says 1024, real DAS send more; longer ones are reported)",
    )
    b.add_argument("--accept-bad-crc", action="store_true", help="accept packets whose CRC does not match")
    b.set_defaults(func=_bridge)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(a.verbose, 2), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        rc: int = a.func(a)
        return rc
    except CemsError as e:
        print(f"cems-gateway: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
