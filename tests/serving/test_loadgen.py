"""bench/loadgen.py, the serving benchmark's load generator, against the real API (uvicorn on
127.0.0.1) and a stdlib server that closes every connection."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from bench import loadgen  # bench/ from the repository root (a namespace package)

pytestmark = pytest.mark.slow  # real servers and sockets, timeouts

multipart_request, run_load = loadgen.multipart_request, loadgen.run_load


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def test_every_request_is_answered_and_counted(server, sample_jpeg: bytes):
    host, port = host_port(server.url)
    result = asyncio.run(run_load(host, port, "/predict", [sample_jpeg], clients=4, requests=12))
    assert result.errors == []
    assert len(result.latencies_s) == 12
    summary = result.summary()
    assert summary["errors"] == 0 and summary["throughput_rps"] > 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]


def test_refusals_count_as_errors_with_their_status(server, sample_jpeg: bytes):
    host, port = host_port(server.url)
    images = [sample_jpeg, b"this is text, not an image"]
    result = asyncio.run(run_load(host, port, "/predict", images, clients=1, requests=4))
    assert len(result.latencies_s) == 4  # answered, so timed
    assert len(result.errors) == 2
    assert all(error.startswith("415:") for error in result.errors)


def test_the_request_is_a_well_formed_multipart_upload(server, sample_jpeg: bytes):
    """The replayed bytes are what the API accepts from any client (checked by its parser)."""
    host, port = host_port(server.url)

    async def one() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        response = await loadgen.send(
            reader, writer, multipart_request(host, port, "/predict", "file", sample_jpeg)
        )
        writer.close()
        return response.status, response.body

    status, body = asyncio.run(one())
    assert status == 200
    assert json.loads(body)["predicted_class"]


class ClosingHandler(BaseHTTPRequestHandler):
    """Answers 200 as HTTP/1.0 and closes the connection every time; `say_close` decides
    whether it also sends `Connection: close` (HTTP/1.0 closes without saying so)."""

    say_close = True

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.say_close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class SilentClosingHandler(ClosingHandler):
    say_close = False


@pytest.fixture(params=[ClosingHandler, SilentClosingHandler], ids=["says-close", "http-1.0"])
def closing_server(request):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address
    httpd.shutdown()
    httpd.server_close()


def test_a_closed_connection_is_reopened(closing_server):
    host, port = closing_server
    result = asyncio.run(run_load(host, port, "/anything", [b"x" * 1000], clients=2, requests=6))
    assert result.errors == []
    assert len(result.latencies_s) == 6


@pytest.mark.parametrize(
    ("version", "header", "keeps"),
    [
        ("HTTP/1.1", "", True),
        ("HTTP/1.1", "Close", False),
        ("HTTP/1.1", "upgrade, close", False),
        ("HTTP/1.0", "", False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive_follows_the_http_version(version, header, keeps):
    assert loadgen.keeps_connection(version, header) is keeps


def test_a_server_that_never_answers_gives_timeouts_not_a_hang():
    with socket.socket() as listener:  # accepts connections (backlog) but never reads
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        host, port = listener.getsockname()
        result = asyncio.run(
            run_load(host, port, "/predict", [b"x"], clients=2, requests=4, timeout_s=0.3)
        )
    assert len(result.errors) == 4 and all(e.startswith("TimeoutError") for e in result.errors)
    assert result.latencies_s == []
    assert result.summary()["p50_ms"] is None  # nothing answered: no latency to report


def test_a_refused_connection_is_an_error_not_a_crash():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = asyncio.run(run_load("127.0.0.1", port, "/predict", [b"x"], clients=2, requests=3))
    assert len(result.errors) == 3
    assert all(e.startswith("ConnectionRefusedError") for e in result.errors)
