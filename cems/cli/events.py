"""``cems events list|ack|dispatch|feedback|close|send-back``: what the monitoring room sees and does (电子督办)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cems.cli._common import (
    Formatter,
    add_command_client_args,
    add_influx_read_args,
    command_client,
    examples,
    local_url,
)
from cems.config import Env
from cems.model import BEIJING
from cems.service.compliance import ack_event, list_events, send_action


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    ev = sub.add_parser(
        "events",
        help="list events, or acknowledge one (monitoring room)",
        epilog=examples("cems events list --unacked", "cems events ack 3f9c0a1b2c3d4e5f --by 张三"),
        formatter_class=Formatter,
    )
    ev_sub = ev.add_subparsers(dest="events_action", required=True, metavar="ACTION")
    el = ev_sub.add_parser(
        "list",
        help="open / unacknowledged events (from InfluxDB)",
        epilog=examples("cems events list", "cems events list --all --json | jq .", "cems events list --unacked"),
        formatter_class=Formatter,
    )
    el.add_argument("--all", action="store_true", help="closed events too")
    el.add_argument("--unacked", action="store_true", help="only events not yet acknowledged")
    el.add_argument("--json", action="store_true", help="one JSON object per line")
    add_influx_read_args(el, env)
    el.set_defaults(func=cmd_events_list)
    ea = ev_sub.add_parser(
        "ack",
        help="acknowledge an event (sent to the ingester over MQTT, QoS 1)",
        description="Send an acknowledgement to the ingester and wait for its confirmation. Exit 0 when the "
        "ingester stored it (or it was already acknowledged), 1 when the event is unknown or no confirmation "
        "came within --wait seconds.",
        epilog=examples("cems events ack 3f9c0a1b2c3d4e5f --by 张三 --note 已电话通知企业核查 --config registry.toml"),
        formatter_class=Formatter,
    )
    ea.add_argument("event_id", help="the event's id, as `cems events list` shows it")
    ea.add_argument("--by", required=True, help="who acknowledges (name of the duty officer), e.g. 张三")
    ea.add_argument(
        "--note", default=None, help="处理意见: what was seen and done, e.g. 已电话通知企业核查 (≤ 1000 characters)"
    )
    ea.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the ingester's confirmation (default 10; 0: only wait for the broker)",
    )
    add_command_client_args(ea, env)
    ea.set_defaults(func=cmd_events_ack)
    _add_action_parsers(ev_sub, env)


#: (sub-command, action, help, what the note is, example)
_ACTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "dispatch",
        "dispatch",
        "dispatch an acknowledged event to its district (督办单, with a deadline)",
        "督办要求: what the district must do",
        "cems events dispatch 3f9c0a1b2c3d4e5f --by 张三 --deadline 2026-12-01T18:00 --note 请核查超标原因并反馈",
    ),
    (
        "feedback",
        "feedback",
        "the district's answer to a dispatched event (处理结果)",
        "处理结果: what was found and done",
        "cems events feedback 3f9c0a1b2c3d4e5f --by 李四 --note 已现场检查，脱硫塔故障已修复",
    ),
    (
        "close",
        "close",
        "close an event's case (办结), after the district's answer or without dispatch",
        "办结意见",
        "cems events close 3f9c0a1b2c3d4e5f --by 张三 --note 整改到位，办结",
    ),
    (
        "send-back",
        "send_back",
        "send the district's answer back (退回): the case is dispatched again",
        "退回理由",
        "cems events send-back 3f9c0a1b2c3d4e5f --by 张三 --note 未附现场照片，请补充",
    ),
)


def _add_action_parsers(ev_sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    for name, action, help_, note_help, example in _ACTIONS:
        p = ev_sub.add_parser(
            name,
            help=help_,
            description=help_ + ". Sent to the ingester over MQTT (QoS 1) on {command_prefix}/event_action; "
            "exit 0 when the ingester recorded it, 1 when it refused it or did not confirm within --wait seconds.",
            epilog=examples(example + " --config registry.toml"),
            formatter_class=Formatter,
        )
        p.add_argument("event_id", help="the event's id, as `cems events list` shows it")
        p.add_argument("--by", required=True, help="who acts (name), e.g. 张三")
        p.add_argument("--note", required=True, help=f"{note_help} (1-1000 characters)")
        if action in ("dispatch", "send_back"):
            p.add_argument(
                "--deadline",
                required=action == "dispatch",
                help="when the district's answer is due, ISO 8601 Beijing time, e.g. 2026-12-01T18:00"
                + ("" if action == "dispatch" else " (default: the previous deadline)"),
            )
        if action == "dispatch":
            p.add_argument("--to", default=None, help="district code (default: the event's district), e.g. 130602")
        p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS", help="how long to wait for the ingester")
        add_command_client_args(p, env)
        p.set_defaults(func=cmd_events_action, action_name=action)


def cmd_events_list(a: argparse.Namespace, env: Env) -> int:
    url = a.influx_url or local_url("influxdb", env)
    rows = list_events(url, a.influx_db, only_open=not a.all, only_unacked=a.unacked)
    if a.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, default=str))
    else:
        print(format_events(rows))
    return 0


def cmd_events_ack(a: argparse.Namespace, env: Env) -> int:
    topics, settings = command_client(a, env)
    reply = asyncio.run(ack_event(settings, topics, a.event_id, a.by, note=a.note, confirm_s=max(a.wait, 0.0)))
    if a.wait <= 0:
        print(f"acknowledgement of {a.event_id} by {a.by} sent to the broker (not waiting for the ingester)")
        return 0
    if reply is None:
        print(
            f"cems: acknowledgement of {a.event_id} sent, but the ingester did not confirm it within {a.wait:g} s "
            "(is `cems run` running and connected to this broker?); check with: cems events list --unacked",
            file=sys.stderr,
        )
        return 1
    result = reply.get("result")
    if result == "acknowledged":
        print(f"event {a.event_id} acknowledged by {reply.get('acked_by')} at {reply.get('acked_at')}")
        return 0
    if result == "already_acknowledged":
        print(
            f"event {a.event_id} was already acknowledged by {reply.get('acked_by')} at {reply.get('acked_at')}; "
            "this acknowledgement was not recorded"
        )
        return 0
    if result == "unknown_event":
        print(f"cems: the ingester knows no event {a.event_id!r} (see: cems events list --all)", file=sys.stderr)
        return 1
    print(f"cems: the ingester refused the acknowledgement: {reply.get('detail') or result}", file=sys.stderr)
    return 1


def cmd_events_action(a: argparse.Namespace, env: Env) -> int:
    topics, settings = command_client(a, env)
    body: dict[str, Any] = {"action": a.action_name, "event_id": a.event_id, "by": a.by, "note": a.note}
    if getattr(a, "deadline", None):
        body["deadline"] = a.deadline
    if getattr(a, "to", None):
        body["dispatched_to"] = a.to
    reply = asyncio.run(send_action(settings, topics, body, confirm_s=max(a.wait, 0.0)))
    if a.wait <= 0:
        print(f"{a.action_name} of {a.event_id} sent to the broker (not waiting for the ingester)")
        return 0
    if reply is None:
        print(
            f"cems: {a.action_name} of {a.event_id} sent, but the ingester did not confirm it within {a.wait:g} s "
            "(is `cems run` running and connected to this broker?)",
            file=sys.stderr,
        )
        return 1
    if reply.get("result") == "done":
        extra = (
            f", dispatched to {reply.get('dispatched_to')} until {reply.get('deadline')}"
            if reply.get("dispatched_to")
            else ""
        )
        who = f"{a.action_name} by {reply.get('by')} at {reply.get('at')}"
        print(f"event {a.event_id}: {who}: case {reply.get('case_status')}{extra}")
        return 0
    print(
        f"cems: the ingester refused the {a.action_name} of {a.event_id}: {reply.get('detail') or reply.get('result')}",
        file=sys.stderr,
    )
    return 1


def format_events(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`list_events` rows."""
    if not rows:
        return "no events"
    cols = [
        "event_id",
        "type",
        "status",
        "enterprise",
        "mn",
        "pollutant",
        "start",
        "end",
        "hours",
        "peak",
        "limit",
        "acked_by",
    ]

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        s = str(v)
        with contextlib.suppress(ValueError):
            if len(s) >= 19 and s[4] == "-" and "T" in s:
                s = datetime.fromisoformat(s).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")
        return s

    table = [[c.upper() for c in cols]] + [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in table)
