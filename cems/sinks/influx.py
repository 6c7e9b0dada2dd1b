"""Async InfluxDB writer: gzip-compressed line protocol over HTTP, v1 (``/write``) or v2 (``/api/v2/write``).

Line protocol is the same for InfluxDB 1.x, 2.x, 3.x and VictoriaMetrics; only the endpoint and the
authentication differ.  The writer is a thin adapter: it raises :class:`SinkError` with ``retryable`` set
so the service can back off and retry (5xx, connection errors) or dead-letter (4xx: the data are bad).

A large batch is posted as ``write_concurrency`` requests at once, split by series (all lines of one series,
i.e. one measurement and tag set, go to the same request, in their order): InfluxDB parses each request on
one core, so one request at a time leaves the database's other cores idle (measured: docs/benchmark.md).
Points with the same key are always in the same request, so their last-write-wins order is kept.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx

from cems.errors import InfluxQueryError as InfluxQueryError  # declared in cems.errors, re-exported
from cems.errors import InfluxWriteError as InfluxWriteError  # declared in cems.errors, re-exported
from cems.sinks.influxql import quote_ident as quote_ident  # re-exported
from cems.sinks.influxql import quote_literal as quote_literal  # re-exported

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InfluxConfig:
    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    db: str = "cems"  # v1 database
    org: str = ""  # v2
    bucket: str = ""  # v2
    token: str = ""  # v2 token, or v1 "user:password"
    precision: Literal["ms", "s"] = "ms"
    gzip: bool = True
    timeout_s: float = 30.0
    #: Requests a large batch is split into (by series), posted at once.
    write_concurrency: int = 2
    #: Batches smaller than this go in one request.
    split_min_lines: int = 1000

    def write_request(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(url, query params, headers) of a write."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip:
            headers["Content-Encoding"] = "gzip"
        base = self.url.rstrip("/")
        if self.api == "v2":
            if self.token:
                headers["Authorization"] = f"Token {self.token}"
            params = {"org": self.org, "bucket": self.bucket or self.db, "precision": self.precision}
            return f"{base}/api/v2/write", params, headers
        params = {"db": self.db, "precision": self.precision}
        headers.update(self.v1_auth_headers())
        return f"{base}/write", params, headers

    def v1_auth_headers(self) -> dict[str, str]:
        """v1 credentials (``user:password``) as an ``Authorization: Basic`` header, which InfluxDB 1.x
        accepts like the ``u``/``p`` query parameters but which never lands in a URL (logs, proxies)."""
        if not self.token:
            return {}
        user, _, pw = self.token.partition(":")
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode("ascii")}

    def query_headers(self) -> dict[str, str]:
        """The credentials of an InfluxQL read on ``/query``, the same the writer uses: v1 ``user:password``
        as Basic auth; v2 the token (``Authorization: Token``), read through the v1 compatibility API."""
        if self.api == "v2":
            return {"Authorization": f"Token {self.token}"} if self.token else {}
        return self.v1_auth_headers()

    @property
    def query_db(self) -> str:
        """The ``db`` of a ``/query`` read: the v1 database, or on 2.x the bucket (its DBRP mapping)."""
        return (self.bucket or self.db) if self.api == "v2" else self.db


#: What a read response's stream becomes (:func:`release`): an empty stream, shared.
_READ: Final = httpx.ByteStream(b"")


def release(r: httpx.Response) -> None:
    """Let a response that has been read be freed as soon as it is dropped, not at the next run of the cyclic
    garbage collector.  httpx (0.27–0.29) wraps the body of every response in a stream that refers back to the
    response (``BoundAsyncStream._response``, to time the request), so each write left a cycle of ≈ 70 objects
    (response, request, headers, URL, connection-pool request and events) to the collector: over a third of
    what filled its youngest generation in ``cems run``, each collection pausing the event loop for 20–50 ms
    (issue 20; docs/benchmark.md, ninth session; encode/httpx#3733).  The body is read (``content``) and the
    stream closed by ``post``; only the back reference goes."""
    if r.is_closed:
        r.stream = _READ


class InfluxWriter:
    """Writes batches of line-protocol lines.  One instance per service; reuses its HTTP connections."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self._url, self._params, self._headers = config.write_request()
        self._client = httpx.AsyncClient(timeout=config.timeout_s)

    async def write(self, lines: list[str]) -> None:
        """Write every line (raises :class:`InfluxWriteError`; parts that succeeded stay written, and a
        rewrite is harmless: points are keyed)."""
        if not lines:
            return
        n = self.config.write_concurrency
        if n <= 1 or len(lines) < self.config.split_min_lines:
            await self._post(lines)
            return
        parts: list[list[str]] = [[] for _ in range(n)]
        for line in lines:
            parts[hash(_series(line)) % n].append(line)
        results = await asyncio.gather(*(self._post(p) for p in parts if p), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # bad data (4xx) wins over an outage: the caller then bisects to find the refused lines
            for e in errors:
                if isinstance(e, InfluxWriteError) and not e.retryable:
                    raise e
            raise errors[0]

    async def _post(self, lines: list[str]) -> None:
        body = "\n".join(lines).encode("utf-8")
        if self.config.gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            r = await self._client.post(self._url, params=self._params, headers=self._headers, content=body)
        except httpx.HTTPError as e:
            raise InfluxWriteError(f"InfluxDB unreachable at {self.config.url}: {e!r}", retryable=True) from e
        release(r)
        if r.status_code in (200, 204):
            return
        text = r.text[:500]
        # Only 400/413/422 say "these data cannot be written".  Everything else (5xx, 429, and 401/403/404
        # from a wrong token, database or API version) is a condition the operator must fix: the data are
        # kept (not acknowledged) and the write retried, never dead-lettered.
        retryable = r.status_code not in (400, 413, 422)
        hint = ""
        if r.status_code == 404 and self.config.api == "v2":
            hint = " (is this an InfluxDB 1.x server? use --influx-api v1)"
        elif r.status_code in (401, 403):
            hint = " (check --influx-token / CEMS_INFLUX_TOKEN)"
        raise InfluxWriteError(
            f"InfluxDB write answered {r.status_code}{hint}: {text}", retryable=retryable, status=r.status_code
        )

    async def ensure_database(self) -> None:
        """v1 only: create the database if it does not exist (a no-op on an existing one)."""
        if self.config.api != "v1":
            return
        params = {"q": f"CREATE DATABASE {quote_ident(self.config.db)}"}
        try:
            r = await self._client.post(
                f"{self.config.url.rstrip('/')}/query", params=params, headers=self.config.v1_auth_headers()
            )
        except httpx.HTTPError as e:
            raise InfluxWriteError(f"InfluxDB unreachable at {self.config.url}: {e!r}", retryable=True) from e
        if r.status_code == 403:
            # a least-privilege writer (docker-compose.yml: INFLUXDB_USER has ALL on its database, not admin)
            # may not create databases: the database must already exist, and a write to a missing one fails
            # with its own error
            log.info("not allowed to CREATE DATABASE %s (not an admin user): using the existing one", self.config.db)
            return
        if r.status_code != 200:
            raise InfluxWriteError(f"CREATE DATABASE answered {r.status_code}: {r.text[:300]}", retryable=False)

    async def aclose(self) -> None:
        await self._client.aclose()


def _series(line: str) -> str:
    """The series key of a line-protocol line: measurement and tag set (up to the first unescaped space)."""
    i = line.find(" ")
    while i > 0 and line[i - 1] == "\\":
        i = line.find(" ", i + 1)
    return line if i < 0 else line[:i]


# ------------------------------------------------------------------------------ reads and administration
# The read side of the same adapter: InfluxQL over the v1 ``/query`` endpoint, which InfluxDB 1.x serves,
# 2.x serves through its v1 compatibility API and 3.x through its InfluxQL API.  Used by ``cems report``,
# ``cems events list``, ``cems query`` and the developer tools; synchronous (command-line programs).


def influx_query(
    url: str,
    db: str,
    q: str,
    *,
    epoch: str | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run InfluxQL ``q`` against the v1 ``/query`` endpoint (POST) and flatten the answer.

    ``headers``: credentials (:meth:`InfluxConfig.query_headers`; none for an open development database).

    Returns one dict per row of every series of every statement: column → value, plus the series
    tags (``GROUP BY``) merged in. ``epoch`` ("ns", "ms", "s"...) returns integer times instead of
    RFC 3339 strings. Raises InfluxQueryError on an HTTP or InfluxQL error.
    """
    params = {"db": db} if db else {}
    if epoch:
        params["epoch"] = epoch
    try:
        resp = httpx.post(f"{url.rstrip('/')}/query", params=params, data={"q": q}, timeout=timeout, headers=headers)
    except httpx.HTTPError as exc:
        raise InfluxQueryError(f"InfluxDB query at {url} failed: {exc}") from exc
    try:
        body: Any = resp.json()
    except ValueError:
        body = None
    if resp.status_code != 200 or not isinstance(body, dict):
        raise InfluxQueryError(f"InfluxDB query {q!r} at {url}: HTTP {resp.status_code}: {resp.text[:500]}")
    if "error" in body:
        raise InfluxQueryError(f"InfluxDB query {q!r} at {url}: {body['error']}")
    rows: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxQueryError(f"InfluxDB query {q!r} at {url}: {result['error']}")
        for series in result.get("series", []):
            columns: list[str] = series.get("columns", [])
            tags: dict[str, Any] = series.get("tags") or {}
            for values in series.get("values", []):
                row = dict(zip(columns, values, strict=False))
                row.update(tags)
                rows.append(row)
    return rows


def config_query(config: InfluxConfig) -> Callable[[str, str | None], list[dict[str, Any]]]:
    """A synchronous ``query(text, epoch) -> rows`` reading what ``config``'s writer writes, with its
    credentials (the ingester's live township ranking, :mod:`cems.sinks.gridrank`)."""
    url, db, headers, timeout = config.url, config.query_db, config.query_headers(), config.timeout_s

    def query(text: str, epoch: str | None) -> list[dict[str, Any]]:
        return influx_query(url, db, text, epoch=epoch, timeout=timeout, headers=headers)

    return query


def influx_write(
    url: str, db: str, lines: str | Iterable[str], *, precision: str = "ns", timeout: float = 30.0
) -> None:
    """Write line protocol to the v1 ``/write`` endpoint; InfluxQueryError unless InfluxDB answers 204."""
    body = lines if isinstance(lines, str) else "\n".join(lines)
    try:
        resp = httpx.post(
            f"{url.rstrip('/')}/write",
            params={"db": db, "precision": precision},
            content=body.encode(),
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise InfluxQueryError(f"InfluxDB write at {url} failed: {exc}") from exc
    if resp.status_code != 204:
        raise InfluxQueryError(f"InfluxDB write to {db!r} at {url}: HTTP {resp.status_code}: {resp.text[:500]}")


def create_database(url: str, db: str) -> None:
    """``CREATE DATABASE`` (idempotent in InfluxDB 1.x)."""
    influx_query(url, "", f"CREATE DATABASE {quote_ident(db)}")


def drop_database(url: str, db: str) -> None:
    """``DROP DATABASE`` (no error if it does not exist)."""
    influx_query(url, "", f"DROP DATABASE {quote_ident(db)}")
