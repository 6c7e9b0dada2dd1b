"""The reading line's ``stream`` tag from a table of the streams' texts (issue 20, fourth session: CPU), as
formatting the enum wrote it."""

from __future__ import annotations

import pytest

from cems.model import Stream
from cems.sinks.lineprotocol import _reading_prefix


@pytest.mark.parametrize("stream", list(Stream))
def test_the_stream_tag_is_the_streams_value(stream: Stream) -> None:
    got = _reading_prefix("MN1", stream, "ent", "dist")
    assert got == f"cems_reading,district=dist,enterprise=ent,mn=MN1,stream={stream.value}"
    assert got == f"cems_reading,district=dist,enterprise=ent,mn=MN1,stream={stream}"
    assert _reading_prefix("MN1", stream.value, "ent", "dist") == got  # a plain text passes as it is
