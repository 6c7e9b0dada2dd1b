"""``cems bench --smoke``: the benchmark runs end to end (own Mosquitto + InfluxDB, load generator process,
``cems run``, ``cems replay``) and reports every figure.  Only checks that it works, not the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cems.cli import main as cli_main
from cems.devtools.bench import KEYS

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

COMPLIANCE = Path(__file__).resolve().parents[2] / "cems" / "service" / "compliance"


def _positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def test_bench_smoke(tmp_path: Path, service_binaries: None) -> None:
    out = tmp_path / "bench.json"
    rc = cli_main(["bench", "--smoke", "--json", str(out)])

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert rc == 0, doc["notes"]
    for key in KEYS:
        assert key in doc, key
    assert doc["lost"] == 0, doc["notes"]
    for key in ("broker_msgs_per_s", "baseline_msgs_per_s", "database_msgs_per_s", "cems_msgs_per_s",
                "cems_values_per_s", "ratio_vs_baseline", "ratio_vs_database", "baseline_cpu_us_per_msg",
                "cems_cpu_us_per_msg", "cpu_per_msg_vs_baseline", "replay_values_per_s"):  # fmt: skip
        assert _positive(doc[key]), (key, doc[key], doc["notes"])
    assert doc["cpu_per_msg_vs_baseline"] == doc["cems_cpu_us_per_msg"] / doc["baseline_cpu_us_per_msg"]
    assert doc["rss_mb"] and all(_positive(v) for v in doc["rss_mb"].values()), doc["rss_mb"]
    assert set(doc["rss_mb"]) == {"200", "1000"}
    if COMPLIANCE.exists():
        for key in ("alert_latency_p50_s", "alert_latency_p99_s"):
            assert _positive(doc[key]), (key, doc[key], doc["notes"])
        assert doc["alert_latency_p50_s"] <= doc["alert_latency_p99_s"]
        alert = doc["details"]["alert"]  # each warning's latency by send time, in send order
        timeline = alert["latency_timeline"]
        assert len(timeline) == alert["warnings_received"] and timeline == sorted(timeline)
        assert timeline[0][0] == 0.0 and max(lat for _, lat in timeline) == round(alert["latency_max_s"], 3)
    else:
        assert doc["alert_latency_p99_s"] is None or _positive(doc["alert_latency_p99_s"])
    assert doc["targets"]["lost"]["result"] == "PASS"
    db = doc["details"]["database"]
    assert db["stored"] == db["lines"] == doc["details"]["cems"]["messages"]
    assert doc["machine"]["nproc"] >= 1


def test_bench_soak_samples_cpu_and_rss_over_time_and_loses_nothing(tmp_path: Path, service_binaries: None) -> None:
    out = tmp_path / "soak.json"
    # 10 outlets at 100 msg/s: data time runs 300 times the wall clock (each outlet every 30 s of it), so the
    # 18 s of load cover 90 min of data: at least one hour closes
    rc = cli_main(["bench", "--soak", "0.3", "--soak-rate", "100", "--outlets", "10", "--soak-interval", "3",
                   "--json", str(out)])  # fmt: skip

    doc = json.loads(out.read_text(encoding="utf-8"))
    assert rc == 0, doc["notes"]
    assert doc["mode"] == "soak" and doc["lost"] == 0, doc["notes"]
    assert doc["acknowledged"] == doc["stored"] > 0
    samples = doc["samples"]
    assert 4 <= len(samples) <= 6  # 18 s of load, one sample every 3 s
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    for s in samples:
        for key in ("msgs_per_s", "cems_cpu_us_per_msg", "baseline_cpu_us_per_msg", "ratio", "rss_mb"):
            assert _positive(s[key]), (key, s)
        assert s["ratio"] == s["cems_cpu_us_per_msg"] / s["baseline_cpu_us_per_msg"]
    assert samples[-1]["accepted"] <= doc["stored"] + 1  # + the warm-up reading
    assert _positive(doc["drift"]["cpu_per_msg_drift"]) and doc["drift"]["rss_growth_mb"] is not None
    assert doc["config"]["clock_speed"] == 300.0
    stats = doc["ingest_stats"]
    assert stats["rejected"] == {}
    assert stats["points_written"] > stats["accepted"]  # hourly records (and events) besides the readings
