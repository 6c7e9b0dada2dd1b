"""``cems state export|import``: move outlets between ingesters (issue 20 item 3; docs/scaling.md).

An outlet that changes owner (``cems run --shard K/N`` with another N, or its data now reaching another
shard) takes its engine state, events (with what was already alerted), transmission counts and marks along:
``export`` reads them from the stopped old owner's state directory (``--remove`` deletes them there), and
``import`` writes them into the new owner's before it starts (:mod:`cems.service.compliance._transfer`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.errors import ConfigError
from cems.service.compliance._transfer import export_outlets, import_outlets, stopped_state


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    st = sub.add_parser(
        "state",
        help="move outlets' compliance state between stopped ingesters (resharding)",
        epilog=examples(
            "cems state export --state-dir /var/lib/cems/ingester-s1 --mn 13060200000001 --remove --out mn.json",
            "cems state import --state-dir /var/lib/cems/ingester-s2 mn.json",
        ),
        formatter_class=Formatter,
    )
    sub2 = st.add_subparsers(dest="state_action", required=True, metavar="ACTION")
    ex = sub2.add_parser(
        "export",
        help="write the state of outlets of a stopped ingester as JSON",
        epilog=examples(
            "cems state export --state-dir /var/lib/cems/ingester-s1 --mn 13060200000001 --remove --out mn.json"
        ),
        formatter_class=Formatter,
    )
    ex.add_argument(
        "--state-dir",
        required=True,
        help="the old owner's state directory (`cems run --shard K/N` uses STATE_DIR/ingester-sK), "
        "e.g. /var/lib/cems/ingester-s1; refused while that ingester runs",
    )
    ex.add_argument(
        "--mn", required=True, action="append", help="an outlet's MN (repeat for several), e.g. 13060200000001"
    )
    ex.add_argument(
        "--remove",
        action="store_true",
        help="delete the exported state from the old owner (so that it neither escalates nor counts them again)",
    )
    ex.add_argument("--out", default="-", help="output file, e.g. mn.json (default: standard output)")
    ex.set_defaults(func=cmd_state_export)
    im = sub2.add_parser(
        "import",
        help="add exported outlet state to a stopped ingester's state before it first sees those outlets",
        epilog=examples("cems state import --state-dir /var/lib/cems/ingester-s2 mn.json"),
        formatter_class=Formatter,
    )
    im.add_argument(
        "--state-dir",
        required=True,
        help="the new owner's state directory, e.g. /var/lib/cems/ingester-s2 (created if new)",
    )
    im.add_argument("file", help="a `cems state export` file, e.g. mn.json (- for standard input)")
    im.set_defaults(func=cmd_state_import)


def cmd_state_export(a: argparse.Namespace, env: Env) -> int:
    with stopped_state(Path(a.state_dir)) as conn:
        doc = export_outlets(conn, a.mn, remove=a.remove)
    text = json.dumps(doc, ensure_ascii=False)
    if a.out == "-":
        print(text)
    else:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    n = {t: len(rows) for t, rows in doc["tables"].items()}
    print(f"exported {', '.join(a.mn)}: {json.dumps(n)}" + (" (removed)" if a.remove else ""), file=sys.stderr)
    return 0


def cmd_state_import(a: argparse.Namespace, env: Env) -> int:
    try:
        raw = sys.stdin.read() if a.file == "-" else Path(a.file).read_text(encoding="utf-8")
        doc = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{a.file}: cannot read an outlet state export ({e})") from e
    with stopped_state(Path(a.state_dir)) as conn:
        counts = import_outlets(conn, doc)
    print(f"imported {', '.join(doc['outlets'])}: {json.dumps(counts)}")
    return 0
