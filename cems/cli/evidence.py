"""``cems evidence export|verify``: the case file of one outlet and period, and its verification
(docs/evidence.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cems.cli._common import Formatter, examples, local_url
from cems.config import Env, state_dir
from cems.errors import ConfigError
from cems.evidence import CaseRequest, export_case, verify_archive, verify_case
from cems.evidence._reads import case_reads
from cems.registry import load_registry
from cems.service.compliance import DB_FILE
from cems.stops import parse_when


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    ev = sub.add_parser(
        "evidence",
        help="export an outlet's evidence for a period (raw packets, readings, hours, events), verify it",
        epilog=examples(
            "cems evidence export --config registry.toml --mn MN0001 --from 2026-12-01 --to 2026-12-02 \\",
            "    --by 张三 --out case.zip",
            "cems evidence verify case.zip",
        ),
        formatter_class=Formatter,
    )
    ev_sub = ev.add_subparsers(dest="evidence_action", required=True, metavar="ACTION")
    ex = ev_sub.add_parser(
        "export",
        help="write the case file (zip) of one outlet and period",
        description="Write the raw packets of the MN (from the evidence archive: those that arrived in the "
        "period or whose data time lies in it), the readings decoded from them, hourly records, events, "
        "acknowledgements and marks, with a manifest, SHA256SUMS and a README (中文/English).",
        epilog=examples(
            "cems evidence export --config registry.toml --mn MN0001 --from 2026-12-01T08:00 \\",
            "    --to 2026-12-01T12:00 --by 张三 --out case.zip",
        ),
        formatter_class=Formatter,
    )
    ex.add_argument(
        "--config",
        default=env.get("CEMS_CONFIG"),
        required=env.get("CEMS_CONFIG") is None,
        help="registry TOML, to decode the packets as `cems run` did [CEMS_CONFIG]",
    )
    ex.add_argument("--mn", required=True, help="the outlet's MN, e.g. 13060200000001")
    ex.add_argument("--from", required=True, help="start, ISO 8601 (Beijing time without an offset), e.g. 2026-12-01")
    ex.add_argument("--to", required=True, help="end (exclusive), ISO 8601, e.g. 2026-12-01T12:00")
    ex.add_argument("--out", required=True, help="the case file to write, e.g. case.zip")
    ex.add_argument("--by", required=True, help="who exports (recorded in the manifest), e.g. 张三")
    ex.add_argument(
        "--evidence-dir",
        action="append",
        default=None,
        help="archive directory (repeatable: an ingester's and a bridge's) [CEMS_EVIDENCE_DIR] "
        "(default: STATE_DIR/ingester/evidence)",
    )
    ex.add_argument(
        "--state-dir",
        default=None,
        help="the ingester's state (events, acknowledgements, alert history in SQLite) "
        "(default: STATE_DIR/ingester; without it, events come from InfluxDB)",
    )
    ex.add_argument(
        "--late-days",
        type=int,
        default=11,
        help="days after the period to look for late (补传) packets of it (default 11: the 10-day repair window + 1)",
    )
    ex.add_argument(
        "--influx-url",
        default=env.get("CEMS_INFLUX_URL"),
        help="InfluxDB URL for hourly records (default: the local InfluxDB of `cems services`) [CEMS_INFLUX_URL]",
    )
    ex.add_argument("--influx-db", default=env.get("CEMS_INFLUX_DB", "cems"), help="database [CEMS_INFLUX_DB]")
    ex.set_defaults(func=cmd_evidence_export)
    ve = ev_sub.add_parser(
        "verify",
        help="check every hash of a case file (or of an archive directory); exit 1 naming what fails",
        epilog=examples("cems evidence verify case.zip", "cems evidence verify ~/.local/state/cems/ingester/evidence"),
        formatter_class=Formatter,
    )
    ve.add_argument("path", help="a case file (zip) written by `cems evidence export`, or an archive directory")
    ve.set_defaults(func=cmd_evidence_verify)


def cmd_evidence_export(a: argparse.Namespace, env: Env) -> int:
    start, end = parse_when(getattr(a, "from")), parse_when(a.to)
    if end <= start:
        raise ConfigError(f"--to {a.to} must be after --from {getattr(a, 'from')}")
    if a.late_days < 0:
        raise ConfigError(f"--late-days {a.late_days}: must be at least 0")
    base = Path(a.state_dir) if a.state_dir else state_dir(env) / "ingester"
    dirs = [Path(d) for d in a.evidence_dir or []] or [env.path("CEMS_EVIDENCE_DIR") or base / "evidence"]
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(f"--evidence-dir {d}: no such directory")
    registry = load_registry(a.config)
    url = a.influx_url or local_url("influxdb", env)
    req = CaseRequest(a.mn, start, end, a.by, tuple(dirs), a.late_days, Path(a.config))
    manifest = export_case(req, registry, case_reads(url, a.influx_db, base / DB_FILE), Path(a.out))
    c = manifest["counts"]
    print(
        f"{a.out}: {c['packets_selected']} packets in {len(manifest['segments'])} archive segments, "
        f"{c['hourly']} hourly records, {c['events']} events; verify with: cems evidence verify {a.out}"
    )
    return 0


def cmd_evidence_verify(a: argparse.Namespace, env: Env) -> int:
    path = Path(a.path)
    if path.is_dir():
        problems, n = verify_archive(path)
        what = f"{n} archive segments"
    else:
        problems, manifest = verify_case(path)
        what = f"{len(manifest.get('files', {}))} files, {len(manifest.get('segments', []))} archive segments"
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"{path}: {len(problems)} problem(s): NOT verified", file=sys.stderr)
        return 1
    print(f"{path}: OK ({what}: every hash and chain link checks)")
    return 0
