"""Logging of the command line: ``--log-format text`` (default, for people) or ``json`` (one object per line,
for a log shipper: ``time``, ``level``, ``logger``, ``message``, ``exc`` when there is a traceback).

Fifteen lines on the standard library's ``logging.Formatter``; a dependency (python-json-logger) would add
nothing we use.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; non-ASCII kept as is (Chinese names stay readable)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(verbose: int, log_format: str) -> None:
    """Root logging: WARNING, INFO with ``-v``, DEBUG with ``-vv``; text or JSON lines on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
