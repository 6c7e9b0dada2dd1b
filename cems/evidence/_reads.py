"""The reads a case file needs: hourly records from InfluxDB (``cems_hourly``), events with their
acknowledgements and the alert history from the ingester's SQLite state (read-only; InfluxDB's
``cems_event`` when no state file is at hand), and marks when the marks read exists."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cems.errors import ConfigError
from cems.evidence._export import CaseReads, Rows
from cems.sinks.influx import influx_query, quote_literal


def _t(d: datetime) -> str:
    return quote_literal(d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _overlaps(ev: dict[str, Any], start: datetime, end: datetime) -> bool:
    s, e = ev.get("start"), ev.get("end")
    try:
        s_ok = s is None or datetime.fromisoformat(str(s)) < end
        e_ok = not e or datetime.fromisoformat(str(e)) > start
    except ValueError:
        return True
    return s_ok and e_ok


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def case_reads(influx_url: str, db: str, state_file: Path | None) -> CaseReads:
    """Reads against InfluxDB (v1 ``/query``) and, when it exists, the SQLite state file."""

    def hourly(mn: str, start: datetime, end: datetime) -> Rows:
        q = f"SELECT * FROM cems_hourly WHERE mn = {quote_literal(mn)} AND time >= {_t(start)} AND time < {_t(end)}"
        return influx_query(influx_url, db, q)

    def events(mn: str, start: datetime, end: datetime) -> Rows:
        if state_file is None or not state_file.exists():
            return influx_events(mn, start, end)
        try:
            return sqlite_events(state_file, mn, start, end)
        except sqlite3.Error as e:
            raise ConfigError(f"cannot read events from {state_file}: {e}") from e

    def influx_events(mn: str, start: datetime, end: datetime) -> Rows:
        rows = influx_query(influx_url, db, f"SELECT * FROM cems_event WHERE mn = {quote_literal(mn)}")
        return [r for r in rows if _overlaps(r, start, end)]

    def sqlite_events(path: Path, mn: str, start: datetime, end: datetime) -> Rows:
        out: Rows = []
        q = (
            "SELECT json, acked_by, acked_at, ack_note, escalated_at, opened_at FROM events WHERE mn = ? "
            "ORDER BY opened_ts"
        )
        with closing(_ro(path)) as conn:
            for doc, by, at, note, esc, opened in conn.execute(q, (mn,)):
                ev: dict[str, Any] = json.loads(doc)
                ev.update(acked_by=by, acked_at=at, ack_note=note, escalated_at=esc, opened_at=opened)
                if _overlaps(ev, start, end):
                    out.append(ev)
        return out

    def alerts(event_ids: list[str]) -> Rows:
        if state_file is None or not state_file.exists() or not event_ids:
            return []
        try:
            return sqlite_alerts(state_file, event_ids)
        except sqlite3.Error as e:
            raise ConfigError(f"cannot read the alert history from {state_file}: {e}") from e

    def sqlite_alerts(path: Path, event_ids: list[str]) -> Rows:
        out: Rows = []
        q = (
            "SELECT event_id, alert_id, body, status, created_ts, done_ts FROM outbox WHERE channel = 'mqtt' "
            f"AND event_id IN ({','.join('?' * len(event_ids))}) ORDER BY id"
        )
        with closing(_ro(path)) as conn:
            for eid, aid, body, status, created, done in conn.execute(q, event_ids):
                try:
                    update = json.loads(body).get("update")
                except (ValueError, AttributeError):
                    update = None
                out.append(
                    {
                        "event_id": eid,
                        "alert_id": aid,
                        "update": update,
                        "delivery": status,
                        "created_at": datetime.fromtimestamp(created, UTC).isoformat(),
                        "delivered_at": datetime.fromtimestamp(done, UTC).isoformat() if done else None,
                        "body": json.loads(body),
                    }
                )
        return out

    origin = {"influxdb": f"{influx_url} db={db}", "state": str(state_file) if state_file else "-"}

    def marks(mn: str, start: datetime, end: datetime) -> Rows:
        """The outlet's marks, stop declarations, repairs and withdrawals whose period overlaps the case
        (``cems_mark``, append-only: a withdrawn record comes with its withdrawal)."""
        from cems.service.compliance import list_marks

        return [r.to_json() for r in list_marks(influx_url, db, mn=mn, start=start, end=end)]

    return CaseReads(hourly=hourly, events=events, alerts=alerts, marks=marks, origin=origin)
