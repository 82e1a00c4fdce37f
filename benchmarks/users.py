"""Concurrent users with think time: each has its own keep-alive connection, sends a
request, waits for the answer, thinks (exponential, mean ``think`` seconds), again.

An open-ish workload (what 50 people at their desks do), next to wrk's closed loop
(50 clients that never pause, i.e. the server's saturation). Loopback only, bounded by
``seconds``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import percentile


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(":") for line in lines[1:] if line)
    }
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() == "close"


async def _user(
    port: int,
    requests: Sequence[bytes],
    think: float,
    deadline: float,
    samples: list[tuple[float, int]],
    rng: random.Random,
) -> None:
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        await asyncio.sleep(rng.uniform(0, think))  # users do not start in step
        index = 0
        while time.monotonic() < deadline and index < len(requests):
            start = time.perf_counter()
            if streams is None:
                # A new connection (gunicorn's sync workers close after each answer).
                streams = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = streams
            writer.write(requests[index])
            status, closing = await asyncio.wait_for(_read_response(reader), timeout=30)
            samples.append(((time.perf_counter() - start) * 1000, status))
            if closing:
                writer.close()
                streams = None
            index += 1
            pause = rng.expovariate(1 / think)
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
    finally:
        if streams is not None:
            streams[1].close()


def run_users(
    port: int, per_user: Sequence[Sequence[bytes]], *, think: float, seconds: float, ok: int
) -> dict[str, Any]:
    """Run one user per request list; return latencies (ms) and the status counts."""
    samples: list[tuple[float, int]] = []

    async def main() -> None:
        deadline = time.monotonic() + seconds
        rng = random.Random(1762)
        await asyncio.gather(
            *(_user(port, requests, think, deadline, samples, rng) for requests in per_user)
        )

    started = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - started
    latencies = [ms for ms, status in samples if status == ok]
    return {
        "requests": len(samples),
        "ok": len(latencies),
        "error_count": len(samples) - len(latencies),
        "seconds": elapsed,
        "ok_rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "users": len(per_user),
        "think_seconds": think,
    }


def get(path: str, port: int, cookie: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n").encode()


def post(path: str, port: int, cookie: str, forwarded: str, body: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
        f"X-Forwarded-For: {forwarded}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
