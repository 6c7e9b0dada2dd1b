"""The ``/healthz`` server is bounded against hostile clients (issue 13, item 11)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cems.service.health import HealthServer


def healthy() -> tuple[bool, dict[str, Any]]:
    return True, {"queue": 0}


async def request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def run_with(server: HealthServer, body: Any) -> tuple[Any, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        port = await server.start("127.0.0.1", 0)
        try:
            return await body(port)
        finally:
            await server.stop()

    return asyncio.run(main()), errors


def test_a_huge_request_line_is_answered_431_and_the_server_goes_on() -> None:
    async def body(port: int) -> tuple[bytes, bytes]:
        big = await request(port, b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
        ok = await request(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        return big, ok

    (big, ok), errors = run_with(HealthServer(None, healthy), body)
    assert big.startswith(b"HTTP/1.1 431 ")
    assert ok.startswith(b"HTTP/1.1 200 OK") and b'"ok": true' in ok
    assert errors == []


def test_too_many_headers_are_refused() -> None:
    async def body(port: int) -> bytes:
        return await request(port, b"GET /healthz HTTP/1.1\r\n" + b"X-B: c\r\n" * 3000 + b"\r\n")

    answer, errors = run_with(HealthServer(None, healthy), body)
    assert answer.startswith(b"HTTP/1.1 431 ") and errors == []


def test_a_slow_client_is_dropped_after_the_request_time() -> None:
    async def body(port: int) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()

        async def trickle() -> None:  # one header line every 0.2 s: each read is quick, the request never ends
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(50):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.2)

        task = asyncio.create_task(trickle())
        try:
            await asyncio.wait_for(reader.read(), 8)  # until the server closes
        except ConnectionResetError:
            pass  # closed while the client was still writing: the kernel answers the next header with a reset
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            writer.close()
        return time.monotonic() - t0

    elapsed, _ = run_with(HealthServer(None, healthy, request_timeout_s=1.0), body)
    assert elapsed < 3


def test_get_and_head_only() -> None:
    async def body(port: int) -> tuple[bytes, bytes]:
        post = await request(port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        head = await request(port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        return post, head

    (post, head), _ = run_with(HealthServer(None, healthy), body)
    assert post.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD" in post
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")


def test_concurrent_connections_are_capped() -> None:
    async def body(port: int) -> tuple[bytes, bytes]:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 2)  # closed at once, no answer
        writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        ok = await request(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        return refused, ok

    server = HealthServer(None, healthy, max_connections=2)
    (refused, ok), _ = run_with(server, body)
    assert refused == b"" and server.refused == 1 and ok.startswith(b"HTTP/1.1 200")
