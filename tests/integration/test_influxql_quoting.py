"""InfluxQL built from input quotes its identifiers (issue 13, item 9): a database name that closes the
quote and adds a statement names a database, it does not drop another one.  Against the real InfluxDB 1.6."""

from __future__ import annotations

from typing import Any

import pytest

from cems.sinks.influx import InfluxConfig, InfluxWriter, create_database, drop_database, influx_query
from cems.sinks.influxql import quote_ident, quote_literal

pytestmark = pytest.mark.integration

HOSTILE = 'x"; DROP DATABASE "victim'


def _databases(url: str) -> set[str]:
    return {str(r["name"]) for r in influx_query(url, "", "SHOW DATABASES")}


async def test_ensure_database_cannot_drop_another_database(influxdb: Any) -> None:
    create_database(influxdb.url, "victim")
    try:
        w = InfluxWriter(InfluxConfig(url=influxdb.url, db=HOSTILE))
        await w.ensure_database()
        await w.aclose()
        names = _databases(influxdb.url)
        assert "victim" in names
        assert HOSTILE in names  # the whole string is one (odd) database name
        drop_database(influxdb.url, HOSTILE)
        assert "victim" in _databases(influxdb.url) and HOSTILE not in _databases(influxdb.url)
    finally:
        drop_database(influxdb.url, "victim")
        drop_database(influxdb.url, HOSTILE)


def test_quoting_round_trips_through_influxql(influxdb: Any) -> None:
    name = "we\"ird 'db"  # InfluxDB refuses '\\' and new lines in database names
    create_database(influxdb.url, name)
    try:
        assert name in _databases(influxdb.url)
        influxdb.write(name, "m,tag=a f=1i 1000000000\nm,tag=b\\ c f=2i 1000000000\n", precision="ns")
        rows = influx_query(
            influxdb.url,
            name,
            f"SELECT {quote_ident('f')} FROM {quote_ident('m')} WHERE {quote_ident('tag')} = {quote_literal('b c')}",
        )
        assert [r["f"] for r in rows] == [2]
    finally:
        drop_database(influxdb.url, name)


def test_quote_ident_and_literal() -> None:
    assert quote_ident('a"b') == '"a\\"b"'
    assert quote_ident("a\\") == '"a\\\\"'
    assert quote_literal("it's") == "'it\\'s'"
    assert "\n" not in quote_ident("a\nb")
