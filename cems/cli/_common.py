"""What the commands share: options that name a service (each also read from an environment variable,
shown in ``--help``), and turning them into the library's typed settings.

Numeric environment values are read when a command runs, not when the parser is built, so that a bad
``CEMS_BATCH_MAX`` fails the command that uses it with a :class:`~cems.errors.ConfigError` naming the
variable, and never ``cems --version``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cems.config import Env, split_url_credentials, state_dir, url_list
from cems.errors import CemsError, ConfigError
from cems.registry import Topics, load_registry
from cems.rules.hourly import DEFAULT_HOLD, REPAIR_WINDOW
from cems.service.mqtt import MqttSettings
from cems.sinks.archive import DEFAULT_RETENTION_DAYS
from cems.sinks.influx import InfluxConfig

log = logging.getLogger("cems.cli")

#: The formatter every command's parser uses: keeps the line breaks of epilogs (the examples).
Formatter = argparse.RawDescriptionHelpFormatter


def examples(*lines: str) -> str:
    """An ``--help`` epilog: ``example:`` followed by the given command lines."""
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def add_influx_args(p: argparse.ArgumentParser, env: Env) -> None:
    g = p.add_argument_group("InfluxDB (v1 API by default; v2 for InfluxDB 2.x/3.x)")
    g.add_argument(
        "--influx-url", default=env.get("CEMS_INFLUX_URL"), help="e.g. http://127.0.0.1:8086 [CEMS_INFLUX_URL]"
    )
    g.add_argument(
        "--influx-api",
        choices=["v1", "v2"],
        default=env.get("CEMS_INFLUX_API", "v1"),
        help="write API: v1 (/write, InfluxDB 1.x) or v2 (/api/v2/write, 2.x/3.x) [CEMS_INFLUX_API]",
    )
    g.add_argument("--influx-db", default=env.get("CEMS_INFLUX_DB", "cems"), help="v1 database [CEMS_INFLUX_DB]")
    g.add_argument("--influx-org", default=env.get("CEMS_INFLUX_ORG", ""), help="v2 organisation [CEMS_INFLUX_ORG]")
    g.add_argument("--influx-bucket", default=env.get("CEMS_INFLUX_BUCKET", ""), help="v2 bucket [CEMS_INFLUX_BUCKET]")
    g.add_argument(
        "--influx-token",
        default=env.get("CEMS_INFLUX_TOKEN", ""),
        action=SecretOnCommandLine,
        help="v2 token, or v1 user:password; visible in `ps`: prefer --influx-token-file or the variable "
        "[CEMS_INFLUX_TOKEN]",
    )
    g.add_argument(
        "--influx-token-file",
        default=env.get("CEMS_INFLUX_TOKEN_FILE"),
        help="file holding the token (or user:password), e.g. mode 0600 [CEMS_INFLUX_TOKEN_FILE]",
    )


def add_influx_read_args(p: argparse.ArgumentParser, env: Env) -> None:
    """``--influx-url``/``--influx-db`` of the commands that read (query, events list, report)."""
    p.add_argument(
        "--influx-url",
        default=env.get("CEMS_INFLUX_URL"),
        help="InfluxDB URL, InfluxQL over /query (default: the local InfluxDB of `cems services`) [CEMS_INFLUX_URL]",
    )
    p.add_argument("--influx-db", default=env.get("CEMS_INFLUX_DB", "cems"), help="database [CEMS_INFLUX_DB]")


class UrlList(argparse.Action):
    """``--mqtt-url`` given several times, or as a comma-separated list: the values joined with commas, in
    order (a given option replaces the environment's default instead of adding to it)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        given = f"_{self.dest}_given"
        before = getattr(namespace, self.dest) if getattr(namespace, given, False) else None
        setattr(namespace, self.dest, f"{before},{values}" if before else values)
        setattr(namespace, given, True)


#: ``--help`` text of ``--mqtt-url``.
MQTT_URL_HELP = (
    "mqtt://HOST:PORT or mqtts://; several brokers (nodes of one cluster) to fail over between: "
    "a comma-separated list or the option repeated [CEMS_MQTT_URL]"
)


def add_mqtt_args(p: argparse.ArgumentParser, env: Env, *, client_id: bool = True) -> None:
    g = p.add_argument_group("MQTT")
    g.add_argument("--mqtt-url", default=env.get("CEMS_MQTT_URL"), action=UrlList, help=MQTT_URL_HELP)
    if client_id:
        g.add_argument(
            "--client-id",
            default=env.get("CEMS_CLIENT_ID", "cems-ingester"),
            help="fixed id of the persistent session [CEMS_CLIENT_ID]",
        )
    g.add_argument("--mqtt-username", default=env.get("CEMS_MQTT_USERNAME"), help="[CEMS_MQTT_USERNAME]")
    g.add_argument(
        "--mqtt-password",
        default=env.get("CEMS_MQTT_PASSWORD"),
        action=SecretOnCommandLine,
        help="visible in `ps`: prefer --mqtt-password-file or the variable [CEMS_MQTT_PASSWORD]",
    )
    g.add_argument(
        "--mqtt-password-file",
        default=env.get("CEMS_MQTT_PASSWORD_FILE"),
        help="file holding the broker password, e.g. mode 0600 [CEMS_MQTT_PASSWORD_FILE]",
    )
    g.add_argument(
        "--mqtt-ca-file", default=env.get("CEMS_MQTT_CA_FILE"), help="CA certificate for TLS [CEMS_MQTT_CA_FILE]"
    )


class SecretOnCommandLine(argparse.Action):
    """Stores the value and notes that a secret came from argv (any user can read it with ``ps``), so that
    the command warns (:func:`warn_secrets_on_command_line`); the variable or a ``*-file`` option does not."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        setattr(namespace, self.dest, values)
        seen: list[str] = list(getattr(namespace, "secrets_on_command_line", []))
        namespace.secrets_on_command_line = [*seen, option or self.dest]


def warn_secrets_on_command_line(a: argparse.Namespace) -> list[str]:
    """Log a warning per secret given on the command line; returns their options."""
    options: Sequence[str] = getattr(a, "secrets_on_command_line", [])
    for option in options:
        log.warning(
            "%s on the command line is visible to every user (ps, /proc): use %s-file or the environment variable",
            option,
            option,
        )
    return list(options)


def read_secret_file(option: str, path: str) -> str:
    """The secret in a file (surrounding white space stripped); :class:`ConfigError` naming the option."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {option} {path!r}: {e}") from e


def influx_config(a: argparse.Namespace) -> InfluxConfig:
    if not a.influx_url:
        raise ConfigError("--influx-url (or CEMS_INFLUX_URL) is required")
    warn_secrets_on_command_line(a)
    token = a.influx_token
    if getattr(a, "influx_token_file", None) and not token:
        token = read_secret_file("--influx-token-file", a.influx_token_file)
    return InfluxConfig(
        url=a.influx_url,
        api=a.influx_api,
        db=a.influx_db,
        org=a.influx_org,
        bucket=a.influx_bucket,
        token=token,
    )


def mqtt_settings(a: argparse.Namespace, *, url: str | None = None, client_id: str | None = None) -> MqttSettings:
    """The broker's settings.  A password inside the URL (``mqtt://user:pw@host``) is moved out of it, with a
    warning, so that no error or log line that shows the URL shows the password."""
    mqtt_url = url or a.mqtt_url
    if not mqtt_url:
        raise ConfigError("--mqtt-url (or CEMS_MQTT_URL) is required")
    warn_secrets_on_command_line(a)
    bare, url_user, url_password = broker_urls(mqtt_url)
    if url_password is not None:
        log.warning("the MQTT URL holds a password: use --mqtt-password-file or CEMS_MQTT_PASSWORD instead")
    password = a.mqtt_password
    if getattr(a, "mqtt_password_file", None) and not password:
        password = read_secret_file("--mqtt-password-file", a.mqtt_password_file)
    return MqttSettings(
        url=bare[0],
        failover_urls=bare[1:],
        client_id=client_id or a.client_id,
        username=a.mqtt_username or url_user,
        password=password or url_password,
        ca_file=a.mqtt_ca_file,
    )


def broker_urls(text: str) -> tuple[tuple[str, ...], str | None, str | None]:
    """``(URLs without credentials, user, password)`` of ``--mqtt-url``'s list of brokers (the first user and
    password found in them: one cluster, one set of credentials); every URL checked."""
    urls = url_list(text)
    if not urls:
        raise ConfigError(f"--mqtt-url {text!r}: no broker URL")
    bare: list[str] = []
    user: str | None = None
    password: str | None = None
    for url in urls:
        b, u, pw = split_url_credentials(url)
        user, password = user or u, password if password is not None else pw
        try:
            MqttSettings(url=b).host_port  # noqa: B018 - checks the scheme and the port
        except CemsError as e:
            raise ConfigError(str(e)) from None
        bare.append(b)
    return tuple(bare), user, password


def services_dir(env: Env) -> Path:
    """Where ``cems services`` keeps the project-owned Mosquitto and InfluxDB."""
    return state_dir(env) / "services"


def local_url(name: str, env: Env) -> str:
    """The URL of a running local service (``cems services up``), for commands given no URL."""
    from cems.devtools.local import LocalServices

    info = LocalServices(services_dir(env)).status().get(name)
    if info is None:
        raise CemsError(f"no URL given and the local {name} is not running (start it with: cems services up)")
    return info.url


def late_hold(hours: float | None, env: Env) -> timedelta:
    """``--late-hold-hours`` (or ``CEMS_LATE_HOLD_HOURS``) as a duration, between 0 and the repair window."""
    h = hours if hours is not None else env.number("CEMS_LATE_HOLD_HOURS", DEFAULT_HOLD.total_seconds() / 3600)
    if not 0 <= h <= REPAIR_WINDOW.total_seconds() / 3600:
        raise ConfigError(f"--late-hold-hours {h:g}: must be between 0 and {REPAIR_WINDOW.total_seconds() / 3600:g}")
    return timedelta(hours=h)


def evidence_retention_days(days: int | None, env: Env) -> int:
    """``--evidence-retention-days`` (or ``CEMS_EVIDENCE_RETENTION_DAYS``; default five years), at least 1."""
    value = days if days is not None else env.integer("CEMS_EVIDENCE_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)
    if value < 1:
        raise ConfigError(f"--evidence-retention-days {value}: must be at least 1")
    return value


def add_command_client_args(p: argparse.ArgumentParser, env: Env, *, username_help: str = "") -> None:
    """The options of a command sent to the running ingester over MQTT (``cems events ack``, ``cems marks``,
    ``cems warning set``): the broker, its credentials and TLS, and the registry (for its ``[topics]``)."""
    p.add_argument(
        "--mqtt-url",
        default=env.get("CEMS_MQTT_URL"),
        action=UrlList,
        help="broker, or a comma-separated list to fail over between [CEMS_MQTT_URL] (default: the local services)",
    )
    p.add_argument("--config", default=env.get("CEMS_CONFIG"), help="registry, for its [topics] [CEMS_CONFIG]")
    p.add_argument(
        "--mqtt-username", default=env.get("CEMS_MQTT_USERNAME"), help=f"{username_help}[CEMS_MQTT_USERNAME]"
    )
    p.add_argument("--mqtt-password", default=env.get("CEMS_MQTT_PASSWORD"), help="[CEMS_MQTT_PASSWORD]")
    p.add_argument("--mqtt-ca-file", default=env.get("CEMS_MQTT_CA_FILE"), help="[CEMS_MQTT_CA_FILE]")


def command_client(a: argparse.Namespace, env: Env) -> tuple[Topics, MqttSettings]:
    """The registry's topics and the MQTT settings of :func:`add_command_client_args`' options."""
    topics = load_registry(a.config).topics if a.config else Topics()
    urls, url_user, url_password = broker_urls(a.mqtt_url or local_url("mosquitto", env))
    settings = MqttSettings(
        url=urls[0],
        failover_urls=urls[1:],
        client_id="cems-cli",
        username=a.mqtt_username or url_user,
        password=a.mqtt_password or url_password,
        ca_file=a.mqtt_ca_file,
    )
    return topics, settings
