"""``cems hj212 decode|encode``: HJ 212 packets ⇄ JSON, one per line (never stops on a bad line)."""

from __future__ import annotations

import argparse
import sys

from cems.cli._common import Formatter, examples
from cems.config import Env
from cems.protocol import hj212


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env: Env) -> None:
    h = sub.add_parser(
        "hj212",
        help="decode/encode HJ 212 packets, one per line",
        description="decode: one packet per line → one JSON object per line (a bad line gives an object "
        "with its error, and decoding goes on); encode: the same JSON → packets with length and CRC.",
        epilog=examples("cems hj212 decode packets.txt", "cems hj212 decode packets.txt | cems hj212 encode -"),
        formatter_class=Formatter,
    )
    h.add_argument(
        "action",
        choices=["decode", "encode"],
        help="decode: packet per line → JSON per line; encode: JSON per line → packet per line",
    )
    h.add_argument("file", nargs="?", default="-", help="input file, or - for standard input")
    h.set_defaults(func=cmd_hj212)


def cmd_hj212(a: argparse.Namespace, env: Env) -> int:
    stream = sys.stdin if a.file in (None, "-") else open(a.file, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        fn = hj212.decode_lines if a.action == "decode" else hj212.encode_lines
        for out in fn(line.rstrip("\r\n") for line in stream):
            sys.stdout.write(out.rstrip("\r\n") + "\n")
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 0
