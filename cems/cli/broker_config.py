"""``cems broker-config``: Mosquitto ``acl``, ``passwd`` and a secured listener config from the registry
(docs/security.md)."""

from __future__ import annotations

import argparse

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.security import DEFAULT_BRIDGE_USER, DEFAULT_INGESTER_USER, BrokerConfigOptions, write_broker_config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    p = sub.add_parser(
        "broker-config",
        help="write Mosquitto acl, passwd and a secured listener config from the registry (docs/security.md)",
        epilog=examples(
            "cems broker-config --config registry.toml --out-dir broker/ --secrets secrets.env \\",
            "    --tls-ca ca.crt --tls-cert server.crt --tls-key server.key",
        ),
        formatter_class=Formatter,
    )
    p.add_argument("--config", required=True, help="registry TOML (MNs, grid sensor ids, topic prefixes)")
    p.add_argument("--out-dir", required=True, help="directory to write acl, passwd and mosquitto-secure.conf to")
    p.add_argument(
        "--secrets",
        default=env.get("CEMS_SECRETS_FILE"),
        help="NAME=secret file, mode 0600; CEMS_SECRET_<NAME> variables override it [CEMS_SECRETS_FILE]",
    )
    p.add_argument(
        "--ingester-user", default=DEFAULT_INGESTER_USER, help=f"the ingester's username ({DEFAULT_INGESTER_USER})"
    )
    p.add_argument("--bridge-user", default=DEFAULT_BRIDGE_USER, help="'' leaves the HJ 212 bridge out")
    p.add_argument("--monitor-user", default=None, help="read-only user for alerts (optional)")
    p.add_argument("--command-user", default=None, help="user allowed to write commands (optional)")
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave users without a secret out of the password file (they cannot log in) instead of failing",
    )
    p.add_argument(
        "--install-dir",
        default=None,
        help="directory where acl/passwd will live on the broker host (paths in the conf; default: --out-dir)",
    )
    p.add_argument("--port", type=int, default=1883, help="plain listener port; 0 = TLS only")
    p.add_argument("--bind", default=None, help="listen address (default: all)")
    p.add_argument("--tls-port", type=int, default=8883, help="TLS listener port (8883)")
    p.add_argument("--tls-ca", default=None, help="CA certificate (enables the TLS listener with the two below)")
    p.add_argument("--tls-cert", default=None, help="server certificate")
    p.add_argument("--tls-key", default=None, help="server private key")
    p.set_defaults(func=cmd_broker_config)


def cmd_broker_config(a: argparse.Namespace, env: Env) -> int:
    options = BrokerConfigOptions(
        config=a.config,
        out_dir=a.out_dir,
        secrets=a.secrets,
        ingester_user=a.ingester_user,
        bridge_user=a.bridge_user,
        monitor_user=a.monitor_user,
        command_user=a.command_user,
        skip_missing=a.skip_missing,
        install_dir=a.install_dir,
        port=a.port,
        bind=a.bind,
        tls_port=a.tls_port,
        tls_ca=a.tls_ca,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
    )
    print(write_broker_config(options, env.values))
    return 0
