"""``cems.devtools.stage_trace`` (docs/benchmark.md, eighth session): its hook installs the timers in a process
started with CEMS_STAGE_TRACE, and its report classifies and lists what it recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cems.devtools import stage_trace
from cems.devtools.stage_trace import GC_PREFIX, LOOP_LAG, Span, report


def test_the_hook_wraps_the_stages_of_a_process_started_with_the_variable(tmp_path: Path) -> None:
    prefix = str(tmp_path / "tr")
    env = {**os.environ, "CEMS_STAGE_TRACE": prefix, "PYTHONPATH": str(Path(stage_trace.__file__).with_name("hook"))}
    code = (
        "from cems.service.ingest import IngestService\n"
        "from cems.service.compliance import _runtime\n"
        "assert IngestService.prepare.__wrapped__ and _runtime.commit_events.__wrapped__\n"
        "_runtime.commit_events.__wrapped__  # a module function too\n"
        "import gc, time\n"
        "junk = [[i] for i in range(300_000)]\n"  # a full collection of 1 ms or more
        "gc.collect()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = list(tmp_path.glob("tr.*"))
    assert len(files) == 1
    spans = json.loads(files[0].read_text())
    assert spans and {label for label, *_ in spans} == {f"{GC_PREFIX}2"}  # the collection, timed
    assert all(0.001 <= end - start < 60 for _, start, end, _ in spans)
    # without the variable: nothing installed, nothing written
    env.pop("CEMS_STAGE_TRACE")
    code = "from cems.service.ingest import IngestService\nassert not hasattr(IngestService.prepare, '__wrapped__')\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("tr.*"))) == 1


def test_the_report_splits_the_alerts_transactions_by_a_state_transaction_under_way() -> None:
    t = 1_000.0
    spans: list[Span] = [
        ("commit_state", t, t + 0.150, ""),
        ("commit_events", t + 0.050, t + 0.160, ""),  # waited for the state's
        ("commit_events", t + 0.300, t + 0.303, ""),
        ("commit_events", t + 0.400, t + 0.404, ""),
        ("IngestService.rules_stage", t + 0.290, t + 0.310, ""),
        (LOOP_LAG, t + 0.500, t + 0.560, ""),
    ]
    alert = {"latency_timeline_t0": t + 0.280, "latency_timeline": [[0.0, 0.05], [0.2, 0.4]]}
    text = report(spans, alert, worst=1)
    lines = text.splitlines()
    assert any(x.startswith("commit_events") and "n=    3" in x for x in lines)
    during = next(x for x in lines if x.startswith("alerts' transactions during"))
    alone = next(x for x in lines if x.startswith("alerts' transactions with none"))
    assert "n=    1" in during and "p50=  110.0 ms" in during
    assert "n=    2" in alone
    # the slowest alert (sent at +0.2 = t + 0.48, arrived 0.4 s later): the loop's lag meanwhile, not the spans
    # that ended before its send
    head = next(i for i, x in enumerate(lines) if x.startswith("alert sent at +0.20"))
    shown = lines[head + 1 :]
    assert any(LOOP_LAG in x and x.lstrip().startswith("+0.020") for x in shown)
    assert not any("commit_state" in x for x in shown)
