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
        last = GaugeMetricFamily(
            "cems_last_data_time_seconds", "data time of the latest reading per outlet (Unix s)", labels=["mn"]
        )
        for mn, t in s.last_data_time.items():
            last.add_metric([mn], t)
        yield last


class HealthServer:
    """Serves ``GET /healthz`` (JSON; 200 when healthy, 503 otherwise) and ``GET /metrics``."""

    def __init__(self, service: Any, healthy: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StatsCollector(service))
        self.healthy = healthy
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/healthz /metrics", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/metrics"):
                body = await asyncio.to_thread(generate_latest, self.registry)
                status, ctype = "200 OK", "text/plain; version=0.0.4; charset=utf-8"
            elif path.startswith("/healthz"):
                ok, detail = self.healthy()
                body = json.dumps({"ok": ok, "time": time.time(), **detail}).encode()
                status, ctype = ("200 OK" if ok else "503 Service Unavailable"), "application/json"
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
