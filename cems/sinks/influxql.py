"""Quoting for InfluxQL built from values (pure: no I/O).

Every identifier (database, measurement, field or tag key) and string literal put into an InfluxQL
statement goes through these, never an f-string with bare quotes: ``--influx-db 'x"; DROP DATABASE "y'``
must name a database, not add a statement.  InfluxQL (1.x ``influxql`` scanner): a double-quoted identifier
and a single-quoted string may contain ``\\\\``, ``\\"``/``\\'`` and ``\\n`` escapes and no raw new line.
"""

from __future__ import annotations


def _escape(text: str, quote: str) -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def quote_ident(name: str) -> str:
    """An InfluxQL identifier as a double-quoted string: ``a"b`` → ``"a\\"b"``."""
    return '"' + _escape(name, '"') + '"'


def quote_literal(value: str) -> str:
    """An InfluxQL string literal, single-quoted: ``it's`` → ``'it\\'s'``."""
    return "'" + _escape(value, "'") + "'"
