"""``cems marks add|declare|repair|withdraw|list|types``: enterprise marks (标记), stop declarations (停产申报) and
repairs (修约), issue 14.  Submissions go over MQTT to the running ingester, which decides and stores them (the
single writer of the state) and answers; ``list`` reads ``cems_mark`` from InfluxDB."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
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
from cems.limits import builtin_mark_catalog
from cems.model import BEIJING
from cems.protocol.mark import MarkKind, mark_payload
from cems.registry import load_registry
from cems.service.compliance import list_marks, submit_mark, withdrawn


def _time(v: str) -> datetime:
    try:
        t = datetime.fromisoformat(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {v!r} (e.g. 2026-11-20T08:00)") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=BEIJING)


def _send_args(p: argparse.ArgumentParser, env: Env) -> None:
    p.add_argument("--mn", required=True, help="the outlet's MN")
    p.add_argument("--by", required=True, help="who submits (a person), e.g. 王工")
    p.add_argument("--attachment", default="", help="reference of the supporting document, e.g. DOC-2026-118")
    p.add_argument(
        "--on-behalf",
        action="store_true",
        help="send on the command topic ({command_prefix}/mark: the bureau entering it for the enterprise) "
        "instead of the MN's own cems/v1/{mn}/mark (the enterprise's gateway credentials)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the ingester's answer (default 10; 0: only wait for the broker)",
    )
    add_command_client_args(p, env, username_help="the MN, or the command user ")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    mk = sub.add_parser(
        "marks",
        help="enterprise marks (标记), stop declarations (停产申报) and repairs (修约)",
        description="Marks decide whether an hour is judged for exceedance and how it counts for the 90 %% rule "
        "(cems/limits/marks.toml; MEE 公告2022年第21号). Submissions go to the running ingester over MQTT; it "
        "refuses a mark or repair older than the repair window (mark_too_late) and keeps a late declaration "
        "without effect.",
        epilog=examples(
            "cems marks types --config registry.toml",
            "cems marks add --mn MN0001 --type cp_fault --from 2026-11-20T08:00 --to 2026-11-20T11:00 "
            "--reason 引风机跳闸 --by 王工",
            "cems marks list --mn MN0001",
        ),
        formatter_class=Formatter,
    )
    s = mk.add_subparsers(dest="marks_action", required=True, metavar="ACTION")
    a = s.add_parser(
        "add",
        help="mark a period of an outlet (a mark type of marks.toml allowed for its industry)",
        epilog=examples(
            "cems marks add --mn MN0001 --type cp_fault --from 2026-11-20T08:00 --to 2026-11-20T11:00 "
            "--reason 引风机跳闸 --by 王工 --attachment DOC-118"
        ),
        formatter_class=Formatter,
    )
    a.add_argument("--type", required=True, help="mark type code (see `cems marks types`), e.g. cp_fault")
    a.add_argument("--from", dest="start", type=_time, required=True, help="start, ISO 8601 (Beijing time)")
    a.add_argument("--to", dest="end", type=_time, required=True, help="end (exclusive), ISO 8601")
    a.add_argument("--reason", required=True, help="why, e.g. 引风机跳闸")
    _send_args(a, env)
    a.set_defaults(func=cmd_marks_send, kind="mark")
    d = s.add_parser(
        "declare",
        help="declare a production stop (停产申报); filed late, it is kept without effect",
        epilog=examples("cems marks declare --mn MN0001 --from 2026-12-01 --to 2026-12-05 --reason 停产检修 --by 王工"),
        formatter_class=Formatter,
    )
    d.add_argument("--type", default="production_stop", help="declaration type (default production_stop)")
    d.add_argument("--from", dest="start", type=_time, required=True, help="start, ISO 8601 (Beijing time)")
    d.add_argument("--to", dest="end", type=_time, required=True, help="end (exclusive), ISO 8601")
    d.add_argument("--reason", required=True, help="why, e.g. 停产检修")
    _send_args(d, env)
    d.set_defaults(func=cmd_marks_send, kind="declaration")
    r = s.add_parser(
        "repair",
        help="repair (修约) one hour's corrected value of a pollutant; the original stays visible",
        epilog=examples(
            "cems marks repair --mn MN0001 --pollutant a21026 --hour 2026-11-20T09:00 --value 28.5 "
            "--reason 比对监测修约 --by 王工"
        ),
        formatter_class=Formatter,
    )
    r.add_argument("--pollutant", required=True, help="pollutant code, e.g. a21026 (SO2)")
    r.add_argument("--hour", dest="start", type=_time, required=True, help="start of the hour, ISO 8601")
    r.add_argument("--value", type=float, required=True, help="corrected hourly mean, mg/m³ at the reference O2")
    r.add_argument("--reason", required=True, help="why, e.g. 比对监测修约")
    _send_args(r, env)
    r.set_defaults(func=cmd_marks_send, kind="repair", end=None, type=None)
    w = s.add_parser(
        "withdraw",
        help="withdraw a mark, declaration or repair (a new record; the original stays)",
        epilog=examples("cems marks withdraw 3f9c0a1b2c3d4e5f --mn MN0001 --by 王工 --reason 标记有误"),
        formatter_class=Formatter,
    )
    w.add_argument("target", help="record_id of the record to withdraw (see `cems marks list`)")
    w.add_argument("--reason", default="", help="why, e.g. 标记有误")
    _send_args(w, env)
    w.set_defaults(func=cmd_marks_send, kind="withdrawal", start=None, end=None, type=None)
    ls = s.add_parser(
        "list",
        help="marks, declarations, repairs and withdrawals as stored (cems_mark, InfluxDB)",
        epilog=examples("cems marks list --mn MN0001 --from 2026-11-01 --to 2026-12-01", "cems marks list --json"),
        formatter_class=Formatter,
    )
    ls.add_argument("--mn", default=None, help="only this outlet")
    ls.add_argument("--from", dest="start", type=_time, default=None, help="records overlapping from this time")
    ls.add_argument("--to", dest="end", type=_time, default=None, help="... to this time")
    ls.add_argument("--json", action="store_true", help="one JSON object per line (what `cems replay --marks` reads)")
    add_influx_read_args(ls, env)
    ls.set_defaults(func=cmd_marks_list)
    ty = s.add_parser(
        "types",
        help="the mark types, their effects and caps (cems/limits/marks.toml with the registry's [marks])",
        epilog=examples("cems marks types", "cems marks types --config registry.toml"),
        formatter_class=Formatter,
    )
    ty.add_argument("--config", default=env.get("CEMS_CONFIG"), help="registry, for its [marks] [CEMS_CONFIG]")
    ty.set_defaults(func=cmd_marks_types)


def cmd_marks_send(a: argparse.Namespace, env: Env) -> int:
    topics, settings = command_client(a, env)
    kind: MarkKind = a.kind
    payload = mark_payload(
        kind,
        mn=a.mn,
        submitter=a.by,
        reason=a.reason,
        type_=a.type,
        start=a.start,
        end=a.end,
        attachment=a.attachment,
        pollutant=getattr(a, "pollutant", None),
        value=getattr(a, "value", None),
        target=getattr(a, "target", None),
        client="cems-cli",
    )
    reply = asyncio.run(submit_mark(settings, topics, payload, on_behalf=a.on_behalf, confirm_s=max(a.wait, 0.0)))
    if a.wait <= 0:
        print(f"{kind} for {a.mn} sent to the broker (not waiting for the ingester)")
        return 0
    if reply is None:
        print(
            f"cems: {kind} sent, but the ingester did not answer within {a.wait:g} s (is `cems run` running and "
            "connected to this broker? with broker ACLs, an MN may mark only itself); check with: cems marks list",
            file=sys.stderr,
        )
        return 1
    result = reply.get("result")
    rec = reply.get("record") or {}
    if result in ("accepted", "duplicate"):
        print(
            f"{kind} {rec.get('record_id')} of {a.mn} {result}"
            + (f" ({reply['detail']})" if reply.get("detail") else "")
        )
        return 0
    if result == "late":
        print(f"{kind} {rec.get('record_id')} of {a.mn} kept WITHOUT EFFECT: {rec.get('note')}")
        return 1
    print(f"cems: the ingester refused the {kind}: {result}: {reply.get('detail')}", file=sys.stderr)
    return 1


def cmd_marks_list(a: argparse.Namespace, env: Env) -> int:
    url = a.influx_url or local_url("influxdb", env)
    recs = list_marks(url, a.influx_db, mn=a.mn, start=a.start, end=a.end)
    gone = withdrawn(recs)
    if a.json:
        for r in recs:
            print(json.dumps(r.to_json(), ensure_ascii=False))
        return 0
    if not recs:
        print("no marks")
        return 0
    cols = ["record_id", "kind", "type", "mn", "from", "to", "status", "submitter", "received_at", "reason"]
    rows: list[list[str]] = [[c.upper() for c in cols]]
    for r in recs:
        j: dict[str, Any] = r.to_json()
        status = r.status + (f" (withdrawn by {gone[r.record_id]})" if r.record_id in gone else "")
        j["status"] = status
        if r.kind == "repair":
            j["type"] = f"repair {r.pollutant}={r.value:g}" if r.value is not None else "repair"
        for k in ("from", "to", "received_at"):
            j[k] = datetime.fromisoformat(j[k]).strftime("%Y-%m-%d %H:%M")
        rows.append([str(j.get(c) or "-") for c in cols])
    widths = [max(len(t[i]) for t in rows) for i in range(len(cols))]
    print("\n".join("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip() for t in rows))
    return 0


def cmd_marks_types(a: argparse.Namespace, env: Env) -> int:
    catalog = load_registry(a.config).mark_catalog if a.config else builtin_mark_catalog()
    for t in sorted(catalog.types.values(), key=lambda t: (t.industry != "all", t.industry, t.code)):
        cap = ""
        if t.cap is not None:
            hours = catalog.cap_hours(t.cap)
            cap = f"  cap {t.cap}: {'not set' if hours is None else f'{hours:g} h/year'}"
        kind = "declaration" if t.declaration else "mark"
        print(
            f"{t.code:16} {t.name:8} {t.industry:20} {kind:11} judged={str(t.judged).lower():5} "
            f"rate={t.rate:11}{cap}{'' if t.verified else '  [verify]'}"
        )
    d = catalog.deadline
    print(
        f"deadline: {d.window_days} days after the hour; the month is final after day {d.month_final_day} of the next"
    )
    return 0
