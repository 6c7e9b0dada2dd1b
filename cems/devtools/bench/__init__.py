"""``cems bench``: the ingester measured against the physical limits of this machine (docs/benchmark.md).

``run_bench(BenchConfig.create(...))`` runs it (``cems bench`` builds the configuration from its options);
``run_soak(BenchConfig.create(soak_minutes=...))`` the soak mode (``cems bench --soak``).
The load generator is a separate process: ``python -m cems.devtools.bench.loadgen``.
"""

from __future__ import annotations

from cems.devtools.bench._run import KEYS, BenchConfig, run_bench
from cems.devtools.bench._soak import run_soak

__all__ = ["KEYS", "BenchConfig", "run_bench", "run_soak"]
