"""The command line as people use it: configuration errors, help with examples, exit codes, pipes, logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from registries import one_outlet  # tests/registries.py

from cems.cli import COMMANDS, build_parser
from cems.cli._logging import JsonFormatter
from cems.config import Env

pytestmark = pytest.mark.e2e


def cems(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cems", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_bad_environment_value_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    # a bad value never breaks commands that do not use it
    ok = cems("--version", env={"CEMS_BATCH_MAX": "abc"})
    assert ok.returncode == 0 and ok.stdout.startswith("cems "), ok.stderr
    reg = tmp_path / "r.toml"
    reg.write_text(one_outlet(), encoding="utf-8")
    env = {"CEMS_BATCH_MAX": "abc", "CEMS_MQTT_URL": "mqtt://127.0.0.1:9", "CEMS_INFLUX_URL": "http://127.0.0.1:9"}
    bad = cems("run", "--config", str(reg), "--state-dir", str(tmp_path / "st"), env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "cems: error: CEMS_BATCH_MAX='abc' is not an integer"
    assert "Traceback" not in bad.stderr


def test_state_dir_defined_once_and_honours_xdg(tmp_path: Path) -> None:
    from cems.config import state_dir

    assert state_dir(Env({"CEMS_STATE_DIR": str(tmp_path / "s")})) == tmp_path / "s"
    assert state_dir(Env({"XDG_STATE_HOME": str(tmp_path / "x")})) == tmp_path / "x" / "cems"
    assert state_dir(Env({"HOME": "/nowhere"})) == Path.home() / ".local" / "state" / "cems"
    # services, ingester and demo all live under it: `cems services status` reads the XDG directory
    out = cems("services", "status", env={"XDG_STATE_HOME": str(tmp_path / "x"), "CEMS_STATE_DIR": ""})
    assert out.returncode == 3 and "stopped" in out.stdout


def _subparsers(p: object) -> dict[str, object]:
    import argparse

    assert isinstance(p, argparse.ArgumentParser)
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_an_example_and_every_argument_help() -> None:
    import argparse

    parser = build_parser(Env({}))
    commands = _subparsers(parser)
    assert len(commands) == len(COMMANDS) + 1  # `services` also adds `query`
    todo = list(commands.items())
    while todo:
        name, p = todo.pop()
        assert isinstance(p, argparse.ArgumentParser)
        children = _subparsers(p)
        todo += [(f"{name} {k}", v) for k, v in children.items()]
        assert p.epilog and "example:" in p.epilog and "cems " in p.epilog, f"`cems {name} --help` has no example"
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"`cems {name}`: {action.option_strings or action.dest} has no help"


def test_replay_help_shows_a_full_example() -> None:
    out = cems("replay", "--help")
    assert out.returncode == 0
    assert "example:" in out.stdout and "cems replay --config registry.toml --input recorded.txt" in out.stdout
    assert "--hourly-out hourly.jsonl" in out.stdout


def test_output_into_head_ends_quietly(tmp_path: Path) -> None:
    packets = tmp_path / "p.txt"
    packets.write_text("##0000QN=1;ST=31;CN=2011;PW=123456;MN=X;Flag=5;CP=&&&&0000\n" * 20000, encoding="utf-8")
    proc = subprocess.run(
        f"{sys.executable} -m cems hj212 decode {packets} | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_replay_shows_progress(tmp_path: Path) -> None:
    reg = tmp_path / "r.toml"
    reg.write_text(one_outlet(), encoding="utf-8")
    inp = tmp_path / "in.txt"
    inp.write_text("not a packet\n" * 10, encoding="utf-8")
    out = cems("replay", "--config", str(reg), "--input", str(inp), "--progress", "always")
    assert out.returncode == 0, out.stderr
    assert "replay: read the whole input, 10 lines" in out.stderr
    quiet = cems("replay", "--config", str(reg), "--input", str(inp))  # stderr is a pipe: no progress
    assert "read the whole input" not in quiet.stderr and "replay: 10 lines" in quiet.stderr


def test_json_logs() -> None:
    record = logging.LogRecord("cems.x", logging.WARNING, __file__, 1, "outlet %s silent", ("MN1",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["level"], doc["logger"], doc["message"]) == ("WARNING", "cems.x", "outlet MN1 silent")
    assert doc["time"].endswith("+00:00")
    # the option reaches the root logger
    out = cems("--log-format", "json", "-v", "registry", "check", "/nonexistent.toml")
    assert out.returncode == 2
    assert build_parser(Env({})).parse_args(["--log-format", "json", "registry", "check", "x"]).log_format == "json"
