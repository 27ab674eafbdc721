"""A lean HTTP/1.1 load generator for the serving benchmark, in the spirit of `wrk`.

On a 2-core machine the client shares the CPUs with the server it measures. An httpx client
spends about 4 ms of CPU per 270 KB multipart upload, which the servers then lack, so this one
builds each request's bytes once and replays them over keep-alive connections (one per
client), reading only the status line, the headers and Content-Length bytes of body.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

BOUNDARY = "skindx-bench-7d1f0c"


def multipart_request(host: str, port: int, path: str, field_name: str, image: bytes) -> bytes:
    """The complete bytes of a POST carrying `image` as one multipart file field."""
    body = b"".join(
        [
            f"--{BOUNDARY}\r\n".encode(),
            f'Content-Disposition: form-data; name="{field_name}"; filename="lesion.jpg"\r\n'.encode(),
            b"Content-Type: image/jpeg\r\n\r\n",
            image,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        ]
    )
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


@dataclass
class Response:
    status: int
    body: bytes
    keep_alive: bool


async def send(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> Response:
    """Write one request and read its response (Content-Length framed, as FastAPI answers)."""
    writer.write(request)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    version, status = head[0].split(" ", 2)[:2]
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"response {status} has no Content-Length (chunked is not supported)")
    body = await reader.readexactly(int(headers["content-length"]))
    return Response(int(status), body, keeps_connection(version, headers.get("connection", "")))


def keeps_connection(http_version: str, connection_header: str) -> bool:
    """HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only with `keep-alive`."""
    tokens = {token.strip().lower() for token in connection_header.split(",")}
    if http_version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


@dataclass
class LoadResult:
    clients: int
    requests: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts and latency percentiles; the latencies are None when nothing was answered."""
        ms = np.asarray(self.latencies_s) * 1000
        latency = dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        if ms.size:
            p50, p95, p99 = np.percentile(ms, [50, 95, 99])
            latency = {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": ms.mean()}
            latency = {key: round(float(value), 2) for key, value in latency.items()}
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(ms.size / self.seconds, 2) if self.seconds else 0.0,
            **latency,
        }


# what a failed connect, a dropped connection, a garbled or a late answer raise
CONNECTION_ERRORS = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
    TimeoutError,
)


async def run_load(
    host: str,
    port: int,
    path: str,
    images: list[bytes],
    clients: int,
    requests: int,
    timeout_s: float = 120.0,
) -> LoadResult:
    """`requests` uploads (cycling through `images`) shared by `clients` concurrent connections.
    A non-200 answer, a refused or broken connection, or no answer within `timeout_s` counts as
    an error (the connection is then reopened); latency is measured for every answered request."""
    payloads = [multipart_request(host, port, path, "file", image) for image in images]
    result = LoadResult(clients, requests, 0.0)
    counter = iter(range(requests))

    async def client() -> None:
        connection = None
        try:
            for index in counter:
                started = time.perf_counter()
                try:
                    if connection is None:
                        connection = await asyncio.wait_for(
                            asyncio.open_connection(host, port), timeout_s
                        )
                        started = time.perf_counter()  # time the request, not the connect
                    request = send(*connection, payloads[index % len(payloads)])
                    response = await asyncio.wait_for(request, timeout_s)
                except CONNECTION_ERRORS as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    continue
                result.latencies_s.append(time.perf_counter() - started)
                if response.status != 200:
                    result.errors.append(f"{response.status}: {response.body[:200]!r}")
                if not response.keep_alive:
                    connection[1].close()
                    connection = None
        finally:
            if connection is not None:
                connection[1].close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result
