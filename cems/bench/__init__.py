"""``cems bench``: the ingester measured against the physical limits of this machine (docs/benchmark.md).

``add_bench_arguments(parser)`` adds the options to a sub-command parser; ``bench_command(args)`` runs it.
The load generator is a separate process: ``python -m cems.bench.loadgen``.
"""

from __future__ import annotations

from cems.bench._run import KEYS, add_bench_arguments, bench_command

__all__ = ["KEYS", "add_bench_arguments", "bench_command"]
