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
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise ValueError(f"response {status} has no Content-Length (chunked is not supported)")
    body = await reader.readexactly(int(headers["content-length"]))
    return Response(status, body, headers.get("connection", "").lower() != "close")


@dataclass
class LoadResult:
    clients: int
    requests: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        ms = np.asarray(self.latencies_s) * 1000 if self.latencies_s else np.zeros(1)
        answered = len(self.latencies_s)
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(answered / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
        }


async def run_load(
    host: str, port: int, path: str, images: list[bytes], clients: int, requests: int
) -> LoadResult:
    """`requests` uploads (cycling through `images`) shared by `clients` concurrent connections.
    A non-200 answer or a broken connection counts as an error; latency is measured for every
    answered request."""
    payloads = [multipart_request(host, port, path, "file", image) for image in images]
    result = LoadResult(clients, requests, 0.0)
    counter = iter(range(requests))

    async def client() -> None:
        connection = None
        try:
            for index in counter:
                if connection is None:
                    connection = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                try:
                    response = await send(*connection, payloads[index % len(payloads)])
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
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
