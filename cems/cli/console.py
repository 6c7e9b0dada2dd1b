"""``cems console serve|user``: the duty console (值班台) web application and its accounts."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import secrets
import sys
from pathlib import Path

from cems.cli._common import (
    Formatter,
    add_influx_read_args,
    add_mqtt_args,
    examples,
    local_url,
    mqtt_settings,
)
from cems.config import Env, private_dir, private_file, state_dir
from cems.errors import CemsError
from cems.registry import load_registry

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    c = sub.add_parser(
        "console",
        help="the duty console (值班台): web pages to acknowledge, dispatch and close events",
        epilog=examples(
            "cems console user add zhangsan --role duty --name 张三",
            "cems console serve --config registry.toml --port 8080",
        ),
        formatter_class=Formatter,
    )
    c_sub = c.add_subparsers(dest="console_action", required=True, metavar="ACTION")
    s = c_sub.add_parser(
        "serve",
        help="serve the console (uvicorn; loopback unless --host says otherwise)",
        description="Serve the duty console. It binds to 127.0.0.1 unless --host is given: put a TLS reverse "
        "proxy in front of it (docs/console.md). Reads from InfluxDB, sends actions to the ingester over MQTT.",
        epilog=examples(
            "cems console serve --config registry.toml",
            "cems console serve --config registry.toml --host 127.0.0.1 --port 8080 --influx-url http://127.0.0.1:8086",
        ),
        formatter_class=Formatter,
    )
    s.add_argument("--config", default=env.get("CEMS_CONFIG"), help="the registry (names, districts) [CEMS_CONFIG]")
    s.add_argument("--host", default=env.get("CEMS_CONSOLE_HOST", "127.0.0.1"), help="address [CEMS_CONSOLE_HOST]")
    s.add_argument(
        "--port", type=int, default=env.integer("CEMS_CONSOLE_PORT", 8080, minimum=1), help="port [CEMS_CONSOLE_PORT]"
    )
    s.add_argument(
        "--console-dir",
        default=env.get("CEMS_CONSOLE_DIR"),
        help="accounts and the session key [CEMS_CONSOLE_DIR] (default: STATE_DIR/console)",
    )
    s.add_argument(
        "--http-cookies",
        action="store_true",
        help="send the session cookie over plain HTTP too: only for a browser on the console's own machine "
        "without the TLS proxy (by default the cookie is Secure: the browser sends it over HTTPS only)",
    )
    s.add_argument("--confirm-wait", type=float, default=10.0, help="seconds to wait for the ingester's confirmation")
    s.add_argument("--refresh", type=int, default=15, help="seconds between refreshes of the queue page")
    add_influx_read_args(s, env)
    add_mqtt_args(s, env, client_id=False)
    s.set_defaults(func=cmd_console_serve)

    u = c_sub.add_parser(
        "user",
        help="console accounts: add, passwd, disable, list",
        epilog=examples(
            "cems console user add zhangsan --role duty --name 张三",
            "cems console user add jingxiu --role district --scope 130602 --name 竞秀区生态环境分局",
            "cems console user passwd zhangsan",
            "cems console user disable zhangsan",
        ),
        formatter_class=Formatter,
    )
    u_sub = u.add_subparsers(dest="user_action", required=True, metavar="ACTION")
    ua = u_sub.add_parser(
        "add",
        help="add an account (asks for the password, or reads it from stdin with --password-stdin)",
        epilog=examples(
            "cems console user add zhangsan --role duty --name 张三",
            "echo 'a long password' | cems console user add qiye1 --role enterprise --scope E001 --password-stdin",
        ),
        formatter_class=Formatter,
    )
    ua.add_argument("username", help="login name, e.g. zhangsan")
    ua.add_argument(
        "--role",
        required=True,
        choices=["duty", "district", "enterprise", "viewer"],
        help="duty (值班员: all events, ack/dispatch/close), district (its district, answers dispatches), "
        "enterprise (its outlets, answers), viewer (read only)",
    )
    ua.add_argument("--scope", default=None, help="district code (district) or enterprise id (enterprise), e.g. 130602")
    ua.add_argument("--name", default=None, help="name shown in the history, e.g. 张三 (default: the login name)")
    _common_user_args(ua, env)
    ua.set_defaults(func=cmd_user_add)
    up = u_sub.add_parser(
        "passwd",
        help="set an account's password (and enable it again)",
        epilog=examples("cems console user passwd zhangsan"),
        formatter_class=Formatter,
    )
    up.add_argument("username", help="login name")
    _common_user_args(up, env)
    up.set_defaults(func=cmd_user_passwd)
    ud = u_sub.add_parser(
        "disable",
        help="disable an account (its sessions end at their next request)",
        epilog=examples("cems console user disable zhangsan"),
        formatter_class=Formatter,
    )
    ud.add_argument("username", help="login name")
    ud.add_argument("--console-dir", default=env.get("CEMS_CONSOLE_DIR"), help="[CEMS_CONSOLE_DIR]")
    ud.set_defaults(func=cmd_user_disable)
    ul = u_sub.add_parser(
        "list", help="list the accounts", epilog=examples("cems console user list"), formatter_class=Formatter
    )
    ul.add_argument("--console-dir", default=env.get("CEMS_CONSOLE_DIR"), help="[CEMS_CONSOLE_DIR]")
    ul.set_defaults(func=cmd_user_list)


def _common_user_args(p: argparse.ArgumentParser, env: Env) -> None:
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.add_argument(
        "--console-dir", default=env.get("CEMS_CONSOLE_DIR"), help="[CEMS_CONSOLE_DIR] (default: STATE_DIR/console)"
    )


def console_dir(a: argparse.Namespace, env: Env) -> Path:
    return Path(a.console_dir) if a.console_dir else state_dir(env) / "console"


def _password(a: argparse.Namespace) -> str:
    if a.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CemsError("the passwords differ")
    return first


def cmd_user_add(a: argparse.Namespace, env: Env) -> int:
    from cems.console import USERS_FILE, UserStore

    user = UserStore(console_dir(a, env) / USERS_FILE).add(a.username, _password(a), a.role, a.scope, a.name)
    print(f"user {user.username} added: {user.label}{' of ' + user.scope if user.scope else ''}")
    return 0


def cmd_user_passwd(a: argparse.Namespace, env: Env) -> int:
    from cems.console import USERS_FILE, UserStore

    UserStore(console_dir(a, env) / USERS_FILE).passwd(a.username, _password(a))
    print(f"password of {a.username} changed")
    return 0


def cmd_user_disable(a: argparse.Namespace, env: Env) -> int:
    from cems.console import USERS_FILE, UserStore

    UserStore(console_dir(a, env) / USERS_FILE).disable(a.username)
    print(f"user {a.username} disabled")
    return 0


def cmd_user_list(a: argparse.Namespace, env: Env) -> int:
    from cems.console import USERS_FILE, UserStore

    for u in UserStore(console_dir(a, env) / USERS_FILE).list():
        print(f"{u.username}\t{u.role}\t{u.scope or '-'}\t{u.display_name}\t{'disabled' if u.disabled else 'active'}")
    return 0


def session_key(directory: Path) -> str:
    """The key that signs session cookies: ``session.key`` in the console directory, made (0600) on first use."""
    path = directory / "session.key"
    if not path.exists():
        private_dir(directory)
        private_file(path)
        path.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
    return path.read_text(encoding="utf-8").strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_console_serve(a: argparse.Namespace, env: Env) -> int:
    import uvicorn

    from cems.console import USERS_FILE, ConsoleSettings, create_app

    registry = load_registry(a.config) if a.config else None
    if registry is None:
        raise CemsError("--config (or CEMS_CONFIG) is required: the console shows the registry's names")
    directory = console_dir(a, env)
    if not _is_loopback(a.host):
        log.warning("the console listens on %s: serve it to users only through the TLS reverse proxy", a.host)
    settings = ConsoleSettings(
        registry=registry,
        influx_url=a.influx_url or local_url("influxdb", env),
        influx_db=a.influx_db,
        mqtt=mqtt_settings(a, url=a.mqtt_url or local_url("mosquitto", env), client_id="cems-console"),
        users_file=directory / USERS_FILE,
        secret_key=session_key(directory),
        secure_cookies=not a.http_cookies,
        confirm_s=a.confirm_wait,
        refresh_s=max(a.refresh, 2),
    )
    print(f"cems console on http://{a.host}:{a.port}/ (accounts: {settings.users_file})", flush=True)
    uvicorn.run(create_app(settings), host=a.host, port=a.port, log_level="warning", proxy_headers=True)
    return 0
