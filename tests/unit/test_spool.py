from __future__ import annotations

from pathlib import Path

import pytest

from cems.sinks.spool import Spool, SpoolFull


def test_batches_come_back_in_order_across_segments_and_restarts(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(["a 1", "b 2"])
    s.append(["c 3"])
    s.close()
    s2 = Spool(tmp_path)  # restart: replays what is on disk
    s2.append(["d 4"])
    got = []
    while (item := s2.oldest()) is not None:
        seg, batches = item
        got += batches
        s2.remove(seg)
    assert got == [["a 1", "b 2"], ["c 3"], ["d 4"]]
    assert s2.empty()


def test_torn_last_record_is_ignored(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(["x 1"])
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(b"00000100\npartial")  # crash in the middle of a write
    item = Spool(tmp_path).oldest()
    assert item is not None and item[1] == [["x 1"]]


def test_bound_gives_back_pressure_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Spool(tmp_path, max_bytes=100, warn_fraction=0.5)
    s.append(["m" * 40])
    s.append(["m" * 20])
    assert "above 50%" in caplog.text
    with pytest.raises(SpoolFull):
        s.append(["m" * 40])
    item = s.oldest()
    assert item is not None
    s.remove(item[0])
    s.append(["m" * 40])  # room again
