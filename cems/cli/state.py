"""``cems state export|import|adopt``: move outlets between ingesters (issue 20 item 3; docs/scaling.md).

An outlet that changes owner (``cems run --shard K/N`` with another N, or its data now reaching another
shard) takes its engine state, events (with what was already alerted), transmission counts and marks along:
``export`` reads them from the stopped old owner's state directory (``--remove`` deletes them there), and
``import`` writes them into the new owner's before it starts (:mod:`cems.service.compliance._transfer`);
``adopt`` does both for every outlet a shard owns after a resharding, from the other ingesters' directories.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

from cems.cli._common import Formatter, examples
from cems.config import Env, state_dir
from cems.errors import ConfigError
from cems.registry.shard import Shard
from cems.service.compliance._state import DB_FILE
from cems.service.compliance._transfer import (
    adopt_outlets,
    export_outlets,
    import_outlets,
    outlets_in,
    stopped_state,
)


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
    ad = sub2.add_parser(
        "adopt",
        help="after a resharding: pull every outlet shard K/N owns from the other ingesters' state directories",
        description="With every ingester stopped, run once per new shard (any order): each outlet that shard "
        "K of N owns (CRC-32 of its MN mod N, as `cems run --shard K/N`) and that has state in another "
        "ingester's directory is moved here — copied, written here, then deleted there, one outlet at a "
        "time (as `cems state export --remove` + `cems state import`). Refused before anything moves when "
        "an outlet has two different histories. An adoption interrupted midway is completed by running it "
        "again.",
        epilog=examples(
            "cems state adopt --shard 0/3                 # STATE_DIR/ingester-s0 from STATE_DIR/ingester-s*",
            "cems state adopt --shard 2/3 --state-dir /var/lib/cems/ingester-s2 \\",
            "    --from /var/lib/cems/ingester-s0 --from /var/lib/cems/ingester-s1 --dry-run",
        ),
        formatter_class=Formatter,
    )
    ad.add_argument("--shard", required=True, help="the new shard K/N, as given to `cems run --shard`, e.g. 0/3")
    ad.add_argument(
        "--state-dir",
        default=None,
        help="the new owner's state directory (default: STATE_DIR/ingester-sK, as `cems run --shard K/N`)",
    )
    ad.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=None,
        metavar="DIR",
        help="a state directory to pull from (repeat; default: STATE_DIR/ingester and every "
        "STATE_DIR/ingester-s* other than --state-dir)",
    )
    ad.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    ad.set_defaults(func=cmd_state_adopt)


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


def cmd_state_adopt(a: argparse.Namespace, env: Env) -> int:
    try:
        shard = Shard.parse(a.shard)
    except ValueError as e:
        raise ConfigError(f"--shard: {e}") from e
    base = state_dir(env)
    target = Path(a.state_dir) if a.state_dir else base / f"ingester-{shard.level}"
    default = [base / "ingester", *sorted(base.glob("ingester-s*"))]
    sources = [Path(d) for d in a.sources] if a.sources else default
    sources = [d for d in sources if d.resolve() != target.resolve() and (d / DB_FILE).exists()]
    if not sources:
        print(f"no other state directory to adopt from (looked for {base}/ingester and {base}/ingester-s*)")
        return 0
    with ExitStack() as stack:
        new = stack.enter_context(stopped_state(target))
        olds = [(str(d), stack.enter_context(stopped_state(d))) for d in sources]
        moved = adopt_outlets(new, olds, shard.owns, dry_run=a.dry_run)
        others = [mn for mn in outlets_in(new) if not shard.owns(mn)]
    verb = "would move" if a.dry_run else "moved"
    for mn, name in moved:
        print(f"{verb} {mn} from {name}")
    print(f"shard {shard}: {len(moved)} outlet(s) {verb} into {target}")
    if others:
        print(
            f"{len(others)} outlet(s) here belong to other shards of {shard.count} (their shards' `cems state "
            f"adopt` pulls them): {', '.join(others[:10])}{' …' if len(others) > 10 else ''}"
        )
    return 0
