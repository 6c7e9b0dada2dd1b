"""``/healthz`` and Prometheus ``/metrics`` on a local HTTP port (asyncio server, no thread).

Metrics are read from the service's counters at scrape time, so the ingest hot path pays nothing for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class StatsCollector(Collector):
    """Exports an ingest service's ``stats`` (see :class:`cems.service.ingest.IngestStats`)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        s = self.service.stats
        for name, doc, value in [
            ("cems_messages_received", "MQTT messages received", s.received),
            ("cems_messages_accepted", "messages accepted and durable", s.accepted),
            ("cems_values_accepted", "pollutant values accepted", s.values),
            ("cems_points_written", "points written to InfluxDB", s.points_written),
            ("cems_write_retries", "InfluxDB write attempts that failed and were retried", s.write_retries),
            ("cems_evidence_lines", "messages and verdicts appended to the evidence archive", s.evidence_lines),
            (
                "cems_evidence_failures",
                "evidence archive appends that failed (not acknowledged; retried)",
                s.evidence_failures,
            ),
        ]:
            yield CounterMetricFamily(name, doc, value=value)
        rej = CounterMetricFamily("cems_messages_rejected", "rejected messages by reason", labels=["reason"])
        for reason, n in sorted(s.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        conn = getattr(self.service, "conn", None)
        if conn is not None:
            yield GaugeMetricFamily(
                "cems_queue_depth", "messages waiting in the ingest queue", value=conn.queue.qsize()
            )
            yield GaugeMetricFamily("cems_mqtt_connected", "1 when connected to the broker", value=int(conn.connected))
        # write latency as a summary: rate(sum)/rate(count) is the mean latency over any window
        yield SummaryMetricFamily(
            "cems_write_latency_seconds",
            "InfluxDB write latency",
            count_value=getattr(s, "writes", 0),
            sum_value=getattr(s, "write_seconds", 0.0),
        )
        yield GaugeMetricFamily(
            "cems_spool_bytes",
            "bytes waiting in the on-disk spool for InfluxDB (0 while the database takes every write)",
            value=getattr(s, "spool_bytes", 0),
        )
        comp = getattr(self.service, "compliance", None)
        if comp is not None:
            yield from _compliance_metrics(comp.stats)
        last = GaugeMetricFamily(
            "cems_last_data_time_seconds", "data time of the latest reading per outlet (Unix s)", labels=["mn"]
        )
        for mn, t in s.last_data_time.items():
            last.add_metric([mn], t)
        yield last


def _compliance_metrics(c: Any) -> Iterator[Any]:
    """The rules' counters (:class:`cems.service.compliance.ComplianceStats`); the late-data ones as of the last
    clock tick. Readings refused by the rules are stored all the same: these say how many changed no figure."""
    for name, doc, value in [
        ("cems_hourly_records", "hourly records written (first emitted or revised)", c.hourly_records),
        ("cems_alerts", "alerts committed to the outbox", c.alerts),
        ("cems_rules_errors", "readings the rules failed on (stored, not judged; logged)", c.rules_errors),
        ("cems_clock_held", "clock ticks that closed nothing while a backlog waited", c.clock_held),
    ]:
        yield CounterMetricFamily(name, doc, value=value)
    late = CounterMetricFamily(
        "cems_late_readings",
        "readings for an hour already emitted: merged (revised), unrevised (not in memory or the hour archive), "
        "beyond_window (past the hour's repair deadline, DOMAIN.md §5: changed no figure)",
        labels=["outcome"],
    )
    late.add_metric(["merged"], c.late_readings)
    late.add_metric(["unrevised"], c.late_unrevised)
    late.add_metric(["beyond_window"], c.late_beyond_window)
    yield late


class HealthServer:
    """Serves ``GET /healthz`` (JSON; 200 when healthy, 503 otherwise) and ``GET /metrics`` (``HEAD`` too).

    Bounded against hostile or broken clients: a request line or header longer than ``max_line`` bytes, or
    more than ``max_header_bytes`` of head, is answered ``431``; the whole request must arrive within
    ``request_timeout_s`` (slow clients are dropped); other methods get ``405``; at most ``max_connections``
    are served at once (more are closed at once and counted in :attr:`refused`).
    """

    def __init__(
        self,
        service: Any,
        healthy: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        max_connections: int = 32,
        request_timeout_s: float = 5.0,
        max_line: int = 8192,
        max_header_bytes: int = 16384,
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StatsCollector(service))
        self.healthy = healthy
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.max_line = max_line
        self.max_header_bytes = max_header_bytes
        self.active = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, limit=self.max_line)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/healthz /metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """The request line (headers read and dropped); ``None`` when the head is too large."""
        request = await reader.readline()
        total = len(request)
        while True:
            line = await reader.readline()
            total += len(line)
            if total > self.max_header_bytes:
                return None
            if line in (b"\r\n", b"\n", b""):
                return request

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.active += 1
        try:
            await self._serve(reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        except Exception:  # never let one request end the server's task with an unhandled exception
            log.exception("health server: unexpected error serving a request")
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.request_timeout_s):
                request = await self._read_head(reader)
        except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):  # line over the limit
            request = None
        if request is None:
            await self._respond(writer, "431 Request Header Fields Too Large", b"request too large\n", "text/plain")
            return
        parts = request.decode("latin-1").split()
        method = parts[0] if parts else ""
        path = parts[1] if len(parts) > 1 else "/"
        if method not in ("GET", "HEAD"):
            await self._respond(writer, "405 Method Not Allowed", b"GET or HEAD only\n", "text/plain", head=False)
            return
        if path.startswith("/metrics"):
            body = await asyncio.to_thread(generate_latest, self.registry)
            status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
        elif path.startswith("/healthz"):
            ok, detail = self.healthy()
            body = json.dumps({"ok": ok, "time": time.time(), **detail}).encode()
            status, ctype = ("200 OK" if ok else "503 Service Unavailable"), "application/json"
        else:
            body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
        await self._respond(writer, status, body, ctype, head=method == "HEAD")

    async def _respond(
        self, writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str, *, head: bool = False
    ) -> None:
        allow = "Allow: GET, HEAD\r\n" if status.startswith("405") else ""
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{allow}"
            "Connection: close\r\n\r\n".encode()
            + (b"" if head else body)
        )
        await asyncio.wait_for(writer.drain(), self.request_timeout_s)
