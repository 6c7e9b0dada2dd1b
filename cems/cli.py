"""The ``cems`` command line.  Every option that names a service can also come from an environment variable
(shown in ``--help``), so the service can be configured by a process manager or a container."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cems import __version__
from cems.errors import CemsError


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def state_dir() -> Path:
    """Where local services and demo state live: $CEMS_STATE_DIR, else ~/.local/state/cems."""
    return Path(os.environ.get("CEMS_STATE_DIR") or Path.home() / ".local" / "state" / "cems")


def _add_influx_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("InfluxDB (v1 API by default; v2 for InfluxDB 2.x/3.x)")
    g.add_argument("--influx-url", default=env("CEMS_INFLUX_URL"), help="e.g. http://127.0.0.1:8086 [CEMS_INFLUX_URL]")
    g.add_argument("--influx-api", choices=["v1", "v2"], default=env("CEMS_INFLUX_API", "v1"), help="[CEMS_INFLUX_API]")
    g.add_argument("--influx-db", default=env("CEMS_INFLUX_DB", "cems"), help="v1 database [CEMS_INFLUX_DB]")
    g.add_argument("--influx-org", default=env("CEMS_INFLUX_ORG", ""), help="v2 organisation [CEMS_INFLUX_ORG]")
    g.add_argument("--influx-bucket", default=env("CEMS_INFLUX_BUCKET", ""), help="v2 bucket [CEMS_INFLUX_BUCKET]")
    g.add_argument(
        "--influx-token",
        default=env("CEMS_INFLUX_TOKEN", ""),
        help="v2 token, or v1 user:password; prefer the environment variable [CEMS_INFLUX_TOKEN]",
    )


def _add_mqtt_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MQTT")
    g.add_argument("--mqtt-url", default=env("CEMS_MQTT_URL"), help="mqtt://HOST:PORT or mqtts:// [CEMS_MQTT_URL]")
    g.add_argument(
        "--client-id",
        default=env("CEMS_CLIENT_ID", "cems-ingester"),
        help="fixed id of the persistent session [CEMS_CLIENT_ID]",
    )
    g.add_argument("--mqtt-username", default=env("CEMS_MQTT_USERNAME"), help="[CEMS_MQTT_USERNAME]")
    g.add_argument("--mqtt-password", default=env("CEMS_MQTT_PASSWORD"), help="[CEMS_MQTT_PASSWORD]")
    g.add_argument(
        "--mqtt-ca-file", default=env("CEMS_MQTT_CA_FILE"), help="CA certificate for TLS [CEMS_MQTT_CA_FILE]"
    )


def _influx_config(a: argparse.Namespace) -> object:
    from cems.sinks.influx import InfluxConfig

    if not a.influx_url:
        raise CemsError("--influx-url (or CEMS_INFLUX_URL) is required")
    return InfluxConfig(
        url=a.influx_url,
        api=a.influx_api,
        db=a.influx_db,
        org=a.influx_org,
        bucket=a.influx_bucket,
        token=a.influx_token,
    )


def _mqtt_settings(a: argparse.Namespace) -> object:
    from cems.service.mqtt import MqttSettings

    if not a.mqtt_url:
        raise CemsError("--mqtt-url (or CEMS_MQTT_URL) is required")
    return MqttSettings(
        url=a.mqtt_url,
        client_id=a.client_id,
        username=a.mqtt_username,
        password=a.mqtt_password,
        ca_file=a.mqtt_ca_file,
    )


# -- commands -------------------------------------------------------------------------------------------
def cmd_run(a: argparse.Namespace) -> int:
    from cems.registry import load_registry
    from cems.service.ingest import IngestService, IngestSettings
    from cems.service.mqtt import MqttSettings
    from cems.sinks.influx import InfluxConfig

    registry = load_registry(a.config)
    mqtt = _mqtt_settings(a)
    influx = _influx_config(a)
    assert isinstance(mqtt, MqttSettings) and isinstance(influx, InfluxConfig)
    from cems.service.compliance import build_compliance, default_state_dir

    spool_dir = None
    if not a.no_spool:
        spool_dir = Path(a.spool_dir) if a.spool_dir else Path(a.state_dir or default_state_dir()) / "spool"
    settings = IngestSettings(
        batch_max=a.batch_max,
        require_crc=not a.accept_bad_crc,
        spool_dir=spool_dir,
        spool_max_bytes=int(a.spool_max_mb * 1024 * 1024),
    )
    compliance = build_compliance(a)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = IngestService(registry, mqtt, influx, settings, compliance=compliance)
        health = None
        if a.health_port is not None:
            from cems.service.health import HealthServer

            def healthy() -> tuple[bool, dict[str, object]]:
                ok = service.conn.connected
                return ok, {
                    "mqtt_connected": ok,
                    "queue": service.conn.queue.qsize(),
                    "spool_bytes": service.stats.spool_bytes,
                    **service.stats.as_dict(),
                }

            health = HealthServer(service, healthy)
            await health.start(a.health_host, a.health_port)
        try:
            await service.run(stop)
        finally:
            if health is not None:
                await health.stop()
        print(json.dumps(service.stats.as_dict()), file=sys.stderr)

    asyncio.run(main())
    return 0


def cmd_registry_check(a: argparse.Namespace) -> int:
    from cems.registry import load_registry

    r = load_registry(a.config)
    n = len(r.outlets())
    print(
        f"{a.config}: OK — {len(r.district)} districts, {len(r.enterprise)} enterprises, {n} outlets, "
        f"{len(r.grid_sensor)} grid sensors"
    )
    return 0


def cmd_services(a: argparse.Namespace) -> int:
    from cems.service.local import LocalServices, format_status

    svc = LocalServices(state_dir() / "services")
    if a.action == "up":
        infos = svc.up(influx_db=a.influx_db)
        print(format_status(infos))
    elif a.action == "down":
        svc.down()
        print("local services stopped")
    else:
        status = svc.status()
        print(format_status(status))
        core = [status.get("mosquitto"), status.get("influxdb")]
        return 0 if all(core) else 3
    return 0


def cmd_query(a: argparse.Namespace) -> int:
    from cems.service.local import influx_query

    for row in influx_query(a.influx_url or _local_url("influxdb"), a.influx_db, a.query):
        print(json.dumps(row, ensure_ascii=False, default=str))
    return 0


def _local_url(name: str) -> str:
    from cems.service.local import LocalServices

    info = LocalServices(state_dir() / "services").status().get(name)
    if info is None:
        raise CemsError(f"no URL given and the local {name} is not running (cems services up)")
    return info.url


def cmd_events_list(a: argparse.Namespace) -> int:
    from cems.service.compliance import format_events, list_events

    rows = list_events(a.influx_url or _local_url("influxdb"), a.influx_db, only_open=not a.all, only_unacked=a.unacked)
    if a.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, default=str))
    else:
        print(format_events(rows))
    return 0


def cmd_events_ack(a: argparse.Namespace) -> int:
    from cems.registry import Topics, load_registry
    from cems.service.compliance import ack_event
    from cems.service.mqtt import MqttSettings

    topics = load_registry(a.config).topics if a.config else Topics()
    settings = MqttSettings(
        url=a.mqtt_url or _local_url("mosquitto"),
        client_id="cems-cli",
        username=a.mqtt_username,
        password=a.mqtt_password,
        ca_file=a.mqtt_ca_file,
    )
    asyncio.run(ack_event(settings, topics.command_prefix, a.event_id, a.by))
    print(f"acknowledgement of {a.event_id} by {a.by} sent to the ingester")
    return 0


def cmd_hj212(a: argparse.Namespace) -> int:
    from cems.protocol import hj212

    stream = sys.stdin if a.file in (None, "-") else open(a.file, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        fn = hj212.decode_lines if a.action == "decode" else hj212.encode_lines
        for out in fn(line.rstrip("\r\n") for line in stream):
            sys.stdout.write(out.rstrip("\r\n") + "\n")
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 0


def cmd_replay(a: argparse.Namespace) -> int:
    import time

    from cems.registry import load_registry
    from cems.replay import json_lines, replay

    registry = load_registry(a.config)
    t0 = time.perf_counter()
    with open(a.input, encoding="utf-8", errors="replace") as f:
        res = replay(registry, f, a.format, keep_readings=a.store)
    elapsed = time.perf_counter() - t0
    outputs = [
        (a.hourly_out, (h.to_json() for h in res.hourly)),
        (a.events_out, (e.to_json() for e in res.events)),
        (a.rates_out, (r.to_json() for r in res.outlet_days)),
        (a.districts_out, (d.to_json() for d in res.district_months)),
    ]
    for path, objs in outputs:
        if path:
            with open(path, "w", encoding="utf-8") as out:
                out.writelines(json_lines(objs))
    if a.store:
        from cems.sinks.influx import InfluxConfig
        from cems.sinks.store import store_replay

        influx = _influx_config(a)
        assert isinstance(influx, InfluxConfig)
        asyncio.run(store_replay(influx, res))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(res.rejected.items())) or "none"
    n_open = sum(1 for e in res.events if e.is_open)
    print(
        f"replay: {res.lines} lines, {res.readings} readings, {res.values} values in {elapsed:.2f}s "
        f"({res.values / max(elapsed, 1e-9):,.0f} values/s); {len(res.hourly)} hourly records, "
        f"{len(res.events)} events ({n_open} open); rejected: {rejected}",
        file=sys.stderr,
    )
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from cems.demo import run_demo

    return run_demo(a, state_dir())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cems",
        description="cems: continuous-emission monitoring ingester (HJ 212 / MQTT → compliance → InfluxDB).",
    )
    p.add_argument("--version", action="version", version=f"cems {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the ingest service: MQTT → validate → InfluxDB → compliance rules → alerts")
    r.add_argument(
        "--config", default=env("CEMS_CONFIG"), required=env("CEMS_CONFIG") is None, help="registry TOML [CEMS_CONFIG]"
    )
    _add_mqtt_args(r)
    _add_influx_args(r)
    r.add_argument(
        "--batch-max",
        type=int,
        default=int(env("CEMS_BATCH_MAX", "5000") or 5000),
        help="most messages per InfluxDB write [CEMS_BATCH_MAX]",
    )
    r.add_argument(
        "--spool-dir",
        default=env("CEMS_SPOOL_DIR"),
        help="on-disk spool for InfluxDB outages [CEMS_SPOOL_DIR] (default: STATE_DIR/spool)",
    )
    r.add_argument("--spool-max-mb", type=float, default=1024.0, help="spool bound; back-pressure beyond it")
    r.add_argument("--no-spool", action="store_true", help="no spool: retry InfluxDB without acknowledging")
    r.add_argument("--health-port", type=int, default=None, help="serve /healthz and /metrics on this port")
    r.add_argument("--health-host", default="127.0.0.1", help="address for --health-port (default 127.0.0.1)")
    r.add_argument(
        "--accept-bad-crc",
        action="store_true",
        help="accept HJ 212 packets whose CRC does not match (reported as a deviation)",
    )
    from cems.service.compliance import add_run_compliance_arguments

    add_run_compliance_arguments(r)
    r.set_defaults(func=cmd_run)

    ev = sub.add_parser("events", help="list events, or acknowledge one (monitoring room)")
    ev_sub = ev.add_subparsers(dest="events_action", required=True, metavar="ACTION")
    el = ev_sub.add_parser("list", help="open / unacknowledged events (from InfluxDB)")
    el.add_argument("--all", action="store_true", help="closed events too")
    el.add_argument("--unacked", action="store_true", help="only events not yet acknowledged")
    el.add_argument("--json", action="store_true", help="one JSON object per line")
    el.add_argument("--influx-url", default=env("CEMS_INFLUX_URL"), help="[CEMS_INFLUX_URL] (default: local services)")
    el.add_argument("--influx-db", default=env("CEMS_INFLUX_DB", "cems"), help="[CEMS_INFLUX_DB]")
    el.set_defaults(func=cmd_events_list)
    ea = ev_sub.add_parser("ack", help="acknowledge an event (sent to the ingester over MQTT, QoS 1)")
    ea.add_argument("event_id")
    ea.add_argument("--by", required=True, help="who acknowledges (name of the duty officer)")
    ea.add_argument("--mqtt-url", default=env("CEMS_MQTT_URL"), help="[CEMS_MQTT_URL] (default: local services)")
    ea.add_argument("--config", default=env("CEMS_CONFIG"), help="registry, for its [topics] [CEMS_CONFIG]")
    ea.add_argument("--mqtt-username", default=env("CEMS_MQTT_USERNAME"), help="[CEMS_MQTT_USERNAME]")
    ea.add_argument("--mqtt-password", default=env("CEMS_MQTT_PASSWORD"), help="[CEMS_MQTT_PASSWORD]")
    ea.add_argument("--mqtt-ca-file", default=env("CEMS_MQTT_CA_FILE"), help="[CEMS_MQTT_CA_FILE]")
    ea.set_defaults(func=cmd_events_ack)

    s = sub.add_parser("services", help="start/stop the project-owned local Mosquitto and InfluxDB")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument("--influx-db", default="cems", help="database to create (default cems)")
    s.set_defaults(func=cmd_services)

    q = sub.add_parser("query", help="run an InfluxQL query (default: against the local InfluxDB)")
    q.add_argument("query")
    q.add_argument("--influx-url", default=env("CEMS_INFLUX_URL"))
    q.add_argument("--influx-db", default=env("CEMS_INFLUX_DB", "cems"))
    q.set_defaults(func=cmd_query)

    g = sub.add_parser("registry", help="validate a registry file")
    g.add_argument("action", choices=["check"])
    g.add_argument("config")
    g.set_defaults(func=cmd_registry_check)

    h = sub.add_parser("hj212", help="decode/encode HJ 212 packets, one per line")
    h.add_argument(
        "action",
        choices=["decode", "encode"],
        help="decode: packet per line → JSON per line; encode: JSON per line → packet per line",
    )
    h.add_argument("file", nargs="?", default="-", help="input file, or - for standard input")
    h.set_defaults(func=cmd_hj212)

    rp = sub.add_parser(
        "replay",
        help="run the compliance engine offline over recorded packets (deterministic; no broker, no database)",
    )
    rp.add_argument("--config", required=True, help="registry TOML")
    rp.add_argument("--input", required=True, help="recorded data, one HJ 212 packet or JSON reading per line")
    rp.add_argument(
        "--format",
        choices=["auto", "hj212", "jsonl"],
        default="auto",
        help="input format (auto: lines starting with ## are HJ 212, others JSON)",
    )
    rp.add_argument("--hourly-out", help="write hourly records (JSON lines)")
    rp.add_argument("--events-out", help="write events, final state, still-open ones with status open (JSON lines)")
    rp.add_argument("--rates-out", help="write transmission rates per outlet and Beijing day (JSON lines)")
    rp.add_argument("--districts-out", help="write district rates and supervision per month (JSON lines)")
    rp.add_argument("--store", action="store_true", help="also write readings, hourly records and events to InfluxDB")
    _add_influx_args(rp)
    rp.set_defaults(func=cmd_replay)

    from cems.report import add_report_arguments, report_command

    rpt = sub.add_parser(
        "report", help="monthly/weekly/daily transmission-rate and exceedance report (self-contained HTML + CSV)"
    )
    add_report_arguments(rpt)
    rpt.set_defaults(func=report_command)

    from cems.bench import add_bench_arguments, bench_command

    bn = sub.add_parser(
        "bench", help="benchmark against the broker's and a bare Python consumer's limits (docs/benchmark.md)"
    )
    add_bench_arguments(bn)
    bn.set_defaults(func=bench_command)

    from cems.stops import add_stops_arguments, stops_command

    stp = sub.add_parser("stops", help="declare and list outlet stops (停产/停运) beside the registry")
    add_stops_arguments(stp)
    stp.set_defaults(func=stops_command)

    from cems.security import add_broker_config_arguments, broker_config_command

    bc = sub.add_parser(
        "broker-config",
        help="write Mosquitto acl, passwd and a secured listener config from the registry (docs/security.md)",
    )
    add_broker_config_arguments(bc)
    bc.set_defaults(func=broker_config_command)

    d = sub.add_parser("demo", help="start local services, a sample fleet and the ingester; show live figures")
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    d.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    d.add_argument("--enterprises", type=int, default=12, help="size of the sample fleet (default 12)")
    d.add_argument("--protocol", choices=["json", "hj212", "mixed"], default="mixed")
    d.add_argument("--stop-services", action="store_true", help="stop the local services at the end")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(a.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rc: int = a.func(a)
        return rc
    except CemsError as e:
        print(f"cems: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
