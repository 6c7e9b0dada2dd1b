"""Shortened CI variant of ``python -m cems.devtools.chaos``: kill and restart the ingester (SIGKILL), the broker and
the database in turn under steady load; nothing lost, no event duplicated or lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from cems.devtools.chaos import run_chaos

pytestmark = pytest.mark.integration


def test_chaos_short(tmp_path: Path, local_services: object) -> None:  # local_services: binaries present
    report = run_chaos(outlets=8, rate=50, duration=28, workdir=tmp_path, log=lambda *_: None)
    assert report.actions == ["ingester SIGKILL", "broker restart", "database stop", "database start"]
    assert report.published > 800
    assert (report.stored, report.missing, report.unexpected) == (report.published, 0, 0)
    assert report.events_replay > 0 and report.events_missing == [] and report.events_extra == []
    assert report.opened_alert_duplicates == 0
