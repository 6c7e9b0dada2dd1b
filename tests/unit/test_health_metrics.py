"""``/metrics`` exports the rules' counters: how many readings late data revised, could not revise, or were
refused past their repair deadline (stored, changing no figure), and the rules' errors."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from cems.service.compliance._state import ComplianceStats
from cems.service.health import StatsCollector
from cems.service.ingest import IngestStats


def scrape(service: object) -> str:
    reg = CollectorRegistry()
    reg.register(StatsCollector(service))
    return generate_latest(reg).decode()


def test_the_rules_counters_are_exported() -> None:
    comp = ComplianceStats(hourly_records=7, alerts=2, rules_errors=1, clock_held=3)
    comp.late_readings, comp.late_unrevised, comp.late_beyond_window = 5, 1, 240
    text = scrape(SimpleNamespace(stats=IngestStats(), compliance=SimpleNamespace(stats=comp)))
    assert 'cems_late_readings_total{outcome="beyond_window"} 240.0' in text
    assert 'cems_late_readings_total{outcome="merged"} 5.0' in text
    assert 'cems_late_readings_total{outcome="unrevised"} 1.0' in text
    assert "cems_hourly_records_total 7.0" in text
    assert "cems_alerts_total 2.0" in text
    assert "cems_rules_errors_total 1.0" in text
    assert "cems_clock_held_total 3.0" in text


def test_without_rules_there_are_no_rules_counters() -> None:
    text = scrape(SimpleNamespace(stats=IngestStats(), compliance=None))
    assert "cems_messages_received_total" in text
    assert "cems_late_readings" not in text
