"""The operator's warning setting: the MQTT command, the history file, and replay with it (issue 16)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from registries import emergency_line, one_outlet  # tests/registries.py

from cems.errors import CemsError
from cems.model import BEIJING
from cems.registry import parse_registry
from cems.replay import replay
from cems.rules.emergency import WarningHistory, WarningLevel, WarningPeriod
from cems.service.warnings import parse_warning, read_history, write_history

T0 = datetime(2026, 12, 1, tzinfo=BEIJING)


def test_parse_warning() -> None:
    p, reply = parse_warning(
        json.dumps({"level": "橙色", "from": "2026-12-01T00:00", "to": None, "by": "张三", "reply_to": "abc"}).encode()
    )
    assert p.level is WarningLevel.ORANGE and p.start == T0 and p.end is None and p.set_by == "张三"
    assert reply == "abc"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"level": "orange", "from": "2026-12-01"}', "'by' is required"),
        (b'{"level": "purple", "from": "2026-12-01", "by": "x"}', "unknown warning level"),
        (b'{"level": "red", "from": "2026-12-02", "to": "2026-12-01", "by": "x"}', "before it starts"),
        (b'{"level": "red", "from": "yesterday", "by": "x"}', "isoformat"),
        (b'{"level": "red", "from": "2026-12-01", "by": "x", "note": 5}', "'note' must be a string"),
    ],
)
def test_bad_warning_commands(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_warning(payload)


def test_history_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "warnings.json"
    assert read_history(path) == WarningHistory()
    h = WarningHistory((WarningPeriod(WarningLevel.RED, T0, T0 + timedelta(days=2), "张三", T0, "通知"),))
    write_history(path, h)
    assert read_history(path) == h
    path.write_text('[{"level": "red"}]', encoding="utf-8")
    with pytest.raises(CemsError, match=r"setting \[0\]"):
        read_history(path)


def test_replay_with_warnings() -> None:
    reg = parse_registry(
        one_outlet(enterprise=emergency_line(line="measure = { orange = { cut = { a21026 = 0.2 } } }\n"))
    )
    lines = []
    for h in range(6, 13):
        doc = {
            "schema": "cems.reading/1",
            "mn": "MN0001",
            "stream": "hour",
            "data_time": (T0 + timedelta(hours=h)).isoformat(),
            "values": {
                "a21026": {"Avg": 25.0 if h in (8, 9) else 5.0, "Flag": "N"},
                "a19001": {"Avg": 6.0, "Flag": "N"},
                "a00000": {"Avg": 100.0, "Flag": "N"},
            },
        }
        lines.append(json.dumps(doc) + "\n")
    history = WarningHistory(
        (WarningPeriod(WarningLevel.ORANGE, T0 + timedelta(hours=8), T0 + timedelta(hours=12), "张三"),)
    )
    res = replay(reg, lines, "jsonl", warnings=history)
    assert not res.rejected
    types = [(e.type, e.start.hour, e.hours) for e in res.events]
    assert ("warning_level", 8, 4.0) in types and ("emergency_noncompliance", 8, 2) in types
    assert not [e for e in replay(reg, lines, "jsonl").events if e.type == "emergency_noncompliance"]
