"""``cems run``: the ingest service (MQTT → validate → InfluxDB → compliance rules → alerts)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import signal
import sys
from pathlib import Path

from cems.cli._common import (
    Formatter,
    add_influx_args,
    add_mqtt_args,
    evidence_retention_days,
    examples,
    influx_config,
    late_hold,
    mqtt_settings,
)
from cems.config import Env, state_dir, writable_private_dir
from cems.errors import ConfigError
from cems.registry import Registry, load_registry, registry_warnings, with_credentials
from cems.registry.shard import Shard, check_share_group, shard_registry
from cems.service.compliance import ComplianceConfig
from cems.service.health import HealthServer
from cems.service.ingest import IngestService, IngestSettings
from cems.service.mqtt import MqttSettings
from cems.sinks.archive import DEFAULT_RETENTION_DAYS, ArchiveSettings

log = logging.getLogger("cems.run")

EPILOG = examples(
    "cems run --config registry.toml --mqtt-url mqtt://broker:1883 --influx-url http://influxdb:8086 --influx-db cems",
    "CEMS_INFLUX_TOKEN=… cems run --config registry.toml --mqtt-url mqtts://broker:8883 --mqtt-ca-file ca.crt \\",
    "    --influx-url http://influxdb:8086 --influx-api v2 --influx-org bureau --influx-bucket cems",
    "cems run --config registry.toml --shard 1/2 --mqtt-url mqtt://broker:1883 --influx-url http://influxdb:8086 \\",
    "    --influx-db cems     # outlets with CRC-32(MN) mod 2 = 1, from cems/v1/s1/{mn}/{stream}",
    "cems run --config registry.toml --mqtt-url mqtt://nats1:1883,mqtt://nats2:1883,mqtt://nats3:1883 \\",
    "    --influx-url http://influxdb:8086   # a broker cluster: the next node when one fails",
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    r = sub.add_parser(
        "run",
        help="run the ingest service: MQTT → validate → InfluxDB → compliance rules → alerts",
        description="Run the ingest service. Every option that names a service can also come from the "
        "environment variable shown in [brackets].",
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    r.add_argument(
        "--config",
        default=env.get("CEMS_CONFIG"),
        required=env.get("CEMS_CONFIG") is None,
        help="registry TOML, e.g. deploy/registry.toml [CEMS_CONFIG]",
    )
    add_mqtt_args(r, env)
    add_scale_args(r, env)
    add_influx_args(r, env)
    r.add_argument(
        "--batch-max", type=int, default=None, help="most messages per InfluxDB write (default 5000) [CEMS_BATCH_MAX]"
    )
    r.add_argument(
        "--spool-dir",
        default=env.get("CEMS_SPOOL_DIR"),
        help="on-disk spool for InfluxDB outages [CEMS_SPOOL_DIR] (default: STATE_DIR/ingester/spool)",
    )
    r.add_argument("--spool-max-mb", type=float, default=1024.0, help="spool bound in MB; back-pressure beyond it")
    r.add_argument("--no-spool", action="store_true", help="no spool: retry InfluxDB without acknowledging")
    r.add_argument("--health-port", type=int, default=None, help="serve /healthz and /metrics on this port, e.g. 9100")
    r.add_argument("--health-host", default="127.0.0.1", help="address for --health-port (default 127.0.0.1)")
    r.add_argument(
        "--accept-bad-crc",
        action="store_true",
        help="accept HJ 212 packets whose CRC does not match (reported as a deviation)",
    )
    g = r.add_argument_group("compliance rules, alerts and webhooks")
    g.add_argument(
        "--state-dir",
        default=None,
        help="durable engine state, events and alert outbox (SQLite) [default: STATE_DIR/ingester, where "
        "STATE_DIR is $CEMS_STATE_DIR, else $XDG_STATE_HOME/cems, else ~/.local/state/cems]",
    )
    g.add_argument(
        "--webhook",
        action="append",
        default=None,
        metavar="URL",
        help="POST every alert to URL (repeatable) [CEMS_WEBHOOKS, comma-separated]",
    )
    g.add_argument(
        "--webhook-secret-file",
        default=env.get("CEMS_WEBHOOK_SECRET_FILE"),
        help="file holding the HMAC secret that signs webhooks (else $CEMS_WEBHOOK_SECRET) [CEMS_WEBHOOK_SECRET_FILE]",
    )
    g.add_argument(
        "--late-hold-hours",
        type=float,
        default=None,
        help="hours an emitted hour keeps its sub-values in memory (default 3; up to 240, the repair window); after "
        "that they wait in an archive on disk until the repair deadline, so late data revise the hour exactly "
        "either way: this only trades memory for disk reads [CEMS_LATE_HOLD_HOURS]",
    )
    g.add_argument(
        "--no-state-commit-aside",
        action="store_true",
        help="write the engine state of each group commit while the rules wait for it, instead of aside while they "
        "go on (the batches are acknowledged once it is durable either way; docs/events.md) "
        "[CEMS_STATE_COMMIT_ASIDE=0]",
    )
    g.add_argument("--accelerated-clock", default=None, help=argparse.SUPPRESS)  # cems bench --soak only
    g.add_argument(
        "--no-rules",
        action="store_true",
        help="store readings only: no hourly records, events, alerts or webhooks",
    )
    add_evidence_args(r, env)
    r.set_defaults(func=cmd_run)


#: The default client id of ``cems run`` (``--client-id``); with ``--shard K/N`` it becomes ``cems-ingester-sK``.
DEFAULT_CLIENT_ID = "cems-ingester"


def add_scale_args(r: argparse.ArgumentParser, env: Env) -> None:
    s = r.add_argument_group("several ingesters (docs/scaling.md)")
    s.add_argument(
        "--shard",
        default=env.get("CEMS_SHARD"),
        metavar="K/N",
        help="be ingester K of N (K from 0): take only the outlets with CRC-32(MN) mod N = K, published on "
        "{prefix}/sK/{mn}/{stream}; the default client id and state dir get the suffix -sK, e.g. 0/2 [CEMS_SHARD]",
    )
    s.add_argument(
        "--share-group",
        default=env.get("CEMS_SHARE_GROUP"),
        metavar="GROUP",
        help="subscribe to the data topics as the MQTT shared subscription $share/GROUP/…: the broker gives each "
        "message to one member (per-outlet affinity needs EMQX hash_topic); each member needs its own "
        "--client-id and --state-dir, e.g. cems [CEMS_SHARE_GROUP]",
    )


def scale_options(a: argparse.Namespace, env: Env) -> tuple[Shard | None, str | None]:
    """``--shard`` and ``--share-group``, checked; with a shard, ``a.client_id`` and ``a.state_dir`` default to
    per-shard values (``cems-ingester-sK``, ``STATE_DIR/ingester-sK``), so that two shards never share them."""
    shard: Shard | None = None
    group: str | None = None
    try:
        if a.shard:
            shard = Shard.parse(a.shard)
        if a.share_group:
            group = check_share_group(a.share_group)
    except ValueError as e:
        raise ConfigError(f"--shard/--share-group: {e}") from e
    if shard is not None:
        if a.client_id == DEFAULT_CLIENT_ID:
            a.client_id = f"{DEFAULT_CLIENT_ID}-{shard.level}"
        if a.state_dir is None:
            a.state_dir = str(state_dir(env) / f"ingester-{shard.level}")
    elif group is not None and a.client_id == DEFAULT_CLIENT_ID:
        raise ConfigError(
            "--share-group: give each member of the group its own --client-id (and --state-dir): two members "
            f"on the client id {DEFAULT_CLIENT_ID!r} would take the session from each other"
        )
    return shard, group


def add_evidence_args(r: argparse.ArgumentParser, env: Env) -> None:
    e = r.add_argument_group("evidence archive (every raw message as received; docs/evidence.md)")
    e.add_argument(
        "--evidence-dir",
        default=env.get("CEMS_EVIDENCE_DIR"),
        help="where the archive's segments go, one sub-directory per --client-id [CEMS_EVIDENCE_DIR] "
        "(default: STATE_DIR/ingester/evidence, or --state-dir/evidence)",
    )
    e.add_argument(
        "--evidence-retention-days",
        type=int,
        default=None,
        help=f"days a segment is kept before it is deleted whole (default {DEFAULT_RETENTION_DAYS}: five years, "
        "排污许可管理条例 第十九条) [CEMS_EVIDENCE_RETENTION_DAYS]",
    )
    e.add_argument(
        "--no-evidence",
        action="store_true",
        help="keep no evidence archive (raw packets are then lost once parsed: not for enforcement use)",
    )


def evidence_settings(
    a: argparse.Namespace, env: Env, registry: Registry, mqtt: MqttSettings
) -> ArchiveSettings | None:
    """The archive settings of ``cems run`` (``None`` with ``--no-evidence``)."""
    if a.no_evidence:
        return None
    days = evidence_retention_days(a.evidence_retention_days, env)
    base = Path(a.state_dir) if a.state_dir else state_dir(env) / "ingester"
    t = registry.topics
    return ArchiveSettings(
        directory=Path(a.evidence_dir) if a.evidence_dir else base / "evidence",
        source=mqtt.client_id,
        retention_days=days,
        topic_prefixes=(t.prefix, t.grid_prefix),
        attrs={
            "broker": mqtt.url,
            "client_id": mqtt.client_id,
            "mqtt": "3.1.1",
            "registry": str(a.config),
            "registry_sha256": hashlib.sha256(Path(a.config).read_bytes()).hexdigest(),
        },
    )


def compliance_config(a: argparse.Namespace, env: Env) -> ComplianceConfig | None:
    """The :class:`ComplianceConfig` of ``cems run`` (``None`` with ``--no-rules``)."""
    if a.no_rules:
        return None
    urls: list[str] = list(a.webhook or []) or list(env.csv("CEMS_WEBHOOKS"))
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"--webhook {u!r}: must be an http:// or https:// URL")
    secret = b""
    if a.webhook_secret_file:
        try:
            secret = Path(a.webhook_secret_file).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"cannot read --webhook-secret-file: {e}") from e
    elif env.get("CEMS_WEBHOOK_SECRET"):
        secret = env.string("CEMS_WEBHOOK_SECRET", "").encode("utf-8")
    if urls and not secret:
        raise ConfigError("webhooks need a signing secret: set CEMS_WEBHOOK_SECRET or --webhook-secret-file")
    state = Path(a.state_dir) if a.state_dir else state_dir(env) / "ingester"
    shard, _ = scale_options(a, env) if hasattr(a, "shard") else (None, None)
    config = ComplianceConfig(
        state_dir=state,
        webhooks=tuple(urls),
        webhook_secret=secret,
        hold=late_hold(a.late_hold_hours, env),
        shard=shard,
        state_commit_aside=not getattr(a, "no_state_commit_aside", False)
        and env.choice("CEMS_STATE_COMMIT_ASIDE", "1", ("0", "1")) == "1",
    )
    if getattr(a, "accelerated_clock", None):
        # benchmark only (cems bench --soak, docs/benchmark.md): the rules' clock runs faster than the wall clock
        from dataclasses import replace

        from cems.devtools.bench._data import accelerated_clock

        try:
            config = replace(config, clock=accelerated_clock(a.accelerated_clock))
        except ValueError as e:
            raise ConfigError(f"--accelerated-clock {e}") from None
        log.warning("the compliance clock is accelerated (%s): a benchmark run, not a live one", a.accelerated_clock)
    return config


def ingest_settings(a: argparse.Namespace, env: Env, evidence: ArchiveSettings | None = None) -> IngestSettings:
    spool_dir = None
    if not a.no_spool:
        base = Path(a.state_dir) if a.state_dir else state_dir(env) / "ingester"
        spool_dir = Path(a.spool_dir) if a.spool_dir else base / "spool"
    batch_max = a.batch_max if a.batch_max is not None else env.integer("CEMS_BATCH_MAX", 5000, minimum=1)
    if batch_max < 1:
        raise ConfigError(f"--batch-max {batch_max}: must be at least 1")
    shard, group = scale_options(a, env) if hasattr(a, "shard") else (None, None)
    return IngestSettings(
        shard=shard,
        share_group=group,
        batch_max=batch_max,
        require_crc=not a.accept_bad_crc,
        spool_dir=spool_dir,
        spool_max_bytes=int(a.spool_max_mb * 1024 * 1024),
        evidence=evidence,
    )


def cmd_run(a: argparse.Namespace, env: Env) -> int:
    # fail closed: every password_env must be set, resolved the same way as the bridge does
    registry = with_credentials(load_registry(a.config), env.values)
    shard, _ = scale_options(a, env)  # before anything reads a.client_id or a.state_dir
    if shard is not None:
        registry = shard_registry(registry, shard)
        log.info("shard %s: %d outlets, from %s/+/+", shard, len(registry.outlets()), registry.topics.prefix)
    for w in registry_warnings(registry):
        log.warning("registry %s: %s", a.config, w)
    mqtt = mqtt_settings(a)
    influx = influx_config(a)
    settings = ingest_settings(a, env, evidence_settings(a, env, registry, mqtt))
    compliance = compliance_config(a, env)
    if compliance is not None:
        writable_private_dir(compliance.state_dir, "the ingester's state directory")
    if settings.spool_dir is not None:
        writable_private_dir(settings.spool_dir, "the spool directory")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = IngestService(registry, mqtt, influx, settings, compliance=compliance)
        health = None
        if a.health_port is not None:

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
